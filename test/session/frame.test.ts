import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compress } from 'zstd-napi';
import { fsverityDigest } from '../../src/store/digest.js';
import { SessionError } from '../../src/session/error.js';
import { decodeFrame as decodeWith, encodeFrame as encodeWith, sha256Hex } from '../../src/session/frame.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';

const LIMIT = { maxSize: 1 << 24 };
// Stratum's bundles name frames by the fs-verity digest; sessions by sha256 (tested at the end).
const decodeFrame = (frame: Uint8Array, options: { maxSize: number }) => decodeWith(frame, { ...options, digest: fsverityDigest });
const encodeFrame = (type: string, data: Uint8Array) => encodeWith(type, data, { digest: fsverityDigest });

function corrupt(frame: Uint8Array, options = LIMIT): string {
  try {
    decodeFrame(frame, options);
  } catch (err) {
    assert.instance(err, SessionError);
    assert.is((err as SessionError).code, 'CORRUPT_FRAME');
    return (err as SessionError).message;
  }
  return assert.unreachable('expected CORRUPT_FRAME') as never;
}

test('a frame round-trips and is named by the digest of its uncompressed bytes', () => {
  const data = Buffer.concat([Buffer.from('text '.repeat(1000)), pseudoRandomBytes(5000, 3)]);
  const frame = encodeFrame('blob', data);
  assert.ok(frame.length < data.length, 'compressed');
  const decoded = decodeFrame(frame, LIMIT);
  assert.is(decoded.name, fsverityDigest(data));
  assert.is(decoded.type, 'blob');
  assert.ok(decoded.data.equals(data));
  assert.ok(decodeFrame(encodeFrame('blob', Buffer.alloc(0)), LIMIT).data.length === 0);
});

test('truncation at every point is refused, never returns partial data', () => {
  const frame = encodeFrame('blob', pseudoRandomBytes(200_000, 9));
  for (let cut = 0; cut < frame.length; cut += Math.max(1, Math.floor(frame.length / 97))) corrupt(frame.subarray(0, cut));
  corrupt(frame.subarray(0, frame.length - 1));
});

test('a flipped bit in the payload or the name is caught', () => {
  const frame = encodeFrame('blob', Buffer.from('hello world '.repeat(50)));
  const payload = Buffer.from(frame);
  payload[payload.length - 10]! ^= 0x01;
  corrupt(payload);
  const name = Buffer.from(frame);
  name[0] = name[0] === 0x61 ? 0x62 : 0x61;
  assert.match(corrupt(name), /digest|sha256/);
});

test('frames that expand beyond the limit are refused before they are held in memory', () => {
  const big = Buffer.alloc(8 << 20); // 8 MiB of zeros compresses to a few hundred bytes
  const frame = encodeFrame('blob', big);
  assert.match(corrupt(frame, { maxSize: 1 << 20 }), /declares|limit/);
  // the same bomb without a declared size in the zstd header must be stopped while inflating
  const header = Buffer.from(`${fsverityDigest(big)}\0blob\0`);
  const streamed = Buffer.concat([header, compressWithoutSize(big)]);
  assert.match(corrupt(streamed, { maxSize: 1 << 20 }), /limit/);
});

test('bad names, bad types and trailing bytes are refused', () => {
  const data = Buffer.from('x');
  const z = compress(data);
  corrupt(Buffer.concat([Buffer.from(`nothex\0blob\0`), z]));
  corrupt(Buffer.concat([Buffer.from(`${fsverityDigest(data)}\0Bad Type\0`), z]));
  corrupt(Buffer.concat([Buffer.from(`${fsverityDigest(data)}\0blob\0`), z, Buffer.from('junk')]));
  corrupt(Buffer.from('no separators at all'));
});

/** A zstd frame whose header does not declare its size, as streaming compressors write. */
function compressWithoutSize(data: Buffer): Buffer {
  return compress(data, { contentSizeFlag: false });
}

test('a session frame is named by sha256, and a frame named by another digest is refused', () => {
  const data = Buffer.from('session object');
  const frame = encodeWith('note', data, { digest: sha256Hex });
  const decoded = decodeWith(frame, { maxSize: 1024, digest: sha256Hex });
  assert.is(decoded.name, sha256Hex(data));
  assert.is(decoded.type, 'note');
  assert.match(corrupt(frame), /digest/); // read as a bundle frame, the sha256 name does not match
});

test('a bad type is refused when encoding', () => {
  assert.throws(() => encodeWith('Bad Type', Buffer.alloc(1), { digest: sha256Hex }), (err: unknown) => err instanceof SessionError && err.code === 'BAD_VALUE');
});

test.run();
