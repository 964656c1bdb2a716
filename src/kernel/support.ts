// Whether this process can mount with the kernel: CAP_SYS_ADMIN, and a kernel with erofs and
// overlayfs. `--mode auto` asks `kernelModeUnavailable`; `--mode kernel` and the kernel server
// call `checkKernelMode`, which says what is missing. Whether the kernel can mount a commit
// image from the store's filesystem is a separate question (`storeImagesUnavailable`): file-backed
// erofs (CONFIG_EROFS_FS_BACKED_BY_FILE, 6.12+) needs a file whose filesystem reads through the
// page cache's read_folio; tmpfs has none, so an image there gives ENOTBLK (mount(8) would set up
// a loop device; we do not, yet). auto then picks FUSE and says why.
//
// Public surface: hasSysAdmin, kernelModeUnavailable, checkKernelMode, storeImagesUnavailable,
// imageMountError, kernelVerityNote.
import { mkdtempSync, readFileSync, readdirSync, rmdirSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { MNT_DETACH, MS_NODEV, MS_NOSUID, MS_RDONLY, mount, umount2 } from '../native/mount.js';
import { StratumError, isSystemError } from '../store/error.js';

const CAP_SYS_ADMIN = 21n;

/** Whether this process has CAP_SYS_ADMIN in its effective set (/proc/self/status CapEff). */
export function hasSysAdmin(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m !== null && ((BigInt(`0x${m[1]}`) >> CAP_SYS_ADMIN) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** Why kernel mode cannot be used here, or undefined when it can. */
export function kernelModeUnavailable(): string | undefined {
  if (!hasSysAdmin()) return 'it needs root (CAP_SYS_ADMIN)';
  try {
    const fs = readFileSync('/proc/filesystems', 'utf8');
    if (!/\terofs$/m.test(fs)) return 'the kernel has no erofs';
    if (!/\toverlay$/m.test(fs)) return 'the kernel has no overlayfs';
  } catch {
    return 'there is no /proc/filesystems';
  }
  return undefined;
}

export function checkKernelMode(): void {
  if (!hasSysAdmin()) throw new StratumError('PERMISSION', '--mode kernel needs root (CAP_SYS_ADMIN); use --mode fuse');
  const why = kernelModeUnavailable();
  if (why !== undefined) throw new StratumError('IO', `--mode kernel is not available: ${why}; use --mode fuse`);
}

const TMPFS_MAGIC = 0x01021994;

/** The error for an erofs mount of `image` that failed with err, naming the cause. */
export function imageMountError(image: string, err: unknown): StratumError {
  if (isSystemError(err, 'ENOTBLK')) {
    let fs = 'its filesystem';
    try { if (statfsSync(image).type === TMPFS_MAGIC) fs = 'tmpfs'; } catch { /* keep the general word */ }
    return new StratumError('IO', `kernel mode cannot mount commit images from a store on ${fs}: erofs file-backed mounts need a disk filesystem (ENOTBLK); use --mode fuse or a store on disk`, { cause: err });
  }
  return new StratumError('IO', `mounting the commit image ${image} with erofs failed: ${(err as Error).message}`, { cause: err });
}

/**
 * Why the kernel cannot mount this store's commit images, found by mounting one (read-only,
 * on a private temp dir, detached at once), or undefined when it can or the store has none.
 */
export function storeImagesUnavailable(storeRoot: string): string | undefined {
  let image: string | undefined;
  try {
    const commits = join(storeRoot, 'commits');
    const first = readdirSync(commits).find((name) => /^[0-9a-f]{64}$/.test(name));
    if (first) image = join(commits, first, 'commit.cfs');
  } catch { /* no commits dir: nothing to mount */ }
  if (image === undefined) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'stratum-probe-'));
  try {
    mount(image, dir, 'erofs', MS_RDONLY | MS_NOSUID | MS_NODEV, null);
    umount2(dir, MNT_DETACH);
    return undefined;
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return undefined;  // removed meanwhile: the mount itself will tell
    return imageMountError(image, err).message.replace(/^kernel mode /, '').replace(/; use --mode fuse.*$/, '');
  } finally {
    rmdirSync(dir);
  }
}

/** What status says about the kernel checking objects (fs-verity) in kernel mode. */
export function kernelVerityNote(): string {
  // objects would need fs-verity enabled on them and overlay verity=require; without
  // CONFIG_FS_VERITY the kernel has neither. Even with it, enabling verity on the store's objects
  // is not done yet (docs/kernel.md), so kernel mode never enforces it today.
  const has = kernelHasVerity();
  return `fs-verity is not enforced by the kernel (${has ? 'not enabled on the store\'s objects' : 'no CONFIG_FS_VERITY'}): objects are not checked on read in kernel mode; \`stratum verify\` checks them`;
}

/** CONFIG_FS_VERITY, from /proc/config.gz when the kernel has it, else from its symbols. */
function kernelHasVerity(): boolean {
  try {
    return /^CONFIG_FS_VERITY=y$/m.test(gunzipSync(readFileSync('/proc/config.gz')).toString('latin1'));
  } catch {
    try { return / fsverity_ioctl_enable$/m.test(readFileSync('/proc/kallsyms', 'latin1')); } catch { return false; }
  }
}
