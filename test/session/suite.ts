// The one test suite every Session implementation must pass (run by fs-session.test.ts and
// memory-session.test.ts): what a program using the interface relies on.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SessionError, sha256Hex, type Session, type SessionErrorCode } from '../../src/session/index.js';

export interface Harness {
  session: Session;
  /** The same session opened again (the filesystem one from disk). */
  reopen(): Promise<Session>;
  /** Rewrites an object's stored frame, as a crash or a bad disk would. */
  damageObject(hash: string, damage: (frame: Buffer) => Buffer): Promise<void>;
  /** Runs writers at the same time (separate processes where the implementation allows), each
   * putting `count` keys shared/<prefix>-<i> holding `bytes` bytes of "<prefix>-<i>;" repeated. */
  writeConcurrently(prefixes: string[], count: number, bytes: number): Promise<void>;
  dispose(): Promise<void>;
}

export async function expectSessionError(promise: Promise<unknown>, code: SessionErrorCode): Promise<SessionError> {
  try {
    await promise;
  } catch (err) {
    assert.instance(err, SessionError, String(err));
    assert.is((err as SessionError).code, code, (err as Error).message);
    return err as SessionError;
  }
  return assert.unreachable(`expected ${code}`) as never;
}

const text = (s: string) => ({ kind: 'data' as const, bytes: Buffer.from(s) });

