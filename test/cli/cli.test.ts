import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stratum } from '../helpers/cli.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';

test('--help lists the commands and the global options; --version prints the version', () => {
  const help = stratum(['--help']);
  assert.is(help.status, 0);
  for (const word of ['list', '--store', '--json', '--quiet']) assert.ok(help.stdout.includes(word), word);
  const version = stratum(['--version']);
  assert.is(version.status, 0);
  assert.match(version.stdout, /stratum\/\d+\.\d+\.\d+/);
});

test('usage mistakes exit 2 with one line and no stack trace', () => {
  for (const args of [['bogus'], ['list', '--frob'], ['list', '../etc'], []]) {
    const r = stratum([...args, '--store', '/nonexistent/store']);
    assert.is(r.status, 2, args.join(' '));
    assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
  }
  assert.match(stratum(['list', 'a/b']).stderr, /^stratum: bad label name "a\/b"/);
});

test('with --json an error is also {"error": {code, message}} on stdout, with the stable code and the exit status', () =>
  withTempDir(async (dir) => {
    const a = join(dir, 'a');
    const tree = makeTree(join(dir, 'tree'), { 'f.txt': 'hello' });
    assert.is(stratum(['import', tree, '--label', 'app', '--tag', 'v1', '--store', a]).status, 0);
    const cases: Array<[string[], string, number]> = [
      [['list', 'other'], 'NOT_FOUND', 1],
      [['tag', 'app:v1', 'app:v1'], 'TAG_EXISTS', 1],
      [['list', 'a/b'], 'BAD_NAME', 2],
      [['list', '--frob'], 'USAGE', 2],
    ];
    for (const [args, code, status] of cases) {
      const r = stratum([...args, '--json', '--store', a]);
      assert.is(r.status, status, args.join(' '));
      const out = JSON.parse(r.stdout) as { error: { code: string; message: string } };
      assert.is(out.error.code, code, args.join(' '));
      assert.is(`stratum: ${out.error.message}`, r.stderr.split(/;? see `stratum --help`\n|\n/)[0], 'the same message as on stderr');
    }
    assert.is(stratum(['list', 'other', '--store', a]).stdout, '', 'without --json stdout stays empty');
  }));

test('the store comes from --store, else $STRATUM_STORE', () =>
  withTempDir(async (dir) => {
    const a = join(dir, 'a');
    const tree = makeTree(join(dir, 'tree'), { 'f.txt': 'hello' });
    const imported = stratum(['import', tree, '--label', 'app', '--tag', 'v1', '--store', a]);
    assert.is(imported.status, 0, imported.stderr);
    const id = imported.stdout.trim().split(':')[1]!;
    assert.match(stratum(['list', '--store', a]).stdout, /^app\t1 commit, 1 tag\n$/);
    assert.match(stratum(['list'], { STRATUM_STORE: a }).stdout, /^app\t1 commit, 1 tag\n$/);
    assert.is(stratum(['list', '--store', join(dir, 'b')], { STRATUM_STORE: a }).stdout, '', '--store wins');
    const json = JSON.parse(stratum(['list', 'app', '--json', '--store', a]).stdout) as { commits: Array<{ tags: string[]; id: string; head: boolean }> };
    assert.equal(json.commits.map((c) => [c.tags, c.id, c.head]), [[['v1'], id, true]]);
    const unknown = stratum(['list', 'other', '--store', a]);
    assert.is(unknown.status, 1);
    assert.match(unknown.stderr, /label other does not exist/);
  }));

test.run();
