import { chmodSync, mkdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lsetxattr } from '../../src/native/xattr.js';
import { diff } from '../../src/store/commands/diff.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { Store } from '../../src/store/store.js';
import { stratum } from '../helpers/cli.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';

test('diff names every added, removed and changed path, and nothing else', () =>
  withTempDir(async (dir) => {
    const src = makeTree(join(dir, 'src'), { 'same.bin': 5000, 'big.bin': 9000, 'small.txt': 'v1', 'mode.sh': 'x', 'gone/a': 'a', 'gone/b/c': 'c', 'becomes-dir': 'file', 'x.txt': 'x' });
    symlinkSync('same.bin', join(src, 'link'));
    const store = await Store.open(join(dir, 's'), { create: true });
    const before = await importDirectory(store, src, { label: 'app', tag: 'v1' });
    // the same mtimes everywhere we do not mean to change: rewrite only what changes
    writeFileSync(join(src, 'big.bin'), Buffer.alloc(9000, 1));
    writeFileSync(join(src, 'small.txt'), 'v2');
    chmodSync(join(src, 'mode.sh'), 0o755);
    rmSync(join(src, 'gone'), { recursive: true });
    unlinkSync(join(src, 'becomes-dir'));
    mkdirSync(join(src, 'becomes-dir'));
    writeFileSync(join(src, 'becomes-dir', 'inside'), 'i');
    unlinkSync(join(src, 'link'));
    symlinkSync('big.bin', join(src, 'link'));
    writeFileSync(join(src, 'new.txt'), 'new');
    lsetxattr(join(src, 'x.txt'), 'user.tag', Buffer.from('1'));
    const after = await importDirectory(store, src, { label: 'app', tag: 'v2' });
    const { entries } = await diff(store, 'app:v1', 'app:v2');
    const byPath = new Map(entries.map((e) => [`${e.change} ${e.path}`, e.what ?? []]));
    for (const expected of ['removed /gone', 'removed /gone/a', 'removed /gone/b', 'removed /gone/b/c', 'removed /becomes-dir', 'added /becomes-dir', 'added /becomes-dir/inside', 'added /new.txt']) {
      assert.ok(byPath.has(expected), `${expected} in ${[...byPath.keys()].join(', ')}`);
    }
    assert.ok(byPath.get('changed /big.bin')!.includes('content'));
    assert.ok(byPath.get('changed /small.txt')!.includes('content'));
    assert.ok(byPath.get('changed /mode.sh')!.includes('mode'));
    assert.ok(byPath.get('changed /link')!.includes('target'));
    assert.ok(byPath.get('changed /x.txt')!.includes('xattrs'));
    assert.not.ok([...byPath.keys()].some((k) => k.endsWith('/same.bin')), 'unchanged files are not listed');
    assert.equal((await diff(store, 'app:v1', `app:${before.id.slice(0, 10)}`)).entries, [], 'a commit against itself');
    const cli = stratum(['diff', 'app:v1', `app@sha256:${after.id}`, '--store', join(dir, 's')]);
    assert.is(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /^A\t\/new\.txt$/m);
    assert.match(cli.stdout, /^D\t\/gone\/b\/c$/m);
    assert.match(cli.stdout, /^M\t\/mode\.sh\t\(.*mode.*\)$/m);
  }));

test.run();