export function sessionSuite(name: string, make: () => Promise<Harness>): void {
  const it = (title: string, fn: (h: Harness) => Promise<void>) =>
    test(`${name}: ${title}`, async () => {
      const h = await make();
      try {
        await fn(h);
      } finally {
        await h.dispose();
      }
    });

  it('each kind of value reads back as it was put, also after reopening', async (h) => {
    const s = h.session;
    const binary = Buffer.from([0, 10, 255, 13, 10, 0]);
    const hash = await s.putObject('note', Buffer.from('an object'));
    await s.put('a/data', { kind: 'data', bytes: binary });
    await s.put('a/empty', { kind: 'data', bytes: Buffer.alloc(0) });
    await s.put('a/obj', { kind: 'objref', hash });
    await s.put('a/ref', { kind: 'valref', key: 'a/data' });
    await s.put('a/m', { kind: 'map' });
    for (const session of [s, await h.reopen()]) {
      const data = await session.get('a/data');
      assert.ok(data?.kind === 'data' && Buffer.from(data.bytes).equals(binary), 'binary data with newlines and NULs');
      const empty = await session.get('a/empty');
      assert.ok(empty?.kind === 'data' && empty.bytes.length === 0);
      assert.equal(await session.get('a/obj'), { kind: 'objref', hash });
      assert.equal(await session.get('a/ref'), { kind: 'valref', key: 'a/data' });
      assert.equal(await session.get('a/m'), { kind: 'map', keys: [] });
      assert.equal(await session.get('a'), { kind: 'map', keys: ['data', 'empty', 'm', 'obj', 'ref'] });
      assert.is(await session.get('a/nothing'), undefined);
      assert.is(await session.get('a/data/below'), undefined, 'below a value there is nothing');
    }
  });

  it('put replaces a value whole; a stored value does not change when the caller reuses its buffer', async (h) => {
    const s = h.session;
    const buf = Buffer.from('first');
    await s.put('k', { kind: 'data', bytes: buf });
    buf.write('XXXXX');
    assert.equal(Buffer.from(((await s.get('k')) as { bytes: Uint8Array }).bytes).toString(), 'first');
    await s.put('k', text('second, and longer'));
    assert.equal(Buffer.from(((await s.get('k')) as { bytes: Uint8Array }).bytes).toString(), 'second, and longer');
    await s.put('k', { kind: 'valref', key: 'elsewhere' });
    assert.equal(await s.get('k'), { kind: 'valref', key: 'elsewhere' });
  });

  it('bad keys are BAD_KEY for every operation, and nothing is written', async (h) => {
    const s = h.session;
    const bad = ['', '/a', 'a/', 'a//b', '.', '..', 'a/../b', 'a.b', 'a b', 'é', 'a\0b', 'a\\b', 'x'.repeat(256), `${'x/'.repeat(32)}x`, `${`${'y'.repeat(200)}/`.repeat(6)}y`];
    for (const key of bad) {
      await expectSessionError(s.put(key, text('v')), 'BAD_KEY');
      await expectSessionError(s.get(key), 'BAD_KEY');
      await expectSessionError(s.delete(key), 'BAD_KEY');
      await expectSessionError(s.resolve(key), 'BAD_KEY');
      await expectSessionError(s.put('ok', { kind: 'valref', key }), 'BAD_KEY');
    }
    await expectSessionError(s.list('a/'), 'BAD_KEY');
    assert.equal(await s.list(), []);
    // the limits themselves are allowed
    const longest = 'x'.repeat(255);
    await s.put(longest, text('v'));
    await s.put(`${'s/'.repeat(31)}s`, text('v'));
    await s.put('Az09_-', text('v'));
    assert.equal((await s.list()).length, 3);
  });

  it('bad values are BAD_VALUE', async (h) => {
    const s = h.session;
    await expectSessionError(s.put('k', { kind: 'objref', hash: 'abc' }), 'BAD_VALUE');
    await expectSessionError(s.put('k', { kind: 'objref', hash: 'A'.repeat(64) }), 'BAD_VALUE');
    await expectSessionError(s.put('k', { kind: 'data', bytes: 'text' as unknown as Uint8Array }), 'BAD_VALUE');
    await expectSessionError(s.put('k', { kind: 'other' } as never), 'BAD_VALUE');
    await expectSessionError(s.putObject('Bad Type', Buffer.alloc(1)), 'BAD_VALUE');
    await expectSessionError(s.getObject('nothex'), 'BAD_VALUE');
    assert.equal(await s.list(), []);
  });

  it('a map and a single value cannot stand in for each other: KIND_CONFLICT, nothing lost', async (h) => {
    const s = h.session;
    await s.put('v', text('value'));
    await expectSessionError(s.put('v/child', text('x')), 'KIND_CONFLICT');
    await expectSessionError(s.put('v', { kind: 'map' }), 'KIND_CONFLICT');
    await s.put('m/child', text('x'));
    await expectSessionError(s.put('m', text('x')), 'KIND_CONFLICT');
    await s.put('m', { kind: 'map' }); // a map put again is no change
    assert.equal(await s.list(), ['m/child', 'v']);
    assert.equal(Buffer.from(((await s.get('v')) as { bytes: Uint8Array }).bytes).toString(), 'value');
  });

  it('delete removes a value or a whole map; deleting nothing says false', async (h) => {
    const s = h.session;
    await s.put('a/b/c', text('1'));
    await s.put('a/b/d', text('2'));
    await s.put('a/e', text('3'));
    assert.is(await s.delete('a/e'), true);
    assert.is(await s.delete('a/e'), false);
    assert.is(await s.delete('a/e/below'), false);
    assert.is(await s.delete('a/b'), true);
    assert.equal(await s.list(), []);
    assert.equal(await s.get('a'), { kind: 'map', keys: [] });
    assert.is(await s.delete('nothing'), false);
  });

  it('list gives every value key under a prefix, recursively and sorted', async (h) => {
    const s = h.session;
    for (const key of ['z', 'b/2', 'b/10', 'b/c/1', 'bb/1', 'a']) await s.put(key, text(key));
    await s.put('b/emptymap', { kind: 'map' });
    assert.equal(await s.list(), ['a', 'b/10', 'b/2', 'b/c/1', 'bb/1', 'z']);
    assert.equal(await s.list('b'), ['b/10', 'b/2', 'b/c/1'], 'b/ only, not bb/');
    assert.equal(await s.list('b/c'), ['b/c/1']);
    assert.equal(await s.list('nothing'), []);
    assert.equal(await s.list('a'), [], 'a value is not a map');
  });

  it('objects are named by the sha256 of their bytes, stored once, and read back checked', async (h) => {
    const s = h.session;
    const bytes = Buffer.from('hello '.repeat(1000));
    const hash = await s.putObject('blob', bytes);
    assert.is(hash, sha256Hex(bytes));
    assert.is(await s.putObject('blob', bytes), hash);
    const back = await s.getObject(hash);
    assert.ok(back && back.data.equals(bytes) && back.type === 'blob');
    assert.is(await s.hasObject(hash), true);
    const empty = await s.putObject('blob', Buffer.alloc(0));
    assert.is((await s.getObject(empty))?.data.length, 0);
    assert.is(await s.getObject(sha256Hex(Buffer.from('absent'))), undefined);
    assert.is(await s.hasObject(sha256Hex(Buffer.from('absent'))), false);
    assert.ok((await (await h.reopen()).getObject(hash))?.data.equals(bytes), 'read back after reopening');
  });

  it('a truncated or bit-flipped object is CORRUPT_OBJECT, never partial data, and the rest still works', async (h) => {
    const s = h.session;
    const bytes = Buffer.from(Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join(''));
    const hash = await s.putObject('blob', bytes);
    const other = await s.putObject('blob', Buffer.from('other'));
    await h.damageObject(hash, (frame) => frame.subarray(0, frame.length - 7));
    await expectSessionError(s.getObject(hash), 'CORRUPT_OBJECT');
    await h.damageObject(hash, (frame) => frame.subarray(0, 70));
    await expectSessionError(s.getObject(hash), 'CORRUPT_OBJECT');
    await h.damageObject(hash, () => Buffer.alloc(0));
    await expectSessionError(s.getObject(hash), 'CORRUPT_OBJECT');
    await h.damageObject(other, (frame) => {
      const copy = Buffer.from(frame);
      copy[copy.length - 3]! ^= 0x10;
      return copy;
    });
    await expectSessionError(s.getObject(other), 'CORRUPT_OBJECT');
    await s.put('still', text('fine'));
    assert.ok((await s.get('still'))?.kind === 'data');
  });

  it('resolve follows ValRefs to a value and reports dangling keys and objects without throwing', async (h) => {
    const s = h.session;
    const hash = await s.putObject('blob', Buffer.from('x'));
    await s.put('end', text('the end'));
    await s.put('r1', { kind: 'valref', key: 'r2' });
    await s.put('r2', { kind: 'valref', key: 'end' });
    await s.put('o', { kind: 'objref', hash });
    await s.put('ro', { kind: 'valref', key: 'o' });
    await s.put('gone', { kind: 'valref', key: 'nowhere/at/all' });
    const missingObject = sha256Hex(Buffer.from('never stored'));
    await s.put('lost', { kind: 'objref', hash: missingObject });
    const ok = await s.resolve('r1');
    assert.is(ok.status, 'ok');
    assert.equal(ok.chain, ['r1', 'r2', 'end']);
    assert.ok(ok.status === 'ok' && ok.key === 'end' && ok.value.kind === 'data');
    const obj = await s.resolve('ro');
    assert.ok(obj.status === 'ok' && obj.value.kind === 'objref' && obj.value.hash === hash);
    assert.equal(await s.resolve('gone'), { status: 'dangling', missing: { kind: 'key', key: 'nowhere/at/all' }, chain: ['gone', 'nowhere/at/all'] });
    assert.equal(await s.resolve('lost'), { status: 'dangling', missing: { kind: 'object', hash: missingObject }, chain: ['lost'] });
    assert.equal(await s.resolve('absent'), { status: 'dangling', missing: { kind: 'key', key: 'absent' }, chain: ['absent'] });
    // a map at the end is a value too
    await s.put('m/x', text('1'));
    await s.put('rm', { kind: 'valref', key: 'm' });
    const map = await s.resolve('rm');
    assert.ok(map.status === 'ok' && map.value.kind === 'map');
  });

  it('a cycle of 10 000 ValRefs is reported as a cycle (or too deep under the default limit), never a hang or a crash', async (h) => {
    const s = h.session;
    const N = 10_000;
    for (let i = 0; i < N; i++) await s.put(`cycle/r${i}`, { kind: 'valref', key: `cycle/r${(i + 1) % N}` });
    const deep = await s.resolve('cycle/r0', { maxDepth: 20_000 });
    assert.is(deep.status, 'cycle');
    assert.is(deep.chain.length, N + 1);
    assert.is(deep.chain[0], 'cycle/r0');
    assert.is(deep.chain[N], 'cycle/r0');
    const limited = await s.resolve('cycle/r5');
    assert.is(limited.status, 'too-deep');
    await s.put('self', { kind: 'valref', key: 'self' });
    assert.equal(await s.resolve('self'), { status: 'cycle', chain: ['self', 'self'] });
    // a long chain that ends is fine within the limit
    await s.put('cycle/r9999', text('end'));
    const ends = await s.resolve('cycle/r0', { maxDepth: 20_000 });
    assert.ok(ends.status === 'ok' && ends.key === 'cycle/r9999' && ends.chain.length === N);
  });

  it('two writers putting different keys at the same time lose nothing', async (h) => {
    await h.writeConcurrently(['a', 'b'], 150, 3000);
    const s = await h.reopen();
    const keys = await s.list('shared');
    assert.is(keys.length, 300);
    for (const key of keys) {
      const value = await s.get(key);
      const expected = Buffer.alloc(3000, `${key.slice('shared/'.length)};`);
      assert.ok(value?.kind === 'data' && Buffer.from(value.bytes).equals(expected), `${key} is whole and its own`);
      assert.ok((await s.getObject(sha256Hex(expected)))?.data.equals(expected), `object of ${key}`);
    }
  });
}
