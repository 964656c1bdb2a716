// Reads a composefs EROFS image lazily, for the FUSE server: opening parses only the header and
// superblock; every other call reads the few blocks it needs through a BlockSource. The view is the
// one the kernel gives through overlayfs: the 256 whiteout stubs (and any char 0/0 whiteout) are
// hidden, `trusted.overlay.overlay.*` xattrs are shown unescaped, overlayfs' own `trusted.overlay.*`
// (metacopy, redirect, opaque, ...) are hidden, and an escaped source whiteout is what overlayfs
// shows for it: an empty regular file carrying `trusted.overlay.whiteout`.
//
// Two modes over one parser: `ImageReader.open(source)` is lazy, with bounded caches, for servers
// that keep an image open; `ImageReader.whole(bytes)` reads an image held in memory, keeping every
// inode it parsed and handing out views instead of copies: the fast whole-image walk a commit
// needs (image-tree.ts builds the base Tree with it). Fields are read through the layouts of
// erofs.ts, by name.
//
// Every offset, count and length read from the image is checked before use, in both modes; a
// malformed image gives StratumError('CORRUPT_IMAGE'), never a RangeError. Each call does work
// bounded by the size of the one inode or directory it touches; whole-tree walks (walkImage,
// imageTree) refuse directory cycles.
//
// Public surface: BlockSource, bufferSource, FileSource, ImageReader, InodeAttr, DirEntry,
// ExternalObject, StoredXattr, walkImage.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { StratumError } from '../error.js';
import {
  EROFS_BLKSIZ, EROFS_BLKSIZ_BITS, EROFS_INODE_CHUNK_BASED, EROFS_INODE_FLAT_INLINE, EROFS_INODE_FLAT_PLAIN, EROFS_SUPER_MAGIC_V1,
  EROFS_SUPER_OFFSET, FileType, LCFS_EROFS_MAGIC, OVERLAY_METACOPY, OVERLAY_REDIRECT, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK,
  S_IFMT, S_IFREG, S_IFSOCK, XATTR_PREFIX_BY_INDEX, erofs_dirent, erofs_inode_extended, erofs_super_block, erofs_xattr_entry,
  erofs_xattr_ibody_header, getField, inodeDataLayout, inodeLayout, isWhiteout, lcfs_erofs_header, shownXattrName, xattrEntrySize,
  xattrIbodySize, direntNameEnd,
} from './erofs.js';
import type { ByteString, Xattr } from './tree.js';

/** Random access to image bytes. `readAt` may return a view into a cache: do not keep or modify it. */
export interface BlockSource {
  readonly size: number;
  readAt(offset: number, length: number): Uint8Array;
}

export function bufferSource(bytes: Uint8Array): BlockSource {
  return { size: bytes.length, readAt: (offset, length) => bytes.subarray(offset, offset + length) };
}

/** A file read with pread, through a bounded LRU cache of 4 KiB blocks. */
export class FileSource implements BlockSource {
  readonly size: number;
  private readonly fd: number;
  private readonly cache = new Map<number, Buffer>();
  private readonly maxBlocks: number;

  constructor(path: string, options: { cacheBlocks?: number } = {}) {
    this.fd = openSync(path, 'r');
    this.size = fstatSync(this.fd).size;
    this.maxBlocks = Math.max(4, options.cacheBlocks ?? 1024);
  }

  private block(index: number): Buffer {
    let b = this.cache.get(index);
    if (b) {
      this.cache.delete(index);
      this.cache.set(index, b);
      return b;
    }
    b = Buffer.alloc(EROFS_BLKSIZ);
    let got = 0;
    while (got < EROFS_BLKSIZ) {
      const n = readSync(this.fd, b, got, EROFS_BLKSIZ - got, index * EROFS_BLKSIZ + got);
      if (n === 0) break;
      got += n;
    }
    if (this.cache.size >= this.maxBlocks) this.cache.delete(this.cache.keys().next().value as number);
    this.cache.set(index, b);
    return b;
  }

