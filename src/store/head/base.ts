// HEAD's base commit, read: as a whole Tree (what a full commit merges the upper into) or just
// its root's attributes (what a fresh upper must carry).
//
// Public surface: baseTree, commitRoot, readBaseImage, requireImage.
import { readFileSync, statSync } from 'node:fs';
import { IMAGE_FILE } from '../commits.js';
import { StratumError, isSystemError, wrapSystemError } from '../error.js';
import { imageTreeFromBytes } from '../image/image-tree.js';
import { FileSource, ImageReader } from '../image/read.js';
import type { Inode, Tree } from '../image/tree.js';
import type { Store } from '../store.js';
import { digestBuffer } from '../../native/verity.js';

/** A commit's root attributes and xattrs, read alone (a fresh upper over it must carry them). */
export function commitRoot(store: Store, id: string): Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'> {
  const source = new FileSource(store.commits.imagePath(id));
  try {
    const reader = ImageReader.open(source);
    const a = reader.getattr(reader.rootNid);
    return { mode: a.mode, uid: a.uid, gid: a.gid, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec, xattrs: reader.xattrs(reader.rootNid) };
  } finally {
    source.close();
  }
}

/** The base commit as a tree, its image checked against the id first (a commit builds on it). */
export function baseTree(store: Store, id: string): Tree {
  return imageTreeFromBytes(readBaseImage(store, id)); // the reader's whole mode: bounds- and cycle-checked
}

/**
 * The base commit's image, for a commit built on it (copied by the edits and splice paths, read
 * into a tree by the full path and `import --bare`): checked against the commit id (its fs-verity
 * digest, ~18 ms for 26 MB), so a damaged image is refused, not carried on into every later commit.
 */
export function readBaseImage(store: Store, id: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(store.commits.imagePath(id));
  } catch (err) {
    throw missingImage(err, id);
  }
  if (digestBuffer(bytes) !== id) throw new StratumError('CORRUPT_STORE', `the image of commit ${id} is damaged (its digest does not match); run \`stratum verify\` and restore it from where the store was synced`);
  return bytes;
}

/**
 * NOT_FOUND (one line) when the base commit's image is gone: a commit refuses to build on it
 * even when HEAD's caches would let it (the store needs repair first).
 */
export function requireImage(store: Store, id: string): void {
  try {
    statSync(store.commits.imagePath(id));
  } catch (err) {
    throw missingImage(err, id);
  }
}

function missingImage(err: unknown, id: string): StratumError {
  if (isSystemError(err, 'ENOENT')) return new StratumError('NOT_FOUND', `commit ${id} has no image (${IMAGE_FILE} is missing); restore it from where the store was synced, or \`stratum verify\``);
  return wrapSystemError(err, `reading commit ${id}`);
}
