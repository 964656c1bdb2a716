// The kernel overlay of one kernel-mode mount, and how it is replaced while in use.
//
// An overlay is built detached (fsopen/fsconfig/fsmount, src/native/mount.ts) from, top first:
//   stub      a tiny dir holding only `.stratum/`, the mountpoint of the control files (so the
//             name never needs to exist in an upper or a commit)
//   middle    during a live commit only: the upper being committed, read-only
//   erofs     the commit image, mounted file-backed on a private temp dir, detached once the
//             overlay holds it
//   objects   the store's objects dir as a data-only layer (the image's metacopy redirects)
// plus, for a HEAD, an upper dir and a fresh work dir of its own.
//
// Replacing (`replace`): the new overlay is moved *beneath* the one at the mountpoint
// (MOVE_MOUNT_BENEATH), the control files' mount is cloned into it (same FUSE connection), then
// the old overlay is detached (for a live commit's split, made read-only first). A path lookup sees the old tree or the new one, never neither;
// files already open keep their old overlay until closed.
//
// Every mount made here is nosuid,nodev (a setuid file of an imported tree must not give its
// owner's rights to whoever runs it) unless the spec allows them: the overlay by its mount attrs,
// the seal by its remount flags (a bind remount replaces all per-mount flags), the temp erofs
// always (it is private and detached at once; exec goes through the overlay's flags).
//
// Public surface: KernelOverlay, OverlaySpec.
import { closeSync, mkdirSync, mkdtempSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONTROL_DIR_NAME } from '../mount/control.js';
import { mountAttrFlags, msFlags } from '../mount/options.js';
import {
  AT_FDCWD, MNT_DETACH, MOUNT_ATTR_RDONLY, MOVE_MOUNT_BENEATH, MS_NODEV, MS_NOSUID, MOVE_MOUNT_F_EMPTY_PATH, MS_BIND, MS_RDONLY, MS_REMOUNT, OPEN_TREE_CLONE,
  fsconfigCreate, fsconfigString, fsmount, fsopen, mount, moveMount, openTree, umount2,
} from '../native/mount.js';
import { StratumError, isSystemError } from '../store/error.js';
import { imageMountError } from './support.js';

export interface OverlaySpec {
  /** The overlay's source name (shown in mountinfo). */
  source: string;
  mountpoint: string;
  /** Dir holding an empty `.stratum` dir (see the top of this file). */
  stub: string;
  objects: string;
  /** Where fresh work dirs are made (on the upper's filesystem); undefined for a read-only mount. */
  workRoot?: string;
  /** Honour setuid/setgid bits (root's `--allow-suid`); otherwise the overlay is nosuid. */
  allowSuid?: boolean;
  /** Honour device files (root's `--allow-dev`); otherwise the overlay is nodev. */
  allowDev?: boolean;
}

/** The control files' dir at the mount's root: the one name both servers use. */
export const CONTROL_NAME = CONTROL_DIR_NAME;

export class KernelOverlay {
  private seq = 0;
  /** Work dir of the overlay now at the mountpoint. */
  private work: string | undefined;
  /** Work dirs of overlays replaced meanwhile. */
  private readonly retired: string[] = [];

  constructor(private readonly spec: OverlaySpec) {
    // work dirs of earlier servers of this HEAD: no overlay uses them now
    if (spec.workRoot) {
      mkdirSync(spec.workRoot, { recursive: true, mode: 0o700 });
      for (const name of readdirSync(spec.workRoot)) if (name.startsWith('kernel.')) rmSync(join(spec.workRoot, name), { recursive: true, force: true });
    }
  }

  /** Mounts the first overlay at the mountpoint. */
  attach(image: string, upper: string | undefined): void {
    const { fd, work } = this.build(image, undefined, upper);
    try {
      moveMount(fd, '', AT_FDCWD, this.spec.mountpoint, MOVE_MOUNT_F_EMPTY_PATH);
    } catch (err) {
      this.dropWork(work);
      throw mountError(err, `mounting the overlay at ${this.spec.mountpoint}`);
    } finally {
      closeSync(fd);
    }
    this.work = work;
  }

