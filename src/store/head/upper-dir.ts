// HEAD's upper dir as a whole: made when missing (with the base's root attributes), counted,
// refused while someone else's mount uses it, and swapped for a fresh one in one
// renameat2(EXCHANGE), so the upper dir is always complete. A live mount hooks in its own swap.
//
// Public surface: ensureUpper, refuseMountedUpper, swapUpper, countUpper, upperRootChanged,
// removeTree.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { isSystemError } from '../error.js';
import { type HeadState, headServedBy } from '../head.js';
import type { Inode } from '../image/tree.js';
import { MountState, overlayUsing } from '../mount-state.js';
import type { Store } from '../store.js';
import { syncDir } from '../tmp.js';
import { makeFreshUpper, upperRootAttr } from '../upper.js';
import { StratumError } from '../error.js';
import { anyLengthAsync, RENAME_EXCHANGE, removeAnyDepth, renameat2 } from '../../native/files.js';
import { commitRoot } from './base.js';
import { headPaths, type HeadPaths } from './paths.js';
import { exists } from '../../native/files.js';

/** Moves a tree into tmp/ (one rename), then removes it there: never half a tree in place. */
export async function removeTree(store: Store, path: string): Promise<void> {
  if (!(await exists(path))) return;
  const grave = join(store.tmp.dir, `retired-${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  await fsp.rename(path, grave);
  await removeAnyDepth(grave);
}

/** Makes the label's upper and work dirs if missing (the upper with `base`'s root attributes). */
export async function ensureUpper(store: Store, head: HeadState): Promise<void> {
  const paths = headPaths(store, head.label);
  await fsp.mkdir(paths.labelDir, { recursive: true });
  let made = false;
  if (!(await exists(paths.upper))) {
    await removeTree(store, paths.swap);
    await makeFreshUpper(paths.swap, commitRoot(store, head.base), head.xattrNamespace);
    await fsp.rename(paths.swap, paths.upper);
    made = true;
  }
  if (!(await exists(paths.work))) {
    await fsp.mkdir(paths.work, { mode: 0o700 });
    made = true;
  }
  if (made) await syncDir(paths.labelDir);
}

/**
 * Refuses to touch an upper that a mount uses, unless this process is the one serving it (a
 * server commits through here itself). Other mounts commit through their own server.
 */
export async function refuseMountedUpper(paths: HeadPaths, label: string, storeRoot: string): Promise<void> {
  const heads = (await new MountState().live(storeRoot, label)).filter((e) => e.ref === 'HEAD');
  if (heads.some((e) => e.pid === process.pid)) return;
  const served = heads[0];
  if (served) throw new StratumError('BUSY', `HEAD of ${label} is mounted at ${served.mountpoint}; commit and apply through the mount (stratum does this for you), or unmount it first`);
  const mountpoint = overlayUsing(paths.labelDir);
  if (mountpoint !== undefined) throw new StratumError('BUSY', `HEAD of ${label} is used by an overlay mounted at ${mountpoint}; unmount it first (\`stratum unmount ${label}\`)`);
  // a server this process's mount state does not know (another XDG_RUNTIME_DIR or STRATUM_STATE)
  const elsewhere = headServedBy(paths.labelDir);
  if (elsewhere !== undefined) throw new StratumError('BUSY', `HEAD of ${label} is mounted ${elsewhere}, recorded in another mount state (XDG_RUNTIME_DIR or STRATUM_STATE); commit and apply through that mount, or unmount it first`);
}

/**
 * The upper swap: head.swap (a fresh upper) and head/ trade places in one renameat2(EXCHANGE),
 * so the upper dir is always complete. Afterwards head.swap holds the retired upper. A live mount
 * hooks in here instead (freeze writes, swap its upper, resume).
 */
export async function swapUpper(paths: HeadPaths): Promise<void> {
  if (await exists(paths.upper)) renameat2(paths.swap, paths.upper, RENAME_EXCHANGE);
  else await fsp.rename(paths.swap, paths.upper);
  await syncDir(paths.labelDir);
}

/** Entries in the upper dir, recursively (0 when there is none). */
export async function countUpper(upper: string): Promise<number> {
  let count = 0;
  const stack = [Buffer.from(upper)];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let entries;
    try {
      entries = await anyLengthAsync(dir, (p) => fsp.readdir(p, { encoding: 'buffer', withFileTypes: true }));
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) continue;
      throw err;
    }
    for (const e of entries) {
      count++;
      if (e.isDirectory()) stack.push(Buffer.concat([dir, Buffer.from('/'), e.name as unknown as Buffer]));
    }
  }
  return count;
}

/** Whether the upper root differs from `root`'s attributes (the only change an empty upper can carry). */
export async function upperRootChanged(upper: string, root: Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec'>): Promise<boolean> {
  const stat = await fsp.lstat(upper, { bigint: true }).catch(() => undefined);
  if (!stat) return false;
  const a = upperRootAttr(stat);
  return a.mode !== root.mode || a.uid !== root.uid || a.gid !== root.gid || a.mtimeSec !== root.mtimeSec || a.mtimeNsec !== root.mtimeNsec;
}