  readAt(offset: number, length: number): Uint8Array {
    const first = Math.floor(offset / EROFS_BLKSIZ);
    const last = Math.floor((offset + length - 1) / EROFS_BLKSIZ);
    if (length > 0 && first === last) {
      const o = offset - first * EROFS_BLKSIZ;
      return this.block(first).subarray(o, o + length);
    }
    const out = Buffer.alloc(length);
    for (let done = 0; done < length;) {
      const pos = offset + done;
      const bi = Math.floor(pos / EROFS_BLKSIZ);
      const o = pos - bi * EROFS_BLKSIZ;
      const n = Math.min(EROFS_BLKSIZ - o, length - done);
      out.set(this.block(bi).subarray(o, o + n), done);
      done += n;
    }
    return out;
  }

  close(): void {
    closeSync(this.fd);
    this.cache.clear();
  }
}

export interface InodeAttr {
  nid: number;
  /** i_ino: the inode's BFS index in the image, stable for the image. */
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
}

export interface DirEntry {
  name: ByteString;
  nid: number;
  type: FileType;
  /** Pass as `offset` to continue listing after this entry. */
  next: number;
}

export interface ExternalObject {
  /** fs-verity digest from trusted.overlay.metacopy, if the image records one. */
  digest: string | undefined;
  /** Backing path relative to the objects dir (redirect without its leading '/'), if any. */
  path: ByteString | undefined;
}

/** An xattr as stored; `shared` when it lives in the shared xattr area. */
export interface StoredXattr {
  name: ByteString;
  value: Uint8Array;
  shared: boolean;
}

interface RawInode extends InodeAttr {
  layout: number;
  /** Byte offset of the inode in the image. */
  offset: number;
  isize: number;
  xattrSize: number;
  blkaddr: number;
}

function corrupt(why: string): never {
  throw new StratumError('CORRUPT_IMAGE', `corrupt image: ${why}`);
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
/** Directory entries per block can never exceed this; offsets encode (block, index). */
const OFFSET_SLOTS = 1024;
const INODE_CACHE = 4096;
const DIR_BLOCK_CACHE = 512;
const MAX_NAME = 255;

/** Bytes [from, to) of `b` as a byte string, without a view when `b` is a Buffer. */
const latin1At = (b: Uint8Array, from: number, to: number): ByteString => (Buffer.isBuffer(b) ? b.toString('latin1', from, to) : latin1(b.subarray(from, to)));
const latin1 = (b: Uint8Array): ByteString => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)).toString('latin1');

function validType(mode: number): boolean {
  const t = mode & S_IFMT;
  return t === S_IFREG || t === S_IFDIR || t === S_IFLNK || t === S_IFCHR || t === S_IFBLK || t === S_IFIFO || t === S_IFSOCK;
}

const isWhiteoutAttr = (a: InodeAttr): boolean => isWhiteout(a.mode, a.rdev);
const SB = erofs_super_block;
const DIRENT = erofs_dirent;
const XE = erofs_xattr_entry;

export class ImageReader {
  readonly rootNid: number;
  readonly composefsVersion: number;
  readonly inodeCount: number;
  private readonly metaStart: number;
  private readonly xattrStart: number;
  private readonly buildTimeSec: number;
  private readonly buildTimeNsec: number;
  private readonly inodes = new Map<number, RawInode>();
  /** Parsed directory blocks, keyed nid * 2^20 + block; bounded like the inode cache. */
  private readonly dirBlocks = new Map<number, Array<{ name: ByteString; nid: number; type: number }>>();

  /** Whole mode: every parsed inode kept, no directory block cache, values handed out as views. */
  private readonly wholeMode: boolean;
  /** Whole mode: the image, addressed absolutely (no view per read); lazy mode: undefined. */
  private readonly bytes: Buffer | undefined;

