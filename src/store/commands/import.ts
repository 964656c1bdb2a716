// `import <dir> --label L [--tag T]`: a directory becomes a commit. Contents go to the object
// store (deduplicated), the tree to an image, and the commit is tagged by its own id, by T when
// given, and becomes the label's HEAD base if the label has no HEAD yet.
//
// Public surface: importDirectory, ImportOptions, ImportResult, ImportProgress.
import { StratumError } from '../error.js';
import { objectPath, type Tree } from '../image/tree.js';
import type { CommitMetadata } from '../metadata.js';
import { ImportCache } from '../import-cache.js';
import { join } from 'node:path';
import { buildHeadCommit } from '../head/build.js';
import { MERKLE_CACHE_FILE, writeMerkleCache } from '../head/edits.js';
import { headPaths } from '../head/paths.js';
import { TREE_CACHE_FILE, writeTreeCache } from '../head/tree-cache.js';
import { checkLabel, checkTag } from '../names.js';
import { display } from '../paths.js';
import { readSourceTree, splitNs, type PendingFile } from '../source.js';
import type { Store } from '../store.js';
import { pool } from '../pool.js';

/** Puts in flight at once: file creation, not bandwidth, limits small files (MEASUREMENTS.md). */
const PUT_CONCURRENCY = 32;

export interface ImportProgress {
  files: number;
  totalFiles: number;
  bytes: number;
  totalBytes: number;
}

export interface ImportOptions {
  label: string;
  tag?: string | undefined;
  onProgress?: (p: ImportProgress) => void;
}

export interface ImportResult {
  id: string;
  label: string;
  /** Tags that point at the commit after the import. */
  tags: string[];
  /** False when the same tree was already a commit. */
  newCommit: boolean;
  newObjects: number;
  /** Paths in the tree (root included) and bytes of file content. */
  files: number;
  bytes: number;
  /** Whether this import made the commit the label's HEAD base. */
  head: boolean;
}

export async function importDirectory(store: Store, dir: string, options: ImportOptions): Promise<ImportResult> {
  const label = checkLabel(options.label);
  const tag = options.tag === undefined ? undefined : checkTag(options.tag);
  // a taken tag: an alias fails before the tree is read; a tag naming another commit fails before
  // the commit or any tag is written (only a re-import of its very tree passes)
  const taken = tag === undefined ? undefined : await store.tags.read(label, tag);
  const tagTaken = (): StratumError => new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists and points at another commit; choose another tag, or move it with \`stratum tag --force\` (nothing was imported)`);
  if (taken && taken.kind !== 'id') throw tagTaken();
  const source = await readSourceTree(dir, { refuseTopLevel: ['.stratum'] });
  // shared: imports may run side by side; gc takes the lock exclusively and waits for them
  return store.lock.with('shared', async () => {
    const newObjects = await storeContents(store, source.pending, options.onProgress);
    const { id, meta, image, cache } = buildHeadCommit(source.tree);
    if (taken?.kind === 'id' && taken.id !== id) throw tagTaken();
    const newCommit = await store.commits.add(image, meta);
    const tags = [id];
    await tagIdempotent(store, label, id, id);
    if (tag !== undefined) {
      await tagIdempotent(store, label, tag, id);
      tags.push(tag);
    }
    const head = await store.heads.createIfAbsent(label, id);
    // the new HEAD's first commit starts from its base's Merkle cache (a failure costs only time)
    if (head) {
      const labelDir = headPaths(store, label).labelDir;
      await writeMerkleCache(store.tmp, join(labelDir, MERKLE_CACHE_FILE), cache).catch(() => undefined);
      await writeTreeCache(store.tmp, join(labelDir, TREE_CACHE_FILE), id, source.tree).catch(() => undefined);
    }
    return { id, label, tags, newCommit, newObjects, files: meta.files.count, bytes: meta.files.totalSize, head };
  });
}

/**
 * The image and metadata of a tree whose external files all have digests. The Merkle root comes
 * from the writer's plan (head-image.ts), not from reading the image back; tests hold it equal to
 * merkleOfImage, the definition `verify` uses.
 */
export function buildCommit(tree: Tree, parent?: string): { id: string; meta: CommitMetadata; image: Uint8Array } {
  const { id, meta, image } = buildHeadCommit(tree, parent);
  return { id, meta, image };
}

/**
 * Puts every pending file, many at a time, and sets each inode's digest; returns how many objects
 * were new. Files the import cache knows, whose object is still here, are not read at all.
 */
async function storeContents(store: Store, pending: PendingFile[], onProgress?: (p: ImportProgress) => void): Promise<number> {
  const progress: ImportProgress = { files: 0, totalFiles: pending.length, bytes: 0, totalBytes: pending.reduce((n, f) => n + f.inode.size, 0) };
  const cache = await ImportCache.load(store.cacheDir, store.tmp);
  const batch = await store.objects.batch();
  try {
    // the first failure stops the others from starting files; all have settled before the batch is dropped
    await pool(pending, PUT_CONCURRENCY, async (file) => {
      let digest = cache.lookup(file.identity);
      if (!digest || !(await store.objects.has(digest))) {
        const stored = await batch.putFile(file.path);
        digest = stored.digest;
        if (stored.dev !== file.identity.dev || stored.ino !== file.identity.ino) {
          throw new StratumError('SOURCE_CHANGED', `${display(file.path)} was replaced while it was being imported; import again once nothing writes to it`);
        }
        // changed after the walk but not while stored: the image describes the bytes stored
        file.inode.size = stored.size;
        if (stored.mtimeNs !== file.identity.mtimeNs) Object.assign(file.inode, (({ sec, nsec }) => ({ mtimeSec: sec, mtimeNsec: nsec }))(splitNs(stored.mtimeNs)));
        cache.remember({ dev: stored.dev, ino: stored.ino, size: stored.size, mtimeNs: stored.mtimeNs, ctimeNs: stored.ctimeNs }, digest);
      }
      file.inode.digest = digest;
      file.inode.payload = objectPath(digest);
      progress.files++;
      progress.bytes += file.inode.size;
      onProgress?.(progress);
    });
    const added = (await batch.commit()).length;
    await cache.save(); // after the objects are durable: an entry never names an object that is not
    return added;
  } finally {
    await batch.dispose();
  }
}

/** Tags `label:tag` -> id; a tag already pointing at this very commit is fine (a re-import). */
async function tagIdempotent(store: Store, label: string, tag: string, id: string): Promise<void> {
  try {
    await store.tags.write(label, tag, { kind: 'id', id });
  } catch (err) {
    if (!(err instanceof StratumError && err.code === 'TAG_EXISTS')) throw err;
    const existing = await store.tags.read(label, tag);
    if (existing?.kind === 'id' && existing.id === id) return;
    throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists and points at another commit; use \`stratum tag\` with --force to move it`);
  }
}
