// Annotations through the CLI, as root and as an ordinary user: `annotate` sets (key=value) and
// removes (key-), `status` and `log --json` show them, `export`/`import` carries them, gc leaves
// the session alone, and a bundle without annotations is the old format 1.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeFrame } from '../../src/session/frame.js';
import { BUNDLE_MAGIC } from '../../src/store/bundle.js';
import { fsverityDigest } from '../../src/store/digest.js';
import { stratum, type CliResult } from '../helpers/cli.js';
import { withTempDir } from '../helpers/dirs.js';
import { giveTo, makeRuntimeDir, stratumAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';

type Run = (args: string[]) => CliResult;

function ok(r: CliResult, what: string): string {
  assert.is(r.status, 0, `${what}: ${r.stderr}`);
  return r.stdout;
}

function json<T>(r: CliResult, what: string): T {
  return JSON.parse(ok(r, what)) as T;
}

/** The manifest of a bundle file (its first record). */
function manifestOf(path: string): { format: number } {
  const bytes = readFileSync(path);
  const length = bytes.readUInt32LE(BUNDLE_MAGIC.length);
  const start = BUNDLE_MAGIC.length + 4;
  return JSON.parse(decodeFrame(bytes.subarray(start, start + length), { maxSize: 1 << 20, digest: fsverityDigest }).data.toString()) as { format: number };
}

/** Every file of a session with its bytes. */
function sessionFiles(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of readdirSync(root, { recursive: true }) as string[]) {
    const path = join(root, rel);
    if (statSync(path).isFile()) out[rel] = readFileSync(path, 'latin1');
  }
  return out;
}

