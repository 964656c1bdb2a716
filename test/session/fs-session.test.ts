// The shared suite against the filesystem session, then what only the on-disk layout promises:
// the info file, the seed's file formats, atomic files under kill -9, foreign files ignored.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decompress } from 'zstd-napi';
import { openSession, sha256Hex } from '../../src/session/index.js';
import { runNode, withTempDir } from '../helpers/dirs.js';
import { expectSessionError, sessionSuite } from './suite.js';

const WRITER = new URL('./writer.js', import.meta.url).pathname;
const APP = { name: 'test', version: '1.2.3' };

function objectPath(dir: string, hash: string): string {
  return join(dir, 'objects', hash.slice(0, 2), hash.slice(2));
}

sessionSuite('filesystem', async () => {
  const parent = mkdtempSync(join(tmpdir(), 'stratum-session-'));
  const dir = join(parent, 'suite.session');
  const session = await openSession(dir, { create: true, app: APP });
  return {
    session,
    reopen: () => openSession(dir),
    damageObject: async (hash, fn) => fsp.writeFile(objectPath(dir, hash), fn(await fsp.readFile(objectPath(dir, hash)))),
    writeConcurrently: async (prefixes, count, bytes) => {
      const runs = await Promise.all(prefixes.map((prefix) => runNode(WRITER, [dir, prefix, String(count), String(bytes)])));
      for (const run of runs) assert.is(run.stdout, 'done\n', run.stderr);
    },
    dispose: async () => rmSync(parent, { recursive: true, force: true }),
  };
});

test('the info file is "1\\n<app> <version>\\n", written at creation and never rewritten', async () => {
  await withTempDir(async (parent) => {
    const dir = join(parent, 'notes.session');
    const s = await openSession(dir, { create: true, app: APP });
    assert.equal(s.info, { version: 1, app: 'test', appVersion: '1.2.3' });
    const info = join(dir, 'info');
    assert.is(await fsp.readFile(info, 'utf8'), '1\ntest 1.2.3\n');
    const before = await fsp.stat(info);
    await s.put('k', { kind: 'data', bytes: Buffer.from('v') });
    const again = await openSession(dir, { create: true, app: { name: 'other', version: '9' } });
    assert.is(again.info.app, 'test', 'opening with another app does not rewrite info');
    const after = await fsp.stat(info);
    assert.is(after.ino, before.ino);
    assert.is(after.mtimeMs, before.mtimeMs);
    assert.equal((await fsp.readdir(dir)).sort(), ['info', 'objects', 'store', 'tmp']);
  });
});

test('unknown versions, missing info and a name without ".session" are refused clearly', async () => {
  await withTempDir(async (parent) => {
    const dir = join(parent, 'future.session');
    await openSession(dir, { create: true, app: APP });
    await fsp.writeFile(join(dir, 'info'), '2\nsomeone 5.0\n');
    const err = await expectSessionError(openSession(dir), 'SESSION_VERSION');
    assert.match(err.message, /version 2; this library reads version 1/);
    await fsp.writeFile(join(dir, 'info'), 'hello\n');
    await expectSessionError(openSession(dir), 'NOT_A_SESSION');
    await expectSessionError(openSession(join(parent, 'absent.session')), 'NOT_A_SESSION');
    await expectSessionError(openSession(join(parent, 'plain'), { create: true }), 'NOT_A_SESSION');
    await expectSessionError(openSession(join(parent, '.session'), { create: true }), 'NOT_A_SESSION');
    await fsp.access(join(parent, 'plain')).then(() => assert.unreachable('nothing created'), () => {});
  });
});

