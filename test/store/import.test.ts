import { execFileSync } from 'node:child_process';
import { chmodSync, linkSync, lchownSync, mkdirSync, readFileSync, readdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mknod, S_IFCHR, S_IFIFO } from '../../src/native/files.js';
import { lsetxattr } from '../../src/native/xattr.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { fsverityDigest } from '../../src/store/digest.js';
import { S_IFMT } from '../../src/store/image/erofs.js';
import { FileSource, ImageReader, walkImage } from '../../src/store/image/read.js';
import { Store } from '../../src/store/store.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';
import { expectError } from '../helpers/assert.js';
import { withTempDir } from '../helpers/dirs.js';

/** path -> what a user sees of it, read back from the stored image. */
function readBack(store: Store, id: string): Map<string, { mode: number; uid: number; gid: number; mtime: string; size: number; rdev: number; nid: number; xattrs: string[]; content?: Buffer; target?: string }> {
  const reader = ImageReader.open(new FileSource(store.commits.imagePath(id)));
  const out = new Map();
  walkImage(reader, (path, attr, nid) => {
    const type = attr.mode & S_IFMT;
    const ext = reader.external(nid);
    const entry: Record<string, unknown> = { mode: attr.mode, uid: attr.uid, gid: attr.gid, mtime: `${attr.mtimeSec}.${attr.mtimeNsec}`, size: attr.size, rdev: attr.rdev, nid, xattrs: reader.xattrs(nid).map((x) => `${x.name}=${Buffer.from(x.value).toString('hex')}`).sort() };
    if (type === 0o100000) entry.content = ext?.digest ? readFileSync(store.objects.path(ext.digest)) : Buffer.from(reader.readContent(nid));
    if (type === 0o120000) entry.target = reader.readlink(nid);
    out.set(Buffer.from(path, 'latin1').toString('utf8'), entry);
  });
  return out;
}

test('import keeps contents, modes, owners, ns mtimes, xattrs, devices, fifos and symlinks', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'tiny'), 'hello\n');
    writeFileSync(join(src, 'big'), pseudoRandomBytes(200_000, 1));
    writeFileSync(join(src, 'empty'), '');
    writeFileSync(join(src, 'sub', 'setuid'), pseudoRandomBytes(100, 2));
    chmodSync(join(src, 'sub', 'setuid'), 0o4755);
    writeFileSync(join(src, 'locked'), 'x');
    chmodSync(join(src, 'locked'), 0o000);
    mkdirSync(join(src, 'sticky'));
    chmodSync(join(src, 'sticky'), 0o1777);
    symlinkSync('../outside/of/tree', join(src, 'sub', 'link'));
    mknod(join(src, 'fifo'), S_IFIFO | 0o640);
    mknod(join(src, 'null'), S_IFCHR | 0o666, 1, 3);
    lchownSync(join(src, 'tiny'), 100_000, 70_000);
    lsetxattr(join(src, 'tiny'), 'user.bin', Buffer.from([0, 1, 2, 255]));
    lsetxattr(join(src, 'big'), 'trusted.overlay.redirect', Buffer.from('/sneaky'));
    utimesSync(join(src, 'big'), 1_700_000_000.123456, 1_700_000_000.123456);
    execFileSync('touch', ['-h', '-d', '2021-02-03 04:05:06.123456789', join(src, 'sub', 'link')]);

    const store = await Store.open(join(dir, 's'), { create: true });
    const result = await importDirectory(store, src, { label: 'app', tag: 'v1' });
    assert.equal(result.tags, [result.id, 'v1']);
    assert.ok(result.head);
    const seen = readBack(store, result.id);
    assert.equal([...seen.keys()].sort(), ['/', '/big', '/empty', '/fifo', '/locked', '/null', '/sticky', '/sub', '/sub/link', '/sub/setuid', '/tiny']);
    assert.is(seen.get('/tiny')!.content!.toString(), 'hello\n');
    assert.ok(seen.get('/big')!.content!.equals(pseudoRandomBytes(200_000, 1)));
    assert.is(seen.get('/empty')!.size, 0);
    assert.is(seen.get('/sub/setuid')!.mode, 0o104755);
    assert.is(seen.get('/locked')!.mode, 0o100000);
    assert.is(seen.get('/sticky')!.mode, 0o41777);
    assert.is(seen.get('/sub/link')!.target, '../outside/of/tree');
    assert.is(seen.get('/sub/link')!.mtime, '1612325106.123456789');
    assert.is(seen.get('/fifo')!.mode, 0o10640);
    assert.is(seen.get('/null')!.rdev, (1 << 8) | 3);
    assert.is(seen.get('/tiny')!.uid, 100_000);
    assert.is(seen.get('/tiny')!.gid, 70_000);
    assert.ok(seen.get('/tiny')!.xattrs.includes('user.bin=000102ff'));
    assert.ok(seen.get('/big')!.xattrs.includes(`trusted.overlay.redirect=${Buffer.from('/sneaky').toString('hex')}`), 'a source overlay xattr survives (escaped in the image)');
    assert.match(seen.get('/big')!.mtime, /^1700000000\.1234/);
  }));

