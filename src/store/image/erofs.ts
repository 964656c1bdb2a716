// The on-disk names of the composefs EROFS format, declared once (after the kernel's erofs_fs.h and
// composefs' lcfs-erofs.h) so the writer, the reader and the in-place patcher speak the same words:
// the constants, each struct's field layout (byte offset and width, under the format's own field
// names), and the few rules every module must apply the same way (whiteouts, chunking, which
// xattrs a reader shows). Nothing outside src/store/image/ reads or writes image bytes.
//
// Public surface: the constants below; Field, getField, putField and the struct layouts
// lcfs_erofs_header, erofs_super_block, erofs_inode_compact, erofs_inode_extended,
// erofs_xattr_ibody_header, erofs_xattr_entry, erofs_dirent, erofs_inode_chunk_info; inodeLayout,
// xattrIbodySize, xattrEntrySize, direntNameEnd; FileType, fileTypeOfMode, S_IF* mode bits; isWhiteout,
// chunking, chunkBits, shownXattrName, LCFS_RECOMMENDED_INLINE_CONTENT_MAX.

/** composefs header at offset 0 (32 bytes): magic, version, flags, composefs_version, unused[4]. */
export const LCFS_EROFS_MAGIC = 0xd078629a;
export const LCFS_EROFS_VERSION = 1;
export const LCFS_EROFS_FLAGS_HAS_ACL = 1;
export const LCFS_HEADER_SIZE = 32;

export const EROFS_SUPER_OFFSET = 1024;
export const EROFS_SUPER_MAGIC_V1 = 0xe0f5e1e2;
export const EROFS_SUPER_BLOCK_SIZE = 128;
export const EROFS_FEATURE_COMPAT_MTIME = 0x2;
export const EROFS_FEATURE_COMPAT_XATTR_FILTER = 0x4;

export const EROFS_BLKSIZ_BITS = 12;
export const EROFS_BLKSIZ = 4096;
export const EROFS_ISLOTBITS = 5;
export const EROFS_SLOTSIZE = 32;

/** Inode layouts: compact (32 bytes) and extended (64 bytes); i_format bit 0. */
export const EROFS_INODE_COMPACT_SIZE = 32;
export const EROFS_INODE_EXTENDED_SIZE = 64;
/** Data layouts; i_format bits 1..3. */
export const EROFS_INODE_FLAT_PLAIN = 0;
export const EROFS_INODE_FLAT_INLINE = 2;
export const EROFS_INODE_CHUNK_BASED = 4;
export const EROFS_CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const EROFS_CHUNK_FORMAT_INDEXES = 0x20;
/** A hole in a chunk map: composefs files have only holes; the data lives in the object. */
export const EROFS_NULL_ADDR = 0xffffffff;
/** composefs caps external files so their chunk map fits one block. */
export const LCFS_MAX_NONINLINE_CHUNKS = 1024;
/** mkcomposefs accepts inline content up to this size from a dump. */
export const LCFS_INLINE_CONTENT_MAX = 5000;

/** erofs_xattr_ibody_header: h_name_filter u32, h_shared_count u8, 7 reserved. */
export const EROFS_XATTR_IBODY_HEADER_SIZE = 12;
/** erofs_xattr_entry: e_name_len u8, e_name_index u8, e_value_size u16, then name and value. */
export const EROFS_XATTR_ENTRY_SIZE = 4;
export const EROFS_XATTR_LONG_PREFIX = 0x80;
export const EROFS_XATTR_FILTER_BITS = 32;
export const EROFS_XATTR_FILTER_SEED = 0x25bbe08f;

export const EROFS_XATTR_INDEX_USER = 1;
export const EROFS_XATTR_INDEX_POSIX_ACL_ACCESS = 2;
export const EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT = 3;
export const EROFS_XATTR_INDEX_TRUSTED = 4;
export const EROFS_XATTR_INDEX_SECURITY = 6;

