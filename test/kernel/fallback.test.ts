import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { lazyUnmount, stratumMountsAt } from '../../src/fuse/server.js';
import { MountState } from '../../src/store/mount-state.js';
import { NOBODY, asNobody, fuseUnavailable, tempDir, fusermountUnavailable } from '../fuse/mounts.js';

// Without privileges there is no kernel mode (issue #8): an unprivileged user's `stratum mount`
// (--mode auto) is a FUSE mount, and `--mode kernel` fails at once with one line saying why and
// what to use instead, leaving nothing mounted or made. The store, the state dir and the
// mountpoints belong to nobody, who runs every command.
const why = fuseUnavailable() ?? fusermountUnavailable();
const userTest = why === undefined ? test : test.skip;
if (why) console.log(`kernel-mode fallback test skipped: ${why}`);

/** Every path under dir with its type and size: what "nothing was made or changed" is checked on. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const visit = (d: string): void => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = join(d, name);
      const st = fs.lstatSync(p);
      out.push(`${p} ${(st.mode >> 12).toString(8)} ${st.isDirectory() ? '' : st.size}`);
      if (st.isDirectory()) visit(p);
    }
  };
  visit(dir);
  return out;
}

/** The fstype /proc/self/mountinfo gives for the mount at `mnt`, if any. */
function fstypeAt(mnt: string): string | undefined {
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash > 0 && f[4] === mnt) return f[dash + 1];
  }
  return undefined;
}

/** Mount table lines that mention anything under `dir` (the machine's other mounts are not ours to count). */
const mountsUnder = (dir: string): string[] => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dir));

userTest('unprivileged: `mount` (auto) is a FUSE mount; `--mode kernel` fails with one PERMISSION line and makes nothing', async () => {
  const dir = tempDir('stratum-kfallback-');
  const mnt = join(dir, 'mnt');
  const kmnt = join(dir, 'kmnt');
  const env = { STRATUM_STATE: join(dir, 'run', 'state') };
  const store = join(dir, 'store');
  try {
    fs.mkdirSync(join(dir, 'src'));
    fs.writeFileSync(join(dir, 'src/hello'), 'hello\n');
    fs.mkdirSync(mnt);
    fs.mkdirSync(join(dir, 'run'));
    spawnSync('chown', ['-R', `${NOBODY.uid}:${NOBODY.gid}`, dir]);
    let r = asNobody(['--store', store, 'import', join(dir, 'src'), '--label', 'app', '--tag', 'v1'], env);
    assert.is(r.status, 0, r.stderr);

    // --mode kernel: refused before anything is opened, claimed or made
    const before = snapshot(dir);
    for (const target of ['app', 'app:v1']) {
      r = asNobody(['--store', store, 'mount', target, kmnt, '--mode', 'kernel'], env);
      assert.is(r.status, 1, r.stderr);
      assert.is(r.stdout, '');
      assert.is(r.stderr, 'stratum: --mode kernel needs root (CAP_SYS_ADMIN); use --mode fuse\n', 'one line, no stack trace');
    }
    assert.equal(snapshot(dir), before, 'no mountpoint, state entry or store file was made');
    assert.equal(mountsUnder(dir), [], 'nothing was mounted');

    // no --mode: a FUSE mount, and status says so
    r = asNobody(['--store', store, 'mount', 'app', mnt], env);
    assert.is(r.status, 0, r.stderr);
    assert.is(fstypeAt(mnt), 'fuse.stratum');
    // without allow_other only the mounting user gets through a FUSE mount
    const cat = spawnSync('setpriv', [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups', 'cat', join(mnt, 'hello')], { encoding: 'utf8' });
    assert.is(cat.stdout, 'hello\n', cat.stderr);
    r = asNobody(['--store', store, '--json', 'status'], env);
    assert.is(r.status, 0, r.stderr);
    const mounts = (JSON.parse(r.stdout) as { mounts: Array<{ label: string; ref: string; mountpoint: string; mode: string; stale: boolean }> }).mounts;
    assert.equal(mounts.map((m) => ({ label: m.label, ref: m.ref, mountpoint: m.mountpoint, mode: m.mode, stale: m.stale })), [{ label: 'app', ref: 'HEAD', mountpoint: mnt, mode: 'fuse', stale: false }]);

    r = asNobody(['--store', store, 'unmount', 'app'], env);
    assert.is(r.status, 0, r.stderr);
    assert.is(fstypeAt(mnt), undefined);
  } finally {
    for (const e of await new MountState(env.STRATUM_STATE).list().catch(() => [])) {
      if (e.pid > 0) try { process.kill(e.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    for (const m of [mnt, kmnt]) if (stratumMountsAt(m)) lazyUnmount(m);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
