// The writer for a tree that is mostly a base image: the same image `writeImage` makes of the
// tree, byte for byte, at a cost that grows with what changed rather than with the tree.
//
// Why it can be done: of the writer's decisions about an inode (layout.ts), only its place
// depends on the inodes before it: the padding before it and so its nid and, for data in whole
// blocks, its block address. Its size, tail, compactness and xattr body depend on the inode
// alone, given three things that belong to the whole tree: the minimum mtime, the shared xattr
// table and the composefs version. When a change keeps those three, an inode the change did not
// touch is, in the new image, the base's bytes at a new place with four kinds of field moved on:
// i_ino (its BFS index), i_u (its first data block), its shared xattr ids (the table starts
// elsewhere) and, in a directory's dirents, the nids of its entries. (A tail never moves into a
// block because of where the inode lands: padding to the next slot always leaves it room, as
// tailPadding shows, so a directory's i_size is the base's too.)
//
// So: `indexBase` sweeps the base image's inodes once (where each lies, its size, tail and
// blocks, and the shared xattr table), `spliceImage` walks the new tree in BFS order (the changed
// inodes planned with the writer's own code: rewrite, direntsOf, placeNode), settles the shared
// table, places every inode, then writes: the changed ones by the writer's emit, the base's by
// copy and fix-up. The shared table may change (a pair on a second inode joins it, one left on
// one inode leaves it): the table is rebuilt in the writer's order, ids are mapped to their
// entries' new offsets, and an unchanged inode whose xattrs move in or out of it gets a new xattr
// body. A change that would move one of the two other tree-wide things (an mtime below the
// minimum or the last inode at it gone, a source whiteout), and an image this sweep does not
// recognise or with hardlinks or ACLs (their bookkeeping is global), is refused with the reason:
// the caller then writes the tree whole. The tests hold the result to writeImage of the same tree.
//
// Public surface: indexBase, SpliceBase, spliceImage, Spliced.
import {
  EROFS_BLKSIZ, EROFS_CHUNK_FORMAT_BLKBITS_MASK, EROFS_DIRENT_SIZE, EROFS_INODE_CHUNK_BASED, EROFS_INODE_FLAT_INLINE,
  EROFS_INODE_FLAT_PLAIN, EROFS_SLOTSIZE, EROFS_SUPER_BLOCK_SIZE, EROFS_SUPER_OFFSET,
  EROFS_XATTR_LONG_PREFIX, LCFS_EROFS_FLAGS_HAS_ACL, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, XATTR_PREFIX_BY_INDEX, erofs_dirent,
  erofs_inode_compact, erofs_inode_extended, erofs_super_block, erofs_xattr_entry, erofs_xattr_ibody_header, getField,
  direntNameEnd, lcfs_erofs_header, putField, xattrIbodySize,
} from './erofs.js';
import { type PlanNode, type PlanXattr, type NameInfo, type Work, NEEDS_FULL_LAYOUT, NEEDS_VERSION_1, direntsOf, encodeXattrs, hasAcl, placeNode, rewrite } from './layout.js';
import { type ByteString, type Inode, type Tree, byteString } from './tree.js';
import { Out, writeBlocks, writeHeader, writeInode } from './write.js';

/** The base image and, per inode in image order (index k), what placing it again needs. */
export interface SpliceBase {
  image: Buffer;
  minSec: number;
  minNsec: number;
  /** Inodes in the image. */
  count: number;
  /** nid -> k, -1 where no inode starts. */
  kOf: Int32Array;
  offset: Float64Array;
  mode: Uint16Array;
  /** Inode and xattr body bytes. */
  head: Int32Array;
  /** Inline tail bytes (dirents, content, symlink target or chunk map) after the head. */
  tail: Int32Array;
  blocks: Int32Array;
  blkaddr: Float64Array;
  /** i_size (what a symlink's padding and the tree's total size need). */
  size: Float64Array;
  /** Its mtime is the image's minimum. */
  atMin: Uint8Array;
  /** The shared xattr table: bytes, where it started, its entries' offsets and their keys (pairKey). */
  table: Buffer;
  tableStart: number;
  tableOffsets: number[];
  tableKeys: Map<string, number>;
  /** The entries' keys, in table order (beside tableOffsets). */
  tableKeyList: string[];
}

