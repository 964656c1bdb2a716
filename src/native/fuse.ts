// Typed API of the FUSE binding (native/src/fuse.c, libfuse3 low-level API).
//
// Public surface:
//   mount(mountpoint, handlers, options) -> FuseSession   serve a filesystem
//   FuseHandlers                                         what a filesystem implements (inode based)
//   Entry, AttrReply, OpenReply, DirEntry, SetAttr, Caller, Attr
//   FuseError, errnoOf                                   how handlers fail
//   backing                                              syscalls for passthrough-style filesystems
//   constants: SET_*, RENAME_*, UTIME_*, CAP_*, ATTR_LEN
//
// Control plane: every metadata request reaches a handler on the JS thread with the inode number,
// names as Buffers (any bytes but '/' and NUL) and the caller. Data plane: when open/create answer
// with a backing `fd`, reads, writes, flush, fsync, fallocate, lseek and copy_file_range on that
// handle are served by C threads and never reach JS; release closes the fd in C and then tells JS.
//
// Lookup counting: every Entry a handler returns (lookup, mknod, mkdir, symlink, link, create,
// readdirplus entries) counts as one lookup of that inode; the kernel gives them back through
// forget(ino, n). When the binding could not deliver an Entry (readdirplus entry that did not fit
// the kernel's buffer, interrupted request) it calls forget(ino, 1) itself, so counts stay exact.
import { execFile } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { addon } from './addon.js';

// ---------------------------------------------------------------- types

/** Attributes with nanosecond times. Times are seconds since the epoch plus nanoseconds. */
export interface Attr {
  ino: number; mode: number; nlink: number; uid: number; gid: number; rdev: number;
  size: number; blocks: number; blksize: number;
  atime: number; atimeNsec: number; mtime: number; mtimeNsec: number; ctime: number; ctimeNsec: number;
}
/** Float64Array in the native attr layout (see ATTR_FIELDS), e.g. filled by backing.stat. */
export type AttrVector = Float64Array;
export const ATTR_FIELDS = ['ino', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'size', 'blocks', 'blksize',
  'atime', 'atimeNsec', 'mtime', 'mtimeNsec', 'ctime', 'ctimeNsec'] as const;
export const ATTR_LEN = ATTR_FIELDS.length;
const ENTRY_LEN = 4 + ATTR_LEN;
const DIRENT_LEN = 2 + ENTRY_LEN;

export interface Entry {
  /** Node id the kernel will use for this inode (not the backing st_ino); 0 = negative entry. */
  ino: number;
  generation?: number;
  /** Seconds the kernel may keep the name -> inode mapping (long for immutable trees). */
  entryTimeout: number;
  /** Seconds the kernel may keep the attributes. */
  attrTimeout: number;
  attr: Attr | AttrVector;
}
export interface AttrReply { attr: Attr | AttrVector; timeout: number }
export interface OpenReply {
  /**
   * The filesystem's own handle number, passed back to handlers and to release. -1 without `fd`
   * (create on a `noOpen` mount): no handle at all, the file is served by node as after a
   * zero-message open (the kernel never releases a create's handle once it stopped opening).
   */
  fh: number;
  /** Backing fd: C serves this handle's data and closes the fd at release. Omit to serve it in TS. */
  fd?: number;
  /** Keep the page cache from earlier opens (immutable or unchanged files). */
  keepCache?: boolean;
  /** Bypass the page cache (control files with dynamic content only). */
  directIo?: boolean;
  nonSeekable?: boolean;
  /** close(2) need not send flush for this handle (FOPEN_NOFLUSH; ignored with writeback cache). */
  noFlush?: boolean;
  /** opendir only: the kernel may cache the listing. */
  cacheReaddir?: boolean;
}
export interface DirEntry {
  name: Buffer;
  /** Offset of the entry after this one (what the next readdir gets as `offset`). */
  next: number;
  /** readdir: backing inode number (d_ino) and file type bits (S_IFMT part of mode). */
  ino: number;
  mode: number;
  /** readdirplus: the entry, counted as a lookup (see top of file). */
  entry?: Entry;
}
export interface Timespec { sec: number; nsec: number }
/** setattr: only the present fields change. 'now' = UTIME_NOW. */
export interface SetAttr {
  mode?: number; uid?: number; gid?: number; size?: number;
  atime?: Timespec | 'now'; mtime?: Timespec | 'now'; ctime?: Timespec;
  /** raw FUSE_SET_ATTR_* bits as sent */
  valid: number;
}
/** The process on whose behalf the kernel sent a request. */
export interface Caller { uid: number; gid: number; pid: number; umask: number }
export interface StatFs {
  bsize: number; frsize: number; blocks: number; bfree: number; bavail: number;
  files: number; ffree: number; favail: number; fsid: number; flag: number; namemax: number;
}

type R<T> = T | Promise<T>;

