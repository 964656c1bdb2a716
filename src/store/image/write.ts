// Pass two of the writer: one sequential sweep over a Plan, no seeking back. Together with
// layout.ts this is `writeImage(tree) -> bytes`, byte-identical to mkcomposefs 1.0.8.
//
// Public surface: writeImage, emit.
import {
  EROFS_BLKSIZ, EROFS_BLKSIZ_BITS, EROFS_DIRENT_SIZE, EROFS_FEATURE_COMPAT_MTIME, EROFS_FEATURE_COMPAT_XATTR_FILTER,
  EROFS_INODE_CHUNK_BASED, EROFS_INODE_COMPACT_SIZE, EROFS_INODE_EXTENDED_SIZE, EROFS_INODE_FLAT_INLINE, EROFS_INODE_FLAT_PLAIN,
  EROFS_SUPER_BLOCK_SIZE, EROFS_SUPER_MAGIC_V1, EROFS_SUPER_OFFSET, EROFS_XATTR_IBODY_HEADER_SIZE, LCFS_EROFS_FLAGS_HAS_ACL,
  LCFS_EROFS_MAGIC, LCFS_EROFS_VERSION, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, fileTypeOfMode,
} from './erofs.js';
import { type Plan, type PlanNode, type PlanXattr, type WriteOptions, layout } from './layout.js';
import type { Tree } from './tree.js';

export function writeImage(tree: Tree, options: WriteOptions = {}): Uint8Array {
  return emit(layout(tree, options));
}

class Out {
  readonly buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.alloc(size); // zero-filled: padding is skipping ahead
  }
  u8(v: number): void { this.buf[this.pos++] = v; }
  u16(v: number): void { this.buf.writeUInt16LE(v & 0xffff, this.pos); this.pos += 2; }
  u32(v: number): void { this.buf.writeUInt32LE(v >>> 0, this.pos); this.pos += 4; }
  u64(v: number): void {
    this.buf.writeUInt32LE(v % 2 ** 32, this.pos);
    this.buf.writeUInt32LE(Math.floor(v / 2 ** 32), this.pos + 4);
    this.pos += 8;
  }
  /** A signed time in seconds, two's complement in 64 bits as mkcomposefs stores an int64 (the kernel reads it back signed). */
  i64(v: number): void {
    this.buf.writeBigInt64LE(BigInt(v), this.pos);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void { this.buf.set(b, this.pos); this.pos += b.length; }
  skip(n: number): void { this.pos += n; }
  align(to: number): void { this.pos = Math.ceil(this.pos / to) * to; }
  fill(byte: number, n: number): void { this.buf.fill(byte, this.pos, this.pos + n); this.pos += n; }
}

export function emit(plan: Plan): Uint8Array {
  const out = new Out(plan.size);
  // composefs header
  out.u32(LCFS_EROFS_MAGIC);
  out.u32(LCFS_EROFS_VERSION);
  out.u32(plan.hasAcl ? LCFS_EROFS_FLAGS_HAS_ACL : 0);
  out.u32(plan.composefsVersion);
  out.pos = EROFS_SUPER_OFFSET;
  // erofs_super_block
  const sb = out.pos;
  out.u32(EROFS_SUPER_MAGIC_V1);
  out.u32(0); // checksum
  out.u32(EROFS_FEATURE_COMPAT_MTIME | EROFS_FEATURE_COMPAT_XATTR_FILTER);
  out.u8(EROFS_BLKSIZ_BITS);
  out.u8(0); // sb_extslots
  out.u16(plan.nodes[0]!.nid); // root_nid
  out.u64(plan.nodes.length); // inos
  out.i64(plan.minMtimeSec); // build_time
  out.u32(plan.minMtimeNsec);
  out.u32(plan.dataBlockStart / EROFS_BLKSIZ + plan.nDataBlocks); // blocks
  out.u32(Math.floor((EROFS_SUPER_OFFSET + EROFS_SUPER_BLOCK_SIZE) / EROFS_BLKSIZ)); // meta_blkaddr
  out.u32(Math.floor(plan.inodesEnd / EROFS_BLKSIZ)); // xattr_blkaddr
  out.pos = sb + EROFS_SUPER_BLOCK_SIZE; // everything else is zero

  const sharedBase = plan.inodesEnd % EROFS_BLKSIZ;
  for (const p of plan.nodes) writeInode(out, p, sharedBase);
  out.align(32);
  for (const x of plan.sharedXattrs) writeXattr(out, x);
  out.align(EROFS_BLKSIZ);
  for (const p of plan.nodes) writeBlocks(out, p);
  if (out.pos !== plan.size) throw new Error(`image writer: wrote ${out.pos} bytes, planned ${plan.size}`);
  return out.buf;
}

