// File syscalls Node lacks, for building overlayfs-format upper dirs and guarding the store.
//
//   mknod(path, mode, major = 0, minor = 0)   mode includes the type: S_IFCHR | 0o644, S_IFIFO | 0o600
//                                             (the process umask applies to the permission bits)
//   renameat2(oldPath, newPath, flags = 0)    RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT
//   syncfs(fd)                                flush the whole filesystem holding fd
//   openForWriting(fd)                        whether anyone has fd's file open for writing
//   tryFlock(fd, mode)                        never waits; a conflicting lock throws code 'EAGAIN'
//   flock(fd, mode): Promise<void>            waits on the libuv threadpool, not the event loop
//   type LockMode = 'shared' | 'exclusive' | 'unlock'
//   anyLength(path, fn), anyLengthAsync(path, fn)   run a path call on a path of any length
//   removeAnyDepth(path): Promise<void>       rm -rf that works on trees deeper than PATH_MAX
//   exists(path): Promise<boolean>            lstat says something is there (ENOENT: no; other errors thrown)
//   S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK
//
// Failures throw (or reject with) Node-style system errors: code, errno, syscall, path (and dest
// for renameat2). A held lock is reported as 'EAGAIN', the name Node uses for EWOULDBLOCK (same
// number on Linux). A whiteout is mknod(path, S_IFCHR, 0, 0).
//
// flock() holds one libuv threadpool thread for as long as it waits (4 by default, shared with
// fs and zlib), and a wait cannot be cancelled: keep waits on locks that are held briefly.
import { closeSync, constants, lstatSync, openSync, promises as fsp, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { getSystemErrorName } from 'node:util';
import { addon } from './addon.js';

export type FilePath = string | Buffer;
export type LockMode = 'shared' | 'exclusive' | 'unlock';

interface Native {
  mknod(path: FilePath, mode: number, major: number, minor: number): void;
  renameat2(oldPath: FilePath, newPath: FilePath, flags: number): void;
  syncfs(fd: number): void;
  flockNow(fd: number, mode: LockMode): void;
  flockWait(fd: number, mode: LockMode): Promise<void>;
  openForWriting(fd: number): boolean;
  /** From the FUSE backing helpers (native/src/fuse_backing.c): 0 or -errno. */
  backingUtimens(path: Buffer | null, fd: number, times: Float64Array): number;
  sysConstants: { RENAME_NOREPLACE: number; RENAME_EXCHANGE: number; RENAME_WHITEOUT: number };
}
const native = addon as unknown as Native;

/** Fail with EEXIST instead of replacing newPath. */
export const RENAME_NOREPLACE: number = native.sysConstants.RENAME_NOREPLACE;
/** Swap oldPath and newPath atomically; both must exist. */
export const RENAME_EXCHANGE: number = native.sysConstants.RENAME_EXCHANGE;
/** Leave a whiteout (char device 0:0) where oldPath was; needs CAP_MKNOD and fs support. */
export const RENAME_WHITEOUT: number = native.sysConstants.RENAME_WHITEOUT;

export const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK } = constants;

export function mknod(path: FilePath, mode: number, major = 0, minor = 0): void {
  native.mknod(path, mode, major, minor);
}

export function renameat2(oldPath: FilePath, newPath: FilePath, flags = 0): void {
  native.renameat2(oldPath, newPath, flags);
}

export function syncfs(fd: number): void {
  native.syncfs(fd);
}

export function tryFlock(fd: number, mode: LockMode): void {
  native.flockNow(fd, mode);
}

export function flock(fd: number, mode: LockMode): Promise<void> {
  return native.flockWait(fd, mode);
}

/** Whether any process has the file open for writing (or mapped shared-writable): fcntl
 *  F_SETLEASE F_RDLCK fails with EAGAIN then; on success the lease is dropped at once (F_UNLCK).
 *  `fd` must be opened O_RDONLY by the caller on the real file (not through overlayfs).
 *
 *  Writers in this process count too: a write fd the caller itself holds on the same inode makes
 *  this true (the kernel counts open-for-write files per inode, not per process), and a writable
 *  `fd` is refused with ERR_INVALID_ARG_VALUE because it would count itself. A file written
 *  through an overlayfs mount counts on its upper file, which overlayfs holds open for writing.
 *  Other failures throw: EINVAL for a non-regular file (or fs.leases-enable = 0), EACCES when the
 *  caller neither owns the file nor has CAP_LEASE. Do not use an fd that holds a lease: the probe
 *  drops it. A writer opening during the probe waits until the lease is dropped (microseconds);
 *  the lease-break signal goes to SIGURG, ignored by default, instead of SIGIO, which would kill
 *  the process. */