/** Name prefixes by e_name_index, in the order the writer tries them. */
export const XATTR_PREFIXES: ReadonlyArray<readonly [string, number]> = [
  ['user.', EROFS_XATTR_INDEX_USER],
  ['system.posix_acl_access', EROFS_XATTR_INDEX_POSIX_ACL_ACCESS],
  ['system.posix_acl_default', EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT],
  ['trusted.', EROFS_XATTR_INDEX_TRUSTED],
  ['security.', EROFS_XATTR_INDEX_SECURITY],
];
export const XATTR_PREFIX_BY_INDEX: ReadonlyMap<number, string> = new Map(XATTR_PREFIXES.map(([p, i]) => [i, p]));

/** erofs_dirent: nid u64, nameoff u16, file_type u8, reserved u8. */
export const EROFS_DIRENT_SIZE = 12;

export const enum FileType {
  Unknown = 0,
  Regular = 1,
  Directory = 2,
  CharDevice = 3,
  BlockDevice = 4,
  Fifo = 5,
  Socket = 6,
  Symlink = 7,
}

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export function fileTypeOfMode(mode: number): FileType {
  switch (mode & S_IFMT) {
    case S_IFREG: return FileType.Regular;
    case S_IFDIR: return FileType.Directory;
    case S_IFCHR: return FileType.CharDevice;
    case S_IFBLK: return FileType.BlockDevice;
    case S_IFIFO: return FileType.Fifo;
    case S_IFSOCK: return FileType.Socket;
    case S_IFLNK: return FileType.Symlink;
    default: return FileType.Unknown;
  }
}

/** overlayfs xattr names composefs writes or escapes (all in the trusted. namespace). */
export const OVERLAY_PREFIX = 'trusted.overlay.';
export const OVERLAY_ESCAPE_PREFIX = 'trusted.overlay.overlay.';
export const OVERLAY_METACOPY = 'trusted.overlay.metacopy';
export const OVERLAY_REDIRECT = 'trusted.overlay.redirect';
export const OVERLAY_OPAQUE = 'trusted.overlay.opaque';
export const OVERLAY_ESCAPED_WHITEOUT = 'trusted.overlay.overlay.whiteout';
export const OVERLAY_ESCAPED_WHITEOUTS = 'trusted.overlay.overlay.whiteouts';
export const OVERLAY_ESCAPED_OPAQUE = 'trusted.overlay.overlay.opaque';
export const OVERLAY_USER_WHITEOUT = 'user.overlay.whiteout';
export const OVERLAY_USER_WHITEOUTS = 'user.overlay.whiteouts';
export const OVERLAY_USER_OPAQUE = 'user.overlay.opaque';

// ---------------------------------------------------------------------------------------------
// Field layouts. Every multi-byte field is little-endian. `u64` reads give Infinity beyond 2^53
// and `i64` (a signed time) NaN beyond ±2^53: no valid image has such values, and the reader
// refuses them. Offsets are those of erofs_fs.h; the struct's total size is `sizeof`.

export interface Field {
  readonly at: number;
  readonly type: 'u8' | 'u16' | 'u32' | 'u64' | 'i64';
}
const f = (at: number, type: Field['type']): Field => ({ at, type });

/** composefs' header at offset 0. */
export const lcfs_erofs_header = {
  sizeof: LCFS_HEADER_SIZE,
  magic: f(0, 'u32'), version: f(4, 'u32'), flags: f(8, 'u32'), composefs_version: f(12, 'u32'),
} as const;

/** The superblock, at EROFS_SUPER_OFFSET. Fields not listed are zero in a composefs image. */
export const erofs_super_block = {
  sizeof: EROFS_SUPER_BLOCK_SIZE,
  magic: f(0, 'u32'), checksum: f(4, 'u32'), feature_compat: f(8, 'u32'), blkszbits: f(12, 'u8'), sb_extslots: f(13, 'u8'),
  root_nid: f(14, 'u16'), inos: f(16, 'u64'), build_time: f(24, 'i64'), build_time_nsec: f(32, 'u32'), blocks: f(36, 'u32'),
  meta_blkaddr: f(40, 'u32'), xattr_blkaddr: f(44, 'u32'), feature_incompat: f(80, 'u32'),
} as const;

