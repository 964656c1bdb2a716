// `remove label:tag` drops a tag; `remove label` drops the label: its tags, its HEAD and HEAD's
// uncommitted changes (only with `force` when there are any). Either way, what became unreachable
// is collected.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { removeAnyDepth } from '../../native/files.js';
import { StratumError } from '../error.js';
import { MountState } from '../mount-state.js';
import { parseRef } from '../names.js';
import type { Store } from '../store.js';
import { collectGarbage, type GcResult } from './gc.js';

export interface RemoveResult {
  removed: string;
  gc: GcResult;
}

export async function remove(store: Store, what: string, options: { force?: boolean; mounts?: MountState } = {}): Promise<RemoveResult> {
  const ref = parseRef(what);
  const mounts = options.mounts ?? new MountState();
  if (ref.target.kind === 'id') throw new StratumError('USAGE', `remove takes label or label:tag, not a commit id; commits go when nothing names them`);
  if (ref.target.kind === 'name') {
    await store.tags.remove(ref.label, ref.target.name);
    return { removed: `${ref.label}:${ref.target.name}`, gc: await collectGarbage(store, { mounts }) };
  }
  const labelDir = store.tags.labelDir(ref.label);
  if (!(await exists(labelDir))) throw new StratumError('NOT_FOUND', `label ${ref.label} does not exist`);
  const mounted = await mounts.live(store.root, ref.label);
  if (mounted.length > 0) {
    throw new StratumError('BUSY', `${ref.label} is mounted at ${mounted.map((m) => m.mountpoint).join(', ')}; run \`stratum unmount ${mounted[0]!.mountpoint}\` first`);
  }
  const changes = await store.heads.upperEntries(ref.label);
  if (changes > 0 && !options.force) {
    throw new StratumError('BUSY', `HEAD of ${ref.label} has uncommitted changes (${changes} top-level entries); commit them, or use --force to discard them`);
  }
  await store.lock.with('exclusive', async () => {
    const grave = join(store.tmp.dir, `removed-${ref.label}-${process.pid}`);
    await fsp.rename(labelDir, grave);
    await removeAnyDepth(grave); // HEAD's upper may be deeper than PATH_MAX
  });
  return { removed: ref.label, gc: await collectGarbage(store, { mounts }) };
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.access(path);
    return true;
  } catch {
    return false;
  }
}
