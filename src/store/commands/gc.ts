// Garbage collection. Live = every commit a tag or a HEAD names (and any the caller adds, such as
// mounted commits), with their parent chains as in git, plus every object their images use.
// The rest is removed under the exclusive store lock, so no import or commit is half done.
//
// Public surface: collectGarbage, liveCommits, objectsOfImage, GcResult.
import { lstatSync, promises as fsp, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { FileSource, ImageReader, usedObjects } from '../image/read.js';
import { IMAGE_FILE, METADATA_FILE } from '../commits.js';
import { StratumError, isSystemError } from '../error.js';
import { allRoots, withAncestors } from '../history.js';
import { MountState } from '../mount-state.js';
import type { Store } from '../store.js';
import { pruneAnnotations } from '../annotations.js';

export interface GcResult {
  commits: number;
  objects: number;
  bytes: number;
  dryRun: boolean;
}

/** Commits reachable from tags, HEADs and `extraRoots`, with their ancestors. */
export async function liveCommits(store: Store, extraRoots: string[] = []): Promise<Set<string>> {
  return withAncestors(store, [...extraRoots, ...(await allRoots(store))]);
}

/** The objects an image refers to. */
export function objectsOfImage(imagePath: string): Set<string> {
  const source = new FileSource(imagePath);
  try {
    return new Set(usedObjects(ImageReader.open(source)).keys());
  } finally {
    source.close();
  }
}

/** Roots are tags, HEADs and mounted commits (read from `mounts`, the state file by default). */
export async function collectGarbage(store: Store, options: { dryRun?: boolean; mounts?: MountState } = {}): Promise<GcResult> {
  const mounted = (await (options.mounts ?? new MountState()).live(store.root)).map((m) => m.commit);
  return store.lock.with('exclusive', async () => {
    const live = await liveCommits(store, mounted);
    await refuseIncomplete(store, live);
    const usedObjects = new Set<string>();
    for (const id of live) for (const digest of objectsOfImage(store.commits.imagePath(id))) usedObjects.add(digest);
    const result: GcResult = { commits: 0, objects: 0, bytes: 0, dryRun: options.dryRun ?? false };
    for (const id of await store.commits.list()) {
      if (live.has(id)) continue;
      result.commits++;
      result.bytes += await sizeOfDir(store.commits.path(id));
      if (!options.dryRun) await removeCommit(store, id);
    }
    for await (const digest of store.objects.list()) {
      if (usedObjects.has(digest)) continue;
      const path = store.objects.path(digest);
      try {
        // synchronous: a sweep is thousands of tiny syscalls, each cheaper than a pool round trip
        result.bytes += lstatSync(path).size;
        if (!options.dryRun) unlinkSync(path);
        result.objects++;
      } catch (err) {
        if (!isSystemError(err, 'ENOENT')) throw err;
      }
    }
    // the annotations of commits that are gone would come back with a re-import of the same tree
    if (!options.dryRun && result.commits > 0) await pruneAnnotations(store, (id) => live.has(id));
    return result;
  });
}

/**
 * A live commit the store has only in part stops gc before it deletes anything: without its image
 * gc cannot tell which objects it uses, without its metadata which commits it descends from.
 */
async function refuseIncomplete(store: Store, live: Set<string>): Promise<void> {
  for (const id of [...live].sort()) {
    const state = await store.commits.state(id);
    if (state === 'whole') continue;
    const what = state === 'no-metadata' ? `has no ${METADATA_FILE} (\`stratum verify --repair\` rebuilds it)`
      : state === 'missing' ? 'is not in the store (restore it, or move the ref that names it)'
      : `has no ${IMAGE_FILE} (restore it from where the store was copied from, or move the refs that name it)`;
    throw new StratumError('CORRUPT_STORE', `gc deleted nothing: commit ${id}, which a tag, HEAD or mount still names, ${what}`);
  }
}

/** A commit disappears at once (renamed into tmp), then its files are deleted. */
async function removeCommit(store: Store, id: string): Promise<void> {
  const grave = join(store.tmp.dir, `gc-${id}`);
  await fsp.rm(grave, { recursive: true, force: true });
  await fsp.rename(store.commits.path(id), grave);
  await fsp.rm(grave, { recursive: true, force: true });
}

async function sizeOfDir(dir: string): Promise<number> {
  let total = 0;
  for (const name of await fsp.readdir(dir)) total += (await fsp.lstat(join(dir, name))).size;
  return total;
}
