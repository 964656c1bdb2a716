// The bundle format, a stream of typed frames (docs/bundle.md):
//
//   "stratum-bundle 1\n"
//   record*   record = u32 LE length ‖ frame      frame = [digest]\0[type]\0[zstd bytes]
//   u32 0     end of bundle
//
// Records come in a fixed order: manifest, metadata, image, annotations (manifest format 2 only),
// then one blob per object. This file holds the framing only (bytes in, records out, with every
// length bounded); the commands decide what a record may be.
//
// Public surface: BUNDLE_MAGIC, encodeRecord, END_RECORD, RecordReader, Manifest, ManifestFormat,
// parseManifest.
import { StratumError } from './error.js';
import { fsverityDigest, isDigest } from './digest.js';
import { encodeFrame } from '../session/frame.js';
import { NAME_PATTERN } from './names.js';

export const BUNDLE_MAGIC = Buffer.from('stratum-bundle 1\n');
export const END_RECORD = Buffer.alloc(4);

/** Format 1: no annotations record; format 2: an annotations record follows the image. */
export type ManifestFormat = 1 | 2;

export interface Manifest {
  format: ManifestFormat;
  label: string;
  tag: string;
  id: string;
  objects: number;
}

export function encodeRecord(type: string, data: Uint8Array, level?: number): Buffer {
  const frame = encodeFrame(type, data, { digest: fsverityDigest, ...(level === undefined ? {} : { level }) });
  const length = Buffer.alloc(4);
  length.writeUInt32LE(frame.length);
  return Buffer.concat([length, frame]);
}

export function parseManifest(data: Uint8Array): Manifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    throw corrupt('the manifest is not JSON');
  }
  const m = doc as Partial<Manifest>;
  if (m.format !== 1 && m.format !== 2) throw corrupt(`manifest format ${String(m.format)} is not 1 or 2 (a newer stratum wrote it)`);
  if (typeof m.label !== 'string' || !NAME_PATTERN.test(m.label)) throw corrupt('the manifest names no valid label');
  if (typeof m.tag !== 'string' || !NAME_PATTERN.test(m.tag)) throw corrupt('the manifest names no valid tag');
  if (typeof m.id !== 'string' || !isDigest(m.id)) throw corrupt('the manifest names no commit id');
  if (typeof m.objects !== 'number' || !Number.isSafeInteger(m.objects) || m.objects < 0) throw corrupt('the manifest has no object count');
  return { format: m.format, label: m.label, tag: m.tag, id: m.id, objects: m.objects };
}

export function corrupt(why: string): StratumError {
  return new StratumError('CORRUPT_FRAME', `bad bundle: ${why}`);
}

/** Reads exact byte counts from a stream of chunks (a file, stdin), never more than asked for. */
export class RecordReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private done = false;
  private readonly source: AsyncIterator<Buffer | string>;

  constructor(stream: AsyncIterable<Buffer | string>) {
    this.source = stream[Symbol.asyncIterator]();
  }

  /** Exactly n bytes, or a CORRUPT_FRAME error naming what was cut short. */
  async read(n: number, what: string): Promise<Buffer> {
    while (this.buffered < n && !this.done) {
      const { value, done } = await this.source.next();
      if (done) this.done = true;
      else {
        const chunk = typeof value === 'string' ? Buffer.from(value) : value;
        this.chunks.push(chunk);
        this.buffered += chunk.length;
      }
    }
    if (this.buffered < n) throw corrupt(`it ends in the middle of ${what}`);
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered -= n;
    return all.subarray(0, n);
  }

  async magic(): Promise<void> {
    const got = await this.read(BUNDLE_MAGIC.length, 'its header');
    if (!got.equals(BUNDLE_MAGIC)) throw corrupt('it does not start with "stratum-bundle 1"');
  }

  /** The next record's frame bytes (undefined at the end marker); longer than maxLength is refused unread. */
  async record(maxLength: number, what: string): Promise<Buffer | undefined> {
    const length = (await this.read(4, `the length of ${what}`)).readUInt32LE(0);
    if (length === 0) return undefined;
    if (length > maxLength) throw corrupt(`${what} claims ${length} bytes, more than the ${maxLength} it can be`);
    return this.read(length, what);
  }

  /** True when nothing follows. */
  async atEnd(): Promise<boolean> {
    if (this.buffered > 0) return false;
    while (!this.done) {
      const { value, done } = await this.source.next();
      if (done) this.done = true;
      else if (value.length > 0) {
        const chunk = typeof value === 'string' ? Buffer.from(value) : value;
        this.chunks.push(chunk);
        this.buffered += chunk.length;
        return false;
      }
    }
    return true;
  }
}
