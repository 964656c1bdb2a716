// What a mount of a Stratum tree may do, in one place for both servers: setuid bits and device
// files are inert unless root asked (`--allow-suid`, `--allow-dev`; serve.ts checks who asks), a
// root server's mounts are open to other users with the kernel checking permissions, a tag is
// read-only. The FUSE server's tree and kernel mode's ControlFs take it as a FUSE option list;
// kernel mode's overlay and its seal as mount flags.
//
// Public surface: MountPolicy, fuseMountOptions, mountAttrFlags, msFlags.
import { MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MS_NODEV, MS_NOSUID } from '../native/mount.js';

export interface MountPolicy {
  /** Honour setuid/setgid bits; otherwise nosuid. */
  allowSuid?: boolean;
  /** Honour device files; otherwise nodev. */
  allowDev?: boolean;
}

/**
 * The option list of a FUSE mount named `fsname` (`stratum:<label>[:<tag>]` for a tree, which
 * client.ts looks for in mountinfo): `default_permissions` (the kernel checks modes), nosuid and
 * nodev unless allowed, `allow_other` for a root server, `noatime` and `ro` when asked.
 */
export function fuseMountOptions(fsname: string, o: MountPolicy & { readOnly?: boolean; noatime?: boolean }): string[] {
  const options = ['default_permissions'];
  if (o.noatime) options.push('noatime');
  options.push(o.allowSuid ? 'suid' : 'nosuid', o.allowDev ? 'dev' : 'nodev', `fsname=${fsname}`, 'subtype=stratum');
  if (process.getuid?.() === 0) options.push('allow_other');
  if (o.readOnly) options.push('ro');
  return options;
}

/** MOUNT_ATTR_NOSUID/NODEV (fsmount, mount_setattr) unless allowed. */
export function mountAttrFlags(p: MountPolicy): number {
  return (p.allowSuid ? 0 : MOUNT_ATTR_NOSUID) | (p.allowDev ? 0 : MOUNT_ATTR_NODEV);
}

/** The same as mount(2) flags (a bind remount replaces every per-mount flag, so it must repeat them). */
export function msFlags(p: MountPolicy): number {
  return (p.allowSuid ? 0 : MS_NOSUID) | (p.allowDev ? 0 : MS_NODEV);
}
