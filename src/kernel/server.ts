// The kernel-mode mount server (docs/kernel.md): one process per kernel mount, started by
// `stratum mount --mode kernel` like the FUSE server and with the same command line. The kernel
// serves every read and write; this process owns the mount around them: it mounts the overlay
// (overlay.ts), serves the control files on <mountpoint>/.stratum (a small FUSE filesystem,
// src/mount/control.ts), commits and applies live by replacing the overlay, and unmounts on
// SIGTERM. When the control files' mount goes away (unmount, umount -l), the server takes the
// overlay down too and exits 0.
//
//   node dist/src/kernel/server.js --store DIR --label L [--tag T | --commit ID] --mountpoint M [--log F] [--ready-fd N]
//
// Public surface: serveKernel.
import { closeSync, mkdirSync, openSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ControlFs, controlMountOptions } from '../mount/control-fs.js';
import { applyLive } from '../mount/live-apply.js';
import { type MadeDirs, type ServeOptions, checkMountFlags, log, makeMountpoint, mountStatus, recordCommit, serverMain } from '../mount/serve.js';
import { syncfs } from '../native/files.js';
import { mount as fuseMount, type FuseSession } from '../native/fuse.js';
import { MNT_DETACH, umount2 } from '../native/mount.js';
import { commitRoot } from '../store/head/index.js';
import { commitLive } from '../store/commands/live-commit.js';
import { StratumError } from '../store/error.js';
import { KERNEL_SOURCE_PREFIX, MountState, kernelMountedAt, overlayUsing, processAlive, type MountEntry } from '../store/mount-state.js';
import { prepareMountTarget } from '../store/mount-target.js';
import { makeFreshUpper, setMtime } from '../store/upper.js';
import { CONTROL_NAME, KernelOverlay } from './overlay.js';
import { checkKernelMode, kernelVerityNote } from './support.js';