  private constructor(private readonly source: BlockSource, whole: Buffer | undefined) {
    this.wholeMode = whole !== undefined;
    this.bytes = whole;
    if (source.size < EROFS_SUPER_OFFSET + SB.sizeof) corrupt(`${source.size} bytes is too small`);
    const h = source.readAt(0, 16);
    if (getField(h, 0, lcfs_erofs_header.magic) !== LCFS_EROFS_MAGIC) corrupt('no composefs header');
    this.composefsVersion = getField(h, 0, lcfs_erofs_header.composefs_version);
    const sb = source.readAt(EROFS_SUPER_OFFSET, SB.sizeof);
    if (getField(sb, 0, SB.magic) !== EROFS_SUPER_MAGIC_V1) corrupt('bad EROFS superblock magic');
    const blkszbits = getField(sb, 0, SB.blkszbits);
    if (blkszbits !== EROFS_BLKSIZ_BITS) corrupt(`block size 2^${blkszbits} is not supported`);
    const incompat = getField(sb, 0, SB.feature_incompat);
    if ((incompat & ~0x4) !== 0) corrupt(`unsupported incompatible features ${incompat.toString(16)}`);
    this.rootNid = getField(sb, 0, SB.root_nid);
    this.inodeCount = getField(sb, 0, SB.inos);
    this.buildTimeSec = getField(sb, 0, SB.build_time);
    this.buildTimeNsec = getField(sb, 0, SB.build_time_nsec);
    this.metaStart = getField(sb, 0, SB.meta_blkaddr) * EROFS_BLKSIZ;
    this.xattrStart = getField(sb, 0, SB.xattr_blkaddr) * EROFS_BLKSIZ;
    if (this.metaStart >= source.size) corrupt('metadata area outside the image');
    if ((this.getattr(this.rootNid).mode & S_IFMT) !== S_IFDIR) corrupt('root is not a directory');
  }

  /** Lazy mode: reads only what each call needs, through bounded caches. */
  static open(source: BlockSource): ImageReader {
    return new ImageReader(source, undefined);
  }

  /** Whole mode, for an image in memory read end to end (a commit's base tree). Same checks. */
  static whole(bytes: Uint8Array): ImageReader {
    // a Buffer view, so the views handed out decode without another wrapper each
    const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return new ImageReader(bufferSource(buf), buf);
  }

