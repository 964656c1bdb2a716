import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { S, ok, withCliMount } from './mounts.js';
import { kernelUnsupported } from '../store/head/kernel.js';
import { fuseUnavailable, tempDir } from '../fuse/mounts.js';
import { giveTo, makeRuntimeDir, shAsUser, stratumAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';

// Every mount stratum makes is nosuid,nodev unless root asks otherwise (issue 12, item 4): a
// setuid-root program in a commit, mounted as a tag or as HEAD, in kernel or FUSE mode, runs with
// the caller's own euid. Checked in /proc/self/mountinfo (the overlay or FUSE mount and the
// control files' mount, also after a live commit replaced the overlay) and by running the program
// as an ordinary user. `--allow-suid` as root turns it off (so the check can tell); others get
// PERMISSION.
const why = kernelUnsupported ?? fuseUnavailable() ?? userTestsUnavailable();
const rootTest = why === undefined ? test : test.skip;
if (why) console.log(`nosuid tests skipped: ${why}`);

/** The per-mount options (field 6) of the mount at exactly this mountpoint, topmost first. */
function mountOptions(mnt: string): string[][] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f[4] === mnt)
    .map((f) => f[5]!.split(','))
    .reverse();
}

function assertNosuidNodev(mnt: string, what: string): void {
  const all = mountOptions(mnt);
  assert.ok(all.length > 0, `${what}: a mount at ${mnt}`);
  for (const opts of all) {
    assert.ok(opts.includes('nosuid'), `${what}: nosuid in ${opts.join(',')}`);
    assert.ok(opts.includes('nodev'), `${what}: nodev in ${opts.join(',')}`);
  }
}

/** A store whose commit holds a setuid-root copy of id(1) (as a bundle from elsewhere would). */
async function setuidStore(work: string): Promise<string> {
  const src = join(work, 'src');
  fs.mkdirSync(src);
  fs.copyFileSync('/usr/bin/id', join(src, 'id'));
  fs.chownSync(join(src, 'id'), 0, 0);
  fs.chmodSync(join(src, 'id'), 0o4755);
  const store = join(work, 'store');
  ok(S(store, 'import', src, '--label', 'app', '--tag', 'v1'), 'import');
  return store;
}

rootTest('a setuid-root program in a commit runs with the caller\'s euid in every mount kind; mounts are nosuid,nodev', async () => {
  const work = tempDir('stratum-nosuid-');
  const user = testUser();
  try {
    const store = await setuidStore(work);
    const euidAsUser = (path: string): string => {
      const r = shAsUser(user, `'${path}' -u`);
      assert.is(r.status, 0, `running ${path} as ${user.name}: ${r.stderr}`);
      return r.stdout.trim();
    };
    for (const mode of ['kernel', 'fuse'] as const) {
      for (const target of ['app:v1', 'app']) {
        const mnt = join(work, `${mode}-${target.replace(':', '-')}`);
        await withCliMount(store, target, mnt, mode, () => {
          assert.is(fs.statSync(join(mnt, 'id')).mode & 0o4000, 0o4000, 'the setuid bit is shown');
          assertNosuidNodev(mnt, `${mode} ${target}`);
          if (mode === 'kernel') assertNosuidNodev(join(mnt, '.stratum'), `${mode} ${target} control files`);
          assert.is(euidAsUser(join(mnt, 'id')), String(user.uid), `${mode} ${target}: euid of the setuid program`);
          if (mode === 'kernel' && target === 'app') {
            // a live commit replaces the overlay (and seals the old one with a bind remount)
            fs.writeFileSync(join(mnt, 'new'), 'x');
            ok(S(store, 'commit', 'app:v2'), 'live commit');
            assertNosuidNodev(mnt, 'kernel HEAD after a live commit');
            assert.is(euidAsUser(join(mnt, 'id')), String(user.uid), 'euid after a live commit');
          }
        });
      }
    }
    ok(S(store, 'verify'), 'verify');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

rootTest('--allow-suid as root honours the bit (kernel and FUSE); an ordinary user is refused with PERMISSION', async () => {
  const work = tempDir('stratum-allow-suid-');
  const user = testUser();
  try {
    const store = await setuidStore(work);
    for (const mode of ['kernel', 'fuse'] as const) {
      const mnt = join(work, `allow-${mode}`);
      const mounted = S(store, 'mount', 'app:v1', mnt, '--mode', mode, '--allow-suid');
      try {
        assert.is(mounted.status, 0, mounted.stderr);
        const opts = mountOptions(mnt)[0]!;
        assert.not.ok(opts.includes('nosuid'), `${mode}: suid allowed: ${opts.join(',')}`);
        assert.ok(opts.includes('nodev'), `${mode}: still nodev: ${opts.join(',')}`);
        const r = shAsUser(user, `'${join(mnt, 'id')}' -u`);
        assert.is(r.stdout.trim(), '0', `${mode}: root asked for setuid: euid 0`);
      } finally {
        S(store, 'unmount', mnt);
      }
    }
    // an ordinary user, its own store and runtime dir
    const runtime = makeRuntimeDir(user, work);
    const ustore = join(work, 'ustore');
    fs.mkdirSync(join(work, 'usrc'));
    fs.writeFileSync(join(work, 'usrc', 'f'), 'f');
    giveTo(user, join(work, 'usrc'));
    const env = { STRATUM_STORE: ustore };
    fs.mkdirSync(ustore);
    giveTo(user, ustore);
    const imported = stratumAsUser(user, ['import', join(work, 'usrc'), '--label', 'u'], { runtimeDir: runtime, env });
    assert.is(imported.status, 0, imported.stderr);
    for (const flag of ['--allow-suid', '--allow-dev']) {
      const r = stratumAsUser(user, ['mount', 'u', join(work, 'umnt'), '--mode', 'fuse', flag], { runtimeDir: runtime, env });
      assert.is(r.status, 1, `${flag} as a user fails: ${r.stdout} ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${flag} is for root only`));
      assert.is(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.not.ok(fs.existsSync(join(work, 'umnt')) && mountOptions(join(work, 'umnt')).length > 0, 'nothing mounted');
    }
  } finally {
    for (const m of ['allow-kernel', 'allow-fuse']) if (mountOptions(join(work, m)).length > 0) S(join(work, 'store'), 'unmount', join(work, m));
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
