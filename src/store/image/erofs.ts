// The on-disk names of the composefs EROFS format, declared once (after the kernel's erofs_fs.h and
// composefs' lcfs-erofs.h) so the writer and the reader speak the same words.
//
// Public surface: the constants below, FileType, fileTypeOfMode, S_IF* mode bits.

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
