import { chmodSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stratum } from '../helpers/cli.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';

test('import, tag, list, log, status, verify, export, import a bundle, remove: the whole CLI path', () =>
  withTempDir(async (dir) => {
    const s = ['--store', join(dir, 'store')];
    const tree = makeTree(join(dir, 'app'), { 'etc/conf': 'a = 1\n', 'data.bin': 100_000 });
    const first = stratum(['import', tree, '--label', 'app', '--tag', 'v1', ...s]);
    assert.is(first.status, 0, first.stderr);
    assert.match(first.stdout, /^app:[0-9a-f]{64}\n$/);
    const id = first.stdout.trim().slice(4);
    assert.is(stratum(['import', tree, '--label', 'app', ...s]).stdout.trim(), `app:${id}`, 'same tree, same id');
    assert.is(stratum(['tag', 'app:v1', 'latest', ...s]).status, 0);
    const again = stratum(['tag', 'app:v1', 'latest', ...s]);
    assert.is(again.status, 1);
    assert.match(again.stderr, /^stratum: tag app:latest exists; use --force to move it\n$/);
    assert.is(stratum(['tag', `app:${id.slice(0, 8)}`, 'short', ...s]).status, 0);
    assert.match(stratum(['list', 'app', ...s]).stdout, /\napp:latest, app:short, app:v1  [0-9a-f]{12}  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  97\.7 KiB  \*\n/);
    writeFileSync(join(tree, 'etc/conf'), 'a = 2\n');
    const second = stratum(['import', tree, '--label', 'app', '--tag', 'v2', '--json', ...s]);
    const result = JSON.parse(second.stdout) as { id: string; newObjects: number; tags: string[] };
    assert.is(result.newObjects, 0, 'only the small inline file changed');
    assert.equal(result.tags, [result.id, 'v2']);
    const log = JSON.parse(stratum(['log', 'app:v2', '--json', ...s]).stdout) as Array<{ id: string }>;
    assert.equal(log.map((e) => e.id), [result.id]);
    assert.match(stratum(['status', 'app', ...s]).stdout, new RegExp(`HEAD on ${id.slice(0, 12)}`));
    assert.match(stratum(['verify', ...s]).stdout, /2 commits, 1 object checked: ok/);
    const bundle = join(dir, 'v2.bundle');
    assert.is(stratum(['export', 'app:v2', bundle, ...s]).status, 0);
    const other = ['--store', join(dir, 'other')];
    assert.is(stratum(['import', bundle, ...other]).stdout.trim(), 'app:v2');
    assert.match(stratum(['verify', 'app:v2', ...other]).stdout, /ok/);
    const removed = stratum(['remove', 'app:v2', ...s]);
    assert.match(removed.stdout, new RegExp(`^removed app:v2, app:${result.id}; freed 1 commit`), 'its last name goes with its id tag');
    assert.match(stratum(['gc', ...s]).stdout, /freed 0 commits, 0 objects/, 'remove already collected it');
  }));

test('errors name the thing and the fix, with exit 1 for failures and 2 for usage', () =>
  withTempDir(async (dir) => {
    const s = ['--store', join(dir, 'store')];
    const tree = makeTree(join(dir, 'app'), { f: 'x' });
    const cases: Array<[string[], number, RegExp]> = [
      [['import', tree, ...s], 2, /needs --label/],
      [['import', join(dir, 'missing'), '--label', 'app', ...s], 1, /does not exist/],
      [['import', tree, '--label', 'a/b', ...s], 2, /bad label name/],
      [['tag', 'app', 'x', ...s], 2, /needs a tag/],
      [['log', 'app:nope', ...s], 1, /^stratum: no store at /],
      [['export', 'app:v1', '-', ...s], 1, /no store/],
    ];
    for (const [args, status, message] of cases) {
      const r = stratum(args);
      assert.is(r.status, status, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
    }
    stratum(['import', tree, '--label', 'app', '--tag', 'v1', ...s]);
    const bad = join(dir, 'bad.bundle');
    writeFileSync(bad, 'stratum-bundle 1\n\u0005');
    const r = stratum(['import', bad, ...s]);
    assert.is(r.status, 1);
    assert.match(r.stderr, /bad bundle/);
    assert.match(stratum(['verify', ...s]).stdout, /1 commit, 0 objects checked: ok/, 'the bad bundle changed nothing');
    assert.match(stratum(['list', 'app', ...s]).stdout, /\napp:v1  /);
    const missing = stratum(['log', 'app:nope', ...s]);
    assert.is(missing.status, 1);
    assert.match(missing.stderr, /tag app:nope does not exist/);
  }));

test('verify exits 1 when it finds a corrupt object, and names it', () =>
  withTempDir(async (dir) => {
    const s = ['--store', join(dir, 'store')];
    const tree = makeTree(join(dir, 'app'), { 'data.bin': 100_000 });
    assert.is(stratum(['import', tree, '--label', 'app', ...s]).status, 0);
    const fan = readdirSync(join(dir, 'store/objects')).find((d) => d.length === 2)!;
    const object = join(dir, 'store/objects', fan, readdirSync(join(dir, 'store/objects', fan))[0]!);
    chmodSync(object, 0o644);
    writeFileSync(object, 'not what was stored');
    const r = stratum(['verify', ...s]);
    assert.is(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /data\.bin/);
  }));

test.run();