/** Handlers are inode based; a missing handler answers ENOSYS (or the FUSE default noted). */
export interface FuseHandlers {
  lookup?(c: Caller, parent: number, name: Buffer): R<Entry>;
  forget?(ino: number, nlookup: number): void;
  getattr?(c: Caller, ino: number, fh: number | undefined): R<AttrReply>;
  setattr?(c: Caller, ino: number, set: SetAttr, fh: number | undefined): R<AttrReply>;
  readlink?(c: Caller, ino: number): R<Buffer>;
  mknod?(c: Caller, parent: number, name: Buffer, mode: number, rdev: number): R<Entry>;
  mkdir?(c: Caller, parent: number, name: Buffer, mode: number): R<Entry>;
  unlink?(c: Caller, parent: number, name: Buffer): R<void>;
  rmdir?(c: Caller, parent: number, name: Buffer): R<void>;
  symlink?(c: Caller, parent: number, name: Buffer, target: Buffer): R<Entry>;
  rename?(c: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): R<void>;
  link?(c: Caller, ino: number, newParent: number, newName: Buffer): R<Entry>;
  open?(c: Caller, ino: number, flags: number): R<OpenReply>;
  create?(c: Caller, parent: number, name: Buffer, mode: number, flags: number): R<{ entry: Entry; open: OpenReply }>;
  /** Only for handles opened without fd. */
  read?(c: Caller, ino: number, fh: number, size: number, offset: number): R<Buffer>;
  write?(c: Caller, ino: number, fh: number, data: Buffer, offset: number, flags: number): R<number>;
  flush?(c: Caller, ino: number, fh: number): R<void>;
  fsync?(c: Caller, ino: number, fh: number, datasync: boolean): R<void>;
  fallocate?(c: Caller, ino: number, fh: number, mode: number, offset: number, length: number): R<void>;
  lseek?(c: Caller, ino: number, fh: number, offset: number, whence: number): R<number>;
  /** Every handle ends here. fdClosed: C already closed the backing fd (no reply is awaited). */
  release?(ino: number, fh: number, flags: number, fdClosed: boolean): R<void>;
  opendir?(c: Caller, ino: number, flags: number): R<OpenReply>;
  /** Entries from `offset` on; the binding sends what fits in `size` bytes. */
  readdir?(c: Caller, ino: number, fh: number, offset: number, plus: boolean, size: number): R<DirEntry[]>;
  releasedir?(ino: number, fh: number): R<void>;
  fsyncdir?(c: Caller, ino: number, fh: number, datasync: boolean): R<void>;
  statfs?(c: Caller, ino: number): R<StatFs>;
  setxattr?(c: Caller, ino: number, name: Buffer, value: Buffer, flags: number): R<void>;
  /** Return the whole value; the binding answers size queries and ERANGE. */
  getxattr?(c: Caller, ino: number, name: Buffer): R<Buffer>;
  /** Return the names, each followed by NUL. */
  listxattr?(c: Caller, ino: number): R<Buffer>;
  removexattr?(c: Caller, ino: number, name: Buffer): R<void>;
  access?(c: Caller, ino: number, mask: number): R<void>;
}

export interface MountOptions {
  /** Mount options as for mount -o: 'allow_other', 'default_permissions', 'ro', 'noatime', 'fsname=x'... */
  options?: string[];
  /** Worker threads of the libfuse loop (default 16) and idle ones kept (default 4). */
  maxThreads?: number;
  maxIdleThreads?: number;
  /** One /dev/fuse fd per worker thread. */
  cloneFd?: boolean;
  /** Kernel writeback cache: buffered writes merged by the kernel; mtime/size owned by the kernel. */
  writebackCache?: boolean;
  /** splice for reads from backing fds (FUSE_CAP_SPLICE_WRITE|MOVE) and writes (SPLICE_READ). */
  splice?: boolean;
  /** Re-check attributes on every read to drop stale pages (libfuse default on; off for immutable data). */
  autoInvalData?: boolean;
  /** Let the kernel cache symlink targets. */
  cacheSymlinks?: boolean;
  /** readdirplus: 'auto' (default: the kernel asks for attributes when it expects stats), 'always'
   * (every listing carries attributes: one JS round trip per buffer instead of a lookup per
   * entry when a tree is walked with stat), 'never'. */
  readdirplus?: 'auto' | 'always' | 'never';
  /** Open every handle that has a backing fd with FOPEN_NOFLUSH: close(2) does not wait for a flush
   * round trip (flush is close(dup(fd)) on the backing file, which local filesystems do not need). */
  noFlush?: boolean;
  /** Zero-message open (FUSE_CAP_NO_OPEN_SUPPORT): every open of a file answers ENOSYS, after
   * which the kernel sends no open, release or flush for files on this connection. Reads carry
   * no handle (`fh` -1 in `read`/`write`): C serves them from the inode's backing fd when
   * `setOpenable` registered one, else TS's `read` answers by inode. The kernel keeps the page
   * cache across opens (FOPEN_KEEP_CACHE) and never uses direct_io: only for files whose content
   * changes through this mount or with `invalInode`. Writes, fallocate and fsync without a handle
   * go to the inode's backing in C when `setOpenable` marked it `writable` (and no `holdWrites`),
   * else to TS with `fh` -1. FUSE_CAP_ATOMIC_O_TRUNC is cleared: the kernel sends O_TRUNC as a
   * setattr of the size (with atomic_o_trunc it would leave truncation to an open never sent). */
  noOpen?: boolean;
  /**
   * Answer getxattr(security.capability) in C with ENODATA for inodes known to have none (the
   * kernel asks before every write and truncate). Known from this filesystem's own ENODATA answers
   * to that request, and from `capabilityNone`; forgotten at forget, at setxattr/removexattr of
   * the name, and by `capabilityForget`. Only for filesystems whose xattrs change only through
   * the mount (or that call capabilityForget when they change otherwise).
   */
  capabilityCache?: boolean;
  /** Extra FUSE_CAP_* bits to want / to clear. */
  capsWant?: number;
  capsClear?: number;
  /** Called on the JS thread when the kernel connection ended (unmount from here or from outside). */
  onExit?: (loopStatus: number) => void;
}

