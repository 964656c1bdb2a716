// The journals of HEAD: what a commit or apply records before anything becomes visible
// (head.journal), and what a live kernel-mode commit records before it splits the upper
// (head.live); and the two ways a journal is settled: rollForward from the commit point on,
// rollBack before it. docs/commit.md has the protocol.
//
// Public surface: Journal, writeJournal, readJournal, LiveJournal, writeLiveJournal,
// readLiveJournal, rollForward, rollBack, CommitStep.
import { constants as C, promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import { StratumError, isSystemError, wrapSystemError } from '../error.js';
import type { HeadState } from '../head.js';
import type { KeptFile } from '../open-writers.js';
import type { Store } from '../store.js';
import { syncDir, writeFileAtomic } from '../tmp.js';
import { lremovexattr, llistxattr } from '../../native/xattr.js';
import type { HeadPaths } from './paths.js';
import { exists } from '../../native/files.js';
import { removeTree, swapUpper } from './upper-dir.js';

/** Points a test (or a live mount) can observe; a crash test kills the process at each. */
export type CommitStep = 'merged' | 'staged' | 'journal' | 'objects' | 'image' | 'tagged' | 'head' | 'swapped' | 'done';

/** What a killed operation left to finish or undo. Paths are upper-relative, hex bytes. */
export interface Journal {
  op: 'commit' | 'apply';
  label: string;
  from: string;
  to: string;
  /** Tag to create (the id itself when none was asked for). */
  tag: string;
  /** Whether the tag must be new (an explicit tag) or may already point at `to` (the id tag). */
  explicitTag: boolean;
  /** Inode number of the fresh upper prepared in head.swap; 0 when the upper is not swapped. */
  freshIno: string;
  /** Objects that share an inode with an upper file until the retired upper is removed. */
  linked: Array<[digest: string, upperPath: string]>;
}

export async function writeJournal(store: Store, paths: HeadPaths, journal: Journal): Promise<void> {
  await writeFileAtomic(store.tmp, paths.journal, JSON.stringify(journal, null, 1) + '\n');
}

export async function readJournal(paths: HeadPaths): Promise<Journal | undefined> {
  return readJournalFile<Journal>(paths.journal, 'move it away and run the command again');
}

/** A journal file, or undefined when there is none; written atomically, so a garbled one is not ours to interpret. */
async function readJournalFile<T>(path: string, whatToDo: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return undefined;
    throw wrapSystemError(err, `reading ${path}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new StratumError('CORRUPT_STORE', `${path} is unreadable; ${whatToDo}`);
  }
}

/** What a live kernel-mode commit records before it splits the upper (docs/kernel.md "Live commit"). */
export interface LiveJournal {
  op: 'live-commit';
  label: string;
  from: string;
  /** The tag asked for; absent: tagged by the commit id. */
  tag?: string;
  /** Files that were open for writing: their inode went on into the next upper (head.swap). */
  kept: KeptFile[];
  /** Whether the overlay with head.swap as its upper was put in place (before that, nothing wrote to head.swap). */
  switched: boolean;
  /** head.swap's root mtime as prepared: a different one means something was written there. */
  swapRootMtimeNs?: string;
}

export async function writeLiveJournal(store: Store, paths: HeadPaths, journal: LiveJournal): Promise<void> {
  await writeFileAtomic(store.tmp, paths.live, JSON.stringify(journal, null, 1) + '\n');
}

export async function readLiveJournal(paths: HeadPaths): Promise<LiveJournal | undefined> {
  return readJournalFile<LiveJournal>(paths.live, `move it away, then merge ${paths.swap} into ${paths.upper} by hand`);
}

/** From a journal whose target commit is complete: tag, head.toml (the commit point), swap, cleanup. Idempotent. */
export async function rollForward(store: Store, paths: HeadPaths, j: Journal, step?: (s: CommitStep) => Promise<void>): Promise<void> {
  if (j.tag !== '' && !(await store.tags.read(j.label, j.tag))) await store.tags.write(j.label, j.tag, { kind: 'id', id: j.to });
  await step?.('tagged');
  const head = await store.heads.read(j.label);
  if (head && (head.base !== j.to || (j.op === 'commit' && head.lastCommit !== j.to))) {
    const next: HeadState = { ...head, base: j.to, updated: new Date().toISOString() };
    if (j.op === 'commit') next.lastCommit = j.to;
    await store.heads.write(next);
  }
  await step?.('head');
  if (j.freshIno !== '0') {
    const upperIno = (await fsp.lstat(paths.upper, { bigint: true }).catch(() => undefined))?.ino;
    if (String(upperIno) !== j.freshIno) {
      if (!(await exists(paths.swap))) throw new StratumError('CORRUPT_STORE', `HEAD of ${j.label}: the prepared upper ${paths.swap} is gone; move ${paths.journal} away and check ${paths.upper}`);
      await swapUpper(paths);
    }
  }
  await step?.('swapped');
  // a live commit's split upper is one again (head/ is what head.swap was)
  await fsp.rm(paths.live, { force: true });
  // The linked objects now belong to the store alone: read-only, no xattrs of the old upper file.
  for (const [digest] of j.linked) {
    const object = store.objects.path(digest);
    try {
      await fsp.chmod(object, 0o444);
      for (const name of llistxattr(object, { encoding: 'buffer' })) {
        try {
          lremovexattr(object, name);
        } catch (err) {
          if (!isSystemError(err, 'ENODATA') && !isSystemError(err, 'EPERM')) throw err;
        }
      }
    } catch (err) {
      if (!isSystemError(err, 'ENOENT')) throw wrapSystemError(err, `finishing object ${digest}`);
    }
  }
  if (j.freshIno !== '0') await removeTree(store, paths.swap);
  await fsp.rm(paths.journal, { force: true });
  await syncDir(paths.labelDir);
  await step?.('done');
}

/** Before the commit point: break links between published objects and upper files, drop the prepared upper. */
export async function rollBack(store: Store, paths: HeadPaths, j: Journal, options: { keepSwap: boolean }): Promise<void> {
  for (const [digest, rel] of j.linked) {
    const object = store.objects.path(digest);
    const upperFile = Buffer.concat([Buffer.from(paths.upper + '/'), Buffer.from(rel, 'hex')]);
    const [o, u] = await Promise.all([fsp.lstat(object, { bigint: true }).catch(() => undefined), fsp.lstat(upperFile, { bigint: true }).catch(() => undefined)]);
    if (!o || !u || o.ino !== u.ino || o.dev !== u.dev) continue;
    // Another commit may use this object by now: replace it with a copy rather than delete it.
    const copy = join(store.tmp.dir, `object-${process.pid}-${digest}`);
    await fsp.rm(copy, { force: true });
    await fsp.copyFile(object, copy, C.COPYFILE_EXCL);
    await fsp.chmod(copy, 0o444);
    const handle = await fsp.open(copy, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(copy, object);
    // durable before the journal goes: else a crash could bring back the object that shares its
    // inode with an upper file the user keeps editing
    await syncDir(dirname(object));
  }
  if (!options.keepSwap) await removeTree(store, paths.swap);
  await fsp.rm(paths.journal, { force: true });
  await syncDir(paths.labelDir);
}
