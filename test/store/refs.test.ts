import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MAX_ALIAS_DEPTH, parseRefFile } from '../../src/store/refs.js';
import { Store } from '../../src/store/store.js';
import { expectError } from '../helpers/assert.js';
import { withTempDir } from '../helpers/dirs.js';

const ID_A = 'a'.repeat(64);
const ID_B = 'b'.repeat(64);

async function storeWithCommits(dir: string, ...ids: string[]): Promise<Store> {
  const store = await Store.open(join(dir, 's'), { create: true });
  for (const id of ids) {
    mkdirSync(store.commits.path(id), { recursive: true });
    writeFileSync(join(store.commits.path(id), 'metadata.toml'), '');
  }
  return store;
}

test('a tag file holds the commit id on its first line; later lines are kept as a note', () =>
  withTempDir(async (dir) => {
    const store = await storeWithCommits(dir, ID_A);
    await store.tags.write('app', 'v1', { kind: 'id', id: ID_A }, { note: 'by test\n' });
    assert.is(readFileSync(join(dir, 's', 'refs', 'app', 'tags', 'v1'), 'utf8'), `${ID_A}\nby test\n`);
    assert.equal(await store.tags.resolve('app', 'v1'), { id: ID_A, chain: ['app:v1'] });
    assert.equal(await store.tags.labels(), ['app']);
    assert.equal(await store.tags.tags('app'), ['v1']);
  }));

test('an existing tag is TAG_EXISTS unless forced, and the old value is kept', () =>
  withTempDir(async (dir) => {
    const store = await storeWithCommits(dir, ID_A, ID_B);
    await store.tags.write('app', 'v1', { kind: 'id', id: ID_A });
    const err = await expectError(store.tags.write('app', 'v1', { kind: 'id', id: ID_B }), 'TAG_EXISTS');
    assert.match(err.message, /app:v1 exists; use --force/);
    assert.is((await store.tags.resolve('app', 'v1')).id, ID_A);
    await store.tags.write('app', 'v1', { kind: 'id', id: ID_B }, { force: true });
    assert.is((await store.tags.resolve('app', 'v1')).id, ID_B);
  }));

test('aliases resolve across labels; the chain is reported', () =>
  withTempDir(async (dir) => {
    const store = await storeWithCommits(dir, ID_A);
    await store.tags.write('base', 'v1', { kind: 'id', id: ID_A });
    await store.tags.write('app', 'stable', { kind: 'alias', label: 'base', tag: 'v1' });
    await store.tags.write('app', 'latest', { kind: 'alias', label: 'app', tag: 'stable' });
    assert.equal(await store.tags.resolve('app', 'latest'), { id: ID_A, chain: ['app:latest', 'app:stable', 'base:v1'] });
  }));

test('a ref pointing at itself is REF_CYCLE, not a hang', () =>
  withTempDir(async (dir) => {
    const store = await storeWithCommits(dir);
    await store.tags.write('app', 'loop', { kind: 'alias', label: 'app', tag: 'loop' });
    await expectError(store.tags.resolve('app', 'loop'), 'REF_CYCLE');
    await store.tags.write('app', 'x', { kind: 'alias', label: 'app', tag: 'y' });
    await store.tags.write('app', 'y', { kind: 'alias', label: 'app', tag: 'x' });
    const err = await expectError(store.tags.resolve('app', 'x'), 'REF_CYCLE');
    assert.match(err.message, /app:x -> app:y -> app:x/);
  }));

test('a 10 000-deep alias chain is refused at the depth limit without reading it all', () =>
  withTempDir(async (dir) => {
    const store = await storeWithCommits(dir, ID_A);
    const tags = join(dir, 's', 'refs', 'app', 'tags');
    mkdirSync(tags, { recursive: true });
    for (let i = 0; i < 10_000; i++) writeFileSync(join(tags, `t${i}`), `refs/app/tags/t${i + 1}\n`);
    writeFileSync(join(tags, 't10000'), `${ID_A}\n`);
    const err = await expectError(store.tags.resolve('app', 't0'), 'REF_TOO_DEEP');
    assert.match(err.message, String(MAX_ALIAS_DEPTH));
    assert.is((await store.tags.resolve('app', `t${10_000 - MAX_ALIAS_DEPTH}`)).id, ID_A, 'a chain within the limit resolves');
  }));

test('dangling refs are reported with their own code, missing tags are NOT_FOUND', () =>
  withTempDir(async (dir) => {
    const store = await storeWithCommits(dir);
    await store.tags.write('app', 'gone', { kind: 'id', id: ID_B });
    const err = await expectError(store.tags.resolve('app', 'gone'), 'DANGLING_REF');
    assert.match(err.message, ID_B);
    await store.tags.write('app', 'alias', { kind: 'alias', label: 'app', tag: 'missing' });
    await expectError(store.tags.resolve('app', 'alias'), 'DANGLING_REF');
    await expectError(store.tags.resolve('app', 'nope'), 'NOT_FOUND');
    assert.equal(await store.tags.tags('app'), ['alias', 'gone'], 'listing still works with dangling refs');
  }));

test('garbage in a ref file is CORRUPT_STORE; hostile names never reach the disk', () =>
  withTempDir(async (dir) => {
    const store = await storeWithCommits(dir);
    mkdirSync(join(dir, 's', 'refs', 'app', 'tags'), { recursive: true });
    writeFileSync(join(dir, 's', 'refs', 'app', 'tags', 'bad'), 'refs/../../etc/passwd\n');
    await expectError(store.tags.resolve('app', 'bad'), 'CORRUPT_STORE');
    assert.throws(() => parseRefFile('', 'x'), /first line/);
    await expectError(store.tags.write('app', '../evil', { kind: 'id', id: ID_A }), 'BAD_NAME');
    await expectError(store.tags.write('../evil', 'x', { kind: 'id', id: ID_A }), 'BAD_NAME');
    await expectError(store.tags.resolve('app', 'a/b'), 'BAD_NAME');
  }));

test.run();