export const CAP = {
  ASYNC_READ: 1 << 0, POSIX_LOCKS: 1 << 1, ATOMIC_O_TRUNC: 1 << 3, EXPORT_SUPPORT: 1 << 4,
  DONT_MASK: 1 << 6, SPLICE_WRITE: 1 << 7, SPLICE_MOVE: 1 << 8, SPLICE_READ: 1 << 9,
  FLOCK_LOCKS: 1 << 10, IOCTL_DIR: 1 << 11, AUTO_INVAL_DATA: 1 << 12, READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14, ASYNC_DIO: 1 << 15, WRITEBACK_CACHE: 1 << 16, NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18, POSIX_ACL: 1 << 19, HANDLE_KILLPRIV: 1 << 20, CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24, EXPLICIT_INVAL_DATA: 1 << 25,
} as const;
export const SET = {
  MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3, ATIME: 1 << 4, MTIME: 1 << 5,
  ATIME_NOW: 1 << 7, MTIME_NOW: 1 << 8, CTIME: 1 << 10,
} as const;
export const RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2, RENAME_WHITEOUT = 4;
export const UTIME_NOW = (1 << 30) - 1, UTIME_OMIT = (1 << 30) - 2;

/** A handler failure with an errno (positive, e.g. FuseError.of('ENOENT')). */
export class FuseError extends Error {
  constructor(readonly errno: number, message?: string) { super(message ?? `errno ${errno}`); }
  static of(code: keyof typeof osConstants.errno, message?: string): FuseError {
    return new FuseError(osConstants.errno[code], message ?? code);
  }
}
const E = osConstants.errno;

/**
 * Positive errno for anything a handler throws: FuseError, node:fs errors, and errors that wrap
 * one as their `cause` (StratumError from wrapSystemError), so the caller sees the errno the
 * system gave (ENAMETOOLONG, ENOSPC, ...); EIO only when no errno is known.
 */
export function errnoOf(e: unknown): number {
  for (let x = e, depth = 0; x !== undefined && x !== null && depth < 8; x = (x as { cause?: unknown }).cause, depth++) {
    if (x instanceof FuseError) return x.errno;
    const y = x as { errno?: unknown; code?: unknown };
    if (typeof y.errno === 'number' && y.errno !== 0) return Math.abs(y.errno);
    if (typeof y.code === 'string' && y.code in E) return E[y.code as keyof typeof E];
  }
  return E.EIO;
}

// ---------------------------------------------------------------- native

interface Native {
  fuseMount(mnt: string, opts: string[], dispatch: Dispatch, cfg: Float64Array): object;
  fuseUnmount(s: object): number;
  fuseStats(s: object): number[];
  fuseSetOpenable(s: object, ino: number, path: Buffer | null, backingIno: number, flags: number, writeFd: number): void;
  fuseHoldWrites(s: object, held: boolean): void;
  fuseCapability(s: object, ino: number, none: boolean): void;
  fuseSetAttrSource(s: object, ino: number, path: Buffer | null, backingIno: number, stIno: number, timeout: number, flags: number): void;
  fuseNotify(s: object, kind: number, ino: number, offOrChild: number, len: number, name: Buffer | undefined): Promise<number>;
  fuseReplyErr(req: number, errno: number): number;
  fuseReplyEntry(req: number, e: Float64Array): number;
  fuseReplyAttr(req: number, a: Float64Array, timeout: number): number;
  fuseReplyOpen(req: number, fh: number, fd: number, flags: number, isDir: boolean): number;
  fuseReplyCreate(req: number, e: Float64Array, fh: number, fd: number, flags: number): number;
  fuseReplyBuf(req: number, b: Uint8Array): number;
  fuseReplyReadlink(req: number, b: Uint8Array): number;
  fuseReplyWrite(req: number, n: number): number;
  fuseReplyXattr(req: number, n: number): number;
  fuseReplyLseek(req: number, off: number): number;
  fuseReplyStatfs(req: number, f: Float64Array): number;
  fuseReplyDir(req: number, plus: boolean, size: number, names: Buffer, d: Float64Array, count: number): number;
  backingStat(path: Buffer | null, fd: number, out: Float64Array, index: number): number;
  backingUtimens(path: Buffer | null, fd: number, t: Float64Array): number;
  backingChown(path: Buffer | null, fd: number, uid: number, gid: number): number;
  backingChmod(path: Buffer | null, fd: number, mode: number): number;
  backingTruncate(path: Buffer | null, fd: number, size: number): number;
  backingOpen(path: Buffer, flags: number, mode: number): number;
  backingClose(fd: number): number;
  backingMknod(path: Buffer, mode: number, rdev: number): number;
  backingRename(from: Buffer, to: Buffer, flags: number): number;
  backingSetxattr(path: Buffer, name: Buffer, value: Buffer, flags: number): number;
  backingGetxattr(path: Buffer, name: Buffer, size: number): Buffer | number;
  backingListxattr(path: Buffer, size: number): Buffer | number;
  backingRemovexattr(path: Buffer, name: Buffer): number;
  backingStatfs(path: Buffer, out: Float64Array): number;
  backingReaddir(path: Buffer): Buffer | number;
  backingSetFsIds(uid: number, gid: number): void;
  backingLseek(fd: number, off: number, whence: number): number;
  backingFallocate(fd: number, mode: number, off: number, len: number): number;
  backingMmapCopy(fd: number, off: number, buf: Buffer, toFile: boolean): number;
  backingCopyFile(src: Buffer, dst: Buffer): Promise<number> | number;
}
const N = addon as unknown as Native;

type Dispatch = (op: number, req: number, ino: number, a0: number, a1: number, a2: number, a3: number,
  name: Buffer | undefined, name2: Buffer | undefined, data: Buffer | undefined,
  uid: number, gid: number, pid: number, umask: number) => void;

