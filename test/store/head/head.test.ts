import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mknod, S_IFCHR } from '../../../src/native/files.js';
import { lgetxattr, lsetxattr } from '../../../src/native/xattr.js';
import { applyHead } from '../../../src/store/commands/apply.js';
import { importBare } from '../../../src/store/commands/bare.js';
import { baseTree, commitHead, ensureUpper, headPaths } from '../../../src/store/commands/commit.js';
import { buildHeadCommit } from '../../../src/store/head/build.js';
import { importDirectory } from '../../../src/store/commands/import.js';
import { commitByReadBack } from '../../helpers/readback.js';
import { initLabel } from '../../../src/store/commands/init.js';
import { verify } from '../../../src/store/commands/verify.js';
import { FileSource, ImageReader } from '../../../src/store/image/read.js';
import { addEntry, newInode } from '../../../src/store/image/tree.js';
import { writeImage } from '../../../src/store/image/write.js';
import { Store } from '../../../src/store/store.js';
import { UnionView } from '../../../src/store/union.js';
import { pseudoRandomBytes } from '../../helpers/bytes.js';
import { expectError } from '../../helpers/assert.js';
import { withTempDir } from '../../helpers/dirs.js';
import { diffViews } from '../image/view.js';
import { commitView, dirView, isRoot, kernelUnsupported, mountHead, unionView } from './kernel.js';
import { Random, makeBase } from './ops.js';

async function labelWith(dir: string, files: Record<string, string | Buffer>): Promise<{ store: Store; base: string; upper: string }> {
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(src, path, '..'), { recursive: true });
    writeFileSync(join(src, path), content);
  }
  const store = await Store.open(join(dir, 'store'), { create: true });
  const { id } = await importDirectory(store, src, { label: 'app' });
  await ensureUpper(store, (await store.heads.read('app'))!);
  return { store, base: id, upper: headPaths(store, 'app').upper };
}

