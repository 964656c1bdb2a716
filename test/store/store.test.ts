import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { resolveStorePath } from '../../src/store/location.js';
import { Store } from '../../src/store/store.js';
import { expectError } from '../helpers/assert.js';
import { helperScript, withTempDir } from '../helpers/dirs.js';

test('the first write lays out the store with an info file naming format and version', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 'new', 'store');
    await Store.open(root, { create: true });
    assert.equal(readdirSync(root).sort(), ['commits', 'info', 'objects', 'refs', 'tmp']);
    assert.match(readFileSync(join(root, 'info'), 'utf8'), /^1\nstratum \d+\.\d+\.\d+\n$/);
    await Store.open(root); // reopening needs no create
  }));

test('readers do not create a store; a missing store is NOT_FOUND', () =>
  withTempDir(async (dir) => {
    await expectError(Store.open(join(dir, 'absent')), 'NOT_FOUND');
    assert.equal(readdirSync(dir), []);
  }));

test('a corrupt info file and an unknown major version are refused with clear messages', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    await Store.open(root, { create: true });
    writeFileSync(join(root, 'info'), 'garbage');
    const corrupt = await expectError(Store.open(root), 'CORRUPT_STORE');
    assert.match(corrupt.message, /info/);
    writeFileSync(join(root, 'info'), '2\nstratum 9.0.0\n');
    const newer = await expectError(Store.open(root), 'STORE_VERSION');
    assert.match(newer.message, /format 2.*stratum 9\.0\.0.*reads format 1/);
  }));

test('a non-empty directory that is not a store is never taken over', () =>
  withTempDir(async (dir) => {
    mkdirSync(join(dir, 'home'));
    writeFileSync(join(dir, 'home', 'notes.txt'), 'mine');
    const err = await expectError(Store.open(join(dir, 'home'), { create: true }), 'USAGE');
    assert.match(err.message, /notes\.txt/);
    assert.equal(readdirSync(join(dir, 'home')), ['notes.txt']);
  }));

test('store location: --store, then $STRATUM_STORE, then per-user defaults', () => {
  assert.is(resolveStorePath({ flag: '/x/s', env: { STRATUM_STORE: '/y' }, uid: 0 }), '/x/s');
  assert.is(resolveStorePath({ env: { STRATUM_STORE: '/y' }, uid: 0 }), '/y');
  assert.is(resolveStorePath({ env: {}, uid: 0 }), '/var/lib/stratum');
  assert.is(resolveStorePath({ env: { HOME: '/home/u' }, uid: 1000 }), '/home/u/.local/share/stratum');
  assert.is(resolveStorePath({ env: { HOME: '/home/u', XDG_DATA_HOME: '/d' }, uid: 1000 }), '/d/stratum');
});

test('an exclusive store lock held by another process makes writers wait or fail BUSY', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    const store = await Store.open(root, { create: true });
    const child = spawn(process.execPath, [helperScript('store-worker'), root, 'hold-lock', 'exclusive', '600'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.on('data', () => resolve()));
    await expectError(store.lock.tryWith('exclusive', async () => 1), 'BUSY');
    await expectError(store.lock.tryWith('shared', async () => 1), 'BUSY');
    const started = Date.now();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 20);
    const got = await store.lock.with('exclusive', async () => 'mine');
    clearInterval(timer);
    assert.is(got, 'mine');
    assert.ok(Date.now() - started >= 300, 'waited for the holder');
    assert.ok(ticks >= 5, 'the event loop kept running while waiting');
    await new Promise((r) => child.on('close', r));
  }));

test('shared locks coexist; a dead holder releases its lock', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    const store = await Store.open(root, { create: true });
    const child = spawn(process.execPath, [helperScript('store-worker'), root, 'hold-lock', 'shared', '60000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.on('data', () => resolve()));
    assert.is(await store.lock.tryWith('shared', async () => 'both'), 'both');
    await expectError(store.lock.tryWith('exclusive', async () => 1), 'BUSY');
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    assert.is(await store.lock.tryWith('exclusive', async () => 'free'), 'free');
  }));

test.run();
