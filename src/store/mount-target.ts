// What any mount of `label[:tag]` needs before it mounts, FUSE or kernel: the store opened, the
// names checked, and for HEAD a finished (recovered) HEAD with an upper dir; for a tag the commit.
// A server of HEAD (`serving`) takes HEAD's serving lock first (HeadStore.lockServing), so no
// other process, whatever its mount state file, serves or recovers that HEAD while it does.
// Holding it, any overlay still using the label's dirs is a dead kernel server's (kill -9 leaves
// its overlay mounted, maybe recorded in another state file): it is detached before recovery.
//
// Every mount checks the commit image it serves against the commit's id (the id is the image's
// fs-verity digest) before serving it: a flipped byte is CORRUPT_IMAGE, and nothing is mounted
// (checkCommitImage; the servers call it again before a live apply switches to another commit).
//
// Public surface: prepareMountTarget, MountTarget, MountTargetOptions, checkCommitImage.
import { promises as fsp } from 'node:fs';
import { resolve } from 'node:path';
import { digestFd } from '../native/verity.js';
import { ensureUpper, headPaths, recoverHead, type HeadPaths } from './head/index.js';
import { MNT_DETACH, umount2 } from '../native/mount.js';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import type { ServingLock } from './head.js';
import { overlayUsing } from './mount-state.js';
import { checkLabel, checkTag } from './names.js';
import { resolveRef } from './resolve.js';
import { Store } from './store.js';

export interface MountTargetOptions {
  store: string;
  label: string;
  /** a tag, or `@<commit id>`; undefined = HEAD */
  tag?: string | undefined;
  mountpoint: string;
  /** Take HEAD's serving lock (servers of HEAD) before recovering it; BUSY when another process holds it. */
  serving?: boolean;
}

export interface MountTarget {
  store: Store;
  storeRoot: string;
  label: string;
  /** `HEAD` or the tag as given */
  ref: string;
  head: boolean;
  mountpoint: string;
  /** the commit served: HEAD's base, or what the tag names */
  commit: string;
  /** HEAD only: where the upper lives and which xattr namespace it uses */
  paths: HeadPaths;
  xattrNamespace: 'trusted' | 'user';
  /** With `serving`: HEAD's serving lock, held until released or the process ends. */
  servingLock?: ServingLock;
}

export async function prepareMountTarget(o: MountTargetOptions): Promise<MountTarget> {
  const label = checkLabel(o.label);
  if (o.tag !== undefined && !o.tag.startsWith('@')) checkTag(o.tag);
  const storeRoot = resolve(o.store);
  const store = await Store.open(storeRoot);
  const head = o.tag === undefined;
  const paths = headPaths(store, label);
  let commit: string;
  let xattrNamespace: 'trusted' | 'user' = 'trusted';
  let servingLock: ServingLock | undefined;
  if (head) {
    if (o.serving) {
      servingLock = store.heads.lockServing(label, resolve(o.mountpoint));
      detachDeadOverlays(paths.labelDir);
    }
    const state = await store.lock.with('exclusive', async () => {
      await recoverHead(store, label, { orBusy: true });
      const s = await store.heads.read(label);
      if (!s) throw new StratumError('NOT_FOUND', `label ${label} has no HEAD; create one with \`stratum init ${label}\``);
      await ensureUpper(store, s);
      return s;
    }).catch((err: unknown) => { servingLock?.release(); throw err; });
    commit = state.base;
    xattrNamespace = state.xattrNamespace;
  } else {
    const target = o.tag!.startsWith('@') ? { kind: 'id' as const, id: o.tag!.slice(1) } : { kind: 'name' as const, name: o.tag! };
    commit = (await resolveRef(store, { label, target })).id;
  }
  try {
    await checkCommitImage(store, commit, `${label}:${head ? 'HEAD' : o.tag!}`);
  } catch (err) {
    servingLock?.release();
    throw err;
  }
  const target: MountTarget = { store, storeRoot, label, ref: head ? 'HEAD' : o.tag!, head, mountpoint: resolve(o.mountpoint), commit, paths, xattrNamespace };
  if (servingLock) target.servingLock = servingLock;
  return target;
}

/** Detaches overlays that use dir (only a dead server's can, while its serving lock is ours). */
function detachDeadOverlays(dir: string): void {
  for (let i = 0; i < 8; i++) {
    const at = overlayUsing(dir);
    if (at === undefined) return;
    try { umount2(at, MNT_DETACH); } catch { return; }
  }
}

/** CORRUPT_IMAGE unless commit.cfs of `commit` hashes to its id (read on a pool thread, ~20 ms for 10 MB). */
export async function checkCommitImage(store: Store, commit: string, what: string): Promise<void> {
  const path = store.commits.imagePath(commit);
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(path, 'r');
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) throw new StratumError('CORRUPT_IMAGE', `commit ${commit.slice(0, 12)} (${what}) has no commit.cfs; nothing was mounted; \`stratum verify\` reports the store's damage`);
    throw wrapSystemError(err, `reading the image of commit ${commit.slice(0, 12)}`);
  }
  let digest: string;
  try {
    digest = await digestFd(handle.fd);
  } finally {
    await handle.close();
  }
  if (digest !== commit) {
    throw new StratumError('CORRUPT_IMAGE', `commit ${commit.slice(0, 12)} (${what}): commit.cfs does not match its id (its fs-verity digest is ${digest.slice(0, 12)}); nothing was mounted; \`stratum verify\` reports it`);
  }
}