const enum Op {
  EXIT = 0, LOOKUP, FORGET, GETATTR, SETATTR, READLINK, MKNOD, MKDIR, UNLINK, RMDIR, SYMLINK, RENAME,
  LINK, OPEN, READ, WRITE, FLUSH, RELEASE, FSYNC, OPENDIR, READDIR, RELEASEDIR, FSYNCDIR, STATFS,
  SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, ACCESS, CREATE, FALLOCATE, READDIRPLUS, LSEEK, FORGET_MULTI,
}

const OP_NAMES = ['exit', 'lookup', 'forget', 'getattr', 'setattr', 'readlink', 'mknod', 'mkdir', 'unlink', 'rmdir',
  'symlink', 'rename', 'link', 'open', 'read', 'write', 'flush', 'release', 'fsync', 'opendir', 'readdir', 'releasedir',
  'fsyncdir', 'statfs', 'setxattr', 'getxattr', 'listxattr', 'removexattr', 'access', 'create', 'fallocate',
  'readdirplus', 'lseek', 'forget_multi'];

// Replies are packed into these (the JS thread is single, a reply is sent before the next packing).
const entryBuf = new Float64Array(ENTRY_LEN);
const attrBuf = new Float64Array(ATTR_LEN);
const statfsBuf = new Float64Array(11);
let direntBuf = new Float64Array(DIRENT_LEN * 64);

function packAttr(a: Attr | AttrVector, out: Float64Array, at: number): void {
  if (a instanceof Float64Array) { out.set(a.length === ATTR_LEN ? a : a.subarray(0, ATTR_LEN), at); return; }
  out[at] = a.ino; out[at + 1] = a.mode; out[at + 2] = a.nlink; out[at + 3] = a.uid; out[at + 4] = a.gid;
  out[at + 5] = a.rdev; out[at + 6] = a.size; out[at + 7] = a.blocks; out[at + 8] = a.blksize;
  out[at + 9] = a.atime; out[at + 10] = a.atimeNsec; out[at + 11] = a.mtime; out[at + 12] = a.mtimeNsec;
  out[at + 13] = a.ctime; out[at + 14] = a.ctimeNsec;
}
function packEntry(e: Entry, out: Float64Array, at: number): void {
  out[at] = e.ino; out[at + 1] = e.generation ?? 0; out[at + 2] = e.entryTimeout; out[at + 3] = e.attrTimeout;
  packAttr(e.attr, out, at + 4);
}
function openFlags(o: OpenReply): number {
  return (o.keepCache ? 1 : 0) | (o.directIo ? 2 : 0) | (o.nonSeekable ? 4 : 0) | (o.cacheReaddir ? 8 : 0) | (o.noFlush ? 16 : 0);
}

/** Turn a packed attr vector into an object (tests, debugging). */
export function attrFromVector(v: AttrVector): Attr {
  const a = {} as Record<string, number>;
  ATTR_FIELDS.forEach((f, i) => { a[f] = v[i]!; });
  return a as unknown as Attr;
}

function decodeSetAttr(valid: number, data: Buffer): SetAttr {
  const v = new Float64Array(data.buffer.slice(data.byteOffset, data.byteOffset + 80));
  const set: SetAttr = { valid };
  if (valid & SET.MODE) set.mode = v[0]!;
  if (valid & SET.UID) set.uid = v[1]!;
  if (valid & SET.GID) set.gid = v[2]!;
  if (valid & SET.SIZE) set.size = v[3]!;
  if (valid & SET.ATIME_NOW) set.atime = 'now';
  else if (valid & SET.ATIME) set.atime = { sec: v[4]!, nsec: v[5]! };
  if (valid & SET.MTIME_NOW) set.mtime = 'now';
  else if (valid & SET.MTIME) set.mtime = { sec: v[6]!, nsec: v[7]! };
  if (valid & SET.CTIME) set.ctime = { sec: v[8]!, nsec: v[9]! };
  return set;
}

// ---------------------------------------------------------------- session

export class FuseSession {
  /** Resolves with the libfuse loop status once the kernel connection is gone and the session torn down. */
  readonly exited: Promise<number>;
  private native: object;
  private exitedFlag = false;
  private readonly opCounts = new Float64Array(OP_NAMES.length);

  constructor(readonly mountpoint: string, private readonly h: FuseHandlers, opts: MountOptions) {
    let resolveExit!: (n: number) => void;
    this.exited = new Promise((r) => { resolveExit = r; });
    let want = (opts.capsWant ?? 0) | CAP.PARALLEL_DIROPS | CAP.ASYNC_READ;
    // The kernel clears suid/sgid on write itself (a root server's pwrite would not).
    let clear = (opts.capsClear ?? 0) | CAP.HANDLE_KILLPRIV;
    const rdp = opts.readdirplus ?? 'auto';
    if (rdp === 'never') clear |= CAP.READDIRPLUS | CAP.READDIRPLUS_AUTO;
    else if (rdp === 'always') { want |= CAP.READDIRPLUS; clear |= CAP.READDIRPLUS_AUTO; }
    else want |= CAP.READDIRPLUS | CAP.READDIRPLUS_AUTO;
    if (opts.writebackCache) want |= CAP.WRITEBACK_CACHE; else clear |= CAP.WRITEBACK_CACHE;
    if (opts.splice) want |= CAP.SPLICE_WRITE | CAP.SPLICE_MOVE | CAP.SPLICE_READ;
    else clear |= CAP.SPLICE_WRITE | CAP.SPLICE_MOVE | CAP.SPLICE_READ;
    if (opts.autoInvalData === false) clear |= CAP.AUTO_INVAL_DATA;
    if (opts.cacheSymlinks) want |= CAP.CACHE_SYMLINKS;
    if (opts.noOpen) { want |= CAP.NO_OPEN_SUPPORT; clear |= CAP.ATOMIC_O_TRUNC; }
    const cfg = new Float64Array([opts.cloneFd ? 1 : 0, opts.maxThreads ?? 16, opts.maxIdleThreads ?? 4, want, clear, opts.noFlush ? 1 : 0, opts.noOpen ? 1 : 0, opts.capabilityCache ? 1 : 0]);
    const args = opts.options?.length ? ['-o', opts.options.join(',')] : [];
    const onExit = opts.onExit;
    this.native = N.fuseMount(mountpoint, args, (op, req, ino, a0, a1, a2, a3, name, name2, data, uid, gid, pid, umask) => {
      if (op === Op.EXIT) {
        this.exitedFlag = true;
        try { onExit?.(a0); } finally { resolveExit(a0); }
        return;
      }
      this.opCounts[op]++;
      this.dispatch(op, req, ino, a0, a1, a2, a3, name, name2, data, { uid, gid, pid, umask });
    }, cfg);
  }

