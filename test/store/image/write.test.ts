import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { StratumError } from '../../../src/store/error.js';
import { parseDump } from '../../../src/store/image/dump.js';
import { layout } from '../../../src/store/image/layout.js';
import { writeImage, emit } from '../../../src/store/image/write.js';
import { newInode, addEntry, utf8 } from '../../../src/store/image/tree.js';
import { xxh32 } from '../../../src/store/image/xxhash.js';
import { loadVectors, vectorFiles } from './vectors.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('every committed vector is byte-identical to mkcomposefs 1.0.8', () => {
  const vectors = loadVectors();
  assert.ok(vectors.length >= 20, `only ${vectors.length} vectors`);
  for (const v of vectors) {
    if (v.expected === 'refused') {
      assert.throws(() => writeImage(parseDump(v.dump), v.options), (e: unknown) => e instanceof StratumError && e.code === 'CORRUPT_IMAGE', v.file);
      continue;
    }
    assert.is(sha256(writeImage(parseDump(v.dump), v.options)), v.expected, `${v.file} ${JSON.stringify(v.options)}`);
  }
});

test('every vector dump file has an expected hash', () => {
  const listed = new Set(loadVectors().map((v) => v.file));
  for (const f of vectorFiles()) assert.ok(listed.has(f), `${f} missing from expected.txt`);
});

test('xxh32 matches the reference values', () => {
  const enc = (s: string): Uint8Array => Buffer.from(s, 'latin1');
  assert.is(xxh32(enc(''), 0), 0x02cc5d05);
  assert.is(xxh32(enc('a'), 0), 0x550d7456);
  assert.is(xxh32(enc('abc'), 0), 0x32d153ff);
  assert.is(xxh32(enc('Nobody inspects the spammish repetition'), 0), 0xe2293b2f);
  assert.is(xxh32(enc('abc'), 0x25bbe08f), xxh32(enc('abc'), 0x25bbe08f));
});

test('layout: root first, stubs 00-ff, BFS order, compact only at the minimum mtime', () => {
  const root = newInode({ mode: 0o40755, mtimeSec: 100 });
  const dir = newInode({ mode: 0o40700, mtimeSec: 100 });
  addEntry(root, 'dir', dir);
  addEntry(dir, 'late', newInode({ mode: 0o100644, mtimeSec: 200, content: Buffer.from('x') }));
  addEntry(root, '-early', newInode({ mode: 0o100644, mtimeSec: 100, uid: 70000 }));
  const plan = layout({ root });
  assert.is(plan.nodes.length, 1 + 2 + 256 + 1);
  assert.is(plan.nodes[0]!.ino, 0);
  const rootNames = plan.nodes[0]!.dirents!.map((d) => d.name);
  assert.equal(rootNames.slice(0, 3), ['-early', '.', '..']);
  assert.ok(rootNames.includes('00') && rootNames.includes('ff'));
  const late = plan.nodes[plan.nodes.length - 1]!;
  assert.is(late.compact, false); // mtime differs from the minimum
  assert.is(plan.nodes[0]!.compact, true);
  const early = plan.nodes[1]!;
  assert.is(early.compact, false); // uid > 65535
  assert.is(plan.minMtimeSec, 100);
  assert.is(emit(plan).length, plan.size);
});

test("a directory's entries, `.` and `..` among them, are in strcmp order whatever the bytes of the names", () => {
  const root = newInode({ mode: 0o40755 });
  const dir = newInode({ mode: 0o40755 });
  addEntry(root, 'dir', dir);
  const names = ['a', '..a', '.-', '!', '.a', '-', '\xff', '.\x01', ' '];
  for (const n of names) addEntry(dir, n, newInode({ mode: 0o100644, content: Buffer.from(n, 'latin1') }));
  const plan = layout({ root });
  const got = plan.nodes.find((p) => p.source === dir)!.dirents!.map((d) => d.name);
  const want = [...names, '.', '..'].sort((x, y) => Buffer.compare(Buffer.from(x, 'latin1'), Buffer.from(y, 'latin1')));
  assert.equal(got, want);
});

test('a source whiteout deep in the tree bumps the version as one at the top does, with the opaque marks of version 1', () => {
  const build = (): ReturnType<typeof newInode> => {
    const root = newInode({ mode: 0o40755 });
    let d = root;
    for (let i = 0; i < 5; i++) { const n = newInode({ mode: 0o40755 }); addEntry(d, `d${i}`, n); addEntry(d, `f${i}`, newInode({ mode: 0o100644, size: 9000, digest: 'ab'.repeat(32) })); d = n; }
    addEntry(d, 'wh', newInode({ mode: 0o20000, rdev: 0 }));
    return root;
  };
  const img = writeImage({ root: build() });
  assert.is(Buffer.from(img).readUInt32LE(12), 1);
  assert.is(sha256(img), sha256(writeImage({ root: build() }, { minVersion: 1 })), 'the same bytes as asking for version 1');
});

test('a source whiteout bumps composefs_version to 1 unless maxVersion is 0', () => {
  const root = newInode({ mode: 0o40755 });
  addEntry(root, 'wh', newInode({ mode: 0o20000, rdev: 0 }));
  const header = (img: Uint8Array): number => Buffer.from(img).readUInt32LE(12);
  assert.is(header(writeImage({ root })), 1);
  assert.is(header(writeImage({ root }, { maxVersion: 0 })), 0);
});

test('writing is deterministic and does not modify the tree', () => {
  const tree = parseDump(loadVectors().find((v) => v.file === 'xattrs.dump')!.dump);
  const a = writeImage(tree);
  const b = writeImage(tree);
  assert.is(sha256(a), sha256(b));
});

test('bad trees are refused with CORRUPT_IMAGE', () => {
  const isCorrupt = (e: unknown): boolean => e instanceof StratumError && e.code === 'CORRUPT_IMAGE';
  const root = newInode({ mode: 0o40755 });
  const f = newInode({ mode: 0o100644, content: Buffer.from('x') });
  addEntry(root, 'a', f);
  addEntry(root, 'b', f); // second primary entry for one inode
  assert.throws(() => writeImage({ root }), isCorrupt);
  const root2 = newInode({ mode: 0o40755 });
  addEntry(root2, utf8('x'), newInode({ mode: 0o100644, content: Buffer.alloc(5001) })); // inline above 5000
  assert.throws(() => writeImage({ root: root2 }), isCorrupt);
  const root3 = newInode({ mode: 0o40755 });
  addEntry(root3, 'bad', newInode({ mode: 0o170644 }));
  assert.throws(() => writeImage({ root: root3 }), isCorrupt);
});

test.run();
