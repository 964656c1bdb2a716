// Shared by the kernel-mode tests: the CLI against a store, kernel mounts that are always
// undone, waiting for a process or a mount.
import * as assert from 'uvu/assert';
import { MNT_DETACH, umount2 } from '../../src/native/mount.js';
import { kernelMountedAt } from '../../src/store/mount-state.js';
import { stratum } from '../helpers/cli.js';
import { dirView } from '../store/head/kernel.js';

export const S = (store: string, ...args: string[]) => stratum(['--store', store, ...args]);

export function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

export async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 500) assert.unreachable(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): string {
  assert.is(r.status, 0, `${what}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Unmounts whatever is left at these mountpoints, however it is. */
export function cleanup(...mnts: string[]): void {
  for (const m of mnts) {
    for (let i = 0; i < 4 && kernelMountedAt(m); i++) {
      try { umount2(m, MNT_DETACH); } catch { break; }
    }
  }
}

export async function withKernel<T>(store: string, target: string, mnt: string, fn: () => Promise<T> | T): Promise<T> {
  try {
    assert.is(ok(S(store, 'mount', target, mnt, '--mode', 'kernel'), `mount ${target} --mode kernel`), mnt);
    assert.ok(kernelMountedAt(mnt), 'an overlay is at the mountpoint');
    return await fn();
  } finally {
    if (kernelMountedAt(mnt)) ok(S(store, 'unmount', mnt), 'unmount');
    cleanup(mnt);
  }
}

/**
 * The tree at a kernel-mode mountpoint. `/.stratum` is left out: there it is a real dir (the
 * control files' mountpoint, docs/kernel.md), which readdir lists, while the FUSE server answers
 * lookups of it but keeps it out of readdir; neither is in an upper or a commit.
 */
export function kernelView(mnt: string): ReturnType<typeof dirView> {
  return dirView(mnt, (path) => path === '/.stratum');
}