/**
 * The 32-byte inode. i_u is raw_blkaddr (flat data), rdev (devices) or, for chunk-based files,
 * erofs_inode_chunk_info in its low 16 bits. Its mtime is the superblock's build_time.
 */
export const erofs_inode_compact = {
  sizeof: EROFS_INODE_COMPACT_SIZE,
  i_format: f(0, 'u16'), i_xattr_icount: f(2, 'u16'), i_mode: f(4, 'u16'), i_nlink: f(6, 'u16'), i_size: f(8, 'u32'),
  i_u: f(16, 'u32'), i_ino: f(20, 'u32'), i_uid: f(24, 'u16'), i_gid: f(26, 'u16'),
} as const;

/** The 64-byte inode. */
export const erofs_inode_extended = {
  sizeof: EROFS_INODE_EXTENDED_SIZE,
  i_format: f(0, 'u16'), i_xattr_icount: f(2, 'u16'), i_mode: f(4, 'u16'), i_size: f(8, 'u64'), i_u: f(16, 'u32'),
  i_ino: f(20, 'u32'), i_uid: f(24, 'u32'), i_gid: f(28, 'u32'), i_mtime: f(32, 'i64'), i_mtime_nsec: f(40, 'u32'), i_nlink: f(44, 'u32'),
} as const;

/** The layout of an inode whose i_format is `format`; bit 0 says extended. */
export function inodeLayout(format: number): typeof erofs_inode_compact | typeof erofs_inode_extended {
  return (format & 1) === 1 ? erofs_inode_extended : erofs_inode_compact;
}
/** i_format's data layout (bits 1..3). */
export const inodeDataLayout = (format: number): number => (format >> 1) & 7;

/** Chunk-based files: i_u's low half. */
export const erofs_inode_chunk_info = { format: f(0, 'u16') } as const;

/** Header of an inode's xattr body, right after the inode; then h_shared_count u32 ids, then entries. */
export const erofs_xattr_ibody_header = {
  sizeof: EROFS_XATTR_IBODY_HEADER_SIZE,
  h_name_filter: f(0, 'u32'), h_shared_count: f(4, 'u8'),
  /** The first of h_shared_count shared xattr ids (each id * 4 bytes from xattr_blkaddr); id i is at 4 * i from it. */
  h_shared_xattrs: f(12, 'u32'),
} as const;

/** One xattr: this header, then e_name_len name bytes, then e_value_size value bytes, padded to 4. */
export const erofs_xattr_entry = {
  sizeof: EROFS_XATTR_ENTRY_SIZE,
  e_name_len: f(0, 'u8'), e_name_index: f(1, 'u8'), e_value_size: f(2, 'u16'),
} as const;

/** A directory block: `count` dirents (count = first nameoff / sizeof), then the names, in byte order. */
export const erofs_dirent = {
  sizeof: EROFS_DIRENT_SIZE,
  nid: f(0, 'u64'), nameoff: f(8, 'u16'), file_type: f(10, 'u8'),
} as const;

/**
 * Where dirent i's name ends, in a dirent chunk (a block, or an inline tail) of `count` entries
 * that lies at [start, end) of `b`: at the next name, or for the last one at the chunk's end or the
 * first NUL before it (names are not terminated; what follows the last is padding).
 */
export function direntNameEnd(b: Uint8Array, start: number, end: number, i: number, count: number): number {
  const d = start + i * erofs_dirent.sizeof;
  if (i + 1 < count) return start + getField(b, d + erofs_dirent.sizeof, erofs_dirent.nameoff);
  for (let p = start + getField(b, d, erofs_dirent.nameoff); p < end; p++) if (b[p] === 0) return p;
  return end;
}

/** Bytes of an inode's xattr body for i_xattr_icount. */
export const xattrIbodySize = (icount: number): number => (icount === 0 ? 0 : EROFS_XATTR_IBODY_HEADER_SIZE + (icount - 1) * 4);
/** Bytes of one xattr entry with its padding. */
export const xattrEntrySize = (nameLen: number, valueLen: number): number => Math.ceil((EROFS_XATTR_ENTRY_SIZE + nameLen + valueLen) / 4) * 4;

