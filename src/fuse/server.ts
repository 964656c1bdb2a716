// The mount server: one process per mount, started by `stratum mount` (detached, logging to a
// file) or run in the foreground. It opens the store, mounts a UnionFs, records itself in the
// mount state file and serves until the mount goes away (unmount, SIGTERM, umount -l).
//
//   node dist/src/fuse/server.js --store DIR --label L [--tag T | --commit ID] --mountpoint M [--ready-fd N]
//                                [--allow-suid] [--allow-dev] [--no-verify-objects] [--note TEXT]...
//
// FUSE mode checks each object against its name the first time the mount opens it (UnionFs
// verifyObjects): a corrupt one answers EIO and is named in this log. --no-verify-objects is for
// benchmark baselines.
//
// Mounts are nosuid,nodev: a setuid file or a device node in a commit is inert unless root asked
// for it (`--allow-suid`, `--allow-dev`; others get PERMISSION, checkMountFlags).
//
// Readiness: once mounted and recorded, "ready <pid>\n" is written to the ready fd (the mount
// command waits for it, then checks the mount answers). Exit 0 after a clean unmount.
//
// Public surface: ServeOptions, checkMountFlags, serve, serverMain, mountStatus, parseApplyRequest, stratumMountsAt, lazyUnmount.
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { mount as fuseMount, type FuseSession } from '../native/fuse.js';
import { syncfs } from '../native/files.js';
import { MNT_DETACH, umount2 } from '../native/mount.js';
import { applyHead } from '../store/commands/apply.js';
import { commitInChild } from './commit-process.js';
import { StratumError } from '../store/error.js';
import { MountState, type MountEntry } from '../store/mount-state.js';
import { type MountTarget, checkCommitImage, prepareMountTarget } from '../store/mount-target.js';
import { parseRef } from '../store/names.js';
import { resolveRef } from '../store/resolve.js';
import { isOverlayWhiteout } from '../store/upper.js';
import { UnionFs } from './union-fs.js';

export interface ServeOptions {
  store: string;
  label: string;
  /** undefined: HEAD (read-write); otherwise a tag or `@<id>` (read-only). */
  tag?: string | undefined;
  mountpoint: string;
  /** Where the log goes (recorded in the state entry). */
  log?: string | undefined;
  /** Called once the mount is up and recorded. */
  onReady?: () => void;
  state?: MountState;
  /** Honour setuid/setgid bits in the mount (root only). */
  allowSuid?: boolean | undefined;
  /** Honour device files in the mount (root only). */
  allowDev?: boolean | undefined;
  /** false: objects are not checked on first open (benchmark baselines only; `--no-verify-objects`). */
  verifyObjects?: boolean | undefined;
  /** Shown by status and recorded in the state entry (`--note`, e.g. why FUSE and not the kernel). */
  notes?: string[] | undefined;
}

/** `--allow-suid` / `--allow-dev` are for root only: anyone else could make themselves root with them. */
export function checkMountFlags(o: { allowSuid?: boolean | undefined; allowDev?: boolean | undefined }): void {
  if (!o.allowSuid && !o.allowDev) return;
  if (process.geteuid?.() === 0) return;
  const flag = o.allowSuid ? '--allow-suid' : '--allow-dev';
  throw new StratumError('PERMISSION', `${flag} is for root only (it would let a file in a commit act as its owner or as a device); mount without it`);
}

/** Mountpoints in /proc/self/mountinfo whose source is a stratum FUSE server (fsname stratum:...). */
export function stratumMountsAt(mountpoint: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => {
      const f = line.split(' ');
      const dash = f.indexOf('-');
      return f[4] === mountpoint && dash > 0 && (f[dash + 2] ?? '').startsWith('stratum:');
    });
  } catch {
    return false;
  }
}

/** Lazy unmount (a dead server's mount answers ENOTCONN until this). */
export function lazyUnmount(mountpoint: string): void {
  try {
    umount2(mountpoint, MNT_DETACH);
  } catch {
    try {
      execFileSync('fusermount3', ['-u', '-z', '--', mountpoint], { stdio: 'ignore' });
    } catch {
      /* not mounted */
    }
  }
}

/** What a write to `/.stratum/apply` asks: `<tag>|<label>:<tag>|<label>@<id> [--discard|--keep]`. */
export function parseApplyRequest(text: string, label: string): { ref: string; discard: boolean; keep: boolean } {
  const [what, ...flags] = text.split(/\s+/).filter((x) => x !== '');
  if (!what || flags.some((f) => f !== '--discard' && f !== '--keep')) throw new StratumError('USAGE', 'write "<tag> [--discard|--keep]" to apply');
  const ref = what.includes(':') || what.includes('@') ? what : `${label}:${what}`;
  if (!ref.startsWith(`${label}:`) && !ref.startsWith(`${label}@`)) throw new StratumError('USAGE', `this mount serves ${label}; apply ${label}:<tag>`);
  return { ref, discard: flags.includes('--discard'), keep: flags.includes('--keep') };
}

/** The text of `/.stratum/status` for a mount served by this process. */
export async function mountStatus(target: MountTarget, mode: 'fuse' | 'kernel', notes: string[] = []): Promise<string> {
  const { store, label, ref, head, commit, paths, mountpoint } = target;
  const h = head ? await store.heads.read(label) : undefined;
  const base = h?.base ?? commit;
  const tags = (await store.tags.tags(label).catch(() => [] as string[]));
  const at: string[] = [];
  for (const t of tags) {
    const id = await store.tags.resolve(label, t).then((r) => r.id).catch(() => undefined);
    if (id === base) at.push(t);
  }
  const changed = head ? upperCounts(paths.upper) : { paths: 0, deletions: 0 };
  return [`label ${label}`, `ref ${ref}`, `base ${base}`, `tags ${at.join(' ')}`, `mode ${mode} ${head ? 'read-write' : 'read-only'}`,
    `changed ${changed.paths}`, `deleted ${changed.deletions}`, `mountpoint ${mountpoint}`, `pid ${process.pid}`, ...notes.map((n) => `note ${n}`), ''].join('\n');
}