/** The whole story, for whoever `run` runs as; `dir` is writable by them. */
function story(run: Run, dir: string): void {
  const storeA = ['--store', join(dir, 'a')];
  const storeB = ['--store', join(dir, 'b')];
  mkdirSync(join(dir, 'tree'));
  writeFileSync(join(dir, 'tree', 'f.txt'), 'content\n');
  ok(run([...storeA, '--quiet', 'import', join(dir, 'tree'), '--label', 'app', '--tag', 'v1']), 'import');

  // a bundle of a commit with no annotations is format 1, which older stratum reads
  ok(run([...storeA, 'export', 'app:v1', join(dir, 'plain.bundle')]), 'export plain');
  assert.is(manifestOf(join(dir, 'plain.bundle')).format, 1);

  const set = ok(run([...storeA, 'annotate', 'app:v1', 'org.opencontainers.image.source=https://example.org/x?a=b', 'owner=ana', 'note=with = and spaces']), 'annotate');
  assert.is(set, 'note=with = and spaces\norg.opencontainers.image.source=https://example.org/x?a=b\nowner=ana\n');
  ok(run([...storeA, 'annotate', 'app', 'team=core']), 'annotate label');
  const shown = json<{ commit: string; annotations: Record<string, string> }>(run([...storeA, '--json', 'annotate', 'app:v1']), 'annotate (print)');
  assert.equal(shown.annotations, { note: 'with = and spaces', 'org.opencontainers.image.source': 'https://example.org/x?a=b', owner: 'ana' });
  assert.is(shown.commit.length, 64);

  // removing: key- (kubectl's convention); removing what is absent is no error
  ok(run([...storeA, 'annotate', 'app:v1', 'note-', 'absent-']), 'remove');
  const expected = { 'org.opencontainers.image.source': 'https://example.org/x?a=b', owner: 'ana' };
  const status = json<{ annotations: Record<string, string>; head: { annotations: Record<string, string> }; commit: { annotations: Record<string, string> } }>(run([...storeA, '--json', 'status', 'app:v1']), 'status');
  assert.equal(status.commit.annotations, expected);
  assert.equal(status.head.annotations, expected, 'v1 is also the HEAD base');
  assert.equal(status.annotations, { team: 'core' });
  assert.match(ok(run([...storeA, 'status', 'app:v1']), 'status text'), /app:v1 annotations: \{org\.opencontainers\.image\.source=https:\/\/example\.org\/x\?a=b, owner=ana\}/);
  const log = json<{ annotations: Record<string, string> }[]>(run([...storeA, '--json', 'log', 'app:v1']), 'log');
  assert.equal(log[0]!.annotations, expected);
  assert.match(ok(run([...storeA, 'log', 'app:v1']), 'log text'), /owner=ana/);

  // mistakes: one line, usage errors exit 2, missing things 1, nothing changed
  for (const bad of ['bad key=1', 'novalue', '.dot=1', '=v', 'x'.repeat(81) + '=1']) {
    const r = run([...storeA, 'annotate', 'app:v1', bad]);
    assert.is(r.status, 2, `${bad}: ${r.stderr}`);
    assert.is(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
    assert.not.match(r.stderr, /internal error|    at /);
  }
  assert.is(run([...storeA, 'annotate', 'app:nope', 'k=v']).status, 1);
  assert.is(run([...storeA, 'annotate', 'ghost', 'k=v']).status, 1);
  assert.equal(json<{ annotations: object }>(run([...storeA, '--json', 'annotate', 'app:v1']), 'unchanged').annotations, expected);

  // export carries them (format 2); import into another store restores them
  ok(run([...storeA, 'export', 'app:v1', join(dir, 'annotated.bundle')]), 'export');
  assert.is(manifestOf(join(dir, 'annotated.bundle')).format, 2);
  ok(run([...storeB, '--quiet', 'import', join(dir, 'annotated.bundle')]), 'import bundle');
  assert.equal(json<{ annotations: object }>(run([...storeB, '--json', 'annotate', 'app:v1']), 'annotations after import').annotations, expected);
  assert.equal(json<{ annotations: object }>(run([...storeB, '--json', 'status', 'app']), 'label annotations stay local').annotations, {});
  // an old-format bundle still imports, and leaves existing annotations alone
  ok(run([...storeB, '--quiet', 'import', join(dir, 'plain.bundle')]), 'import format 1');
  assert.equal(json<{ annotations: object }>(run([...storeB, '--json', 'annotate', 'app:v1']), 'after format 1').annotations, expected);

  // gc (here through remove, which collects a commit and its object) forgets that commit's
  // annotations and leaves every other file of the session as it was
  mkdirSync(join(dir, 'tree2'));
  writeFileSync(join(dir, 'tree2', 'g.txt'), 'other content, long enough to be an object '.repeat(10));
  ok(run([...storeA, '--quiet', 'import', join(dir, 'tree2'), '--label', 'scratch', '--tag', 'tmp']), 'import tmp');
  ok(run([...storeA, 'annotate', 'scratch:tmp', 'doomed=yes']), 'annotate tmp');
  const before = sessionFiles(join(dir, 'a', 'annotations.session'));
  assert.match(ok(run([...storeA, 'remove', 'scratch']), 'remove'), /freed 1 commit, 1 object/);
  ok(run([...storeA, 'gc']), 'gc');
  const doomed = Object.keys(before).filter((k) => k.endsWith('/doomed'));
  assert.is(doomed.length, 1, 'the freed commit had one annotation');
  assert.equal(sessionFiles(join(dir, 'a', 'annotations.session')), Object.fromEntries(Object.entries(before).filter(([k]) => k !== doomed[0])));
  ok(run([...storeA, 'verify']), 'verify');
  assert.equal(json<{ annotations: object }>(run([...storeA, '--json', 'annotate', 'app:v1']), 'after gc').annotations, expected);
}

test('annotate, status, log and export/import carry annotations (root)', async () => {
  await withTempDir(async (dir) => story((args) => stratum(args), dir));
});

test('two `stratum annotate` processes at once on one commit, different keys: both kept', async () => {
  await withTempDir(async (dir) => {
    const store = ['--store', join(dir, 's')];
    mkdirSync(join(dir, 'tree'));
    writeFileSync(join(dir, 'tree', 'f'), 'x');
    ok(stratum([...store, '--quiet', 'import', join(dir, 'tree'), '--label', 'app', '--tag', 'v1']), 'import');
    const main = new URL('../../src/cli/main.js', import.meta.url).pathname;
    const annotate = (prefix: string) => new Promise<number | null>((resolve) => {
      const keys = Array.from({ length: 40 }, (_, i) => `${prefix}${i}=${prefix}-value-${i}`);
      spawn(process.execPath, [main, ...store, '--quiet', 'annotate', 'app:v1', ...keys], { stdio: 'ignore' }).on('exit', resolve);
    });
    assert.equal(await Promise.all([annotate('a'), annotate('b')]), [0, 0]);
    const got = json<{ annotations: Record<string, string> }>(stratum([...store, '--json', 'annotate', 'app:v1']), 'read').annotations;
    assert.is(Object.keys(got).length, 80);
    for (let i = 0; i < 40; i++) assert.ok(got[`a${i}`] === `a-value-${i}` && got[`b${i}`] === `b-value-${i}`, `key ${i}`);
  });
});

test('the same as an ordinary user', async () => {
  const why = userTestsUnavailable();
  if (why) {
    console.log(`skipped: ${why}`);
    return;
  }
  const user = testUser();
  await withTempDir(async (dir) => {
    const runtimeDir = makeRuntimeDir(user, dir);
    const work = join(dir, 'work');
    mkdirSync(work);
    giveTo(user, dir);
    story((args) => stratumAsUser(user, args, { runtimeDir }), work);
    assert.is(spawnSync('find', [join(work, 'a'), '!', '-user', user.name]).stdout.toString(), '', 'everything in the store is the user\'s');
  });
});

test.run();
