// copyUpEntry without a mount: what a copy-up takes from the merged view (an object, a middle
// layer's file, inline bytes; attributes, xattrs, times; the parent's times kept), read back from
// the upper as kernel overlayfs would read it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, closeSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lsetxattr } from '../../src/native/xattr.js';
import { digestFdSync } from '../../src/native/verity.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { FileSource, ImageReader } from '../../src/store/image/read.js';
import { Store } from '../../src/store/store.js';
import { UnionView, type UnionNode } from '../../src/store/union.js';
import { UpperWriter, copyUpData, copyUpEntry } from '../../src/store/union-write.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';
import { withTempDir } from '../helpers/dirs.js';

const isRoot = process.getuid?.() === 0;
const ns = isRoot ? 'trusted' : 'user';
const big = pseudoRandomBytes(5000, 7);

/** The digest check the FUSE layer does: the object's content must match its name. */
function checkObject(path: string): void {
  const fd = openSync(path, 'r');
  try {
    if (digestFdSync(fd) !== path.slice(-65).replace('/', '')) throw Object.assign(new Error('EIO: corrupt object'), { code: 'EIO' });
  } finally {
    closeSync(fd);
  }
}

interface Setup { view: UnionView; w: UpperWriter; upper: string; middle: string; objectsDir: string; source: FileSource }

async function setup(dir: string, middleFiles: Record<string, string> = {}): Promise<Setup> {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'a', 'b'), { recursive: true });
  writeFileSync(join(src, 'a', 'b', 'obj.bin'), big);
  writeFileSync(join(src, 'a', 'b', 'small.txt'), 'inline');
  writeFileSync(join(src, 'a', 'sib.txt'), 'sibling');
  writeFileSync(join(src, 'x.bin'), pseudoRandomBytes(3000, 8));
  linkSync(join(src, 'x.bin'), join(src, 'x-link.bin'));
  lsetxattr(join(src, 'a', 'b', 'obj.bin'), 'user.kept', Buffer.from('v1'));
  lsetxattr(join(src, 'a', 'b'), 'user.dirx', Buffer.from('d'));
  chmodSync(join(src, 'a', 'b', 'obj.bin'), 0o640);
  chmodSync(join(src, 'a', 'b'), 0o750);
  utimesSync(join(src, 'a', 'b', 'obj.bin'), 1_000_000, 1_000_000);
  utimesSync(join(src, 'a', 'b'), 2_000_000, 2_000_000);
  utimesSync(join(src, 'a'), 3_000_000, 3_000_000);
  const store = await Store.open(join(dir, 'store'), { create: true });
  const { id } = await importDirectory(store, src, { label: 'app' });
  const upper = join(dir, 'upper'), middle = join(dir, 'middle');
  mkdirSync(upper);
  mkdirSync(middle);
  for (const [p, content] of Object.entries(middleFiles)) writeFileSync(join(middle, p), content);
  const source = new FileSource(store.commits.imagePath(id));
  const view = new UnionView(ImageReader.open(source), upper, ns, Object.keys(middleFiles).length > 0 ? middle : undefined);
  return { view, w: new UpperWriter(ns, join(dir, 'work')), upper, middle, objectsDir: store.objects.root, source };
}

/** Copies up `path` and each parent not yet in the upper, as the FUSE layer walks its table. */
function copyUpPath(s: Setup, path: string): { node: UnionNode; nlinkBelow: number } {
  const parts = path.split('/').filter((p) => p !== '');
  let parent = s.view.root();
  let nlinkBelow = 1;
  for (const [i, name] of parts.entries()) {
    const u = s.view.child(parent, name)!;
    if (!u.upper || u.upper.entry.kind === 'metacopy') ({ nlinkBelow } = copyUpEntry(s.view, s.w, u, parent, name, { objectsDir: s.objectsDir, checkObject }));
    parent = s.view.lookup(`/${parts.slice(0, i + 1).join('/')}`)!;
  }
  return { node: parent, nlinkBelow };
}

