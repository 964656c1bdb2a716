import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { commitThroughMount } from '../../src/fuse/client.js';
import { RENAME_EXCHANGE, renameat2 } from '../../src/native/files.js';
import { commitHead, ensureUpper } from '../../src/store/commands/commit.js';
import { importDirectory } from '../../src/store/commands/import.js';
import type { ByteString } from '../../src/store/image/tree.js';
import { Store } from '../../src/store/store.js';
import { type View, diffViews } from '../store/image/view.js';
import { commitView, dirView, kernelUnsupported, mountHead } from '../store/head/kernel.js';
import { fuseUnavailable, tempDir, withMount } from './mounts.js';

// rename(2) with RENAME_EXCHANGE on a FUSE HEAD against kernel overlayfs on the same base: lower and
// upper files, a file with a dir, lower dirs (redirects) with upper dirs (opaque), across dirs, a
// lower hardlink. The views and the op logs must match; the kernel on the FUSE-written upper, a
// remount and a live commit show the same tree.
const why = fuseUnavailable() ?? kernelUnsupported;
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`FUSE exchange test skipped: ${why}`);

function makeBase(src: string): void {
  fs.mkdirSync(join(src, 'ld/sub'), { recursive: true });
  fs.mkdirSync(join(src, 'ld2'), { recursive: true });
  fs.mkdirSync(join(src, 'deep/a'), { recursive: true });
  fs.writeFileSync(join(src, 'lf'), 'lower file\n');
  fs.writeFileSync(join(src, 'lf2'), 'second lower file, long enough to be an object '.repeat(4));
  fs.writeFileSync(join(src, 'ld/x'), 'x\n');
  fs.writeFileSync(join(src, 'ld/sub/y'), 'y\n');
  fs.writeFileSync(join(src, 'ld2/z'), 'z\n');
  fs.writeFileSync(join(src, 'deep/a/f'), 'deep\n');
  fs.writeFileSync(join(src, 'hl1'), 'linked\n');
  fs.linkSync(join(src, 'hl1'), join(src, 'hl2'));
  fs.chmodSync(join(src, 'lf'), 0o640);
}

function ops(root: string): string[] {
  const log: string[] = [];
  const x = (a: string, b: string): void => {
    try {
      renameat2(join(root, a), join(root, b), RENAME_EXCHANGE);
      log.push(`exchange ${a} ${b}: ok`);
    } catch (err) {
      log.push(`exchange ${a} ${b}: ${(err as { code?: string }).code}`);
    }
  };
  fs.writeFileSync(join(root, 'uf'), 'upper file\n');
  x('lf', 'uf');                       // lower file <-> upper file
  x('lf2', 'ld');                      // lower file <-> lower dir
  fs.mkdirSync(join(root, 'ud'));
  fs.writeFileSync(join(root, 'ud/q'), 'q\n');
  x('ud', 'ld2');                      // upper dir <-> lower dir
  x('lf2/sub/y', 'uf');                // across dirs, under a moved lower dir
  x('hl1', 'ld');                      // one name of a lower hardlink <-> a file
  x('deep/a', 'ld2/q');                // a lower dir deep down <-> an upper file in a moved dir
  x('nothing', 'lf');                  // errors
  x('lf', 'nothing');
  x('hl1', 'hl1');
  fs.unlinkSync(join(root, 'lf2/x'));  // a lower entry under a redirected dir: whiteout
  fs.writeFileSync(join(root, 'ld2/z'), 'changed\n');
  fs.appendFileSync(join(root, 'hl2'), 'more\n');
  x('lf2', 'ld2');                     // two redirected dirs
  return log;
}

const recent = (view: Map<ByteString, View>, since: number): Map<ByteString, View> => {
  const out = new Map<ByteString, View>();
  for (const [path, v] of view) out.set(path, Number(v.mtime.split('.')[0]) >= since ? { ...v, mtime: 'recent' } : v);
  return out;
};

mountTest('RENAME_EXCHANGE: the FUSE HEAD agrees with kernel overlayfs, and its upper, a remount and a commit show the same tree', async () => {
  const work = tempDir('stratum-xchg-');
  try {
    const storeDir = join(work, 'store');
    const store = await Store.open(storeDir, { create: true });
    makeBase(join(work, 'src'));
    const base = (await importDirectory(store, join(work, 'src'), { label: 'k' })).id;
    await importDirectory(store, join(work, 'src'), { label: 'f' });
    for (const label of ['k', 'f']) await ensureUpper(store, (await store.heads.read(label))!);
    const since = Math.floor(Date.now() / 1000) - 1;
    const km = mountHead(store, 'k', base, join(work, 'kmnt'));
    let kLog: string[], kView: Map<ByteString, View>;
    try {
      kLog = ops(km.merged);
      kView = dirView(km.merged);
    } finally {
      km.unmount();
    }
    const mnt = join(work, 'fmnt');
    const { fLog, fView } = await withMount(storeDir, 'f', undefined, mnt, () => ({ fLog: ops(mnt), fView: dirView(mnt) }));
    assert.equal(fLog, kLog, 'op logs (errnos)');
    assert.ok(kLog.filter((l) => l.endsWith(': ok')).length >= 8, kLog.join('\n'));
    let problems = diffViews(recent(kView, since), recent(fView, since), 8);
    assert.equal(problems, [], 'kernel vs FUSE');
    const again = mountHead(store, 'f', base, join(work, 'kf'));
    try {
      problems = diffViews(fView, dirView(again.merged), 8);
    } finally {
      again.unmount();
    }
    assert.equal(problems, [], 'FUSE vs kernel on the FUSE-written upper');
    const id = await withMount(storeDir, 'f', undefined, mnt, async (e) => {
      assert.equal(diffViews(fView, dirView(mnt), 8), [], 'after remount');
      const r = await commitThroughMount(e, 'live');
      assert.equal(diffViews(fView, dirView(mnt), 8), [], 'after the live commit');
      return r.id;
    });
    assert.equal(diffViews(fView, commitView(store, id), 8), [], 'the commit');
    const kCommit = (await commitHead(store, { label: 'k', tag: 'live' })).id;
    assert.equal(diffViews(recent(commitView(store, kCommit), since), recent(commitView(store, id), since), 8), [], 'kernel commit vs FUSE commit');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
