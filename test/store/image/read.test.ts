import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StratumError } from '../../../src/store/error.js';
import { parseDump } from '../../../src/store/image/dump.js';
import { FileSource, ImageReader, bufferSource, walkImage } from '../../../src/store/image/read.js';
import { writeImage } from '../../../src/store/image/write.js';
import { addEntry, newInode, type Tree } from '../../../src/store/image/tree.js';
import { loadVectors } from './vectors.js';
import { diffViews, expectedView, readerView } from './view.js';

const noObjects = (): undefined => undefined;

test('the reader sees every vector tree as the kernel would (stubs hidden, escapes undone)', () => {
  for (const v of loadVectors()) {
    if (v.expected === 'refused') continue;
    const tree = parseDump(v.dump);
    const img = writeImage(tree, v.options);
    const version = Buffer.from(img).readUInt32LE(12);
    const reader = ImageReader.open(bufferSource(img));
    assert.equal(diffViews(expectedView(tree, version, noObjects), readerView(reader, noObjects)), [], v.file);
  }
});

test('lookup finds every name by binary search, including in multi-block directories', () => {
  const tree = parseDump(loadVectors().find((v) => v.file === 'bigdir.dump')!.dump);
  const reader = ImageReader.open(bufferSource(writeImage(tree)));
  const big = reader.lookup(reader.rootNid, 'big')!;
  assert.ok(reader.getattr(big).size > 4096 * 4, 'directory spans blocks');
  for (const name of tree.root.children!.get('big')!.inode.children!.keys()) {
    const nid = reader.lookup(big, name);
    assert.ok(nid !== undefined, name);
  }
  assert.is(reader.lookup(big, 'entry-with-a-longish-name-0'), undefined);
  assert.is(reader.lookup(big, 'zzz'), undefined);
  assert.is(reader.lookup(big, ''), undefined);
  assert.is(reader.lookup(reader.rootNid, '00'), undefined, 'whiteout stubs are hidden');
  assert.is(reader.lookup(reader.rootNid, '.'), reader.rootNid);
});

test('readdir offsets resume exactly where the previous call stopped', () => {
  const tree = parseDump(loadVectors().find((v) => v.file === 'bigdir.dump')!.dump);
  const reader = ImageReader.open(bufferSource(writeImage(tree)));
  const big = reader.lookup(reader.rootNid, 'big')!;
  const all = reader.readdir(big, 0, 100_000).map((e) => e.name);
  assert.is(all.length, 702);
  const paged: string[] = [];
  for (let offset = 0; ;) {
    const batch = reader.readdir(big, offset, 7);
    if (batch.length === 0) break;
    paged.push(...batch.map((e) => e.name));
    offset = batch[batch.length - 1]!.next;
  }
  assert.equal(paged, all);
  assert.equal(reader.readdir(big, -1), []);
  assert.equal(reader.readdir(big, 0.5), []);
  assert.equal(reader.readdir(big, 2 ** 40), []);
  const rootNames = reader.readdir(reader.rootNid).map((e) => e.name);
  assert.equal(rootNames, ['.', '..', 'big', 'half']);
});

test('external files expose digest and object path; metacopy and redirect stay hidden', () => {
  const tree = parseDump(loadVectors().find((v) => v.file === 'external.dump')!.dump);
  const reader = ImageReader.open(bufferSource(writeImage(tree)));
  const nid = reader.lookup(reader.rootNid, 'g4')!;
  assert.is(reader.getattr(nid).size, 2 ** 32);
  const ext = reader.external(nid)!;
  assert.is(ext.digest, '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef');
  assert.is(ext.path, '01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef');
  assert.equal(reader.listxattr(nid), []);
  assert.ok(reader.rawXattrs(nid).some((x) => x.name === 'trusted.overlay.metacopy'));
  assert.is(reader.external(reader.lookup(reader.rootNid, 'nodigest')!)!.digest, undefined);
  assert.is(reader.listxattr(reader.rootNid).length, 0, 'root opaque is overlay-internal');
});

