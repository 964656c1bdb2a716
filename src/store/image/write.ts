// Pass two of the writer: one sequential sweep over a Plan, no seeking back; every struct is
// written through erofs.ts's field layouts (the buffer starts zeroed, so zero fields and padding
// are skipped). Together with layout.ts this is `writeImage(tree) -> bytes`, byte-identical to
// mkcomposefs 1.0.8.
//
// Public surface: writeImage, emit, storedSize; for splice.ts: Out, ImageHead, writeHeader,
// writeInode, writeBlocks.
import {
  EROFS_BLKSIZ, EROFS_BLKSIZ_BITS, EROFS_FEATURE_COMPAT_MTIME, EROFS_FEATURE_COMPAT_XATTR_FILTER, EROFS_INODE_CHUNK_BASED,
  EROFS_INODE_FLAT_INLINE, EROFS_INODE_FLAT_PLAIN, EROFS_SUPER_MAGIC_V1, EROFS_SUPER_OFFSET, LCFS_EROFS_FLAGS_HAS_ACL, LCFS_EROFS_MAGIC,
  LCFS_EROFS_VERSION, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, erofs_dirent, erofs_inode_chunk_info, erofs_inode_extended,
  erofs_super_block, erofs_xattr_entry, erofs_xattr_ibody_header, fileTypeOfMode, inodeLayout, lcfs_erofs_header, putField,
} from './erofs.js';
import { type Plan, type PlanNode, type PlanXattr, type WriteOptions, layout } from './layout.js';
import type { Tree } from './tree.js';

export function writeImage(tree: Tree, options: WriteOptions = {}): Uint8Array {
  return emit(layout(tree, options));
}

/** The image being written: a zeroed buffer and a position (padding is skipping ahead). */
export class Out {
  readonly buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.alloc(size); // zero-filled: padding is skipping ahead
  }
  bytes(b: Uint8Array): void { this.buf.set(b, this.pos); this.pos += b.length; }
  /** A byte string, one byte per char. */
  latin1(s: string): void { this.pos += this.buf.write(s, this.pos, 'latin1'); }
  skip(n: number): void { this.pos += n; }
  align(to: number): void { this.pos = Math.ceil(this.pos / to) * to; }
  fill(byte: number, n: number): void { this.buf.fill(byte, this.pos, this.pos + n); this.pos += n; }
}

export function emit(plan: Plan): Uint8Array {
  const out = new Out(plan.size);
  writeHeader(out, {
    hasAcl: plan.hasAcl, composefsVersion: plan.composefsVersion, rootNid: plan.nodes[0]!.nid, inodes: plan.nodes.length,
    minMtimeSec: plan.minMtimeSec, minMtimeNsec: plan.minMtimeNsec, blocks: plan.dataBlockStart / EROFS_BLKSIZ + plan.nDataBlocks, inodesEnd: plan.inodesEnd,
  });
  const sharedBase = plan.inodesEnd % EROFS_BLKSIZ;
  for (const p of plan.nodes) writeInode(out, p, sharedBase);
  out.align(32);
  for (const x of plan.sharedXattrs) writeXattr(out, x);
  out.align(EROFS_BLKSIZ);
  for (const p of plan.nodes) writeBlocks(out, p);
  if (out.pos !== plan.size) throw new Error(`image writer: wrote ${out.pos} bytes, planned ${plan.size}`);
  return out.buf;
}

/** What the composefs header and the superblock record of an image. */
export interface ImageHead {
  hasAcl: boolean;
  composefsVersion: number;
  rootNid: number;
  inodes: number;
  minMtimeSec: number;
  minMtimeNsec: number;
  /** The image's size in blocks. */
  blocks: number;
  /** Where the inodes end (the shared xattr table starts). */
  inodesEnd: number;
}

