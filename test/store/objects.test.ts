import { spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, promises as fsp, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mount, umount2, MNT_DETACH } from '../../src/native/mount.js';
import { fsverityDigest } from '../../src/store/digest.js';
import { Store } from '../../src/store/store.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';
import { expectError } from '../helpers/assert.js';
import { helperScript, runNode, withTempDir } from '../helpers/dirs.js';

async function putFile(store: Store, path: string): Promise<string> {
  const batch = await store.objects.batch();
  try {
    const { digest } = await batch.putFile(path);
    await batch.commit();
    return digest;
  } finally {
    await batch.dispose();
  }
}

test('objects are named by fs-verity digest in the composefs fan-out layout, read-only', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const data = Buffer.from('hello, stratum\n');
    const digest = await store.objects.putBuffer(data);
    assert.is(digest, fsverityDigest(data));
    const path = join(dir, 's', 'objects', digest.slice(0, 2), digest.slice(2));
    assert.is(store.objects.path(digest), path);
    assert.ok((await fsp.readFile(path)).equals(data));
    assert.is(statSync(path).mode & 0o777, 0o444);
    assert.ok(await store.objects.has(digest));
    assert.not.ok(await store.objects.has(fsverityDigest(Buffer.from('other'))));
    const handle = await store.objects.open(digest);
    assert.is((await handle.readFile('utf8')), 'hello, stratum\n');
    await handle.close();
  }));

test('small, large and streamed files give the same digest as their bytes, and dedup', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    for (const size of [0, 1, 4096, 1 << 20, (1 << 20) + 1, 9 * (1 << 20) + 123]) {
      const data = pseudoRandomBytes(size, size + 1);
      const file = join(dir, `f${size}`);
      writeFileSync(file, data);
      const digest = await putFile(store, file);
      assert.is(digest, fsverityDigest(data), `file of ${size}`);
      assert.ok((await fsp.readFile(store.objects.path(digest))).equals(data));
      const batch = await store.objects.batch();
      assert.is(await batch.putStream(createReadStream(file)), digest);
      assert.is((await batch.putFile(file)).digest, digest);
      assert.is(batch.size, 1, 'the existing object is reused, not restaged');
      assert.equal(await batch.commit(), [], 'nothing new was added');
      await batch.dispose();
    }
    const names = [];
    for await (const d of store.objects.list()) names.push(d);
    assert.is(names.length, 6);
  }));

test('a large file is stored read-only whatever its mode, named by the bytes stored', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const data = pseudoRandomBytes(3 << 20, 5);
    writeFileSync(join(dir, 'f'), data, { mode: 0o4755 });
    const digest = await putFile(store, join(dir, 'f'));
    assert.is(digest, fsverityDigest(data));
    assert.ok((await fsp.readFile(store.objects.path(digest))).equals(data));
    assert.is(statSync(store.objects.path(digest)).mode & 0o7777, 0o444);
  }));

test('nothing is visible under its name before commit, and a disposed batch leaves no trace', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const batch = await store.objects.batch();
    const digest = await batch.putBuffer(Buffer.from('staged only'));
    assert.not.ok(await store.objects.has(digest));
    await batch.dispose();
    assert.not.ok(await store.objects.has(digest));
    assert.equal(readdirSync(join(dir, 's', 'tmp')), []);
  }));

test('verify finds a corrupt object; missing objects are NOT_FOUND; bad names are refused', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const digest = await store.objects.putBuffer(pseudoRandomBytes(10_000, 1));
    await store.objects.verify(digest);
    const path = store.objects.path(digest);
    await fsp.chmod(path, 0o644);
    const bytes = await fsp.readFile(path);
    bytes[5000]! ^= 0x80;
    await fsp.writeFile(path, bytes);
    const err = await expectError(store.objects.verify(digest), 'CORRUPT_OBJECT');
    assert.match(err.message, digest);
    await expectError(store.objects.verify(fsverityDigest(Buffer.from('nope'))), 'NOT_FOUND');
    assert.throws(() => store.objects.path('../../etc/passwd'), /not an object digest/);
  }));

test('two processes putting the same content at once both succeed with one intact object', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    await Store.open(root, { create: true });
    const data = pseudoRandomBytes(6 << 20, 77);
    writeFileSync(join(dir, 'same'), data);
    const worker = helperScript('store-worker');
    const runs = await Promise.all([1, 2, 3, 4].map(() => runNode(worker, [root, 'put-file', join(dir, 'same')])));
    for (const r of runs) assert.is(r.code, 0, r.stderr);
    const digest = fsverityDigest(data);
    for (const r of runs) assert.is(r.stdout.trim(), digest);
    const store = await Store.open(root);
    await store.objects.verify(digest);
  }));

test('kill -9 in the middle of a put leaves no object under its name; the debris is cleaned on open', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    await Store.open(root, { create: true });
    const total = 64 << 20;
    const child = spawn(process.execPath, [helperScript('store-worker'), root, 'put-slow', String(total)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('writing') && resolve()));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    const digest = fsverityDigest(Buffer.alloc(total, 7));
    const store = await Store.open(root);
    assert.not.ok(await store.objects.has(digest));
    const debris = readdirSync(join(root, 'tmp'));
    assert.is(debris.length, 1, 'the dead put left its staging dir');
    // debris younger than the grace period may belong to a process that has not locked it yet
    const old = new Date(Date.now() - 120_000);
    utimesSync(join(root, 'tmp', debris[0]!), old, old);
    await Store.open(root);
    assert.equal(readdirSync(join(root, 'tmp')), []);
  }));

test('a live batch is not cleaned by another process opening the store', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    const store = await Store.open(root, { create: true });
    const batch = await store.objects.batch();
    await batch.putBuffer(Buffer.from('in flight'));
    const old = new Date(Date.now() - 120_000);
    for (const name of readdirSync(join(root, 'tmp'))) utimesSync(join(root, 'tmp', name), old, old);
    const other = await runNode(helperScript('store-worker'), [root, 'hold-lock', 'shared', '1']);
    assert.is(other.code, 0, other.stderr);
    const digests = await batch.commit();
    assert.is(digests.length, 1);
    await batch.dispose();
    assert.ok(await store.objects.has(digests[0]!));
  }));

test('a full disk gives NO_SPACE, publishes nothing, and the store keeps working', () =>
  withTempDir(async (dir) => {
    if (process.getuid?.() !== 0) {
      console.log('skip: mounting a small tmpfs needs root');
      return;
    }
    const mnt = join(dir, 'small');
    mkdirSync(mnt);
    mount('tmpfs', mnt, 'tmpfs', 0, 'size=2m');
    try {
      const store = await Store.open(join(mnt, 's'), { create: true });
      writeFileSync(join(dir, 'big'), pseudoRandomBytes(4 << 20, 3));
      const err = await expectError(putFile(store, join(dir, 'big')), 'NO_SPACE');
      assert.match(err.message, /big/);
      assert.equal(readdirSync(join(mnt, 's', 'tmp')), [], 'the partial copy is gone');
      let count = 0;
      for await (const _ of store.objects.list()) count++;
      assert.is(count, 0);
      const small = await store.objects.putBuffer(Buffer.from('still fine'));
      await store.objects.verify(small);
    } finally {
      umount2(mnt, MNT_DETACH);
    }
    assert.not.ok(existsSync(join(mnt, 's')), 'tmpfs gone after unmount');
  }));

test.run();