  /**
   * Puts a new overlay (image, optional read-only middle layer, upper) in place of the current
   * one. `sealOld`: the old overlay is made read-only before it is detached, so nothing new can
   * be written through it (a process whose cwd is inside it, say); files already open go on.
   * The kernel refuses that while files are open for writing through it: then `sealed` is false.
   */
  replace(image: string, middle: string | undefined, upper: string | undefined, options: { sealOld?: boolean } = {}): { sealed: boolean } {
    const { fd, work } = this.build(image, middle, upper);
    try {
      try {
        moveMount(fd, '', AT_FDCWD, this.spec.mountpoint, MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH);
      } catch (err) {
        this.dropWork(work);
        throw mountError(err, `mounting the new overlay beneath ${this.spec.mountpoint}`);
      }
      // From here the new overlay is in the mount table: finish even if the control files cannot follow.
      try {
        const ctl = openTree(AT_FDCWD, join(this.spec.mountpoint, CONTROL_NAME), OPEN_TREE_CLONE);
        try {
          moveMount(ctl, '', fd, CONTROL_NAME, MOVE_MOUNT_F_EMPTY_PATH);
        } finally {
          closeSync(ctl);
        }
      } catch (err) {
        process.stderr.write(`${new Date().toISOString()} the control files did not follow the new overlay: ${(err as Error).message}\n`);
      }
    } finally {
      closeSync(fd);
    }
    let sealed = false;
    if (options.sealOld) {
      try {
        mount(null, this.spec.mountpoint, null, MS_REMOUNT | MS_BIND | MS_RDONLY | this.msFlags(), null);
        sealed = true;
      } catch (err) {
        // the kernel refuses while files are open for writing through it (EBUSY)
        if (!isSystemError(err, 'EBUSY')) throw mountError(err, `making the old overlay at ${this.spec.mountpoint} read-only`);
      }
    }
    umount2(this.spec.mountpoint, MNT_DETACH);
    // the detached overlay may still be in use (open files, a cwd): its work dir stays until the end
    if (this.work) this.retired.push(this.work);
    this.work = work;
    return { sealed };
  }

  /** Unmounts the overlay (after the control files' mount is gone): 'busy' when files are still open (detached lazily then). */
  unmount(): 'stopped' | 'draining' {
    let how: 'stopped' | 'draining' = 'stopped';
    try {
      umount2(this.spec.mountpoint, 0);
    } catch {
      umount2(this.spec.mountpoint, MNT_DETACH);
      how = 'draining';
    }
    if (how === 'stopped') for (const w of [this.work, ...this.retired]) this.dropWork(w);
    return how;
  }

  private build(image: string, middle: string | undefined, upper: string | undefined): { fd: number; work: string | undefined } {
    const erofs = mkdtempSync(join(tmpdir(), 'stratum-erofs-'));
    let work: string | undefined;
    try {
      try {
        mount(image, erofs, 'erofs', MS_RDONLY | MS_NOSUID | MS_NODEV, null);
      } catch (err) {
        throw imageMountError(image, err);
      }
      try {
        const ctx = fsopen('overlay');
        try {
          fsconfigString(ctx, 'source', this.spec.source);
          for (const layer of [this.spec.stub, ...(middle ? [middle] : []), erofs]) fsconfigString(ctx, 'lowerdir+', layer);
          fsconfigString(ctx, 'datadir+', this.spec.objects);
          fsconfigString(ctx, 'metacopy', 'on');
          // index=off: for a moment two overlays share an upper (or one's upper is the other's lower)
          fsconfigString(ctx, 'index', 'off');
          if (upper) {
            if (!this.spec.workRoot) throw new StratumError('USAGE', 'a read-write overlay needs a work dir');
            work = join(this.spec.workRoot, `kernel.${process.pid}.${++this.seq}`);
            mkdirSync(work, { mode: 0o700 });
            fsconfigString(ctx, 'upperdir', upper);
            fsconfigString(ctx, 'workdir', work);
            fsconfigString(ctx, 'redirect_dir', 'on');
          } else {
            fsconfigString(ctx, 'redirect_dir', 'follow');
          }
          fsconfigCreate(ctx);
          return { fd: fsmount(ctx, (upper ? 0 : MOUNT_ATTR_RDONLY) | this.mountAttrs()), work };
        } finally {
          closeSync(ctx);
        }
      } finally {
        // the overlay holds the erofs now (or failed): our own mount of it goes
        umount2(erofs, MNT_DETACH);
      }
    } catch (err) {
      if (work) this.dropWork(work);
      throw mountError(err, `building the overlay for ${this.spec.mountpoint}`);
    } finally {
      rmdirSync(erofs);
    }
  }

  /** MOUNT_ATTR_NOSUID/NODEV unless allowed (src/mount/options.ts). */
  private mountAttrs(): number {
    return mountAttrFlags(this.spec);
  }

  /** The same as mount(2) flags, for the seal's bind remount. */
  private msFlags(): number {
    return msFlags(this.spec);
  }

  private dropWork(work: string | undefined): void {
    if (work) rmSync(work, { recursive: true, force: true });
  }
}

function mountError(err: unknown, what: string): StratumError {
  if (err instanceof StratumError) return err;
  // overlayfs tells why a layer was refused in the kernel log only, not on the fs context fd
  const hint = isSystemError(err, 'EINVAL') || isSystemError(err, 'ENOENT') ? ' (the kernel log, dmesg, says why)' : '';
  return new StratumError('IO', `${what} failed: ${(err as Error).message}${hint}`, { cause: err });
}
