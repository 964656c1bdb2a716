// The fs-verity sha256 digest (4 KiB blocks, no salt): the name composefs gives every object and
// image. Computed exactly as fsverity-utils does: hash every data block (the last one zero-padded),
// pack the hashes into blocks level by level up to a single root block, then hash the 256-byte
// descriptor that records the root hash and the data size.
//
// Whole buffers and files are hashed by the same algorithm in C (src/native/verity.ts), which is
// several times faster; this TypeScript version serves streams and is the reference in tests.
//
// Public surface: fsverityDigest, FsverityHasher, DIGEST_HEX_LENGTH, isDigest.
import { hash as oneShotHash } from 'node:crypto';
import { digestBuffer } from '../native/verity.js';

const BLOCK = 4096;
const HASH = 32;
const HASHES_PER_BLOCK = BLOCK / HASH;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

export const DIGEST_HEX_LENGTH = 64;

export function isDigest(s: string): boolean {
  return /^[0-9a-f]{64}$/.test(s);
}

function sha256(data: Uint8Array): Buffer {
  return oneShotHash('sha256', data, 'buffer') as unknown as Buffer;
}

/**
 * Incremental digest: feed data in any chunk sizes, then `digest()`. Memory is the leaf hashes
 * (32 bytes per 4 KiB, 8 MiB for a 1 GiB file) plus one partial block.
 */
export class FsverityHasher {
  private leafHashes: Buffer[] = [];
  private readonly partial = Buffer.alloc(BLOCK);
  private partialLength = 0;
  private size = 0;

  update(data: Uint8Array): this {
    let offset = 0;
    this.size += data.length;
    if (this.partialLength > 0) {
      const take = Math.min(BLOCK - this.partialLength, data.length);
      this.partial.set(data.subarray(0, take), this.partialLength);
      this.partialLength += take;
      offset = take;
      if (this.partialLength === BLOCK) {
        this.leafHashes.push(sha256(this.partial));
        this.partialLength = 0;
      }
    }
    const whole = offset + Math.floor((data.length - offset) / BLOCK) * BLOCK;
    for (; offset < whole; offset += BLOCK) this.leafHashes.push(sha256(data.subarray(offset, offset + BLOCK)));
    if (offset < data.length) {
      this.partial.set(data.subarray(offset), 0);
      this.partialLength = data.length - offset;
    }
    return this;
  }

  /** Hex digest; the hasher must not be used afterwards. */
  digest(): string {
    if (this.partialLength > 0) {
      this.partial.fill(0, this.partialLength);
      this.leafHashes.push(sha256(this.partial));
      this.partialLength = 0;
    }
    const root = this.size === 0 ? Buffer.alloc(HASH) : rootHash(this.leafHashes);
    return sha256(descriptor(root, this.size)).toString('hex');
  }
}

/** Hashes one level of the tree up into the next, until a single block's hash remains. */
function rootHash(leaves: Buffer[]): Buffer {
  let level = leaves;
  while (level.length > 1) {
    const next: Buffer[] = [];
    for (let i = 0; i < level.length; i += HASHES_PER_BLOCK) {
      const block = Buffer.concat(level.slice(i, i + HASHES_PER_BLOCK), BLOCK);
      next.push(sha256(block));
    }
    level = next;
  }
  return level[0] ?? sha256(ZERO_BLOCK);
}

/** struct fsverity_descriptor from <linux/fsverity.h>: 256 bytes, little-endian. */
function descriptor(root: Buffer, size: number): Buffer {
  const d = Buffer.alloc(256);
  d[0] = 1; // version
  d[1] = 1; // FS_VERITY_HASH_ALG_SHA256
  d[2] = 12; // log2(block size)
  d[3] = 0; // salt size
  d.writeBigUInt64LE(BigInt(size), 8);
  root.copy(d, 16);
  return d;
}

export function fsverityDigest(data: Uint8Array): string {
  return digestBuffer(data);
}