/** The composefs header and the superblock, into a zeroed buffer; leaves `out` after them. */
export function writeHeader(out: Out, h: ImageHead): void {
  const b = out.buf;
  const H = lcfs_erofs_header;
  putField(b, 0, H.magic, LCFS_EROFS_MAGIC);
  putField(b, 0, H.version, LCFS_EROFS_VERSION);
  putField(b, 0, H.flags, h.hasAcl ? LCFS_EROFS_FLAGS_HAS_ACL : 0);
  putField(b, 0, H.composefs_version, h.composefsVersion);
  const SB = erofs_super_block;
  const sb = EROFS_SUPER_OFFSET; // fields not written are zero
  putField(b, sb, SB.magic, EROFS_SUPER_MAGIC_V1);
  putField(b, sb, SB.feature_compat, EROFS_FEATURE_COMPAT_MTIME | EROFS_FEATURE_COMPAT_XATTR_FILTER);
  putField(b, sb, SB.blkszbits, EROFS_BLKSIZ_BITS);
  putField(b, sb, SB.root_nid, h.rootNid);
  putField(b, sb, SB.inos, h.inodes);
  putField(b, sb, SB.build_time, h.minMtimeSec);
  putField(b, sb, SB.build_time_nsec, h.minMtimeNsec);
  putField(b, sb, SB.blocks, h.blocks);
  putField(b, sb, SB.meta_blkaddr, Math.floor((EROFS_SUPER_OFFSET + SB.sizeof) / EROFS_BLKSIZ));
  putField(b, sb, SB.xattr_blkaddr, Math.floor(h.inodesEnd / EROFS_BLKSIZ));
  out.pos = sb + SB.sizeof;
}

/** i_size as written for a planned inode (and so as a reader's getattr gives it). */
export function storedSize(p: PlanNode): number {
  const type = p.mode & S_IFMT;
  if (type === S_IFDIR) return p.nBlocks * EROFS_BLKSIZ + p.tailSize;
  if (type === S_IFREG) return p.size;
  if (type === S_IFLNK) return p.nBlocks === 0 ? p.tailSize : p.size;
  return 0;
}

function writeXattr(out: Out, x: PlanXattr): void {
  const XE = erofs_xattr_entry;
  putField(out.buf, out.pos, XE.e_name_len, x.suffix.length);
  putField(out.buf, out.pos, XE.e_name_index, x.index);
  putField(out.buf, out.pos, XE.e_value_size, x.value.length);
  out.skip(XE.sizeof);
  out.bytes(x.suffix);
  out.bytes(x.value);
  out.align(4);
}

