// Talking to a running mount: find it in the mount state, start one, end one, and commit through
// its control file. Used by the CLI (mount, unmount, commit on a mounted label) and the tests.
//
// Public surface: startMount, StartOptions, stopMount, mountedAt, findMounts, mountedHead, commitThroughMount, applyThroughMount,
// defaultMountpoint, logPath, detachDeadMount, stratumMountsAt, lazyUnmount.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, promises as fsp, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { type ErrorCode, StratumError, codeOfErrno } from '../store/error.js';
import { MountState, kernelMountedAt, processAlive, type MountEntry } from '../store/mount-state.js';
import { MNT_DETACH, umount2 } from '../native/mount.js';
import { ensureRuntimeDir, runtimeDir } from '../store/runtime-dir.js';

const serverScripts = { fuse: new URL('../fuse/server.js', import.meta.url).pathname, kernel: new URL('../kernel/server.js', import.meta.url).pathname };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const shortHash = (...parts: string[]): string => createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 12);

/**
 * `<runtime dir>/mnt/<label>` (HEAD) or `.../mnt/<label>:<tag>`, the runtime dir made and checked
 * (runtime-dir.ts); a name too long for one path component keeps a prefix and a hash.
 */
export function defaultMountpoint(label: string, tag: string | undefined): string {
  const name = tag === undefined ? label : `${label}:${tag}`;
  return join(ensureRuntimeDir(), 'mnt', name.length <= 200 ? name : `${name.slice(0, 180)}-${shortHash(name)}`);
}

/** A mount's log beside the state file: readable label, then a hash of store, label and tag (names stay short). */
export function logPath(stateFile: string, store: string, label: string, tag: string | undefined): string {
  return join(dirname(stateFile), 'logs', `${label.slice(0, 40)}-${shortHash(resolve(store), label, tag ?? '')}.log`);
}

export interface StartOptions {
  store: string;
  label: string;
  /** a tag, or `@<id>`; undefined = HEAD */
  tag?: string | undefined;
  mountpoint: string;
  state?: MountState;
  /** ms to wait for the server to answer */
  timeout?: number;
  /** FUSE serves everything (default); kernel: the kernel serves, the server owns the overlay. */
  mode?: 'fuse' | 'kernel';
  /** Honour setuid bits / device files (root only; the server refuses them for others). */
  allowSuid?: boolean | undefined;
  allowDev?: boolean | undefined;
  /** false: the FUSE server does not check objects on first open (benchmark baselines). */
  verifyObjects?: boolean | undefined;
  /** Given to the server for status (why this mode). */
  notes?: string[] | undefined;
}

/** Whether the mount an entry describes is in this namespace's mount table. */
export function mountedAt(entry: Pick<MountEntry, 'mode' | 'mountpoint'>): boolean {
  return entry.mode === 'kernel' ? kernelMountedAt(entry.mountpoint) : stratumMountsAt(entry.mountpoint);
}

/** Detaches a mount whose server is gone (FUSE answers ENOTCONN; a kernel overlay would go on). */
function detach(entry: Pick<MountEntry, 'mode' | 'mountpoint'>): void {
  if (entry.mode !== 'kernel') { lazyUnmount(entry.mountpoint); return; }
  for (let i = 0; i < 4 && kernelMountedAt(entry.mountpoint); i++) {
    try { umount2(entry.mountpoint, MNT_DETACH); } catch { return; }
  }
}

