// The HEAD commands: commit, apply, init, and `import --bare`. Each checks what was typed, calls
// the store function of the same name and prints its result (or JSON with --json).
import { promises as fsp } from 'node:fs';
import { resolve } from 'node:path';
import { MountState } from '../../store/mount-state.js';
import { applyHead } from '../../store/commands/apply.js';
import { importBare } from '../../store/commands/bare.js';
import { commitHead } from '../../store/commands/commit.js';
import { initLabel } from '../../store/commands/init.js';
import { StratumError } from '../../store/error.js';
import { checkLabel, parseRef } from '../../store/names.js';
import { applyThroughMount, commitThroughMount, mountedHead } from '../../mount/client.js';
import { checkMode, checkMountpoint, mountIn } from './mount.js';
import { requireLabel } from './store-commands.js';
import type { Context } from '../context.js';

const short = (id: string): string => id.slice(0, 12);

/** `label` or `label:tag` -> the label and the optional tag; ids and HEAD are not tags. */
function labelAndTag(input: string, command: string): { label: string; tag: string | undefined } {
  const ref = parseRef(input);
  if (ref.target.kind === 'id') throw new StratumError('USAGE', `${command} takes label or label:tag, not a commit id`);
  return { label: ref.label, tag: ref.target.kind === 'name' ? ref.target.name : undefined };
}

export async function commitCommand(ctx: Context, target: string): Promise<void> {
  const { label, tag } = labelAndTag(target, 'commit');
  const store = await ctx.openForWriting();
  // a mounted HEAD is committed by its server, live, through /.stratum/commit
  const mounted = await mountedHead(store.root, label);
  if (mounted) {
    const live = await commitThroughMount(mounted, tag);
    ctx.result({ id: live.id, label, tag: live.tag, mountpoint: mounted.mountpoint }, () => [`${label}:${live.tag}${live.tag === live.id ? '' : `\t${short(live.id)}`}`]);
    ctx.note(`committed through the mount at ${mounted.mountpoint}; it stays up on the new HEAD`);
    return;
  }
  const r = await commitHead(store, { label, tag });
  ctx.result(
    { id: r.id, label: r.label, tag: r.tag, parent: r.parent, unchanged: r.unchanged, newCommit: r.newCommit, path: r.path, counts: { changedPaths: r.changedPaths, deletions: r.deletions, storedFiles: r.storedFiles, newObjects: r.newObjects, linkedObjects: r.linkedObjects, copiedObjects: r.copiedObjects, files: r.files }, bytes: { read: r.bytes, total: r.totalBytes } },
    () => [`${r.label}:${r.tag}${r.tag === r.id ? '' : `\t${short(r.id)}`}`],
  );
  if (r.unchanged) ctx.note(`no changes since ${short(r.parent)}: ${r.label}:${r.tag} names the base commit`);
  else ctx.note(`${r.changedPaths} changed paths (${r.deletions} deletions), ${r.storedFiles} files stored, ${r.newObjects} new objects; HEAD of ${r.label} is now ${short(r.id)}`);
}

/**
 * `apply ref [mountpoint]`: HEAD moves onto ref, live through its mount when mounted. A mountpoint
 * names where: the HEAD mounted there, or, when the HEAD is not mounted, a new mount there.
 */
