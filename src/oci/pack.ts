// Packs: many small objects in one registry blob (docs/oci.md). A pack is a tar archive in which
// every entry (512-byte ustar header, the object's bytes, padding) is compressed as its own zstd
// frame, and the end-of-archive blocks as a last frame. Concatenated zstd frames are one valid
// zstd stream, so `tar --zstd -x` reads a pack; and since each entry is a whole frame, one object
// can be fetched alone with an HTTP Range read of [offset, offset + length) from the pack's index.
// Pure: bytes in, bytes out; every input from a registry is checked here.
//
// Public surface: PackEntry, PackIndexEntry, writePack, formatIndex, parseIndex, readEntry, entryName.
import { createRequire } from 'node:module';
import { compress } from 'zstd-napi';
import { fsverityDigest } from '../store/digest.js';
import { StratumError } from '../store/error.js';

const zstd = createRequire(import.meta.url)('zstd-napi/binding') as typeof import('zstd-napi/binding.js');
const BLOCK = 512;
const LEVEL = 3;
/** An index line is 64 + 3 numbers; bound what we accept from a registry. */
export const MAX_INDEX_BYTES = 64 << 20;

/** What one entry's frame can take for an object of `size` bytes: tar header and padding, zstd's worst case. */
export function maxFrameLength(size: number): number {
  const tar = size + 1024;
  return tar + (tar >> 7) + 512;
}

/** The largest pack a writer following plan.ts makes: its byte cap plus one object, every entry at its worst. */
export function maxPackBytes(packMaxBytes: number, packMaxObjects: number, largeObject: number): number {
  return maxFrameLength(packMaxBytes + largeObject) + packMaxObjects * maxFrameLength(0) + 1024;
}

export interface PackEntry {
  digest: string;
  data: Uint8Array;
}

/** Where one object sits in its pack: the compressed frame's byte range, and the object's size. */
export interface PackIndexEntry {
  digest: string;
  offset: number;
  length: number;
  size: number;
}

/** `ab/cdef…`: the object's path in the store's objects/ dir, and its name inside a pack. */
export function entryName(digest: string): string {
  return `${digest.slice(0, 2)}/${digest.slice(2)}`;
}

/** The pack's bytes and its index; entries must come sorted by digest (the caller's plan). */
export function writePack(entries: readonly PackEntry[]): { pack: Buffer; index: PackIndexEntry[] } {
  const parts: Buffer[] = [];
  const index: PackIndexEntry[] = [];
  let offset = 0;
  for (const entry of entries) {
    const padded = Buffer.alloc(BLOCK + roundUp(entry.data.length));
    tarHeader(entryName(entry.digest), entry.data.length).copy(padded, 0);
    padded.set(entry.data, BLOCK);
    const frame = compress(padded, { compressionLevel: LEVEL });
    parts.push(frame);
    index.push({ digest: entry.digest, offset, length: frame.length, size: entry.data.length });
    offset += frame.length;
  }
  parts.push(compress(Buffer.alloc(2 * BLOCK), { compressionLevel: LEVEL }));
  return { pack: Buffer.concat(parts), index };
}

/** The index blob: one line per object, `<digest> <offset> <length> <size>\n`, in pack order. */
export function formatIndex(index: readonly PackIndexEntry[]): Buffer {
  return Buffer.from(index.map((e) => `${e.digest} ${e.offset} ${e.length} ${e.size}\n`).join(''), 'latin1');
}

/** Parses and checks an index against its pack's size: sorted, unique, contiguous frames inside the pack. */
export function parseIndex(bytes: Uint8Array, packSize: number, maxObject: number): PackIndexEntry[] {
  if (bytes.length > MAX_INDEX_BYTES) throw bad(`a pack index of ${bytes.length} bytes is larger than ${MAX_INDEX_BYTES}`);
  const text = Buffer.from(bytes).toString('latin1');
  if (text.length > 0 && !text.endsWith('\n')) throw bad('a pack index does not end with a newline');
  const out: PackIndexEntry[] = [];
  let expected = 0;
  for (const line of text.split('\n').slice(0, -1)) {
    const m = /^([0-9a-f]{64}) (0|[1-9][0-9]{0,14}) ([1-9][0-9]{0,14}) (0|[1-9][0-9]{0,14})$/.exec(line);
    if (!m) throw bad(`a pack index line is malformed: ${JSON.stringify(line.slice(0, 100))}`);
    const entry = { digest: m[1]!, offset: Number(m[2]), length: Number(m[3]), size: Number(m[4]) };
    const previous = out[out.length - 1];
    if (previous && previous.digest >= entry.digest) throw bad('a pack index is not sorted by digest, or names an object twice');
    if (entry.offset !== expected) throw bad(`a pack index entry for ${entry.digest} starts at ${entry.offset}, not at ${expected}`);
    if (entry.size > maxObject) throw bad(`a pack index entry for ${entry.digest} claims ${entry.size} bytes`);
    if (entry.length > maxFrameLength(entry.size)) throw bad(`a pack index entry for ${entry.digest} is a ${entry.length}-byte frame for ${entry.size} bytes`);
    expected = entry.offset + entry.length;
    if (expected > packSize) throw bad(`a pack index entry for ${entry.digest} ends past the pack's ${packSize} bytes`);
    out.push(entry);
  }
  return out;
}

