// mount(2) and umount2(2), for kernel-mode HEADs (overlayfs over composefs) and the bind and move
// mounts around them. Node has neither.
//
//   mount(source, target, fstype, flags = 0, data = null)
//       source, fstype and data may be null: bind, move, remount and propagation changes
//       (MS_PRIVATE, ...) ignore them. data is the fs option string ("lowerdir=...,upperdir=...").
//   umount2(target, flags = 0)
//   MS_* (mount flags), MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW (umount2 flags)
//
// Failures throw Node-style system errors with path = target: EPERM without CAP_SYS_ADMIN,
// ENODEV for an unknown fstype, EBUSY for a busy umount (MNT_DETACH detaches it lazily).
import { addon } from './addon.js';

export type MountPath = string | Buffer;

type FlagName =
  | 'MS_RDONLY' | 'MS_NOSUID' | 'MS_NODEV' | 'MS_NOEXEC' | 'MS_SYNCHRONOUS' | 'MS_REMOUNT' | 'MS_MANDLOCK'
  | 'MS_DIRSYNC' | 'MS_NOSYMFOLLOW' | 'MS_NOATIME' | 'MS_NODIRATIME' | 'MS_BIND' | 'MS_MOVE' | 'MS_REC'
  | 'MS_SILENT' | 'MS_UNBINDABLE' | 'MS_PRIVATE' | 'MS_SLAVE' | 'MS_SHARED' | 'MS_RELATIME'
  | 'MS_STRICTATIME' | 'MS_LAZYTIME' | 'MNT_FORCE' | 'MNT_DETACH' | 'MNT_EXPIRE' | 'UMOUNT_NOFOLLOW';

interface Native {
  mount(source: MountPath | null, target: MountPath, fstype: string | Buffer | null, flags: number, data: string | Buffer | null): void;
  umount2(target: MountPath, flags: number): void;
  sysConstants: Record<FlagName, number>;
}
const native = addon as unknown as Native;

export const {
  MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC,
  MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC, MS_SILENT, MS_UNBINDABLE,
  MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME,
  MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW,
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
