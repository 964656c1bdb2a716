// The image and metadata of a HEAD commit, without reading the image back: the Merkle root and
// the counts come straight from the writer's plan (every position decided), with the leaves the
// image reader would give (src/store/merkle.ts defines them and the tree; `verify` recomputes them from the
// image, and the tests hold both to the same result). Same output as import's buildCommit, at a
// fraction of the cost on large trees.
//
// Public surface: buildHeadCommit.
import { digestBuffer } from '../../native/verity.js';
import { fsverityDigest } from '../digest.js';
import { OVERLAY_METACOPY, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, isWhiteout, shownXattrName } from '../image/erofs.js';
import { type Plan, type PlanNode, layout } from '../image/layout.js';
import type { ByteString, Tree } from '../image/tree.js';
import { emit, storedSize } from '../image/write.js';
import { type MerkleSummary, type TreeStats, leafHash, merkleLevels, summaryOf } from '../merkle.js';
import type { CommitMetadata } from '../metadata.js';
import type { MerkleCache } from './edits.js';

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

function planMerkle(plan: Plan): { merkle: MerkleSummary; stats: TreeStats; paths: ByteString[]; levels: Buffer[][] } {
  const leaves: Array<{ path: ByteString; hash: Buffer }> = [];
  const counted = new Set<PlanNode>();
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
    leaves.push({ path, hash: leafHash(path, attrOf(p), target, visible(p), digest) });
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
  const merkle = summaryOf(levels);
  return { merkle, stats: { count: leaves.length, totalSize }, paths: leaves.map((l) => l.path), levels };
}
