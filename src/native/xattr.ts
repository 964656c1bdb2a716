// Extended attributes that never follow a final symlink (l*) or act on an open fd (f*). Node has
// no xattr API, and the overlayfs upper format we share with the kernel lives in xattrs
// (trusted.overlay.opaque, ...). Values are binary, so they are Buffers both ways.
//
//   lgetxattr(path, name): Buffer                 fgetxattr(fd, name): Buffer
//   lsetxattr(path, name, value, flags = 0)       fsetxattr(fd, name, value, flags = 0)
//   llistxattr(path): string[]                    flistxattr(fd): string[]
//   llistxattr(path, { encoding: 'buffer' }): Buffer[]   (same for flistxattr; names that are not UTF-8)
//   lremovexattr(path, name)                      fremovexattr(fd, name)
//   XATTR_CREATE, XATTR_REPLACE                   flags for the set calls
//
// Failures throw Node-style system errors (NodeJS.ErrnoException: code, errno, syscall, path):
// a missing attribute is ENODATA, XATTR_CREATE over an existing one EEXIST, user.* on a symlink
// EPERM. Paths and names are strings (UTF-8) or Buffers (raw bytes).
import { addon } from './addon.js';

export type XattrPath = string | Buffer;
export type XattrName = string | Buffer;
export interface ListOptions { encoding: 'buffer' }

interface Native {
  lgetxattr(path: XattrPath, name: XattrName): Buffer;
  fgetxattr(fd: number, name: XattrName): Buffer;
  lsetxattr(path: XattrPath, name: XattrName, value: Uint8Array, flags: number): void;
  fsetxattr(fd: number, name: XattrName, value: Uint8Array, flags: number): void;
  llistxattr(path: XattrPath, asBuffers: boolean): string[] | Buffer[];
  flistxattr(fd: number, asBuffers: boolean): string[] | Buffer[];
  lremovexattr(path: XattrPath, name: XattrName): void;
  fremovexattr(fd: number, name: XattrName): void;
  sysConstants: { XATTR_CREATE: number; XATTR_REPLACE: number };
}
const native = addon as unknown as Native;

/** Fail with EEXIST if the attribute already exists. */
export const XATTR_CREATE: number = native.sysConstants.XATTR_CREATE;
/** Fail with ENODATA if the attribute does not exist yet. */
export const XATTR_REPLACE: number = native.sysConstants.XATTR_REPLACE;

export function lgetxattr(path: XattrPath, name: XattrName): Buffer {
  return native.lgetxattr(path, name);
}

export function fgetxattr(fd: number, name: XattrName): Buffer {
  return native.fgetxattr(fd, name);
}

export function lsetxattr(path: XattrPath, name: XattrName, value: Uint8Array, flags = 0): void {
  native.lsetxattr(path, name, value, flags);
}

export function fsetxattr(fd: number, name: XattrName, value: Uint8Array, flags = 0): void {
  native.fsetxattr(fd, name, value, flags);
}

export function llistxattr(path: XattrPath): string[];
export function llistxattr(path: XattrPath, options: ListOptions): Buffer[];
export function llistxattr(path: XattrPath, options?: ListOptions): string[] | Buffer[] {
  return native.llistxattr(path, options?.encoding === 'buffer');
}

export function flistxattr(fd: number): string[];
export function flistxattr(fd: number, options: ListOptions): Buffer[];
export function flistxattr(fd: number, options?: ListOptions): string[] | Buffer[] {
  return native.flistxattr(fd, options?.encoding === 'buffer');
}

export function lremovexattr(path: XattrPath, name: XattrName): void {
  native.lremovexattr(path, name);
}

export function fremovexattr(fd: number, name: XattrName): void {
  native.fremovexattr(fd, name);
}
