import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { applyThroughMount, commitThroughMount } from '../../src/fuse/client.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { Store } from '../../src/store/store.js';
import { fuseUnavailable, tempDir, withMount } from './mounts.js';

// Nobody reads stale pages on a FUSE HEAD (docs/fuse.md "Caching"): a reader that had a file's
// old content in the kernel's page cache (keep_cache, a lower file's object registered for C
// opens after its first open) sees the new content after (a) a write through another process,
// (b) a live commit followed by a write, (c) a live apply to a commit where the file differs,
// (d) through mmap after a write.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`invalidation tests skipped: ${why}`);

const ONE = 'one '.repeat(40) + '\n';  // over 64 bytes: an object, not inline in the image
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const read = (p: string): string => fs.readFileSync(p, 'utf8');
/** Another process writes (O_TRUNC, then the bytes): the writer is not the reader. */
const writeElsewhere = (p: string, text: string): void => {
  const r = spawnSync('sh', ['-c', 'printf %s "$1" > "$2"', 'sh', text, p]);
  assert.is(r.status, 0, String(r.stderr));
};
const mmapRead = (p: string): string => {
  const r = spawnSync('python3', ['-c', `import mmap,sys
f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); sys.stdout.write(m[:].decode())`, p], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  return r.stdout;
};

mountTest('a cached reader sees writes, a live commit then a write, a live apply, and mmap after a write', async () => {
  const work = tempDir('stratum-inval-');
  try {
    const src = join(work, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(join(src, 'a'), ONE);
    fs.writeFileSync(join(src, 'b'), ONE);
    const store = await Store.open(join(work, 'store'), { create: true });
    await importDirectory(store, src, { label: 'inv', tag: 'v1' });
    await ensureUpper(store, (await store.heads.read('inv'))!);
    await withMount(store.root, 'inv', undefined, join(work, 'mnt'), async (e) => {
      const a = join(e.mountpoint, 'a'), b = join(e.mountpoint, 'b');
      // cached: read twice (the second open is C's, from the registered object) and held open
      assert.is(read(a), ONE);
      assert.is(read(a), ONE);
      const held = fs.openSync(a, 'r');
      try {
        // (a) another process writes (copy-up of a lower file, then its bytes)
        writeElsewhere(a, 'two\n');
        assert.is(read(a), 'two\n', '(a) a new open sees the write');
        const buf = Buffer.alloc(64);
        assert.is(buf.subarray(0, fs.readSync(held, buf, 0, 64, 0)).toString(), 'two\n', '(a) so does the fd held open before it');
      } finally {
        fs.closeSync(held);
      }

      // (b) a live commit, then a write to the same file and to a lower one read before
      assert.is(read(b), ONE);
      assert.is((await commitThroughMount(e, 'v2')).tag, 'v2');
      assert.is(read(a), 'two\n');
      writeElsewhere(a, 'three\n');
      writeElsewhere(b, 'bee\n');
      assert.is(read(a), 'three\n', '(b) after a live commit, a write');
      assert.is(read(b), 'bee\n', '(b) a lower file copied up after a live commit');

      // (d) mmap sees what was written, also a map made before the write
      assert.is(mmapRead(a), 'three\n');
      writeElsewhere(a, 'four\n');
      assert.is(mmapRead(a), 'four\n', '(d) mmap after a write');

      // (c) a live apply to v2 (a = two, b = one): the cached four/bee go
      await applyThroughMount(e, 'v2', { discard: true });
      await sleep(200);  // the server sends inval_inode/inval_entry once its gate is open again
      assert.is(read(a), 'two\n', '(c) after an apply, the applied commit');
      assert.is(read(b), ONE, '(c) a file whose upper copy the apply discarded');
      assert.is(mmapRead(a), 'two\n', '(c) mmap after an apply');
      await applyThroughMount(e, 'v1', { discard: true });
      await sleep(200);
      assert.is(read(a), ONE, '(c) and to v1');
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