test('escaped whiteouts read as empty files carrying trusted.overlay.whiteout', () => {
  const tree = parseDump(loadVectors().find((v) => v.file === 'whiteout.dump')!.dump);
  const reader = ImageReader.open(bufferSource(writeImage(tree)));
  const d = reader.lookup(reader.rootNid, 'd')!;
  const wh = reader.lookup(d, 'wh')!;
  assert.is(reader.getattr(wh).mode, 0o100600);
  assert.ok(reader.getxattr(wh, 'trusted.overlay.whiteout') !== undefined);
  assert.equal([...reader.getxattr(d, 'trusted.overlay.opaque')!], [0x78]);
});

test('FileSource reads through a bounded block cache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stratum-image-'));
  try {
    const tree = parseDump(loadVectors().find((v) => v.file === 'bigdir.dump')!.dump);
    const img = writeImage(tree);
    writeFileSync(join(dir, 'x.cfs'), img);
    const source = new FileSource(join(dir, 'x.cfs'), { cacheBlocks: 4 });
    try {
      const reader = ImageReader.open(source);
      let n = 0;
      walkImage(reader, () => { n++; });
      assert.is(n, 1 + 2 + 700 + 90);
    } finally {
      source.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('opening a 100 000-entry image reads almost nothing', () => {
  const root = newInode({ mode: 0o40755 });
  for (let d = 0; d < 100; d++) {
    const dir = newInode({ mode: 0o40755 });
    addEntry(root, `d${d}`, dir);
    for (let f = 0; f < 1000; f++) addEntry(dir, `file-${f}`, newInode({ mode: 0o100644, content: Buffer.from('hi') }));
  }
  const tree: Tree = { root };
  const img = writeImage(tree);
  let bytesRead = 0;
  const counting = { size: img.length, readAt: (o: number, l: number) => { bytesRead += l; return img.subarray(o, o + l); } };
  const t0 = performance.now();
  const reader = ImageReader.open(counting);
  const nid = reader.lookup(reader.lookup(reader.rootNid, 'd57')!, 'file-999')!;
  const ms = performance.now() - t0;
  assert.equal([...reader.readContent(nid)], [0x68, 0x69]);
  assert.ok(bytesRead < 64 * 1024, `read ${bytesRead} bytes`);
  assert.ok(ms < 50, `took ${ms} ms`);
});

test('a directory cycle is reported, not followed', () => {
  // Make directory "a" list itself as child "loop" by rewriting one dirent nid.
  const root = newInode({ mode: 0o40755 });
  const a = newInode({ mode: 0o40755 });
  addEntry(root, 'a', a);
  addEntry(a, 'loop', newInode({ mode: 0o40755 }));
  const img = Buffer.from(writeImage({ root }));
  const reader = ImageReader.open(bufferSource(img));
  const aNid = reader.lookup(reader.rootNid, 'a')!;
  const loopNid = reader.lookup(aNid, 'loop')!;
  // Patch every dirent pointing at loopNid (u64 LE) except the inode's own "." to point at aNid.
  const needle = Buffer.alloc(8);
  needle.writeBigUInt64LE(BigInt(loopNid));
  let patched = 0;
  for (let i = img.indexOf(needle); i >= 0; i = img.indexOf(needle, i + 1)) {
    if (img[i + 10] === 2 && img.readUInt16LE(i + 8) > 0) {
      const copy = Buffer.from(img);
      copy.writeBigUInt64LE(BigInt(aNid), i);
      try {
        walkImage(ImageReader.open(bufferSource(copy)), () => {});
      } catch (e) {
        assert.ok(e instanceof StratumError && e.code === 'CORRUPT_IMAGE');
        patched++;
      }
    }
  }
  assert.ok(patched >= 1);
});

test.run();