  /** Reads image bytes after checking they lie inside the image. */
  private read(offset: number, length: number): Uint8Array {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.source.size)) corrupt(`read of ${length} bytes at ${offset} is outside the image`);
    return this.source.readAt(offset, length);
  }

  /**
   * Checks [offset, offset + length) lies in the image and gives the bytes to read it from: the
   * whole image in whole mode (address it at `offset`), else a view (address it at 0).
   */
  private span(offset: number, length: number): Uint8Array {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.source.size)) corrupt(`read of ${length} bytes at ${offset} is outside the image`);
    return this.bytes ?? this.source.readAt(offset, length);
  }

  private inode(nid: number): RawInode {
    const cached = this.inodes.get(nid);
    if (cached) return cached;
    if (!Number.isSafeInteger(nid) || nid < 0) corrupt(`bad inode number ${nid}`);
    const offset = this.metaStart + nid * 32;
    const o = this.bytes ? offset : 0; // where span()'s bytes hold the inode
    const format = getField(this.span(offset, 2), o, erofs_inode_extended.i_format);
    const I = inodeLayout(format);
    const layout = inodeDataLayout(format);
    if (format >> 4 !== 0) corrupt(`inode ${nid}: unknown format bits ${format.toString(16)}`);
    if (layout !== EROFS_INODE_FLAT_PLAIN && layout !== EROFS_INODE_FLAT_INLINE && layout !== EROFS_INODE_CHUNK_BASED) corrupt(`inode ${nid}: unsupported data layout ${layout}`);
    const isize = I.sizeof;
    const b = this.span(offset, isize);
    const mode = getField(b, o, I.i_mode);
    if (!validType(mode)) corrupt(`inode ${nid}: bad mode ${mode.toString(8)}`);
    const xattrSize = xattrIbodySize(getField(b, o, I.i_xattr_icount));
    const type = mode & S_IFMT;
    const iu = getField(b, o, I.i_u);
    const extended = I === erofs_inode_extended;
    const raw: RawInode = {
      nid, ino: getField(b, o, I.i_ino), mode, nlink: getField(b, o, I.i_nlink), uid: getField(b, o, I.i_uid), gid: getField(b, o, I.i_gid),
      size: getField(b, o, I.i_size), rdev: 0,
      mtimeSec: extended ? getField(b, o, erofs_inode_extended.i_mtime) : this.buildTimeSec,
      mtimeNsec: extended ? getField(b, o, erofs_inode_extended.i_mtime_nsec) : this.buildTimeNsec,
      layout, offset, isize, xattrSize, blkaddr: iu,
    };
    if (!(raw.size <= MAX_SAFE) || !Number.isSafeInteger(raw.mtimeSec)) corrupt(`inode ${nid}: size or time out of range`);
    if (type === S_IFCHR || type === S_IFBLK) raw.rdev = iu;
    if (layout === EROFS_INODE_CHUNK_BASED && type !== S_IFREG) corrupt(`inode ${nid}: chunk-based ${type.toString(8)}`);
    if ((type === S_IFDIR || type === S_IFLNK) && raw.size === 0 && layout !== EROFS_INODE_FLAT_PLAIN) corrupt(`inode ${nid}: empty inline data`);
    if (offset + isize + xattrSize > this.source.size) corrupt(`inode ${nid}: xattrs run past the end`);
    if (!this.wholeMode && this.inodes.size >= INODE_CACHE) this.inodes.delete(this.inodes.keys().next().value as number);
    this.inodes.set(nid, raw);
    return raw;
  }

  /** The image's build time: the mtime of every compact inode. */
  get buildTime(): { sec: number; nsec: number } {
    return { sec: this.buildTimeSec, nsec: this.buildTimeNsec };
  }

  /** Where an inode's bytes are, for the in-place patcher (patch.ts): offset, i_format's layouts, xattr body size. */
  placeOf(nid: number): { offset: number; extended: boolean; layout: number; xattrSize: number } {
    const r = this.inode(nid);
    return { offset: r.offset, extended: r.isize === erofs_inode_extended.sizeof, layout: r.layout, xattrSize: r.xattrSize };
  }

  getattr(nid: number): InodeAttr {
    const r = this.inode(nid);
    if (this.wholeMode) return r; // read-only by contract; no copy per call on the commit path
    return { nid: r.nid, ino: r.ino, mode: r.mode, nlink: r.nlink, uid: r.uid, gid: r.gid, size: r.size, rdev: r.rdev, mtimeSec: r.mtimeSec, mtimeNsec: r.mtimeNsec };
  }

  /** Bytes [offset, offset+length) of a flat (plain or tail-inlined) inode's data, bounds-checked. */
  private readFlat(r: RawInode, offset: number, length: number): Uint8Array {
    if (r.layout === EROFS_INODE_CHUNK_BASED) corrupt(`inode ${r.nid}: data is not in the image`);
    const end = Math.min(r.size, offset + length);
    if (offset >= end) return new Uint8Array(0);
    const nBlocks = Math.ceil(r.size / EROFS_BLKSIZ);
    const inlineFrom = r.layout === EROFS_INODE_FLAT_INLINE ? (nBlocks - 1) * EROFS_BLKSIZ : Infinity;
    const tailAt = r.offset + r.isize + r.xattrSize;
    if (r.layout === EROFS_INODE_FLAT_INLINE) {
      const tailLen = r.size - inlineFrom;
      // The kernel requires the tail to stay inside one block.
      if ((tailAt % EROFS_BLKSIZ) + tailLen > EROFS_BLKSIZ) corrupt(`inode ${r.nid}: inline tail crosses a block`);
    }
    // Flat data lives inside the image: a size claiming more is corrupt (and must not size a buffer).
    const outOfLine = Math.min(r.size, inlineFrom);
    if (outOfLine > 0 && r.blkaddr * EROFS_BLKSIZ + outOfLine > this.source.size) corrupt(`inode ${r.nid}: data runs past the end`);
    // Common case, one block or the tail: hand out the source's bytes without copying.
    if (offset >= inlineFrom) return this.read(tailAt + (offset - inlineFrom), end - offset);
    if (Math.floor(offset / EROFS_BLKSIZ) === Math.floor((end - 1) / EROFS_BLKSIZ) && end <= inlineFrom) {
      return this.read(r.blkaddr * EROFS_BLKSIZ + offset, end - offset);
    }
    const out = Buffer.alloc(end - offset);
    let pos = offset;
    while (pos < end) {
      if (pos >= inlineFrom) {
        out.set(this.read(tailAt + (pos - inlineFrom), end - pos), pos - offset);
        break;
      }
      const blockEnd = Math.min(end, (Math.floor(pos / EROFS_BLKSIZ) + 1) * EROFS_BLKSIZ, inlineFrom);
      out.set(this.read(r.blkaddr * EROFS_BLKSIZ + pos, blockEnd - pos), pos - offset);
      pos = blockEnd;
    }
    return out;
  }

  /** One directory block, parsed: names (byte strings) and nids, checked. */
  private dirBlock(r: RawInode, index: number): Array<{ name: ByteString; nid: number; type: number }> {
    if (this.wholeMode) return this.parseDirBlock(r, index); // each block is read once
    const key = r.nid * 2 ** 20 + index;
    const cached = index < 2 ** 20 ? this.dirBlocks.get(key) : undefined;
    if (cached) return cached;
    const parsed = this.parseDirBlock(r, index);
    if (index < 2 ** 20) {
      if (this.dirBlocks.size >= DIR_BLOCK_CACHE) this.dirBlocks.delete(this.dirBlocks.keys().next().value as number);
      this.dirBlocks.set(key, parsed);
    }
    return parsed;
  }

  /** A directory block's bytes and dirent count, with the dirent table checked. */
  private rawDirBlock(r: RawInode, index: number): { block: Uint8Array; count: number } {
    const block = this.readFlat(r, index * EROFS_BLKSIZ, EROFS_BLKSIZ);
    if (block.length < DIRENT.sizeof) corrupt(`directory ${r.nid}: block ${index} too short`);
    const first = getField(block, 0, DIRENT.nameoff);
    if (first % DIRENT.sizeof !== 0 || first < DIRENT.sizeof || first > block.length) corrupt(`directory ${r.nid}: bad dirent table in block ${index}`);
    return { block, count: first / DIRENT.sizeof };
  }

  /** Name bytes of dirent `i` (the last name ends at the block end or a NUL), checked. */
  private direntName(r: RawInode, block: Uint8Array, count: number, i: number): Uint8Array {
    const o = i * DIRENT.sizeof;
    const nameoff = getField(block, o, DIRENT.nameoff);
    const nameEnd = direntNameEnd(block, 0, block.length, i, count);
    if (nameoff < count * DIRENT.sizeof || nameEnd > block.length || nameEnd <= nameoff || nameEnd - nameoff > MAX_NAME) corrupt(`directory ${r.nid}: bad name offsets`);
    const name = block.subarray(nameoff, nameEnd);
    // a name with '/' or NUL would make paths built from it point somewhere else
    if (name.includes(0x2f) || name.includes(0)) corrupt(`directory ${r.nid}: a name contains '/' or NUL`);
    return name;
  }

  private direntNid(r: RawInode, block: Uint8Array, i: number): number {
    const nid = getField(block, i * DIRENT.sizeof, DIRENT.nid);
    if (!(nid <= MAX_SAFE)) corrupt(`directory ${r.nid}: bad nid`);
    return nid;
  }

  private parseDirBlock(r: RawInode, index: number): Array<{ name: ByteString; nid: number; type: number }> {
    const { block, count } = this.rawDirBlock(r, index);
    const out: Array<{ name: ByteString; nid: number; type: number }> = new Array(count);
    for (let i = 0; i < count; i++) {
      out[i] = { name: latin1(this.direntName(r, block, count, i)), nid: this.direntNid(r, block, i), type: getField(block, i * DIRENT.sizeof, DIRENT.file_type) };
    }
    return out;
  }

  private dir(nid: number): RawInode {
    const r = this.inode(nid);
    if ((r.mode & S_IFMT) !== S_IFDIR) throw new StratumError('CORRUPT_IMAGE', `inode ${nid} is not a directory`);
    return r;
  }

  /** The nid of `name` in directory `dirNid`, or undefined. Binary search over blocks, then names. */
  lookup(dirNid: number, name: ByteString | Uint8Array): number | undefined {
    const key = typeof name === 'string' ? Buffer.from(name, 'latin1') : name;
    if (key.length === 0 || key.length > MAX_NAME) return undefined;
    const r = this.dir(dirNid);
    let lo = 0;
    let hi = Math.ceil(r.size / EROFS_BLKSIZ) - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const { block, count } = this.rawDirBlock(r, mid);
      if (Buffer.compare(key, this.direntName(r, block, count, 0)) < 0) { hi = mid - 1; continue; }
      if (Buffer.compare(key, this.direntName(r, block, count, count - 1)) > 0) { lo = mid + 1; continue; }
      let a = 0;
      let b = count - 1;
      while (a <= b) {
        const m = (a + b) >>> 1;
        const c = Buffer.compare(this.direntName(r, block, count, m), key);
        if (c === 0) {
          const found = this.direntNid(r, block, m);
          const dots = key.length <= 2 && key[0] === 0x2e && (key.length === 1 || key[1] === 0x2e);
          if (dots) return found;
          return isWhiteoutAttr(this.inode(found)) ? undefined : found;
        }
        if (c < 0) a = m + 1;
        else b = m - 1;
      }
      return undefined;
    }
    return undefined;
  }

  /**
   * Lists up to `max` entries from `offset` (0 = start; then the `next` of the last entry seen).
   * Includes `.` and `..`; hides whiteouts. Offsets stay valid: the image never changes.
   */
  readdir(dirNid: number, offset = 0, max = 1024): DirEntry[] {
    const r = this.dir(dirNid);
    const nBlocks = Math.ceil(r.size / EROFS_BLKSIZ);
    const out: DirEntry[] = [];
    if (!Number.isSafeInteger(offset) || offset < 0 || !(max > 0)) return out; // not an offset we gave out
    let block = Math.floor(offset / OFFSET_SLOTS);
    let index = offset % OFFSET_SLOTS;
    for (; block < nBlocks && out.length < max; block++, index = 0) {
      const entries = this.dirBlock(r, block);
      for (; index < entries.length && out.length < max; index++) {
        const e = entries[index]!;
        const next = index + 1 < entries.length ? block * OFFSET_SLOTS + index + 1 : (block + 1) * OFFSET_SLOTS;
        if (e.name !== '.' && e.name !== '..' && e.type === FileType.CharDevice && isWhiteoutAttr(this.inode(e.nid))) continue;
        if (e.type > FileType.Symlink) corrupt(`directory ${r.nid}: bad file type ${e.type}`);
        out.push({ name: e.name, nid: e.nid, type: e.type as FileType, next });
      }
    }
    return out;
  }

  readlink(nid: number): ByteString {
    const r = this.inode(nid);
    if ((r.mode & S_IFMT) !== S_IFLNK) throw new StratumError('CORRUPT_IMAGE', `inode ${nid} is not a symlink`);
    if (r.size === 0 || r.size > 4095) corrupt(`symlink ${nid}: bad length ${r.size}`);
    return latin1(this.readFlat(r, 0, r.size));
  }

  /** Content stored in the image (inline files), a copy; for external files use `external`. */
  readContent(nid: number, offset = 0, length = Infinity): Uint8Array {
    const r = this.inode(nid);
    if ((r.mode & S_IFMT) !== S_IFREG) throw new StratumError('CORRUPT_IMAGE', `inode ${nid} is not a regular file`);
    if (r.layout === EROFS_INODE_CHUNK_BASED) return new Uint8Array(0);
    const bytes = this.readFlat(r, offset, Math.min(length, r.size));
    return this.wholeMode ? bytes : Uint8Array.from(bytes);
  }

  /** Where the content of an external (chunk-based) regular file lives, as the image says; undefined if inline. */
  external(nid: number): ExternalObject | undefined {
    const r = this.inode(nid);
    if ((r.mode & S_IFMT) !== S_IFREG || r.layout !== EROFS_INODE_CHUNK_BASED) return undefined;
    return externalOf(this.rawXattrs(r));
  }

  /**
   * The object holding an external file's content, as Stratum uses it: named by the metacopy
   * digest, with a redirect (if any) that is exactly that object's path. composefs allows any
   * redirect; a Stratum commit never has another one, and following one (`../../etc/passwd`)
   * would let an image point a server at files outside the store, so anything else is refused.
   */
  objectOf(nid: number): string | undefined {
    const ext = this.external(nid);
    return ext === undefined ? undefined : checkedObject(nid, ext);
  }

  /** What a tree needs of one inode, from one pass over its xattrs: the shown xattrs and its object. */
  xattrsAndObject(nid: number): { xattrs: Xattr[]; object: string | undefined } {
    const r = this.inode(nid);
    const raw = this.rawXattrs(r);
    const external = (r.mode & S_IFMT) === S_IFREG && r.layout === EROFS_INODE_CHUNK_BASED;
    return { xattrs: shown(raw), object: external ? checkedObject(nid, externalOf(raw)) : undefined };
  }

  /** Every xattr as stored (escaped, overlay-internal ones included): the raw view, shared ones first. */
  rawXattrs(nidOrInode: number | RawInode): StoredXattr[] {
    const r = typeof nidOrInode === 'number' ? this.inode(nidOrInode) : nidOrInode;
    if (r.xattrSize === 0) return [];
    const base = r.offset + r.isize;
    const body = this.span(base, r.xattrSize);
    const bo = this.bytes ? base : 0; // where the body starts in `body`
    const nShared = getField(body, bo, erofs_xattr_ibody_header.h_shared_count);
    const out: StoredXattr[] = [];
    let pos = erofs_xattr_ibody_header.sizeof + nShared * 4;
    if (pos > r.xattrSize) corrupt(`inode ${r.nid}: shared xattr count ${nShared} overruns its xattrs`);
    const entry = (b: Uint8Array, o: number, limit: number, shared: boolean): number => {
      if (o + XE.sizeof > limit) corrupt(`inode ${r.nid}: xattr entry overruns`);
      const nameLen = getField(b, o, XE.e_name_len);
      const valueLen = getField(b, o, XE.e_value_size);
      const end = o + XE.sizeof + nameLen + valueLen;
      if (end > limit) corrupt(`inode ${r.nid}: xattr entry overruns`);
      const prefix = XATTR_PREFIX_BY_INDEX.get(getField(b, o, XE.e_name_index));
      // Index 0 and long-prefix names have no namespace the kernel shows; skip them like erofs does.
      if (prefix !== undefined) {
        const value = b.subarray(o + XE.sizeof + nameLen, end);
        out.push({ name: prefix + latin1At(b, o + XE.sizeof, o + XE.sizeof + nameLen), value: this.wholeMode ? value : Uint8Array.from(value), shared });
      }
      return xattrEntrySize(nameLen, valueLen);
    };
    for (let i = 0; i < nShared; i++) {
      const at = this.xattrStart + getField(body, bo + i * 4, erofs_xattr_ibody_header.h_shared_xattrs) * 4;
      const head = this.span(at, XE.sizeof);
      const ho = this.bytes ? at : 0;
      const len = XE.sizeof + getField(head, ho, XE.e_name_len) + getField(head, ho, XE.e_value_size);
      entry(this.span(at, len), ho, ho + len, true);
    }
    while (pos + XE.sizeof <= r.xattrSize) pos += entry(body, bo + pos, bo + r.xattrSize, false);
    return out;
  }

  /** The shown xattrs in the order the kernel lists them (inline ones, then shared): what a copy-up keeps. */
  xattrsAsListed(nid: number): Xattr[] {
    const raw = this.rawXattrs(nid);
    return shown([...raw.filter((x) => !x.shared), ...raw.filter((x) => x.shared)]);
  }

  /** xattrs as the kernel shows them through overlayfs (see the module comment). */
  listxattr(nid: number): ByteString[] {
    return this.xattrs(nid).map((x) => x.name);
  }

  getxattr(nid: number, name: ByteString): Uint8Array | undefined {
    return this.xattrs(nid).find((x) => x.name === name)?.value;
  }

  xattrs(nid: number): Xattr[] {
    return shown(this.rawXattrs(nid));
  }
}

