// mount(2) and umount2(2), and the new mount API (fsopen, fsconfig, fsmount, move_mount,
// open_tree), for kernel-mode HEADs (overlayfs over composefs) and the bind and move mounts around
// them. Node has none of them.
//
//   mount(source, target, fstype, flags = 0, data = null)
//       source, fstype and data may be null: bind, move, remount and propagation changes
//       (MS_PRIVATE, ...) ignore them. data is the fs option string ("lowerdir=...,upperdir=...").
//   umount2(target, flags = 0)
//   MS_* (mount flags), MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW (umount2 flags)
//
//   fsopen(fstype) -> fsfd; fsconfigString / fsconfigFlag (fsfd, key[, value]); fsconfigCreate(fsfd);
//   fsmount(fsfd, attrs) -> mount fd, attached nowhere until moveMount(fd, '', AT_FDCWD, target,
//   MOVE_MOUNT_F_EMPTY_PATH). openTree(AT_FDCWD, path, OPEN_TREE_CLONE) -> a detached copy of a
//   mount. MOVE_MOUNT_BENEATH (kernel 6.5+) puts a mount under the one on top of the target, so an
//   unmount of the top one uncovers it with no moment where the path shows what was below both.
//   Every fd is close-on-exec; the caller closes it (closeSync). A detached mount that is never
//   attached goes away when its last fd is closed.
//
// Failures throw Node-style system errors with path = target (mount, umount2, open_tree; for
// move_mount path = fromPath and dest = toPath): EPERM without CAP_SYS_ADMIN, ENODEV for an unknown
// fstype, EBUSY for a busy umount (MNT_DETACH detaches it lazily; an open fsmount/open_tree fd
// keeps its mount busy too). fsconfig and fsmount failures carry the kernel's own explanation when
// it left one on the fs context (read(2) on fsfd, the only place besides dmesg it goes):
//   "EINVAL: invalid argument, fsconfig 'redirect_dir' (overlay: Bad value for 'redirect_dir')"
// Not every message goes there: overlayfs (as of 6.18) prints its path and layout checks to the
// kernel log instead ("failed to resolve '/x': -2", "workdir and upperdir must be separate
// subtrees"), so those fail with the bare errno: "ENOENT: ..., fsconfig 'lowerdir'",
// "EINVAL: invalid argument, fsconfig create". Messages of a call that succeeded are dropped, so
// a failure shows only its own. After a failed fsconfigCreate the context is spent: close it and
// start again with fsopen.
//
// Found on 6.18, for the live commit: MOVE_MOUNT_BENEATH works whether the parent is private or
// shared (peers and slaves follow); an fd from openTree (or open O_PATH) pins a place and works as
// toDirfd with MOVE_MOUNT_T_EMPTY_PATH, even inside a mount that is covered; moving a mount whose
// parent is shared is EINVAL, and so is moving one into a tree fsmount has not attached yet.
import { addon } from './addon.js';

export type MountPath = string | Buffer;

type FlagName =
  | 'MS_RDONLY' | 'MS_NOSUID' | 'MS_NODEV' | 'MS_NOEXEC' | 'MS_SYNCHRONOUS' | 'MS_REMOUNT' | 'MS_MANDLOCK'
  | 'MS_DIRSYNC' | 'MS_NOSYMFOLLOW' | 'MS_NOATIME' | 'MS_NODIRATIME' | 'MS_BIND' | 'MS_MOVE' | 'MS_REC'
  | 'MS_SILENT' | 'MS_UNBINDABLE' | 'MS_PRIVATE' | 'MS_SLAVE' | 'MS_SHARED' | 'MS_RELATIME'
  | 'MS_STRICTATIME' | 'MS_LAZYTIME' | 'MNT_FORCE' | 'MNT_DETACH' | 'MNT_EXPIRE' | 'UMOUNT_NOFOLLOW'
  | 'AT_FDCWD' | 'AT_EMPTY_PATH' | 'AT_RECURSIVE' | 'MOVE_MOUNT_F_EMPTY_PATH' | 'MOVE_MOUNT_T_EMPTY_PATH'
  | 'MOVE_MOUNT_BENEATH' | 'OPEN_TREE_CLONE' | 'MOUNT_ATTR_RDONLY' | 'MOUNT_ATTR_NOSUID' | 'MOUNT_ATTR_NODEV';

interface Native {
  mount(source: MountPath | null, target: MountPath, fstype: string | Buffer | null, flags: number, data: string | Buffer | null): void;
  umount2(target: MountPath, flags: number): void;
  fsopen(fstype: string, flags: number): number;
  fsconfigString(fsfd: number, key: string, value: string | Buffer): void;
  fsconfigFlag(fsfd: number, key: string): void;
  fsconfigCreate(fsfd: number): void;
  fsmount(fsfd: number, attrs: number): number;
  moveMount(fromDirfd: number, fromPath: MountPath, toDirfd: number, toPath: MountPath, flags: number): void;
  openTree(dirfd: number, path: MountPath, flags: number): number;
  sysConstants: Record<FlagName, number>;
}
const native = addon as unknown as Native;

export const {
  MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC,
  MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC, MS_SILENT, MS_UNBINDABLE,
  MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME,
  MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW,
  AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE, MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH,
  MOVE_MOUNT_BENEATH, OPEN_TREE_CLONE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV,
} = native.sysConstants;

export function mount(
  source: MountPath | null,
  target: MountPath,
  fstype: string | Buffer | null,
  flags = 0,
  data: string | Buffer | null = null,
): void {
  native.mount(source, target, fstype, flags, data);
}

export function umount2(target: MountPath, flags = 0): void {
  native.umount2(target, flags);
}

/** fsopen(2): a filesystem context fd (FSOPEN_CLOEXEC always). */
export function fsopen(fstype: string, flags = 0): number {
  return native.fsopen(fstype, flags);
}

/** fsconfig(FSCONFIG_SET_STRING) */
export function fsconfigString(fsfd: number, key: string, value: string | Buffer): void {
  native.fsconfigString(fsfd, key, value);
}

/** fsconfig(FSCONFIG_SET_FLAG) */
export function fsconfigFlag(fsfd: number, key: string): void {
  native.fsconfigFlag(fsfd, key);
}

/** fsconfig(FSCONFIG_CMD_CREATE) */
export function fsconfigCreate(fsfd: number): void {
  native.fsconfigCreate(fsfd);
}

/** fsmount(2): a detached mount fd (FSMOUNT_CLOEXEC always); attrs = MOUNT_ATTR_* */
export function fsmount(fsfd: number, attrs = 0): number {
  return native.fsmount(fsfd, attrs);
}

/** move_mount(2); dirfd may be AT_FDCWD */
export function moveMount(fromDirfd: number, fromPath: string | Buffer, toDirfd: number, toPath: string | Buffer, flags = 0): void {
  native.moveMount(fromDirfd, fromPath, toDirfd, toPath, flags);
}

/** open_tree(2) (OPEN_TREE_CLOEXEC always) */
export function openTree(dirfd: number, path: string | Buffer, flags = 0): number {
  return native.openTree(dirfd, path, flags);
}
