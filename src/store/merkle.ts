// The commit's Merkle root, and all the Merkle code of the project: the leaf encoding, the tree,
// and its incremental update. One leaf per path in the tree (the root included), sorted by path
// bytes; each leaf commits to the path, the metadata a user sees (type and mode, owner, mtime in
// ns, size, rdev, symlink target, xattrs) and the fs-verity digest of the content. Leaves and
// nodes are combined as in RFC 6962 (Certificate Transparency): leaf = sha256(0x00 ‖ data),
// node = sha256(0x01 ‖ left ‖ right), the left subtree holding the largest power of two below n
// leaves, which is the same tree as pairing neighbours bottom-up and carrying an odd last node up:
// that is how it is built here, keeping every level so one changed leaf rehashes only its path.
// docs/commits.md has the exact leaf encoding.
//
// Three producers, one definition: `verify` and bundles walk the image as read back
// (merkleOfImage), a commit hashes the leaves of the writer's plan (head/build.ts; those of
// untouched files come from the base's Merkle cache) and an edits-only commit updates the base's
// cached levels (updateLeaf).
//
// Public surface: LeafAttr, leafData, leafHash, merkleLevels (optionally reusing a base tree's
// nodes), summaryOf, updateLeaf, merkleRoot,
// merkleOfImage, MerkleSummary, TreeStats.
import { hash } from 'node:crypto';
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

/** Every level of the tree over leaf hashes: levels[0] the leaves, the last one the root. */
export function merkleLevels(leaves: Buffer[], base?: Buffer[][]): Buffer[][] {
  const levels: Buffer[][] = [leaves];
  const scratch = Buffer.allocUnsafe(65);
  scratch[0] = 1;
  let level = leaves;
  for (let k = 0; level.length > 1; k++) {
    const next: Buffer[] = new Array(Math.ceil(level.length / 2));
    // A node whose two children are, byte for byte, the children of the base's node at the same
    // place is that node: everything left of the first changed leaf (bar the root's own path) is.
    const was = base?.[k];
    const wasNext = base?.[k + 1];
    const reusable = was !== undefined && wasNext !== undefined ? Math.min(level.length, was.length - (was.length % 2)) : 0;
    for (let i = 0; i + 1 < level.length; i += 2) {
      // (a leaf taken from the base's cache is the very Buffer: no call to compare it)
      if (i + 1 < reusable && sameNode(level[i]!, was![i]!) && sameNode(level[i + 1]!, was![i + 1]!)) {
        next[i / 2] = wasNext![i / 2]!;
        continue;
      }
      level[i]!.copy(scratch, 1);
      level[i + 1]!.copy(scratch, 33);
      next[i / 2] = sha256(scratch);
    }
    if (level.length % 2 === 1) next[next.length - 1] = level[level.length - 1]!;
    levels.push(next);
    level = next;
  }
  return levels;
}

const sameNode = (a: Buffer, b: Buffer): boolean => a === b || a.equals(b);

/** The summary of a tree from its levels (an empty tree's root is sha256 of nothing). */
export function summaryOf(levels: Buffer[][]): MerkleSummary {
  const n = levels[0]!.length;
  if (n === 0) return { root: sha256(Buffer.alloc(0)).toString('hex'), leafCount: 0, depth: 0 };
  return { root: levels[levels.length - 1]![0]!.toString('hex'), leafCount: n, depth: Math.ceil(Math.log2(n)) };
}

/** Replaces leaf `index` and rehashes its path to the root, in place. */
export function updateLeaf(levels: Buffer[][], index: number, leaf: Buffer): void {
  levels[0]![index] = leaf;
  const scratch = Buffer.allocUnsafe(65);
  scratch[0] = 1;
  let i = index;
  for (let l = 0; l + 1 < levels.length; l++) {
    const level = levels[l]!;
    const pair = i - (i % 2);
    const parent = pair / 2;
    if (pair + 1 < level.length) {
      level[pair]!.copy(scratch, 1);
      level[pair + 1]!.copy(scratch, 33);
      levels[l + 1]![parent] = sha256(scratch);
    } else levels[l + 1]![parent] = level[pair]!;
    i = parent;
  }
}

/** RFC 6962 Merkle tree hash over leaf hashes already computed. */
export function merkleRoot(leafHashes: Buffer[]): MerkleSummary {
  return summaryOf(merkleLevels(leafHashes));
}

/** Walks the image once: Merkle summary plus the counts metadata.toml records. */
export function merkleOfImage(reader: ImageReader): { merkle: MerkleSummary; stats: TreeStats } {
  const leaves: Array<{ path: ByteString; hash: Buffer }> = [];
  const countedInodes = new Set<number>();
  let totalSize = 0;
  walkImage(reader, (path, attr, nid) => {
    const type = attr.mode & S_IFMT;
    let digest = '';
    if (type === S_IFREG) {
      digest = reader.objectOf(nid) ?? fsverityDigest(reader.readContent(nid));
      if (!countedInodes.has(nid)) {
        countedInodes.add(nid);
        totalSize += attr.size;
      }
    }
    const target = type === S_IFLNK ? reader.readlink(nid) : '';
    leaves.push({ path, hash: leafHash(path, attr, target, reader.xattrs(nid), digest) });
  });
  leaves.sort((a, b) => compareBytes(a.path, b.path));
  return { merkle: merkleRoot(leaves.map((l) => l.hash)), stats: { count: leaves.length, totalSize } };
}
