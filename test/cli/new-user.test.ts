// What a new user does, through the installed `stratum` entry point, as an ordinary user made by
// useradd: the whole flow with and without XDG_RUNTIME_DIR (issue 13 items 1-3, 5, 7), and a
// runtime dir someone else prepared is refused in one clear line.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lazyUnmount, stratumMountsAt } from '../../src/fuse/server.js';
import { MountState } from '../../src/store/mount-state.js';
import { STRATUM_BIN, type TestUser, giveTo, makeRuntimeDir, shAsUser, stratumAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';

const why = userTestsUnavailable() ?? (fs.existsSync('/dev/fuse') ? undefined : 'no /dev/fuse');
const userTest = why === undefined ? test : test.skip;
if (why) console.log(`tests as an ordinary user skipped: ${why}`);

/** A temp dir the user can reach (mkdtemp makes 0700 root dirs). */
function userDir(user: TestUser): string {
  const dir = fs.mkdtempSync('/tmp/stratum-newuser-');
  fs.chmodSync(dir, 0o755);
  giveTo(user, dir);
  return dir;
}

/** Ends every mount of this store the state at `stateFile` knows (the entry goes too, as the user), then removes the dir. */
async function cleanUp(user: TestUser, dir: string, store: string, stateFile: string, runtime?: string): Promise<void> {
  const entries = await new MountState(stateFile).list().catch(() => []);
  for (const e of entries.filter((x) => x.store === store)) {
    try { process.kill(e.pid, 'SIGKILL'); } catch { /* gone */ }
    if (stratumMountsAt(e.mountpoint)) lazyUnmount(e.mountpoint);
    stratumAsUser(user, ['unmount', e.mountpoint, '--store', store], runtime ? { runtimeDir: runtime } : {});
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

function flow(user: TestUser, dir: string, runtime: string | undefined, expectedRuntimeDir: string): void {
  const store = join(dir, 'store');
  const env = { STRATUM_STORE: store };
  const run = (...args: string[]) => stratumAsUser(user, args, { env, ...(runtime ? { runtimeDir: runtime } : {}) });
  const sh = (cmd: string) => shAsUser(user, cmd, { env, ...(runtime ? { runtimeDir: runtime } : {}) });
  const label = `app${process.pid}`;
  fs.mkdirSync(join(dir, 'src/etc'), { recursive: true });
  fs.writeFileSync(join(dir, 'src/etc/conf'), 'port = 1\n');
  giveTo(user, dir);

  // reading commands work before anything exists, and create no runtime dir
  let r = run('status');
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /0 labels/);
  r = run('import', join(dir, 'src'), '--label', label, '--tag', 'v1');
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^${label}:[0-9a-f]{64}\\n$`), 'import prints label:<id>');
  const v1 = r.stdout.trim().split(':')[1]!;
  r = run('status', label);
  assert.is(r.status, 0, r.stderr);
  r = run('list');
  assert.is(r.status, 0, r.stderr);
  // (without XDG_RUNTIME_DIR, /tmp/stratum-<uid> may be there from earlier runs)
  if (runtime !== undefined) assert.not.ok(fs.existsSync(expectedRuntimeDir), 'status, list and import made no runtime dir');

  // mount without a mountpoint: the default follows the runtime dir
  r = run('mount', label, '--mode', 'fuse');
  assert.is(r.status, 0, r.stderr);
  const mnt = r.stdout.trim();
  assert.is(mnt, join(expectedRuntimeDir, 'mnt', label));
  const st = fs.lstatSync(expectedRuntimeDir);
  assert.is(st.uid, user.uid, 'the runtime dir is the user\'s');
  assert.is(st.mode & 0o777, 0o700, 'and private');
  r = run('status');
  assert.match(r.stdout, new RegExp(`${label} \\(HEAD, read-write\\) mounted at ${mnt} by pid \\d+ \\(fuse\\), log ${expectedRuntimeDir}/logs/`));

  // a commit with nothing changed is no commit, even though mounting touched HEAD's upper (item 3)
  r = run('commit', `${label}:same`);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^${label}:same\\t${v1.slice(0, 12)}\\n$`), 'names the base itself');

  // write, commit by the control file, list
  let s = sh(`cd '${mnt}' && echo 'port = 2' > etc/conf && echo new > added && echo v2 > .stratum/commit && cat .stratum/commit`);
  assert.is(s.status, 0, s.stderr);
  assert.match(s.stdout, new RegExp(`^${label}:v2 [0-9a-f]{64}`));
  r = run('list', label);
  assert.is(r.status, 0, r.stderr);
  const rows = r.stdout.trim().split('\n');
  assert.match(rows[0]!, /^TAGS\s+ID\s+CREATED\s+SIZE\s+HEAD$/);
  assert.is(rows.length, 3, `one row per commit: ${r.stdout}`);
  assert.match(rows[1]!, new RegExp(`^${label}:v2 +[0-9a-f]{12}  \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d  \\d+ B +\\*$`), 'v2 is HEAD\'s base');
  assert.match(rows[2]!, new RegExp(`^${label}:same, ${label}:v1 +${v1.slice(0, 12)} `));

  // import with a taken tag fails before it writes anything (item 5)
  fs.writeFileSync(join(dir, 'src/etc/conf'), 'port = 3\n');
  const commitsBefore = fs.readdirSync(join(store, 'commits')).sort();
  r = run('import', join(dir, 'src'), '--label', label, '--tag', 'v1');
  assert.is(r.status, 1);
  assert.match(r.stderr, new RegExp(`^stratum: tag ${label}:v1 exists .*nothing was imported\\)\\n$`));
  assert.equal(fs.readdirSync(join(store, 'commits')).sort(), commitsBefore, 'no commit written');
  assert.is(run('list', label, '--all').stdout.trim().split('\n').length, 3, 'no id tag written');

  // unmount by label; the mountpoint is gone from the mount table
  r = run('unmount', label);
  assert.is(r.status, 0, r.stderr);
  assert.not.ok(stratumMountsAt(mnt));
  s = sh(`cat '${mnt}/etc/conf' 2>/dev/null || echo unmounted`);
  assert.match(s.stdout, /unmounted/);
  r = run('status', label);
  assert.match(r.stdout, /HEAD on [0-9a-f]{12} .*no changes/);
  // and unmounted, the same: HEAD once mounted, unchanged, commits nothing new
  const before = fs.readdirSync(join(store, 'commits')).length;
  r = run('commit', `${label}:again`, '--json');
  assert.is(r.status, 0, r.stderr);
  const again = JSON.parse(r.stdout) as { unchanged: boolean; newCommit: boolean; id: string };
  assert.ok(again.unchanged && !again.newCommit, r.stdout);
  assert.is(fs.readdirSync(join(store, 'commits')).length, before);
}

