// Whether this process can mount with the kernel: CAP_SYS_ADMIN, and a kernel with erofs and
// overlayfs. `--mode auto` asks `kernelModeUnavailable`; `--mode kernel` and the kernel server
// call `checkKernelMode`, which says what is missing.
//
// Public surface: hasSysAdmin, kernelModeUnavailable, checkKernelMode.
import { readFileSync } from 'node:fs';
import { StratumError } from '../store/error.js';

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
