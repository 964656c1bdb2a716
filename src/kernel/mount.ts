// Kernel-mode mounts from the outside: start a kernel server (server.ts) for label[:tag] at a
// mountpoint, or end one. The server does the mounting; these wait for it like `stratum mount`.
//
// Public surface: kernelMount, KernelMountOptions, kernelUnmount.
import { startMount, stopMount } from '../mount/client.js';
import { MountState, type MountEntry } from '../store/mount-state.js';
import { checkKernelMode } from './support.js';

export interface KernelMountOptions {
  store: string;
  label: string;
  /** a tag, or `@<id>`; undefined = HEAD (read-write) */
  tag?: string | undefined;
  mountpoint: string;
  state?: MountState;
}

/** Mounts label[:tag] with the kernel at the mountpoint (a server owns it); its state entry. */
export async function kernelMount(o: KernelMountOptions): Promise<MountEntry> {
  checkKernelMode();
  return startMount({ ...o, mode: 'kernel' });
}

/** Ends a kernel mount like `stratum unmount`. */
export async function kernelUnmount(entry: MountEntry, state = new MountState()): Promise<'stopped' | 'draining' | 'stale'> {
  const live = (await state.list()).find((e) => e.mountpoint === entry.mountpoint && e.pid === entry.pid);
  return stopMount({ ...entry, stale: live?.stale ?? true }, state);
}
