// Which labels and commits are mounted right now: the state file, `state` in the runtime dir
// (runtime-dir.ts: /run/stratum for root, $XDG_RUNTIME_DIR/stratum or a private
// /tmp/stratum-<uid> otherwise; $STRATUM_STATE overrides); gone after a reboot, like the mounts
// it describes. Reading it never creates the dir. Readers and writers hold a flock on the file beside it. Mount
// servers add and remove their entries; store commands read them (remove refuses a mounted label,
// gc keeps mounted commits). An entry whose server process is gone is stale: reported, never
// trusted as a mount. A kernel-mode entry (src/kernel/server.ts) is live while its server runs
// and /proc/self/mountinfo shows its overlay (source `stratum-kernel:...`) at the mountpoint
// (docs/kernel.md).
//
// Public surface: MountEntry, MountState (list, live, claim, remove, update), defaultStatePath, kernelMountedAt, overlayUsing, processAlive,
// KERNEL_SOURCE_PREFIX.
import { constants as C, promises as fsp, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { flock } from '../native/files.js';
import { StratumError, isSystemError } from './error.js';
import { ensureRuntimeDir, existingRuntimeDir, runtimeDir } from './runtime-dir.js';

export interface MountEntry {
  /** The store the mount serves (absolute path). */
  store: string;
  label: string;
  /** `HEAD` or a tag. */
  ref: string;
  /** The commit being served (HEAD's base for HEAD mounts). */
  commit: string;
  mountpoint: string;
  /** The server's pid (a kernel mount's server owns the overlay and its control files). */
  pid: number;
  mode: 'fuse' | 'kernel';
  started: string;
  /** Where the server logs. */
  log?: string;
  /** What the user should know about this mount (why FUSE was chosen, what is not checked). */
  notes?: string[];
}

export function defaultStatePath(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? 0): string {
  if (env.STRATUM_STATE) return resolve(env.STRATUM_STATE);
  return join(runtimeDir(env, uid), 'state');
}

/** Whether a process with this pid runs (ours or someone else's); a zombie nobody reaped does not. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (!isSystemError(err, 'EPERM')) return false; // EPERM: exists, owned by someone else
  }
  try {
    // `pid (comm) S ...`: the state follows the last ')' (comm may hold anything)
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** The overlay source name of a kernel-mode mount: `stratum-kernel:<label>[:<tag>]`. */
export const KERNEL_SOURCE_PREFIX = 'stratum-kernel:';

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Whether /proc/self/mountinfo shows a stratum kernel-mode overlay at the mountpoint. */
export function kernelMountedAt(mountpoint: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => {
      const f = line.split(' ');
      const dash = f.indexOf('-');
      return dash > 0 && unescapeMountinfo(f[4] ?? '') === mountpoint && f[dash + 1] === 'overlay' && (f[dash + 2] ?? '').startsWith(KERNEL_SOURCE_PREFIX);
    });
  } catch {
    return false;
  }
}

/** The mountpoint of an overlay (any) one of whose layers is `dir` or under it, if one is mounted. */
export function overlayUsing(dir: string): string | undefined {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of info.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 0 || f[dash + 1] !== 'overlay') continue;
    const options = unescapeMountinfo(f[dash + 3] ?? '');
    if (options.split(/[,:=]/).some((part) => part === dir || part.startsWith(`${dir}/`))) return unescapeMountinfo(f[4] ?? '');
  }
  return undefined;
}

export class MountState {
  constructor(readonly path: string = defaultStatePath()) {}

  /** Live: the server runs, and for a kernel entry its overlay is still at the mountpoint. */
  static entryLive(e: MountEntry): boolean {
    return e.mode === 'kernel' ? kernelMountedAt(e.mountpoint) && (e.pid === 0 || processAlive(e.pid)) : processAlive(e.pid);
  }

  /** Reads the entries under a shared lock, each marked live or stale. */
  async list(): Promise<Array<MountEntry & { stale: boolean }>> {
    return this.locked('shared', async () => (await this.read()).map((e) => ({ ...e, stale: !MountState.entryLive(e) })));
  }

  /** Live entries of one store, optionally one label. */
  async live(store: string, label?: string): Promise<MountEntry[]> {
    return (await this.list()).filter((e) => !e.stale && e.store === resolve(store) && (label === undefined || e.label === label));
  }

  /**
   * Records a new mount under the state lock: BUSY if a live mount holds the mountpoint or (for a
   * HEAD) the label's one writable HEAD; stale entries for either are dropped and their
   * mountpoints returned, for the caller to detach.
   */
  async claim(entry: MountEntry): Promise<string[]> {
    const stale: string[] = [];
    const head = entry.ref === 'HEAD';
    const store = resolve(entry.store);
    await this.update((entries) => {
      const keep: MountEntry[] = [];
      for (const e of entries) {
        const live = MountState.entryLive(e);
        const sameTarget = e.store === store && e.label === entry.label;
        if (live && e.mountpoint === entry.mountpoint) throw new StratumError('BUSY', `${entry.mountpoint} is already a stratum mount (${e.label}:${e.ref}, ${e.mode === 'kernel' ? 'kernel' : `pid ${e.pid}`})`);
        if (live && head && sameTarget && e.ref === 'HEAD') {
          throw new StratumError('BUSY', `HEAD of ${entry.label} is already mounted at ${e.mountpoint}${e.mode === 'kernel' ? ' (kernel)' : ''}; unmount it first or mount a tag (read-only)`);
        }
        if (!live && (e.mountpoint === entry.mountpoint || (sameTarget && e.ref === entry.ref))) {
          stale.push(e.mountpoint);
          continue;
        }
        keep.push(e);
      }
      return [...keep, { ...entry, store }];
    });
    return stale;
  }

  async remove(mountpoint: string): Promise<void> {
    await this.update((entries) => entries.filter((e) => e.mountpoint !== mountpoint));
  }

  /** Read-modify-write under the exclusive lock; the file is replaced atomically. */
  async update(change: (entries: MountEntry[]) => MountEntry[]): Promise<void> {
    await this.locked('exclusive', async () => {
      const next = change(await this.read());
      const tmp = `${this.path}.${process.pid}.tmp`;
      await fsp.writeFile(tmp, `${JSON.stringify({ version: 1, mounts: next }, null, 2)}\n`);
      await fsp.rename(tmp, this.path);
    });
  }

  private async read(): Promise<MountEntry[]> {
    try {
      const doc = JSON.parse(await fsp.readFile(this.path, 'utf8')) as { version?: number; mounts?: MountEntry[] };
      return Array.isArray(doc.mounts) ? doc.mounts : [];
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return [];
      throw new StratumError('CORRUPT_STORE', `mount state ${this.path} is unreadable; remove it if no stratum mounts are up`);
    }
  }

  private async locked<T>(mode: 'shared' | 'exclusive', fn: () => Promise<T>): Promise<T> {
    const dir = dirname(this.path);
    const isDefault = dir === runtimeDir();
    if (mode === 'shared') {
      // a reader of an absent state has nothing to lock: no mounts, and nothing gets created
      if (isDefault ? existingRuntimeDir(dir) === undefined : !(await fsp.stat(dir).catch(() => undefined))) return fn();
    } else if (isDefault) ensureRuntimeDir(dir);
    else await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const handle = await fsp.open(`${this.path}.lock`, C.O_RDWR | C.O_CREAT, 0o600);
    try {
      await flock(handle.fd, mode);
      return await fn();
    } finally {
      await handle.close();
    }
  }
}