export async function applyCommand(ctx: Context, target: string, mountpoint: string | undefined, options: { discard?: boolean; keep?: boolean; mode?: string }): Promise<void> {
  const { label } = parseRef(target, { bareLabel: 'error' });
  const mode = checkMode(options.mode);
  const mnt = mountpoint === undefined ? undefined : resolve(mountpoint);
  const store = await ctx.openForWriting();
  const mounted = await mountedHead(store.root, label);
  if (mnt !== undefined && mounted && mounted.mountpoint !== mnt) {
    throw new StratumError('BUSY', `HEAD of ${label} is mounted at ${mounted.mountpoint}, not at ${mnt}; apply it there (stratum apply ${target} ${mounted.mountpoint}) or unmount it first`);
  }
  if (mnt !== undefined && !mounted) {
    const other = (await new MountState().list()).find((e) => !e.stale && e.mountpoint === mnt);
    if (other) throw new StratumError('BUSY', `${mnt} is the mount of ${other.label}:${other.ref}, not of ${label}'s HEAD; unmount it first or choose another mountpoint`);
    await checkMountpoint(mnt);
  }
  if (mounted) {
    const live = await applyThroughMount(mounted, target, { discard: options.discard ?? false, keep: options.keep ?? false });
    ctx.result({ ...live, mountpoint: mounted.mountpoint }, () => [`${mounted.label}: HEAD on ${short(live.to)} (live at ${mounted.mountpoint})`]);
    return;
  }
  const r = await applyHead(store, target, { discard: options.discard ?? false, keep: options.keep ?? false });
  if (mnt === undefined) ctx.result(r, () => [`${r.label}: HEAD on ${short(r.to)}`]);
  if (r.changesWere === 'discarded') ctx.note(`${r.changes} uncommitted changed paths were discarded`);
  if (r.changesWere === 'kept') ctx.note(`${r.changes} uncommitted changed paths are kept on top of ${short(r.to)}`);
  if (mnt === undefined) return;
  const entry = await mountIn(store, { label, mountpoint: mnt, mode });
  ctx.result({ ...r, mountpoint: entry.mountpoint }, () => [`${r.label}: HEAD on ${short(r.to)}, mounted at ${entry.mountpoint}`]);
}

export async function initCommand(ctx: Context, label: string, mountpoint: string | undefined, options: { migrate?: boolean; mode?: string }): Promise<void> {
  checkLabel(label);
  const mode = checkMode(options.mode);
  if (options.migrate && !mountpoint) throw new StratumError('USAGE', `--migrate imports the directory at the mountpoint: stratum init ${label} <mountpoint> --migrate`);
  if (options.migrate) {
    const st = await fsp.stat(mountpoint!).catch(() => undefined);
    if (!st?.isDirectory()) throw new StratumError('NOT_FOUND', `${mountpoint} is not a directory; --migrate imports an existing one`);
  }
  const store = await ctx.openForWriting();
  const r = await initLabel(store, { label, mountpoint, migrate: options.migrate ?? false });
  if (!mountpoint) {
    ctx.result(r, () => [`${r.label}: HEAD on ${short(r.base)} (empty)`]);
    ctx.note(`mount it with: stratum mount ${r.label}`);
    return;
  }
  // as the seed says: init mounts the new label at the mountpoint (over the migrated directory)
  const entry = await mountIn(store, { label, mountpoint, mode });
  ctx.result({ ...r, mountpoint: entry.mountpoint }, () => [entry.mountpoint]);
  ctx.note(`${r.label}: HEAD on ${short(r.base)}${r.migrated ? ` (${r.migrated.files} paths imported from ${mountpoint})` : ' (empty)'}, mounted at ${entry.mountpoint} (${entry.mode})`);
}

/** `import --bare <dir> <label[:tag]>`: the dir is a delta on the label's HEAD base. */
export async function importBareCommand(ctx: Context, dir: string, target: string | undefined, create: boolean | undefined): Promise<void> {
  if (!target) throw new StratumError('USAGE', 'import --bare needs a target: stratum import --bare <dir> <label[:tag]>');
  const { label, tag } = labelAndTag(target, 'import --bare');
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new StratumError('NOT_FOUND', `${dir} is not a directory`);
  const store = await ctx.openForWriting();
  await requireLabel(store, label, undefined, create, `stratum import --bare ${dir} ${target} --create`);
  const r = await importBare(store, dir, { label, tag });
  ctx.result(r, () => [`${r.label}:${r.tag}${r.tag === r.id ? '' : `\t${short(r.id)}`}`]);
  ctx.note(`${r.changedPaths} changed paths (${r.deletions} deletions) on ${r.parent ? short(r.parent) : 'the empty tree'}, ${r.newObjects} new objects; HEAD is unchanged (stratum apply ${r.label}:${r.tag} moves it)`);
}
