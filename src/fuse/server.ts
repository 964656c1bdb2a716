// The FUSE mount server: one process per mount, started by `stratum mount` (detached, logging to
// a file) or run in the foreground. It opens the store, mounts a UnionFs, records itself in the
// mount state file and serves until the mount goes away (unmount, SIGTERM, umount -l). Its
// command line, readiness protocol and status text are the kernel server's too (src/mount/serve.ts).
//
//   node dist/src/fuse/server.js --store DIR --label L [--tag T | --commit ID] --mountpoint M [--ready-fd N]
//                                [--allow-suid] [--allow-dev] [--no-verify-objects] [--note TEXT]...
//
// FUSE mode checks each object against its name the first time the mount opens it (UnionFs
// verifyObjects): a corrupt one answers EIO and is named in this log. --no-verify-objects is for
// benchmark baselines.
//
// Public surface: serve, stratumMountsAt, lazyUnmount.
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { mount as fuseMount, type FuseSession } from '../native/fuse.js';
import { syncfs } from '../native/files.js';
import { lazyUnmount, stratumMountsAt } from '../mount/client.js';
import { commitInChild } from '../mount/commit-process.js';
import { applyLive } from '../mount/live-apply.js';
import { type MadeDirs, type ServeOptions, checkMountFlags, log, makeMountpoint, mountStatus, recordCommit, serverMain } from '../mount/serve.js';
import { fuseMountOptions } from '../mount/options.js';
import { MountState, type MountEntry } from '../store/mount-state.js';
import { prepareMountTarget } from '../store/mount-target.js';
import { UnionFs } from './union-fs.js';

// where tests and benchmarks have always found them
export { lazyUnmount, stratumMountsAt };

/** Serves one mount until it goes away; resolves with the loop status. */
export async function serve(o: ServeOptions): Promise<number> {
  checkMountFlags(o);
  const target = await prepareMountTarget({ ...o, serving: o.tag === undefined });
  const { store, storeRoot, label, ref, head, mountpoint, commit, paths } = target;
  const ns = target.xattrNamespace;
  const state = o.state ?? new MountState();

  // one writable HEAD per label; a stale entry (dead server) is dropped and its mount detached
  const entry: MountEntry = { store: storeRoot, label, ref, commit, mountpoint, pid: process.pid, mode: 'fuse', started: new Date().toISOString() };
  if (o.log) entry.log = o.log;
  if (o.notes?.length) entry.notes = o.notes;
  const stale = await state.claim(entry).catch((err: unknown) => { target.servingLock?.release(); throw err; });
  for (const m of stale) if (stratumMountsAt(m)) { log(`cleaning up the stale mount at ${m}`); lazyUnmount(m); }
  if (stratumMountsAt(mountpoint)) lazyUnmount(mountpoint);

  let fs: UnionFs | undefined;
  let session: FuseSession | undefined;
  let made: MadeDirs | undefined;
  try {
    made = makeMountpoint(mountpoint);
    const scratch = join(paths.work, 'fuse');
    fs = new UnionFs({
      imagePath: store.commits.imagePath(commit),
      objectsDir: store.objects.root,
      upperDir: head ? paths.upper : undefined,
      scratchDir: head ? scratch : undefined,
      ns,
      statfsPath: storeRoot,
      verifyObjects: o.verifyObjects !== false,
      onCorrupt: (object, actual) => log(`object ${object} is corrupt (its content's fs-verity digest is ${actual}): opens of it answer EIO; run \`stratum verify\``),
      control: {
        status: () => mountStatus(target, 'fuse', o.notes),
        apply: head ? (request: string) => applyLive({
          store, label, request, upper: paths.upper, mountpoint, state,
          mount: { switchAround: (apply, upper) => fs!.frozen(apply, (r) => ({ imagePath: store.commits.imagePath(r.to), upperDir: upper, viewChanged: true })).then((applied) => ({ applied })) },
        }) : undefined,
        commit: head ? async (tag: string) => {
          // the upper is split (docs/fuse.md "Live commit"): requests wait only for the two view switches
          const held: number[] = [];
          // the write barrier, from before the commit looks for open writers until the split:
          // no backing fd of the upper being committed stays writable in C (docs/fuse.md)
          const releaseWrites = fs!.holdWrites();
          let r;
          try {
            r = await commitInChild({
              store: storeRoot, label, tag: tag === '' ? undefined : tag, state,
              mount: {
                layer: async (_base, upper, next) => {
                  held.push(await fs!.layer(upper, next));
                  releaseWrites();
                  // every write goes through this server, which no longer reaches the old upper
                  return { sealed: true };
                },
                rebase: async (id, upper) => { held.push(await fs!.rebase(store.commits.imagePath(id), upper)); },
              },
            });
          } finally {
            releaseWrites();
          }
          await recordCommit(state, mountpoint, r.id);
          log(`committed ${label}:${r.tag} ${r.id} (${r.changedPaths} changed paths${r.keptWriters > 0 ? `, ${r.keptWriters} files open for writing went on into the new HEAD` : ''}; requests held ${held.map((ms) => `${ms.toFixed(1)} ms`).join(' + ')})`);
          return `${label}:${r.tag} ${r.id}\n`;
        } : undefined,
      },
    });
    if (fs.preservedKept) {
      const r = fs.restoreKept();
      log(`a live commit's server died with files open for writing: restored ${r.restored.length} (${r.restored.join(', ')})` +
        (r.left.length > 0 ? `; ${r.left.length} whose dir is gone stay in ${fs.preservedKept} (kept.json names their paths)` : ''));
    }
    process.umask(0);  // modes from the kernel already carry the caller's umask
    const options = fuseMountOptions(`stratum:${label}${head ? '' : `:${ref}`}`, { allowSuid: o.allowSuid, allowDev: o.allowDev, readOnly: !head, noatime: true });
    session = fuseMount(mountpoint, fs, { options, readdirplus: 'always', autoInvalData: false, noFlush: true, noOpen: true, capabilityCache: true });
    fs.session = session;
  } catch (err) {
    await state.remove(mountpoint).catch(() => undefined);
    fs?.close();
    target.servingLock?.release();
    made?.remove();
    throw err;
  }
  log(`serving ${label}:${ref} (${commit.slice(0, 12)}) at ${mountpoint}, pid ${process.pid}`);

  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    log(`${why}: unmounting`);
    if (head) {
      try {
        const fd = openSync(paths.upper, 'r');
        try { syncfs(fd); } finally { closeSync(fd); }
      } catch { /* best effort */ }
    }
    session!.unmount().catch((e) => log(`unmount failed: ${String(e)}`));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => stop('SIGHUP'));
  process.on('SIGUSR2', () => log(`requests ${JSON.stringify(session!.stats())}`));
  o.onReady?.();
  const status = await session.exited;
  fs.close();
  target.servingLock?.release();
  made.remove();
  await state.update((entries) => entries.filter((e) => !(e.mountpoint === mountpoint && e.pid === process.pid))).catch(() => undefined);
  log(`unmounted ${mountpoint} (loop status ${status})`);
  return status;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void serverMain(process.argv.slice(2), serve);
}
