// Shared by the kernel-mode tests: mounts made through the CLI as a user makes them
// (`stratum mount ... --mode kernel|fuse`, `stratum unmount`), always ended on every path.
//
// Surface: S (run the CLI on a store), ok (its stdout, asserting exit 0), withCliMount, withKernel,
// cleanupKernel, kernelView, alive, waitFor.
import * as assert from 'uvu/assert';
import { MNT_DETACH, umount2 } from '../../src/native/mount.js';
import { stratumMountsAt } from '../../src/fuse/server.js';
import { MountState, kernelMountedAt } from '../../src/store/mount-state.js';
import { type CliResult, stratum } from '../helpers/cli.js';
import { forceEnd } from '../fuse/mounts.js';
import { dirView } from '../store/head/kernel.js';

export const S = (store: string, ...args: string[]): CliResult => stratum(['--store', store, ...args]);

export function ok(r: CliResult, what: string): string {
  assert.is(r.status, 0, `${what}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Detaches whatever kernel-mode overlay is left at these mountpoints, however it is. */
export function cleanupKernel(...mnts: string[]): void {
  for (const m of mnts) {
    for (let i = 0; i < 4 && kernelMountedAt(m); i++) {
      try { umount2(m, MNT_DETACH); } catch { break; }
    }
  }
}

/** `stratum mount <target> <mnt> --mode <mode>` for fn, then `stratum unmount`; forced if that fails. */
export async function withCliMount<T>(store: string, target: string, mnt: string, mode: 'kernel' | 'fuse', fn: () => Promise<T> | T): Promise<T> {
  const mounted = (): boolean => (mode === 'kernel' ? kernelMountedAt(mnt) : stratumMountsAt(mnt));
  try {
    assert.is(ok(S(store, 'mount', target, mnt, '--mode', mode), `mount ${target} --mode ${mode}`), mnt);
    assert.ok(mounted(), `a ${mode} mount is at the mountpoint`);
    return await fn();
  } finally {
    if (mounted()) ok(S(store, 'unmount', mnt), 'unmount');
    if (mode === 'kernel') cleanupKernel(mnt);
    else for (const e of (await new MountState().list()).filter((x) => x.mountpoint === mnt)) await forceEnd(e, mnt);
  }
}

export function withKernel<T>(store: string, target: string, mnt: string, fn: () => Promise<T> | T): Promise<T> {
  return withCliMount(store, target, mnt, 'kernel', fn);
}

/**
 * The tree at a kernel-mode mountpoint. `/.stratum` is left out: there it is a real dir (the
 * control files' mountpoint, docs/kernel.md), which readdir lists, while the FUSE server answers
 * lookups of it but keeps it out of readdir; neither is in an upper or a commit.
 */
export function kernelView(mnt: string): ReturnType<typeof dirView> {
  return dirView(mnt, (path) => path === '/.stratum');
}

export function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

export async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 500) assert.unreachable(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
