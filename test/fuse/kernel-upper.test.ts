import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { Store } from '../../src/store/store.js';
import { lgetxattr } from '../../src/native/xattr.js';
import { diffViews } from '../store/image/view.js';
import { dirView, kernelUnsupported, mountHead } from '../store/head/kernel.js';
import { fuseUnavailable, tempDir, withMount } from './mounts.js';

// The other direction: an upper written by kernel overlayfs (metacopy files, redirects, opaque
// dirs, whiteouts) is served by FUSE exactly as the kernel shows it, and FUSE writes over it.
const why = fuseUnavailable() ?? kernelUnsupported;
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`kernel-written upper test skipped: ${why}`);

mountTest('a kernel-written upper (metacopy, redirect, opaque, whiteout) reads the same through FUSE, and FUSE writes over metacopy files', async () => {
  const work = tempDir('stratum-kupper-');
  try {
    const src = join(work, 'src');
    fs.mkdirSync(join(src, 'd/e'), { recursive: true });
    fs.mkdirSync(join(src, 'gone'));
    fs.writeFileSync(join(src, 'gone/x'), 'x');
    fs.writeFileSync(join(src, 'big'), Buffer.alloc(200_000, 3));
    fs.writeFileSync(join(src, 'd/e/f'), Buffer.alloc(10_000, 4));
    const storeDir = join(work, 'store');
    const store = await Store.open(storeDir, { create: true });
    const base = (await importDirectory(store, src, { label: 'app' })).id;
    await ensureUpper(store, (await store.heads.read('app'))!);
    const k = mountHead(store, 'app', base, join(work, 'k1'));
    try {
      fs.chmodSync(join(k.merged, 'big'), 0o600);  // metacopy copy-up
      fs.renameSync(join(k.merged, 'd'), join(k.merged, 'moved'));  // redirect
      fs.rmSync(join(k.merged, 'gone'), { recursive: true });
      fs.mkdirSync(join(k.merged, 'gone'));  // opaque over a whiteout
    } finally {
      k.unmount();
    }
    const upper = join(storeDir, 'refs/app/head');
    assert.ok(lgetxattr(join(upper, 'big'), 'trusted.overlay.metacopy') !== undefined, 'the kernel wrote a metacopy file');
    const k2 = mountHead(store, 'app', base, join(work, 'k2'));
    let kernelView;
    try {
      kernelView = dirView(k2.merged);
    } finally {
      k2.unmount();
    }
    const mnt = join(work, 'mnt');
    await withMount(storeDir, 'app', undefined, mnt, () => {
      const problems = diffViews(kernelView, dirView(mnt), 8);
      assert.equal(problems, [], problems.join('\n'));
      const fd = fs.openSync(join(mnt, 'big'), 'r+');
      fs.writeSync(fd, Buffer.from('head'), 0, 4, 100);
      fs.closeSync(fd);
      const b = fs.readFileSync(join(mnt, 'big'));
      assert.is(b.length, 200_000);
      assert.is(b.subarray(98, 106).toString('latin1'), '\x03\x03head\x03\x03');
      assert.is(fs.readFileSync(join(mnt, 'moved/e/f')).length, 10_000);
      assert.equal(fs.readdirSync(join(mnt, 'gone')), []);
    });
    assert.throws(() => lgetxattr(join(upper, 'big'), 'trusted.overlay.metacopy'), 'FUSE made it a plain file');
    const k3 = mountHead(store, 'app', base, join(work, 'k3'));
    try {
      const b = fs.readFileSync(join(k3.merged, 'big'));
      assert.is(b.subarray(98, 106).toString('latin1'), '\x03\x03head\x03\x03', 'the kernel reads what FUSE wrote');
    } finally {
      k3.unmount();
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
