// The commit's Merkle root, and all the Merkle code of the project: the leaf encoding, the tree,
// and its incremental update. One leaf per path in the tree (the root included), sorted by path
// bytes; each leaf commits to the path, the metadata a user sees (type and mode, owner, mtime in
// ns, size, rdev, symlink target, xattrs) and the fs-verity digest of the content. Leaves and
// nodes are combined as in RFC 6962 (Certificate Transparency): leaf = sha256(0x00 ‖ data),
// node = sha256(0x01 ‖ left ‖ right), the left subtree holding the largest power of two below n
// leaves, which is the same tree as pairing neighbours bottom-up and carrying an odd last node up:
// that is how it is built here, keeping every level so one changed leaf rehashes only its path.
// Each level is one flat Buffer (32 bytes a node), hashed in C (native/src/verity.c merkleLevel):
// 100k nodes as 100k calls and Buffers from JavaScript cost 5-10x as much (bench/merkle.ts).
// docs/commits.md has the exact leaf encoding.
//
// Three producers, one definition: `verify` and bundles walk the image as read back
// (merkleOfImage), a commit hashes the leaves of the writer's plan (head/build.ts; those of
// untouched files come from the base's Merkle cache) and an edits-only commit updates the base's
// cached levels (updateLeaf).
//
// Public surface: LeafAttr, leafData, leafHash, merkleLevels (optionally reusing a base tree's
// nodes over a common prefix of leaves), commonLeaves, levelsBeside (the same beside a commit's
// base, whose root leaf always changes), summaryOf, updateLeaf, merkleRoot,
// imageLeaf, merkleOfImage, MerkleSummary, TreeStats.
import { hash } from 'node:crypto';
import { merkleLevel } from '../native/verity.js';
import { fsverityDigest } from './digest.js';
import { S_IFLNK, S_IFMT, S_IFREG } from './image/erofs.js';
import { type ImageReader, walkImage } from './image/read.js';
import { type ByteString, compareBytes } from './image/tree.js';

export interface MerkleSummary {
  root: string;
  leafCount: number;
  depth: number;
}

export interface TreeStats {
  /** Paths in the tree, the root included. */
  count: number;
  /** Bytes of regular-file content, each hardlinked inode once. */
  totalSize: number;
}

/** What a leaf commits to of an inode: what getattr shows. */
export interface LeafAttr {
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  size: number;
  rdev: number;
}

const sha256 = (data: Uint8Array): Buffer => hash('sha256', data, 'buffer') as unknown as Buffer;

/**
 * The leaf encoding, written once: 0x00 (the RFC 6962 leaf prefix), then path NUL, the fields
 * NUL, the symlink target NUL, each xattr (sorted by name bytes) as name NUL u32le-length value,
 * then NUL and the content digest. Encoded into one reused buffer.
 */
class LeafEncoder {
  private buf = Buffer.allocUnsafe(1 << 16);
  private pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }
  private latin1(s: string): void {
    this.room(s.length);
    this.pos += this.buf.write(s, this.pos, 'latin1');
  }
  private byte(b: number): void {
    this.room(1);
    this.buf[this.pos++] = b;
  }

  /** sha256(0x00 ‖ leafData): a view into the encoder's buffer is hashed, never kept. */
  encode(path: ByteString, a: LeafAttr, target: ByteString, xattrs: ReadonlyArray<{ name: ByteString; value: Uint8Array }>, digest: string): Buffer {
    this.pos = 0;
    this.byte(0);
    this.latin1(path);
    this.byte(0);
    this.latin1(`${a.mode.toString(8)} ${a.uid} ${a.gid} ${a.mtimeSec}.${a.mtimeNsec} ${a.size} ${a.rdev}`);
    this.byte(0);
    this.latin1(target);
    this.byte(0);
    const sorted = xattrs.length > 1 ? [...xattrs].sort((x, y) => compareBytes(x.name, y.name)) : xattrs;
    for (const x of sorted) {
      this.latin1(x.name);
      this.byte(0);
      this.room(4 + x.value.length);
      this.buf.writeUInt32LE(x.value.length, this.pos);
      this.pos += 4;
      this.buf.set(x.value, this.pos);
      this.pos += x.value.length;
    }
    this.byte(0);
    this.latin1(digest);
    return this.buf.subarray(0, this.pos);
  }
}

const shared = new LeafEncoder();

/** The bytes a leaf commits to (without the 0x00 prefix); `contentDigest` is '' for anything but a regular file. */
export function leafData(path: ByteString, attr: LeafAttr, symlinkTarget: ByteString, xattrs: ReadonlyArray<{ name: ByteString; value: Uint8Array }>, contentDigest: string): Buffer {
  return Buffer.from(shared.encode(path, attr, symlinkTarget, xattrs, contentDigest).subarray(1));
}

/** A leaf's hash: sha256(0x00 ‖ leafData(...)). */
export function leafHash(path: ByteString, attr: LeafAttr, symlinkTarget: ByteString, xattrs: ReadonlyArray<{ name: ByteString; value: Uint8Array }>, contentDigest: string): Buffer {
  return sha256(shared.encode(path, attr, symlinkTarget, xattrs, contentDigest));
}

const NODE = 32;

/**
 * Every level of the tree over `leaves` (flat: 32 bytes a leaf hash): levels[0] is `leaves`
 * itself, level k one Buffer of ceil(n / 2^k) nodes, the last one the root. Given a base tree
 * whose first `same` leaves are known to be these leaves' first `same`, node i of level k is
 * copied from the base when i < floor(same / 2^k): it covers a full 2^k leaves inside that common
 * prefix in both trees, so it is the same node. Every other node is hashed in C (merkleLevel).
 */