export function getField(b: Uint8Array, base: number, field: Field): number {
  const o = base + field.at;
  switch (field.type) {
    case 'u8': return b[o]!;
    case 'u16': return b[o]! | (b[o + 1]! << 8);
    case 'u32': return u32(b, o);
    case 'u64': {
      const hi = u32(b, o + 4);
      return hi >= 0x200000 ? Infinity : hi * 2 ** 32 + u32(b, o);
    }
    case 'i64': {
      const hi = u32(b, o + 4);
      if (hi < 0x200000) return hi * 2 ** 32 + u32(b, o);
      if (hi >= 0xffe00000) return (hi - 2 ** 32) * 2 ** 32 + u32(b, o);
      return NaN;
    }
  }
}

/** Writes a field; values are integers in range (the writer and patcher check before they encode). */
export function putField(b: Uint8Array, base: number, field: Field, v: number): void {
  const o = base + field.at;
  switch (field.type) {
    case 'u8': b[o] = v; return;
    case 'u16': b[o] = v & 0xff; b[o + 1] = (v >>> 8) & 0xff; return;
    case 'u32': putU32(b, o, v); return;
    case 'u64': putU32(b, o, v % 2 ** 32); putU32(b, o + 4, Math.floor(v / 2 ** 32)); return;
    case 'i64': {
      // two's complement over 64 bits: the kernel and mkcomposefs read an int64
      const lo = ((v % 2 ** 32) + 2 ** 32) % 2 ** 32;
      putU32(b, o, lo);
      putU32(b, o + 4, ((v - lo) / 2 ** 32) >>> 0);
      return;
    }
  }
}

function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff; b[o + 1] = (v >>> 8) & 0xff; b[o + 2] = (v >>> 16) & 0xff; b[o + 3] = (v >>> 24) & 0xff;
}

// ---------------------------------------------------------------------------------------------
// Rules every reader and writer applies the same way.

/** A whiteout, as overlayfs and composefs mean it: a character device 0/0. */
export const isWhiteout = (mode: number, rdev: number): boolean => (mode & S_IFMT) === S_IFCHR && rdev === 0;

/**
 * Regular files of 1..this many bytes are stored inline in the image, larger ones become objects:
 * mkcomposefs' LCFS_RECOMMENDED_INLINE_CONTENT_MAX.
 */
export const LCFS_RECOMMENDED_INLINE_CONTENT_MAX = 64;

/** The writer's chunking of an external file: fewest chunks, each at least one block (chunkbits = ilog2(size - 1) + 1, clamped). */
export function chunking(size: number): [bits: number, count: number] {
  const bits = chunkBits(size);
  return [bits, Math.ceil(size / 2 ** bits)];
}

/** chunking(size)[0], without the pair (the writer asks for every external file). */
export function chunkBits(size: number): number {
  let bits = size - 1 < 2 ** 31 ? 32 - Math.clz32(size - 1) : 31; // ilog2(size - 1) + 1 (0 for size 1)
  while (2 ** bits <= size - 1) bits++;
  if (bits < EROFS_BLKSIZ_BITS) bits = EROFS_BLKSIZ_BITS;
  if (bits - EROFS_BLKSIZ_BITS > EROFS_CHUNK_FORMAT_BLKBITS_MASK) bits = EROFS_CHUNK_FORMAT_BLKBITS_MASK + EROFS_BLKSIZ_BITS;
  return bits;
}

/**
 * The name a reader (overlayfs over the image) shows for a stored xattr, or undefined when it is
 * hidden: `trusted.overlay.overlay.*` is shown unescaped, overlayfs' own `trusted.overlay.*` hidden.
 */
export function shownXattrName(stored: string): string | undefined {
  if (stored.startsWith(OVERLAY_ESCAPE_PREFIX)) return OVERLAY_PREFIX + stored.slice(OVERLAY_ESCAPE_PREFIX.length);
  return stored.startsWith(OVERLAY_PREFIX) ? undefined : stored;
}
