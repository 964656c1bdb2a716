// fs-verity sha256 digests computed in C (native/src/verity.c), off the JavaScript thread for
// files. The TypeScript reference implementation is src/store/digest.ts; tests hold both to the
// same vectors. Also one level of a Merkle tree (merkleLevel), for src/store/merkle.ts.
import { addon } from './addon.js';

interface Native {
  digestFd(fd: number): Promise<string>;
  digestFdSync(fd: number): string;
  digestBuffer(bytes: Uint8Array): string;
  merkleLevel(level: Uint8Array, next: Uint8Array, from: number, to: number): void;
}
const native = addon as unknown as Native;

/** Digest of a file's content from offset 0 to end of file, read with pread on a pool thread. */
export function digestFd(fd: number): Promise<string> {
  return native.digestFd(fd);
}

/** digestFd on the calling thread, for callers that block on the file anyway. */
export function digestFdSync(fd: number): string {
  return native.digestFdSync(fd);
}

/** Digest of bytes in memory, synchronously (one native call instead of one per 4 KiB block). */
export function digestBuffer(bytes: Uint8Array): string {
  return native.digestBuffer(bytes);
}

/**
 * Writes nodes from..to-1 of the level above `level` into `next` (both flat, 32 bytes a node;
 * `next` holds ceil(n/2) nodes): node i = sha256(0x01 ‖ level[2i] ‖ level[2i+1]), or level[2i]
 * when it is the odd last node. Other nodes of `next` are left as they are.
 */
export function merkleLevel(level: Uint8Array, next: Uint8Array, from: number, to: number): void {
  native.merkleLevel(level, next, from, to);
}