export function merkleLevels(leaves: Buffer, base?: Buffer[], same = 0): Buffer[] {
  if (leaves.length % NODE !== 0) throw new RangeError(`merkleLevels: ${leaves.length} bytes of leaves is not a whole number of 32-byte hashes`);
  const common = base?.[0] ? Math.min(same, leaves.length / NODE, base[0].length / NODE) : 0;
  const levels = [leaves];
  let level = leaves;
  for (let k = 1; level.length > NODE; k++) {
    const size = Math.ceil(level.length / NODE / 2);
    const next = Buffer.allocUnsafe(size * NODE);
    const was = base?.[k];
    const kept = was ? Math.min(Math.floor(common / 2 ** k), size, Math.floor(was.length / NODE)) : 0;
    if (kept > 0) was!.copy(next, 0, 0, kept * NODE);
    merkleLevel(level, next, kept, size);
    levels.push(next);
    level = next;
  }
  return levels;
}

/** How many leading 32-byte hashes `a` and `b` have in common (memcmp by chunks, then by hash). */
export function commonLeaves(a: Buffer, b: Buffer): number {
  const n = Math.floor(Math.min(a.length, b.length) / NODE);
  const CHUNK = 1024;
  let i = 0;
  while (i < n) {
    const end = Math.min(n, i + CHUNK);
    if (a.compare(b, i * NODE, end * NODE, i * NODE, end * NODE) === 0) {
      i = end;
      continue;
    }
    while (a.compare(b, i * NODE, (i + 1) * NODE, i * NODE, (i + 1) * NODE) === 0) i++;
    return i;
  }
  return n;
}

/**
 * merkleLevels beside a commit's base tree: the nodes over the leaves the two share from the
 * start are the base's. The root path's leaf (leaf 0) changes in every commit, which would end
 * that prefix at once: the levels are built as if it had not (the base's leaf 0 in its place), then
 * it is put back and its path rehashed (one node a level). `leaves` becomes levels[0].
 */
export function levelsBeside(leaves: Buffer, base: Buffer[]): Buffer[] {
  if (leaves.length === 0 || base[0]!.length === 0) return merkleLevels(leaves);
  const first = Buffer.from(leaves.subarray(0, NODE));
  base[0]!.copy(leaves, 0, 0, NODE);
  const levels = merkleLevels(leaves, base, commonLeaves(leaves, base[0]!));
  updateLeaf(levels, 0, first);
  return levels;
}

/** The summary of a tree from its levels (an empty tree's root is sha256 of nothing). */
export function summaryOf(levels: Buffer[]): MerkleSummary {
  const n = levels[0]!.length / NODE;
  if (n === 0) return { root: sha256(Buffer.alloc(0)).toString('hex'), leafCount: 0, depth: 0 };
  return { root: levels[levels.length - 1]!.toString('hex', 0, NODE), leafCount: n, depth: Math.ceil(Math.log2(n)) };
}

/** Replaces leaf `index` and rehashes its path to the root, in place (one node a level). */
export function updateLeaf(levels: Buffer[], index: number, leaf: Uint8Array): void {
  if (!Number.isInteger(index) || index < 0 || index >= levels[0]!.length / NODE || leaf.length !== NODE) throw new RangeError(`updateLeaf: no leaf ${index} in a tree of ${levels[0]!.length / NODE}, or not a 32-byte hash`);
  levels[0]!.set(leaf, index * NODE);
  let i = index;
  for (let k = 0; k + 1 < levels.length; k++) {
    i >>>= 1;
    merkleLevel(levels[k]!, levels[k + 1]!, i, i + 1);
  }
}

/** RFC 6962 Merkle tree hash over leaf hashes already computed (flat, 32 bytes each). */
export function merkleRoot(leafHashes: Buffer): MerkleSummary {
  return summaryOf(merkleLevels(leafHashes));
}

/** The leaf of image inode `nid` (attributes `attr`) at `path`. */
export function imageLeaf(reader: ImageReader, path: ByteString, attr: LeafAttr, nid: number): Buffer {
  const type = attr.mode & S_IFMT;
  const digest = type === S_IFREG ? reader.objectOf(nid) ?? fsverityDigest(reader.readContent(nid)) : '';
  const target = type === S_IFLNK ? reader.readlink(nid) : '';
  return leafHash(path, attr, target, reader.xattrs(nid), digest);
}

/** Walks the image once: Merkle summary plus the counts metadata.toml records. */
export function merkleOfImage(reader: ImageReader): { merkle: MerkleSummary; stats: TreeStats } {
  const leaves: Array<{ path: ByteString; hash: Buffer }> = [];
  const countedInodes = new Set<number>();
  let totalSize = 0;
  walkImage(reader, (path, attr, nid) => {
    if ((attr.mode & S_IFMT) === S_IFREG && !countedInodes.has(nid)) {
      countedInodes.add(nid);
      totalSize += attr.size;
    }
    leaves.push({ path, hash: imageLeaf(reader, path, attr, nid) });
  });
  leaves.sort((a, b) => compareBytes(a.path, b.path));
  return { merkle: merkleRoot(Buffer.concat(leaves.map((l) => l.hash))), stats: { count: leaves.length, totalSize } };
}
