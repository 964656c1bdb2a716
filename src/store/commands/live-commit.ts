// A live commit of a HEAD the kernel serves (kernel mode, docs/kernel.md "Live commit"). The
// kernel overlay cannot be frozen the way the FUSE server gates its requests, so the upper is
// split instead: HEAD's upper becomes a read-only layer under a fresh upper (head.swap) in a new
// overlay the server puts over the mountpoint (`LiveMount.layer`). From then on nothing new
// reaches the old upper, which is committed while writes go on into head.swap; at the commit
// point the server puts an overlay on the new commit with head.swap as its upper
// (`LiveMount.rebase`), and head.swap becomes head/.
//
// Files open for writing at the split cannot be stopped: their inode goes on into head.swap under
// every name, and the old upper gets a copy for the commit (open-writers.ts).
//
// Crash: head.live (the journal) is written before the split and marked `switched` after it.
// recoverHead rolls an unswitched split back (head.swap saw no write) and finishes a switched one
// (roll forward: both halves are complete), by the server itself (moving its mount along) or by
// anyone once no overlay uses the label's dirs any more.
//
// Public surface: commitLive, LiveMount, LiveCommitResult.
import { promises as fsp } from 'node:fs';
import { StratumError } from '../error.js';
import { checkLabel, checkTag } from '../names.js';
import { keepInUpper, mergeKept, openWriters } from '../open-writers.js';
import type { MountState } from '../mount-state.js';
import type { Store } from '../store.js';
import { makeFreshUpper, upperRootAttr } from '../upper.js';
import { lgetxattr, llistxattr } from '../../native/xattr.js';
import {
  type CommitOptions, type CommitResult, type LiveJournal, finishLiveCommit, headPaths, recoverHead, refuseMountedUpper, refuseTakenTag,
  removeTree, writeLiveJournal,
} from '../head/index.js';

/** What the serving process does to its mount; both resolve once the new overlay is in place. */
export interface LiveMount {
  /**
   * Over the mountpoint: an overlay with `upper` as a read-only layer over `base`, `next` as its
   * upper; the old overlay is made read-only (`sealed`; the kernel refuses while files are open
   * for writing through it) and detached.
   */
  layer(base: string, upper: string, next: string): Promise<{ sealed: boolean }>;
  /** Over the mountpoint: an overlay on `commit` with `upper` (what head.swap held) as its upper. */
  rebase(commit: string, upper: string): Promise<void>;
}

export interface LiveCommitResult extends CommitResult {
  /** Files that were open for writing: they went on into the new HEAD, the commit has a copy. */
  keptWriters: number;
}

/**
 * `server`: the serving process this commit runs for, when it runs in a process of its own (the
 * FUSE server commits in a child, so its requests are not held by the commit's CPU work): HEAD
 * must be that server's, recorded live in `state`.
 */
export async function commitLive(store: Store, options: { label: string; tag?: string | undefined; mount: LiveMount; server?: { pid: number; state: MountState } }): Promise<LiveCommitResult> {
  const label = checkLabel(options.label);
  if (options.tag !== undefined) checkTag(options.tag);
  const { mount } = options;
  return store.lock.with('exclusive', async () => {
    const paths = headPaths(store, label);
    if (options.server === undefined) await refuseMountedUpper(paths, label, store.root);
    else await servedBy(store, label, options.server);
    await finishPending(store, label, mount);
    const head = await store.heads.read(label);
    if (!head) throw new StratumError('NOT_FOUND', `label ${label} has no HEAD`);
    await refuseTakenTag(store, label, options.tag);

    // the next upper, looking like the current one at the root (the merged root's attributes)
    await removeTree(store, paths.swap);
    await makeFreshUpper(paths.swap, await rootOf(paths.upper), head.xattrNamespace);
    const first = openWriters(paths.upper);
    keepInUpper(paths.upper, paths.swap, first);
    const swapRootMtimeNs = String((await fsp.lstat(paths.swap, { bigint: true })).mtimeNs);
    const journal: LiveJournal = { op: 'live-commit', label, from: head.base, kept: first, switched: false, swapRootMtimeNs };
    if (options.tag !== undefined) journal.tag = options.tag;
    await writeLiveJournal(store, paths, journal);
    let sealed: boolean;
    try {
      ({ sealed } = await mount.layer(head.base, paths.upper, paths.swap));
    } catch (err) {
      await fsp.rm(paths.live, { force: true });
      await removeTree(store, paths.swap);
      throw err;
    }
    // The old overlay was made read-only before it went (when the kernel allowed it): no new
    // writer reaches the old upper through it, so this second look finds every writer left.
    const late = openWriters(paths.upper);
    keepInUpper(paths.upper, paths.swap, late);
    const kept = mergeKept(first, late);
    await writeLiveJournal(store, paths, { ...journal, kept, switched: true });
    // Unsealed, a process with its cwd in the old overlay could still open an old upper file for
    // writing later: then objects must be copies, never links to those files.
    const result = await finishLiveCommit(store, paths, { ...journal, kept, switched: true }, rebaseAt(store, label, mount), { linkObjects: sealed });
    return { ...result, keptWriters: kept.length };
  });
}

/** HEAD of `label` is served by `server` (alive, recorded in its mount state): else BUSY. */
async function servedBy(store: Store, label: string, server: { pid: number; state: MountState }): Promise<void> {
  const heads = (await server.state.live(store.root, label)).filter((e) => e.ref === 'HEAD');
  if (!heads.some((e) => e.pid === server.pid)) throw new StratumError('BUSY', `HEAD of ${label} is not served by process ${server.pid} any more`);
}

/** The step hook that puts the overlay on the new commit at the commit point. */
function rebaseAt(store: Store, label: string, mount: LiveMount): CommitOptions['onStep'] {
  return async (step) => {
    if (step === 'head') await mount.rebase((await store.heads.read(label))!.base, headPaths(store, label).swap);
  };
}

/** A live commit a failure left half done (the mount still layered): finish it first, moving the mount along. */
async function finishPending(store: Store, label: string, mount: LiveMount): Promise<void> {
  await recoverHead(store, label, { onStep: rebaseAt(store, label, mount) });
}

/** The upper root's attributes and (non-overlay) xattrs, for a fresh upper that shows the same root. */
async function rootOf(upper: string): Promise<Parameters<typeof makeFreshUpper>[1]> {
  const st = await fsp.lstat(upper, { bigint: true });
  const xattrs = llistxattr(upper, { encoding: 'buffer' })
    .filter((n) => !/^(trusted|user)\.overlay\./.test(n.toString('latin1')))
    .map((n) => ({ name: n.toString('latin1'), value: lgetxattr(upper, n) }));
  return { ...upperRootAttr(st), xattrs };
}