function writeXattr(out: Out, x: PlanXattr): void {
  out.u8(x.suffix.length);
  out.u8(x.index);
  out.u16(x.value.length);
  out.bytes(x.suffix);
  out.bytes(x.value);
  out.align(4);
}

function writeInode(out: Out, p: PlanNode, sharedBase: number): void {
  out.skip(p.ipad);
  const type = p.mode & S_IFMT;
  let layoutKind = p.tailSize > 0 ? EROFS_INODE_FLAT_INLINE : EROFS_INODE_FLAT_PLAIN;
  let size: number;
  if (type === S_IFDIR) size = p.nBlocks * EROFS_BLKSIZ + p.tailSize;
  else if (type === S_IFREG) {
    size = p.size;
    if (p.external) layoutKind = EROFS_INODE_CHUNK_BASED;
  } else if (type === S_IFLNK) size = p.nBlocks === 0 ? p.tailSize : p.size;
  else size = 0;
  const format = (layoutKind << 1) | (p.compact ? 0 : 1);
  const icount = p.xattrSize === 0 ? 0 : (p.xattrSize - EROFS_XATTR_IBODY_HEADER_SIZE) / 4 + 1;
  const start = out.pos;
  const iu = start + 16; // i_u is at offset 16 in both layouts
  out.u16(format);
  out.u16(icount);
  out.u16(p.mode);
  if (p.compact) {
    out.u16(p.nlink);
    out.u32(size);
    out.skip(4); // i_reserved
    out.skip(4); // i_u, below
    out.u32(p.ino);
    out.u16(p.uid);
    out.u16(p.gid);
    out.skip(4);
  } else {
    out.skip(2);
    out.u64(size);
    out.skip(4); // i_u, below
    out.u32(p.ino);
    out.u32(p.uid);
    out.u32(p.gid);
    out.i64(p.mtimeSec);
    out.u32(p.mtimeNsec);
    out.u32(p.nlink);
    out.skip(16);
  }
  if (type === S_IFCHR || type === S_IFBLK) out.buf.writeUInt32LE(p.rdev % 2 ** 32, iu);
  else if ((type === S_IFDIR || type === S_IFREG || type === S_IFLNK) && p.nBlocks > 0) out.buf.writeUInt32LE(p.blkaddr, iu);
  // The chunk format shares i_u with raw_blkaddr and overwrites only its low half, as lcfs does.
  if (type === S_IFREG && p.external) out.buf.writeUInt16LE(p.chunkBits - EROFS_BLKSIZ_BITS, iu);
  if (out.pos !== start + (p.compact ? EROFS_INODE_COMPACT_SIZE : EROFS_INODE_EXTENDED_SIZE)) throw new Error('inode size');

  if (p.xattrSize > 0) {
    const xstart = out.pos;
    out.u32(p.nameFilter);
    out.u8(p.nShared);
    out.skip(7);
    for (const x of p.xattrs) if (x.sharedOffset >= 0) out.u32((sharedBase + x.sharedOffset) / 4);
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
    const len = EROFS_DIRENT_SIZE + d[i]!.name.length;
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
  let nameoff = (to - from) * EROFS_DIRENT_SIZE;
  for (let i = from; i < to; i++) {
    const e = d[i]!;
    out.u64(e.node.nid);
    out.u16(nameoff);
    out.u8(fileTypeOfMode(e.node.mode));
    out.u8(0);
    nameoff += e.name.length;
  }
  for (let i = from; i < to; i++) out.bytes(d[i]!.name);
  if (block) out.align(EROFS_BLKSIZ);
}

function writeBlocks(out: Out, p: PlanNode): void {
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