/** Entries in an upper dir (changed paths) and, among them, whiteouts (deletions). */
function upperCounts(upper: string): { paths: number; deletions: number } {
  let paths = 0, deletions = 0;
  const stack = [Buffer.from(upper)];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let names: Buffer[];
    try { names = readdirSync(dir, { encoding: 'buffer' }) as Buffer[]; } catch { continue; }
    for (const name of names) {
      const path = Buffer.concat([dir, Buffer.from('/'), name]);
      const st = lstatSync(path, { throwIfNoEntry: false });
      if (!st) continue;
      paths++;
      if (st.isDirectory()) stack.push(path);
      else if (isOverlayWhiteout(st)) deletions++;
    }
  }
  return { paths, deletions };
}

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

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
  let madeMountpoint = false;
  try {
    madeMountpoint = mkdirSync(mountpoint, { recursive: true }) !== undefined;
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
        apply: head ? async (args: string) => {
          const { ref, discard, keep } = parseApplyRequest(args, label);
          await checkCommitImage(store, (await resolveRef(store, parseRef(ref))).id, ref);
          const r = await fs!.frozen(() => applyHead(store, ref, { discard, keep }),
            (res) => ({ imagePath: store.commits.imagePath(res.to), upperDir: paths.upper, viewChanged: true }));
          await state.update((entries) => entries.map((e) => (e.mountpoint === mountpoint && e.pid === process.pid ? { ...e, commit: r.to } : e)));
          log(`applied ${ref}: HEAD on ${r.to} (changes ${r.changesWere})`);
          return `${label} ${r.to} ${r.changesWere}\n`;
        } : undefined,
        commit: head ? async (tag: string) => {
          // the upper is split (docs/fuse.md "Live commit"): requests wait only for the two view switches
          const held: number[] = [];
          const r = await commitInChild({
            store: storeRoot, label, tag: tag === '' ? undefined : tag, state,
            mount: {
              layer: async (_base, upper, next) => {
                held.push(await fs!.layer(upper, next));
                // every write goes through this server, which no longer reaches the old upper
                return { sealed: true };
              },
              rebase: async (id, upper) => { held.push(await fs!.rebase(store.commits.imagePath(id), upper)); },
            },
          });
          await state.update((entries) => entries.map((e) => (e.mountpoint === mountpoint && e.pid === process.pid ? { ...e, commit: r.id } : e)));
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
    const options = ['default_permissions', 'noatime', o.allowSuid ? 'suid' : 'nosuid', o.allowDev ? 'dev' : 'nodev', `fsname=stratum:${label}${head ? '' : `:${ref}`}`, 'subtype=stratum'];
    if (process.getuid?.() === 0) options.push('allow_other');
    if (!head) options.push('ro');
    session = fuseMount(mountpoint, fs, { options, readdirplus: 'always', autoInvalData: false, noFlush: true });
    fs.session = session;
  } catch (err) {
    await state.remove(mountpoint).catch(() => undefined);
    fs?.close();
    target.servingLock?.release();
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
  if (madeMountpoint) { try { rmdirSync(mountpoint); } catch { /* in use, or not empty */ } }
  await state.update((entries) => entries.filter((e) => !(e.mountpoint === mountpoint && e.pid === process.pid))).catch(() => undefined);
  log(`unmounted ${mountpoint} (loop status ${status})`);
  return status;
}

/** A server process's command line, readiness pipe and exit status, around `serveFn` (FUSE or kernel mode). */
export async function serverMain(argv: string[], serveFn: (o: ServeOptions) => Promise<number>): Promise<void> {
  const get = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const store = get('--store'), label = get('--label'), mountpoint = get('--mountpoint');
  if (!store || !label || !mountpoint) {
    process.stderr.write('usage: server --store DIR --label L [--tag T | --commit ID] --mountpoint M [--log F] [--ready-fd N] [--allow-suid] [--allow-dev] [--no-verify-objects] [--note TEXT]...\n');
    process.exit(2);
  }
  const readyFd = get('--ready-fd');
  const commit = get('--commit');
  const tag = commit ? `@${commit}` : get('--tag');
  try {
    const status = await serveFn({ store, label, tag, mountpoint, log: get('--log'), allowSuid: argv.includes('--allow-suid'), allowDev: argv.includes('--allow-dev'), verifyObjects: !argv.includes('--no-verify-objects'), notes: argv.flatMap((a, i) => (a === '--note' && argv[i + 1] !== undefined ? [argv[i + 1]!] : [])), onReady: () => {
      if (readyFd !== undefined) {
        try { writeSync(Number(readyFd), `ready ${process.pid}\n`); closeSync(Number(readyFd)); } catch { /* the mount command is gone */ }
      }
    } });
    process.exit(status === 0 ? 0 : 1);
  } catch (err) {
    const msg = err instanceof StratumError ? err.message : (err as Error)?.stack ?? String(err);
    log(`error: ${msg}`);
    if (readyFd !== undefined) {
      try { writeSync(Number(readyFd), `error ${err instanceof StratumError ? err.code : 'IO'} ${msg.split('\n')[0]}\n`); } catch { /* gone */ }
    }
    process.exit(1);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void serverMain(process.argv.slice(2), serve);
}
