// `mount label[:tag] [mountpoint]` and `unmount label[:tag]|mountpoint`: start or end a mount
// server (src/fuse/server.ts). HEAD is read-write, a tag (or an id) is read-only.
import { StratumError } from '../../store/error.js';
import { parseRef } from '../../store/names.js';
import { defaultMountpoint, findMounts, startMount, stopMount } from '../../fuse/client.js';
import { serve } from '../../fuse/server.js';
import type { Context } from '../context.js';

export async function mountCommand(ctx: Context, target: string, mountpoint: string | undefined, options: { foreground?: boolean; mode?: string }): Promise<void> {
  const ref = parseRef(target);
  if (options.mode !== undefined && options.mode !== 'auto' && options.mode !== 'fuse') {
    throw new StratumError('USAGE', `--mode ${options.mode} is not available yet; use --mode fuse (the default)`);
  }
  const tag = ref.target.kind === 'head' ? undefined : ref.target.kind === 'id' ? `@${ref.target.id}` : ref.target.name;
  const mnt = mountpoint ?? defaultMountpoint(ref.label, ref.target.kind === 'id' ? ref.target.id.slice(0, 12) : tag);
  await ctx.openForReading().then((s) => {
    if (!s) throw new StratumError('NOT_FOUND', `no stratum store at ${ctx.storePath}`);
  });
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
    const how = await stopMount(e);
    ctx.result({ unmounted: e.mountpoint, how }, () => [`unmounted ${e.mountpoint}`]);
    if (how === 'stale') ctx.note('the server had died; its mount was detached (HEAD keeps every change it had written)');
    if (how === 'draining') ctx.note(`files are still open through it; the server (pid ${e.pid}) exits when they are closed`);
  }
}