userTest('as an ordinary user with XDG_RUNTIME_DIR: import, mount (default mountpoint), write, commit by file, list, unmount', async () => {
  const user = testUser();
  const dir = userDir(user);
  const runtime = makeRuntimeDir(user, dir);
  try {
    flow(user, dir, runtime, join(runtime, 'stratum'));
  } finally {
    await cleanUp(user, dir, join(dir, 'store'), join(runtime, 'stratum', 'state'), runtime);
  }
});

userTest('as an ordinary user without XDG_RUNTIME_DIR (su -l, cron): the same flow in a private /tmp/stratum-<uid>', async () => {
  const user = testUser();
  const dir = userDir(user);
  const runtimeDir = `/tmp/stratum-${user.uid}`;
  try {
    flow(user, dir, undefined, runtimeDir);
  } finally {
    await cleanUp(user, dir, join(dir, 'store'), join(runtimeDir, 'state'));
  }
});

userTest('a runtime dir that is not the user\'s own (another owner, a symlink, open to others) is refused in one line', async () => {
  const user = testUser();
  const dir = userDir(user);
  const runtime = join(dir, 'xdg');
  fs.mkdirSync(runtime, { mode: 0o700 });
  giveTo(user, runtime);
  const env = { STRATUM_STORE: join(dir, 'store') };
  const run = (...args: string[]) => stratumAsUser(user, args, { env, runtimeDir: runtime });
  try {
    fs.mkdirSync(join(dir, 'src'));
    fs.writeFileSync(join(dir, 'src/f'), 'x');
    giveTo(user, dir);
    assert.is(run('import', join(dir, 'src'), '--label', 'app').status, 0);
    const cases: Array<[string, () => void, RegExp]> = [
      ['owned by root', () => fs.mkdirSync(join(runtime, 'stratum'), { mode: 0o700 }), /belongs to uid 0, not to you/],
      ['a symlink to a dir of the user', () => { fs.mkdirSync(join(dir, 'elsewhere'), { mode: 0o700 }); giveTo(user, join(dir, 'elsewhere')); fs.symlinkSync(join(dir, 'elsewhere'), join(runtime, 'stratum')); }, /is a symlink/],
      ['open to others', () => { fs.mkdirSync(join(runtime, 'stratum'), { mode: 0o777 }); fs.chmodSync(join(runtime, 'stratum'), 0o777); giveTo(user, join(runtime, 'stratum')); }, /is open to others \(mode 777\)/],
    ];
    for (const [what, make, message] of cases) {
      fs.rmSync(join(runtime, 'stratum'), { recursive: true, force: true });
      make();
      for (const args of [['mount', 'app', '--mode', 'fuse'], ['status'], ['mount', 'app', join(dir, 'mnt'), '--mode', 'fuse']]) {
        const r = run(...args);
        assert.is(r.status, 1, `${what}: ${args.join(' ')}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, message, what);
        assert.match(r.stderr, /^stratum: the runtime dir \S+ .*set XDG_RUNTIME_DIR to a private directory of yours\n$/, `${what}: one line`);
      }
      assert.not.ok(stratumMountsAt(join(dir, 'mnt')), 'nothing was mounted');
    }
  } finally {
    await cleanUp(user, dir, join(dir, 'store'), join(runtime, 'stratum', 'state'), runtime);
  }
});

userTest('without XDG_RUNTIME_DIR, a /tmp/stratum-<uid> made by someone else first is refused (as user nobody)', () => {
  // nobody, not the test user: the test user's own /tmp/stratum-<uid> may be in use by other tests
  const nobody: TestUser = { name: 'nobody', uid: 65534, gid: 65534, home: '/nonexistent' };
  const runtimeDir = `/tmp/stratum-${nobody.uid}`;
  if (fs.existsSync(runtimeDir)) { console.log(`${runtimeDir} exists already; its test skipped`); return; }
  const dir = userDir(nobody);
  try {
    fs.mkdirSync(join(dir, 'src'));
    giveTo(nobody, dir);
    const env = { STRATUM_STORE: join(dir, 'store') };
    assert.is(stratumAsUser(nobody, ['import', join(dir, 'src'), '--label', 'app'], { env }).status, 0);
    fs.mkdirSync(runtimeDir, { mode: 0o700 });  // root's, as an attacker's would be
    let r = stratumAsUser(nobody, ['mount', 'app', '--mode', 'fuse'], { env });
    assert.is(r.status, 1);
    assert.match(r.stderr, new RegExp(`^stratum: the runtime dir ${runtimeDir} belongs to uid 0, not to you \\(uid 65534\\)`));
    fs.rmdirSync(runtimeDir);
    fs.symlinkSync(dir, runtimeDir);
    r = stratumAsUser(nobody, ['status'], { env });
    assert.is(r.status, 1);
    assert.match(r.stderr, new RegExp(`^stratum: the runtime dir ${runtimeDir} is a symlink`));
    assert.not.ok(spawnSync('grep', ['-q', 'stratum', join(dir, 'state')]).status === 0, 'nothing written through the link');
  } finally {
    fs.rmSync(runtimeDir, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

userTest('as an ordinary user, paths and stores that are not theirs give one line, never "internal error"', async () => {
  const user = testUser();
  const dir = userDir(user);
  const runtime = makeRuntimeDir(user, dir);
  const theirs = join(dir, 'roots-store');  // root's store, readable by all, writable by root only
  try {
    fs.mkdirSync(join(dir, 'src'));
    fs.writeFileSync(join(dir, 'src/f'), 'x');
    const made = spawnSync(STRATUM_BIN, ['import', join(dir, 'src'), '--label', 'app', '--tag', 'v1', '--store', theirs], { encoding: 'utf8' });
    assert.is(made.status, 0, made.stderr);
    spawnSync('chmod', ['-R', 'a+rX', theirs]);
    const mine = ['--store', join(dir, 'mine')];
    const cases: string[][] = [
      ['import', '/root/nothing-here', '--label', 'a', ...mine], ['import', '/root', '--label', 'a', ...mine], ['list', '--store', '/root/s'],
      ['export', 'app:v1', '/root/b', '--store', theirs], ['mount', 'app', '/root/mnt', '--store', theirs],
      ['status', 'app', '--store', theirs], ['commit', 'app', '--store', theirs], ['gc', '--store', theirs], ['verify', '--store', theirs],
      ['init', 'new', '--store', theirs], ['remove', 'app:v1', '--store', theirs], ['tag', 'app:v1', 'v2', '--store', theirs],
      ['import', join(dir, 'src'), '--label', 'b', '--store', theirs], ['apply', 'app:v1', '--store', theirs],
    ];
    for (const args of cases) {
      const r = stratumAsUser(user, args, { runtimeDir: runtime });
      assert.ok(r.status === 1 || r.status === 2, `${args.join(' ')}: status ${r.status}: ${r.stderr}`);
      assert.not.match(r.stderr, /internal error/, args.join(' '));
      assert.match(r.stderr, /^stratum: [^\n]+\n$/, `${args.join(' ')}: one line: ${r.stderr}`);
    }
    assert.is(stratumAsUser(user, ['list', 'app', '--store', theirs], { runtimeDir: runtime }).status, 0, 'reading another\'s readable store works');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

userTest('`stratum` runs by name in a login shell of a new user: --version and a short flow via PATH', () => {
  const link = '/usr/local/bin/stratum';
  const target = fs.existsSync(link) ? fs.realpathSync(link) : undefined;
  const user = testUser();
  const dir = userDir(user);
  // the installed link when it is this checkout's; else the same link made in a bin dir of our own
  let path = '/usr/local/bin:/usr/bin:/bin';
  if (target !== fs.realpathSync(STRATUM_BIN)) {
    console.log(`${link} ${target ? `points at ${target}` : 'is absent'}, not at this checkout's ${STRATUM_BIN}: testing a link to it in a bin dir on PATH instead (scripts/setup makes ${link})`);
    fs.mkdirSync(join(dir, 'bin'));
    fs.symlinkSync(STRATUM_BIN, join(dir, 'bin', 'stratum'));
    path = `${join(dir, 'bin')}:${path}`;
  }
  try {
    const r = shAsUser(user, `cd && command -v stratum && stratum --version && mkdir -p '${dir}/t' && echo hi > '${dir}/t/f' && stratum import '${dir}/t' --label hello --tag v1 --store '${dir}/s' && stratum list hello --store '${dir}/s'`, { env: { PATH: path } });
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stdout, /\/stratum\nstratum\/\d+\.\d+\.\d+/);
    assert.match(r.stdout, /hello:v1 +[0-9a-f]{12} /);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