  /** Unmount (lazily: busy mounts go away when their last user does) and wait for the loop to end. */
  async unmount(): Promise<void> {
    if (!this.exitedFlag) {
      const rc = N.fuseUnmount(this.native);
      if (rc === -E.EPERM) {
        await new Promise<void>((resolve, reject) => execFile('fusermount3', ['-u', '-z', '--', this.mountpoint],
          (err) => (err ? reject(err) : resolve())));
      } else if (rc < 0) throw new FuseError(-rc, `unmount ${this.mountpoint}: errno ${-rc}`);
    }
    await this.exited;
  }

  /** Drop cached data of an inode (off/len: byte range, len 0 = to the end; off -1: attributes only). */
  async invalInode(ino: number, off = 0, len = 0): Promise<void> {
    const rc = await N.fuseNotify(this.native, 0, ino, off, len, undefined);
    if (rc < 0 && rc !== -E.ENOENT) throw new FuseError(-rc, `inval_inode ${ino}: errno ${-rc}`);
  }
  /** Drop the kernel's dentry for parent/name. */
  async invalEntry(parent: number, name: Buffer): Promise<void> {
    const rc = await N.fuseNotify(this.native, 1, parent, 0, 0, name);
    if (rc < 0 && rc !== -E.ENOENT) throw new FuseError(-rc, `inval_entry ${parent}: errno ${-rc}`);
  }
  /** Tell the kernel parent/name (inode child) was deleted, as if through this mount. */
  async notifyDelete(parent: number, child: number, name: Buffer): Promise<void> {
    const rc = await N.fuseNotify(this.native, 2, parent, child, 0, name);
    if (rc < 0 && rc !== -E.ENOENT) throw new FuseError(-rc, `delete ${parent}: errno ${-rc}`);
  }
  /**
   * Let C answer open(ino) by itself. Only for mounts with `default_permissions` (the kernel checks
   * access; TS is not asked). (no JS round trip, no open/release calls to TS): C opens
   * `path` (O_NOFOLLOW, O_DIRECT and O_TRUNC handled as for fd handles) and uses it if it is a
   * regular file whose st_ino is `backingIno`; otherwise the open goes to TS as usual. Call again
   * when the path changes, clearOpenable when the inode is forgotten. `readOnly`: C answers only
   * opens without write access and without O_TRUNC; the others go to TS (which may copy up).
   * `writable` (noOpen): writes, fallocate and fsync without a handle go to `path` in C (opened
   * O_WRONLY on the first one, kept in the table); only for a file the filesystem may write as
   * it is (never an object), and ignored while writes are held. `writeFd`: an fd open for writing
   * on that file that C takes over as that backing (a file created read-only stays writable
   * through it); from the call on the binding owns it (closed when not kept).
   */
  setOpenable(ino: number, path: Buffer, backingIno: number, opts: { keepCache?: boolean; writeback?: boolean; readOnly?: boolean; writable?: boolean; writeFd?: number } = {}): void {
    N.fuseSetOpenable(this.native, ino, path, backingIno, (opts.keepCache ? 1 : 0) | (opts.writeback ? 2 : 0) | (opts.readOnly ? 4 : 0) | (opts.writable ? 8 : 0), opts.writeFd ?? -1);
  }
  /**
   * The write barrier (noOpen): `true` waits for every C write by inode in progress, closes every
   * writable backing fd, unmarks them all and sends later writes, fallocate and fsync without a
   * handle to TS; `false` lets C write again to backings marked writable after it.
   */
  holdWrites(held: boolean): void { N.fuseHoldWrites(this.native, held); }
  clearOpenable(ino: number): void { N.fuseSetOpenable(this.native, ino, null, 0, 0, -1); }
  /** capabilityCache: ino has no security.capability (a file just created), C answers ENODATA. */
  capabilityNone(ino: number): void { N.fuseCapability(this.native, ino, true); }
  /** capabilityCache: forget what C knows about ino's security.capability; ino 0: about every inode. */
  capabilityForget(ino = 0): void { N.fuseCapability(this.native, ino, false); }
  /**
   * Let C answer getattr(ino) by itself: lstat(path), and while that is still the inode
   * `backingIno`, its attributes with st_ino = `stIno` (and nlink 1 with `nlink1`), `timeout`
   * seconds; otherwise the request goes to TS as usual. `setattr`: C also answers setattr of
   * owner, mode and times (not size) by applying them to that file (regular files and dirs), for
   * filesystems whose setattr does nothing else. Forgotten when the kernel forgets ino; clear it
   * when the file is removed (its inode number may be reused).
   */
  setAttrSource(ino: number, path: Buffer, backingIno: number, stIno: number, timeout: number, opts: { nlink1?: boolean; setattr?: boolean } = {}): void {
    N.fuseSetAttrSource(this.native, ino, path, backingIno, stIno, timeout, (opts.nlink1 ? 1 : 0) | (opts.setattr ? 2 : 0));
  }
  /** Stop answering getattr(ino) in C; no ino: for every inode (returns once no C answer is in progress). */
  clearAttrSource(ino = 0): void { N.fuseSetAttrSource(this.native, ino, null, 0, 0, 0, 0); }

