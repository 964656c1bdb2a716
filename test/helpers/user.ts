// An ordinary user for tests, made with useradd as an administrator would, and the installed
// `stratum` run as that user with the environment a login gives (optionally no XDG_RUNTIME_DIR,
// as under `su -l`, runuser, cron or containers).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** The entry point `scripts/setup` links onto PATH (dist/src/cli/main.js, run by its shebang). */
export const STRATUM_BIN = new URL('../../src/cli/main.js', import.meta.url).pathname;

const NAME = 'stratum-tester';

/** Creates the test user once per machine (useradd; safe when several test runs race). */
export function testUser(): TestUser {
  const made = spawnSync('flock', ['/tmp/.stratum-useradd.lock', 'sh', '-c',
    `id -u ${NAME} >/dev/null 2>&1 || useradd --create-home --shell /bin/sh ${NAME}`], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`useradd ${NAME} failed: ${made.stderr}`);
  const entry = spawnSync('getent', ['passwd', NAME], { encoding: 'utf8' }).stdout.trim().split(':');
  return { name: NAME, uid: Number(entry[2]), gid: Number(entry[3]), home: entry[5] ?? `/home/${NAME}` };
}

/** Why tests as an ordinary user cannot run here, if they cannot. */
export function userTestsUnavailable(): string | undefined {
  if (process.geteuid?.() !== 0) return 'creating a user needs root';
  if (spawnSync('sh', ['-c', 'command -v useradd && command -v setpriv']).status !== 0) return 'no useradd or setpriv';
  return undefined;
}

/** A 0700 runtime dir owned by the user, as pam_systemd makes /run/user/<uid>; removed by the caller. */
export function makeRuntimeDir(user: TestUser, parent: string): string {
  const dir = join(parent, `runtime-${user.uid}`);
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.chownSync(dir, user.uid, user.gid);
  return dir;
}

/** Gives a path (and everything below it) to the user. */
export function giveTo(user: TestUser, path: string): void {
  spawnSync('chown', ['-R', `${user.uid}:${user.gid}`, path]);
}

export interface UserRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface UserRunOptions {
  /** Set XDG_RUNTIME_DIR (absent: the variable is not set at all). */
  runtimeDir?: string;
  /** More variables (STRATUM_STORE, ...). */
  env?: Record<string, string>;
  cwd?: string;
  input?: string;
  timeoutMs?: number;
}

/** The login environment of the user: nothing of the test runner's leaks in (not STRATUM_STATE). */
export function loginEnv(user: TestUser, options: UserRunOptions = {}): Record<string, string> {
  const env: Record<string, string> = {
    HOME: user.home, USER: user.name, LOGNAME: user.name, SHELL: '/bin/sh',
    PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8',
  };
  if (options.runtimeDir) env.XDG_RUNTIME_DIR = options.runtimeDir;
  return { ...env, ...options.env };
}

/** Runs a shell command line as the user (for `cd mnt && echo v2 > .stratum/commit`). */
export function shAsUser(user: TestUser, command: string, options: UserRunOptions = {}): UserRun {
  const r = spawnSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', 'sh', '-c', command],
    { encoding: 'utf8', env: loginEnv(user, options), cwd: options.cwd ?? '/', input: options.input, timeout: options.timeoutMs ?? 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr + (r.error ? String(r.error) : '') + (r.signal ? ` (${r.signal})` : '') };
}

/** Runs the installed `stratum` entry point as the user. */
export function stratumAsUser(user: TestUser, args: string[], options: UserRunOptions = {}): UserRun {
  const r = spawnSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', STRATUM_BIN, ...args],
    { encoding: 'utf8', env: loginEnv(user, options), cwd: options.cwd ?? '/', input: options.input, timeout: options.timeoutMs ?? 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr + (r.error ? String(r.error) : '') + (r.signal ? ` (${r.signal})` : '') };
}
