// `verify [label[:tag]]`: checks that commits are what their names say. For each commit: the
// image hashes to the commit id and parses; every object it uses exists and re-hashes to its name;
// the Merkle root recomputed from the image equals the one in metadata.toml. Every commit a ref
// names is checked, also one the store has only in part. `repair` removes corrupt objects so that
// importing the same files again restores them, and rebuilds a missing or unreadable metadata.toml
// from the image (without its parent, which only the metadata held).
//
// Public surface: verify, VerifyReport, Problem.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { IMAGE_FILE, METADATA_FILE } from '../commits.js';
import { type CommitMetadata, formatMetadata } from '../metadata.js';
import { digestFd } from '../../native/verity.js';
import { StratumError } from '../error.js';
import { FileSource, ImageReader, walkObjects } from '../image/read.js';
import { merkleOfImage } from '../merkle.js';
import { parseRef } from '../names.js';
import { resolveRef } from '../resolve.js';
import { type Store, openToOthers } from '../store.js';
import { labelRoots, withAncestors } from '../history.js';
import { liveCommits } from './gc.js';

export interface Problem {
  commit: string;
  /** Path inside the commit, when the problem is one file's content. */
  path?: string;
  object?: string;
  kind: 'missing-commit' | 'missing-metadata' | 'missing-object' | 'corrupt-object' | 'bad-image' | 'bad-metadata' | 'merkle-mismatch';
  message: string;
}

export interface VerifyReport {
  commits: number;
  objects: number;
  problems: Problem[];
  /** Objects removed by repair. */
  removed: string[];
  /** Commits whose metadata.toml repair wrote again from their image. */
  rebuilt: string[];
  /** Not problems of the commits, but worth a line: a store other users can read. */
  warnings: string[];
}

export async function verify(store: Store, what: string | undefined, options: { repair?: boolean } = {}): Promise<VerifyReport> {
  return store.lock.with('shared', async () => {
    const ids = await commitsToVerify(store, what);
    const report: VerifyReport = { commits: ids.length, objects: 0, problems: [], removed: [], rebuilt: [], warnings: await openToOthers(store.root) };
    const objectState = new Map<string, 'ok' | 'missing' | 'corrupt'>();
    for (const id of ids) await verifyCommit(store, id, objectState, report, options.repair ?? false);
    report.objects = objectState.size;
    if (options.repair) {
      for (const [digest, state] of objectState) {
        if (state !== 'corrupt') continue;
        await fsp.rm(store.objects.path(digest), { force: true });
        report.removed.push(digest);
      }
    }
    return report;
  });
}

async function commitsToVerify(store: Store, what: string | undefined): Promise<string[]> {
  if (what === undefined) return [...(await liveCommits(store))].sort();
  const ref = parseRef(what);
  if (ref.target.kind !== 'head' || what.includes(':')) return [(await resolveRef(store, ref)).id];
  // a bare label: everything its tags and HEAD reach
  const roots = await labelRoots(store, ref.label);
  if (roots.length === 0) throw new StratumError('NOT_FOUND', `label ${ref.label} has no commits`);
  return [...(await withAncestors(store, roots))].sort();
}

async function verifyCommit(store: Store, id: string, objectState: Map<string, 'ok' | 'missing' | 'corrupt'>, report: VerifyReport, repair: boolean): Promise<void> {
  const problem = (p: Omit<Problem, 'commit'>): void => void report.problems.push({ commit: id, ...p });
  const state = await store.commits.state(id);
  if (state === 'missing' || state === 'empty') return problem({ kind: 'missing-commit', message: `commit ${id} is named by a tag, HEAD or mount but is not in the store` });
  let meta: CommitMetadata | undefined;
  let metaProblem = false;
  if (state === 'no-metadata') {
    metaProblem = true;
    problem({ kind: 'missing-metadata', message: `commit ${id} has no ${METADATA_FILE}${repair ? '' : ` (\`stratum verify --repair\` rebuilds it from ${IMAGE_FILE})`}` });
  } else {
    try {
      meta = await store.commits.metadata(id);
    } catch (err) {
      if (!(err instanceof StratumError)) throw err;
      metaProblem = true;
      problem({ kind: 'bad-metadata', message: err.message });
    }
  }
  if (state === 'no-image') return problem({ kind: 'bad-image', message: `commit ${id} has no image (${IMAGE_FILE} is missing)` });
  const imagePath = store.commits.imagePath(id);
  const image = await fsp.open(imagePath, 'r').catch(() => undefined);
  if (!image) return problem({ kind: 'bad-image', message: `commit ${id} has no image` });
  let imageTime: Date;
  try {
    const actual = await digestFd(image.fd);
    if (actual !== id) return problem({ kind: 'bad-image', message: `image of commit ${id} hashes to ${actual}` });
    imageTime = (await image.stat()).mtime;
  } finally {
    await image.close();
  }
  const source = new FileSource(imagePath);
  try {
    const reader = ImageReader.open(source);
    const uses: Array<{ path: string; digest: string }> = [];
    walkObjects(reader, (path, digest) => uses.push({ path: Buffer.from(path, 'latin1').toString('utf8'), digest }));
    for (const { path, digest } of uses) {
      let state = objectState.get(digest);
      if (state === undefined) {
        state = await objectHealth(store, digest);
        objectState.set(digest, state);
      }
      if (state === 'missing') problem({ kind: 'missing-object', path, object: digest, message: `${path}: object ${digest} is missing` });
      if (state === 'corrupt') problem({ kind: 'corrupt-object', path, object: digest, message: `${path}: object ${digest} is corrupt` });
    }
    const { merkle, stats } = merkleOfImage(reader);
    if (meta && merkle.root !== meta.merkleRoot) problem({ kind: 'merkle-mismatch', message: `commit ${id}: Merkle root is ${merkle.root}, metadata says ${meta.merkleRoot}` });
    if (metaProblem && repair) {
      // Everything but the parent and the time follows from the image (docs/commits.md): the
      // parent is lost, the time is when commit.cfs was written (a copy that keeps mtimes keeps it).
      const rebuilt: CommitMetadata = { merkleRoot: merkle.root, metadataHash: id, timestamp: imageTime.toISOString(), files: { count: stats.count, totalSize: stats.totalSize }, merkle: { leafCount: merkle.leafCount, treeDepth: merkle.depth } };
      if (state !== 'no-metadata') await fsp.rm(join(store.commits.path(id), METADATA_FILE), { force: true });
      await store.commits.restore(id, METADATA_FILE, formatMetadata(rebuilt));
      report.rebuilt.push(id);
    }
  } catch (err) {
    if (!(err instanceof StratumError)) throw err;
    problem({ kind: 'bad-image', message: err.message });
  } finally {
    source.close();
  }
}

async function objectHealth(store: Store, digest: string): Promise<'ok' | 'missing' | 'corrupt'> {
  try {
    await store.objects.verify(digest);
    return 'ok';
  } catch (err) {
    if (err instanceof StratumError && err.code === 'NOT_FOUND') return 'missing';
    if (err instanceof StratumError && err.code === 'CORRUPT_OBJECT') return 'corrupt';
    throw err;
  }
}
