// The store lock: flock() on <store>/lock. Writers that must not interleave (commit, gc, remove)
// hold it exclusively; readers that need a stable view of refs and commits hold it shared.
// The kernel drops a flock when its holder dies, so a kill -9 never leaves the store locked.
import { constants as C, promises as fsp } from 'node:fs';
import { flock, tryFlock } from '../native/files.js';
import { StratumError, isSystemError } from './error.js';

export type LockMode = 'shared' | 'exclusive';

export class StoreLock {
  constructor(private readonly path: string) {}

  /** Runs `fn` while holding the lock, waiting for it if another process has it. */
  async with<T>(mode: LockMode, fn: () => Promise<T>): Promise<T> {
    const handle = await fsp.open(this.path, C.O_RDWR | C.O_CREAT, 0o644);
    try {
      await flock(handle.fd, mode);
      return await fn();
    } finally {
      await handle.close();
    }
  }

  /** Like `with`, but fails at once with BUSY instead of waiting. */
  async tryWith<T>(mode: LockMode, fn: () => Promise<T>): Promise<T> {
    const handle = await fsp.open(this.path, C.O_RDWR | C.O_CREAT, 0o644);
    try {
      try {
        tryFlock(handle.fd, mode);
      } catch (err) {
        if (isSystemError(err, 'EAGAIN')) throw new StratumError('BUSY', 'the store is locked by another stratum command; try again when it has finished');
        throw err;
      }
      return await fn();
    } finally {
      await handle.close();
    }
  }
}
