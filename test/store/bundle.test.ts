import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BUNDLE_MAGIC, END_RECORD, encodeRecord } from '../../src/store/bundle.js';
import { importBundle } from '../../src/store/commands/bundle.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { fsverityDigest } from '../../src/store/digest.js';
import { StratumError } from '../../src/store/error.js';
import { bufferSource, ImageReader } from '../../src/store/image/read.js';
import { addEntry, newInode } from '../../src/store/image/tree.js';
import { writeImage } from '../../src/store/image/write.js';
import { formatMetadata } from '../../src/store/metadata.js';
import { Store } from '../../src/store/store.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';
import { bundleOf } from '../helpers/bundles.js';

async function objectsIn(store: Store): Promise<string[]> {
  const all: string[] = [];
  for await (const d of store.objects.list()) all.push(d);
  return all.sort();
}

async function rejected(store: Store, bundle: Buffer, code = 'CORRUPT_FRAME'): Promise<string> {
  try {
    await importBundle(store, Readable.from([bundle]));
  } catch (err) {
    assert.instance(err, StratumError, String(err));
    assert.is((err as StratumError).code, code, (err as Error).message);
    return (err as Error).message;
  }
  return assert.unreachable('the bundle was accepted') as never;
}

async function source(dir: string) {
  const store = await Store.open(join(dir, 'src-store'), { create: true });
  const tree = makeTree(join(dir, 'tree'), { 'a.bin': 70_000, 'b/c.bin': 300_000, 'b/small.txt': 'tiny', 'text.txt': 'x'.repeat(50_000) });
  const { id } = await importDirectory(store, tree, { label: 'app', tag: 'v1' });
  return { store, id, bundle: await bundleOf(store, 'app:v1') };
}

test('export then import into an empty store gives the same commit id, tags and a clean verify', () =>
  withTempDir(async (dir) => {
    const { id, bundle } = await source(dir);
    const target = await Store.open(join(dir, 'dst'), { create: true });
    const result = await importBundle(target, Readable.from([bundle]));
    assert.is(result.id, id);
    assert.equal(result.tags, [id, 'v1']);
    assert.is(result.newObjects, 3);
    assert.is((await target.tags.resolve('app', 'v1')).id, id);
    assert.is((await target.heads.read('app'))!.base, id);
    assert.equal((await verify(target, undefined)).problems, []);
    const again = await importBundle(target, Readable.from([bundle]));
    assert.is(again.newObjects, 0, 'dedup');
    assert.not.ok(again.newCommit);
    const renamed = await importBundle(target, Readable.from([bundle]), { label: 'copy', tag: 'imported' });
    assert.is(renamed.label, 'copy');
  }));

test('a bundle cut at every 10% is refused and leaves the store as it was', () =>
  withTempDir(async (dir) => {
    const { bundle } = await source(dir);
    const target = await Store.open(join(dir, 'dst'), { create: true });
    for (let tenth = 0; tenth < 10; tenth++) {
      const message = await rejected(target, bundle.subarray(0, Math.floor((bundle.length * tenth) / 10)));
      assert.match(message, /bad bundle/);
    }
    await rejected(target, bundle.subarray(0, bundle.length - 1));
    assert.equal(await objectsIn(target), []);
    assert.equal(await target.commits.list(), []);
    assert.equal(await target.tags.labels(), []);
    assert.equal(readdirSync(join(dir, 'dst', 'tmp')), []);
  }));

test('flipped bits anywhere are caught before anything becomes visible', () =>
  withTempDir(async (dir) => {
    const { bundle } = await source(dir);
    const target = await Store.open(join(dir, 'dst'), { create: true });
    for (let i = 1; i <= 40; i++) {
      const bad = Buffer.from(bundle);
      const at = Math.floor((bad.length * i) / 41);
      bad[at]! ^= 1 << (i % 8);
      try {
        await importBundle(target, Readable.from([bad]));
        assert.unreachable(`a flip at ${at} was accepted`);
      } catch (err) {
        assert.instance(err, StratumError, `flip at ${at}: ${String(err)}`);
      }
    }
    assert.equal(await objectsIn(target), []);
    assert.equal(await target.commits.list(), []);
  }));