  /** Requests that went to JS vs served in C so far, requests awaiting a JS reply, FUSE_CAP bits. */
  stats(): { jsRequests: number; cRequests: number; pending: number; capable: number; want: number; jsByOp: Record<string, number> } {
    const [jsRequests, cRequests, pending, capable, want] = N.fuseStats(this.native) as [number, number, number, number, number];
    const jsByOp: Record<string, number> = {};
    this.opCounts.forEach((n, op) => { if (n) jsByOp[OP_NAMES[op]!] = n; });
    return { jsRequests, cRequests, pending, capable, want, jsByOp };
  }

  private dispatch(op: number, req: number, ino: number, a0: number, a1: number, a2: number, a3: number,
    name: Buffer | undefined, name2: Buffer | undefined, data: Buffer | undefined, c: Caller): void {
    const h = this.h;
    const fail = (e: unknown) => { N.fuseReplyErr(req, errnoOf(e)); };
    const run = <T>(fn: (() => R<T>) | undefined, ok: (v: T) => void, enosys = E.ENOSYS) => {
      if (!fn) { if (req) N.fuseReplyErr(req, enosys); return; }
      let v: R<T>;
      try { v = fn(); } catch (e) { if (req) fail(e); else reportAsync(e); return; }
      // ok() throws only before its native reply (bad reply values): answer EIO then.
      const deliver = (x: T) => { try { ok(x); } catch (e) { if (req) N.fuseReplyErr(req, E.EIO); reportAsync(e); } };
      if (v instanceof Promise) v.then(deliver, req ? fail : reportAsync);
      else deliver(v);
    };
    const forgetLost = (ino: number) => { try { h.forget?.(ino, 1); } catch (e) { reportAsync(e); } };
    const ack = () => { N.fuseReplyErr(req, 0); };
    const entry = (e: Entry) => {
      packEntry(e, entryBuf, 0);
      if (N.fuseReplyEntry(req, entryBuf) < 0 && e.ino) forgetLost(e.ino);
    };
    const attr = (r: AttrReply) => { packAttr(r.attr, attrBuf, 0); N.fuseReplyAttr(req, attrBuf, r.timeout); };
    const fh = a0 < 0 ? undefined : a0;
    switch (op) {
      case Op.LOOKUP: return run(h.lookup && (() => h.lookup!(c, ino, name!)), entry);
      case Op.FORGET: return run(h.forget && (() => h.forget!(ino, a0)), () => {});
      case Op.FORGET_MULTI: {
        if (!h.forget) return;
        const v = new Float64Array(data!.buffer.slice(data!.byteOffset, data!.byteOffset + data!.length));
        for (let i = 0; i < a0; i++) { try { h.forget(v[2 * i]!, v[2 * i + 1]!); } catch (e) { reportAsync(e); } }
        return;
      }
      case Op.GETATTR: return run(h.getattr && (() => h.getattr!(c, ino, fh)), attr);
      case Op.SETATTR: return run(h.setattr && (() => h.setattr!(c, ino, decodeSetAttr(a0, data!), a1 < 0 ? undefined : a1)), attr);
      case Op.READLINK: return run(h.readlink && (() => h.readlink!(c, ino)), (b) => { N.fuseReplyReadlink(req, b); });
      case Op.MKNOD: return run(h.mknod && (() => h.mknod!(c, ino, name!, a0, a1)), entry);
      case Op.MKDIR: return run(h.mkdir && (() => h.mkdir!(c, ino, name!, a0)), entry);
      case Op.UNLINK: return run(h.unlink && (() => h.unlink!(c, ino, name!)), ack);
      case Op.RMDIR: return run(h.rmdir && (() => h.rmdir!(c, ino, name!)), ack);
      case Op.SYMLINK: return run(h.symlink && (() => h.symlink!(c, ino, name!, name2!)), entry);
      case Op.RENAME: return run(h.rename && (() => h.rename!(c, ino, name!, a0, name2!, a1)), ack);
      case Op.LINK: return run(h.link && (() => h.link!(c, ino, a0, name!)), entry);
      case Op.OPEN: return run(h.open && (() => h.open!(c, ino, a0)), (o) => {
        if (N.fuseReplyOpen(req, o.fh, o.fd ?? -1, openFlags(o), false) < 0) this.lostHandle(ino, o, a0);
      });
      case Op.CREATE: return run(h.create && (() => h.create!(c, ino, name!, a0, a1)), ({ entry: e, open: o }) => {
        packEntry(e, entryBuf, 0);
        if (N.fuseReplyCreate(req, entryBuf, o.fh, o.fd ?? -1, openFlags(o)) < 0) {
          forgetLost(e.ino);
          this.lostHandle(e.ino, o, a1);
        }
      });
      case Op.READ: return run(h.read && (() => h.read!(c, ino, a0, a1, a2)), (b) => {
        N.fuseReplyBuf(req, b.length > a1 ? b.subarray(0, a1) : b);
      });
      case Op.WRITE: return run(h.write && (() => h.write!(c, ino, a0, data!, a1, a2)), (n) => { N.fuseReplyWrite(req, n); });
      case Op.FLUSH: return run(h.flush && (() => h.flush!(c, ino, a0)), ack, 0);
      case Op.FSYNC: return run(h.fsync && (() => h.fsync!(c, ino, a0, a1 !== 0)), ack, 0);
      case Op.FALLOCATE: return run(h.fallocate && (() => h.fallocate!(c, ino, a0, a1, a2, a3)), ack, E.EOPNOTSUPP);
      case Op.LSEEK: return run(h.lseek && (() => h.lseek!(c, ino, a0, a1, a2)), (off) => { N.fuseReplyLseek(req, off); });
      case Op.RELEASE: {
        if (!req) return run(h.release && (() => h.release!(ino, a0, a1, true)), () => {});
        return run(h.release && (() => h.release!(ino, a0, a1, false)), ack, 0);
      }
      case Op.OPENDIR: return run(h.opendir && (() => h.opendir!(c, ino, a0)), (o) => {
        if (N.fuseReplyOpen(req, o.fh, -1, openFlags(o), true) < 0) { try { void h.releasedir?.(ino, o.fh); } catch (e) { reportAsync(e); } }
      }, 0);
      case Op.READDIR: case Op.READDIRPLUS: {
        const plus = op === Op.READDIRPLUS;
        return run(h.readdir && (() => h.readdir!(c, ino, a0, a2, plus, a1)), (list) => this.replyDir(req, plus, a1, list));
      }
      case Op.RELEASEDIR: return run(h.releasedir && (() => h.releasedir!(ino, a0)), ack, 0);
      case Op.FSYNCDIR: return run(h.fsyncdir && (() => h.fsyncdir!(c, ino, a0, a1 !== 0)), ack, 0);
      case Op.STATFS: return run(h.statfs && (() => h.statfs!(c, ino)), (s) => {
        const f = statfsBuf;
        f[0] = s.bsize; f[1] = s.frsize; f[2] = s.blocks; f[3] = s.bfree; f[4] = s.bavail; f[5] = s.files;
        f[6] = s.ffree; f[7] = s.favail; f[8] = s.fsid; f[9] = s.flag; f[10] = s.namemax;
        N.fuseReplyStatfs(req, f);
      });
      case Op.SETXATTR: return run(h.setxattr && (() => h.setxattr!(c, ino, name!, data!, a0)), ack, E.EOPNOTSUPP);
      case Op.GETXATTR: return run(h.getxattr && (() => h.getxattr!(c, ino, name!)), (v) => this.replySized(req, a0, v), E.EOPNOTSUPP);
      case Op.LISTXATTR: return run(h.listxattr && (() => h.listxattr!(c, ino)), (v) => this.replySized(req, a0, v), E.EOPNOTSUPP);
      case Op.REMOVEXATTR: return run(h.removexattr && (() => h.removexattr!(c, ino, name!)), ack, E.EOPNOTSUPP);
      case Op.ACCESS: return run(h.access && (() => h.access!(c, ino, a0)), ack);
      default: if (req) N.fuseReplyErr(req, E.ENOSYS);
    }
  }