/** Starts a detached server, waits until the mount answers; returns its state entry. */
export async function startMount(o: StartOptions): Promise<MountEntry> {
  const state = o.state ?? new MountState();
  const mountpoint = resolve(o.mountpoint);
  const log = logPath(state.path, o.store, o.label, o.tag);
  if (dirname(state.path) === runtimeDir()) ensureRuntimeDir();  // made and checked before a log goes in it
  mkdirSync(dirname(log), { recursive: true, mode: 0o700 });
  // the label's dead mounts go first, wherever they are, so none stays attached answering ENOTCONN
  for (const e of await state.list()) if (e.stale && e.store === resolve(o.store) && e.label === o.label) await stopMount(e, state);
  const logFd = openSync(log, 'a', 0o600);
  const mode = o.mode ?? 'fuse';
  const args = [serverScripts[mode], '--store', resolve(o.store), '--label', o.label, '--mountpoint', mountpoint, '--log', log, '--ready-fd', '3'];
  if (o.allowSuid) args.push('--allow-suid');
  if (o.allowDev) args.push('--allow-dev');
  for (const n of o.notes ?? []) args.push('--note', n);
  if (o.verifyObjects === false) args.push('--no-verify-objects');
  if (o.tag !== undefined) args.push(...(o.tag.startsWith('@') ? ['--commit', o.tag.slice(1)] : ['--tag', o.tag]));
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', logFd, logFd, 'pipe'], env: { ...process.env, STRATUM_STATE: state.path } });
  closeSync(logFd);
  const pipe = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  let text = '';
  const answer = await new Promise<string>((resolveP) => {
    const timer = setTimeout(() => resolveP('timeout'), o.timeout ?? 30_000);
    pipe.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('\n')) { clearTimeout(timer); resolveP(text.split('\n')[0]!); }
    });
    child.on('exit', (code) => { clearTimeout(timer); resolveP(text.split('\n')[0] || `exit ${code}`); });
  });
  pipe.destroy();
  if (!answer.startsWith('ready')) {
    if (child.exitCode === null) child.kill('SIGKILL');
    const m = /^error ([A-Z_]+) (.*)$/.exec(answer);
    throw m ? new StratumError(m[1] as ErrorCode, m[2]!) : new StratumError('IO', `the server did not start (${answer}); see ${log}`);
  }
  child.unref();
  // the mount answers: a stat through it comes back (from this process, never the server's)
  for (let i = 0; ; i++) {
    try {
      await fsp.stat(mountpoint);
      if (mountedAt({ mode, mountpoint })) break;
    } catch { /* not yet */ }
    if (i > 300) throw new StratumError('IO', `the mount at ${mountpoint} does not answer; see ${log}`);
    await sleep(10);
  }
  return (await state.list()).find((e) => e.mountpoint === mountpoint && e.pid === child.pid) ?? {
    store: resolve(o.store), label: o.label, ref: o.tag ?? 'HEAD', commit: '', mountpoint, pid: child.pid!, mode, started: new Date().toISOString(), log,
  };
}

/**
 * Detaches a dead stratum FUSE mount at a path the state no longer knows (its entry was dropped,
 * or another state file had it): true if there was one. A live one is left alone.
 */
export async function detachDeadMount(path: string): Promise<boolean> {
  const mountpoint = resolve(path);
  if (!stratumMountsAt(mountpoint)) return false;
  const dead = await fsp.stat(mountpoint).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ENOTCONN');
  if (!dead) throw new StratumError('BUSY', `${mountpoint} is a live stratum mount of another store or mount state; unmount it with the --store (and environment) that mounted it`);
  lazyUnmount(mountpoint);
  if (stratumMountsAt(mountpoint)) throw new StratumError('PERMISSION', `could not detach the dead mount at ${mountpoint}; try \`fusermount3 -u -z ${mountpoint}\``);
  return true;
}

/** Mount entries of a store matching `label[:tag]` or a mountpoint, live and stale. */
export async function findMounts(storeRoot: string, what: string, state = new MountState()): Promise<Array<MountEntry & { stale: boolean }>> {
  const all = (await state.list()).filter((e) => e.store === resolve(storeRoot));
  const byPath = all.filter((e) => e.mountpoint === resolve(what));
  if (byPath.length > 0) return byPath;
  const colon = what.indexOf(':');
  const label = colon < 0 ? what : what.slice(0, colon);
  const ref = colon < 0 ? 'HEAD' : what.slice(colon + 1);
  return all.filter((e) => e.label === label && e.ref === ref);
}

/**
 * Ends a mount: SIGTERM to a live server (it syncs the upper and unmounts lazily), lazy unmount of
 * a stale one. Returns once the mountpoint is detached; a server with files still open through
 * the detached mount exits when the last one closes ('draining').
 */
