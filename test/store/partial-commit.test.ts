// A commit the store has only in part (an interrupted rsync, a deleted file): verify and status
// say so, gc deletes nothing rather than the commit or its objects, commit and gc fail with one
// line, and verify --repair rebuilds a lost metadata.toml from commit.cfs.
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ensureUpper, headPaths } from '../../src/store/commands/commit.js';
import { collectGarbage } from '../../src/store/commands/gc.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { log } from '../../src/store/commands/log.js';
import { labelStatus, storeStatus } from '../../src/store/commands/status.js';
import { verify } from '../../src/store/commands/verify.js';
import { parseMetadata } from '../../src/store/metadata.js';
import { Store } from '../../src/store/store.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';
import { expectError } from '../helpers/assert.js';
import { stratum } from '../helpers/cli.js';
import { withTempDir } from '../helpers/dirs.js';

async function objectsOf(store: Store): Promise<string[]> {
  const out: string[] = [];
  for await (const d of store.objects.list()) out.push(d);
  return out.sort();
}

/** A store with label app (HEAD and tag v1) on an imported tree of three objects. */
async function imported(dir: string): Promise<{ store: Store; root: string; id: string }> {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'd'), { recursive: true });
  for (let i = 0; i < 3; i++) writeFileSync(join(src, 'd', `f${i}`), pseudoRandomBytes(5000 + i, i));
  const root = join(dir, 'store');
  const store = await Store.open(root, { create: true });
  const { id } = await importDirectory(store, src, { label: 'app', tag: 'v1' });
  return { store, root, id };
}

test('a commit without metadata.toml: verify reports it, gc deletes nothing, verify --repair rebuilds it', () =>
  withTempDir(async (dir) => {
    const { store, root, id } = await imported(dir);
    const metaPath = join(store.commits.path(id), 'metadata.toml');
    const original = parseMetadata(readFileSync(metaPath, 'utf8'), id);
    const objects = await objectsOf(store);
    assert.is(objects.length, 3);
    rmSync(metaPath);

    const report = await verify(store, undefined);
    assert.equal(report.problems.map((p) => p.kind), ['missing-metadata']);
    assert.match(report.problems[0]!.message, /no metadata\.toml/);
    const cli = stratum(['verify', '--store', root]);
    assert.is(cli.status, 1, cli.stdout + cli.stderr);

    const status = await labelStatus(store, 'app');
    assert.ok(status.problems.some((p) => p.includes('HEAD of app') && p.includes('metadata.toml')), status.problems.join('\n'));
    assert.ok(status.problems.some((p) => p.includes('app:v1')), status.problems.join('\n'));
    assert.ok((await storeStatus(store)).problems.length >= 2);

    const err = await expectError(collectGarbage(store), 'CORRUPT_STORE');
    assert.match(err.message, /gc deleted nothing/);
    const gcCli = stratum(['gc', '--store', root]);
    assert.is(gcCli.status, 1);
    assert.is(gcCli.stderr.trim().split('\n').length, 1, gcCli.stderr);
    assert.not.match(gcCli.stderr, /internal error/);
    assert.ok(statSync(store.commits.imagePath(id)).isFile(), 'commit.cfs kept');
    assert.equal(await objectsOf(store), objects, 'every object kept');

    const repaired = await verify(store, undefined, { repair: true });
    assert.equal(repaired.rebuilt, [id]);
    const rebuilt = parseMetadata(readFileSync(metaPath, 'utf8'), id);
    assert.equal({ ...rebuilt, timestamp: '' }, { ...original, timestamp: '' }, 'all but the time follows from the image');
    assert.is(rebuilt.timestamp, statSync(store.commits.imagePath(id)).mtime.toISOString());
    assert.equal((await verify(store, undefined)).problems, []);
    const gc = await collectGarbage(store);
    assert.is(gc.commits + gc.objects, 0);
    assert.equal(await objectsOf(store), objects);
  }));

test('importing the same tree again puts a lost metadata.toml back', () =>
  withTempDir(async (dir) => {
    const { store, id } = await imported(dir);
    rmSync(join(store.commits.path(id), 'metadata.toml'));
    const again = await importDirectory(store, join(dir, 'src'), { label: 'app', tag: 'v1' });
    assert.is(again.id, id);
    assert.ok(statSync(join(store.commits.path(id), 'metadata.toml')).isFile());
    assert.equal((await verify(store, undefined)).problems, []);
  }));

test('commit.cfs deleted: commit and gc fail with one line, nothing is deleted, verify and status name it', () =>
  withTempDir(async (dir) => {
    const { store, root, id } = await imported(dir);
    await ensureUpper(store, (await store.heads.read('app'))!);
    writeFileSync(join(headPaths(store, 'app').upper, 'new.txt'), 'new\n');
    const objects = await objectsOf(store);
    rmSync(store.commits.imagePath(id));
    for (const args of [['commit', 'app'], ['gc']]) {
      const r = stratum([...args, '--store', root]);
      assert.is(r.status, 1, `${args[0]}: ${r.stderr}`);
      assert.is(r.stderr.trim().split('\n').length, 1, `${args[0]}: ${r.stderr}`);
      assert.not.match(r.stderr, /internal error/);
      assert.match(r.stderr, new RegExp(`${id}.*commit\\.cfs`), r.stderr);
    }
    assert.ok(statSync(join(store.commits.path(id), 'metadata.toml')).isFile());
    assert.equal(await objectsOf(store), objects);
    assert.equal(readFileSync(join(headPaths(store, 'app').upper, 'new.txt'), 'utf8'), 'new\n');
    const report = await verify(store, undefined);
    assert.ok(report.problems.some((p) => p.kind === 'bad-image' && p.message.includes('commit.cfs')), JSON.stringify(report.problems));
    assert.ok((await labelStatus(store, 'app')).problems.some((p) => p.includes('commit.cfs')));
    assert.equal((await log(store, 'app')).map((e) => e.id), [id], 'its history is still in its metadata');
  }));

test('a HEAD on a commit that is not in the store at all is reported by verify and status', () =>
  withTempDir(async (dir) => {
    const { store, id } = await imported(dir);
    await store.tags.remove('app', 'v1');
    rmSync(store.commits.path(id), { recursive: true });
    const report = await verify(store, undefined);
    assert.ok(report.problems.some((p) => p.kind === 'missing-commit' && p.commit === id), JSON.stringify(report.problems));
    assert.ok((await storeStatus(store)).problems.some((p) => p.includes('HEAD of app') && p.includes('not in the store')));
    await expectError(collectGarbage(store), 'CORRUPT_STORE');
  }));

test.run();