  private lostHandle(ino: number, o: OpenReply, flags: number): void {
    // The open could not be delivered (request interrupted): C closed the fd, no release will come.
    try { void this.h.release?.(ino, o.fh, flags, o.fd !== undefined && o.fd >= 0); } catch (e) { reportAsync(e); }
  }

  private replySized(req: number, size: number, v: Buffer): void {
    if (size === 0) N.fuseReplyXattr(req, v.length);
    else if (v.length > size) N.fuseReplyErr(req, E.ERANGE);
    else N.fuseReplyBuf(req, v);
  }

  private replyDir(req: number, plus: boolean, size: number, list: DirEntry[]): void {
    // A dirent takes at least 24 bytes (readdir) or 152 (readdirplus): pack no more than can fit.
    const max = Math.min(list.length, Math.ceil(size / (plus ? 152 : 24)));
    if (direntBuf.length < max * DIRENT_LEN) direntBuf = new Float64Array(max * DIRENT_LEN * 2);
    const names: Buffer[] = [];
    for (let i = 0; i < max; i++) {
      const d = list[i]!, at = i * DIRENT_LEN;
      names.push(d.name);
      direntBuf[at] = d.name.length;
      direntBuf[at + 1] = d.next;
      if (plus && d.entry) packEntry(d.entry, direntBuf, at + 2);
      else {
        direntBuf.fill(0, at + 2, at + DIRENT_LEN);
        direntBuf[at + 2 + 4] = d.ino;
        direntBuf[at + 2 + 4 + 1] = d.mode;
      }
    }
    const sent = N.fuseReplyDir(req, plus, size, Buffer.concat(names), direntBuf, max);
    if (plus && this.h.forget) {
      for (let i = Math.max(sent, 0); i < list.length; i++) {
        const e = list[i]!.entry;
        try { if (e && e.ino) this.h.forget(e.ino, 1); } catch (err) { reportAsync(err); }
      }
    }
  }
}

function reportAsync(e: unknown): void {
  process.emitWarning(`fuse handler failed without a request to answer: ${(e as Error)?.stack ?? e}`);
}

/** Mount a filesystem served by `handlers` at `mountpoint` (root: mount(2); others: fusermount3). */
export function mount(mountpoint: string, handlers: FuseHandlers, options: MountOptions = {}): FuseSession {
  return new FuseSession(mountpoint, handlers, options);
}

