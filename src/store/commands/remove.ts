// `remove label:tag` drops a tag; `remove label:<id prefix>` (8+ hex) drops every tag of the
// label that names that commit; `remove label` drops the label: its tags, its HEAD and HEAD's
// uncommitted changes (only with `force` when there are any). A commit whose last human tag goes
// loses its id tag too, unless HEAD stands on it, so it is freed when nothing else holds it.
// Then what became unreachable is collected. `dryRun` says all this without doing it.
//
// Public surface: remove, RemoveResult.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { exists, removeAnyDepth } from '../../native/files.js';
import { removeLabelAnnotations } from '../annotations.js';
import { StratumError } from '../error.js';
import { headPaths, refuseMountedUpper } from '../head/index.js';
import { withAncestors } from '../history.js';
import { MountState } from '../mount-state.js';
import { isIdPrefix, parseRef } from '../names.js';
import type { Store } from '../store.js';
import { collectGarbage, type GcResult } from './gc.js';

export interface RemoveResult {
  /** What goes: `label:tag` names, or the label. */
  removed: string[];
  /** Commits nothing holds any more (freed by the gc that follows). */
  frees: string[];
  dryRun: boolean;
  /** What gc freed; on a dry run only `commits` is counted (the commits `frees` names). */
  gc: GcResult;
}

const notRun = (frees: string[]): GcResult => ({ commits: frees.length, objects: 0, bytes: 0, dryRun: true });

export async function remove(store: Store, what: string, options: { force?: boolean; dryRun?: boolean; mounts?: MountState } = {}): Promise<RemoveResult> {
  const ref = parseRef(what);
  const mounts = options.mounts ?? new MountState();
  const dryRun = options.dryRun ?? false;
  if (ref.target.kind === 'id') throw new StratumError('USAGE', `remove takes label, label:tag or label:<id prefix>, not ${what}`);
  const mounted = (await mounts.live(store.root)).map((m) => m.commit);
  if (ref.target.kind === 'name') {
    const tags = await tagsToRemove(store, ref.label, ref.target.name);
    const frees = await freedBy(store, mounted, (label, tag) => label === ref.label && tag !== undefined && tags.includes(tag));
    const removed = tags.map((t) => `${ref.label}:${t}`);
    if (dryRun) return { removed, frees, dryRun, gc: notRun(frees) };
    for (const t of tags) await store.tags.remove(ref.label, t);
    return { removed, frees, dryRun, gc: await collectGarbage(store, { mounts }) };
  }
  const labelDir = store.tags.labelDir(ref.label);
  if (!(await exists(labelDir))) throw new StratumError('NOT_FOUND', `label ${ref.label} does not exist`);
  const live = await mounts.live(store.root, ref.label);
  if (live.length > 0) {
    throw new StratumError('BUSY', `${ref.label} is mounted at ${live.map((m) => m.mountpoint).join(', ')}; run \`stratum unmount ${live[0]!.mountpoint}\` first`);
  }
  const refuseChanges = async (): Promise<void> => {
    const changes = await store.heads.upperEntries(ref.label);
    if (changes > 0 && !options.force) {
      throw new StratumError('BUSY', `HEAD of ${ref.label} has uncommitted changes (${changes} top-level entries); commit them, or use --force to discard them`);
    }
  };
  await refuseChanges();
  const frees = await freedBy(store, mounted, (label) => label === ref.label);
  if (dryRun) return { removed: [ref.label], frees, dryRun, gc: notRun(frees) };
  await store.lock.with('exclusive', async () => {
    // again under the lock, whatever state file this process reads: a HEAD served from another
    // one, or mounted since the checks above, keeps its upper
    await refuseMountedUpper(headPaths(store, ref.label), ref.label, store.root);
    await refuseChanges();
    const grave = join(store.tmp.dir, `removed-${ref.label}-${process.pid}`);
    await fsp.rename(labelDir, grave);
    await removeAnyDepth(grave); // HEAD's upper may be deeper than PATH_MAX
    await removeLabelAnnotations(store, ref.label);
  });
  return { removed: [ref.label], frees, dryRun, gc: await collectGarbage(store, { mounts }) };
}

/** The tag itself (and the id tag left alone with its commit), or every tag naming an id prefix's commit. */
async function tagsToRemove(store: Store, label: string, name: string): Promise<string[]> {
  const named = await namesByCommit(store, label);
  const head = (await store.heads.read(label))?.base;
  if (await store.tags.read(label, name)) {
    const id = [...named].find(([, tags]) => tags.includes(name))?.[0];
    const rest = id ? named.get(id)!.filter((t) => t !== name) : [];
    // the id tag alone would keep the commit forever: it goes with the commit's last name
    return id && rest.length === 1 && rest[0] === id && head !== id ? [name, id] : [name];
  }
  if (!isIdPrefix(name)) throw new StratumError('NOT_FOUND', `tag ${label}:${name} does not exist; \`stratum list ${label}\` shows the tags`);
  const ids = [...named.keys()].filter((id) => id.startsWith(name));
  if (ids.length > 1) throw new StratumError('AMBIGUOUS_REF', `${label}:${name} matches ${ids.length} commits of ${label}; give more digits`);
  if (ids.length === 0) throw new StratumError('NOT_FOUND', `no tag of ${label} names a commit starting ${name}; \`stratum list ${label} --all\` shows them`);
  return named.get(ids[0]!)!;
}

/** commit id -> the label's tags resolving to it (tags that do not resolve are left out). */
async function namesByCommit(store: Store, label: string): Promise<Map<string, string[]>> {
  const named = new Map<string, string[]>();
  for (const tag of await store.tags.tags(label)) {
    const id = await store.tags.resolve(label, tag).then((r) => r.id, () => undefined);
    if (id) named.set(id, [...(named.get(id) ?? []), tag]);
  }
  return named;
}

/** Commits live now that would not be once the refs `gone` picks are removed (tag undefined: HEAD). */
async function freedBy(store: Store, mounted: string[], gone: (label: string, tag: string | undefined) => boolean): Promise<string[]> {
  const before: string[] = [...mounted];
  const after: string[] = [...mounted];
  for (const label of await store.tags.labels()) {
    for (const [id, tags] of await namesByCommit(store, label)) {
      before.push(id);
      if (tags.some((t) => !gone(label, t))) after.push(id);
    }
    const head = await store.heads.read(label);
    if (head) {
      before.push(head.base);
      if (!gone(label, undefined)) after.push(head.base);
    }
  }
  const live = await withAncestors(store, after);
  return [...(await withAncestors(store, before))].filter((id) => !live.has(id));
}

