import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stratum } from '../helpers/cli.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';

test('commit, apply, init and import --bare from the command line', () =>
  withTempDir(async (dir) => {
    const s = ['--store', join(dir, 'store')];
    const tree = makeTree(join(dir, 'tree'), { 'a.txt': 'hello', 'd/big.bin': 5000 });
    assert.is(stratum(['import', tree, '--label', 'app', ...s]).status, 0);
    const upper = join(dir, 'store', 'refs', 'app', 'head');

    // nothing changed: the tag names the base
    const same = stratum(['commit', 'app:same', '--json', ...s]);
    assert.is(same.status, 0, same.stderr);
    const sameJson = JSON.parse(same.stdout) as { id: string; tag: string; unchanged: boolean; counts: { changedPaths: number }; bytes: { read: number } };
    assert.is(sameJson.tag, 'same');
    assert.ok(sameJson.unchanged);

    mkdirSync(upper, { recursive: true });
    writeFileSync(join(upper, 'new.txt'), 'x'.repeat(100));
    const c = stratum(['commit', 'app:v1', '--json', ...s]);
    assert.is(c.status, 0, c.stderr);
    const cj = JSON.parse(c.stdout) as { id: string; parent: string; counts: { changedPaths: number; newObjects: number }; bytes: { read: number } };
    assert.is(cj.parent, sameJson.id);
    assert.is(cj.counts.changedPaths, 1);
    assert.is(cj.counts.newObjects, 1);
    assert.is(cj.bytes.read, 100);

    const exists = stratum(['commit', 'app:v1', ...s]);
    assert.is(exists.status, 1);
    assert.match(exists.stderr, /tag app:v1 exists/);

    writeFileSync(join(upper, 'dirty'), 'd');
    const refused = stratum(['apply', 'app:same', ...s]);
    assert.is(refused.status, 1);
    assert.match(refused.stderr, /uncommitted changes \(\d+ changed paths?\).*--discard.*--keep/);
    const discarded = stratum(['apply', 'app:same', '--discard', ...s]);
    assert.is(discarded.status, 0, discarded.stderr);
    assert.match(discarded.stderr, /discarded/);

    const bare = makeTree(join(dir, 'bare'), { 'added.txt': 'added', '.wh.a.txt': '' });
    const b = stratum(['import', '--bare', bare, 'app:layer', '--json', ...s]);
    assert.is(b.status, 0, b.stderr);
    const bj = JSON.parse(b.stdout) as { id: string; deletions: number; parent: string };
    assert.is(bj.deletions, 1);
    assert.is(bj.parent, sameJson.id, 'on the HEAD base');
    assert.is(stratum(['import', bare, 'app:x', ...s]).status, 2, 'a target without --bare is a usage error');

    // without a mountpoint init only prepares the label (test/fuse/init.test.ts mounts)
    const init = stratum(['init', 'fresh', ...s]);
    assert.is(init.status, 0, init.stderr);
    assert.match(init.stderr, /stratum mount fresh/);
    assert.is(stratum(['init', 'fresh', ...s]).status, 1, 'a label with a HEAD is not initialized again');
    assert.is(stratum(['init', 'mig', '--migrate', ...s]).status, 2, '--migrate needs the directory');
    assert.is(stratum(['commit', 'app@sha256:' + 'a'.repeat(64), ...s]).status, 2);
    assert.is(stratum(['verify', ...s]).status, 0);
  }));

test.run();
