import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { Store } from '../../src/store/store.js';
import { countsDiff, settledCounts } from '../../bench/fuse-counts.js';
import { fuseUnavailable, tempDir, withMount, withCountsFile } from './mounts.js';

// The request counts file (STRATUM_FUSE_COUNTS, native/src/fuse.c) that bench:fuse reads: it
// appears, a cat of N files through a HEAD mount counts at least N reads and (zero-message open)
// at most one open, and the server writes its last counts when it unmounts.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`request count tests skipped: ${why}`);

mountTest('a cat of N files counts at least N reads and at most one open; the file outlives the mount', async () => {
  const work = tempDir('stratum-counts-');
  const countsFile = join(work, 'counts.json');
  try {
    const N = 60;
    const src = join(work, 'src');
    fs.mkdirSync(join(src, 'many'), { recursive: true });
    for (let i = 0; i < N; i++) fs.writeFileSync(join(src, 'many', `f${i}`), `file ${i}\n`);
    const store = await Store.open(join(work, 'store'), { create: true });
    await importDirectory(store, src, { label: 'c' });
    await ensureUpper(store, (await store.heads.read('c'))!);
    await withCountsFile(countsFile, async () => {
      let during: number | undefined;
      await withMount(store.root, 'c', undefined, join(work, 'mnt'), async (e) => {
        fs.statSync(e.mountpoint);
        const before = await settledCounts(countsFile);
        assert.ok(before, 'the counts file appears once the mount answered a request');
        const r = spawnSync('sh', ['-c', 'cat many/* | wc -l'], { cwd: e.mountpoint, encoding: 'utf8' });
        assert.is(r.stdout.trim(), String(N));
        const after = await settledCounts(countsFile);
        const d = countsDiff(after!, before);
        // the names come with readdirplus (few lookups); every file is read, the first open answers
        // ENOSYS and the kernel opens nothing more (docs/fuse.md "Zero-message open")
        assert.ok((d.requests.read ?? 0) >= N, `read: ${JSON.stringify(d)}`);
        assert.ok((d.requests.open ?? 0) <= 1, `open: ${JSON.stringify(d)}`);
        assert.ok((d.requests.lookup ?? 0) + (d.requests.readdirplus ?? 0) >= 1, JSON.stringify(d));
        // what went into JS is counted apart (never more than was asked, forgets aside)
        assert.ok((d.js.open ?? 0) <= d.requests.open!, JSON.stringify(d));
        during = Object.values(after!.requests).reduce((a, b) => a + b, 0);
      });
      const last = JSON.parse(fs.readFileSync(countsFile, 'utf8')) as { requests: Record<string, number> };
      assert.ok(Object.values(last.requests).reduce((a, b) => a + b, 0) >= during!, 'the last counts are written at unmount');
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
