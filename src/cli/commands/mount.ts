// `mount label[:tag] [mountpoint]` and `unmount label[:tag]|mountpoint`: start or end a mount
// server. `--mode fuse`: our FUSE server serves the tree (src/fuse/server.ts). `--mode kernel`:
// the kernel serves it (erofs + overlayfs) and a kernel server owns the mount and its control
// files (src/kernel/server.ts, docs/kernel.md). `--mode auto` (the default) picks kernel when this
// process may and the HEAD's upper suits it, else FUSE. HEAD is read-write, a tag (or an id) read-only.
import { constants as fsConstants, promises as fsp } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { StratumError } from '../../store/error.js';
import { parseRef } from '../../store/names.js';
import type { Store } from '../../store/store.js';
import { defaultMountpoint, detachDeadMount, findMounts, startMount, stopMount } from '../../mount/client.js';
import { serve } from '../../fuse/server.js';
import { checkMountFlags } from '../../mount/serve.js';
import { serveKernel } from '../../kernel/server.js';
import { checkKernelMode, kernelModeUnavailable, storeImagesUnavailable } from '../../kernel/support.js';
import type { MountEntry } from '../../store/mount-state.js';
import type { Context } from '../context.js';

export type MountMode = 'auto' | 'fuse' | 'kernel';

export function checkMode(mode: string | undefined): MountMode {
  if (mode === undefined) return 'auto';
  if (mode !== 'auto' && mode !== 'fuse' && mode !== 'kernel') throw new StratumError('USAGE', `--mode is auto, fuse or kernel, not ${mode}`);
  return mode;
}

/**
 * auto -> kernel when kernel mode is available, the kernel can mount this store's images and (for
 * HEAD) the upper's xattrs are trusted.*, else fuse; `why` says why not kernel where that is news
 * (root on a store the kernel cannot mount from), for status.
 */
export async function resolveMode(store: Store, label: string, head: boolean, mode: MountMode): Promise<{ mode: 'fuse' | 'kernel'; why?: string }> {
  if (mode === 'kernel') {
    checkKernelMode();
    const cannot = storeImagesUnavailable(store.root);
    if (cannot !== undefined) throw new StratumError('IO', `--mode kernel is not available for this store: ${cannot}; use --mode fuse`);
  }
  if (mode !== 'auto') return { mode };
  if (kernelModeUnavailable() !== undefined) return { mode: 'fuse' };
  if (head && (await store.heads.read(label))?.xattrNamespace === 'user') return { mode: 'fuse' };
  const cannot = storeImagesUnavailable(store.root);
  if (cannot !== undefined) return { mode: 'fuse', why: `kernel mode not used: ${cannot}` };
  return { mode: 'kernel' };
}

/** Starts the server of a mount in the chosen mode and waits until the mount answers. */
export async function mountIn(store: Store, o: { label: string; tag?: string | undefined; mountpoint: string; mode: MountMode; allowSuid?: boolean | undefined; allowDev?: boolean | undefined }): Promise<MountEntry> {
  await checkMountpoint(o.mountpoint);
  const { mode, why } = await resolveMode(store, o.label, o.tag === undefined, o.mode);
  return startMount({ store: store.root, label: o.label, tag: o.tag, mountpoint: o.mountpoint, mode, allowSuid: o.allowSuid, allowDev: o.allowDev, notes: why ? [why] : [] });
}

/** A mountpoint is a directory, or absent (the server makes it); anything else is one clear line. */
export async function checkMountpoint(path: string): Promise<void> {
  if (resolve(path) === '/') throw new StratumError('BAD_PATH', 'refusing to mount over /: it would hide the whole system; mount onto a directory');
  const st = await fsp.stat(path).catch((err: NodeJS.ErrnoException) => err);
  if (st instanceof Error) {
    if (st.code === 'ENOENT') return checkCanCreate(path);
    if (st.code === 'ENOTCONN') return;  // a dead mount: the server detaches it
    if (st.code === 'ENOTDIR') throw new StratumError('BAD_PATH', `${path}: a part of this path is a file; mount onto a directory (it is created if absent)`);
    if (st.code === 'EACCES') throw new StratumError('PERMISSION', `${path}: permission denied; mount onto a directory of yours`);
    return;
  }
  if (!st.isDirectory()) throw new StratumError('BAD_PATH', `${path} is a file, not a directory; mount onto a directory (it is created if absent)`);
}

