// xxh32, the hash EROFS uses for its per-inode xattr name bloom filter (h_name_filter).
// Written from the algorithm's description; Math.imul keeps every step in uint32 arithmetic.
//
// Public surface: xxh32.

const PRIME32_1 = 2654435761;
const PRIME32_2 = 2246822519;
const PRIME32_3 = 3266489917;
const PRIME32_4 = 668265263;
const PRIME32_5 = 374761393;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function le32(p: Uint8Array, i: number): number {
  return (p[i]! | (p[i + 1]! << 8) | (p[i + 2]! << 16) | (p[i + 3]! << 24)) >>> 0;
}

function round(acc: number, input: number): number {
  acc = (acc + Math.imul(input, PRIME32_2)) | 0;
  return Math.imul(rotl(acc, 13), PRIME32_1);
}

export function xxh32(data: Uint8Array, seed: number): number {
  const len = data.length;
  let p = 0;
  let h: number;
  if (len >= 16) {
    let v1 = (seed + PRIME32_1 + PRIME32_2) | 0;
    let v2 = (seed + PRIME32_2) | 0;
    let v3 = seed | 0;
    let v4 = (seed - PRIME32_1) | 0;
    const limit = len - 16;
    do {
      v1 = round(v1, le32(data, p));
      v2 = round(v2, le32(data, p + 4));
      v3 = round(v3, le32(data, p + 8));
      v4 = round(v4, le32(data, p + 12));
      p += 16;
    } while (p <= limit);
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    h = (seed + PRIME32_5) | 0;
  }
  h = (h + len) | 0;
  while (p + 4 <= len) {
    h = (h + Math.imul(le32(data, p), PRIME32_3)) | 0;
    h = Math.imul(rotl(h, 17), PRIME32_4);
    p += 4;
  }
  while (p < len) {
    h = (h + Math.imul(data[p]!, PRIME32_5)) | 0;
    h = Math.imul(rotl(h, 11), PRIME32_1);
    p++;
  }
  h ^= h >>> 15;
  h = Math.imul(h, PRIME32_2);
  h ^= h >>> 13;
  h = Math.imul(h, PRIME32_3);
  h ^= h >>> 16;
  return h >>> 0;
}
