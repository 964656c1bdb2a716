// Shared by the FUSE binding tests: a passthrough server in a child process over fresh temp dirs,
// always unmounted and cleaned up, and a way to run client code as another user.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnPassthrough, type PassthroughServer } from '../../examples/passthrough.js';

export const NOBODY = { uid: 65534, gid: 65534 };

/** Why FUSE tests cannot run here, or undefined. */
export function fuseUnavailable(): string | undefined {
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse';
  if (process.geteuid?.() !== 0) return 'tests need root (they mount and switch users)';
  return undefined;
}

export function isMounted(mnt: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms); });
  try { return await Promise.race([p, timeout]); } finally { clearTimeout(t); }
}

export interface Mounted { dir: string; back: string; mnt: string; server: PassthroughServer }

/** Run fn against a passthrough of a fresh backing dir; unmount, kill and clean up on every path. */
export async function withPassthrough(fn: (m: Mounted) => Promise<void> | void,
  opts: { args?: string[]; asUser?: { uid: number; gid: number }; backMode?: number } = {}): Promise<void> {
  const dir = fs.mkdtempSync(join(tmpdir(), 'stratum-fuse-'));
  const back = join(dir, 'back'), mnt = join(dir, 'mnt');
  fs.mkdirSync(back);
  fs.mkdirSync(mnt);
  fs.chmodSync(dir, 0o755);
  if (opts.backMode !== undefined) fs.chmodSync(back, opts.backMode);
  if (opts.asUser) {
    fs.chownSync(back, opts.asUser.uid, opts.asUser.gid);
    fs.chownSync(mnt, opts.asUser.uid, opts.asUser.gid);
  }
  let server: PassthroughServer | undefined;
  let badExit: string | undefined;
  try {
    server = await within(spawnPassthrough(back, mnt, opts.args ?? [], opts.asUser), 10_000, 'server start');
    await fn({ dir, back, mnt, server });
  } finally {
    if (server) {
      const s = server;
      const wasRunning = s.child.exitCode === null && s.child.signalCode === null;
      const code = await Promise.race([s.stop(), sleep(5000).then(() => 'timeout')]);
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
      await s.exited;
      // every test also checks that the server unmounts and exits cleanly
      if (wasRunning && code !== 0) badExit = `server did not exit 0 on SIGTERM (${code}): ${s.output()}`;
    }
    if (isMounted(mnt)) spawnSync('umount', ['-l', mnt]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (badExit) throw new Error(badExit);
}

/** Run a Node script as another user; it gets `fs` and `args` and returns JSON-able data. */
export function runAs(user: { uid: number; gid: number }, body: string, args: unknown): unknown {
  const script = `const fs = require('node:fs'); const args = ${JSON.stringify(args)};
    const out = (() => { ${body} })(); process.stdout.write(JSON.stringify(out ?? null));`;
  const r = spawnSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', process.execPath, '-e', script],
    { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`client as ${user.uid} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}
