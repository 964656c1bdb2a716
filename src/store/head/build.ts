// The image and metadata of a HEAD commit, without reading the image back: the Merkle root and
// the counts come straight from the writer's plan (every position decided), with the leaves the
// image reader would give (src/store/merkle.ts defines them and the tree; `verify` recomputes them from the
// image, and the tests hold both to the same result). Same output as import's buildCommit, at a
// fraction of the cost on large trees. Given the base's Merkle cache, the leaves of untouched
// files come from it (KnownLeaves), so a commit hashes only what changed, plus the directories.
//
// Public surface: buildHeadCommit, KnownLeaves, planLeaf.
import { digestBuffer } from '../../native/verity.js';
import { fsverityDigest } from '../digest.js';
import { OVERLAY_METACOPY, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, isWhiteout, shownXattrName } from '../image/erofs.js';
import { type Plan, type PlanNode, layout } from '../image/layout.js';
import type { ByteString, Inode, Tree } from '../image/tree.js';
import { emit, storedSize } from '../image/write.js';
import { type MerkleSummary, type TreeStats, leafHash, levelsBeside, merkleLevels, summaryOf } from '../merkle.js';
import type { CommitMetadata } from '../metadata.js';
import { type MerkleCache, findPath } from './edits.js';

const EMPTY_DIGEST = fsverityDigest(new Uint8Array(0));

/**
 * What a commit already knows of its base: the base tree as merged into `tree` (mergeUpper shares
 * the inodes of every subtree the upper did not touch) and the base's Merkle cache. A leaf whose
 * inode is the very inode the base had at the same path is taken from the cache, not rehashed.
 */
export interface KnownLeaves {
  base: Tree;
  cache: MerkleCache;
}