const roundUp = (x: number, to: number): number => Math.ceil(x / to) * to;
const u16 = (b: Buffer, o: number): number => b[o]! | (b[o + 1]! << 8);
const u32 = (b: Buffer, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
/** Chunk sizes by a chunk-based inode's chunk format bits. */
const CHUNK_SIZE = Array.from({ length: EROFS_CHUNK_FORMAT_BLKBITS_MASK + 1 }, (_, bits) => EROFS_BLKSIZ * 2 ** bits);
/** Where the first inode can lie: right after the superblock, slot-aligned. */
const FIRST_SLOT = roundUp(EROFS_SUPER_OFFSET + EROFS_SUPER_BLOCK_SIZE, EROFS_SLOTSIZE);
const I = erofs_inode_compact; // i_format, i_xattr_icount, i_mode, i_size's low word, i_u and i_ino lie alike in both layouts
const E = erofs_inode_extended;
const DIRENT = erofs_dirent;
const XH = erofs_xattr_ibody_header;
const XE = erofs_xattr_entry;

/**
 * A number telling most stored xattrs apart, from the entry's header and its value's last four
 * bytes (the name and length alone match every file's metacopy): a match is then compared whole.
 * `quickHint` is a 16-bit one of the same, in small-integer arithmetic, to look at first.
 */
function quickHint(b: Uint8Array, index: number, nameLen: number, value: number, valueLen: number): number {
  const last = valueLen > 0 ? b[value + valueLen - 1]! : 0;
  const before = valueLen > 1 ? b[value + valueLen - 2]! : 0;
  return ((before << 8) ^ last ^ (valueLen << 5) ^ (nameLen << 2) ^ index) & 0xffff;
}
function pairHint(b: Uint8Array, index: number, nameLen: number, value: number, valueLen: number): number {
  let tail = 0;
  for (let i = Math.max(0, valueLen - 4); i < valueLen; i++) tail = tail * 256 + b[value + i]!;
  return (index + 256 * nameLen + 65536 * valueLen) * 31 + tail;
}

/** A stored xattr as one string: e_name_index, the name suffix, NUL, the value (as latin1). */
const pairKey = (index: number, suffix: ByteString, value: ByteString): string => `${String.fromCharCode(index)}${suffix}\0${value}`;

/**
 * Sweeps the base image's inodes in image order (padding slots are zero: an all-zero i_format and
 * i_mode is no inode). Gives the index, or why this image cannot be spliced.
 */
export function indexBase(image: Buffer): SpliceBase | string {
  const SB = erofs_super_block;
  if (image.length < FIRST_SLOT) return 'the image is too small';
  if (getField(image, 0, lcfs_erofs_header.composefs_version) !== 0) return 'the image is composefs version 1 (source whiteouts)';
  if ((getField(image, 0, lcfs_erofs_header.flags) & LCFS_EROFS_FLAGS_HAS_ACL) !== 0) return 'the image has ACLs';
  const sb = EROFS_SUPER_OFFSET;
  const count = getField(image, sb, SB.inos);
  const metaStart = getField(image, sb, SB.meta_blkaddr) * EROFS_BLKSIZ;
  const totalBlocks = getField(image, sb, SB.blocks);
  if (metaStart !== 0 || totalBlocks * EROFS_BLKSIZ !== image.length || !(count >= 1 && count <= image.length / EROFS_SLOTSIZE)) return 'an unexpected superblock';
  const minSec = getField(image, sb, SB.build_time);
  const minNsec = getField(image, sb, SB.build_time_nsec);
  const kOf = new Int32Array(Math.ceil(image.length / EROFS_SLOTSIZE)).fill(-1);
  const offset = new Float64Array(count);
  const mode = new Uint16Array(count);
  const head = new Int32Array(count);
  const tail = new Int32Array(count);
  const blocks = new Int32Array(count);
  const blkaddr = new Float64Array(count);
  const size = new Float64Array(count);
  const atMin = new Uint8Array(count);
  let aligned = FIRST_SLOT; // where the previous inode ended, slot-aligned
  let dataBlocks = 0;
  for (let k = 0; k < count; k++) {
    let pos = aligned;
    while (pos + EROFS_SLOTSIZE <= image.length && zeroSlot(image, pos)) pos += EROFS_SLOTSIZE;
    if (pos + erofs_inode_extended.sizeof > image.length) return 'inodes run past the end';
    const format = u16(image, pos + I.i_format.at);
    const m = u16(image, pos + I.i_mode.at);
    if (format >> 4 !== 0) return 'an unknown inode format';
    // (the fields read straight through their layouts' offsets: this loop runs once per inode)
    const extended = (format & 1) === 1;
    const L = extended ? E : I;
    const layout = (format >> 1) & 7;
    const type = m & S_IFMT;
    const isize = extended ? u32(image, pos + E.i_size.at) + u32(image, pos + E.i_size.at + 4) * 2 ** 32 : u32(image, pos + I.i_size.at);
    const h = L.sizeof + xattrIbodySize(u16(image, pos + I.i_xattr_icount.at));
    let t = 0;
    let nb = 0;
    if (layout === EROFS_INODE_FLAT_PLAIN) nb = Math.ceil(isize / EROFS_BLKSIZ);
    else if (layout === EROFS_INODE_FLAT_INLINE) {
      nb = Math.floor(isize / EROFS_BLKSIZ);
      t = isize - nb * EROFS_BLKSIZ;
    } else if (layout === EROFS_INODE_CHUNK_BASED && type === S_IFREG) {
      const chunk = CHUNK_SIZE[u32(image, pos + I.i_u.at) & EROFS_CHUNK_FORMAT_BLKBITS_MASK]!;
      t = (isize <= chunk ? 1 : Math.ceil(isize / chunk)) * 4;
    } else return 'an unknown data layout';
    // A tail is at most half a block (sizeTail) and so never moved to a block by padding; a chunk map is one entry in practice.
    if (t > EROFS_BLKSIZ / 2 && type !== S_IFLNK) return 'a tail longer than half a block';
    if (type !== S_IFDIR && (extended ? u32(image, pos + E.i_nlink.at) : u16(image, pos + I.i_nlink.at)) > 1) return 'the base has hardlinks';
    if (!Number.isSafeInteger(isize) || pos + h + t > image.length) return 'an inode runs past the end';
    // Only an image laid out as the writer lays it out is spliced: what is copied from it must be
    // what the writer would write (an image from elsewhere, pulled say, may be laid out otherwise).
    if (placeAt(aligned, h, t, type === S_IFLNK, isize) !== pos || u32(image, pos + I.i_ino.at) !== k) return 'an image not laid out as the writer lays it out';
    kOf[pos / EROFS_SLOTSIZE] = k;
    offset[k] = pos;
    mode[k] = m;
    head[k] = h;
    tail[k] = t;
    blocks[k] = nb;
    blkaddr[k] = nb > 0 ? u32(image, pos + I.i_u.at) : 0;
    size[k] = isize;
    atMin[k] = !extended || (getField(image, pos, E.i_mtime) === minSec && u32(image, pos + E.i_mtime_nsec.at) === minNsec) ? 1 : 0;
    dataBlocks += nb;
    aligned = roundUp(pos + h + t, EROFS_SLOTSIZE);
  }
  const pos = aligned;
  // The shared xattr table: from the end of the inodes up to the data blocks (its entries' names are never empty).
  const tableStart = pos;
  const dataStart = (totalBlocks - dataBlocks) * EROFS_BLKSIZ;
  if (getField(image, sb, SB.xattr_blkaddr) !== Math.floor(tableStart / EROFS_BLKSIZ) || dataStart < tableStart) return 'an unexpected shared xattr area';
  const tableOffsets: number[] = [];
  const tableKeys = new Map<string, number>();
  const tableKeyList: string[] = [];
  let t = tableStart;
  while (t + XE.sizeof <= dataStart && image[t] !== 0) {
    const nameLen = image[t + XE.e_name_len.at]!;
    const valueLen = u16(image, t + XE.e_value_size.at);
    const end = t + XE.sizeof + nameLen + valueLen;
    if (end > dataStart) return 'a shared xattr runs past its area';
    tableOffsets.push(t - tableStart);
    const key = pairKey(image[t + XE.e_name_index.at]!, image.toString('latin1', t + XE.sizeof, t + XE.sizeof + nameLen), image.toString('latin1', t + XE.sizeof + nameLen, end));
    tableKeys.set(key, t - tableStart);
    tableKeyList.push(key);
    t = roundUp(end, 4);
  }
  if (roundUp(t, EROFS_BLKSIZ) !== dataStart) return 'an unexpected shared xattr area';
  return { image, minSec, minNsec, count, kOf, offset, mode, head, tail, blocks, blkaddr, size, atMin, table: image.subarray(tableStart, t), tableStart, tableOffsets, tableKeys, tableKeyList };
}

/** The spliced image, and what a commit needs of it for its Merkle leaves and counts. */
export interface Spliced {
  image: Buffer;
  /** Every planned (changed) inode with its path, the root's first; the root's whiteout stubs not. */
  planned: Array<{ path: ByteString; node: PlanNode }>;
  /** The base inodes placed as entries of planned directories (each with all below it): path, base nid, the tree's inode. */
  attached: Array<{ path: ByteString; nid: number; inode: Inode }>;
  /** Paths in the new tree (the root included, the stubs not) and bytes of regular-file content. */
  files: number;
  totalSize: number;
}

/** A base inode whose xattr body changes (a pair moving into or out of the shared table): its new body. */
interface NewBody {
  filter: number;
  /** Offsets in the new table of its shared xattrs, in order. */
  shared: number[];
  /** Its inline entries, as stored. */
  inline: Buffer;
  size: number;
}

/** A stored xattr entry (of the shared table, or inline): its stored name, value, pair key and bytes. */
interface TableEntry { name: ByteString; value: Buffer; bytes: Buffer; key: string }

/** The writer's order of the shared table (layout.ts): names descending, then longer values first, then values descending. */
function tableOrder(a: TableEntry, b: TableEntry): number {
  if (a.name !== b.name) return a.name < b.name ? 1 : -1;
  if (a.value.length !== b.value.length) return b.value.length - a.value.length;
  return Buffer.compare(b.value, a.value);
}

/** The stored name of an xattr entry: its prefix by e_name_index, then its suffix. */
const storedName = (index: number, suffix: ByteString): ByteString => (XATTR_PREFIX_BY_INDEX.get(index) ?? '') + suffix;

/**
 * The image writeImage(tree) would write, from the base's bytes, or why not. `refOf` tells which
 * inodes of `tree` are the base's, unchanged with all below them (by their nid in the base).
 */
export function spliceImage(base: SpliceBase, tree: Tree, refOf: (inode: Inode) => number | undefined): Spliced | string {
  let root: Work;
  try {
    root = rewrite(tree, 0, true, refOf);
  } catch (e) {
    if (e === NEEDS_VERSION_1) return 'a source whiteout (composefs version 1)';
    if (e === NEEDS_FULL_LAYOUT) return 'a hardlink to a base inode';
    throw e;
  }
  const img = base.image;
  const { minSec, minNsec } = base;

  // The planned inodes: xattrs encoded, each pair counted. A pair the base's table lacks may be on
  // an unchanged inode too (inline): the scan of the base below looks for those.
  const names = new Map<ByteString, NameInfo>();
  const plannedWorks: Work[] = [];
  const plannedCount = new Map<string, number>(); // pair -> planned inodes with it
  const sample = new Map<string, PlanXattr>(); // pair -> one of them (a new shared entry is encoded from it)
  const suspects = new Map<number, string[]>(); // pairHint -> pairs
  const suspectBits = new Uint8Array(65536); // by quickHint: most entries are told apart here, without a Map lookup
  let acl = false;
  let plannedAtMin = 0;
  const stack: Work[] = [root];
  while (stack.length > 0) {
    const w = stack.pop()!;
    const p = w.plan;
    if (p.ref >= 0) continue;
    plannedWorks.push(w);
    if (p.mtimeSec < minSec || (p.mtimeSec === minSec && p.mtimeNsec < minNsec)) return 'an mtime below the image minimum';
    if (p.mtimeSec === minSec && p.mtimeNsec === minNsec) plannedAtMin++;
    if ((p.mode & S_IFMT) !== S_IFDIR && p.nlink > 1) return 'a hardlink';
    encodeXattrs(p.xattrs, names);
    if (hasAcl(p)) acl = true;
    for (const x of p.xattrs) {
      const key = pairKey(x.index, byteString(x.suffix), byteString(x.value));
      const seen = plannedCount.get(key);
      plannedCount.set(key, (seen ?? 0) + 1);
      if (seen !== undefined || base.tableKeys.has(key)) continue;
      sample.set(key, x);
      const filter = pairHint(x.value, x.index, x.suffix.length, 0, x.value.length);
      suspectBits[quickHint(x.value, x.index, x.suffix.length, 0, x.value.length)] = 1;
      const list = suspects.get(filter);
      if (list) list.push(key);
      else suspects.set(filter, [key]);
    }
    if (w.children) for (const c of w.children) stack.push(c.work);
  }

  // BFS, as layout() walks: the queue, and what the base's inodes in it hold of the table.
  const capacity = base.count + plannedWorks.length;
  const qK = new Int32Array(capacity).fill(-1); // the base inode at each queue place, -1: planned
  const qWork: Array<Work | undefined> = new Array(capacity);
  const qParent = new Int32Array(capacity);
  const qNid = new Float64Array(capacity);
  const qPath: Array<ByteString | undefined> = new Array(capacity);
  const placed = new Uint8Array(base.count);
  const proxies = new Map<number, PlanNode>(); // k -> the node a planned directory's dirent holds for it
  const proxied = new Uint8Array(base.count); // (the Map is looked up only where this says so)
  const attached: Array<{ path: ByteString; nid: number; inode: Inode }> = [];
  const plannedList: Array<{ path: ByteString; node: PlanNode }> = [];
  const slots = base.tableOffsets.length ? base.tableOffsets[base.tableOffsets.length - 1]! / 4 + 1 : 0;
  const uses = new Int32Array(slots); // by table offset / 4: unchanged inodes referring to the entry
  const holder = new Int32Array(slots).fill(-1); // one of them
  const inlineHolders = new Map<string, number[]>(); // a pair new to the table -> unchanged inodes with it inline
  const xattrStartShift = Math.floor(base.tableStart / EROFS_BLKSIZ) * EROFS_BLKSIZ - base.tableStart; // id * 4 + this = table offset
  let qLen = 1;
  qWork[0] = root;
  qPath[0] = '/';
  let atMin = plannedAtMin;
  let stubs = 0;
  let refused: string | undefined;
  const enqueueBase = (nid: number, parent: number): number => {
    const k = nid >= 0 && nid < base.kOf.length ? base.kOf[nid]! : -1;
    if (k < 0) refused = `a dirent names no inode (nid ${nid})`;
    else if (placed[k]) refused = 'an inode met twice';
    else {
      placed[k] = 1;
      qK[qLen] = k;
      qParent[qLen] = parent;
      qLen++;
    }
    return k;
  };
  for (let qi = 0; qi < qLen && refused === undefined; qi++) {
    const k = qK[qi]!;
    if (k < 0) {
      const w = qWork[qi]!;
      const p = w.plan;
      p.ino = qi;
      const path = qPath[qi]!;
      if (p.source === undefined) stubs++;
      else plannedList.push({ path, node: p });
      if ((p.mode & S_IFMT) !== S_IFDIR) continue;
      const prefix = path === '/' ? '/' : `${path}/`;
      for (const c of direntsOf(w, qi === 0 ? p : qWork[qParent[qi]!]!.plan)) {
        if (c.node.ref >= 0) {
          const ck = enqueueBase(c.node.ref, qi);
          if (ck >= 0) {
            proxies.set(ck, c.node);
            proxied[ck] = 1;
            attached.push({ path: prefix + c.name, nid: c.node.ref, inode: c.node.source! });
          }
        } else {
          qWork[qLen] = c.work;
          qParent[qLen] = qi;
          qPath[qLen] = prefix + c.name;
          qLen++;
        }
      }
      continue;
    }
    if ((base.mode[k]! & S_IFMT) === S_IFDIR) forEachDirent(base, k, (at, dot) => {
      if (refused === undefined && dot === 0) enqueueBase(lo(img, at), qi);
    });
    atMin += base.atMin[k]!;
    const o = base.offset[k]!;
    const xattrs = base.head[k]! - ((u16(img, o) & 1) === 1 ? E.sizeof : I.sizeof);
    if (xattrs === 0) continue;
    const body = o + base.head[k]! - xattrs;
    const shared = img[body + XH.h_shared_count.at]!;
    for (let i = 0; i < shared; i++) {
      const at = u32(img, body + XH.h_shared_xattrs.at + 4 * i) * 4 + xattrStartShift;
      if (at < 0 || at / 4 >= slots) { refused = 'a shared xattr id outside the table'; break; }
      uses[at / 4]++;
      holder[at / 4] = k;
    }
    if (suspects.size === 0) continue;
    for (let e = body + XH.sizeof + 4 * shared; e + XE.sizeof <= body + xattrs; ) {
      const nameLen = img[e]!;
      const valueLen = u16(img, e + XE.e_value_size.at);
      const keys = suspectBits[quickHint(img, img[e + 1]!, nameLen, e + XE.sizeof + nameLen, valueLen)] === 1 ? suspects.get(pairHint(img, img[e + 1]!, nameLen, e + XE.sizeof + nameLen, valueLen)) : undefined;
      if (keys) {
        const key = pairKey(img[e + 1]!, img.toString('latin1', e + XE.sizeof, e + XE.sizeof + nameLen), img.toString('latin1', e + XE.sizeof + nameLen, e + XE.sizeof + nameLen + valueLen));
        if (keys.includes(key)) {
          const list = inlineHolders.get(key);
          if (list) list.push(k);
          else inlineHolders.set(key, [k]);
        }
      }
      e += roundUp(XE.sizeof + nameLen + valueLen, 4);
    }
  }
  if (refused !== undefined) return refused;
  if (atMin === 0) return 'no inode is left at the image minimum mtime';

  // The shared table after the change: every pair on two inodes or more (layout.ts). A pair that
  // joins or leaves it changes the xattr body of the unchanged inodes that hold it.
  const kept: TableEntry[] = [];
  const dropped = new Set<number>(); // table offsets
  let changed = false;
  for (let i = 0; i < base.tableOffsets.length; i++) {
    const at = base.tableOffsets[i]!;
    if (uses[at / 4]! + (plannedCount.get(base.tableKeyList[i]!) ?? 0) >= 2) {
      kept.push(tableEntry(base, i));
    } else {
      dropped.add(at);
      changed = true;
    }
  }
  const joining: TableEntry[] = [];
  for (const [key, x] of sample) {
    if ((plannedCount.get(key) ?? 0) + (inlineHolders.get(key)?.length ?? 0) < 2) continue;
    const bytes = Buffer.alloc(roundUp(XE.sizeof + x.suffix.length + x.value.length, 4));
    putField(bytes, 0, XE.e_name_len, x.suffix.length);
    putField(bytes, 0, XE.e_name_index, x.index);
    putField(bytes, 0, XE.e_value_size, x.value.length);
    bytes.set(x.suffix, XE.sizeof);
    bytes.set(x.value, XE.sizeof + x.suffix.length);
    joining.push({ name: x.name, value: Buffer.from(x.value), bytes, key });
    changed = true;
  }
  let table = base.table;
  const sharedAt = new Map<string, number>(); // pair -> offset in the new table
  const remap = new Int32Array(slots).fill(-1); // old table offset / 4 -> new offset
  const bodies = new Map<number, NewBody>(); // k -> its new xattr body
  if (!changed) {
    for (let i = 0; i < base.tableOffsets.length; i++) {
      sharedAt.set(base.tableKeyList[i]!, base.tableOffsets[i]!);
      remap[base.tableOffsets[i]! / 4] = base.tableOffsets[i]!;
    }
  } else {
    const entries = [...kept, ...joining].sort(tableOrder);
    table = Buffer.concat(entries.map((e) => e.bytes));
    let at = 0;
    for (const e of entries) {
      sharedAt.set(e.key, at);
      const old = base.tableKeys.get(e.key);
      if (old !== undefined) remap[old / 4] = at;
      at += e.bytes.length;
    }
    // unchanged inodes whose body changes: the holders of a pair that joins, the last holder of one that leaves
    const rewritten = new Set<number>();
    for (const e of joining) for (const k of inlineHolders.get(e.key) ?? []) rewritten.add(k);
    for (const at of dropped) if (uses[at / 4] === 1) rewritten.add(holder[at / 4]!);
    for (const k of rewritten) {
      const body = newBody(base, k, sharedAt, xattrStartShift);
      if (typeof body === 'string') return body;
      bodies.set(k, body);
    }
  }
  // the planned inodes' xattrs: shared or inline, as in the new table
  for (const w of plannedWorks) {
    let n = 0;
    for (const x of w.plan.xattrs) {
      const at = sharedAt.get(pairKey(x.index, byteString(x.suffix), byteString(x.value)));
      if (at === undefined) { x.sharedOffset = -1; continue; }
      if (n++ >= EROFS_XATTR_LONG_PREFIX) return 'too many shared xattrs on one inode';
      x.sharedOffset = at;
    }
  }

  // Places, in queue order: planned inodes by the writer, the base's from the index.
  const newNid = new Float64Array(base.count);
  let pos = FIRST_SLOT;
  let dataBlocks = 0;
  let totalSize = 0;
  for (let qi = 0; qi < qLen; qi++) {
    const k = qK[qi]!;
    if (k < 0) {
      const p = qWork[qi]!.plan;
      pos = placeNode(p, pos, minSec, minNsec, 0);
      qNid[qi] = p.nid;
      dataBlocks += p.nBlocks;
      if ((p.mode & S_IFMT) === S_IFREG) totalSize += p.size;
      continue;
    }
    const type = base.mode[k]! & S_IFMT;
    const body = bodies.size > 0 ? bodies.get(k) : undefined;
    const h = body ? base.head[k]! - xattrBodySize(base, k) + body.size : base.head[k]!;
    const t = base.tail[k]!;
    pos = placeAt(roundUp(pos, EROFS_SLOTSIZE), h, t, type === S_IFLNK, base.size[k]!);
    const nid = pos / EROFS_SLOTSIZE;
    newNid[k] = nid;
    qNid[qi] = nid;
    if (proxied[k]) proxies.get(k)!.nid = nid;
    pos += h + t;
    dataBlocks += base.blocks[k]!;
    if (type === S_IFREG) totalSize += base.size[k]!;
  }

  const inodesEnd = roundUp(pos, EROFS_SLOTSIZE);
  if (qNid[0]! >= 0xffff) return 'the root nid does not fit 16 bits';
  const tableStart = inodesEnd;
  const sharedBase = tableStart % EROFS_BLKSIZ;
  const dataStart = roundUp(tableStart + table.length, EROFS_BLKSIZ);
  const newBlk = new Float64Array(base.count);
  let blk = dataStart / EROFS_BLKSIZ;
  for (let qi = 0; qi < qLen; qi++) {
    const k = qK[qi]!;
    if (k >= 0) {
      if (base.blocks[k]! > 0) { newBlk[k] = blk; blk += base.blocks[k]!; }
    } else {
      const p = qWork[qi]!.plan;
      if (p.nBlocks > 0) { p.blkaddr = blk; blk += p.nBlocks; }
    }
  }
  if (blk > 0xffffffff) return 'the image would be larger than 2^32 blocks';

  // Write: header, inodes in order, the table, data blocks in order.
  const out = new Out(blk * EROFS_BLKSIZ);
  const buf = out.buf;
  writeHeader(out, { hasAcl: acl, composefsVersion: 0, rootNid: qNid[0]!, inodes: qLen, minMtimeSec: minSec, minMtimeNsec: minNsec, blocks: blk, inodesEnd });
  /** Rewrites the nids of the dirents in `[at, at + length)` of the new image for queue place qi. */
  const fixDirents = (at: number, length: number, qi: number): void => {
    const count = u16(buf, at + DIRENT.nameoff.at) / EROFS_DIRENT_SIZE;
    for (let i = 0; i < count; i++) {
      const d = at + i * EROFS_DIRENT_SIZE;
      const dot = dots(buf, at, at + length, i, count);
      putField(buf, d, DIRENT.nid, dot === 1 ? qNid[qi]! : dot === 2 ? qNid[qParent[qi]!]! : newNid[base.kOf[lo(buf, d)]!]!);
    }
  };
  const moved = changed || base.tableStart % EROFS_BLKSIZ !== sharedBase; // shared ids change
  for (let qi = 0; qi < qLen; qi++) {
    const k = qK[qi]!;
    if (k < 0) {
      const p = qWork[qi]!.plan;
      out.pos = p.nid * EROFS_SLOTSIZE - p.ipad;
      writeInode(out, p, sharedBase);
      continue;
    }
    const from = base.offset[k]!;
    const at = newNid[k]! * EROFS_SLOTSIZE;
    const oldHead = base.head[k]!;
    const t = base.tail[k]!;
    const body = bodies.size > 0 ? bodies.get(k) : undefined;
    let h = oldHead;
    if (body) {
      // the inode as it was, with its new xattr body (i_xattr_icount follows its size)
      const isize = oldHead - xattrBodySize(base, k);
      img.copy(buf, at, from, from + isize);
      h = isize + body.size;
      putField(buf, at, I.i_xattr_icount, (body.size - XH.sizeof) / 4 + 1);
      putField(buf, at + isize, XH.h_name_filter, body.filter);
      putField(buf, at + isize, XH.h_shared_count, body.shared.length);
      body.shared.forEach((off, i) => putField(buf, at + isize + 4 * i, XH.h_shared_xattrs, (sharedBase + off) / 4));
      body.inline.copy(buf, at + isize + XH.sizeof + 4 * body.shared.length);
      img.copy(buf, at + h, from + oldHead, from + oldHead + t);
    } else {
      img.copy(buf, at, from, from + oldHead + t);
      const xattrs = xattrBodySize(base, k);
      if (xattrs > 0 && moved) {
        const start = at + oldHead - xattrs;
        for (let i = 0; i < buf[start + XH.h_shared_count.at]!; i++) {
          const id = start + XH.h_shared_xattrs.at + 4 * i;
          putField(buf, id - XH.h_shared_xattrs.at, XH.h_shared_xattrs, (sharedBase + remap[(u32(buf, id) * 4 + xattrStartShift) / 4]!) / 4);
        }
      }
    }
    putField(buf, at, I.i_ino, qi);
    if (base.blocks[k]! > 0) putField(buf, at, I.i_u, newBlk[k]!);
    if ((base.mode[k]! & S_IFMT) === S_IFDIR && t > 0) fixDirents(at + h, t, qi);
  }
  buf.set(table, tableStart);
  for (let qi = 0; qi < qLen; qi++) {
    const k = qK[qi]!;
    if (k < 0) {
      const p = qWork[qi]!.plan;
      if (p.nBlocks > 0) {
        out.pos = p.blkaddr * EROFS_BLKSIZ;
        writeBlocks(out, p);
      }
      continue;
    }
    const n = base.blocks[k]!;
    if (n === 0) continue;
    const at = newBlk[k]! * EROFS_BLKSIZ;
    img.copy(buf, at, base.blkaddr[k]! * EROFS_BLKSIZ, (base.blkaddr[k]! + n) * EROFS_BLKSIZ);
    if ((base.mode[k]! & S_IFMT) === S_IFDIR) for (let b = 0; b < n; b++) fixDirents(at + b * EROFS_BLKSIZ, EROFS_BLKSIZ, qi);
  }
  return { image: buf, planned: plannedList, attached, files: qLen - stubs, totalSize };
}

/** Bytes of base inode k's xattr body. */
const xattrBodySize = (base: SpliceBase, k: number): number => base.head[k]! - ((u16(base.image, base.offset[k]!) & 1) === 1 ? E.sizeof : I.sizeof);

/**
 * Base inode k's xattr body when the shared table is `sharedAt` (pair -> offset): its xattrs in
 * name order, as layout.ts splits them (in the table, up to EROFS_XATTR_LONG_PREFIX of them: shared;
 * the rest inline), its name filter as it was (the names do not change).
 */
function newBody(base: SpliceBase, k: number, sharedAt: Map<string, number>, xattrStartShift: number): NewBody | string {
  const img = base.image;
  const size = xattrBodySize(base, k);
  const body = base.offset[k]! + base.head[k]! - size;
  const items: TableEntry[] = [];
  const count = img[body + XH.h_shared_count.at]!;
  for (let i = 0; i < count; i++) {
    const at = u32(img, body + XH.h_shared_xattrs.at + 4 * i) * 4 + xattrStartShift;
    const j = base.tableOffsets.indexOf(at);
    if (j < 0) return 'a shared xattr id outside the table';
    items.push(tableEntry(base, j));
  }
  for (let e = body + XH.sizeof + 4 * count; e + XE.sizeof <= body + size; ) {
    const len = roundUp(XE.sizeof + img[e]! + u16(img, e + XE.e_value_size.at), 4);
    items.push(storedEntry(img, e, len));
    e += len;
  }
  items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const shared: number[] = [];
  const inline: Buffer[] = [];
  for (const item of items) {
    const at = sharedAt.get(item.key);
    if (at === undefined) inline.push(item.bytes);
    else if (shared.length >= EROFS_XATTR_LONG_PREFIX) return 'too many shared xattrs on one inode';
    else shared.push(at);
  }
  const inlineBytes = Buffer.concat(inline);
  return { filter: u32(img, body + XH.h_name_filter.at), shared, inline: inlineBytes, size: roundUp(XH.sizeof + 4 * shared.length + inlineBytes.length, 4) };
}

/** Entry j of the base's shared table (up to the next one, or the table's end). */
function tableEntry(base: SpliceBase, j: number): TableEntry {
  const at = base.tableOffsets[j]!;
  return storedEntry(base.table, at, (j + 1 < base.tableOffsets.length ? base.tableOffsets[j + 1]! : base.table.length) - at);
}

/** The stored xattr entry of `length` bytes (padding included) at `at` in `b`. */
function storedEntry(b: Buffer, at: number, length: number): TableEntry {
  const nameLen = b[at + XE.e_name_len.at]!;
  const index = b[at + XE.e_name_index.at]!;
  const suffix = b.toString('latin1', at + XE.sizeof, at + XE.sizeof + nameLen);
  const value = b.subarray(at + XE.sizeof + nameLen, at + XE.sizeof + nameLen + u16(b, at + XE.e_value_size.at));
  return { name: storedName(index, suffix), value, key: pairKey(index, suffix, byteString(value)), bytes: b.subarray(at, at + length) };
}

/**
 * Where the writer places an inode whose head (inode and xattr body) is `h` bytes and whose tail
 * is decided (`t` bytes), from the slot-aligned `pos`: tailPadding's rules (a symlink's inode and
 * target, as first sized, share a block if they can; a tail does not cross a block).
 */
function placeAt(pos: number, h: number, t: number, symlink: boolean, isize: number): number {
  if (symlink) return Math.floor(pos / EROFS_BLKSIZ) !== Math.floor((pos + h + isize - 1) / EROFS_BLKSIZ) ? roundUp(pos, EROFS_BLKSIZ) : pos;
  const room = EROFS_BLKSIZ - ((pos + h) % EROFS_BLKSIZ);
  return t > 0 && room < t ? pos + roundUp(room, EROFS_SLOTSIZE) : pos;
}

/** A padding slot: 32 zero bytes. */
function zeroSlot(b: Buffer, at: number): boolean {
  for (let i = 0; i < EROFS_SLOTSIZE; i += 4) if (u32(b, at + i) !== 0) return false;
  return true;
}

/** The low 32 bits of a dirent's nid (nids of an image below 2^32 bytes fit them). */
const lo = (b: Buffer, dirent: number): number => u32(b, dirent + DIRENT.nid.at);

/** 0 for an ordinary name, 1 for `.`, 2 for `..`: dirent i of the `count` in the chunk [start, end). */
function dots(b: Buffer, start: number, end: number, i: number, count: number): number {
  const name = start + u16(b, start + i * EROFS_DIRENT_SIZE + DIRENT.nameoff.at);
  if (b[name] !== 0x2e) return 0;
  const length = direntNameEnd(b, start, end, i, count) - name;
  return length === 1 ? 1 : length === 2 && b[name + 1] === 0x2e ? 2 : 0;
}

/** Calls `visit` with each dirent of base directory k (its offset, and `dots`), blocks first, then the tail. */
function forEachDirent(base: SpliceBase, k: number, visit: (at: number, dot: number) => void): void {
  const img = base.image;
  const chunk = (start: number, length: number): void => {
    const count = u16(img, start + DIRENT.nameoff.at) / EROFS_DIRENT_SIZE;
    for (let i = 0; i < count; i++) visit(start + i * EROFS_DIRENT_SIZE, dots(img, start, start + length, i, count));
  };
  for (let b = 0; b < base.blocks[k]!; b++) chunk((base.blkaddr[k]! + b) * EROFS_BLKSIZ, EROFS_BLKSIZ);
  if (base.tail[k]! > 0) chunk(base.offset[k]! + base.head[k]!, base.tail[k]!);
}
