// Kernel mode (docs/kernel.md): a HEAD or a tag mounted by the kernel itself, with no server.
// The commit image (commits/<id>/commit.cfs) is mounted as a file-backed erofs on a private temp
// dir, overlayfs is mounted on the mountpoint with that erofs and the objects dir (data-only
// layer) as lowers, plus the label's upper and work dirs for a HEAD; then the temp erofs mount is
// detached (the overlay holds its own reference to it). Everything goes through mount(2) and
// umount2(2) (src/native/mount.ts), never mount(8).
//
// A kernel entry in the mount state has pid 0: it is live while /proc/self/mountinfo shows our
// overlay (source `stratum-kernel:...`) at its mountpoint (MountState, src/store/mount-state.ts).
//
// Public surface: kernelMount, KernelMountOptions, kernelUnmount, hasSysAdmin, KERNEL_SOURCE_PREFIX.
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syncfs } from '../native/files.js';
import { MNT_DETACH, MS_RDONLY, mount, umount2 } from '../native/mount.js';
import { StratumError, isSystemError } from '../store/error.js';
import { KERNEL_SOURCE_PREFIX, MountState, kernelMountedAt, type MountEntry } from '../store/mount-state.js';
import { prepareMountTarget } from '../store/mount-target.js';

export { KERNEL_SOURCE_PREFIX };

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

function kernelSupport(): string | undefined {
  try {
    const fs = readFileSync('/proc/filesystems', 'utf8');
    if (!/\terofs$/m.test(fs)) return 'the kernel has no erofs';
    if (!/\toverlay$/m.test(fs)) return 'the kernel has no overlayfs';
  } catch {
    return 'no /proc/filesystems';
  }
  return undefined;
}

export interface KernelMountOptions {
  store: string;
  label: string;
  /** a tag, or `@<id>`; undefined = HEAD (read-write) */
  tag?: string | undefined;
  mountpoint: string;
  state?: MountState;
}

/** Mounts label[:tag] with the kernel at the mountpoint and records it (pid 0, mode kernel). */
export async function kernelMount(o: KernelMountOptions): Promise<MountEntry> {
  if (!hasSysAdmin()) throw new StratumError('PERMISSION', '--mode kernel needs root (CAP_SYS_ADMIN); use --mode fuse');
  const unsupported = kernelSupport();
  if (unsupported) throw new StratumError('IO', `--mode kernel is not available: ${unsupported}; use --mode fuse`);
  const { store, storeRoot, label, ref, head, mountpoint, commit, paths, xattrNamespace } = await prepareMountTarget(o);
  if (head && xattrNamespace !== 'trusted') {
    throw new StratumError('USAGE', `HEAD of ${label} keeps overlay xattrs in the user. namespace (made without root); --mode kernel mounts trusted.overlay.* uppers only; use --mode fuse`);
  }
  if (head) mkdirSync(paths.work, { recursive: true });
  const state = o.state ?? new MountState();

  // claim the mountpoint (and, for HEAD, the label's one writable mount) in the state first;
  // stale entries need no detaching here: the overlay mount replaces what is there
  const entry: MountEntry = { store: storeRoot, label, ref, commit, mountpoint, pid: 0, mode: 'kernel', started: new Date().toISOString() };
  await state.claim(entry);

  let lower: string | undefined;
  let lowerMounted = false;
  try {
    mkdirSync(mountpoint, { recursive: true });
    lower = mkdtempSync(join(tmpdir(), 'stratum-erofs-'));
    mount(store.commits.imagePath(commit), lower, 'erofs', MS_RDONLY, null);
    lowerMounted = true;
    const layers = `lowerdir=${lower}::${store.objects.root}`;
    const source = `${KERNEL_SOURCE_PREFIX}${label}${head ? '' : `:${ref}`}`;
    if (head) mount(source, mountpoint, 'overlay', 0, `${layers},upperdir=${paths.upper},workdir=${paths.work},metacopy=on,redirect_dir=on`);
    else mount(source, mountpoint, 'overlay', MS_RDONLY, `${layers},metacopy=on,redirect_dir=follow`);
  } catch (err) {
    await state.remove(mountpoint).catch(() => undefined);
    if (isSystemError(err, 'EPERM')) throw new StratumError('PERMISSION', '--mode kernel needs root (CAP_SYS_ADMIN); use --mode fuse', { cause: err });
    throw new StratumError('IO', `kernel mount of ${label}:${ref} at ${mountpoint} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    // the overlay holds the erofs; our temp mount of it goes (lazily) at once
    if (lower !== undefined) {
      if (lowerMounted) umount2(lower, MNT_DETACH);
      try { rmdirSync(lower); } catch { /* best effort */ }
    }
  }
  return entry;
}

/**
 * Ends a kernel mount: syncs the upper's filesystem, unmounts; if files are still open through it,
 * detaches it lazily ('draining': the kernel frees it when they close). A stale entry (nothing
 * mounted there any more) is just dropped.
 */
export async function kernelUnmount(entry: MountEntry, state = new MountState()): Promise<'stopped' | 'draining' | 'stale'> {
  let outcome: 'stopped' | 'draining' | 'stale' = 'stale';
  if (kernelMountedAt(entry.mountpoint)) {
    try {
      const fd = openSync(entry.mountpoint, 'r');
      try { syncfs(fd); } finally { closeSync(fd); }
    } catch { /* unmount still flushes */ }
    try {
      umount2(entry.mountpoint, 0);
      outcome = 'stopped';
    } catch (err) {
      if (!isSystemError(err, 'EBUSY')) throw new StratumError('IO', `unmounting ${entry.mountpoint} failed: ${(err as Error).message}`, { cause: err });
      umount2(entry.mountpoint, MNT_DETACH);
      outcome = 'draining';
    }
  }
  await state.update((entries) => entries.filter((e) => !(e.mountpoint === entry.mountpoint && e.mode === 'kernel')));
  return outcome;
}
