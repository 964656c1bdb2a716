// Finishing or undoing what a killed commit, apply or live commit left (docs/commit.md), and the
// second half of a live kernel-mode commit, which recovery and the server share.
//
// Public surface: recoverHead, finishLiveCommit.
import { promises as fsp } from 'node:fs';
import { StratumError } from '../error.js';
import { overlayUsing } from '../mount-state.js';
import { mergeKept, openWriters, snapshotKept } from '../open-writers.js';
import type { Store } from '../store.js';
import { syncDir } from '../tmp.js';
import { anyLengthAsync } from '../../native/files.js';
import { type CommitOptions, type CommitResult, commitUpper } from './engine.js';
import { type CommitStep, type LiveJournal, readJournal, readLiveJournal, rollBack, rollForward } from './journal.js';
import { type HeadPaths, headPaths } from './paths.js';
import { exists } from '../../native/files.js';
import { removeTree } from './upper-dir.js';

/**
 * Finishes or undoes what a killed commit or apply of `label` left (see docs/commit.md). Call
 * with the store lock held, before reading the label's HEAD for anything that matters.
 * Returns what it did.
 */
export async function recoverHead(store: Store, label: string, options: { orBusy?: boolean; onStep?: CommitOptions['onStep'] } = {}): Promise<'none' | 'rolled-forward' | 'rolled-back' | 'pending'> {
  const paths = headPaths(store, label);
  const live = await readLiveJournal(paths);
  if (live && !options.onStep) {
    // a live kernel-mode commit whose server failed or died: its overlay may still use both
    // halves of the upper; only the server (onStep) or nobody may finish it
    const mountpoint = overlayUsing(paths.labelDir);
    if (mountpoint !== undefined) {
      if (options.orBusy) throw new StratumError('BUSY', `HEAD of ${label} is in the middle of a live commit, still mounted at ${mountpoint}; run \`stratum unmount ${label}\` (or commit through the mount) to finish it`);
      return 'pending';
    }
  }
  if (live && !live.switched && !(await swapWritten(paths, live))) {
    // killed before the switch: the old overlay went on using the upper, head.swap saw nothing
    await removeTree(store, paths.swap);
    await fsp.rm(paths.live, { force: true });
    await syncDir(paths.labelDir);
    return 'rolled-back';
  }
  const journal = await readJournal(paths);
  const step = options.onStep ? (s: CommitStep) => Promise.resolve(options.onStep!(s, { fastPath: undefined })) : undefined;
  let outcome: 'none' | 'rolled-forward' | 'rolled-back' = 'none';
  if (!journal) {
    if (!live) await removeTree(store, paths.swap); // a swap prepared before its journal was written
  } else if (await store.commits.has(journal.to)) {
    await rollForward(store, paths, journal, step);
    outcome = 'rolled-forward';
  } else {
    await rollBack(store, paths, journal, { keepSwap: live !== undefined });
    outcome = 'rolled-back';
  }
  if (live && (await exists(paths.live))) {
    // whoever writes the old upper now (through a detached old mount, say) is kept like the rest
    await finishLiveCommit(store, paths, { ...live, kept: mergeKept(live.kept, openWriters(paths.upper)) }, options.onStep);
    outcome = 'rolled-forward';
  }
  return outcome;
}

/**
 * Whether head.swap holds anything but what the live commit put there (a fresh root, the kept
 * files and their parent dirs): then the switch happened before the journal could say so, and
 * head.swap has writes that must not be dropped.
 */
async function swapWritten(paths: HeadPaths, live: LiveJournal): Promise<boolean> {
  const root = await fsp.lstat(paths.swap, { bigint: true }).catch(() => undefined);
  if (!root) return false;
  if (live.swapRootMtimeNs !== undefined && String(root.mtimeNs) !== live.swapRootMtimeNs) return true;
  const expected = new Map<string, string | undefined>(); // hex path -> kept inode (undefined: a parent dir)
  for (const k of live.kept) {
    for (const rel of k.names) {
      const parts = Buffer.from(rel, 'hex');
      for (let i = parts.indexOf(0x2f); i >= 0; i = parts.indexOf(0x2f, i + 1)) expected.set(parts.subarray(0, i).toString('hex'), undefined);
      expected.set(rel, k.ino);
    }
  }
  const stack: Buffer[] = [Buffer.alloc(0)];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    const dir = rel.length === 0 ? Buffer.from(paths.swap) : Buffer.concat([Buffer.from(paths.swap + '/'), rel]);
    for (const name of (await anyLengthAsync(dir, (p) => fsp.readdir(p, { encoding: 'buffer' }))) as Buffer[]) {
      const r = rel.length === 0 ? name : Buffer.concat([rel, Buffer.from('/'), name]);
      const key = r.toString('hex');
      if (!expected.has(key)) return true;
      const st = await anyLengthAsync(Buffer.concat([dir, Buffer.from('/'), name]), (p) => fsp.lstat(p, { bigint: true }));
      const ino = expected.get(key);
      if (ino === undefined ? !st.isDirectory() : String(st.ino) !== ino) return true;
      if (st.isDirectory()) stack.push(r);
    }
  }
  return false;
}

/**
 * The second half of a live commit: the upper (now nobody's upper) is committed over the base and
 * head.swap, which holds everything written since, becomes HEAD's upper. `onStep` lets the
 * server put the new overlay in place at the commit point.
 */
export async function finishLiveCommit(store: Store, paths: HeadPaths, live: LiveJournal, onStep?: CommitOptions['onStep'], options: { linkObjects?: boolean } = {}): Promise<CommitResult> {
  const head = await store.heads.read(live.label);
  if (!head) throw new StratumError('CORRUPT_STORE', `HEAD of ${live.label} is gone in the middle of a live commit; ${paths.swap} holds the latest changes`);
  if (!(await exists(paths.swap))) throw new StratumError('CORRUPT_STORE', `HEAD of ${live.label}: the next upper ${paths.swap} of a live commit is gone; move ${paths.live} away`);
  // the writers of the old upper get left with their inode; the commit takes a copy
  snapshotKept(paths.upper, store.tmp.dir, live.kept);
  // linking is only safe when nothing can open the old upper's files for writing any more
  return commitUpper(store, head, paths, { tag: live.tag, onStep, nextUpper: 'prepared', linkObjects: options.linkObjects ?? false });
}
