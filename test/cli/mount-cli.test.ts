// Mounts as the `stratum` command manages them (issue 13 items 4, 6, 9; issue 12 item 12): dead
// mounts are detached by the next mount of the label and by `unmount <mountpoint>`, status says
// so, `apply ref <mountpoint>` means that mount, and long names or a file as mountpoint are no
// internal errors. Run through the installed entry point, in FUSE mode (a server we can kill).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lazyUnmount, stratumMountsAt } from '../../src/fuse/server.js';
import { MountState } from '../../src/store/mount-state.js';
import { STRATUM_BIN, giveTo, makeRuntimeDir, stratumAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';
import { fuseUnavailable } from '../fuse/mounts.js';

const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`mount CLI tests skipped: ${why}`);

function cli(args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(STRATUM_BIN, args, { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const notConnected = (path: string): boolean => {
  try { fs.statSync(path); return false; } catch (err) { return (err as NodeJS.ErrnoException).code === 'ENOTCONN'; }
};

async function withStore(fn: (dir: string, s: string[]) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync('/tmp/stratum-mountcli-');
  const store = join(dir, 'store');
  try {
    fs.mkdirSync(join(dir, 'src'));
    fs.writeFileSync(join(dir, 'src/conf'), 'v1\n');
    await fn(dir, ['--store', store]);
  } finally {
    for (const state of [process.env.STRATUM_STATE!, join(dir, 'other-state')]) {
      for (const e of (await new MountState(state).list().catch(() => [])).filter((x) => x.store === store)) {
        try { process.kill(e.pid, 'SIGKILL'); } catch { /* gone */ }
        if (stratumMountsAt(e.mountpoint)) lazyUnmount(e.mountpoint);
        await new MountState(state).remove(e.mountpoint);
      }
    }
    for (const m of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(dir))) lazyUnmount(m);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

mountTest('a dead mount: status says how to clear it, a new mount of the label detaches it wherever it is, unmount <path> clears one the state forgot', () =>
  withStore(async (dir, s) => {
    const label = `stale${process.pid}`;
    assert.is(cli(['import', join(dir, 'src'), '--label', label, ...s]).status, 0);
    const first = join(dir, 'first');
    let r = cli(['mount', label, first, '--mode', 'fuse', ...s]);
    assert.is(r.status, 0, r.stderr);
    const entry = (await new MountState().list()).find((e) => e.mountpoint === first)!;
    process.kill(entry.pid, 'SIGKILL');
    for (let i = 0; i < 100 && !notConnected(first); i++) await new Promise((res) => setTimeout(res, 20));
    assert.ok(notConnected(first), 'the dead mount answers ENOTCONN');
    r = cli(['status', label, ...s]);
    assert.match(r.stdout, new RegExp(`at ${first}: STALE \\(server ${entry.pid} is gone; \`stratum unmount ${first}\` detaches it, \`stratum mount ${label} ${first}\` mounts it there again\\)`));

    // mounting the label elsewhere (the default mountpoint) detaches the dead one first
    r = cli(['mount', label, '--mode', 'fuse', ...s]);
    assert.is(r.status, 0, r.stderr);
    const second = r.stdout.trim();
    try {
      assert.is(second, join('/run/stratum/mnt', label), 'root\'s default mountpoint is in /run/stratum');
      assert.not.ok(stratumMountsAt(first), 'the dead mount is gone');
      assert.not.match(cli(['status', label, ...s]).stdout, /STALE/);
      assert.is(fs.readFileSync(join(second, 'conf'), 'utf8'), 'v1\n');

      // killed again, and its entry lost (another state file): unmount <path> still clears it
      const live = (await new MountState().list()).find((e) => e.mountpoint === second)!;
      process.kill(live.pid, 'SIGKILL');
      for (let i = 0; i < 100 && !notConnected(second); i++) await new Promise((res) => setTimeout(res, 20));
      const other = { STRATUM_STATE: join(dir, 'other-state') };
      r = cli(['unmount', label, ...s], other);
      assert.is(r.status, 1, 'by label the other state knows nothing');
      assert.match(r.stderr, /nothing of this store is mounted as/);
      r = cli(['unmount', second, ...s], other);
      assert.is(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^unmounted ${second}\\n$`));
      assert.not.ok(stratumMountsAt(second));
      // following status's advice for the stale entry the first state still has
      r = cli(['unmount', second, ...s]);
      assert.is(r.status, 0, r.stderr);
      assert.is((await new MountState().list()).filter((e) => e.label === label).length, 0, 'no entry left');
    } finally {
      if (stratumMountsAt(second)) cli(['unmount', second, ...s]);
      try { fs.rmdirSync(second); } catch { /* gone already */ } // its server died before it could remove it
    }
  }));

mountTest('apply label:tag <mountpoint>: mounts there when HEAD is not mounted, applies live when it is mounted there, refuses another path', () =>
  withStore(async (dir, s) => {
    assert.is(cli(['import', join(dir, 'src'), '--label', 'app', '--tag', 'v1', ...s]).status, 0);
    fs.writeFileSync(join(dir, 'src/conf'), 'v2\n');
    assert.is(cli(['import', join(dir, 'src'), '--label', 'app', '--tag', 'v2', ...s]).status, 0);
    const mnt = join(dir, 'mnt');
    let r = cli(['apply', 'app:v2', mnt, '--mode', 'fuse', ...s]);
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^app: HEAD on [0-9a-f]{12}, mounted at ${mnt}\\n$`));
    assert.is(fs.readFileSync(join(mnt, 'conf'), 'utf8'), 'v2\n');
    r = cli(['apply', 'app:v1', mnt, ...s]);
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`\\(live at ${mnt}\\)`));
    assert.is(fs.readFileSync(join(mnt, 'conf'), 'utf8'), 'v1\n', 'the mount switched');
    r = cli(['apply', 'app:v2', join(dir, 'elsewhere'), ...s]);
    assert.is(r.status, 1);
    assert.match(r.stderr, new RegExp(`^stratum: HEAD of app is mounted at ${mnt}, not at ${join(dir, 'elsewhere')}; `));
    assert.is(fs.readFileSync(join(mnt, 'conf'), 'utf8'), 'v1\n', 'nothing moved');
    assert.is(cli(['unmount', 'app', ...s]).status, 0);
    fs.writeFileSync(join(dir, 'file'), 'x');
    r = cli(['apply', 'app:v2', join(dir, 'file'), ...s]);
    assert.is(r.status, 2);
    assert.match(r.stderr, /is a file, not a directory; mount onto a directory/);
    assert.match(cli(['status', 'app', ...s]).stdout, /HEAD on/, 'HEAD is still there');
  }));

(why === undefined && userTestsUnavailable() === undefined ? test : test.skip)('an ordinary user mounting where it cannot create the mountpoint gets one line naming the dir, nothing mounted; a dir not its own or / gets one line too', () => {
  const user = testUser();
  const dir = fs.mkdtempSync('/tmp/stratum-mountcli-user-');
  fs.chmodSync(dir, 0o755);
  try {
    fs.mkdirSync(join(dir, 'src'));
    fs.writeFileSync(join(dir, 'src', 'conf'), 'v1\n');
    giveTo(user, dir);
    const env = { STRATUM_STORE: join(dir, 'store') };
    const runtimeDir = makeRuntimeDir(user, dir);
    assert.is(stratumAsUser(user, ['import', join(dir, 'src'), '--label', 'app', '--tag', 'v1'], { env, runtimeDir }).status, 0);
    const target = `/etc/stratum-no-such-dir-${process.pid}/mnt`;
    const r = stratumAsUser(user, ['mount', 'app:v1', target, '--mode', 'fuse'], { env, runtimeDir });
    assert.is(r.status, 1, r.stderr);
    assert.is(r.stderr, `stratum: cannot create the mountpoint ${target}: /etc is not writable for you; mount onto a directory of yours\n`);
    assert.not.ok(fs.existsSync(target));
    // a dir that is not the user's: libfuse refuses; one line naming the log, not libfuse's raw error
    const theirs = fs.mkdtempSync('/tmp/stratum-mountcli-root-');
    try {
      const refused = stratumAsUser(user, ['mount', 'app:v1', theirs, '--mode', 'fuse'], { env, runtimeDir });
      assert.is(refused.status, 1, refused.stderr);
      assert.match(refused.stderr, new RegExp(`^stratum: cannot mount at ${theirs}: the FUSE mount was refused \\(libfuse's reason is in \\S+\\.log\\)\\n$`));
      assert.is(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(theirs), false);
    } finally {
      fs.rmdirSync(theirs);
    }
    const overRoot = stratumAsUser(user, ['mount', 'app:v1', '/'], { env, runtimeDir });
    assert.is(overRoot.status, 2, overRoot.stderr);
    assert.is(overRoot.stderr, 'stratum: refusing to mount over /: it would hide the whole system; mount onto a directory\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

mountTest('mounting onto a file is one line naming it; a 128-character label with a 128-character tag mounts (short log names)', () =>
  withStore(async (dir, s) => {
    const label = `L${'a'.repeat(127)}`;
    const tag = `T${'b'.repeat(127)}`;
    assert.is(cli(['import', join(dir, 'src'), '--label', label, '--tag', tag, ...s]).status, 0);
    fs.writeFileSync(join(dir, 'file'), 'x');
    for (const target of [join(dir, 'file'), join(dir, 'file', 'below')]) {
      const r = cli(['mount', label, target, '--mode', 'fuse', ...s]);
      assert.is(r.status, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^stratum: ${target}(: a part of this path is a file| is a file, not a directory); mount onto a directory \\(it is created if absent\\)\\n$`));
    }
    // a mountpoint no mkdir can make (under /proc): one line at once, in either mode (it hung 30 s)
    for (const mode of ['fuse', 'auto']) {
      const r = cli(['mount', label, '/proc/stratum-none/mnt', '--mode', mode, ...s]);
      assert.is(r.status, 2, r.stderr);
      assert.is(r.stderr, 'stratum: cannot create the mountpoint /proc/stratum-none/mnt: mkdir /proc/stratum-none: ENOENT\n');
    }
    const r = cli(['mount', `${label}:${tag}`, '--mode', 'fuse', ...s]);
    assert.is(r.status, 0, r.stderr);
    const mnt = r.stdout.trim();
    try {
      assert.is(fs.readFileSync(join(mnt, 'conf'), 'utf8'), 'v1\n');
      const entry = (await new MountState().list()).find((e) => e.mountpoint === mnt)!;
      assert.ok(entry.log!.split('/').pop()!.length < 64, `a short log name: ${entry.log}`);
      assert.ok(fs.existsSync(entry.log!));
      // the same label and tag from another store logs elsewhere
      const s2 = ['--store', join(dir, 'store2')];
      assert.is(cli(['import', join(dir, 'src'), '--label', label, '--tag', tag, ...s2]).status, 0);
      const r2 = cli(['mount', `${label}:${tag}`, join(dir, 'mnt2'), '--mode', 'fuse', ...s2]);
      assert.is(r2.status, 0, r2.stderr);
      try {
        const entry2 = (await new MountState().list()).find((e) => e.mountpoint === join(dir, 'mnt2'))!;
        assert.is.not(entry2.log, entry.log, 'logs are per store');
      } finally {
        assert.is(cli(['unmount', join(dir, 'mnt2'), ...s2]).status, 0);
      }
    } finally {
      assert.is(cli(['unmount', mnt, ...s]).status, 0);
    }
  }));

mountTest('the dirs a mount made for its mountpoint go away with it, parents included, unless something else was put in them', () =>
  withStore(async (dir, s) => {
    assert.is(cli(['import', join(dir, 'src'), '--label', 'app', '--tag', 'v1', ...s]).status, 0);
    for (const mode of ['fuse', 'auto']) {
      const top = join(dir, `made-${mode}`);
      const mnt = join(top, 'a', 'b');
      const r = cli(['mount', 'app:v1', mnt, '--mode', mode, ...s]);
      assert.is(r.status, 0, r.stderr);
      try {
        assert.is(fs.readFileSync(join(mnt, 'conf'), 'utf8'), 'v1\n');
      } finally {
        const u = cli(['unmount', mnt, ...s]);
        assert.is(u.status, 0, u.stderr);
      }
      assert.not.ok(fs.existsSync(top), `${mode}: ${top} and the dirs below it were made for the mount and are gone`);
    }
    // a parent someone put a file into stays, with that file; the empty dirs below it go
    const top = join(dir, 'kept');
    const mnt = join(top, 'a', 'b');
    const r = cli(['mount', 'app:v1', mnt, '--mode', 'fuse', ...s]);
    assert.is(r.status, 0, r.stderr);
    try {
      fs.writeFileSync(join(top, 'mine'), 'x');
    } finally {
      assert.is(cli(['unmount', mnt, ...s]).status, 0);
    }
    assert.not.ok(fs.existsSync(join(top, 'a')));
    assert.is(fs.readFileSync(join(top, 'mine'), 'utf8'), 'x');
  }));

test.run();
