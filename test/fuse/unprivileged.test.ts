import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { stratumMountsAt } from '../../src/fuse/server.js';
import { asNobody, endUserMounts, mountAsNobody, shAsNobodyIn, fuseUnavailable, tempDir, fusermountUnavailable } from './mounts.js';

// A user without privileges mounts its own HEAD through fusermount3: overlay xattrs in `user.`,
// whiteouts as char 0:0 (allowed unprivileged since Linux 5.8), the kernel reads the result.
const why = fuseUnavailable() ?? fusermountUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`unprivileged mount test skipped: ${why}`);

mountTest('a non-root user mounts, writes, deletes a lower file (whiteout), commits through the control file and unmounts', async () => {
  const dir = tempDir('stratum-user-');
  const mnt = join(dir, 'mnt');
  const state = join(dir, 'run', 'state');
  try {
    const { store, env } = mountAsNobody(dir, { keep: 'keep\n', 'sub/gone': 'gone\n' }, 'mine');
    // without allow_other only the mounting user gets through the mount (not even root)
    const sh = (cmd: string) => shAsNobodyIn(mnt, cmd);
    let s = sh('echo new > new && rm sub/gone && mv sub moved && echo v2 > .stratum/commit && cat .stratum/commit && ls -a . moved');
    assert.is(s.status, 0, s.stderr);
    assert.match(s.stdout, /^mine:v2 [0-9a-f]{64}/);
    assert.ok(fs.readFileSync(join(store, 'refs/mine/head.toml'), 'utf8').includes('xattr_namespace = "user"'));
    s = sh('rm keep');
    assert.is(s.status, 0, s.stderr);
    assert.ok(fs.lstatSync(join(store, 'refs/mine/head/keep')).isCharacterDevice(), 'an unprivileged whiteout');
    let r = asNobody(['--store', store, 'unmount', 'mine'], env);
    assert.is(r.status, 0, r.stderr);
    assert.not.ok(stratumMountsAt(mnt));
    r = asNobody(['--store', store, 'list', 'mine'], env);
    assert.match(r.stdout, /v2/);
  } finally {
    await endUserMounts(state, mnt, dir);
  }
});

test.run();