export function writeInode(out: Out, p: PlanNode, sharedBase: number): void {
  out.skip(p.ipad);
  const type = p.mode & S_IFMT;
  const layoutKind = type === S_IFREG && p.external ? EROFS_INODE_CHUNK_BASED : p.tailSize > 0 ? EROFS_INODE_FLAT_INLINE : EROFS_INODE_FLAT_PLAIN;
  const size = storedSize(p);
  const format = (layoutKind << 1) | (p.compact ? 0 : 1);
  const I = inodeLayout(format);
  const b = out.buf;
  const at = out.pos;
  putField(b, at, I.i_format, format);
  putField(b, at, I.i_xattr_icount, p.xattrSize === 0 ? 0 : (p.xattrSize - erofs_xattr_ibody_header.sizeof) / 4 + 1);
  putField(b, at, I.i_mode, p.mode);
  putField(b, at, I.i_nlink, p.nlink);
  putField(b, at, I.i_size, size);
  putField(b, at, I.i_ino, p.ino);
  putField(b, at, I.i_uid, p.uid);
  putField(b, at, I.i_gid, p.gid);
  if (!p.compact) {
    putField(b, at, erofs_inode_extended.i_mtime, p.mtimeSec);
    putField(b, at, erofs_inode_extended.i_mtime_nsec, p.mtimeNsec);
  }
  if (type === S_IFCHR || type === S_IFBLK) putField(b, at, I.i_u, p.rdev % 2 ** 32);
  else if ((type === S_IFDIR || type === S_IFREG || type === S_IFLNK) && p.nBlocks > 0) putField(b, at, I.i_u, p.blkaddr);
  // The chunk format shares i_u with raw_blkaddr and overwrites only its low half, as lcfs does.
  if (type === S_IFREG && p.external) putField(b, at + I.i_u.at, erofs_inode_chunk_info.format, p.chunkBits - EROFS_BLKSIZ_BITS);
  out.skip(I.sizeof);

  if (p.xattrSize > 0) {
    const X = erofs_xattr_ibody_header;
    const xstart = out.pos;
    putField(b, xstart, X.h_name_filter, p.nameFilter);
    putField(b, xstart, X.h_shared_count, p.nShared);
    let i = 0;
    for (const x of p.xattrs) if (x.sharedOffset >= 0) putField(b, xstart + 4 * i++, X.h_shared_xattrs, (sharedBase + x.sharedOffset) / 4);
    out.skip(X.sizeof + 4 * i);
    for (const x of p.xattrs) if (x.sharedOffset < 0) writeXattr(out, x);
    out.pos = xstart + p.xattrSize;
  }

  if (p.tailSize > 0) {
    if (type === S_IFDIR) writeDirents(out, p, false);
    else if (type === S_IFLNK) out.bytes(p.symlink!);
    else if (type === S_IFREG) {
      if (p.content) out.bytes(p.content.subarray(p.content.length - p.tailSize));
      else out.fill(0xff, p.chunkCount * 4); // EROFS_NULL_ADDR: every chunk is a hole
    }
  }
}

/** Dirents in blocks (`blocks`) or the inline tail (`!blocks`), split as lcfs splits them. */
function writeDirents(out: Out, p: PlanNode, blocks: boolean): void {
  const d = p.dirents!;
  let used = 0;
  let first = 0;
  let written = 0;
  for (let i = 0; i < d.length; i++) {
    const len = erofs_dirent.sizeof + d[i]!.name.length;
    if (used + len > EROFS_BLKSIZ) {
      if (blocks) direntChunk(out, p, first, i, true);
      written++;
      used = 0;
      first = i;
    }
    used += len;
  }
  if (written < p.nBlocks) {
    if (blocks) direntChunk(out, p, first, d.length, true);
    return;
  }
  if (!blocks && used > 0) direntChunk(out, p, first, d.length, false);
}

function direntChunk(out: Out, p: PlanNode, from: number, to: number, block: boolean): void {
  const d = p.dirents!;
  let nameoff = (to - from) * erofs_dirent.sizeof;
  const D = erofs_dirent;
  for (let i = from; i < to; i++) {
    const e = d[i]!;
    putField(out.buf, out.pos, D.nid, e.node.nid);
    putField(out.buf, out.pos, D.nameoff, nameoff);
    putField(out.buf, out.pos, D.file_type, fileTypeOfMode(e.node.mode));
    out.skip(D.sizeof);
    nameoff += e.name.length;
  }
  for (let i = from; i < to; i++) out.latin1(d[i]!.name);
  if (block) out.align(EROFS_BLKSIZ);
}

export function writeBlocks(out: Out, p: PlanNode): void {
  const type = p.mode & S_IFMT;
  if (type === S_IFDIR) {
    writeDirents(out, p, true);
    return;
  }
  if (p.nBlocks === 0) return;
  if (type === S_IFREG) {
    if (!p.content) out.fill(0xff, EROFS_BLKSIZ); // a chunk map that did not fit inline
    else { out.bytes(p.content.subarray(0, Math.min(p.size, EROFS_BLKSIZ))); out.align(EROFS_BLKSIZ); }
  } else if (type === S_IFLNK) {
    out.bytes(p.symlink!.subarray(0, EROFS_BLKSIZ));
    out.align(EROFS_BLKSIZ);
  }
}