/** The reader's view of stored xattrs: erofs.ts's visibility rule applied. */
function shown(raw: StoredXattr[]): Xattr[] {
  const out: Xattr[] = [];
  for (const x of raw) {
    const name = shownXattrName(x.name);
    if (name !== undefined) out.push({ name, value: x.value });
  }
  return out;
}

function externalOf(raw: StoredXattr[]): ExternalObject {
  let digest: string | undefined;
  let path: ByteString | undefined;
  for (const x of raw) {
    if (x.name === OVERLAY_METACOPY && x.value.length === 36 && x.value[3] === 1) digest = Buffer.from(x.value.buffer, x.value.byteOffset + 4, 32).toString('hex');
    if (x.name === OVERLAY_REDIRECT && x.value.length > 0) {
      const v = latin1(x.value);
      path = v.startsWith('/') ? v.slice(1) : v;
    }
  }
  return { digest, path };
}

function checkedObject(nid: number, ext: ExternalObject): string {
  if (ext.digest === undefined) corrupt(`inode ${nid}: an external file without a content digest`);
  if (ext.path !== undefined && ext.path !== `${ext.digest.slice(0, 2)}/${ext.digest.slice(2)}`) {
    corrupt(`inode ${nid}: redirect ${JSON.stringify(ext.path.slice(0, 80))} is not the path of object ${ext.digest}`);
  }
  return ext.digest;
}

