import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MNT_DETACH, mount, umount2 } from '../../src/native/mount.js';
import { stratumMountsAt } from '../../src/fuse/server.js';
import { kernelMountedAt } from '../../src/store/mount-state.js';
import { S, cleanupKernel, ok } from './mounts.js';
import { kernelUnsupported } from '../store/head/kernel.js';
import { fuseUnavailable, tempDir } from '../fuse/mounts.js';

// A store on tmpfs, as root (issue 12, item 11): erofs cannot mount a commit image from a file on
// tmpfs (ENOTBLK: file-backed erofs needs read_folio, which tmpfs lacks). `--mode auto` (the
// default) sees it and mounts with FUSE, saying why in `stratum status` and in .stratum/status;
// `--mode kernel` fails with one line naming the cause, and nothing is mounted.
const why = kernelUnsupported ?? fuseUnavailable();
if (why) console.log(`tmpfs store tests skipped: ${why}`);

(why === undefined ? test : test.skip)('a store on tmpfs: auto falls back to FUSE and says why; --mode kernel names the cause', async () => {
  const work = tempDir('stratum-tmpfs-');
  const t = join(work, 'tmpfs');
  fs.mkdirSync(t);
  mount('tmpfs', t, 'tmpfs', 0, 'size=64m,mode=0755');
  const [auto, kmnt, tag] = [join(work, 'auto'), join(work, 'kernel'), join(work, 'tag')];
  const store = join(t, 'store');
  try {
    fs.mkdirSync(join(work, 'src'));
    fs.writeFileSync(join(work, 'src/f'), 'on tmpfs\n');
    fs.writeFileSync(join(work, 'src/big'), Buffer.alloc(100_000, 3));
    ok(S(store, 'import', join(work, 'src'), '--label', 'app', '--tag', 'v1'), 'import');

    const k = S(store, 'mount', 'app', kmnt, '--mode', 'kernel');
    assert.is(k.status, 1, `--mode kernel fails: ${k.stdout}`);
    assert.match(k.stderr, /tmpfs/);
    assert.match(k.stderr, /ENOTBLK/);
    assert.is(k.stderr.trim().split('\n').length, 1, `one line: ${k.stderr}`);
    assert.not.ok(kernelMountedAt(kmnt) || stratumMountsAt(kmnt), 'nothing mounted');

    for (const [target, mnt] of [['app', auto], ['app:v1', tag]] as const) {
      ok(S(store, 'mount', target, mnt), `mount ${target} (auto)`);
      assert.ok(stratumMountsAt(mnt), `${target}: served by FUSE`);
      assert.is(fs.readFileSync(join(mnt, 'f'), 'utf8'), 'on tmpfs\n');
      const inside = fs.readFileSync(join(mnt, '.stratum/status'), 'utf8');
      assert.match(inside, /^mode fuse /m);
      assert.match(inside, /^note kernel mode not used: .*tmpfs.*ENOTBLK/m);
    }
    const status = ok(S(store, 'status', 'app'), 'status');
    assert.match(status, /\(fuse\)[^\n]*\n {2}note: kernel mode not used: .*tmpfs/);
    fs.writeFileSync(join(auto, 'new'), 'x');
    ok(S(store, 'commit', 'app:v2'), 'commit through the FUSE mount');
    ok(S(store, 'unmount', tag), 'unmount tag');
    ok(S(store, 'unmount', auto), 'unmount HEAD');
    ok(S(store, 'verify'), 'verify');
  } finally {
    for (const m of [auto, kmnt, tag]) {
      if (stratumMountsAt(m)) S(store, 'unmount', m);
      cleanupKernel(m);
    }
    try { umount2(t, 0); } catch { umount2(t, MNT_DETACH); }
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
