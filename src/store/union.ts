// The merged view of a HEAD: a base commit image under an upper dir in the kernel overlayfs
// format, exactly as kernel overlayfs shows it when mounted the way composefs mounts
// (`metacopy=on,redirect_dir=on`, objects as a data-only lower layer). docs/union.md lists the
// rules; upper.ts decodes each upper entry, this module combines entries with the lower layer.
//
// Two faces of the same rules:
//   - UnionView: lazy, path by path, over an ImageReader (what a live view asks: lookup, readdir,
//     getattr, readlink, xattrs, where a file's content is).
//   - mergeUpper: the whole merged Tree for a commit, built from the base Tree and a walk of the
//     upper only, so its I/O grows with the change, not with the tree.
// Both resolve the lower through one small interface (Lower), so redirect, opaque and metacopy
// lookups are written once.
//
// Public surface: UnionView, UnionNode, UnionAttr, ContentSource, mergeUpper, MergeOptions,
// MergeResult, PendingContent, imageTree, imageTreeFromBytes, emptyTree.
import { lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import {
  EROFS_BLKSIZ, EROFS_BLKSIZ_BITS, EROFS_DIRENT_SIZE, EROFS_INODE_CHUNK_BASED, EROFS_INODE_COMPACT_SIZE, EROFS_INODE_EXTENDED_SIZE,
  EROFS_INODE_FLAT_INLINE, EROFS_INODE_FLAT_PLAIN, EROFS_SUPER_MAGIC_V1, EROFS_SUPER_OFFSET, EROFS_XATTR_IBODY_HEADER_SIZE, LCFS_EROFS_MAGIC,
  OVERLAY_ESCAPE_PREFIX, OVERLAY_METACOPY, OVERLAY_PREFIX, OVERLAY_REDIRECT, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, XATTR_PREFIX_BY_INDEX,
} from './image/erofs.js';
import type { ImageReader, InodeAttr } from './image/read.js';
import { type ByteString, type Entry, type Inode, type Tree, type Xattr, byteString, compareBytes, newInode, objectPath } from './image/tree.js';
import { anyLength } from '../native/files.js';
import { display } from './paths.js';
import { OCI_OPAQUE, type UpperEntry, type UpperStyle, type XattrNamespace, ociWhiteoutTarget, readUpperEntry, upperRootAttr, visibleXattrs } from './upper.js';

// ---------------------------------------------------------------------------------------------
// The lower layer, abstracted: an image (nids) or an in-memory tree (Inodes).

interface Lower<N> {
  root: N;
  child(dir: N, name: ByteString): N | undefined;
  isDir(node: N): boolean;
  isReg(node: N): boolean;
}

/** A redirect: absolute (`/a/b`, from the lower root, whatever the parent) or a sibling's name. */
function followRedirect<N>(lower: Lower<N>, redirect: ByteString, parentLower: N | undefined): N | undefined {
  if (!redirect.startsWith('/')) return parentLower === undefined ? undefined : lower.child(parentLower, redirect);
  let node: N | undefined = lower.root;
  for (const part of redirect.split('/')) {
    if (part === '') continue;
    if (node === undefined || !lower.isDir(node)) return undefined;
    node = lower.child(node, part);
  }
  return node;
}

/** The lower directory an upper directory merges with, if any. */
function lowerDirOf<N>(lower: Lower<N>, entry: UpperEntry, name: ByteString, parentLower: N | undefined): N | undefined {
  if (entry.opaque) return undefined;
  const found = entry.redirect !== undefined ? followRedirect(lower, entry.redirect, parentLower) : parentLower === undefined ? undefined : lower.child(parentLower, name);
  return found !== undefined && lower.isDir(found) ? found : undefined;
}

/** The lower file holding a metacopy upper file's data. */
function lowerDataOf<N>(lower: Lower<N>, entry: UpperEntry, name: ByteString, parentLower: N | undefined): N | undefined {
  const found = entry.redirect !== undefined ? followRedirect(lower, entry.redirect, parentLower) : parentLower === undefined ? undefined : lower.child(parentLower, name);
  return found !== undefined && lower.isReg(found) ? found : undefined;
}

function imageLower(reader: ImageReader): Lower<number> {
  return {
    root: reader.rootNid,
    child: (dir, name) => reader.lookup(dir, name),
    isDir: (nid) => (reader.getattr(nid).mode & S_IFMT) === S_IFDIR,
    isReg: (nid) => (reader.getattr(nid).mode & S_IFMT) === S_IFREG,
  };
}

function treeLower(tree: Tree): Lower<Inode> {
  return {
    root: tree.root,
    child: (dir, name) => dir.children?.get(name)?.inode,
    isDir: (n) => (n.mode & S_IFMT) === S_IFDIR,
    isReg: (n) => (n.mode & S_IFMT) === S_IFREG,
  };
}

const join = (dir: Buffer, name: ByteString): Buffer => Buffer.concat([dir, Buffer.from('/'), Buffer.from(name, 'latin1')]);

/**
 * lstat, or undefined when nothing is there. Other failures keep their errno (as the `cause` of
 * the StratumError): the FUSE layer answers it, so a name over NAME_MAX gives ENAMETOOLONG, not EIO.
 */
function lstatOrUndefined(path: Buffer): BigIntStats | undefined {
  try {
    return anyLength(path, (p) => lstatSync(p, { bigint: true }));
  } catch (err) {
    if (isSystemError(err, 'ENOENT') || isSystemError(err, 'ENOTDIR')) return undefined;
    throw wrapSystemError(err, `reading ${display(path)}`);
  }
}

function readdirBytes(path: Buffer): ByteString[] {
  try {
    return anyLength(path, (p) => readdirSync(p, { encoding: 'buffer' }) as Buffer[]).map(byteString);
  } catch (err) {
    throw wrapSystemError(err, `reading directory ${display(path)}`);
  }
}

function readlinkBytes(path: Buffer): ByteString {
  try {
    return byteString(anyLength(path, (p) => readlinkSync(p, { encoding: 'buffer' }) as Buffer));
  } catch (err) {
    throw wrapSystemError(err, `reading symlink ${display(path)}`);
  }
}

/** NAME_MAX of the image format (and of the filesystems an upper lives on). */
const NAME_MAX = 255;

function mtimeOf(stat: BigIntStats): { mtimeSec: number; mtimeNsec: number } {
  const { mtimeSec, mtimeNsec } = upperRootAttr(stat);
  return { mtimeSec, mtimeNsec };
}

// ---------------------------------------------------------------------------------------------
// UnionView: the live view, path by path.

export interface UnionAttr {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
}

/** Where a regular file's bytes are. */
export type ContentSource =
  | { kind: 'upper'; path: Buffer } // a file in the upper dir holding its full data
  | { kind: 'inline'; bytes: Uint8Array } // stored inside the base image
  | { kind: 'object'; digest: string } // objects/ab/cdef…, by the image's metacopy digest
  | { kind: 'empty' };

export interface UnionNode {
  path: ByteString;
  /** The upper entry that decides this path, if the upper has one. */
  upper?: { path: Buffer; entry: UpperEntry };
  /**
   * Image nid: for directories the lower dir merged in (none when opaque or new), for metacopy
   * files the lower file with the data, for lower-only entries the entry itself.
   */
  lower?: number;
}

export class UnionView {
  private readonly lower: Lower<number>;
  private readonly upperRoot: Buffer;

  constructor(
    readonly reader: ImageReader,
    upperDir: string,
    readonly ns: XattrNamespace,
  ) {
    this.lower = imageLower(reader);
    this.upperRoot = Buffer.from(upperDir);
  }

  root(): UnionNode {
    const stat = lstatOrUndefined(this.upperRoot);
    const node: UnionNode = { path: '/', lower: this.reader.rootNid };
    if (stat && (Number(stat.mode) & S_IFMT) === S_IFDIR) node.upper = { path: this.upperRoot, entry: readUpperEntry(this.upperRoot, stat, this.ns, 'overlay') };
    return node;
  }

  isDir(node: UnionNode): boolean {
    return (this.getattr(node).mode & S_IFMT) === S_IFDIR;
  }

  /** The entry `name` in directory `dir`, or undefined (absent or whited out). */
  child(dir: UnionNode, name: ByteString): UnionNode | undefined {
    if (name === '' || name === '.' || name === '..' || name.includes('/')) return undefined;
    // as erofs and the upper's filesystem answer (kernel overlayfs passes that on)
    if (name.length > NAME_MAX) throw Object.assign(new Error(`ENAMETOOLONG: a name of ${name.length} bytes`), { code: 'ENAMETOOLONG', errno: -osConstants.errno.ENAMETOOLONG });
    if (!this.isDir(dir)) return undefined;
    const path = dir.path === '/' ? `/${name}` : `${dir.path}/${name}`;
    if (dir.upper) {
      const upperPath = join(dir.upper.path, name);
      const stat = lstatOrUndefined(upperPath);
      if (stat) {
        const entry = readUpperEntry(upperPath, stat, this.ns, 'overlay');
        if (entry.kind === 'whiteout') return undefined;
        const node: UnionNode = { path, upper: { path: upperPath, entry } };
        const lower = entry.kind === 'dir' ? lowerDirOf(this.lower, entry, name, dir.lower) : entry.kind === 'metacopy' ? lowerDataOf(this.lower, entry, name, dir.lower) : undefined;
        if (entry.kind === 'metacopy' && lower === undefined) throw new StratumError('CORRUPT_STORE', `${display(upperPath)} is a metacopy upper file whose data is not in the base commit`);
        if (lower !== undefined) node.lower = lower;
        return node;
      }
    }
    if (dir.lower === undefined) return undefined;
    const nid = this.reader.lookup(dir.lower, name);
    return nid === undefined ? undefined : { path, lower: nid };
  }

  /** Resolves a `/`-separated path from the root. */
  lookup(path: ByteString): UnionNode | undefined {
    let node: UnionNode | undefined = this.root();
    for (const part of path.split('/')) {
      if (part === '') continue;
      node = this.child(node, part);
      if (!node) return undefined;
    }
    return node;
  }

  getattr(node: UnionNode): UnionAttr {
    if (node.upper) {
      const s = node.upper.entry.stat;
      return { mode: Number(s.mode), uid: Number(s.uid), gid: Number(s.gid), nlink: Number(s.nlink), size: Number(s.size), rdev: Number(s.rdev), ...mtimeOf(s) };
    }
    const a: InodeAttr = this.reader.getattr(node.lower!);
    return { mode: a.mode, uid: a.uid, gid: a.gid, nlink: a.nlink, size: a.size, rdev: a.rdev, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec };
  }

  /** Names in a directory (without `.` and `..`), sorted by bytes. */
  readdir(dir: UnionNode): ByteString[] {
    const names = new Set<ByteString>();
    const shadowed = new Set<ByteString>();
    if (dir.upper && dir.upper.entry.kind === 'dir') {
      for (const name of readdirBytes(dir.upper.path)) {
        shadowed.add(name);
        const stat = lstatOrUndefined(join(dir.upper.path, name));
        if (stat && readUpperEntry(join(dir.upper.path, name), stat, this.ns, 'overlay').kind !== 'whiteout') names.add(name);
      }
    }
    if (dir.lower !== undefined && (!dir.upper || dir.upper.entry.kind === 'dir')) {
      for (let offset = 0; ;) {
        const batch = this.reader.readdir(dir.lower, offset, 1024);
        if (batch.length === 0) break;
        for (const e of batch) if (e.name !== '.' && e.name !== '..' && !shadowed.has(e.name)) names.add(e.name);
        offset = batch[batch.length - 1]!.next;
      }
    }
    return [...names].sort(compareBytes);
  }

  readlink(node: UnionNode): ByteString {
    if (node.upper) return readlinkBytes(node.upper.path);
    return this.reader.readlink(node.lower!);
  }

  xattrs(node: UnionNode): Xattr[] {
    if (node.upper) return visibleXattrs(node.upper.entry.raw, this.ns);
    return this.reader.xattrs(node.lower!);
  }

  content(node: UnionNode): ContentSource {
    if ((this.getattr(node).mode & S_IFMT) !== S_IFREG) throw new StratumError('USAGE', `${display(Buffer.from(node.path, 'latin1'))} is not a regular file`);
    if (node.upper && node.upper.entry.kind !== 'metacopy') return { kind: 'upper', path: node.upper.path };
    const nid = node.lower!;
    const digest = this.reader.objectOf(nid);
    if (digest) return { kind: 'object', digest };
    if (this.reader.getattr(nid).size === 0) return { kind: 'empty' };
    return { kind: 'inline', bytes: this.reader.readContent(nid) };
  }

  /** Every path of the merged view, parents before children. */
  *walk(): Generator<UnionNode> {
    const stack: UnionNode[] = [this.root()];
    while (stack.length > 0) {
      const node = stack.pop()!;
      yield node;
      if (!this.isDir(node)) continue;
      const children = this.readdir(node).map((name) => this.child(node, name)!).filter((c) => c !== undefined);
      for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The base commit as a Tree.

/** An empty root directory: the tree of `init`. */
export function emptyTree(): Tree {
  return { root: newInode({ mode: S_IFDIR | 0o755 }) };
}

/**
 * Reads a whole image into a Tree that writes back to the same bytes: hardlinks become shared
 * inodes, and each hardlinked inode's primary entry is the one where the writer had laid it out
 * (recovered from the inode numbers, which are the writer's BFS order, counting the root's hidden
 * whiteout stubs).
 */
export function imageTree(reader: ImageReader): Tree {
  return treeInBfsOrder({
    rootNid: reader.rootNid,
    getattr: (nid) => reader.getattr(nid),
    entries: (dirNid) => {
      const out: Array<{ name: ByteString; nid: number }> = [];
      for (let offset = 0; ;) {
        const batch = reader.readdir(dirNid, offset, 1024);
        if (batch.length === 0) break;
        for (const e of batch) if (e.name !== '.' && e.name !== '..') out.push({ name: e.name, nid: e.nid });
        offset = batch[batch.length - 1]!.next;
      }
      return out;
    },
    inode: (nid, attr) => inodeFromImage(reader, nid, attr),
  });
}

/** What treeInBfsOrder needs from an image: attributes, visible entries, and inodes. */
interface ImageAccess<A extends { mode: number; ino: number }> {
  rootNid: number;
  getattr(nid: number): A;
  /** Visible entries (no `.`, `..`, whiteouts), in dirent (byte) order. */
  entries(dirNid: number): Array<{ name: ByteString; nid: number }>;
  inode(nid: number, attr: A): Inode;
}

function treeInBfsOrder<A extends { mode: number; ino: number }>(image: ImageAccess<A>): Tree {
  const root = image.inode(image.rootNid, image.getattr(image.rootNid));
  const byNid = new Map<number, { inode: Inode; tentative: Entry | undefined }>();
  const queue: Array<{ nid: number; inode: Inode }> = [{ nid: image.rootNid, inode: root }];
  let next = 1;
  for (let qi = 0; qi < queue.length; qi++) {
    const { nid: dirNid, inode: dir } = queue[qi]!;
    let stub = qi === 0 ? 0 : 256; // root: stubs 00..ff not taken by a real name
    const entries = image.entries(dirNid);
    const taken = qi === 0 ? new Set<ByteString>(entries.map((e) => e.name)) : undefined;
    const skipStubsBefore = (name: ByteString | undefined): void => {
      for (; stub < 256; stub++) {
        const s = stub.toString(16).padStart(2, '0');
        if (name !== undefined && s >= name) break;
        if (!taken!.has(s)) next++;
      }
    };
    for (const { name, nid } of entries) {
      if (taken) skipStubsBefore(name);
      const attr = image.getattr(nid);
      const known = byNid.get(nid);
      if (known) {
        const entry: Entry = { inode: known.inode, hardlink: true };
        if (known.tentative && attr.ino === next) {
          known.tentative.hardlink = true;
          entry.hardlink = false;
          known.tentative = undefined;
          next++;
        }
        dir.children!.set(name, entry);
        continue;
      }
      const inode = image.inode(nid, attr);
      const entry: Entry = { inode, hardlink: false };
      dir.children!.set(name, entry);
      const isDir = (attr.mode & S_IFMT) === S_IFDIR;
      const allocated = isDir || attr.ino === next;
      if (allocated) next++;
      if (isDir) queue.push({ nid, inode });
      else byNid.set(nid, { inode, tentative: allocated ? undefined : entry });
    }
    if (taken) skipStubsBefore(undefined);
  }
  return { root };
}

/**
 * imageTree for a whole image in memory, parsed in one sweep without the reader's caches (about
 * ten times faster on large trees). Any inconsistency throws; callers fall back to imageTree,
 * whose careful reader reports it properly.
 */
export function imageTreeFromBytes(img: Buffer): Tree {
  const u16 = (o: number): number => img.readUInt16LE(o);
  const u32 = (o: number): number => img.readUInt32LE(o);
  const u64 = (o: number): number => {
    const hi = img.readUInt32LE(o + 4);
    if (hi >= 0x200000) throw new RangeError('64-bit value out of range');
    return hi * 2 ** 32 + img.readUInt32LE(o);
  };
  const i64 = (o: number): number => {
    const t = Number(img.readBigInt64LE(o)); // times are signed: before 1970 is negative
    if (!Number.isSafeInteger(t)) throw new RangeError('time out of range');
    return t;
  };
  const slice = (from: number, to: number): Buffer => {
    if (!(from >= 0 && to >= from && to <= img.length)) throw new RangeError(`bytes ${from}..${to} outside the image`);
    return img.subarray(from, to);
  };
  if (u32(0) !== LCFS_EROFS_MAGIC || u32(EROFS_SUPER_OFFSET) !== EROFS_SUPER_MAGIC_V1 || img[EROFS_SUPER_OFFSET + 12] !== EROFS_BLKSIZ_BITS) throw new RangeError('not a composefs image');
  const sb = EROFS_SUPER_OFFSET;
  const rootNid = u16(sb + 14);
  const buildSec = i64(sb + 24);
  const buildNsec = u32(sb + 32);
  const metaStart = u32(sb + 40) * EROFS_BLKSIZ;
  const xattrStart = u32(sb + 44) * EROFS_BLKSIZ;

  interface Raw { mode: number; ino: number; nlink: number; uid: number; gid: number; size: number; rdev: number; mtimeSec: number; mtimeNsec: number; layout: number; off: number; isize: number; xsize: number; blkaddr: number }
  const raws = new Map<number, Raw>();
  const raw = (nid: number): Raw => {
    let r = raws.get(nid);
    if (r) return r;
    const off = metaStart + nid * 32;
    const format = u16(off);
    const extended = (format & 1) === 1;
    const layoutKind = (format >> 1) & 7;
    if (format >> 4 !== 0 || (layoutKind !== EROFS_INODE_FLAT_PLAIN && layoutKind !== EROFS_INODE_FLAT_INLINE && layoutKind !== EROFS_INODE_CHUNK_BASED)) throw new RangeError(`inode ${nid}: bad format`);
    const icount = u16(off + 2);
    const mode = u16(off + 4);
    const iu = u32(off + 16);
    r = extended
      ? { mode, ino: u32(off + 20), nlink: u32(off + 44), uid: u32(off + 24), gid: u32(off + 28), size: u64(off + 8), rdev: 0, mtimeSec: i64(off + 32), mtimeNsec: u32(off + 40), layout: layoutKind, off, isize: EROFS_INODE_EXTENDED_SIZE, xsize: 0, blkaddr: iu }
      : { mode, ino: u32(off + 20), nlink: u16(off + 6), uid: u16(off + 24), gid: u16(off + 26), size: u32(off + 8), rdev: 0, mtimeSec: buildSec, mtimeNsec: buildNsec, layout: layoutKind, off, isize: EROFS_INODE_COMPACT_SIZE, xsize: 0, blkaddr: iu };
    r.xsize = icount === 0 ? 0 : EROFS_XATTR_IBODY_HEADER_SIZE + (icount - 1) * 4;
    const type = mode & S_IFMT;
    if (type === S_IFCHR || type === S_IFBLK) r.rdev = iu;
    raws.set(nid, r);
    return r;
  };
  /** Bytes [offset, end) of a flat inode's data. */
  const flat = (r: Raw, offset: number, length: number): Buffer => {
    if (r.layout === EROFS_INODE_CHUNK_BASED) throw new RangeError('data not in the image');
    const end = Math.min(r.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const nBlocks = Math.ceil(r.size / EROFS_BLKSIZ);
    const inlineFrom = r.layout === EROFS_INODE_FLAT_INLINE ? (nBlocks - 1) * EROFS_BLKSIZ : Infinity;
    const tailAt = r.off + r.isize + r.xsize;
    if (offset >= inlineFrom) return slice(tailAt + offset - inlineFrom, tailAt + end - inlineFrom);
    if (end <= inlineFrom) return slice(r.blkaddr * EROFS_BLKSIZ + offset, r.blkaddr * EROFS_BLKSIZ + end);
    return Buffer.concat([slice(r.blkaddr * EROFS_BLKSIZ + offset, r.blkaddr * EROFS_BLKSIZ + inlineFrom), slice(tailAt, tailAt + end - inlineFrom)]);
  };
  const rawXattrs = (r: Raw): Xattr[] => {
    if (r.xsize === 0) return [];
    const base = r.off + r.isize;
    const nShared = img[base + 4]!;
    const out: Xattr[] = [];
    const entry = (o: number, limit: number): number => {
      const nameLen = img[o]!;
      const index = img[o + 1]!;
      const valueLen = u16(o + 2);
      const end = o + 4 + nameLen + valueLen;
      if (end > limit) throw new RangeError('xattr overruns');
      const prefix = XATTR_PREFIX_BY_INDEX.get(index);
      if (prefix !== undefined) out.push({ name: prefix + img.toString('latin1', o + 4, o + 4 + nameLen), value: slice(o + 4 + nameLen, end) });
      return Math.ceil((end - o) / 4) * 4;
    };
    for (let i = 0; i < nShared; i++) {
      const at = xattrStart + u32(base + EROFS_XATTR_IBODY_HEADER_SIZE + i * 4) * 4;
      entry(at, img.length);
    }
    let pos = base + EROFS_XATTR_IBODY_HEADER_SIZE + nShared * 4;
    const limit = base + r.xsize;
    while (pos + 4 <= limit) pos += entry(pos, limit);
    return out;
  };
  // A directory met twice (a cycle, or a directory hardlink) would make the walk endless. The
  // careful reader's tree would loop too, so this is CORRUPT_IMAGE, not a RangeError to fall back on.
  const seenDirs = new Set<number>([rootNid]);
  return treeInBfsOrder({
    rootNid,
    getattr: raw,
    entries: (dirNid) => {
      const r = raw(dirNid);
      const out: Array<{ name: ByteString; nid: number }> = [];
      const nBlocks = Math.ceil(r.size / EROFS_BLKSIZ);
      for (let b = 0; b < nBlocks; b++) {
        const block = flat(r, b * EROFS_BLKSIZ, EROFS_BLKSIZ);
        const count = block.readUInt16LE(8) / EROFS_DIRENT_SIZE;
        if (!Number.isInteger(count) || count < 1 || count * EROFS_DIRENT_SIZE > block.length) throw new RangeError('bad dirent table');
        for (let i = 0; i < count; i++) {
          const o = i * EROFS_DIRENT_SIZE;
          const nameoff = block.readUInt16LE(o + 8);
          let nameEnd = i + 1 < count ? block.readUInt16LE(o + EROFS_DIRENT_SIZE + 8) : block.length;
          if (i + 1 === count) {
            const nul = block.indexOf(0, nameoff);
            if (nul >= 0 && nul < nameEnd) nameEnd = nul;
          }
          if (nameEnd <= nameoff || nameEnd > block.length) throw new RangeError('bad name offsets');
          const name = block.toString('latin1', nameoff, nameEnd);
          if (name === '.' || name === '..') continue;
          const nid = block.readUInt32LE(o) + block.readUInt32LE(o + 4) * 2 ** 32;
          if (block[o + 10] === 3) {
            const c = raw(nid);
            if ((c.mode & S_IFMT) === S_IFCHR && c.rdev === 0) continue; // whiteouts and stubs
          }
          if ((raw(nid).mode & S_IFMT) === S_IFDIR) {
            if (seenDirs.has(nid)) throw new StratumError('CORRUPT_IMAGE', `corrupt image: directory ${nid} appears twice (a cycle or a directory hardlink)`);
            seenDirs.add(nid);
          }
          out.push({ name, nid });
        }
      }
      return out;
    },
    inode: (_nid, r) => {
      const type = r.mode & S_IFMT;
      const all = rawXattrs(r);
      const xattrs: Xattr[] = [];
      for (const x of all) {
        if (x.name.startsWith(OVERLAY_ESCAPE_PREFIX)) xattrs.push({ name: OVERLAY_PREFIX + x.name.slice(OVERLAY_ESCAPE_PREFIX.length), value: x.value });
        else if (!x.name.startsWith(OVERLAY_PREFIX)) xattrs.push(x);
      }
      const inode = newInode({ mode: r.mode, uid: r.uid, gid: r.gid, nlink: r.nlink, mtimeSec: r.mtimeSec, mtimeNsec: r.mtimeNsec, size: type === S_IFREG ? r.size : 0, rdev: r.rdev, xattrs });
      if (type === S_IFLNK) {
        inode.symlinkTarget = flat(r, 0, r.size).toString('latin1');
        inode.size = inode.symlinkTarget.length;
      } else if (type === S_IFREG && r.size > 0) {
        if (r.layout === EROFS_INODE_CHUNK_BASED) {
          for (const x of all) {
            if (x.name === OVERLAY_METACOPY && x.value.length === 36 && x.value[3] === 1) inode.digest = Buffer.from(x.value.subarray(4)).toString('hex');
            if (x.name === OVERLAY_REDIRECT && x.value.length > 0) {
              const v = Buffer.from(x.value).toString('latin1');
              inode.payload = v.startsWith('/') ? v.slice(1) : v;
            }
          }
        } else inode.content = Uint8Array.from(flat(r, 0, r.size));
      }
      return inode;
    },
  });
}

function inodeFromImage(reader: ImageReader, nid: number, a: InodeAttr): Inode {
  const type = a.mode & S_IFMT;
  const inode = newInode({ mode: a.mode, uid: a.uid, gid: a.gid, nlink: a.nlink, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec, size: type === S_IFREG ? a.size : 0, rdev: a.rdev, xattrs: reader.xattrs(nid) });
  if (type === S_IFLNK) {
    inode.symlinkTarget = reader.readlink(nid);
    inode.size = inode.symlinkTarget.length;
  } else if (type === S_IFREG && a.size > 0) {
    const digest = reader.objectOf(nid);
    if (digest) {
      inode.digest = digest;
      inode.payload = objectPath(digest);
    } else inode.content = reader.readContent(nid);
  }
  return inode;
}

// ---------------------------------------------------------------------------------------------
// mergeUpper: base Tree ⊕ upper dir -> merged Tree.

export interface MergeOptions {
  ns: XattrNamespace;
  style: UpperStyle;
}

/** A regular file whose bytes are in the upper (or bare) dir and must become inline content or an object. */
export interface PendingContent {
  path: Buffer;
  inode: Inode;
}

export interface MergeResult {
  tree: Tree;
  /** One per inode (hardlinks in the upper share one). */
  pending: PendingContent[];
  /** Entries found in the upper dir (whiteouts included, the root not). */
  upperEntries: number;
  /** Of those, whiteouts (deletions). */
  whiteouts: number;
}

/**
 * The merged tree of `base` under `upperDir`. Reads only the upper dir: untouched subtrees of
 * the base are shared into the result as they are. Overlay style takes the root's attributes from
 * the upper root (as the kernel shows them); bare style keeps the base root's attributes.
 * `base` must not be used afterwards (its hardlink flags are renormalized in place).
 */
export function mergeUpper(base: Tree, upperDir: string, options: MergeOptions): MergeResult {
  const lower = treeLower(base);
  const baseCounts = linkGroups(base); // before the merge shares (and normalizeLinks edits) base entries
  const { ns, style } = options;
  const pending: PendingContent[] = [];
  const linked = new Map<string, Inode>(); // dev:ino -> inode, for hardlinks inside the upper
  let upperEntries = 0;
  let whiteouts = 0;

  const fileInode = (path: Buffer, e: UpperEntry): Inode => {
    const s = e.stat;
    const key = `${s.dev}:${s.ino}`;
    if (s.nlink > 1n) {
      const seen = linked.get(key);
      if (seen) return seen;
    }
    const type = Number(s.mode) & S_IFMT;
    const inode = newInode({ mode: Number(s.mode), uid: Number(s.uid), gid: Number(s.gid), nlink: Number(s.nlink), ...mtimeOf(s), size: type === S_IFREG ? Number(s.size) : 0, rdev: Number(s.rdev), xattrs: visibleXattrs(e.raw, ns, style) });
    if (type === S_IFLNK) {
      inode.symlinkTarget = readlinkBytes(path);
      inode.size = inode.symlinkTarget.length;
    }
    if (s.nlink > 1n) linked.set(key, inode);
    return inode;
  };

  const mergeDir = (upperPath: Buffer, dir: Inode, lowerDir: Inode | undefined): void => {
    const children = dir.children!;
    if (lowerDir?.children) for (const [name, entry] of lowerDir.children) children.set(name, entry);
    const names = readdirBytes(upperPath);
    if (style === 'bare') {
      // OCI markers first: they speak about the lower layers, never about this dir's own entries.
      if (names.includes(OCI_OPAQUE)) {
        children.clear();
        upperEntries++;
      }
      for (const name of names) {
        const target = ociWhiteoutTarget(name);
        if (target === undefined) continue;
        children.delete(target);
        upperEntries++;
        whiteouts++;
      }
    }
    for (const name of names) {
      if (style === 'bare' && (name === OCI_OPAQUE || ociWhiteoutTarget(name) !== undefined)) continue;
      const childPath = join(upperPath, name);
      const stat = lstatOrUndefined(childPath);
      if (!stat) continue; // removed while we looked
      const e = readUpperEntry(childPath, stat, ns, style);
      upperEntries++;
      switch (e.kind) {
        case 'whiteout':
          children.delete(name);
          whiteouts++;
          break;
        case 'dir': {
          const below = style === 'overlay' ? lowerDirOf(lower, e, name, lowerDir) : bareLowerDir(lower, e, name, lowerDir);
          const inode = newInode({ mode: Number(stat.mode), uid: Number(stat.uid), gid: Number(stat.gid), ...mtimeOf(stat), xattrs: visibleXattrs(e.raw, ns, style) });
          children.set(name, { inode, hardlink: false });
          mergeDir(childPath, inode, below);
          break;
        }
        case 'metacopy': {
          const data = lowerDataOf(lower, e, name, lowerDir);
          if (data === undefined) throw new StratumError('CORRUPT_STORE', `${display(childPath)} is a metacopy upper file whose data is not in the base commit`);
          const inode = fileInode(childPath, e);
          inode.size = data.size;
          if (data.content) inode.content = data.content;
          if (data.digest) inode.digest = data.digest;
          if (data.payload) inode.payload = data.payload;
          children.set(name, { inode, hardlink: false });
          break;
        }
        case 'plain': {
          const fresh = !linked.has(`${stat.dev}:${stat.ino}`);
          const inode = fileInode(childPath, e);
          children.set(name, { inode, hardlink: false });
          if (fresh && (inode.mode & S_IFMT) === S_IFREG && inode.size > 0) pending.push({ path: childPath, inode });
          break;
        }
      }
    }
  };

  const upperRoot = Buffer.from(upperDir);
  const rootStat = lstatOrUndefined(upperRoot);
  const b = base.root;
  let root: Inode;
  if (style === 'overlay' && rootStat) {
    const e = readUpperEntry(upperRoot, rootStat, ns, style);
    root = newInode({ mode: Number(rootStat.mode), uid: Number(rootStat.uid), gid: Number(rootStat.gid), ...mtimeOf(rootStat), xattrs: visibleXattrs(e.raw, ns) });
  } else {
    root = newInode({ mode: b.mode, uid: b.uid, gid: b.gid, mtimeSec: b.mtimeSec, mtimeNsec: b.mtimeNsec, xattrs: b.xattrs });
  }
  if (rootStat) mergeDir(upperRoot, root, b);
  else for (const [name, entry] of b.children ?? []) root.children!.set(name, entry);
  const tree = { root };
  normalizeLinks(tree, baseCounts);
  return { tree, pending, upperEntries, whiteouts };
}

/** Bare dirs have no redirects: a dir merges with the lower dir of the same name unless opaque. */
function bareLowerDir(lower: Lower<Inode>, e: UpperEntry, name: ByteString, parentLower: Inode | undefined): Inode | undefined {
  if (e.opaque || parentLower === undefined) return undefined;
  const found = lower.child(parentLower, name);
  return found !== undefined && lower.isDir(found) ? found : undefined;
}

/** Entries of every inode that may have several (nlink > 1, or reached through a hardlink entry). */
function linkGroups(tree: Tree): Map<Inode, Array<{ dir: Inode; name: ByteString; entry: Entry }>> {
  const groups = new Map<Inode, Array<{ dir: Inode; name: ByteString; entry: Entry }>>();
  const visit = (dir: Inode): void => {
    for (const [name, entry] of dir.children!) {
      const inode = entry.inode;
      if ((inode.mode & S_IFMT) === S_IFDIR) {
        visit(inode);
        continue;
      }
      if (inode.nlink <= 1 && !entry.hardlink) continue; // the common case: one entry, nothing to track
      const list = groups.get(inode);
      if (list) list.push({ dir, name, entry });
      else groups.set(inode, [{ dir, name, entry }]);
    }
  };
  visit(tree.root);
  return groups;
}

/**
 * Hardlinked inodes get exactly one primary entry (the first in byte order that was a primary
 * before, else the first) and an nlink that follows their entries: an inode from the upper gets
 * its number of entries; one from the base keeps what it had, minus the entries it lost, plus the
 * ones it gained (so links the imported tree counted outside itself are kept and an unchanged base
 * writes back to the same bytes). An inode with nlink 1 has one entry by construction.
 */
function normalizeLinks(tree: Tree, baseCounts: Map<Inode, Array<unknown>>): void {
  for (const [inode, list] of linkGroups(tree)) {
    list.sort((a, b) => compareBytes(pathKey(a.dir, a.name, tree), pathKey(b.dir, b.name, tree)));
    const primary = list.find((l) => !l.entry.hardlink) ?? list[0]!;
    const before = baseCounts.get(inode)?.length;
    inode.nlink = before === undefined ? list.length : Math.max(1, inode.nlink - before + list.length);
    for (const l of list) {
      const want = l !== primary;
      // entries may be shared with the base tree: replace rather than mutate
      if (l.entry.hardlink !== want) l.dir.children!.set(l.name, { inode, hardlink: want });
    }
  }
}

/** Path of an entry, for ordering hardlink groups; computed lazily (groups are rare). */
let parents: WeakMap<Inode, { parent: Inode; name: ByteString }> | undefined;
let parentsOf: Tree | undefined;
function pathKey(dir: Inode, name: ByteString, tree: Tree): ByteString {
  if (parentsOf !== tree) {
    parents = new WeakMap();
    const index = (d: Inode): void => {
      for (const [n, e] of d.children!) {
        if ((e.inode.mode & S_IFMT) === S_IFDIR) {
          parents!.set(e.inode, { parent: d, name: n });
          index(e.inode);
        }
      }
    };
    index(tree.root);
    parentsOf = tree;
  }
  const parts = [name];
  for (let d: Inode | undefined = dir; d && d !== tree.root; ) {
    const p = parents!.get(d);
    if (!p) break;
    parts.unshift(p.name);
    d = p.parent;
  }
  return '/' + parts.join('/');
}