export async function stopMount(entry: MountEntry & { stale: boolean }, state = new MountState(), timeoutMs = 20_000): Promise<'stopped' | 'draining' | 'stale'> {
  const alive = (): boolean => processAlive(entry.pid);
  let outcome: 'stopped' | 'draining' | 'stale' = 'stale';
  if (!entry.stale) {
    try { process.kill(entry.pid, 'SIGTERM'); } catch { /* gone meanwhile */ }
    for (let waited = 0; ; waited += 20) {
      if (!mountedAt(entry)) break;
      if (waited > timeoutMs) throw new StratumError('BUSY', `the server of ${entry.mountpoint} (pid ${entry.pid}) did not unmount; see ${entry.log ?? 'its log'}`);
      await sleep(20);
    }
    outcome = 'draining';
    for (let waited = 0; waited < 2000; waited += 20) {
      if (!alive()) { outcome = 'stopped'; break; }
      await sleep(20);
    }
    // a kernel server exits at once; its last word says whether the overlay was busy
    if (outcome === 'stopped' && entry.mode === 'kernel' && entry.log && (await lastUnmount(entry.log, entry)) === 'draining') outcome = 'draining';
  } else if (mountedAt(entry)) detach(entry);
  if (outcome !== 'draining') await state.update((entries) => entries.filter((e) => !(e.mountpoint === entry.mountpoint && e.pid === entry.pid)));
  return outcome;
}

/** How this kernel server left its overlay, by its last words ('unmounted <mnt> by pid <pid> (stopped|draining)'). */
async function lastUnmount(log: string, entry: MountEntry): Promise<string | undefined> {
  const text = await fsp.readFile(log, 'utf8').catch(() => '');
  const said = ` unmounted ${entry.mountpoint} by pid ${entry.pid} (`;
  const at = text.lastIndexOf(said);
  return at < 0 ? undefined : text.slice(at + said.length).split(')')[0];
}

/** The live HEAD mount of a label, if any. */
export async function mountedHead(storeRoot: string, label: string, state = new MountState()): Promise<MountEntry | undefined> {
  return (await state.live(storeRoot, label)).find((e) => e.ref === 'HEAD');
}

/** The code of a control-file write's errno, as the store would have said it in-process. */
function controlErrorCode(errno: string | undefined): ErrorCode {
  return errno === 'ENOENT' ? 'NOT_FOUND' : errno === 'EBUSY' ? 'BUSY' : codeOfErrno(errno);
}

/** Commits a mounted HEAD through `/.stratum/commit`; returns `label:tag id` as the mount reports it. */
export async function commitThroughMount(entry: MountEntry, tag: string | undefined): Promise<{ tag: string; id: string }> {
  const file = join(entry.mountpoint, '.stratum', 'commit');
  const handle = await fsp.open(file, 'r+');
  try {
    try {
      await handle.write(`${tag ?? ''}\n`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const last = (await fsp.readFile(file, 'utf8').catch(() => '')).replace(/^error: /, '').trim();
      if (code === 'EEXIST') throw new StratumError('TAG_EXISTS', last || `tag ${entry.label}:${tag} exists; choose another tag (nothing was committed)`);
      if (code === 'EINVAL') throw new StratumError('BAD_NAME', last || `bad tag name ${JSON.stringify(tag)}`);
      throw new StratumError(controlErrorCode(code), `commit through ${entry.mountpoint} failed: ${last || code}`);
    }
  } finally {
    await handle.close();
  }
  const text = (await fsp.readFile(file, 'utf8')).trim();
  const m = /^[^:\s]+:(\S+) ([0-9a-f]{64})$/.exec(text);
  if (!m) throw new StratumError('IO', `unexpected answer from ${file}: ${text}`);
  return { tag: m[1]!, id: m[2]! };
}



/** Moves a mounted HEAD onto `ref` through `/.stratum/apply`; the live view switches. */
export async function applyThroughMount(entry: MountEntry, ref: string, options: { discard?: boolean; keep?: boolean } = {}): Promise<{ to: string; changesWere: string }> {
  const file = join(entry.mountpoint, '.stratum', 'apply');
  const handle = await fsp.open(file, 'r+');
  try {
    await handle.write(`${ref}${options.discard ? ' --discard' : ''}${options.keep ? ' --keep' : ''}\n`);
  } catch (err) {
    const last = (await fsp.readFile(file, 'utf8').catch(() => '')).replace(/^error: /, '').trim();
    const code = (err as NodeJS.ErrnoException).code;
    throw new StratumError(code === 'EINVAL' ? 'USAGE' : controlErrorCode(code), last || `apply through ${entry.mountpoint} failed: ${code}`);
  } finally {
    await handle.close();
  }
  const [, to, changesWere] = (await fsp.readFile(file, 'utf8')).trim().split(' ');
  return { to: to!, changesWere: changesWere! };
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
