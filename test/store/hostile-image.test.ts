// Images that came from elsewhere (a bundle, a synced store) are checked as they are parsed: a
// directory cycle in a HEAD's base is CORRUPT_IMAGE at once, not a heap exhausted by an endless walk.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { commitHead, ensureUpper, headPaths } from '../../src/store/commands/commit.js';
import { fsverityDigest } from '../../src/store/digest.js';
import { Store } from '../../src/store/store.js';
import { expectError } from '../helpers/assert.js';
import { withTempDir } from '../helpers/dirs.js';
import { STRATUM_BIN } from '../helpers/user.js';
import { cyclicImage } from './image/cyclic.js';

/** A store whose label `app` has a HEAD on a commit with a cyclic image, and a change in its upper. */
async function cyclicHead(dir: string): Promise<{ store: Store; root: string; id: string }> {
  const root = join(dir, 'store');
  const store = await Store.open(root, { create: true });
  const image = cyclicImage();
  const id = fsverityDigest(image);
  // as a synced store would carry it: a commit dir named by the image's digest
  await store.commits.add(image, { metadataHash: id, merkleRoot: '0'.repeat(64), timestamp: new Date().toISOString(), files: { count: 4, totalSize: 10 }, merkle: { leafCount: 5, treeDepth: 3 } });
  assert.ok(await store.heads.createIfAbsent('app', id));
  await ensureUpper(store, (await store.heads.read('app'))!);
  writeFileSync(join(headPaths(store, 'app').upper, 'new.txt'), 'new\n');
  return { store, root, id };
}

test('commit on a base whose directories form a cycle is CORRUPT_IMAGE and changes nothing', () =>
  withTempDir(async (dir) => {
    const { store, id } = await cyclicHead(dir);
    const err = await expectError(commitHead(store, { label: 'app' }), 'CORRUPT_IMAGE');
    assert.match(err.message, /cycle/);
    assert.is((await store.heads.read('app'))!.base, id);
    assert.equal(await store.commits.list(), [id]);
  }));

test('stratum commit on a cyclic base: one line, exit 1, within seconds', () =>
  withTempDir(async (dir) => {
    const { root } = await cyclicHead(dir);
    const started = Date.now();
    const r = spawnSync(process.execPath, ['--max-old-space-size=256', STRATUM_BIN, 'commit', 'app', '--store', root], { encoding: 'utf8', timeout: 60_000 });
    assert.is(r.signal, null, `killed after ${Date.now() - started} ms`);
    assert.is(r.status, 1, r.stderr);
    assert.match(r.stderr, /^stratum: .*corrupt image.*cycle/);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }));

test.run();