test('a lower file (an object) and its parent dirs: bytes, mode, times and xattrs kept; the dirs merge with their lower dirs', () =>
  withTempDir(async (dir) => {
    const s = await setup(dir);
    try {
      const { node, nlinkBelow } = copyUpPath(s, '/a/b/obj.bin');
      assert.is(nlinkBelow, 1);
      assert.is(node.upper?.entry.kind, 'plain');
      assert.equal(readFileSync(join(s.upper, 'a', 'b', 'obj.bin')), big);
      const st = lstatSync(join(s.upper, 'a', 'b', 'obj.bin'));
      assert.is(st.mode & 0o7777, 0o640);
      assert.is(st.mtimeMs, 1_000_000_000);
      assert.equal(s.view.xattrs(node).map((x) => [x.name, x.value.toString()]), [['user.kept', 'v1']]);
      const b = s.view.lookup('/a/b')!;
      assert.is(b.upper?.entry.kind, 'dir');
      assert.ok(b.lower !== undefined, 'the upper dir merges with the lower one');
      assert.is(lstatSync(join(s.upper, 'a', 'b')).mode & 0o7777, 0o750);
      assert.ok(s.view.xattrs(b).some((x) => x.name === 'user.dirx'), 'a dir keeps its xattrs');
      assert.equal(s.view.readdir(s.view.lookup('/a')!), ['b', 'sib.txt'], 'nothing below is hidden');
      assert.equal(readdirSync(join(s.upper, 'a')), ['b'], 'only what was copied up is in the upper');
      // the parents' times: each dir's own (from the lower), not the time of the copy-up into it
      assert.is(lstatSync(join(s.upper, 'a', 'b')).mtimeMs, 2_000_000_000);
      assert.is(lstatSync(join(s.upper, 'a')).mtimeMs, 3_000_000_000);
    } finally {
      s.source.close();
    }
  }));

test('the parent\'s mtime is restored after a copy-up into it; an inline file keeps its bytes', () =>
  withTempDir(async (dir) => {
    const s = await setup(dir);
    try {
      copyUpPath(s, '/a/b');
      utimesSync(join(s.upper, 'a', 'b'), 4_000_000, 4_000_000);
      copyUpPath(s, '/a/b/small.txt');
      assert.is(readFileSync(join(s.upper, 'a', 'b', 'small.txt'), 'utf8'), 'inline');
      assert.is(lstatSync(join(s.upper, 'a', 'b')).mtimeMs, 4_000_000_000);
    } finally {
      s.source.close();
    }
  }));

test('a hardlinked lower file reports its link count below (the copy breaks the link)', () =>
  withTempDir(async (dir) => {
    const s = await setup(dir);
    try {
      const { nlinkBelow } = copyUpPath(s, '/x.bin');
      assert.is(nlinkBelow, 2);
      assert.is(lstatSync(join(s.upper, 'x.bin')).nlink, 1);
      assert.equal(readFileSync(join(s.upper, 'x.bin')), readFileSync(join(dir, 'src', 'x.bin')));
    } finally {
      s.source.close();
    }
  }));

test('a file of a live commit\'s middle layer is copied from the middle, not the image', () =>
  withTempDir(async (dir) => {
    const s = await setup(dir, { 'x.bin': 'middle bytes' });
    try {
      const u = s.view.lookup('/x.bin')!;
      const data = copyUpData(s.view, s.objectsDir, u);
      assert.is(data.kind === 'file' && data.path.toString(), join(s.middle, 'x.bin'));
      copyUpPath(s, '/x.bin');
      assert.is(readFileSync(join(s.upper, 'x.bin'), 'utf8'), 'middle bytes');
    } finally {
      s.source.close();
    }
  }));

test('a corrupt object: the check\'s error, and nothing in the upper', () =>
  withTempDir(async (dir) => {
    const s = await setup(dir);
    try {
      copyUpPath(s, '/a/b');
      const data = copyUpData(s.view, s.objectsDir, s.view.lookup('/a/b/obj.bin')!);
      assert.is(data.kind, 'file');
      const path = (data as { path: string }).path;
      chmodSync(path, 0o644);
      const bad = Buffer.from(big);
      bad[10] ^= 1;
      writeFileSync(path, bad);
      assert.throws(() => copyUpPath(s, '/a/b/obj.bin'), /corrupt object/);
      assert.equal(readdirSync(join(s.upper, 'a', 'b')), []);
      assert.equal(readdirSync(join(dir, 'work')), [], 'no scratch file left');
    } finally {
      s.source.close();
    }
  }));

test.run();