test('import keeps hardlinks as one inode and one object', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'a'), { recursive: true });
    writeFileSync(join(src, 'a', 'one'), pseudoRandomBytes(5000, 3));
    linkSync(join(src, 'a', 'one'), join(src, 'two'));
    const store = await Store.open(join(dir, 's'), { create: true });
    const result = await importDirectory(store, src, { label: 'app' });
    assert.is(result.newObjects, 1);
    const seen = readBack(store, result.id);
    assert.is(seen.get('/a/one')!.nid, seen.get('/two')!.nid, 'one inode');
    assert.is(result.bytes, 5000, 'counted once');
  }));

test('the same tree imported twice gives the same id and writes nothing new', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    for (let i = 0; i < 20; i++) writeFileSync(join(src, `f${i}`), pseudoRandomBytes(1000 + i, i));
    const store = await Store.open(join(dir, 's'), { create: true });
    const first = await importDirectory(store, src, { label: 'app', tag: 'v1' });
    assert.ok(first.newCommit);
    assert.is(first.newObjects, 20);
    const second = await importDirectory(store, src, { label: 'app', tag: 'v1' });
    assert.is(second.id, first.id);
    assert.not.ok(second.newCommit);
    assert.is(second.newObjects, 0);
    assert.not.ok(second.head, 'HEAD was already there');
    const other = await importDirectory(store, src, { label: 'other' });
    assert.is(other.id, first.id, 'ids do not depend on the label');
    assert.equal(readdirSync(join(dir, 's', 'commits')), [first.id]);
    // the commit id is the fs-verity digest of the image, as composefs names it
    assert.is(fsverityDigest(readFileSync(store.commits.imagePath(first.id))), first.id);
    const meta = await store.commits.metadata(first.id);
    assert.is(meta.files.count, 21);
    assert.is(meta.merkle.leafCount, 21);
    assert.is(meta.merkle.treeDepth, 5);
  }));

test('a tag that points elsewhere is TAG_EXISTS and is left as it was; HEAD stays on the first import', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    mkdirSync(join(dir, 'a'));
    writeFileSync(join(dir, 'a', 'x'), 'a');
    mkdirSync(join(dir, 'b'));
    writeFileSync(join(dir, 'b', 'x'), 'b');
    const a = await importDirectory(store, join(dir, 'a'), { label: 'app', tag: 'v1' });
    const err = await expectError(importDirectory(store, join(dir, 'b'), { label: 'app', tag: 'v1' }), 'TAG_EXISTS');
    assert.match(err.message, /app:v1/);
    assert.is((await store.tags.resolve('app', 'v1')).id, a.id);
    assert.is((await store.heads.read('app'))!.base, a.id);
  }));