test('hostile bundles: bad names, unused or repeated objects, huge declared sizes, trailing bytes', () =>
  withTempDir(async (dir) => {
    const { store, id, bundle } = await source(dir);
    const target = await Store.open(join(dir, 'dst'), { create: true });
    const manifest = (m: object) => encodeRecord('manifest', Buffer.from(JSON.stringify({ format: 1, label: 'app', tag: 'v1', id, objects: 3, ...m })));
    const rest = bundle.subarray(BUNDLE_MAGIC.length + 4 + bundle.readUInt32LE(BUNDLE_MAGIC.length)); // after the manifest
    assert.match(await rejected(target, Buffer.concat([BUNDLE_MAGIC, manifest({ label: '../../etc' }), rest])), /label/);
    assert.match(await rejected(target, Buffer.concat([BUNDLE_MAGIC, manifest({ tag: 'a/b' }), rest])), /tag/);
    assert.match(await rejected(target, Buffer.concat([Buffer.from('not a bundle at all\n'), rest])), /stratum-bundle/);
    const huge = Buffer.alloc(4);
    huge.writeUInt32LE(0xfffffff0);
    assert.match(await rejected(target, Buffer.concat([BUNDLE_MAGIC, huge])), /claims/);
    const body = bundle.subarray(0, bundle.length - END_RECORD.length);
    assert.match(await rejected(target, Buffer.concat([body, encodeRecord('blob', Buffer.from('not part of the commit')), END_RECORD])), /not used/);
    const firstBlob = await store.objects.open((await objectsIn(store))[0]!);
    const blobBytes = await firstBlob.readFile();
    await firstBlob.close();
    assert.match(await rejected(target, Buffer.concat([body, encodeRecord('blob', blobBytes), END_RECORD])), /twice/);
    assert.match(await rejected(target, Buffer.concat([bundle, Buffer.from('junk')])), /after its end/);
    assert.equal(await objectsIn(target), []);
  }));

test('an image whose redirect leads out of the object store is refused, directly and in a bundle', () =>
  withTempDir(async (dir) => {
    const root = newInode({ mode: 0o40755 });
    const digest = 'ab'.repeat(32);
    addEntry(root, 'passwd', newInode({ mode: 0o100644, size: 1000, digest, payload: '../../../../etc/passwd' }));
    const image = writeImage({ root });
    const reader = ImageReader.open(bufferSource(image));
    const nid = reader.lookup(reader.rootNid, 'passwd')!;
    assert.is(reader.external(nid)!.path, '../../../../etc/passwd', 'the raw view shows what the image says');
    assert.throws(() => reader.objectOf(nid), /is not the path of object/);
    const id = fsverityDigest(image);
    const meta = formatMetadata({ merkleRoot: 'c'.repeat(64), metadataHash: id, timestamp: new Date().toISOString(), files: { count: 2, totalSize: 1000 }, merkle: { leafCount: 2, treeDepth: 1 } });
    const bundle = Buffer.concat([
      BUNDLE_MAGIC,
      encodeRecord('manifest', Buffer.from(JSON.stringify({ format: 1, label: 'evil', tag: 'v1', id, objects: 1 }))),
      encodeRecord('metadata', Buffer.from(meta)),
      encodeRecord('image', image),
      END_RECORD,
    ]);
    const target = await Store.open(join(dir, 'dst'), { create: true });
    await rejected(target, bundle, 'CORRUPT_IMAGE');
    assert.equal(await target.commits.list(), []);
  }));

test('an existing tag that names another commit is TAG_EXISTS; --tag renames', () =>
  withTempDir(async (dir) => {
    const { bundle } = await source(dir);
    const target = await Store.open(join(dir, 'dst'), { create: true });
    await importDirectory(target, makeTree(join(dir, 'other'), { x: 'other' }), { label: 'app', tag: 'v1' });
    await rejected(target, bundle, 'TAG_EXISTS');
    const ok = await importBundle(target, Readable.from([bundle]), { tag: 'v1-imported' });
    assert.ok(ok.tags.includes('v1-imported'));
  }));

test.run();
