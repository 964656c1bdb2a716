// The store-level annotations API (src/store/annotations.ts) that other commands (OCI push/pull)
// use, and what a bundle's annotations record may and may not be.
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { annotationsOf, labelAnnotationsOf, pruneAnnotations, setAnnotations, setLabelAnnotations } from '../../src/store/annotations.js';
import { BUNDLE_MAGIC, END_RECORD, encodeRecord } from '../../src/store/bundle.js';
import { importBundle } from '../../src/store/commands/bundle.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { remove } from '../../src/store/commands/remove.js';
import { MountState } from '../../src/store/mount-state.js';
import { decodeFrame } from '../../src/session/frame.js';
import { fsverityDigest } from '../../src/store/digest.js';
import { Store } from '../../src/store/store.js';
import { expectError } from '../helpers/assert.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';
import { bundleOf } from '../helpers/bundles.js';

async function fixture(dir: string) {
  const store = await Store.open(join(dir, 'store'), { create: true });
  const { id } = await importDirectory(store, makeTree(join(dir, 'tree'), { 'a.txt': 'a'.repeat(5000), 'b.txt': 'b' }), { label: 'app', tag: 'v1' });
  return { store, id };
}

/** The frames of a bundle, in order. */
function records(bundle: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = BUNDLE_MAGIC.length; ; ) {
    const length = bundle.readUInt32LE(at);
    if (length === 0) return out;
    out.push(bundle.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
}

function reassemble(frames: { type: string; data: Buffer }[]): Buffer {
  return Buffer.concat([BUNDLE_MAGIC, ...frames.map((f) => encodeRecord(f.type, f.data)), END_RECORD]);
}

const decode = (frame: Buffer) => decodeFrame(frame, { maxSize: 1 << 24, digest: fsverityDigest });

test('reading annotations of a store that has none creates nothing', async () => {
  await withTempDir(async (dir) => {
    const { store, id } = await fixture(dir);
    assert.equal(await annotationsOf(store, id), {});
    assert.equal(await labelAnnotationsOf(store, 'app'), {});
    assert.is(await pruneAnnotations(store, () => false), 0);
    assert.is(existsSync(join(store.root, 'annotations.session')), false);
  });
});

test('keys that differ only in ".", "_" and "/" stay apart; labels with those characters too', async () => {
  await withTempDir(async (dir) => {
    const { store, id } = await fixture(dir);
    const all = { 'a.b': '1', a_b: '2', 'a/b': '3', 'a-b': '4', 'a_2eb': '5' };
    assert.equal(await setAnnotations(store, id, { set: all }), Object.fromEntries(Object.entries(all).sort()));
    await setLabelAnnotations(store, 'my_app.x', { set: { k: 'label' } });
    assert.equal(await labelAnnotationsOf(store, 'my_app.x'), { k: 'label' });
    assert.equal(await labelAnnotationsOf(store, 'my_app_2ex'), {});
    assert.equal(await setAnnotations(store, id, { remove: ['a.b', 'a_2eb'] }), { 'a-b': '4', 'a/b': '3', a_b: '2' });
  });
});

test('mistakes are StratumErrors with the store\'s codes; nothing is written', async () => {
  await withTempDir(async (dir) => {
    const { store, id } = await fixture(dir);
    await expectError(setAnnotations(store, '0'.repeat(64), { set: { k: 'v' } }), 'NOT_FOUND');
    await expectError(setAnnotations(store, id, { set: { 'bad key': 'v' } }), 'BAD_NAME');
    await expectError(setAnnotations(store, id, { set: { k: 'nul\0' } }), 'USAGE');
    await expectError(setAnnotations(store, id, { set: { k: 'x'.repeat(65 * 1024) } }), 'USAGE');
    await expectError(annotationsOf(store, 'not-an-id'), 'BAD_NAME');
    assert.equal(await annotationsOf(store, id), {});
    // a session written by a newer version is refused, not misread
    await setAnnotations(store, id, { set: { k: 'v' } });
    await fsp.writeFile(join(store.root, 'annotations.session', 'info'), '2\nstratum 9\n');
    await expectError(annotationsOf(store, id), 'STORE_VERSION');
  });
});

test('pruneAnnotations drops the annotations of commits that are gone, keeps the rest', async () => {
  await withTempDir(async (dir) => {
    const { store, id } = await fixture(dir);
    const { id: other } = await importDirectory(store, makeTree(join(dir, 'tree2'), { 'c.txt': 'c' }), { label: 'app', tag: 'v2' });
    await setAnnotations(store, id, { set: { keep: 'yes' } });
    await setAnnotations(store, other, { set: { keep: 'no' } });
    assert.is(await pruneAnnotations(store, (c) => c === id), 1);
    assert.equal(await annotationsOf(store, id), { keep: 'yes' });
    assert.equal(await annotationsOf(store, other), {});
  });
});

test('a label too long once escaped has no annotations: status reads {}, setting one is one BAD_NAME line', async () => {
  await withTempDir(async (dir) => {
    const { store } = await fixture(dir);
    const label = `a${'._'.repeat(60)}b`;
    assert.equal(await labelAnnotationsOf(store, label), {});
    const err = await expectError(setLabelAnnotations(store, label, { set: { k: 'v' } }), 'BAD_NAME');
    assert.match(err.message, /cannot be annotated/);
  });
});

test('gc forgets the annotations of the commits it frees, and removing a label its own: re-creating either starts clean', async () => {
  await withTempDir(async (dir) => {
    const { store, id } = await fixture(dir);
    await setAnnotations(store, id, { set: { owner: 'ana' } });
    await setLabelAnnotations(store, 'app', { set: { team: 'x' } });
    const removed = await remove(store, 'app', { force: true, mounts: new MountState(join(dir, 'state')) });
    assert.ok(removed.gc.commits >= 1, 'the commit was freed');
    const again = await importDirectory(store, join(dir, 'tree'), { label: 'app', tag: 'v1' });
    assert.is(again.id, id, 'the same tree is the same commit');
    assert.equal(await annotationsOf(store, id), {});
    assert.equal(await labelAnnotationsOf(store, 'app'), {});
  });
});

test('a bundle\'s annotations record: checked like user input, required by format 2, refused before anything is visible', async () => {
  await withTempDir(async (dir) => {
    const { store, id } = await fixture(dir);
    await setAnnotations(store, id, { set: { 'org.example.k': 'v' } });
    const frames = records(await bundleOf(store, 'app:v1')).map(decode);
    assert.equal(frames.map((f) => f.type), ['manifest', 'metadata', 'image', 'annotations', 'blob']);
    assert.equal(JSON.parse(frames[3]!.data.toString()), { 'org.example.k': 'v' });
    const target = await Store.open(join(dir, 'target'), { create: true });
    const hostile = [
      JSON.stringify({ 'bad key': 'v' }),
      JSON.stringify(['not', 'an', 'object']),
      JSON.stringify({ k: 5 }),
      'not json',
    ];
    for (const body of hostile) {
      const bundle = reassemble(frames.map((f) => (f.type === 'annotations' ? { type: f.type, data: Buffer.from(body) } : f)));
      await expectError(importBundle(target, Readable.from([bundle])), 'CORRUPT_FRAME');
    }
    // format 2 without its annotations record
    await expectError(importBundle(target, Readable.from([reassemble(frames.filter((f) => f.type !== 'annotations'))])), 'CORRUPT_FRAME');
    assert.equal(await target.tags.labels(), [], 'nothing became visible');
    // the real one imports, and merges with what the commit already had there
    const result = await importBundle(target, Readable.from([reassemble(frames)]));
    assert.is(result.annotations, 1);
    await setAnnotations(target, id, { set: { local: 'x', 'org.example.k': 'changed' } });
    await importBundle(target, Readable.from([reassemble(frames)]));
    assert.equal(await annotationsOf(target, id), { local: 'x', 'org.example.k': 'v' });
  });
});

test.run();