test('on disk: values in the seed\'s ref format, objects as sha256-named zstd frames, tmp/ left empty', async () => {
  await withTempDir(async (parent) => {
    const dir = join(parent, 'layout.session');
    const s = await openSession(dir, { create: true, app: APP });
    const bytes = Buffer.from('object bytes');
    const hash = await s.putObject('note', bytes);
    await s.put('refs/obj', { kind: 'objref', hash });
    await s.put('refs/val', { kind: 'valref', key: 'refs/obj' });
    await s.put('d', { kind: 'data', bytes: Buffer.from('x\ny') });
    assert.is(await fsp.readFile(join(dir, 'store/refs/obj'), 'utf8'), `${hash}\n`);
    assert.is(await fsp.readFile(join(dir, 'store/refs/val'), 'utf8'), 'refs/refs/obj\n');
    assert.is(await fsp.readFile(join(dir, 'store/d'), 'utf8'), 'data\nx\ny');
    const frame = await fsp.readFile(objectPath(dir, hash));
    const header = `${sha256Hex(bytes)}\0note\0`;
    assert.is(frame.toString('latin1', 0, header.length), header);
    assert.ok(Buffer.from(decompress(frame.subarray(header.length))).equals(bytes));
    assert.equal(await fsp.readdir(join(dir, 'tmp')), []);
    // a later line of a ref is free text, as the seed allows
    await fsp.writeFile(join(dir, 'store/refs/obj'), `${hash}\nwritten by hand\n`);
    assert.equal(await s.get('refs/obj'), { kind: 'objref', hash });
    await fsp.writeFile(join(dir, 'store/junk'), 'not a value\n');
    await expectSessionError(s.get('junk'), 'CORRUPT_VALUE');
  });
});

test('files that are not keys (sync-service conflict copies, editor backups) are ignored', async () => {
  await withTempDir(async (parent) => {
    const dir = join(parent, 'synced.session');
    const s = await openSession(dir, { create: true, app: APP });
    await s.put('m/a', { kind: 'data', bytes: Buffer.from('1') });
    await fsp.writeFile(join(dir, 'store/m/a (conflicted copy 2026-01-01)'), 'data\n2');
    await fsp.writeFile(join(dir, 'store/m/.a.sync-conflict-20260101'), 'data\n3');
    await fsp.writeFile(join(dir, 'store/m/a~'), 'data\n4');
    assert.equal(await s.list(), ['m/a']);
    assert.equal(await s.get('m'), { kind: 'map', keys: ['a'] });
  });
});

test('a symlink planted in store/ never leads a read, write, list or delete out of the session', async () => {
  await withTempDir(async (parent) => {
    const dir = join(parent, 'planted.session');
    const outside = join(parent, 'outside');
    await fsp.mkdir(outside);
    await fsp.writeFile(join(outside, 'secret'), 'data\nsecret');
    const s = await openSession(dir, { create: true, app: APP });
    await fsp.symlink(outside, join(dir, 'store', 'evil'));
    assert.is(await s.get('evil/secret'), undefined);
    assert.is(await s.delete('evil/secret'), false);
    assert.equal(await s.list(), []);
    assert.equal(await s.list('evil'), []);
    await expectSessionError(s.put('evil/new', { kind: 'data', bytes: Buffer.from('x') }), 'KIND_CONFLICT');
    assert.equal(await fsp.readdir(outside), ['secret']);
    assert.is(await fsp.readFile(join(outside, 'secret'), 'utf8'), 'data\nsecret');
  });
});

test('a writer killed with SIGKILL mid-stream leaves only whole values behind', async () => {
  await withTempDir(async (parent) => {
    const dir = join(parent, 'killed.session');
    await openSession(dir, { create: true, app: APP });
    const child = spawn(process.execPath, [WRITER, dir, 'k', '100000', '200000'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1500));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const s = await openSession(dir);
    const keys = await s.list();
    assert.ok(keys.length > 0, 'the writer got somewhere before it was killed');
    for (const key of keys) {
      const value = await s.get(key);
      const expected = Buffer.alloc(200000, `${key.slice('shared/'.length)};`);
      assert.ok(value?.kind === 'data' && Buffer.from(value.bytes).equals(expected), `${key} is whole`);
    }
  });
});

test.run();
