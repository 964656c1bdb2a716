import { readdirSync, writeFileSync, chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collectGarbage } from '../../src/store/commands/gc.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { listTags } from '../../src/store/commands/list.js';
import { log } from '../../src/store/commands/log.js';
import { remove } from '../../src/store/commands/remove.js';
import { labelStatus, storeStatus } from '../../src/store/commands/status.js';
import { tagCommit } from '../../src/store/commands/tag.js';
import { verify } from '../../src/store/commands/verify.js';
import { formatMetadata } from '../../src/store/metadata.js';
import { Store } from '../../src/store/store.js';
import { expectError } from '../helpers/assert.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';

async function twoCommits(dir: string) {
  const store = await Store.open(join(dir, 's'), { create: true });
  const a = await importDirectory(store, makeTree(join(dir, 'a'), { 'same.bin': 5000, 'only-a.bin': 7000 }), { label: 'app', tag: 'v1' });
  const b = await importDirectory(store, makeTree(join(dir, 'b'), { 'same.bin': 5000, 'only-b.bin': 9000 }), { label: 'app', tag: 'v2' });
  return { store, a: a.id, b: b.id };
}

test('tag copies, moves with --move, refuses an existing destination without --force', () =>
  withTempDir(async (dir) => {
    const { store, a, b } = await twoCommits(dir);
    assert.equal(await tagCommit(store, 'app:v1', 'stable'), { label: 'app', tag: 'stable', id: a });
    assert.is((await store.tags.resolve('app', 'v1')).id, a, 'a copy keeps the source');
    await expectError(tagCommit(store, 'app:v2', 'stable'), 'TAG_EXISTS');
    assert.is((await tagCommit(store, 'app:v2', 'stable', { force: true })).id, b);
    const moved = await tagCommit(store, 'app:v1', 'old', { move: true });
    assert.is(moved.moved, 'app:v1');
    assert.is(await store.tags.read('app', 'v1'), undefined);
    assert.is((await tagCommit(store, `app:${a.slice(0, 10)}`, 'byprefix')).id, a);
    assert.is((await tagCommit(store, `app@sha256:${b}`, 'other:copy')).label, 'other', 'into another label');
    await expectError(tagCommit(store, 'app:nope', 'x'), 'NOT_FOUND');
    await expectError(tagCommit(store, 'app:v2', '../x'), 'BAD_NAME');
    await expectError(tagCommit(store, `app:${a.slice(0, 10)}`, 'y', { move: true }), 'USAGE');
  }));

test('an id prefix shared by two commits is AMBIGUOUS_REF', () =>
  withTempDir(async (dir) => {
    const { store } = await twoCommits(dir);
    // fabricate commits sharing a prefix with a real one: ids are just directory names to resolve
    const ids = await store.commits.list();
    const prefix = ids[0]!.slice(0, 8);
    const twin = `${prefix}${'0'.repeat(56)}`;
    const meta = await store.commits.metadata(ids[0]!);
    await store.commits.add(Buffer.from('x'), { ...meta, metadataHash: twin });
    await expectError(tagCommit(store, `app:${prefix}`, 'z'), 'AMBIGUOUS_REF');
  }));

test('list shows tags with id, time and size; log follows parents; status summarizes', () =>
  withTempDir(async (dir) => {
    const { store, a, b } = await twoCommits(dir);
    const tags = await listTags(store, 'app');
    assert.equal(tags.map((t) => t.tag), [a, b, 'v1', 'v2'].sort());
    const v2 = tags.find((t) => t.tag === 'v2')!;
    assert.is(v2.id, b);
    assert.is(v2.bytes, 14_000);
    assert.ok(Date.parse(v2.timestamp!) > 0);
    const entries = await log(store, 'app:v2');
    assert.is(entries.length, 1, 'imports have no parent');
    assert.equal(entries[0]!.tags.sort(), [b, 'v2'].sort());
    const s = await storeStatus(store);
    assert.equal({ labels: s.labels, commits: s.commits, objects: s.objects }, { labels: 1, commits: 2, objects: 3 });
    const l = await labelStatus(store, 'app:v1');
    assert.is(l.head!.base, a, 'the first import is HEAD');
    assert.is(l.commit!.id, a);
  }));

