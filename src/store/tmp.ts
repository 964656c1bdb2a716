// The store's staging area. Every write lands in `tmp/` first and reaches its real name by rename,
// so a crash leaves debris only here. Each entry is flock()ed by the process that made it for as
// long as it lives; an entry nobody holds a lock on is debris from a dead process and is removed
// when a store is opened.
//
// Public surface: TmpArea, TmpEntry, writeFileAtomic.
import { randomBytes } from 'node:crypto';
import { constants as C, promises as fsp, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { syncfs, tryFlock } from '../native/files.js';
import { isSystemError, wrapSystemError } from './error.js';

/** Younger entries are left alone even when unlocked: their maker may not have locked them yet. */
const STALE_AFTER_MS = 30_000;

export interface TmpEntry {
  path: string;
  /** Holds the entry's lock; closing it releases the entry to the cleaner. */
  fd: number;
  /** Removes the entry (if still there) and releases the lock. */
  dispose(): Promise<void>;
}

export class TmpArea {
  constructor(readonly dir: string) {}

  private name(kind: string): string {
    return join(this.dir, `${kind}-${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  /** A new, locked, empty directory for a batch of staged files. */
  async makeDir(kind: string): Promise<TmpEntry> {
    const path = this.name(kind);
    await fsp.mkdir(path, { mode: 0o700 });
    const handle = await fsp.open(path, C.O_RDONLY | C.O_DIRECTORY);
    tryFlock(handle.fd, 'exclusive');
    return {
      path,
      fd: handle.fd,
      dispose: async () => {
        await fsp.rm(path, { recursive: true, force: true });
        await handle.close();
      },
    };
  }

  /** Removes entries left by dead processes; returns how many. */
  async cleanStale(now = Date.now()): Promise<number> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      const path = join(this.dir, name);
      let stat: Stats;
      try {
        stat = await fsp.lstat(path);
      } catch {
        continue;
      }
      if (now - stat.mtimeMs < STALE_AFTER_MS) continue;
      if (await isUnlocked(path, stat)) {
        await fsp.rm(path, { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }
}

async function isUnlocked(path: string, stat: Stats): Promise<boolean> {
  if (!stat.isFile() && !stat.isDirectory()) return true; // we never make anything else here
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    tryFlock(handle.fd, 'exclusive');
    return true;
  } catch (err) {
    if (isSystemError(err, 'EAGAIN')) return false;
    throw err;
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `dest` with `data` so that a reader (or a crash) sees the old file or the new one,
 * never a mix: write a locked temp file, fsync it, rename, fsync the directory.
 * With `noReplace`, an existing dest is left alone and EEXIST is thrown.
 */
export async function writeFileAtomic(tmp: TmpArea, dest: string, data: string | Uint8Array, options: { noReplace?: boolean; mode?: number } = {}): Promise<void> {
  const path = join(tmp.dir, `file-${process.pid}-${randomBytes(6).toString('hex')}`);
  const handle = await fsp.open(path, C.O_WRONLY | C.O_CREAT | C.O_EXCL, options.mode ?? 0o644);
  try {
    tryFlock(handle.fd, 'exclusive');
    await handle.writeFile(data);
    await handle.sync();
    if (options.noReplace) {
      // link() fails with EEXIST instead of replacing: an atomic create-if-absent.
      await fsp.link(path, dest);
      await fsp.unlink(path);
    } else {
      await fsp.rename(path, dest);
    }
    await syncDir(dirname(dest));
  } catch (err) {
    await fsp.rm(path, { force: true });
    if (isSystemError(err, 'EEXIST')) throw err;
    throw wrapSystemError(err, `writing ${dest}`);
  } finally {
    await handle.close();
  }
}

export async function syncDir(path: string): Promise<void> {
  const dir = await fsp.open(path, C.O_RDONLY | C.O_DIRECTORY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Makes everything written on the filesystem holding `fd` durable, in one call. */
export function syncFilesystem(fd: number): void {
  syncfs(fd);
}