test('a base read back as a tree writes the same image bytes (hardlinks, stubs, xattrs, every type), and its Merkle root from the plan is the one from the image', async () => {
  for (let seed = 1; seed <= 15; seed++) {
    const dir = mkdtempSync(join(tmpdir(), 'stratum-rt-'));
    try {
      makeBase(join(dir, 'src'), new Random(seed), 60);
      for (const stub of ['00', '7f', 'ff']) if (seed % 3 === 0) writeFileSync(join(dir, 'src', stub), stub);
      const store = await Store.open(join(dir, 'store'), { create: true });
      const { id } = await importDirectory(store, join(dir, 'src'), { label: 'app' });
      const image = readFileSync(store.commits.imagePath(id));
      const tree = baseTree(store, id);
      assert.ok(Buffer.from(writeImage(tree)).equals(image), `seed ${seed}: same bytes`);
      const fromPlan = buildHeadCommit(tree);
      const fromImage = commitByReadBack(tree);
      assert.is(fromPlan.id, id);
      assert.equal({ ...fromPlan.meta, timestamp: '' }, { ...fromImage.meta, timestamp: '' }, `seed ${seed}: Merkle root and counts from the plan`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('Merkle root from the plan equals the one read from the image on odd trees (source whiteouts, escaped overlay xattrs, devices, long symlinks)', () => {
  const root = newInode({ mode: 0o40755, mtimeSec: 5, xattrs: [{ name: 'trusted.overlay.custom', value: Buffer.from('v') }] });
  const d = newInode({ mode: 0o41777, uid: 70000, gid: 4294967294, mtimeSec: 7, mtimeNsec: 9 });
  addEntry(root, 'd', d);
  addEntry(d, 'wh', newInode({ mode: 0o20000, xattrs: [{ name: 'user.was', value: Buffer.from('w') }] }));
  addEntry(d, 'chr', newInode({ mode: 0o20620, rdev: 1025 }));
  addEntry(d, 'blk', newInode({ mode: 0o60660, rdev: 2049 }));
  addEntry(d, 'sock', newInode({ mode: 0o140777 }));
  addEntry(root, 'long', newInode({ mode: 0o120777, symlinkTarget: 'x'.repeat(4000) }));
  const file = newInode({ mode: 0o100644, content: Buffer.from('inline!') });
  addEntry(root, 'f', file);
  addEntry(d, 'f-link', file, { hardlink: true });
  file.nlink = 2;
  const dg = 'ab'.repeat(32);
  addEntry(root, 'ext', newInode({ mode: 0o104755, size: 100_000, digest: dg, payload: `ab/${dg.slice(2)}` }));
  for (let i = 0; i < 300; i++) addEntry(d, `many-${i}-${'n'.repeat(i % 50)}`, newInode({ mode: 0o100600, mtimeSec: i }));
  const tree = { root };
  const fromPlan = buildHeadCommit(tree);
  const fromImage = commitByReadBack(tree);
  assert.is(fromPlan.id, fromImage.id);
  assert.equal({ ...fromPlan.meta, timestamp: '' }, { ...fromImage.meta, timestamp: '' });
});

test('commit without changes tags the base itself; the upper stays empty', () =>
  withTempDir(async (dir) => {
    const { store, base, upper } = await labelWith(dir, { 'a.txt': 'a', 'd/b.bin': pseudoRandomBytes(1000, 1) });
    const r = await commitHead(store, { label: 'app', tag: 'same' });
    assert.is(r.id, base);
    assert.ok(r.unchanged);
    assert.equal(await store.tags.read('app', 'same'), { kind: 'id', id: base, note: '' });
    assert.equal(readdirSync(upper), []);
    const byId = await commitHead(store, { label: 'app' });
    assert.is(byId.tag, base, 'no tag: the commit id is the tag');
  }));

test('a base whose files count links outside the tree commits unchanged to the same id; upper hardlinks are one inode', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'shared'), pseudoRandomBytes(300, 1));
    linkSync(join(src, 'shared'), join(dir, 'outside'));
    writeFileSync(join(src, 'pair-a'), pseudoRandomBytes(300, 2));
    linkSync(join(src, 'pair-a'), join(src, 'pair-b'));
    const store = await Store.open(join(dir, 'store'), { create: true });
    const { id } = await importDirectory(store, src, { label: 'app' });
    await ensureUpper(store, (await store.heads.read('app'))!);
    const upper = headPaths(store, 'app').upper;
    assert.is((await commitHead(store, { label: 'app' })).id, id, 'unchanged');
    writeFileSync(join(upper, 'x'), pseudoRandomBytes(500, 3));
    linkSync(join(upper, 'x'), join(upper, 'y'));
    const r = await commitHead(store, { label: 'app' });
    const tree = baseTree(store, r.id);
    const x = tree.root.children!.get('x')!;
    const y = tree.root.children!.get('y')!;
    assert.ok(x.inode === y.inode && x.inode.nlink === 2 && !x.hardlink && y.hardlink, 'one inode, two entries');
    assert.is(tree.root.children!.get('shared')!.inode.nlink, 1, 'a link outside the imported tree does not count');
    assert.is(r.storedFiles, 1);
  }));

test('commit with an existing tag fails with TAG_EXISTS and changes nothing', () =>
  withTempDir(async (dir) => {
    const { store, base, upper } = await labelWith(dir, { 'a.txt': 'a' });
    await store.tags.write('app', 'v1', { kind: 'id', id: base });
    writeFileSync(join(upper, 'new'), 'new');
    await expectError(commitHead(store, { label: 'app', tag: 'v1' }), 'TAG_EXISTS');
    assert.is((await store.heads.read('app'))!.base, base);
    assert.equal(readdirSync(upper), ['new']);
    assert.equal((await store.commits.list()).length, 1);
  }));

test('commit links upper files into objects (no copy), leaves them read-only, reads only the upper', () =>
  withTempDir(async (dir) => {
    const { store, base, upper } = await labelWith(dir, Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}`, pseudoRandomBytes(100 + i, i)])));
    const big = pseudoRandomBytes(3 << 20, 9);
    writeFileSync(join(upper, 'big'), big);
    const ino = lstatSync(join(upper, 'big')).ino;
    writeFileSync(join(upper, 'inline'), 'short');
    const r = await commitHead(store, { label: 'app', tag: 'v2' });
    assert.is(r.parent, base);
    assert.is(r.storedFiles, 2);
    assert.is(r.linkedObjects, 1);
    assert.is(r.copiedObjects, 0);
    assert.is(r.bytes, big.length + 5, 'only the upper was read');
    const tree = baseTree(store, r.id);
    const digest = tree.root.children!.get('big')!.inode.digest!;
    const st = lstatSync(store.objects.path(digest));
    assert.is(st.ino, ino, 'the upper file became the object');
    assert.is(st.mode & 0o777, 0o444);
    assert.is(st.nlink, 1);
    assert.is(Buffer.from(tree.root.children!.get('inline')!.inode.content!).toString(), 'short');
    assert.equal(readdirSync(upper), []);
    assert.equal((await verify(store, undefined)).problems, []);
    assert.equal((await store.heads.read('app'))!.lastCommit, r.id);
  }));

test('commit and apply refuse a HEAD whose upper a kernel mount is using', async () => {
  if (kernelUnsupported) return;
  await withTempDir(async (dir) => {
    const { store, base } = await labelWith(dir, { 'a.txt': 'a' });
    const m = mountHead(store, 'app', base, join(dir, 'mnt'));
    try {
      writeFileSync(join(m.merged, 'live'), 'x');
      const err = await expectError(commitHead(store, { label: 'app' }), 'BUSY');
      assert.match(err.message, /mounted at/);
      await expectError(applyHead(store, `app:${base.slice(0, 12)}`, { discard: true }), 'BUSY');
    } finally {
      m.unmount();
    }
    assert.ok((await commitHead(store, { label: 'app' })).changedPaths > 0, 'commits once unmounted');
  });
});

test('apply refuses when HEAD has changes and says how many; --discard drops them, --keep keeps them on the new base', () =>
  withTempDir(async (dir) => {
    const { store, base, upper } = await labelWith(dir, { 'a.txt': 'a' });
    writeFileSync(join(upper, 'one'), '1');
    const v1 = await commitHead(store, { label: 'app', tag: 'v1' });
    const empty = await applyHead(store, `app:${base.slice(0, 12)}`);
    assert.is(empty.changesWere, 'none');
    assert.is((await store.heads.read('app'))!.base, base);
    assert.equal(diffViews(unionView(store, 'app', base), commitView(store, base)), [], 'the fresh upper shows the base as it is');

    mkdirSync(join(upper, 'dir'));
    writeFileSync(join(upper, 'dir', 'two'), '2');
    const err = await expectError(applyHead(store, 'app:v1'), 'BUSY');
    assert.match(err.message, /3 changed paths/);
    assert.is((await store.heads.read('app'))!.base, base, 'refused: nothing changed');

    const kept = await applyHead(store, 'app:v1', { keep: true });
    assert.is(kept.changesWere, 'kept');
    assert.is((await store.heads.read('app'))!.base, v1.id);
    const view = unionView(store, 'app', v1.id);
    assert.ok(view.has('/one') && view.has('/dir/two'), 'base file and kept change both visible');

    const dropped = await applyHead(store, `app:${base.slice(0, 12)}`, { discard: true });
    assert.is(dropped.changesWere, 'discarded');
    assert.equal(readdirSync(upper), []);
    assert.equal(diffViews(unionView(store, 'app', base), commitView(store, base)), []);
    await expectError(applyHead(store, 'app:v1', { keep: true, discard: true }), 'USAGE');
  }));

test('apply --keep gives metacopy files their data first: a chmod-only change keeps the old content on the new base', async () => {
  if (kernelUnsupported) return;
  await withTempDir(async (dir) => {
    const oldContent = pseudoRandomBytes(5000, 1);
    const { store, base } = await labelWith(dir, { 'm.bin': oldContent, 'other': 'o' });
    const upper = headPaths(store, 'app').upper;
    writeFileSync(join(upper, 'm.bin'), pseudoRandomBytes(7000, 2));
    const v2 = await commitHead(store, { label: 'app', tag: 'v2' });
    await applyHead(store, `app:${base.slice(0, 12)}`);
    const m = mountHead(store, 'app', base, join(dir, 'mnt'));
    try {
      chmodSync(join(m.merged, 'm.bin'), 0o600); // a metacopy copy-up: metadata in the upper, data in the base
    } finally {
      m.unmount();
    }
    assert.ok(lgetxattr(join(upper, 'm.bin'), 'trusted.overlay.metacopy') !== undefined, 'the kernel made a metacopy file');
    const kept = await applyHead(store, 'app:v2', { keep: true });
    assert.is(kept.changesWere, 'kept');
    const again = mountHead(store, 'app', v2.id, join(dir, 'mnt2'));
    try {
      assert.ok(readFileSync(join(again.merged, 'm.bin')).equals(oldContent), 'the kernel shows the old content');
      assert.is(lstatSync(join(again.merged, 'm.bin')).mode & 0o777, 0o600);
    } finally {
      again.unmount();
    }
    const view = unionView(store, 'app', v2.id);
    assert.is(view.get('/m.bin')!.mode, (0o100600).toString(8));
  });
});

test('import --bare applies overlay whiteouts (char 0:0, opaque) and OCI whiteouts (.wh., .wh..wh..opq) as a delta; HEAD stays', () =>
  withTempDir(async (dir) => {
    const { store, base } = await labelWith(dir, { 'keep.txt': 'k', 'rm-oci': 'x', 'rm-char': 'x', 'opq-oci/old': 'o', 'opq-xattr/old': 'o', 'sub/kept': 'k', 'sub/gone': 'g', 'big.bin': pseudoRandomBytes(10_000, 1) });
    const bare = join(dir, 'bare');
    mkdirSync(join(bare, 'sub'), { recursive: true });
    writeFileSync(join(bare, '.wh.rm-oci'), '');
    writeFileSync(join(bare, 'sub', '.wh.gone'), '');
    writeFileSync(join(bare, 'sub', 'added'), pseudoRandomBytes(5000, 2));
    mkdirSync(join(bare, 'opq-oci'));
    writeFileSync(join(bare, 'opq-oci', '.wh..wh..opq'), '');
    writeFileSync(join(bare, 'opq-oci', 'new'), 'n');
    mkdirSync(join(bare, 'opq-xattr'));
    lsetxattr(join(bare, 'opq-xattr'), isRoot ? 'trusted.overlay.opaque' : 'user.overlay.opaque', Buffer.from('y'));
    writeFileSync(join(bare, 'opq-xattr', 'new'), 'n');
    if (isRoot) mknod(join(bare, 'rm-char'), S_IFCHR, 0, 0);
    symlinkSync('keep.txt', join(bare, 'link'));
    const r = await importBare(store, bare, { label: 'app', tag: 'layer1' });
    assert.is(r.parent, base);
    assert.is((await store.heads.read('app'))!.base, base, 'HEAD is left as it is');
    const view = commitView(store, r.id);
    const paths = [...view.keys()].sort();
    const expected = ['/', '/big.bin', '/keep.txt', '/link', '/opq-oci', '/opq-oci/new', '/opq-xattr', '/opq-xattr/new', '/sub', '/sub/added', '/sub/kept'];
    if (!isRoot) expected.push('/rm-char');
    assert.equal(paths, expected.sort());
    for (const v of view.values()) assert.not.ok(v.xattrs.some((x) => Buffer.from(x.split('=')[0]!, 'hex').toString().includes('overlay.opaque')), 'markers are not content');
    assert.equal((await store.tags.read('app', 'layer1'))!, { kind: 'id', id: r.id, note: '' });
    await expectError(importBare(store, bare, { label: 'app', tag: 'layer1' }), 'TAG_EXISTS');
    const byId = await importBare(store, bare, { label: 'app' });
    assert.is(byId.tag, byId.id);
    assert.is(byId.id, r.id, 'same delta on the same base: same commit');
  }));

test('init makes a label on the empty tree; init --migrate imports the mountpoint, and a commit without changes is that tree', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 'store'), { create: true });
    const empty = await initLabel(store, { label: 'fresh' });
    assert.equal(commitView(store, empty.base).size, 1, 'just the root');
    assert.ok(lstatSync(headPaths(store, 'fresh').work).isDirectory());
    await expectError(initLabel(store, { label: 'fresh' }), 'BUSY');
    writeFileSync(join(headPaths(store, 'fresh').upper, 'hello'), 'hi');
    const c = await commitHead(store, { label: 'fresh' });
    assert.ok(commitView(store, c.id).has('/hello'));

    const mnt = join(dir, 'existing');
    mkdirSync(join(mnt, 'etc'), { recursive: true });
    writeFileSync(join(mnt, 'etc', 'conf'), pseudoRandomBytes(3000, 4));
    linkSync(join(mnt, 'etc', 'conf'), join(mnt, 'conf-link'));
    const migrated = await initLabel(store, { label: 'mig', mountpoint: mnt, migrate: true });
    assert.is(migrated.migrated!.files, 4);
    const original = dirView(mnt);
    assert.equal(diffViews(original, commitView(store, migrated.base)), [], 'the commit is the directory');
    assert.equal(diffViews(original, unionView(store, 'mig', migrated.base)), [], 'HEAD shows the directory');
    const again = await commitHead(store, { label: 'mig', tag: 'v1' });
    assert.is(again.id, migrated.base, 'round trip: nothing changed');
    await expectError(initLabel(store, { label: 'x', migrate: true }), 'USAGE');
  }));

test('UnionView reads user-namespace uppers: opaque, redirect, metacopy and whiteouts decided by user.overlay.*', () =>
  withTempDir(async (dir) => {
    const { store, base, upper } = await labelWith(dir, { 'd1/a': 'a', 'd1/b': 'b', 'd2/c': 'c', 'moved/m': pseudoRandomBytes(500, 1), 'f.bin': pseudoRandomBytes(700, 2) });
    const source = new FileSource(store.commits.imagePath(base));
    try {
      mkdirSync(join(upper, 'd1'));
      lsetxattr(join(upper, 'd1'), 'user.overlay.opaque', Buffer.from('y'));
      writeFileSync(join(upper, 'd1', 'only'), 'o');
      mkdirSync(join(upper, 'renamed'));
      lsetxattr(join(upper, 'renamed'), 'user.overlay.redirect', Buffer.from('/moved'));
      lsetxattr(join(upper, 'renamed'), 'user.kept', Buffer.from('1'));
      writeFileSync(join(upper, 'f.bin'), Buffer.alloc(0));
      lsetxattr(join(upper, 'f.bin'), 'user.overlay.metacopy', Buffer.alloc(0));
      if (isRoot) mknod(join(upper, 'd2'), S_IFCHR, 0, 0);
      const view = new UnionView(ImageReader.open(source), upper, 'user');
      assert.equal(view.readdir(view.lookup('/d1')!), ['only'], 'opaque hides the lower');
      assert.equal(view.readdir(view.lookup('/renamed')!), ['m'], 'redirect merges /moved');
      assert.equal(view.xattrs(view.lookup('/renamed')!).map((x) => x.name), ['user.kept'], 'overlay xattrs hidden');
      const f = view.content(view.lookup('/f.bin')!);
      assert.is(f.kind, 'object', 'metacopy: data from the lower');
      if (isRoot) assert.is(view.lookup('/d2'), undefined, 'whiteout');
      assert.is(view.lookup('/nope'), undefined);
    } finally {
      source.close();
    }
  }));

test.run();
