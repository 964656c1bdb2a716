// `mount label[:tag] [mountpoint]` and `unmount label[:tag]|mountpoint`: start or end a mount
// server (src/fuse/server.ts), or with --mode kernel a kernel overlay mount (src/kernel/mount.ts,
// docs/kernel.md). HEAD is read-write, a tag (or an id) is read-only. --mode auto is FUSE for now:
// live commit, apply and the control files exist only in FUSE mode so far.
import { StratumError } from '../../store/error.js';
import { parseRef } from '../../store/names.js';
import { defaultMountpoint, findMounts, startMount, stopMount } from '../../fuse/client.js';
import { serve } from '../../fuse/server.js';
import { hasSysAdmin, kernelMount, kernelUnmount } from '../../kernel/mount.js';
import type { Context } from '../context.js';

export async function mountCommand(ctx: Context, target: string, mountpoint: string | undefined, options: { foreground?: boolean; mode?: string }): Promise<void> {
  const ref = parseRef(target);
  if (options.mode !== undefined && options.mode !== 'auto' && options.mode !== 'fuse' && options.mode !== 'kernel') {
    throw new StratumError('USAGE', `--mode is auto, fuse or kernel, not ${options.mode}`);
  }
  if (options.mode === 'kernel' && !hasSysAdmin()) throw new StratumError('PERMISSION', '--mode kernel needs root (CAP_SYS_ADMIN); use --mode fuse');
  if (options.mode === 'kernel' && options.foreground) throw new StratumError('USAGE', '--foreground serves a FUSE mount; a kernel mount has no server');
  const tag = ref.target.kind === 'head' ? undefined : ref.target.kind === 'id' ? `@${ref.target.id}` : ref.target.name;
  const mnt = mountpoint ?? defaultMountpoint(ref.label, ref.target.kind === 'id' ? ref.target.id.slice(0, 12) : tag);
  await ctx.openForReading().then((s) => {
    if (!s) throw new StratumError('NOT_FOUND', `no stratum store at ${ctx.storePath}`);
  });
  if (options.mode === 'kernel') {
    const entry = await kernelMount({ store: ctx.storePath, label: ref.label, tag, mountpoint: mnt });
    ctx.result(entry, () => [entry.mountpoint]);
    ctx.note(`${ref.label}:${entry.ref} (${entry.commit.slice(0, 12)}) ${tag === undefined ? 'read-write, kernel overlay; no control files or live commit in kernel mode yet: unmount, then commit' : 'read-only, kernel overlay'}`);
    return;
  }
  if (options.foreground) {
    const status = await serve({ store: ctx.storePath, label: ref.label, tag, mountpoint: mnt, onReady: () => process.stdout.write(`${mnt}\n`) });
    if (status !== 0) throw new StratumError('IO', `the mount at ${mnt} ended with status ${status}`);
    return;
  }
  const entry = await startMount({ store: ctx.storePath, label: ref.label, tag, mountpoint: mnt });
  ctx.result(entry, () => [entry.mountpoint]);
  ctx.note(`${ref.label}:${entry.ref} (${entry.commit.slice(0, 12)}) ${tag === undefined ? 'read-write' : 'read-only'}; server pid ${entry.pid}, log ${entry.log}`);
}

export async function unmountCommand(ctx: Context, what: string): Promise<void> {
  const found = await findMounts(ctx.storePath, what);
  if (found.length === 0) throw new StratumError('NOT_FOUND', `nothing of this store is mounted as ${what}; see \`stratum status\``);
  for (const e of found) {
    const how = e.mode === 'kernel' ? await kernelUnmount(e) : await stopMount(e);
    ctx.result({ unmounted: e.mountpoint, how }, () => [`unmounted ${e.mountpoint}`]);
    if (how === 'stale' && e.mode === 'kernel') ctx.note('it was no longer mounted; its entry was removed');
    else if (how === 'draining' && e.mode === 'kernel') ctx.note('files are still open through it; it was detached and goes away when they are closed');
    else if (how === 'stale') ctx.note('the server had died; its mount was detached (HEAD keeps every change it had written)');
    if (how === 'draining') ctx.note(`files are still open through it; the server (pid ${e.pid}) exits when they are closed`);
  }
}