export function openForWriting(fd: number): boolean {
  return native.openForWriting(fd);
}

/** UTIME_OMIT from <sys/stat.h>: leave that time as it is. */
const UTIME_OMIT = (1 << 30) - 2;

/**
 * Sets mtime (and atime, when given) to the nanosecond without following a symlink; node:fs
 * passes times through a double and rounds them.
 */
export function lutimensNs(path: FilePath, mtime: { sec: number; nsec: number }, atime?: { sec: number; nsec: number }): void {
  const times = new Float64Array([atime?.sec ?? 0, atime?.nsec ?? UTIME_OMIT, mtime.sec, mtime.nsec]);
  const rc = native.backingUtimens(Buffer.isBuffer(path) ? path : Buffer.from(path), -1, times);
  if (rc < 0) {
    const code = getSystemErrorName(rc);
    throw Object.assign(new Error(`${code}: utimensat '${path.toString()}'`), { code, errno: rc, syscall: 'utimensat', path });
  }
}

/** Longest path the kernel takes in one call, in bytes without the NUL (PATH_MAX is 4096). */
const PATH_LIMIT = 4095;
const O_PATH = 0o10000000;
const SLASH = 0x2f;

/**
 * Runs `fn` with a name for `path` that fits in PATH_MAX: the path itself (almost always), or,
 * for a longer one, `/proc/self/fd/<fd>/<rest>` where fd is the dir holding the rest, opened in
 * chunks (each chunk resolved from the previous dir's fd, as the kernel resolves a path). So a
 * path as deep as any the kernel accepts through a mount works on the dir under it, and every
 * call keeps its own errno: a name over NAME_MAX still fails with ENAMETOOLONG from the
 * filesystem. The dir fds live until fn returns. (xattr calls have no *at form before Linux
 * 6.13, which is why the rest goes through /proc rather than through *at calls.)
 */
export function anyLength<T>(path: Buffer, fn: (p: Buffer) => T): T {
  if (path.length <= PATH_LIMIT) return fn(path);
  const fds: number[] = [];
  try {
    return fn(shorten(path, fds));
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** anyLength for a call that returns a promise: the dir fds live until it settles. */
export async function anyLengthAsync<T>(path: Buffer, fn: (p: Buffer) => Promise<T>): Promise<T> {
  if (path.length <= PATH_LIMIT) return fn(path);
  const fds: number[] = [];
  try {
    return await fn(shorten(path, fds));
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

function shorten(path: Buffer, fds: number[]): Buffer {
  let base = Buffer.alloc(0);
  let rest = path;
  while (base.length + rest.length > PATH_LIMIT) {
    const cut = rest.lastIndexOf(SLASH, PATH_LIMIT - base.length);
    if (cut <= 0) {
      // one name longer than the kernel takes in a whole path: its own answer
      throw Object.assign(new Error(`ENAMETOOLONG: name too long '${path.subarray(0, 64).toString()}...'`), { code: 'ENAMETOOLONG', errno: -osConstants.errno.ENAMETOOLONG, syscall: 'open' });
    }
    const fd = openSync(Buffer.concat([base, rest.subarray(0, cut)]), O_PATH | constants.O_DIRECTORY);
    fds.push(fd);
    base = Buffer.from(`/proc/self/fd/${fd}/`);
    rest = rest.subarray(cut + 1);
  }
  return Buffer.concat([base, rest]);
}

/**
 * Removes a file or a whole tree, like `rm -rf`. node's rm joins whole paths and fails with
 * ENAMETOOLONG on a tree deeper than PATH_MAX (a HEAD's upper can be): then the rest is removed
 * by a walk whose every call goes through anyLength.
 */
export async function removeAnyDepth(path: string | Buffer): Promise<void> {
  try {
    await fsp.rm(path, { recursive: true, force: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENAMETOOLONG') throw err;
    removeWalking(Buffer.from(path));
  }
}

function removeWalking(path: Buffer): void {
  const st = anyLength(path, (p) => lstatSync(p, { throwIfNoEntry: false }));
  if (!st) return;
  if (st.isDirectory()) {
    for (const name of anyLength(path, (p) => readdirSync(p, { encoding: 'buffer' }) as Buffer[])) removeWalking(Buffer.concat([path, Buffer.from('/'), name]));
    anyLength(path, (p) => rmdirSync(p));
  } else anyLength(path, (p) => unlinkSync(p));
}

/** Whether something is at path (not following a last symlink); errors other than ENOENT are thrown. */
export async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