/**
 * Visits every visible path once, `visit(path, attr, nid)`, a directory's entries before its subdirectories.
 * Refuses directory cycles and depth beyond `maxDepth`, so a hostile image cannot make it loop.
 * `from`: walk only that inode and what is below it, as if it lay at `path`.
 */
export function walkImage(reader: ImageReader, visit: (path: ByteString, attr: InodeAttr, nid: number) => void, options: { maxDepth?: number; from?: { nid: number; path: ByteString } } = {}): void {
  const maxDepth = options.maxDepth ?? 2048;
  const seenDirs = new Set<number>();
  const { nid: start, path: startPath } = options.from ?? { nid: reader.rootNid, path: '/' };
  const startAttr = reader.getattr(start);
  visit(startPath, startAttr, start);
  const stack: Array<{ nid: number; path: ByteString; depth: number }> = (startAttr.mode & S_IFMT) === S_IFDIR ? [{ nid: start, path: startPath === '/' ? '' : startPath, depth: 0 }] : [];
  seenDirs.add(start);
  while (stack.length > 0) {
    const { nid, path, depth } = stack.pop()!;
    if (depth >= maxDepth) corrupt(`directory tree deeper than ${maxDepth}`);
    const subdirs: Array<{ nid: number; path: ByteString; depth: number }> = [];
    for (let offset = 0; ;) {
      const batch = reader.readdir(nid, offset, 512);
      if (batch.length === 0) break;
      for (const e of batch) {
        if (e.name === '.' || e.name === '..') continue;
        const attr = reader.getattr(e.nid);
        const childPath = `${path}/${e.name}`;
        visit(childPath, attr, e.nid);
        if ((attr.mode & S_IFMT) === S_IFDIR) {
          if (seenDirs.has(e.nid)) corrupt(`directory ${e.nid} appears twice (cycle or directory hardlink)`);
          seenDirs.add(e.nid);
          subdirs.push({ nid: e.nid, path: childPath, depth: depth + 1 });
        }
      }
      offset = batch[batch.length - 1]!.next;
    }
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
  }
}

/** Visits every regular file that has an object: `visit(path, digest, size)` (inline and empty files have none). */
export function walkObjects(reader: ImageReader, visit: (path: ByteString, digest: string, size: number) => void): void {
  walkImage(reader, (path, attr, nid) => {
    if ((attr.mode & S_IFMT) !== S_IFREG) return;
    const digest = reader.objectOf(nid);
    if (digest) visit(path, digest, attr.size);
  });
}

/** digest -> size of every object the image uses. */
export function usedObjects(reader: ImageReader): Map<string, number> {
  const used = new Map<string, number>();
  walkObjects(reader, (_path, digest, size) => used.set(digest, size));
  return used;
}
