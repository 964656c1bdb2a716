// The store commands: each parses nothing itself, calls the store function of the same name,
// and prints its result (or JSON with --json).
import { StratumError } from '../../store/error.js';
import { diff } from '../../store/commands/diff.js';
import { collectGarbage, type GcResult } from '../../store/commands/gc.js';
import { log } from '../../store/commands/log.js';
import { remove } from '../../store/commands/remove.js';
import { labelStatus, storeStatus, type MountInfo } from '../../store/commands/status.js';
import { tagCommit } from '../../store/commands/tag.js';
import { verify } from '../../store/commands/verify.js';
import { checkLabel, parseRef } from '../../store/names.js';
import type { Store } from '../../store/store.js';
import type { Context } from '../context.js';
import { plural, shortId, size } from '../format.js';

const freed = (gc: GcResult): string => `${gc.dryRun ? 'would free' : 'freed'} ${plural(gc.commits, 'commit')}, ${plural(gc.objects, 'object')}, ${size(gc.bytes)}`;

export async function tagCommand(ctx: Context, source: string, destination: string, options: { move?: boolean; force?: boolean; create?: boolean }): Promise<void> {
  const from = parseRef(source, { bareLabel: 'error' });
  const store = await ctx.openForWriting();
  if (destination.includes(':')) await requireLabel(store, parseRef(destination).label, from.label, options.create, `stratum tag ${source} ${destination} --create`);
  const result = await tagCommit(store, source, destination, { move: options.move ?? false, force: options.force ?? false });
  ctx.result(result, () => [`${result.label}:${result.tag}\t${shortId(result.id)}`]);
  if (result.moved) ctx.note(`(${result.moved} is gone)`);
}

/** A name in a label that does not exist is a typo unless --create says otherwise. */
export async function requireLabel(store: Store, label: string, known: string | undefined, create: boolean | undefined, retry: string): Promise<void> {
  if (label === known || create) return;
  if ((await store.tags.labels()).includes(label) || (await store.heads.read(label))) return;
  throw new StratumError('NOT_FOUND', `label ${label} does not exist; to make it, add --create: ${retry}`);
}

export async function removeCommand(ctx: Context, what: string, options: { force?: boolean; dryRun?: boolean }): Promise<void> {
  parseRef(what);
  const store = await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `${what} does not exist (there is no store at ${ctx.storePath} yet)`);
  const dryRun = options.dryRun ?? false;
  const result = await remove(store, what, { force: options.force ?? false, dryRun });
  const frees = result.frees.length ? `${dryRun ? 'would free' : 'frees'} ${plural(result.frees.length, 'commit')} (${result.frees.map(shortId).join(', ')})` : 'frees no commit (something else still holds it)';
  ctx.result(result, () => dryRun
    ? [`would remove ${result.removed.join(', ')}; ${frees}`]
    : [`removed ${result.removed.join(', ')}; ${freed(result.gc)}`]);
  if (!dryRun && result.removed.length > 1) ctx.note(frees);
}

export async function gcCommand(ctx: Context, options: { dryRun?: boolean }): Promise<void> {
  const store = await ctx.openForReading();
  const result: GcResult = store ? await collectGarbage(store, { dryRun: options.dryRun ?? false }) : { commits: 0, objects: 0, bytes: 0, dryRun: options.dryRun ?? false };
  ctx.result(result, () => [freed(result)]);
}

export async function verifyCommand(ctx: Context, what: string | undefined, options: { repair?: boolean }): Promise<void> {
  if (what) parseRef(what);
  const store = await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `no store at ${ctx.storePath}`);
  const report = await verify(store, what, { repair: options.repair ?? false });
  ctx.result(report, () => [
    ...report.problems.map((p) => `${shortId(p.commit)}: ${p.message}`),
    `${plural(report.commits, 'commit')}, ${plural(report.objects, 'object')} checked: ${report.problems.length === 0 ? 'ok' : plural(report.problems.length, 'problem')}`,
    ...(report.removed.length ? [`removed ${plural(report.removed.length, 'corrupt object')}; import the same files again to restore them`] : []),
    ...report.rebuilt.map((id) => `${shortId(id)}: rebuilt metadata.toml from commit.cfs`),
    ...report.warnings.map((w) => `warning: ${w}`),
  ]);
  if (report.problems.length > 0) process.exitCode = 1;
}