/**
 * One entry's frame (the bytes at its index range) back to the object: one zstd frame that
 * inflates to exactly header + size rounded up, a ustar header naming `ab/cdef…` for the
 * expected digest, and content whose fs-verity digest is that digest. Anything else is refused.
 * `checkDigest: false` leaves the last check to a caller that hashes the bytes anyway (an object
 * batch's put returns the digest it computed).
 */
export function readEntry(frame: Uint8Array, expected: PackIndexEntry, options: { checkDigest?: boolean } = {}): Buffer {
  const want = BLOCK + roundUp(expected.size);
  const raw = inflateExactly(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength), want, expected.digest);
  const header = raw.subarray(0, BLOCK);
  const name = cString(header.subarray(0, 100));
  const prefix = cString(header.subarray(345, 500));
  const full = prefix ? `${prefix}/${name}` : name;
  if (full !== entryName(expected.digest)) throw bad(`a pack entry is named ${JSON.stringify(full.slice(0, 100))}, expected ${entryName(expected.digest)}`);
  if (header[156] !== 0x30 && header[156] !== 0) throw bad(`pack entry ${full} is not a regular file`);
  if (!checksumOk(header)) throw bad(`pack entry ${full} has a bad tar header checksum`);
  const size = parseInt(cString(header.subarray(124, 136)).trim() || 'x', 8);
  if (size !== expected.size) throw bad(`pack entry ${full} holds ${size} bytes; its index says ${expected.size}`);
  const data = raw.subarray(BLOCK, BLOCK + size);
  if (options.checkDigest === false) return data;
  const actual = fsverityDigest(data);
  if (actual !== expected.digest) throw new StratumError('CORRUPT_OBJECT', `registry sent object ${expected.digest} with bytes whose digest is ${actual}`);
  return data;
}

function roundUp(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

/** A deterministic ustar header: mode 0444, owner 0:0, time 0, regular file. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'latin1');
  h.write('0000444\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  h.write('00000000000\0', 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write('0', 156, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

function checksumOk(h: Buffer): boolean {
  const stored = parseInt(cString(h.subarray(148, 156)).trim() || 'x', 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return stored === sum;
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.toString('latin1', 0, end < 0 ? b.length : end);
}

/** Exactly one zstd frame inflating to exactly `size` bytes; more output is refused as it appears. */
function inflateExactly(input: Buffer, size: number, digest: string): Buffer {
  const out = Buffer.alloc(size + 1);
  let total = 0;
  let rest = input;
  try {
    const dctx = new zstd.DCtx();
    for (;;) {
      const [hint, produced, consumed] = dctx.decompressStream(out.subarray(total), rest);
      total += produced;
      rest = rest.subarray(consumed);
      if (total > size) throw bad(`pack entry ${digest} inflates to more than its ${size} bytes`);
      if (hint === 0) break;
      if (rest.length === 0) throw bad(`pack entry ${digest} is cut short`);
      if (produced === 0 && consumed === 0) throw bad(`pack entry ${digest} does not decode`);
    }
  } catch (err) {
    if (err instanceof StratumError) throw err;
    throw bad(`pack entry ${digest} is not zstd data (${(err as Error).message})`);
  }
  if (rest.length > 0) throw bad(`pack entry ${digest} has ${rest.length} bytes after its zstd frame`);
  if (total !== size) throw bad(`pack entry ${digest} inflates to ${total} bytes, not ${size}`);
  return out.subarray(0, size);
}

function bad(why: string): StratumError {
  return new StratumError('CORRUPT_FRAME', `bad pack from the registry: ${why}`);
}

