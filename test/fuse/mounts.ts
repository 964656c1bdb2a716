// Shared by the mount tests: stores with a label, a stratum mount served by a child process
// (the detached server `stratum mount` starts), always unmounted on every path.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMount, stopMount } from '../../src/fuse/client.js';
import { lazyUnmount, stratumMountsAt } from '../../src/fuse/server.js';
import { MountState, type MountEntry } from '../../src/store/mount-state.js';
import { makeTree, type TreeSpec } from '../helpers/trees.js';
import { type TestUser, giveTo, makeRuntimeDir } from '../helpers/user.js';

export function fuseUnavailable(): string | undefined {
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse';
  if (process.geteuid?.() !== 0) return 'mount tests need root (they mount and switch users)';
  return undefined;
}

/** Why an ordinary user cannot mount FUSE here (no fusermount3), or undefined. */
export function fusermountUnavailable(): string | undefined {
  return spawnSync('sh', ['-c', 'command -v fusermount3']).status === 0 ? undefined : 'no fusermount3';
}

/**
 * A temp dir for an ordinary user's FUSE HEAD: `mnt`, `run/` (its STRATUM_STATE under it),
 * whatever `fill` puts in it, all given to the user, and a runtime dir: the options every
 * stratumAsUser/shAsUser call of the test passes (its store is `store/` in the dir).
 */
export function userWork(user: TestUser, prefix: string, fill?: (dir: string) => void): { dir: string; mnt: string; state: string; options: { runtimeDir: string; env: { STRATUM_STORE: string; STRATUM_STATE: string } } } {
  const dir = tempDir(prefix);
  const mnt = join(dir, 'mnt');
  const state = join(dir, 'run', 'state');
  fs.mkdirSync(mnt);
  fs.mkdirSync(join(dir, 'run'));
  fill?.(dir);
  giveTo(user, dir);
  const runtimeDir = makeRuntimeDir(user, dir);
  return { dir, mnt, state, options: { runtimeDir, env: { STRATUM_STORE: join(dir, 'store'), STRATUM_STATE: state } } };
}

export function tempDir(prefix = 'stratum-mount-'): string {
  const dir = fs.mkdtempSync(join(tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

/** Ends a mount however it is: clean stop, else kill -9 and lazy unmount. */
export async function forceEnd(entry: MountEntry | undefined, mnt: string): Promise<void> {
  if (entry) {
    try {
      await stopMount({ ...entry, stale: false }, new MountState(), 10_000);
    } catch {
      try { process.kill(entry.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  if (stratumMountsAt(mnt)) lazyUnmount(mnt);
}

/** Mounts label[:tag] of `store` at `mnt` for fn; unmounts on every path. */
export async function withMount<T>(store: string, label: string, tag: string | undefined, mnt: string, fn: (e: MountEntry) => Promise<T> | T): Promise<T> {
  fs.mkdirSync(mnt, { recursive: true });
  let entry: MountEntry | undefined;
  try {
    entry = await startMount({ store, label, tag, mountpoint: mnt });
    return await fn(entry);
  } finally {
    await forceEnd(entry, mnt);
  }
}

export const NOBODY = { uid: 65534, gid: 65534 };

/** `sh -c cmd` as nobody, in dir (a mount of nobody's: without allow_other only its user gets in). */
/**
 * Runs `fn` with STRATUM_FUSE_COUNTS naming `file` (native/src/fuse.c writes its request counts
 * there; a server started inside inherits the environment), then puts the variable back.
 */
export async function withCountsFile<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.STRATUM_FUSE_COUNTS;
  process.env.STRATUM_FUSE_COUNTS = file;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.STRATUM_FUSE_COUNTS;
    else process.env.STRATUM_FUSE_COUNTS = saved;
  }
}

export function shAsNobodyIn(dir: string, cmd: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync('setpriv', [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups', 'sh', '-c', `cd '${dir}' && ${cmd}`], { encoding: 'utf8' });
}

/** After a test that mounted as another user: kills that state's servers, detaches mnt, removes dir. */
export async function endUserMounts(stateDir: string, mnt: string, dir: string): Promise<void> {
  for (const e of await new MountState(stateDir).list().catch(() => [])) {
    try { process.kill(e.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  if (stratumMountsAt(mnt)) lazyUnmount(mnt);
  // rm(1), not fs.rmSync: a tree deeper than PATH_MAX (the long-path tests) is ENAMETOOLONG to the latter
  spawnSync('rm', ['-rf', dir]);
}
const main = new URL('../../src/cli/main.js', import.meta.url).pathname;

/** Runs the `stratum` CLI as nobody (no capabilities, no groups), with `env` added. */
export function asNobody(args: string[], env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('setpriv', [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups', process.execPath, main, ...args],
    { encoding: 'utf8', env: { ...process.env, ...env, HOME: '/nonexistent' }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr + (r.error ? String(r.error) : '') + (r.signal ?? '') };
}

/** Runs a Node snippet as another user and returns its JSON output. */
export function runAs(user: { uid: number; gid: number }, body: string, args: unknown): unknown {
  const script = `const fs = require('node:fs'); const args = ${JSON.stringify(args)};
    const out = (() => { ${body} })(); process.stdout.write(JSON.stringify(out ?? null));`;
  const r = spawnSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', process.execPath, '-e', script], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`client as ${user.uid} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** A tmpfs of `size` at a new dir under `parent` for fn; unmounted on every path. */
export async function withTmpfs<T>(parent: string, size: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = join(parent, 'fs');
  fs.mkdirSync(dir);
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { encoding: 'utf8' });
  if (m.status !== 0) throw new Error(`mount tmpfs: ${m.stderr}`);
  try {
    return await fn(dir);
  } finally {
    spawnSync('umount', ['-l', dir]);
  }
}

/**
 * A label `mine` (tag v1) made by nobody from `spec` in its own store under `dir`, mounted by
 * nobody (`ref`: `mine` for HEAD, `mine:v1`) at dir/mnt; dir and everything in it belong to
 * nobody. Returns the store and the env the CLI runs with as nobody (a mount state of its own).
 */
export function mountAsNobody(dir: string, spec: TreeSpec, ref: string): { store: string; mnt: string; env: { STRATUM_STATE: string } } {
  const mnt = join(dir, 'mnt');
  const env = { STRATUM_STATE: join(dir, 'run', 'state') };
  makeTree(join(dir, 'src'), spec);
  fs.mkdirSync(mnt);
  fs.mkdirSync(join(dir, 'run'));
  spawnSync('chown', ['-R', `${NOBODY.uid}:${NOBODY.gid}`, dir]);
  const store = join(dir, 'store');
  for (const args of [['import', join(dir, 'src'), '--label', 'mine', '--tag', 'v1'], ['mount', ref, mnt]]) {
    const r = asNobody(['--store', store, ...args], env);
    if (r.status !== 0) throw new Error(`stratum ${args[0]} as nobody: ${r.stderr}`);
  }
  return { store, mnt, env };
}