export async function logCommand(ctx: Context, what: string): Promise<void> {
  parseRef(what);
  const store = await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `no store at ${ctx.storePath}`);
  const entries = await log(store, what);
  ctx.result(entries, () => entries.map((e) => `${e.id}  ${e.timestamp}  ${e.files} paths, ${size(e.bytes)}${e.tags.length ? `  (${e.tags.filter((t) => t !== e.id).join(', ') || 'id tag'})` : ''}${annotationList(e.annotations, '  ')}`));
}

export async function statusCommand(ctx: Context, what: string | undefined): Promise<void> {
  if (what) checkLabel(parseRef(what).label);
  const store = await ctx.openForReading();
  if (!what) {
    const s = store ? await storeStatus(store) : { store: ctx.storePath, mounts: [], labels: 0, commits: 0, objects: 0, objectBytes: 0 };
    ctx.result(s, () => [`store ${s.store}${store ? '' : ' (not created yet)'}`, `${plural(s.labels, 'label')}, ${plural(s.commits, 'commit')}, ${plural(s.objects, 'object')} (${size(s.objectBytes)})`, ...s.mounts.map(mountLine)]);
    return;
  }
  if (!store) throw new StratumError('NOT_FOUND', `no store at ${ctx.storePath}`);
  const s = await labelStatus(store, what);
  ctx.result(s, () => [
    `label ${s.label}`,
    s.head ? `HEAD on ${shortId(s.head.base)} (${s.head.baseTime}), ${s.head.upperEntries ? `${s.head.upperEntries} changed top-level entries` : 'no changes'}` : 'no HEAD',
    ...(s.commit ? [`${s.commit.ref} = ${s.commit.id}, ${s.commit.timestamp}, ${s.commit.files} paths, ${size(s.commit.bytes)}${s.commit.parent ? `, parent ${shortId(s.commit.parent)}` : ''}`] : []),
    `tags: ${s.tags.filter((t) => t.tag !== t.id).map((t) => t.tag).join(', ') || 'none'}`,  // id tags: list --all
    ...s.problems.map((p) => `problem: ${p}`),
    ...(Object.keys(s.annotations).length ? [`label annotations:${annotationList(s.annotations, ' ')}`] : []),
    ...(s.head && Object.keys(s.head.annotations).length ? [`HEAD base annotations:${annotationList(s.head.annotations, ' ')}`] : []),
    ...(s.commit && Object.keys(s.commit.annotations).length ? [`${s.commit.ref} annotations:${annotationList(s.commit.annotations, ' ')}`] : []),
    ...s.mounts.map(mountLine),
  ]);
}

/** ` {k=v, k2=v2}` after `lead`, or nothing when there are none. */
function annotationList(a: Record<string, string>, lead: string): string {
  const entries = Object.entries(a);
  return entries.length ? `${lead}{${entries.map(([k, v]) => `${k}=${v}`).join(', ')}}` : '';
}

function mountLine(m: MountInfo): string {
  const what = m.ref === 'HEAD' ? `${m.label} (HEAD, read-write)` : `${m.label}:${m.ref} (read-only)`;
  return m.stale
    ? `${what} at ${m.mountpoint}: STALE (${m.mode === 'kernel' ? `kernel mode: server ${m.pid} or its overlay is gone` : `server ${m.pid} is gone`}; \`stratum unmount ${m.mountpoint}\` detaches it, \`stratum mount ${m.ref === 'HEAD' ? m.label : `${m.label}:${m.ref}`} ${m.mountpoint}\` mounts it there again)${m.log ? `, log ${m.log}` : ''}`
    : `${what} mounted at ${m.mountpoint} by pid ${m.pid} (${m.mode})${m.log ? `, log ${m.log}` : ''}${(m.notes ?? []).map((n) => `\n  note: ${n}`).join('')}`;
}

export async function diffCommand(ctx: Context, a: string, b: string): Promise<void> {
  parseRef(a);
  parseRef(b);
  const store = await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `no store at ${ctx.storePath}`);
  const result = await diff(store, a, b);
  const mark = { added: 'A', removed: 'D', changed: 'M' } as const;
  ctx.result(result, () => result.entries.map((e) => `${mark[e.change]}\t${e.path}${e.what ? `\t(${e.what.join(', ')})` : ''}`));
}
