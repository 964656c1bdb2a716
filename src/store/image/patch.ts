// Rewrites inodes of an image in place, for commits that only edit paths of their base: new
// mode, owner and mtime, and for an external file new content (its size, chunk format and object).
// The result is byte for byte what the writer would emit for the edited tree, so a patch is
// refused (a reason string; the image is then partly written and must be discarded) whenever the
// writer would encode the inode differently: a compact inode, one that would become compact, an
// mtime below the image's build time or an inode leaving it (the minimum may rise), a change of
// chunk count, object xattrs that are shared.
// Every field is written through erofs.ts's layouts.
//
// Public surface: InodePatch, patchInode.
import {
  EROFS_BLKSIZ_BITS, EROFS_INODE_CHUNK_BASED, EROFS_XATTR_INDEX_TRUSTED, OVERLAY_METACOPY, OVERLAY_REDIRECT, S_IFDIR, S_IFMT, chunking,
  erofs_inode_chunk_info, erofs_inode_extended, erofs_xattr_entry, erofs_xattr_ibody_header, getField, putField, xattrEntrySize,
} from './erofs.js';
import type { ImageReader } from './read.js';

export interface InodePatch {
  nid: number;
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** New content of an external file: its size and the object holding it. */
  content?: { size: number; digest: string };
}

const I = erofs_inode_extended;
const XE = erofs_xattr_entry;
const METACOPY_SUFFIX = OVERLAY_METACOPY.slice('trusted.'.length);
const REDIRECT_SUFFIX = OVERLAY_REDIRECT.slice('trusted.'.length);

/** Applies `p` to `image` (the bytes `reader` reads); undefined when done, else why not. */
export function patchInode(image: Buffer, reader: ImageReader, p: InodePatch): string | undefined {
  const place = reader.placeOf(p.nid);
  if (!place.extended) return 'compact inode';
  const a = reader.getattr(p.nid);
  const { sec: minSec, nsec: minNsec } = reader.buildTime;
  const size = p.content?.size ?? a.size;
  // The writer makes an inode compact exactly when this holds; it must stay extended.
  if (p.mtimeSec === minSec && p.mtimeNsec === minNsec && a.nlink <= 0xffff && p.uid <= 0xffff && p.gid <= 0xffff && size <= 0xffffffff) return 'would become compact';
  if (p.mtimeSec < minSec || (p.mtimeSec === minSec && p.mtimeNsec < minNsec)) return "mtime below the image's build time";
  // An extended inode may hold the minimum too (an owner above 16 bits): moved off it, the minimum
  // may rise, and with it the build time and which inodes are compact.
  if (a.mtimeSec === minSec && a.mtimeNsec === minNsec && (p.mtimeSec !== minSec || p.mtimeNsec !== minNsec)) return "it held the image's minimum mtime";
  const off = place.offset;
  if ((a.mode & S_IFMT) !== S_IFDIR) {
    if (place.layout !== EROFS_INODE_CHUNK_BASED) return 'not an external file';
    if (chunking(size)[1] !== chunking(a.size)[1]) return 'chunk count changes';
    if (p.content) {
      if (!rewriteObjectXattrs(image, off + I.sizeof, place.xattrSize, p.content.digest)) return 'object xattrs are shared';
      putField(image, off + I.i_u.at, erofs_inode_chunk_info.format, chunking(size)[0] - EROFS_BLKSIZ_BITS);
      putField(image, off, I.i_size, size);
    }
  }
  putField(image, off, I.i_mode, p.mode);
  putField(image, off, I.i_uid, p.uid);
  putField(image, off, I.i_gid, p.gid);
  putField(image, off, I.i_mtime, p.mtimeSec);
  putField(image, off, I.i_mtime_nsec, p.mtimeNsec);
  return undefined;
}

/** Overwrites the metacopy digest and redirect of an inode's xattr body in place; false if they are not both inline. */
function rewriteObjectXattrs(image: Buffer, base: number, xattrSize: number, digest: string): boolean {
  if (xattrSize === 0) return false;
  const end = base + xattrSize;
  const nShared = getField(image, base, erofs_xattr_ibody_header.h_shared_count);
  let pos = base + erofs_xattr_ibody_header.sizeof + nShared * 4;
  let metacopy = -1;
  let redirect = -1;
  while (pos + XE.sizeof <= end) {
    const nameLen = getField(image, pos, XE.e_name_len);
    const index = getField(image, pos, XE.e_name_index);
    const valueLen = getField(image, pos, XE.e_value_size);
    const name = image.toString('latin1', pos + XE.sizeof, pos + XE.sizeof + nameLen);
    if (index === EROFS_XATTR_INDEX_TRUSTED && name === METACOPY_SUFFIX && valueLen === 36) metacopy = pos + XE.sizeof + nameLen;
    if (index === EROFS_XATTR_INDEX_TRUSTED && name === REDIRECT_SUFFIX && valueLen === 66) redirect = pos + XE.sizeof + nameLen;
    pos += xattrEntrySize(nameLen, valueLen);
  }
  if (metacopy < 0 || redirect < 0) return false;
  if (image[metacopy + 3] !== 1) return false; // metacopy version 1 carries a digest
  image.write(digest, metacopy + 4, 'hex');
  image.write(`/${digest.slice(0, 2)}/${digest.slice(2)}`, redirect, 'latin1');
  return true;
}