test('removing a tag collects only what became unreachable; removing a label collects all of it', () =>
  withTempDir(async (dir) => {
    const { store, a, b } = await twoCommits(dir);
    await tagCommit(store, 'app:v2', 'keep');
    await store.tags.remove('app', b); // the id tag
    let r = await remove(store, 'app:v2');
    assert.equal({ commits: r.gc.commits, objects: r.gc.objects }, { commits: 0, objects: 0 }, 'app:keep still names it');
    // b is unreachable now (a is HEAD's base and tagged): its commit and its own object go
    const { gc } = await remove(store, 'app:keep');
    assert.equal({ commits: gc.commits, objects: gc.objects }, { commits: 1, objects: 1 });
    assert.ok(gc.bytes >= 9000);
    assert.is((await collectGarbage(store)).objects, 0, 'nothing left to collect');
    assert.equal(await store.commits.list(), [a]);
    assert.is((await verify(store, undefined)).problems.length, 0);
    await expectError(remove(store, 'app:gone'), 'NOT_FOUND');
    r = await remove(store, 'app');
    assert.is(r.gc.commits, 1);
    assert.equal(readdirSync(join(dir, 's', 'refs')), []);
    assert.equal(await store.commits.list(), []);
    const left: string[] = [];
    for await (const d of store.objects.list()) left.push(d);
    assert.equal(left, []);
  }));

test('gc --dry-run frees nothing; a label with uncommitted HEAD changes is kept unless forced', () =>
  withTempDir(async (dir) => {
    const { store } = await twoCommits(dir);
    await remove(store, 'app:v2').catch(() => undefined);
    const before = await store.commits.list();
    const dry = await collectGarbage(store, { dryRun: true });
    assert.ok(dry.dryRun);
    assert.equal(await store.commits.list(), before);
    makeTree(join(dir, 's', 'refs', 'app', 'head'), { 'new-file': 'uncommitted' });
    const err = await expectError(remove(store, 'app'), 'BUSY');
    assert.match(err.message, /uncommitted changes.*--force/);
    assert.ok((await store.tags.labels()).includes('app'));
    await remove(store, 'app', { force: true });
    assert.equal(await store.tags.labels(), []);
  }));

test('verify finds missing and corrupt objects by path, a bad image, a wrong Merkle root; repair removes corrupt objects', () =>
  withTempDir(async (dir) => {
    const { store, a, b } = await twoCommits(dir);
    assert.equal((await verify(store, undefined)).problems, []);
    const objects: string[] = [];
    for await (const d of store.objects.list()) objects.push(d);
    const [first, second] = objects.sort();
    chmodSync(store.objects.path(first!), 0o644);
    writeFileSync(store.objects.path(first!), 'tampered');
    (await import('node:fs')).unlinkSync(store.objects.path(second!));
    const report = await verify(store, 'app');
    const kinds = report.problems.map((p) => p.kind).sort();
    assert.ok(kinds.includes('corrupt-object') && kinds.includes('missing-object'), kinds.join());
    assert.ok(report.problems.every((p) => p.path?.startsWith('/')), 'problems name paths');
    const repaired = await verify(store, 'app', { repair: true });
    assert.equal(repaired.removed, [first]);
    assert.not.ok(await store.objects.has(first!));
    // metadata whose Merkle root does not match the image
    const metaPath = join(store.commits.path(a), 'metadata.toml');
    const meta = await store.commits.metadata(a);
    chmodSync(metaPath, 0o644);
    writeFileSync(metaPath, formatMetadata({ ...meta, merkleRoot: 'f'.repeat(64) }));
    assert.ok((await verify(store, 'app:v1')).problems.some((p) => p.kind === 'merkle-mismatch'));
    // an image that is not what its id says
    const imagePath = store.commits.imagePath(b);
    chmodSync(imagePath, 0o644);
    const bytes = readFileSync(imagePath);
    bytes[2000]! ^= 1;
    writeFileSync(imagePath, bytes);
    assert.ok((await verify(store, 'app:v2')).problems.some((p) => p.kind === 'bad-image'));
  }));

test.run();
