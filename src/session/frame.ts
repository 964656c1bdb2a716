// Session typed objects (the seed's object format): `[name]\0[type]\0[zstd bytes]`, where name
// is a digest of the uncompressed bytes and is checked on decode. Which digest is the caller's:
// a session names objects by sha256, Stratum's bundles by the fs-verity digest (the name an object
// has in the store). Pure: no I/O.
//
// Public surface: encodeFrame, decodeFrame, Frame, FrameDigest, FRAME_TYPE_PATTERN, sha256Hex.
import { hash } from 'node:crypto';
import { createRequire } from 'node:module';
import { compress } from 'zstd-napi';
import { SessionError } from './error.js';

export const FRAME_TYPE_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;
// The low-level binding is CommonJS built at run time; ESM named imports cannot see its exports.
const zstd = createRequire(import.meta.url)('zstd-napi/binding') as typeof import('zstd-napi/binding.js');
const MAX_HEADER = 64 + 1 + 32 + 1;
const OUT_CHUNK = 1 << 20;

/** Names the uncompressed bytes: 64 lowercase hex digits. */
export type FrameDigest = (data: Uint8Array) => string;

export function sha256Hex(data: Uint8Array): string {
  return hash('sha256', data, 'hex');
}

const isDigest = (s: string): boolean => /^[0-9a-f]{64}$/.test(s);

export interface Frame {
  name: string;
  type: string;
  data: Buffer;
}

export function encodeFrame(type: string, data: Uint8Array, options: { digest: FrameDigest; level?: number }): Buffer {
  if (!FRAME_TYPE_PATTERN.test(type)) throw new SessionError('BAD_VALUE', `bad object type ${JSON.stringify(type)}: it must match ${FRAME_TYPE_PATTERN.source}`);
  const header = Buffer.from(`${options.digest(data)}\0${type}\0`, 'latin1');
  return Buffer.concat([header, compress(data, { compressionLevel: options.level ?? 3 })]);
}

function corrupt(why: string): SessionError {
  return new SessionError('CORRUPT_FRAME', `corrupt object frame: ${why}`);
}

/**
 * Decodes one frame. `maxSize` bounds the uncompressed size, so a hostile frame that declares
 * or expands to more is refused before it is held in memory.
 */
export function decodeFrame(frame: Uint8Array, options: { maxSize: number; digest: FrameDigest }): Frame {
  const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  const nameEnd = buf.indexOf(0);
  if (nameEnd < 0 || nameEnd > MAX_HEADER) throw corrupt('no object name');
  const typeEnd = buf.indexOf(0, nameEnd + 1);
  if (typeEnd < 0 || typeEnd > MAX_HEADER) throw corrupt('no object type');
  const name = buf.toString('latin1', 0, nameEnd);
  const type = buf.toString('latin1', nameEnd + 1, typeEnd);
  if (!isDigest(name)) throw corrupt(`name ${JSON.stringify(name.slice(0, 80))} is not a sha256 digest`);
  if (!FRAME_TYPE_PATTERN.test(type)) throw corrupt(`bad type ${JSON.stringify(type.slice(0, 40))} for object ${name}`);
  const data = inflate(buf.subarray(typeEnd + 1), options.maxSize, name);
  const actual = options.digest(data);
  if (actual !== name) throw corrupt(`object ${name} holds bytes whose digest is ${actual}`);
  return { name, type, data };
}

/** Exactly one complete zstd frame, at most maxSize bytes out. */
function inflate(input: Buffer, maxSize: number, name: string): Buffer {
  let declared: number | null;
  try {
    declared = zstd.getFrameContentSize(input);
  } catch {
    throw corrupt(`object ${name} is not zstd data`);
  }
  if (declared !== null && declared > maxSize) throw corrupt(`object ${name} declares ${declared} bytes, more than the limit of ${maxSize}`);
  const dctx = new zstd.DCtx();
  const chunks: Buffer[] = [];
  let total = 0;
  let rest = input;
  let pending = 1;
  try {
    while (rest.length > 0 || pending > 0) {
      const out = Buffer.allocUnsafe(Math.min(OUT_CHUNK, maxSize - total + 1));
      const [hint, produced, consumed] = dctx.decompressStream(out, rest);
      total += produced;
      if (total > maxSize) throw corrupt(`object ${name} expands to more than the limit of ${maxSize} bytes`);
      chunks.push(out.subarray(0, produced));
      rest = rest.subarray(consumed);
      pending = hint;
      if (produced === 0 && consumed === 0 && hint > 0 && rest.length > 0) throw corrupt(`object ${name} does not decode`);
      if (hint === 0 && rest.length > 0) throw corrupt(`object ${name} has ${rest.length} bytes after its zstd frame`);
      if (hint > 0 && rest.length === 0 && produced === 0) throw corrupt(`object ${name} is truncated`);
    }
  } catch (err) {
    if (err instanceof SessionError) throw err;
    throw corrupt(`object ${name}: ${(err as Error).message}`);
  }
  return Buffer.concat(chunks, total);
}
