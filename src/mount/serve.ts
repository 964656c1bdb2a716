// What the two mount servers (FUSE: src/fuse/server.ts; kernel: src/kernel/server.ts) share:
// their command line and readiness protocol (serverMain), the options they take (ServeOptions)
// and the rule for --allow-suid/--allow-dev, the text of `/.stratum/status`, and recording a
// mount's new commit in the mount state. docs/mount.md describes the surface.
//
// Mounts are nosuid,nodev: a setuid file or a device node in a commit is inert unless root asked
// for it (`--allow-suid`, `--allow-dev`; others get PERMISSION, checkMountFlags).
//
// Readiness: once mounted and recorded, "ready <pid>\n" is written to the ready fd (the mount
// command waits for it, then checks the mount answers); a failure writes "error <CODE> <message>".
//
// Public surface: ServeOptions, MadeDirs, checkMountFlags, makeMountpoint, mountStatus, recordCommit, serverMain, log.
import { closeSync, lstatSync, mkdirSync, readdirSync, rmdirSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { StratumError } from '../store/error.js';
import type { MountState } from '../store/mount-state.js';
import type { MountTarget } from '../store/mount-target.js';
import { isOverlayWhiteout } from '../store/upper.js';

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

/** Records in the mount state that the mount this process serves at `mountpoint` is on `id` now. */
export async function recordCommit(state: MountState, mountpoint: string, id: string): Promise<void> {
  await state.update((entries) => entries.map((e) => (e.mountpoint === mountpoint && e.pid === process.pid ? { ...e, commit: id } : e)));
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

/** The dirs a server made for its mountpoint, outermost first; `remove` takes them away again. */
export interface MadeDirs {
  made: string[];
  /** Removes the made dirs innermost first, as far as each is empty (a dir in use or with entries stays, and so do its parents). */
  remove(): void;
}

/**
 * Makes a missing mountpoint and its missing parents, one mkdir each, so the server can remove
 * exactly those again when it ends (as `mount --mkdir` would leave them, a user would find empty
 * dirs behind). Not mkdirSync's recursive mode: under /proc it retries ENOENT forever, so a server
 * asked for `/proc/x/y` never answered.
 */
export function makeMountpoint(path: string): MadeDirs {
  const missing: string[] = [];
  const absent = (p: string): boolean => {
    try { return lstatSync(p, { throwIfNoEntry: false }) === undefined; } catch { return false; }
  };
  for (let p = path; absent(p) && p !== dirname(p); p = dirname(p)) missing.unshift(p);
  const made: string[] = [];
  const remove = (): void => {
    for (const p of [...made].reverse()) {
      try { rmdirSync(p); } catch { return; }
    }
  };
  for (const p of missing) {
    try {
      mkdirSync(p);
      made.push(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue;
      remove();
      throw new StratumError(code === 'EACCES' || code === 'EPERM' ? 'PERMISSION' : 'BAD_PATH', `cannot create the mountpoint ${path}: mkdir ${p}: ${code}`);
    }
  }
  return { made, remove };
}

/** One line of the server's log (its stderr, which `stratum mount` points at the log file). */
export function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
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
    // libfuse prints its reason to our stderr (the log); the user gets one line naming the log
    const line = (err as { code?: unknown })?.code === 'EMOUNT'
      ? `cannot mount at ${mountpoint}: the FUSE mount was refused (libfuse's reason is in ${get('--log') ?? 'stderr'})` : msg.split('\n')[0];
    if (readyFd !== undefined) {
      try { writeSync(Number(readyFd), `error ${err instanceof StratumError ? err.code : 'IO'} ${line}\n`); } catch { /* gone */ }
    }
    process.exit(1);
  }
}
