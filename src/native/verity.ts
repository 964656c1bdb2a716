// fs-verity sha256 digests computed in C (native/src/verity.c), off the JavaScript thread for
// files. The TypeScript reference implementation is src/store/digest.ts; tests hold both to the
// same vectors.
import { addon } from './addon.js';

interface Native {
  digestFd(fd: number): Promise<string>;
  digestFdSync(fd: number): string;
  digestBuffer(bytes: Uint8Array): string;
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
