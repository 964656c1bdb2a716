// The store is its owner's: created 0700 (and objects/, commits/, refs/, tmp/, cache/), so a 0600
// file imported by root cannot be read through objects/ by another user; verify warns about a
// store others can read.
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { Store } from '../../src/store/store.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';
import { withTempDir } from '../helpers/dirs.js';
import { shAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';

test('a new store and its dirs are 0700; verify has no warning', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), pseudoRandomBytes(1000, 1));
    const root = join(dir, 'a', 'b', 'store');
    const store = await Store.open(root, { create: true });
    await importDirectory(store, src, { label: 'app' });
    for (const path of [root, ...['objects', 'commits', 'refs', 'tmp', 'cache'].map((d) => join(root, d))]) {
      assert.is(statSync(path).mode & 0o777, 0o700, path);
    }
    assert.is(statSync(join(dir, 'a')).mode & 0o777, 0o755 & ~process.umask(), 'parents are made as usual');
    assert.equal((await verify(store, undefined)).warnings, []);
  }));

test('verify warns about a store others can read, and leaves its modes alone', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 'store');
    const store = await Store.open(root, { create: true });
    chmodSync(root, 0o755);
    chmodSync(join(root, 'objects'), 0o755);
    const report = await verify(store, undefined);
    assert.is(report.warnings.length, 2, report.warnings.join('\n'));
    assert.match(report.warnings[0]!, /other users can read the store \(chmod 700 /);
    assert.equal(report.problems, []);
    assert.is(statSync(root).mode & 0o777, 0o755);
  }));

test("another user cannot read an object of root's store (EACCES)", async () => {
  const why = userTestsUnavailable();
  if (why) {
    console.log(`  skipped: ${why}`);
    return;
  }
  const user = testUser();
  await withTempDir(async (dir) => {
    chmodSync(dir, 0o755); // the temp dir itself is open, as /var/lib or a home would be
    const src = join(dir, 'src');
    mkdirSync(src);
    const secret = pseudoRandomBytes(4000, 9);
    writeFileSync(join(src, 'secret'), secret, { mode: 0o600 });
    const root = join(dir, 'store');
    const store = await Store.open(root, { create: true });
    await importDirectory(store, src, { label: 'app' });
    let object: string | undefined;
    for await (const d of store.objects.list()) object = store.objects.path(d);
    assert.ok(object);
    assert.is(statSync(object).mode & 0o777, 0o444, 'the object itself is readable: the dirs protect it');
    const r = shAsUser(user, `cat '${object}' > /dev/null`);
    assert.is.not(r.status, 0);
    assert.match(r.stderr, /Permission denied/);
    const list = shAsUser(user, `ls '${root}/objects'`);
    assert.is.not(list.status, 0);
    assert.match(list.stderr, /Permission denied/);
  });
});

test.run();
