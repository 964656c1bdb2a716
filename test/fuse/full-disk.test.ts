import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { importDirectory } from '../../src/store/commands/import.js';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { commitThroughMount } from '../../src/mount/client.js';
import { verify } from '../../src/store/commands/verify.js';
import { Store } from '../../src/store/store.js';
import { fuseUnavailable, tempDir, withMount, withTmpfs } from './mounts.js';

// A commit through the control file on a full disk: the writer gets ENOSPC (not EIO), nothing is
// lost, and once space is freed the same commit works and `verify` is clean.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`FUSE full-disk test skipped: ${why}`);

/** Writes into `path` until the filesystem is full; returns the bytes written. */
function fill(path: string): number {
  const fd = fs.openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  let total = 0;
  try {
    for (;;) total += fs.writeSync(fd, chunk);
  } catch (err) {
    assert.is((err as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    fs.closeSync(fd);
  }
  return total;
}

mountTest('echo tag > .stratum/commit on a full disk fails with ENOSPC; after freeing space it commits and verify is clean', async () => {
  const work = tempDir('stratum-full-');
  try {
    await withTmpfs(work, '4m', async (disk) => {
      const storeDir = join(disk, 'store');
      const src = join(work, 'src');
      fs.mkdirSync(join(src, 'dir'), { recursive: true });
      fs.writeFileSync(join(src, 'base'), Buffer.alloc(200_000, 1));
      fs.writeFileSync(join(src, 'dir/small'), 'small\n');
      const store = await Store.open(storeDir, { create: true });
      await importDirectory(store, src, { label: 'app', tag: 'v1' });
      await ensureUpper(store, (await store.heads.read('app'))!);
      const mnt = join(work, 'mnt');
      const data = Buffer.alloc(300_000, 2);
      await withMount(storeDir, 'app', undefined, mnt, async (entry) => {
        fs.writeFileSync(join(mnt, 'data'), data);
        fs.appendFileSync(join(mnt, 'dir/small'), 'more\n');
        fs.unlinkSync(join(mnt, 'base'));
        assert.ok(fill(join(mnt, 'filler')) > 0);
        // bash: dash's echo reports every failed write as "I/O error"
        const r = spawnSync('bash', ['-c', `echo v2 > '${mnt}/.stratum/commit'`], { encoding: 'utf8' });
        assert.is.not(r.status, 0);
        assert.match(r.stderr, /No space left on device/, r.stderr + fs.readFileSync(join(mnt, '.stratum/commit'), 'utf8'));
        assert.match(fs.readFileSync(join(mnt, '.stratum/commit'), 'utf8'), /^error: .*no space/i);
        // what `stratum commit` says through the mount: NO_SPACE, not IO
        assert.is(await commitThroughMount(entry, 'v2').then(() => 'ok', (err: { code?: string }) => err.code), 'NO_SPACE');
        // nothing lost: HEAD still shows every change
        assert.equal(fs.readFileSync(join(mnt, 'data')), data);
        assert.is(fs.readFileSync(join(mnt, 'dir/small'), 'utf8'), 'small\nmore\n');
        assert.not.ok(fs.existsSync(join(mnt, 'base')));
        assert.not.ok((await store.tags.read('app', 'v2')), 'no tag from the failed commit');
        fs.unlinkSync(join(mnt, 'filler'));
        const ok = spawnSync('bash', ['-c', `echo v2 > '${mnt}/.stratum/commit'`], { encoding: 'utf8' });
        assert.is(ok.status, 0, ok.stderr);
        assert.match(fs.readFileSync(join(mnt, '.stratum/commit'), 'utf8'), /^app:v2 [0-9a-f]{64}/);
        assert.equal(fs.readFileSync(join(mnt, 'data')), data, 'HEAD after the commit');
      });
      await withMount(storeDir, 'app', 'v2', join(work, 'tag'), () => {
        const t = join(work, 'tag');
        assert.equal(fs.readFileSync(join(t, 'data')), data);
        assert.is(fs.readFileSync(join(t, 'dir/small'), 'utf8'), 'small\nmore\n');
        assert.not.ok(fs.existsSync(join(t, 'base')));
        assert.not.ok(fs.existsSync(join(t, 'filler')));
      });
      assert.equal((await verify(await Store.open(storeDir), undefined)).problems, []);
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