/** The server makes an absent mountpoint: say now, in one line, when the user could not. */
async function checkCanCreate(path: string): Promise<void> {
  let parent = dirname(path);
  while (!(await fsp.stat(parent).then(() => true, () => false)) && parent !== dirname(parent)) parent = dirname(parent);
  if (!(await fsp.access(parent, fsConstants.W_OK | fsConstants.X_OK).then(() => true, () => false))) {
    throw new StratumError('PERMISSION', `cannot create the mountpoint ${path}: ${parent} is not writable for you; mount onto a directory of yours`);
  }
}

export async function mountCommand(ctx: Context, target: string, mountpoint: string | undefined, options: { foreground?: boolean; mode?: string; allowSuid?: boolean; allowDev?: boolean }): Promise<void> {
  const ref = parseRef(target);
  const requested = checkMode(options.mode);
  const flags = { allowSuid: options.allowSuid === true, allowDev: options.allowDev === true };
  checkMountFlags(flags);
  if (requested === 'kernel') checkKernelMode();  // before anything is opened or made
  const tag = ref.target.kind === 'head' ? undefined : ref.target.kind === 'id' ? `@${ref.target.id}` : ref.target.name;
  const mnt = mountpoint ?? defaultMountpoint(ref.label, ref.target.kind === 'id' ? ref.target.id.slice(0, 12) : tag);
  const store = await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `no stratum store at ${ctx.storePath}`);
  if (options.foreground) {
    const { mode, why } = await resolveMode(store, ref.label, tag === undefined, requested);
    const status = await (mode === 'kernel' ? serveKernel : serve)({ store: ctx.storePath, label: ref.label, tag, mountpoint: mnt, ...flags, notes: why ? [why] : [], onReady: () => process.stdout.write(`${mnt}\n`) });
    if (status !== 0) throw new StratumError('IO', `the mount at ${mnt} ended with status ${status}`);
    return;
  }
  const entry = await mountIn(store, { label: ref.label, tag, mountpoint: mnt, mode: requested, ...flags });
  ctx.result(entry, () => [entry.mountpoint]);
  ctx.note(`${ref.label}:${entry.ref} (${entry.commit.slice(0, 12)}) ${tag === undefined ? 'read-write' : 'read-only'}, ${entry.mode === 'kernel' ? 'served by the kernel' : `served by FUSE${entry.notes?.length ? ` (${entry.notes.join('; ')})` : ''}`}; server pid ${entry.pid}, log ${entry.log}`);
}

export async function unmountCommand(ctx: Context, what: string): Promise<void> {
  const found = await findMounts(ctx.storePath, what);
  if (found.length === 0 && (await detachDeadMount(what))) {
    ctx.result({ unmounted: resolve(what), how: 'stale' }, () => [`unmounted ${resolve(what)}`]);
    ctx.note('its server had died; the dead mount was detached');
    return;
  }
  if (found.length === 0) throw new StratumError('NOT_FOUND', `nothing of this store is mounted as ${what}; see \`stratum status\``);
  for (const e of found) {
    const how = await stopMount(e);
    ctx.result({ unmounted: e.mountpoint, how }, () => [`unmounted ${e.mountpoint}`]);
    if (how === 'stale') ctx.note(`the server had died; its mount was detached (HEAD keeps every change it had written)`);
    if (how === 'draining') ctx.note(e.mode === 'kernel' ? 'files are still open through it; it was detached and goes away when they are closed'
      : `files are still open through it; the server (pid ${e.pid}) exits when they are closed`);
  }
}
