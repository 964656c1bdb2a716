// The splice path of a commit (new, deleted or renamed names): the merged tree, read lazily from
// the base image where the upper did not go, written by splicing the base image (image/splice.ts:
// byte for byte what the writer makes of the tree), and its Merkle leaves taken from the base's
// Merkle cache wherever a path still names the very inode it named in the base. What changes is
// hashed: the changed inodes' leaves, every leaf of a subtree that moved (its paths changed), and
// the levels above the leaves.
//
// Public surface: spliceHeadCommit.
import { S_IFDIR, S_IFMT } from '../image/erofs.js';
import type { ImageOrigin } from '../image/image-tree.js';
import { type ImageReader, walkImage } from '../image/read.js';
import { type SpliceBase, spliceImage } from '../image/splice.js';
import type { ByteString, Inode, Tree } from '../image/tree.js';
import { imageLeaf, levelsBeside, summaryOf } from '../merkle.js';
import type { CommitMetadata } from '../metadata.js';
import { digestBuffer } from '../../native/verity.js';
import { planLeaf } from './build.js';
import { type MerkleCache, findPath } from './edits.js';

/** A run of leaves in path order: cached ones (cache indexes [from, to)) or one computed leaf. */
type Run = { first: ByteString; from: number; to: number } | { first: ByteString; leaf: Buffer };

/**
 * The commit of `tree` (the base `reader`'s lazy tree with the upper merged in), or why the splice
 * refuses it (the caller then writes the tree whole).
 */
export function spliceHeadCommit(reader: ImageReader, index: SpliceBase, tree: Tree, origin: WeakMap<Inode, ImageOrigin>, cache: MerkleCache, parent: string): { id: string; meta: CommitMetadata; image: Buffer; cache: MerkleCache } | string {
  const out = spliceImage(index, tree, (inode) => origin.get(inode)?.nid);
  if (typeof out === 'string') return out;
  const id = digestBuffer(out.image);

  const cachedPaths = cache.paths;
  const cachedLeaves = cache.levels[0]!;
  const runs: Run[] = [];
  for (const { path, node } of out.planned) runs.push({ first: path, leaf: planLeaf(path, node) });
  for (const { path, nid, inode } of out.attached) {
    const i = origin.get(inode)?.path === path ? findPath(cachedPaths, path) : -1;
    if (i < 0) {
      // moved (or not in the cache): every path below it is new (one run each: a sibling's name
      // may sort between a directory and its entries)
      walkImage(reader, (p, attr, n) => runs.push({ first: p, leaf: imageLeaf(reader, p, attr, n) }), { from: { nid, path } });
      continue;
    }
    runs.push({ first: path, from: i, to: i + 1 });
    if ((reader.getattr(nid).mode & S_IFMT) === S_IFDIR) {
      // its descendants: the paths from `path/` up to `path0` ('0' follows '/')
      const from = lowerBound(cachedPaths, `${path}/`, i + 1);
      const to = lowerBound(cachedPaths, `${path}0`, from);
      if (to > from) runs.push({ first: cachedPaths[from]!, from, to });
    }
  }
  runs.sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  const paths: ByteString[] = [];
  let count = 0;
  for (const r of runs) count += 'from' in r ? r.to - r.from : 1;
  const leaves = Buffer.allocUnsafe(count * 32); // flat: a cached run is one copy
  for (const r of runs) {
    if ('from' in r) {
      cachedLeaves.copy(leaves, paths.length * 32, r.from * 32, r.to * 32);
      for (let i = r.from; i < r.to; i++) paths.push(cachedPaths[i]!);
    } else {
      r.leaf.copy(leaves, paths.length * 32);
      paths.push(r.first);
    }
  }
  // every path of the new tree has its leaf, once: anything else is a cache that does not match its base
  if (paths.length !== out.files) return `the Merkle cache does not match the base (${paths.length} leaves for ${out.files} paths)`;
  const levels = levelsBeside(leaves, cache.levels);
  const merkle = summaryOf(levels);
  const meta: CommitMetadata = {
    merkleRoot: merkle.root,
    metadataHash: id,
    timestamp: new Date().toISOString(),
    parentCommit: parent,
    files: { count: out.files, totalSize: out.totalSize },
    merkle: { leafCount: merkle.leafCount, treeDepth: merkle.depth },
  };
  return { id, meta, image: out.image, cache: { id, paths, levels } };
}

/** The first index from `from` whose path is not below `key`. */
function lowerBound(paths: ByteString[], key: ByteString, from: number): number {
  let lo = from;
  let hi = paths.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (paths[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
