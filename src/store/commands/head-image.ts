// The image and metadata of a HEAD commit, without reading the image back: the Merkle root and
// the counts come straight from the writer's plan (every position decided), with the leaves the
// image reader would give (src/store/merkle.ts defines them; `verify` recomputes them from the
// image, and the tests hold both to the same result). Same output as import's buildCommit, at a
// fraction of the cost on large trees.
//
// Public surface: buildHeadCommit, leafHash.
import { hash } from 'node:crypto';
import { digestBuffer } from '../../native/verity.js';
import { fsverityDigest } from '../digest.js';
import { OVERLAY_METACOPY, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, isWhiteout, shownXattrName } from '../image/erofs.js';
import { type Plan, type PlanNode, layout } from '../image/layout.js';
import type { ByteString, Tree } from '../image/tree.js';
import { emit, storedSize } from '../image/write.js';
import { merkleRoot, type MerkleSummary, type TreeStats } from '../merkle.js';
import type { CommitMetadata } from '../metadata.js';
import { type LeafHash, type MerkleCache, merkleLevels } from './head-patch.js';

const EMPTY_DIGEST = fsverityDigest(new Uint8Array(0));

export function buildHeadCommit(tree: Tree, parent?: string): { id: string; meta: CommitMetadata; image: Uint8Array; cache: MerkleCache } {
  const plan = layout(tree);
  const image = emit(plan);
  const id = digestBuffer(image);
  const { merkle, stats, paths, levels } = planMerkle(plan);
  const meta: CommitMetadata = {
    merkleRoot: merkle.root,
    metadataHash: id,
    timestamp: new Date().toISOString(),
    files: { count: stats.count, totalSize: stats.totalSize },
    merkle: { leafCount: merkle.leafCount, treeDepth: merkle.depth },
  };
  if (parent) meta.parentCommit = parent;
  return { id, meta, image, cache: { id, paths, levels } };
}

const sharedHasher = { current: undefined as LeafHasher | undefined };

/** A Merkle leaf hash (merkle.ts's leaf encoding), for the fast path's edited paths. */
export const leafHash: LeafHash = (path, attr, target, xattrs, digest) => {
  sharedHasher.current ??= new LeafHasher();
  return sharedHasher.current.hash(path, attr, target, xattrs, digest);
};

const isHidden = (p: PlanNode): boolean => isWhiteout(p.mode, p.rdev);

/** What the reader's getattr gives for a planned inode. */
function attrOf(p: PlanNode): { nid: number; ino: number; mode: number; nlink: number; uid: number; gid: number; size: number; rdev: number; mtimeSec: number; mtimeNsec: number } {
  const type = p.mode & S_IFMT;
  const size = storedSize(p);
  const rdev = type === S_IFCHR || type === S_IFBLK ? p.rdev % 2 ** 32 : 0;
  return { nid: p.nid, ino: p.ino, mode: p.mode, nlink: p.nlink, uid: p.uid, gid: p.gid, size, rdev, mtimeSec: p.mtimeSec, mtimeNsec: p.mtimeNsec };
}

/** The xattrs the reader shows: overlay's own hidden, escaped ones unescaped, unknown prefixes skipped. */
function visible(p: PlanNode): Array<{ name: ByteString; value: Uint8Array }> {
  const out: Array<{ name: ByteString; value: Uint8Array }> = [];
  for (const x of p.xattrs) {
    if (x.index === 0) continue;
    const name = shownXattrName(x.name);
    if (name !== undefined) out.push({ name, value: x.value });
  }
  return out;
}

function contentDigest(p: PlanNode): string {
  if (p.external) {
    const m = p.xattrs.find((x) => x.name === OVERLAY_METACOPY);
    if (m && m.value.length === 36 && m.value[3] === 1) return Buffer.from(m.value.subarray(4)).toString('hex');
    return EMPTY_DIGEST;
  }
  return p.content && p.content.length > 0 ? fsverityDigest(p.content) : EMPTY_DIGEST;
}

/**
 * One leaf's hash: sha256(0x00 ‖ leafData(...)), encoded straight into a reused buffer (the same
 * bytes merkle.ts's leafData builds from many small buffers).
 */
class LeafHasher {
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
  private bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  hash(path: ByteString, a: { mode: number; uid: number; gid: number; mtimeSec: number; mtimeNsec: number; size: number; rdev: number }, target: ByteString, xattrs: Array<{ name: ByteString; value: Uint8Array }>, digest: string): Buffer {
    this.pos = 0;
    this.byte(0); // RFC 6962 leaf prefix
    this.latin1(path);
    this.byte(0);
    this.latin1(`${a.mode.toString(8)} ${a.uid} ${a.gid} ${a.mtimeSec}.${a.mtimeNsec} ${a.size} ${a.rdev}`);
    this.byte(0);
    this.latin1(target);
    this.byte(0);
    const sorted = xattrs.length > 1 ? [...xattrs].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0)) : xattrs;
    for (const x of sorted) {
      this.latin1(x.name);
      this.byte(0);
      this.room(4);
      this.buf.writeUInt32LE(x.value.length, this.pos);
      this.pos += 4;
      this.bytes(x.value);
    }
    this.byte(0);
    this.latin1(digest);
    return hash('sha256', this.buf.subarray(0, this.pos), 'buffer') as unknown as Buffer;
  }
}

function planMerkle(plan: Plan): { merkle: MerkleSummary; stats: TreeStats; paths: ByteString[]; levels: Buffer[][] } {
  const leaves: Array<{ path: ByteString; hash: Buffer }> = [];
  const counted = new Set<PlanNode>();
  const hasher = new LeafHasher();
  let totalSize = 0;
  const leaf = (path: ByteString, p: PlanNode): void => {
    const type = p.mode & S_IFMT;
    let digest = '';
    if (type === S_IFREG) {
      digest = contentDigest(p);
      if (!counted.has(p)) {
        counted.add(p);
        totalSize += p.size;
      }
    }
    const target = type === S_IFLNK ? Buffer.from(p.symlink!).toString('latin1') : '';
    leaves.push({ path, hash: hasher.hash(path, attrOf(p), target, visible(p), digest) });
  };
  const root = plan.nodes[0]!;
  leaf('/', root);
  const stack: Array<{ p: PlanNode; path: ByteString }> = [{ p: root, path: '' }];
  while (stack.length > 0) {
    const { p, path } = stack.pop()!;
    for (const d of p.dirents!) {
      const n = d.name;
      if ((n.length === 1 && n[0] === 0x2e) || (n.length === 2 && n[0] === 0x2e && n[1] === 0x2e) || isHidden(d.node)) continue;
      const childPath = `${path}/${Buffer.from(n.buffer, n.byteOffset, n.byteLength).toString('latin1')}`;
      leaf(childPath, d.node);
      if ((d.node.mode & S_IFMT) === S_IFDIR) stack.push({ p: d.node, path: childPath });
    }
  }
  leaves.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const levels = merkleLevels(leaves.map((l) => l.hash));
  const top = levels[levels.length - 1]!;
  // merkle.ts's merkleRoot (RFC 6962, the left subtree holding the largest power of two below n)
  // builds the same tree as pairing neighbours bottom-up and carrying an odd last node up.
  const merkle = leaves.length <= 1 ? merkleRoot(levels[0]!) : { root: top[0]!.toString('hex'), leafCount: leaves.length, depth: Math.ceil(Math.log2(leaves.length)) };
  return { merkle, stats: { count: leaves.length, totalSize }, paths: leaves.map((l) => l.path), levels };
}