test('sockets, a top-level .stratum, a missing or non-directory source are refused, naming the path', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const sock = join(dir, 'withsock');
    mkdirSync(sock);
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(sock, 'app.sock'), r));
    try {
      const err = await expectError(importDirectory(store, sock, { label: 'app' }), 'BAD_PATH');
      assert.match(err.message, /app\.sock is a socket/);
    } finally {
      server.close();
    }
    mkdirSync(join(dir, 'ctl', '.stratum'), { recursive: true });
    assert.match((await expectError(importDirectory(store, join(dir, 'ctl'), { label: 'app' }), 'BAD_PATH')).message, /\.stratum/);
    mkdirSync(join(dir, 'deep', 'x', '.stratum'), { recursive: true });
    await importDirectory(store, join(dir, 'deep'), { label: 'app' }); // only the top level is reserved
    await expectError(importDirectory(store, join(dir, 'nope'), { label: 'app' }), 'NOT_FOUND');
    writeFileSync(join(dir, 'file'), '');
    await expectError(importDirectory(store, join(dir, 'file'), { label: 'app' }), 'BAD_PATH');
    await expectError(importDirectory(store, join(dir, 'deep'), { label: '../x' }), 'BAD_NAME');
    await expectError(importDirectory(store, join(dir, 'deep'), { label: 'app', tag: 'HEAD' }), 'BAD_NAME');
  }));

test('a file rewritten with the same size and mtime is hashed again on re-import (the cache keys on ctime)', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'data'), pseudoRandomBytes(10_000, 1));
    utimesSync(join(src, 'data'), 1_600_000_000, 1_600_000_000);
    const store = await Store.open(join(dir, 's'), { create: true });
    const first = await importDirectory(store, src, { label: 'app' });
    const again = await importDirectory(store, src, { label: 'app' });
    assert.is(again.id, first.id);
    await new Promise((r) => setTimeout(r, 20)); // a later ctime
    writeFileSync(join(src, 'data'), pseudoRandomBytes(10_000, 2));
    utimesSync(join(src, 'data'), 1_600_000_000, 1_600_000_000);
    const changed = await importDirectory(store, src, { label: 'app' });
    assert.is.not(changed.id, first.id);
    assert.is(changed.newObjects, 1);
    const seen = readBack(store, changed.id);
    assert.ok(seen.get('/data')!.content!.equals(pseudoRandomBytes(10_000, 2)));
  }));

test('a cached object that gc removed is stored again, not assumed', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'data'), pseudoRandomBytes(10_000, 3));
    const store = await Store.open(join(dir, 's'), { create: true });
    const { id } = await importDirectory(store, src, { label: 'app' });
    const digest = fsverityDigest(pseudoRandomBytes(10_000, 3));
    (await import('node:fs')).rmSync(store.objects.path(digest));
    const again = await importDirectory(store, src, { label: 'app' });
    assert.is(again.id, id);
    assert.is(again.newObjects, 1);
    assert.ok(await store.objects.has(digest));
  }));

test('names that are not UTF-8 survive the round trip byte for byte', () =>
  withTempDir(async (dir) => {
    const src = Buffer.from(join(dir, 'src'));
    mkdirSync(src);
    const odd = Buffer.concat([src, Buffer.from('/'), Buffer.from([0x66, 0xff, 0xfe, 0x0a, 0x20])]);
    writeFileSync(odd, 'bytes');
    const store = await Store.open(join(dir, 's'), { create: true });
    const { id } = await importDirectory(store, join(dir, 'src'), { label: 'app' });
    const reader = ImageReader.open(new FileSource(store.commits.imagePath(id)));
    const names = reader.readdir(reader.rootNid).map((e) => e.name).filter((n) => n !== '.' && n !== '..');
    assert.equal(names.map((n) => Buffer.from(n, 'latin1').toString('hex')), ['66fffe0a20']);
  }));

test.run();
