// Reads a directory on disk into a commit Tree: what `import` stores. Symlinks are stored, never
// followed; names stay bytes (Linux names need not be UTF-8); hardlinked files become one inode
// with several entries; xattrs are kept with binary values. File contents are not read here:
// files to store as objects come back in `pending`, small ones are read inline.
//
// Public surface: readSourceTree, SourceTree, PendingFile, INLINE_LIMIT, readXattrs, splitNs.
import { closeSync, constants as C, lstatSync, openSync, readSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';

import { lgetxattr, llistxattr } from '../native/xattr.js';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { LCFS_RECOMMENDED_INLINE_CONTENT_MAX, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './image/erofs.js';
import { type ByteString, type Inode, type Tree, addEntry, byteString, newInode } from './image/tree.js';
import type { FileIdentity } from './import-cache.js';
import { display } from './paths.js';

/** Files of 1..64 bytes live inside the image, as mkcomposefs does; larger ones become objects. */
export const INLINE_LIMIT = LCFS_RECOMMENDED_INLINE_CONTENT_MAX;

export interface PendingFile {
  /** Absolute path on disk, as bytes (Buffer paths survive non-UTF-8 names). */
  path: Buffer;
  inode: Inode;
  /** What the import cache keys on. */
  identity: FileIdentity;
}

export interface SourceTree {
  tree: Tree;
  /** Regular files whose content must become objects (one per inode, not per hardlink). */
  pending: PendingFile[];
  /** Entries below the root, hardlinks counted per path. */
  entries: number;
}

/**
 * The walk uses synchronous calls: each is a few µs on a cached inode, where an async call's trip
 * through the libuv pool costs more than the syscall itself (re-imports were bound by it).
 */
export async function readSourceTree(dir: string, options: { refuseTopLevel?: string[] } = {}): Promise<SourceTree> {
  const rootPath = Buffer.from(dir);
  const rootStat = lstat(rootPath, dir);
  if ((Number(rootStat.mode) & S_IFMT) !== S_IFDIR) throw new StratumError('BAD_PATH', `${dir} is not a directory`);
  const refused = new Set(options.refuseTopLevel ?? []);
  const pending: PendingFile[] = [];
  const inodes = new Map<string, Inode>();
  let entries = 0;

  const root = makeInode(rootPath, rootStat);
  const stack: Array<{ path: Buffer; inode: Inode; top: boolean }> = [{ path: rootPath, inode: root, top: true }];
  while (stack.length > 0) {
    const { path, inode: dirInode, top } = stack.pop()!;
    let names: Buffer[];
    try {
      names = readdirSync(path, { encoding: 'buffer' });
    } catch (err) {
      throw wrapSystemError(err, `reading directory ${display(path)}`);
    }
    for (const nameBytes of names) {
      const name = byteString(nameBytes);
      const childPath = Buffer.concat([path, Buffer.from('/'), nameBytes]);
      if (top && refused.has(name)) throw new StratumError('BAD_PATH', `${display(childPath)}: a top-level ${name} is reserved for stratum's control files; move it away first`);
      const stat = lstat(childPath, display(childPath));
      const type = Number(stat.mode) & S_IFMT;
      if (type === S_IFSOCK) throw new StratumError('BAD_PATH', `${display(childPath)} is a socket; sockets cannot be stored (stop its server or move it away)`);
      entries++;
      const key = `${stat.dev}:${stat.ino}`;
      const seen = type !== S_IFDIR && stat.nlink > 1n ? inodes.get(key) : undefined;
      if (seen) {
        seen.nlink++;
        addEntry(dirInode, name, seen, { hardlink: true });
        continue;
      }
      const inode = makeInode(childPath, stat);
      addEntry(dirInode, name, inode);
      if (type !== S_IFDIR && stat.nlink > 1n) inodes.set(key, inode);
      if (type === S_IFDIR) stack.push({ path: childPath, inode, top: false });
      else if (type === S_IFREG && inode.size > INLINE_LIMIT) {
        pending.push({ path: childPath, inode, identity: { dev: stat.dev, ino: stat.ino, size: inode.size, mtimeNs: stat.mtimeNs, ctimeNs: stat.ctimeNs } });
      }
      else if (type === S_IFREG && inode.size > 0) {
        inode.content = readSmall(childPath, inode.size);
        inode.size = inode.content.length;
      }
    }
  }
  return { tree: { root }, pending, entries };
}

function makeInode(path: Buffer, stat: BigIntStats): Inode {
  const mode = Number(stat.mode);
  const type = mode & S_IFMT;
  const { sec, nsec } = splitNs(stat.mtimeNs);
  const inode = newInode({
    mode,
    uid: Number(stat.uid),
    gid: Number(stat.gid),
    // links inside the tree only (counted up as the walk meets them): links elsewhere on the
    // source disk are no part of the tree, and mkcomposefs counts the same way
    nlink: 1,
    mtimeSec: sec,
    mtimeNsec: nsec,
    size: type === S_IFREG ? Number(stat.size) : 0,
    rdev: Number(stat.rdev),
    xattrs: readXattrs(path),
  });
  if (type === S_IFLNK) {
    const target = readlinkSync(path, { encoding: 'buffer' });
    inode.symlinkTarget = byteString(target);
    inode.size = target.length;
  }
  return inode;
}

/** Every xattr of a path, binary values, never following a symlink. */
export function readXattrs(path: Buffer): Array<{ name: ByteString; value: Uint8Array }> {
  let names: Buffer[];
  try {
    names = llistxattr(path, { encoding: 'buffer' });
  } catch (err) {
    if (isSystemError(err, 'ENOTSUP') || isSystemError(err, 'EOPNOTSUPP')) return [];
    throw wrapSystemError(err, `listing xattrs of ${display(path)}`);
  }
  const out: Array<{ name: ByteString; value: Uint8Array }> = [];
  for (const name of names) {
    try {
      out.push({ name: byteString(name), value: lgetxattr(path, name) });
    } catch (err) {
      // removed while we looked, or listed but unreadable (user.* on symlinks and devices)
      if (isSystemError(err, 'ENODATA') || isSystemError(err, 'EPERM')) continue;
      throw wrapSystemError(err, `reading xattr ${name.toString('latin1')} of ${display(path)}`);
    }
  }
  return out;
}

function readSmall(path: Buffer, size: number): Uint8Array {
  let fd: number | undefined;
  try {
    fd = openSync(path, C.O_RDONLY | C.O_NOFOLLOW);
    const buf = Buffer.alloc(size);
    const bytesRead = readSync(fd, buf, 0, size, 0);
    return buf.subarray(0, bytesRead);
  } catch (err) {
    throw wrapSystemError(err, `reading ${display(path)}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function lstat(path: Buffer, shown: string): BigIntStats {
  try {
    return lstatSync(path, { bigint: true });
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) throw new StratumError('NOT_FOUND', `${shown} does not exist`);
    throw wrapSystemError(err, `reading ${shown}`);
  }
}

/** A time in ns as whole seconds (rounded down, also before 1970) and the ns within them. */
export function splitNs(ns: bigint): { sec: number; nsec: number } {
  const sec = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
  return { sec: Number(sec), nsec: Number(ns - sec * 1_000_000_000n) };
}