/** Milliseconds fn took. */
function timed(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/** Serves one kernel mount until it goes away; resolves with 0 after a clean end. */
export async function serveKernel(o: ServeOptions): Promise<number> {
  checkKernelMode();
  checkMountFlags(o);
  const state = o.state ?? new MountState();
  await detachStale(state, { ...o, mountpoint: resolve(o.mountpoint) });
  const target = await prepareMountTarget({ ...o, serving: o.tag === undefined });
  const release = () => target.servingLock?.release();
  const { store, storeRoot, label, ref, head, mountpoint, paths } = target;
  if (head && target.xattrNamespace !== 'trusted') {
    release();
    throw new StratumError('USAGE', `HEAD of ${label} keeps overlay xattrs in the user. namespace (made without root); the kernel mounts trusted.overlay.* uppers only; use --mode fuse`);
  }
  let commit = target.commit;
  const entry: MountEntry = { store: storeRoot, label, ref, commit, mountpoint, pid: process.pid, mode: 'kernel', started: new Date().toISOString() };
  if (o.log) entry.log = o.log;
  const notes = [...(o.notes ?? []), kernelVerityNote()];
  entry.notes = notes;
  await state.claim(entry).catch((err: unknown) => { release(); throw err; });

  // the stub layer: `.stratum` to mount the control files on, under a root that looks like the commit's
  const stub = join(dirname(state.path), 'kernel', String(process.pid));
  let overlay: KernelOverlay | undefined;
  let session: FuseSession | undefined;
  let made: MadeDirs | undefined;
  try {
    mkdirSync(dirname(stub), { recursive: true, mode: 0o700 });
    // stubs of servers that died (a lower layer of nothing now, unless their overlay lingers detached)
    for (const pid of readdirSync(dirname(stub))) {
      const dir = join(dirname(stub), pid);
      if (!processAlive(Number(pid)) && overlayUsing(dir) === undefined) rmSync(dir, { recursive: true, force: true });
    }
    const root = commitRoot(store, commit);  // the topmost lower decides a tag mount's root
    await makeFreshUpper(stub, root, 'trusted');
    mkdirSync(join(stub, CONTROL_NAME), { mode: 0o555 });
    setMtime(stub, root.mtimeSec, root.mtimeNsec);
    made = makeMountpoint(mountpoint);
    overlay = new KernelOverlay({
      source: `${KERNEL_SOURCE_PREFIX}${label}${head ? '' : `:${ref}`}`,
      mountpoint, stub, objects: store.objects.root, workRoot: head ? paths.work : undefined,
      allowSuid: o.allowSuid === true, allowDev: o.allowDev === true,
    });
    overlay.attach(store.commits.imagePath(commit), head ? paths.upper : undefined);
  } catch (err) {
    await state.remove(mountpoint).catch(() => undefined);
    rmSync(stub, { recursive: true, force: true });
    release();
    made?.remove();
    throw err;
  }
  const ov = overlay;

  // one control request at a time: each replaces the overlay the next one starts from
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => undefined);
    return run;
  };
  const control = new ControlFs({
    status: () => mountStatus({ ...target, commit }, 'kernel', notes),
    commit: head ? (tag: string) => serial(async () => {
      const switches: number[] = [];
      const r = await commitLive(store, {
        label, tag: tag === '' ? undefined : tag,
        mount: {
          layer: async (base, upper, next) => {
            let sealed = false;
            switches.push(timed(() => { sealed = ov.replace(store.commits.imagePath(base), upper, next, { sealOld: true }).sealed; }));
            return { sealed };
          },
          rebase: async (id, upper) => {
            switches.push(timed(() => { ov.replace(store.commits.imagePath(id), undefined, upper); }));
            commit = id;
          },
        },
      });
      await recordCommit(state, mountpoint, r.id);
      log(`committed ${label}:${r.tag} ${r.id} (${r.changedPaths} changed paths${r.keptWriters > 0 ? `, ${r.keptWriters} files open for writing went on into the new HEAD` : ''}; overlay switches ${switches.map((ms) => `${ms.toFixed(1)} ms`).join(' + ')})`);
      return `${label}:${r.tag} ${r.id}\n`;
    }) : undefined,
    apply: head ? (request: string) => applyLive({
      store, label, request, upper: paths.upper, mountpoint, state,
      mount: {
        // one control request at a time; the overlay is replaced while the queue holds the next
        switchAround: (apply, upper) => serial(async () => {
          const r = await apply();
          let ms: number;
          try {
            ms = timed(() => { ov.replace(store.commits.imagePath(r.to), undefined, upper); });
          } catch (err) {
            throw new StratumError('IO', `HEAD of ${label} is on ${r.to.slice(0, 12)} now, but the mount could not switch to it (${(err as Error).message}); unmount and mount again`);
          }
          commit = r.to;
          return { applied: r, note: `overlay switch ${ms.toFixed(1)} ms` };
        }),
      },
    }) : undefined,
  }, { readOnly: !head });

  try {
    session = fuseMount(join(mountpoint, CONTROL_NAME), control, { ...controlMountOptions(label), maxThreads: 2 });
  } catch (err) {
    ov.unmount();
    await state.remove(mountpoint).catch(() => undefined);
    rmSync(stub, { recursive: true, force: true });
    release();
    made?.remove();
    throw err;
  }
  log(`serving ${label}:${ref} (${commit.slice(0, 12)}) at ${mountpoint} with the kernel, pid ${process.pid}`);

  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    log(`${why}: unmounting`);
    // a commit or apply under way finishes first (its overlay switches need the control mount)
    void queue.then(() => {
      try {
        const fd = openSync(mountpoint, 'r');
        try { syncfs(fd); } finally { closeSync(fd); }
      } catch { /* unmount flushes too */ }
      // the control files first: their session ending is what ends this process
      return session!.unmount();
    }).catch((e) => {
      stopping = false;
      log(`unmounting the control files failed: ${String(e)}`);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => stop('SIGHUP'));
  o.onReady?.();
  const status = await session.exited;
  // the overlay goes with its control files, however they went
  // (stopMount reads this line: 'draining' is how `stratum unmount` learns files were still open)
  if (kernelMountedAt(mountpoint)) log(`unmounted ${mountpoint} by pid ${process.pid} (${ov.unmount()})`);
  rmSync(stub, { recursive: true, force: true });
  release();
  made.remove();
  await state.update((entries) => entries.filter((e) => !(e.mountpoint === mountpoint && e.pid === process.pid))).catch(() => undefined);
  log(`server done (loop status ${status})`);
  return status;
}

/** A dead server's kernel mounts at this mountpoint or of this HEAD: detached, so recovery may finish a live commit. */
async function detachStale(state: MountState, o: ServeOptions): Promise<void> {
  for (const e of await state.list()) {
    if (!e.stale || e.mode !== 'kernel' || e.store !== resolve(o.store)) continue;
    if (e.mountpoint !== o.mountpoint && !(o.tag === undefined && e.label === o.label && e.ref === 'HEAD')) continue;
    for (let i = 0; i < 4 && kernelMountedAt(e.mountpoint); i++) {
      log(`detaching the stale kernel mount at ${e.mountpoint}`);
      try { umount2(e.mountpoint, MNT_DETACH); } catch { break; }
    }
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void serverMain(process.argv.slice(2), serveKernel);
}