export function buildHeadCommit(tree: Tree, parent?: string, known?: KnownLeaves): { id: string; meta: CommitMetadata; image: Uint8Array; cache: MerkleCache } {
  const plan = layout(tree);
  const image = emit(plan);
  const id = digestBuffer(image);
  const { merkle, stats, paths, levels } = planMerkle(plan, known);
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

/** The Merkle leaf of a planned inode at `path` (what merkleOfImage gives for it once written). */
export function planLeaf(path: ByteString, p: PlanNode): Buffer {
  const type = p.mode & S_IFMT;
  const digest = type === S_IFREG ? contentDigest(p) : '';
  const target = type === S_IFLNK ? Buffer.from(p.symlink!).toString('latin1') : '';
  return leafHash(path, attrOf(p), target, visible(p), digest);
}

function planMerkle(plan: Plan, known: KnownLeaves | undefined): { merkle: MerkleSummary; stats: TreeStats; paths: ByteString[]; levels: Buffer[] } {
  // The walk below meets paths nearly in byte order: paths go into one array and hashes into one
  // flat buffer, and only if a path comes out of order are they sorted (as pairs).
  let leafPaths: ByteString[] = [];
  const cachedPaths = known?.cache.paths;
  const cachedLeaves = known?.cache.levels[0];
  let flat = Buffer.allocUnsafe(32 * ((cachedPaths?.length ?? 0) + 1024));
  let sorted = true;
  // Leaves taken from the cache are copied in runs: consecutive cached leaves in a row are one copy.
  let runAt = 0; // first leaf of the pending run, in flat
  let runFrom = 0; // its index in the cache
  let runLength = 0;
  const flush = (): void => {
    if (runLength > 0) cachedLeaves!.copy(flat, runAt * 32, runFrom * 32, (runFrom + runLength) * 32);
    runLength = 0;
  };
  const grow = (): void => {
    if (leafPaths.length * 32 < flat.length) return;
    const bigger = Buffer.allocUnsafe(flat.length * 2);
    flat.copy(bigger, 0, 0, leafPaths.length * 32);
    flat = bigger;
  };
  const pushPath = (path: ByteString): void => {
    if (sorted && leafPaths.length > 0 && leafPaths[leafPaths.length - 1]! > path) sorted = false;
    grow();
    leafPaths.push(path);
  };
  const pushHash = (path: ByteString, hash: Buffer): void => {
    flush();
    pushPath(path);
    flat.set(hash, (leafPaths.length - 1) * 32);
  };
  const pushCached = (path: ByteString, index: number): void => {
    const at = leafPaths.length;
    if (runLength > 0 && runAt + runLength === at && runFrom + runLength === index) runLength++;
    else {
      flush();
      runAt = at;
      runFrom = index;
      runLength = 1;
    }
    pushPath(path);
  };
  const counted = new Uint8Array(plan.nodes.length); // by ino (each plan node's own): a hardlinked file counts once
  let totalSize = 0;
  /**
   * The index in the cache of the base's leaf for `path` if the base had this very inode there:
   * its leaf is then unchanged. Never for a directory: its i_size (in its leaf) depends on where
   * the layout puts its tail, which moves with any change before it in the image.
   */
  let hint = 0; // the walk below meets paths nearly in byte order: the next cached path is most often the one
  const cachedLeaf = (path: ByteString, p: PlanNode, baseInode: Inode | undefined): number => {
    if (baseInode === undefined || p.source !== baseInode || !cachedPaths || (p.mode & S_IFMT) === S_IFDIR) return -1;
    const i = cachedPaths[hint] === path ? hint : findPath(cachedPaths, path);
    if (i >= 0) hint = i + 1;
    return i;
  };
  const leaf = (path: ByteString, p: PlanNode, baseInode: Inode | undefined): void => {
    const type = p.mode & S_IFMT;
    if (type === S_IFREG && counted[p.ino] === 0) {
      counted[p.ino] = 1;
      totalSize += p.size;
    }
    const hit = cachedLeaf(path, p, baseInode);
    if (hit >= 0) {
      pushCached(path, hit);
      return;
    }
    pushHash(path, planLeaf(path, p));
  };
  const root = plan.nodes[0]!;
  leaf('/', root, undefined); // the root always differs (its whiteout stubs, the upper's root)
  // Each directory is walked beside the base directory at the same path, if any; depth first in
  // name order, so the leaves come nearly sorted by path (only a name with a byte below '/' after
  // a name it extends is out of place) and the sort below has little to do.
  const stack: Array<{ p: PlanNode; path: ByteString; base: Inode | undefined; next: number }> = [{ p: root, path: '', base: known?.base.root, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const dirents = top.p.dirents!;
    if (top.next >= dirents.length) {
      stack.pop();
      continue;
    }
    const d = dirents[top.next++]!;
    const name = d.name;
    if (name === '.' || name === '..' || isHidden(d.node)) continue;
    const childPath = `${top.path}/${name}`;
    const baseChild = top.base?.children?.get(name)?.inode;
    leaf(childPath, d.node, baseChild);
    if ((d.node.mode & S_IFMT) === S_IFDIR) stack.push({ p: d.node, path: childPath, base: baseChild, next: 0 });
  }
  flush();
  let leaves = flat.subarray(0, leafPaths.length * 32);
  if (!sorted) {
    const order = leafPaths.map((_, i) => i).sort((a, b) => (leafPaths[a]! < leafPaths[b]! ? -1 : leafPaths[a]! > leafPaths[b]! ? 1 : 0));
    const paths = leafPaths;
    const unsorted = leaves;
    leafPaths = order.map((i) => paths[i]!);
    leaves = Buffer.allocUnsafe(unsorted.length);
    order.forEach((from, to) => unsorted.copy(leaves, to * 32, from * 32, from * 32 + 32));
  }
  const levels = cachedLeaves ? levelsBeside(leaves, known!.cache.levels) : merkleLevels(leaves);
  const merkle = summaryOf(levels);
  return { merkle, stats: { count: leafPaths.length, totalSize }, paths: leafPaths, levels };
}