// ---------------------------------------------------------------- backing syscalls

function check(rc: number, what: string): number {
  if (rc < 0) throw new FuseError(-rc, `${what}: errno ${-rc}`);
  return rc;
}

/** Syscalls on backing files that node:fs lacks; paths are Buffers. Failures throw FuseError. */
export const backing = {
  /** lstat (path) or fstat (path null) into out[index..index+ATTR_LEN]; returns -errno instead of throwing. */
  statInto: (path: Buffer | null, fd: number, out: Float64Array, index = 0): number => N.backingStat(path, fd, out, index),
  stat(path: Buffer | null, fd = -1): AttrVector {
    const v = new Float64Array(ATTR_LEN);
    check(N.backingStat(path, fd, v, 0), 'stat');
    return v;
  },
  /** nsec may be UTIME_NOW or UTIME_OMIT. Never follows symlinks. */
  utimens(path: Buffer | null, fd: number, atime: Timespec, mtime: Timespec): void {
    check(N.backingUtimens(path, fd, new Float64Array([atime.sec, atime.nsec, mtime.sec, mtime.nsec])), 'utimensat');
  },
  chown: (path: Buffer | null, fd: number, uid: number, gid: number): void => { check(N.backingChown(path, fd, uid, gid), 'chown'); },
  chmod: (path: Buffer | null, fd: number, mode: number): void => { check(N.backingChmod(path, fd, mode), 'chmod'); },
  truncate: (path: Buffer | null, fd: number, size: number): void => { check(N.backingTruncate(path, fd, size), 'truncate'); },
  open: (path: Buffer, flags: number, mode = 0): number => check(N.backingOpen(path, flags, mode), 'open'),
  close: (fd: number): void => { check(N.backingClose(fd), 'close'); },
  mknod: (path: Buffer, mode: number, rdev: number): void => { check(N.backingMknod(path, mode, rdev), 'mknod'); },
  rename: (from: Buffer, to: Buffer, flags: number): void => { check(N.backingRename(from, to, flags), 'renameat2'); },
  setxattr: (path: Buffer, name: Buffer, value: Buffer, flags: number): void => {
    check(N.backingSetxattr(path, name, value, flags), 'setxattr');
  },
  getxattr(path: Buffer, name: Buffer): Buffer {
    for (;;) {
      const n = check(N.backingGetxattr(path, name, 0) as number, 'getxattr');
      const v = N.backingGetxattr(path, name, Math.max(n, 1));
      if (typeof v !== 'number') return v;
      if (v !== -E.ERANGE) check(v, 'getxattr');  // grew in between: ask again
    }
  },
  listxattr(path: Buffer): Buffer {
    for (;;) {
      const n = check(N.backingListxattr(path, 0) as number, 'listxattr');
      if (n === 0) return Buffer.alloc(0);
      const v = N.backingListxattr(path, n);
      if (typeof v !== 'number') return v;
      if (v !== -E.ERANGE) check(v, 'listxattr');
    }
  },
  removexattr: (path: Buffer, name: Buffer): void => { check(N.backingRemovexattr(path, name), 'removexattr'); },
  statfs(path: Buffer): StatFs {
    const f = new Float64Array(11);
    check(N.backingStatfs(path, f), 'statvfs');
    return { bsize: f[0]!, frsize: f[1]!, blocks: f[2]!, bfree: f[3]!, bavail: f[4]!, files: f[5]!, ffree: f[6]!,
      favail: f[7]!, fsid: f[8]!, flag: f[9]!, namemax: f[10]! };
  },
  /** Directory entries without "." and ".." as { name, ino, type (DT_*) }. */
  readdir(path: Buffer): { name: Buffer; ino: number; type: number }[] {
    const r = N.backingReaddir(path);
    if (typeof r === 'number') check(r, 'readdir');
    const b = r as Buffer, out: { name: Buffer; ino: number; type: number }[] = [];
    for (let p = 0; p < b.length;) {
      const ino = Number(b.readBigUInt64LE(p)), type = b[p + 8]!, len = b.readUInt16LE(p + 9);
      out.push({ name: b.subarray(p + 11, p + 11 + len), ino, type });
      p += 11 + len;
    }
    return out;
  },
  /** lseek(2), with SEEK_DATA (3) and SEEK_HOLE (4). */
  lseek: (fd: number, offset: number, whence: number): number => check(N.backingLseek(fd, offset, whence), 'lseek'),
  /** fallocate(2): mode 0 allocates, FALLOC_FL_PUNCH_HOLE (2) | FALLOC_FL_KEEP_SIZE (1) punches. */
  fallocate: (fd: number, mode: number, offset: number, length: number): void => {
    check(N.backingFallocate(fd, mode, offset, length), 'fallocate');
  },
  /** Copy between buf and a MAP_SHARED mapping of fd at offset (toFile: write through the mapping + msync). */
  mmapCopy: (fd: number, offset: number, buf: Buffer, toFile: boolean): void => {
    check(N.backingMmapCopy(fd, offset, buf, toFile), 'mmap');
  },
  /**
   * Copies src's bytes into a new file dst (O_EXCL, mode 0600, fsync'd) on a pool thread:
   * copy_file_range, read/write where that cannot work. On failure dst is removed and the promise
   * rejects with the errno's error.
   */
  copyFile: async (src: Buffer, dst: Buffer): Promise<void> => {
    check(await N.backingCopyFile(src, dst), 'copy');
  },
  /** Files created by this thread from now on belong to uid/gid (setfsuid/setfsgid; root servers). */
  setFsIds: (uid: number, gid: number): void => { N.backingSetFsIds(uid, gid); },
};
