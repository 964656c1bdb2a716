// Pass one of the writer: turn a Tree into a Plan, every byte position decided, nothing written.
// Rules follow mkcomposefs 1.0.8 (libcomposefs/lcfs-writer-erofs.c) so that `emit(layout(tree))`
// is byte-identical to its output for the same tree:
//   - rewrite for overlayfs: escape source `trusted.overlay.*` xattrs, add metacopy (+ digest) and
//     redirect to external files, turn source whiteouts (char 0/0) into escaped regular files,
//     mark the root opaque and add the 256 `00`-`ff` whiteout stubs;
//   - BFS inode order over strcmp-sorted children (`.` and `..` included);
//   - shared xattr table for (name, value) pairs used by more than one inode;
//   - compact inodes when mtime = the minimum, ids and nlink fit 16 bits and size 32 bits;
//   - tail data (dirents, inline content, symlink target, chunk map) packed after the inode unless
//     it would straddle a block, with mkcomposefs' padding and fallback-to-block rules.
//
// Public surface: layout, Plan, PlanNode, PlanDirent, PlanXattr, WriteOptions; for splice.ts, which
// lays out a tree that is mostly a base image with the same rules: rewrite (NEEDS_VERSION_1,
// NEEDS_FULL_LAYOUT), Work, Child, direntsOf, encodeXattrs, NameInfo, placeNode, hasAcl.
import { StratumError } from '../error.js';
import {
  EROFS_BLKSIZ, EROFS_DIRENT_SIZE, EROFS_INODE_COMPACT_SIZE,
  EROFS_INODE_EXTENDED_SIZE, EROFS_SLOTSIZE, EROFS_SUPER_BLOCK_SIZE, EROFS_SUPER_OFFSET,
  EROFS_XATTR_FILTER_BITS, EROFS_XATTR_FILTER_SEED, EROFS_XATTR_IBODY_HEADER_SIZE, EROFS_XATTR_LONG_PREFIX,
  LCFS_INLINE_CONTENT_MAX, LCFS_MAX_NONINLINE_CHUNKS, OVERLAY_ESCAPE_PREFIX, OVERLAY_ESCAPED_OPAQUE, OVERLAY_ESCAPED_WHITEOUT,
  OVERLAY_ESCAPED_WHITEOUTS, OVERLAY_METACOPY, OVERLAY_OPAQUE, OVERLAY_PREFIX, OVERLAY_REDIRECT, OVERLAY_USER_OPAQUE,
  OVERLAY_USER_WHITEOUT, OVERLAY_USER_WHITEOUTS, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, S_IFIFO,
  XATTR_PREFIXES, chunkBits as chunkBitsOf, isWhiteout, xattrEntrySize,
} from './erofs.js';
import { type ByteString, type Inode, type Tree, bytesOf } from './tree.js';
import { xxh32 } from './xxhash.js';

export interface WriteOptions {
  /** composefs_version to write at least (mkcomposefs --min-version, default 0). */
  minVersion?: number;
  /** Highest composefs_version the writer may bump to (default 1; source whiteouts need 1). */
  maxVersion?: number;
}

export interface PlanXattr {
  name: ByteString;
  value: Uint8Array;
  /** e_name_index and the name without its prefix. */
  index: number;
  suffix: Uint8Array;
  /** Byte offset in the shared table, or -1 when stored in the inode. */
  sharedOffset: number;
  /** The name's number in this layout and its name-filter bit (set with index and suffix). */
  nameId: number;
  filterBit: number;
}

export interface PlanDirent {
  /** A byte string: its length is its length in bytes. */
  name: ByteString;
  node: PlanNode;
}

export interface PlanNode {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtimeSec: number;
  mtimeNsec: number;
  size: number;
  rdev: number;
  content: Uint8Array | undefined;
  symlink: Uint8Array | undefined;
  external: boolean;
  chunkBits: number;
  chunkCount: number;
  xattrs: PlanXattr[];
  /** Directories: all entries incl. `.` and `..`, strcmp-sorted. */
  dirents: PlanDirent[] | undefined;
  // Decided by the layout:
  ino: number;
  nid: number;
  compact: boolean;
  ipad: number;
  nBlocks: number;
  tailSize: number;
  xattrSize: number;
  nShared: number;
  nameFilter: number;
  /** First data block, when nBlocks > 0. */
  blkaddr: number;
  /** The tree inode this node was made from (none for the root's whiteout stubs): lets a commit
   * recognise a subtree it already knows the Merkle leaves of (head/build.ts). */
  source: Inode | undefined;
  /** splice.ts only: the nid, in the base image, of the inode this node stands for (-1: none). */
  ref: number;
}

export interface Plan {
  nodes: PlanNode[];
  composefsVersion: number;
  hasAcl: boolean;
  minMtimeSec: number;
  minMtimeNsec: number;
  inodesEnd: number;
  sharedXattrs: PlanXattr[];
  sharedXattrSize: number;
  dataBlockStart: number;
  nDataBlocks: number;
  /** Total image size in bytes. */
  size: number;
}

function bad(why: string): never {
  throw new StratumError('CORRUPT_IMAGE', `cannot write image: ${why}`);
}

const roundUp = (x: number, to: number): number => Math.ceil(x / to) * to;
const byName = (a: { name: ByteString }, b: { name: ByteString }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

function validMode(mode: number): boolean {
  const t = mode & S_IFMT;
  return mode >= 0 && mode <= 0xffff && (t === S_IFREG || t === S_IFDIR || t === S_IFLNK || t === S_IFBLK || t === S_IFCHR || t === S_IFSOCK || t === S_IFIFO);
}


/**
 * Working node while rewriting. Its xattrs are its plan's (a few per inode: a list searched by
 * name, so `set` replaces, like lcfs_node_set_xattr; prefix index and suffix are filled in later).
 */
export interface Work {
  plan: PlanNode;
  /** Directories only. Each entry becomes the dirent itself (no second object per entry). */
  children: Child[] | undefined;
  /** lcfs' running worst-case xattr size estimate; mkcomposefs refuses a set beyond XATTR_BUDGET. */
  budget: number;
}

/** A directory entry while rewriting, and later the very object its plan's dirents hold. */
export interface Child extends PlanDirent {
  work: Work;
  hardlink: boolean;
}

const child = (name: ByteString, work: Work, hardlink: boolean): Child => ({ name, node: work.plan, work, hardlink });

const XATTR_BUDGET = 0xffff >> 1;

/** lcfs_node_set_xattr: replace any value of that name, refuse to grow past the budget. */
function setXattr(work: Work, name: ByteString, value: Uint8Array): void {
  const xattrs = work.plan.xattrs;
  const i = findXattr(xattrs, name);
  if (i >= 0) {
    const old = xattrs[i]!.value;
    xattrs.splice(i, 1);
    work.budget = xattrs.length > 0 ? work.budget - (7 + name.length + old.length) : 0;
  }
  // lcfs subtracts the current (possibly escaped, longer) name length on replace, so its size_t
  // estimate can wrap below zero; the comparison below then fails just as the C one does.
  const sum = work.budget + 7 + name.length + value.length + (xattrs.length === 0 ? 12 : 0);
  if (sum > XATTR_BUDGET || sum < 0) bad(`xattrs of one inode exceed mkcomposefs' size estimate limit (${XATTR_BUDGET})`);
  work.budget = sum;
  xattrs.push(newXattr(name, value));
}

function findXattr(xattrs: PlanXattr[], name: ByteString): number {
  for (let i = 0; i < xattrs.length; i++) if (xattrs[i]!.name === name) return i;
  return -1;
}

const newXattr = (name: ByteString, value: Uint8Array): PlanXattr => ({ name, value, index: 0, suffix: EMPTY, sharedOffset: -1, nameId: 0, filterBit: 0 });

const EMPTY = new Uint8Array(0);
const Y = Uint8Array.of(0x79);
const X = Uint8Array.of(0x78);

function newPlanNode(n: Inode): PlanNode {
  const type = n.mode & S_IFMT;
  const external = type === S_IFREG && n.size > 0 && n.content === undefined;
  let chunkBits = 0;
  let chunkCount = 0;
  if (external) {
    chunkBits = chunkBitsOf(n.size);
    chunkCount = Math.ceil(n.size / 2 ** chunkBits);
    if (chunkCount > LCFS_MAX_NONINLINE_CHUNKS) bad(`file of ${n.size} bytes is too large`);
  }
  if (type === S_IFREG && n.content !== undefined && (n.content.length !== n.size || n.content.length > LCFS_INLINE_CONTENT_MAX)) {
    bad('inline content must be 1..5000 bytes and match the size');
  }
  if (type === S_IFLNK && !n.symlinkTarget) bad('symlink without target');
  return {
    mode: n.mode, uid: n.uid, gid: n.gid, nlink: n.nlink, mtimeSec: n.mtimeSec, mtimeNsec: n.mtimeNsec,
    size: type === S_IFLNK ? n.symlinkTarget!.length : n.size,
    rdev: type === S_IFCHR || type === S_IFBLK ? n.rdev : 0,
    content: type === S_IFREG && n.content && n.content.length > 0 ? n.content : undefined,
    symlink: type === S_IFLNK ? bytesOf(n.symlinkTarget!) : undefined,
    external, chunkBits, chunkCount, xattrs: [], dirents: undefined,
    ino: 0, nid: 0, compact: false, ipad: 0, nBlocks: 0, tailSize: 0, xattrSize: 0, nShared: 0, nameFilter: 0, blkaddr: 0,
    source: n, ref: -1,
  };
}

/** A whiteout stub of the root: made by the writer, from no inode of the tree. */
function stubNode(n: Inode): PlanNode {
  const p = newPlanNode(n);
  p.source = undefined;
  return p;
}

/** A base image's inode, placed by splice.ts from the image: the plan knows only its type. */
function refNode(n: Inode, ref: number): PlanNode {
  return {
    mode: n.mode, uid: 0, gid: 0, nlink: 1, mtimeSec: 0, mtimeNsec: 0, size: 0, rdev: 0, content: undefined, symlink: undefined,
    external: false, chunkBits: 0, chunkCount: 0, xattrs: [], dirents: undefined,
    ino: 0, nid: 0, compact: false, ipad: 0, nBlocks: 0, tailSize: 0, xattrSize: 0, nShared: 0, nameFilter: 0, blkaddr: 0,
    source: n, ref,
  };
}

/** Thrown by `rewrite` given `refOf` at a hardlink entry to a base inode: splice.ts cannot place those. */
export const NEEDS_FULL_LAYOUT = Symbol('needs the full layout');

/** Thrown by `rewrite` at the first source whiteout when the version must rise to 1 first. */
export const NEEDS_VERSION_1 = Symbol('needs composefs version 1');

/**
 * Builds working nodes for every primary entry and applies the overlayfs rewrite. A source
 * whiteout needs version 1 when `bump` allows it: the walk then stops (NEEDS_VERSION_1) and the
 * caller starts again at version 1; trees without whiteouts (nearly all) are walked once.
 * `refOf` (splice.ts) names the inodes that are a base image's, unchanged with all below them:
 * each becomes a node with only `ref`, `mode` and `source` set, and is not walked.
 */
export function rewrite(tree: Tree, version: number, bump: boolean, refOf?: (inode: Inode) => number | undefined): Work {
  const byInode = new Map<Inode, Work>();
  const links: Array<{ dir: Work; name: ByteString; inode: Inode }> = [];

  const make = (inode: Inode, parent: Work | undefined): Work => {
    if (!validMode(inode.mode)) bad(`invalid mode ${inode.mode.toString(8)}`);
    if (byInode.has(inode)) bad('an inode has more than one primary entry (mark the others as hardlinks)');
    const work: Work = { plan: newPlanNode(inode), children: inode.children || (inode.mode & S_IFMT) === S_IFDIR ? [] : undefined, budget: 0 };
    byInode.set(inode, work);
    // Escape the source's overlay xattrs so overlayfs passes them through instead of obeying them.
    // The budget starts at 0: lcfs writes a deep clone of the tree, and the clone does not carry
    // the source's size estimate over.
    const p = work.plan;
    for (const x of inode.xattrs) {
      const name = x.name.startsWith(OVERLAY_PREFIX) ? OVERLAY_ESCAPE_PREFIX + x.name.slice(OVERLAY_PREFIX.length) : x.name;
      if (findXattr(p.xattrs, name) >= 0) bad(`duplicate xattr ${JSON.stringify(x.name)}`);
      p.xattrs.push(newXattr(name, x.value));
    }
    if (p.external) {
      let metacopy: Uint8Array = EMPTY;
      if (inode.digest !== undefined) {
        const m = Buffer.allocUnsafe(36);
        m[0] = 0; m[1] = 36; m[2] = 0; m[3] = 1; // version, length, flags, FS_VERITY_HASH_ALG_SHA256
        if (!putDigest(m, 4, inode.digest)) bad(`bad digest ${inode.digest}`);
        metacopy = m;
      }
      setXattr(work, OVERLAY_METACOPY, metacopy);
      if (inode.payload) {
        const payload = inode.payload;
        const r = Buffer.allocUnsafe(1 + payload.length);
        r[0] = 0x2f; // '/'
        for (let i = 0; i < payload.length; i++) r[1 + i] = payload.charCodeAt(i);
        setXattr(work, OVERLAY_REDIRECT, r);
      }
    }
    if (isWhiteout(inode.mode, inode.rdev)) {
      if (bump) throw NEEDS_VERSION_1;
      // A source whiteout becomes an empty regular file overlayfs shows as-is (escaped).
      p.size = 0;
      p.mode = S_IFREG | (p.mode & ~S_IFMT);
      setXattr(work, OVERLAY_ESCAPED_WHITEOUT, EMPTY);
      setXattr(work, OVERLAY_USER_WHITEOUT, EMPTY);
      if (parent) {
        setXattr(parent, OVERLAY_ESCAPED_WHITEOUTS, EMPTY);
        setXattr(parent, OVERLAY_USER_WHITEOUTS, EMPTY);
        if (version >= 1) {
          setXattr(parent, OVERLAY_ESCAPED_OPAQUE, X);
          setXattr(parent, OVERLAY_USER_OPAQUE, X);
        }
      }
    }
    if (inode.children) {
      if ((inode.mode & S_IFMT) !== S_IFDIR) bad('only directories have children');
      for (const [name, entry] of inode.children) {
        if (name === '' || name === '.' || name === '..' || name.length > 255 || name.includes('/') || name.includes('\0')) bad(`invalid name ${JSON.stringify(name)}`);
        const ref = refOf?.(entry.inode);
        if (ref !== undefined) {
          if (entry.hardlink) throw NEEDS_FULL_LAYOUT;
          work.children!.push(child(name, { plan: refNode(entry.inode, ref), children: undefined, budget: 0 }, false));
          continue;
        }
        if (entry.hardlink) {
          if ((entry.inode.mode & S_IFMT) === S_IFDIR) bad('directories cannot be hardlinked');
          links.push({ dir: work, name, inode: entry.inode });
        } else {
          work.children!.push(child(name, make(entry.inode, work), false));
        }
      }
    }
    return work;
  };

  if ((tree.root.mode & S_IFMT) !== S_IFDIR) bad('the root must be a directory');
  const root = make(tree.root, undefined);
  for (const l of links) {
    const target = byInode.get(l.inode);
    if (!target) bad(`hardlink ${JSON.stringify(l.name)} points at an inode with no primary entry`);
    l.dir.children!.push(child(l.name, target, true));
  }

  setXattr(root, OVERLAY_OPAQUE, Y);
  const names = new Set(root.children!.map((c) => c.name));
  const selinuxAt = findXattr(root.plan.xattrs, 'security.selinux');
  const selinux = selinuxAt >= 0 ? root.plan.xattrs[selinuxAt]!.value : undefined;
  for (let i = 0; i < 256; i++) {
    const name = i.toString(16).padStart(2, '0');
    if (names.has(name)) continue;
    const r = root.plan;
    const stub: Work = {
      plan: stubNode({ mode: S_IFCHR | 0o644, uid: r.uid, gid: r.gid, nlink: 1, mtimeSec: r.mtimeSec, mtimeNsec: r.mtimeNsec, size: 0, rdev: 0, xattrs: [] }),
      children: undefined,
      budget: 0,
    };
    if (selinux) setXattr(stub, 'security.selinux', selinux);
    root.children!.push(child(name, stub, false));
  }
  return root;
}

/**
 * Writes a digest of 64 lowercase hex digits as 32 bytes at `at`; false if it is not one. A plain
 * loop: a RegExp test and Buffer#write per file cost ~150 ms at 100k files.
 */
function putDigest(b: Uint8Array, at: number, s: string): boolean {
  if (s.length !== 64) return false;
  for (let i = 0; i < 32; i++) {
    const hi = nibble(s.charCodeAt(2 * i));
    const lo = nibble(s.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) return false;
    b[at + i] = (hi << 4) | lo;
  }
  return true;
}

/** Value of each lowercase hex digit by char code, -1 for any other char below 128. */
const HEX = new Int8Array(128).fill(-1);
for (let c = 0; c < 16; c++) HEX['0123456789abcdef'.charCodeAt(c)] = c;
const nibble = (c: number): number => (c < 128 ? HEX[c]! : -1);

/** A stored xattr name split into prefix index and suffix, and its name-filter bit: the same few names recur on every inode, so each is worked out once per layout. */
export interface NameInfo { index: number; suffix: Uint8Array; filterBit: number; id: number }

/** Fills in each xattr's prefix index and suffix, and sorts them by name. */
export function encodeXattrs(xattrs: PlanXattr[], names: Map<ByteString, NameInfo>): void {
  for (const x of xattrs) {
    const { name, value } = x;
    if (value.length > 0xffff) bad(`xattr ${JSON.stringify(name)} value too long`);
    let info = names.get(name);
    if (info === undefined) {
      let index = 0;
      let rest = name;
      for (const [prefix, i] of XATTR_PREFIXES) {
        if (name.startsWith(prefix)) { index = i; rest = name.slice(prefix.length); break; }
      }
      if (rest.length > 255) bad(`xattr name ${JSON.stringify(name)} too long`);
      const suffix = bytesOf(rest);
      info = { id: names.size, index, suffix, filterBit: 1 << (xxh32(suffix, (EROFS_XATTR_FILTER_SEED + index) >>> 0) & (EROFS_XATTR_FILTER_BITS - 1)) };
      names.set(name, info);
    }
    x.index = info.index;
    x.suffix = info.suffix;
    x.nameId = info.id;
    x.filterBit = info.filterBit;
  }
  if (xattrs.length === 2) {
    // the common case (an object file's metacopy and redirect): no sort call
    if (xattrs[1]!.name < xattrs[0]!.name) xattrs.reverse();
  } else if (xattrs.length > 2) xattrs.sort(byName);
}

/** FNV-1a over the value, seeded with the name's number in this layout. */
function pairHash(x: PlanXattr): number {
  let h = (0x811c9dc5 ^ x.nameId) >>> 0;
  const v = x.value;
  for (let i = 0; i < v.length; i++) h = Math.imul(h ^ v[i]!, 0x01000193);
  return h >>> 0;
}

function samePair(a: PlanXattr, b: PlanXattr): boolean {
  if (a.name !== b.name || a.value.length !== b.value.length) return false;
  if (a.value === b.value) return true;
  for (let i = 0; i < a.value.length; i++) if (a.value[i] !== b.value[i]) return false;
  return true;
}

const entrySize = (x: PlanXattr): number => xattrEntrySize(x.suffix.length, x.value.length);


export function layout(tree: Tree, options: WriteOptions = {}): Plan {
  let version = options.minVersion ?? 0;
  let maxVersion = options.maxVersion ?? 1;
  if (version > 1 || maxVersion > 1) bad('composefs version above 1');
  if (maxVersion < version) maxVersion = version;
  let root: Work;
  try {
    root = rewrite(tree, version, version < 1 && maxVersion >= 1);
  } catch (e) {
    if (e !== NEEDS_VERSION_1) throw e;
    version = 1;
    root = rewrite(tree, version, false);
  }

  // BFS with sorted children; `.` and `..` join the dirents but not the queue.
  const nodes: PlanNode[] = [];
  const queue: Work[] = [root];
  const parents: Work[] = [root];
  let minSec = root.plan.mtimeSec;
  let minNsec = root.plan.mtimeNsec;
  let acl = false;
  const names = new Map<ByteString, NameInfo>();
  for (let qi = 0; qi < queue.length; qi++) {
    const work = queue[qi]!;
    const p = work.plan;
    p.ino = qi;
    nodes.push(p);
    if (p.mtimeSec < minSec || (p.mtimeSec === minSec && p.mtimeNsec < minNsec)) { minSec = p.mtimeSec; minNsec = p.mtimeNsec; }
    encodeXattrs(p.xattrs, names);
    if (hasAcl(p)) acl = true;
    if ((p.mode & S_IFMT) === S_IFDIR) {
      for (const c of direntsOf(work, parents[qi]!.plan)) {
        queue.push(c.work);
        parents.push(work);
      }
    }
  }
  if (nodes.length > 0xffffffff) bad('too many inodes');

  // Shared xattrs: every (name, value) used by more than one inode, in descending canonical order.
  // Pairs are told apart by a hash of name and value and compared on collision, so no key is
  // built per xattr: `first[k]` is the index (in `all`) of the first xattr equal to xattr k, and
  // `count[f]` how many there are, for each first one f.
  const all: PlanXattr[] = [];
  for (const p of nodes) for (const x of p.xattrs) all.push(x);
  const first = new Int32Array(all.length);
  const count = new Int32Array(all.length);
  const chain = new Int32Array(all.length).fill(-1); // the next first-xattr of the same slot
  // Open hashing in a typed array (a Map of 200k numbers was a fifth of the layout): slot ->
  // 1 + the index of the first xattr of a chain, 0 for none.
  const bits = Math.max(4, Math.ceil(Math.log2(all.length + 1)) + 1);
  const slots = new Int32Array(1 << bits);
  const mask = (1 << bits) - 1;
  let nShared = 0;
  for (let k = 0; k < all.length; k++) {
    const x = all[k]!;
    const slot = pairHash(x) & mask;
    let f = slots[slot]! - 1;
    let last = -1;
    while (f >= 0 && !samePair(all[f]!, x)) { last = f; f = chain[f]!; }
    if (f < 0) {
      f = k;
      if (last >= 0) chain[last] = k;
      else slots[slot] = k + 1;
    }
    first[k] = f;
    if (++count[f] === 2) nShared++;
  }
  const shared: PlanXattr[] = [];
  const offsetOf = new Map<PlanXattr, number>();
  if (nShared > 0) {
    for (let k = 0; k < all.length; k++) if (first[k] === k && count[k]! > 1) shared.push(all[k]!);
    shared.sort((a, b) => {
      if (a.name !== b.name) return a.name < b.name ? 1 : -1;
      if (a.value.length !== b.value.length) return b.value.length - a.value.length;
      return Buffer.compare(b.value, a.value);
    });
  }
  let sharedXattrSize = 0;
  for (const x of shared) { offsetOf.set(x, sharedXattrSize); sharedXattrSize += entrySize(x); }
  if (shared.length > 0) {
    let k = 0;
    for (const p of nodes) {
      let n = 0;
      for (const x of p.xattrs) {
        const f = first[k++]!;
        if (n >= EROFS_XATTR_LONG_PREFIX) continue;
        if (count[f]! > 1) { x.sharedOffset = offsetOf.get(all[f]!)!; n++; }
      }
    }
  }

  // Inode positions.
  let pos = EROFS_SUPER_OFFSET + EROFS_SUPER_BLOCK_SIZE;
  const metaStart = pos - (pos % EROFS_BLKSIZ);
  let nDataBlocks = 0;
  for (const p of nodes) {
    pos = placeNode(p, pos, minSec, minNsec, metaStart);
    nDataBlocks += p.nBlocks;
  }
  const inodesEnd = roundUp(pos, EROFS_SLOTSIZE);
  if (nodes[0]!.nid >= 0xffff) bad('root nid does not fit 16 bits');
  const dataBlockStart = roundUp(inodesEnd + sharedXattrSize, EROFS_BLKSIZ);
  let blk = dataBlockStart / EROFS_BLKSIZ;
  for (const p of nodes) {
    if (p.nBlocks > 0) { p.blkaddr = blk; blk += p.nBlocks; }
  }
  if (blk > 0xffffffff) bad('image larger than 2^32 blocks');
  return {
    nodes, composefsVersion: version, hasAcl: acl, minMtimeSec: minSec, minMtimeNsec: minNsec, inodesEnd,
    sharedXattrs: shared, sharedXattrSize, dataBlockStart, nDataBlocks,
    size: dataBlockStart + nDataBlocks * EROFS_BLKSIZ,
  };
}

/**
 * A directory's dirents: its children sorted, `.` and `..` where strcmp puts them, and its nlink
 * (2 + subdirectories). Gives the children to queue (the primary entries) in order.
 */
export function direntsOf(work: Work, parent: PlanNode): Child[] {
  const p = work.plan;
  const kids = work.children!.sort(byName);
  const dirents: PlanDirent[] = new Array(kids.length + 2);
  const queued: Child[] = [];
  let at = 0;
  let dots = 0;
  let subdirs = 0;
  for (let i = 0; i <= kids.length; i++) {
    const c = kids[i];
    while (dots < 2 && (c === undefined || (dots === 0 ? '.' : '..') < c.name)) {
      dirents[at++] = dots === 0 ? { name: '.', node: p } : { name: '..', node: parent };
      dots++;
    }
    if (c === undefined) break;
    dirents[at++] = c;
    if (!c.hardlink) {
      if ((c.node.mode & S_IFMT) === S_IFDIR) subdirs++;
      queued.push(c);
    }
  }
  p.dirents = dirents;
  p.nlink = 2 + subdirs;
  return queued;
}

/** Whether an inode's xattrs make the image record ACLs (the header's HAS_ACL flag). */
export const hasAcl = (p: PlanNode): boolean => findXattr(p.xattrs, 'system.posix_acl_access') >= 0 || findXattr(p.xattrs, 'system.posix_acl_default') >= 0;

/**
 * Places one inode at the first slot from `pos` its tail allows (its xattrs' shared offsets
 * decided): sets its tail, compactness, xattr body, padding and nid; gives the position after it.
 */
export function placeNode(p: PlanNode, pos: number, minSec: number, minNsec: number, metaStart: number): number {
  sizeTail(p);
  p.compact = fitsCompact(p, minSec, minNsec);
  const inodeSize = p.compact ? EROFS_INODE_COMPACT_SIZE : EROFS_INODE_EXTENDED_SIZE;
  let unsharedSize = 0;
  let filter = 0;
  p.nShared = 0;
  for (const x of p.xattrs) {
    if (x.sharedOffset >= 0) p.nShared++;
    else unsharedSize += entrySize(x);
    filter |= x.filterBit;
  }
  p.nameFilter = (~filter) >>> 0;
  p.xattrSize = p.nShared === 0 && unsharedSize === 0 ? 0 : roundUp(EROFS_XATTR_IBODY_HEADER_SIZE + p.nShared * 4 + unsharedSize, 4);
  if (p.xattrSize > 0 && (p.xattrSize - EROFS_XATTR_IBODY_HEADER_SIZE) / 4 + 1 > 0xffff) bad('too many xattrs on one inode');
  const aligned = roundUp(pos, EROFS_SLOTSIZE);
  p.ipad = aligned - pos;
  pos = aligned;
  const extra = tailPadding(p, pos, inodeSize + p.xattrSize);
  p.ipad += extra;
  pos += extra;
  if (p.content && p.nBlocks > 1) bad('inline content does not fit (mkcomposefs refuses this tree too)');
  p.nid = (pos - metaStart) / EROFS_SLOTSIZE;
  pos += inodeSize + p.xattrSize + p.tailSize;
  return pos;
}

/** Data that goes after the inode (tail) vs in whole blocks, before padding adjustments. */
function sizeTail(p: PlanNode): void {
  const type = p.mode & S_IFMT;
  p.nBlocks = 0;
  p.tailSize = 0;
  if (type === S_IFDIR) {
    let blocks = 0;
    let used = 0;
    for (const d of p.dirents!) {
      const len = EROFS_DIRENT_SIZE + d.name.length;
      if (used + len > EROFS_BLKSIZ) { blocks++; used = 0; }
      used += len;
    }
    // Never inline more than half a block.
    if (used > EROFS_BLKSIZ / 2) { blocks++; used = 0; }
    p.nBlocks = blocks;
    p.tailSize = used;
  } else if (type === S_IFLNK) {
    p.tailSize = p.symlink!.length;
  } else if (type === S_IFREG && p.size > 0) {
    if (p.content) {
      p.nBlocks = Math.floor(p.size / EROFS_BLKSIZ);
      p.tailSize = p.size % EROFS_BLKSIZ;
      if (p.tailSize > EROFS_BLKSIZ / 2) { p.nBlocks++; p.tailSize = 0; }
    } else {
      p.tailSize = p.chunkCount * 4;
    }
  }
}

function fitsCompact(p: PlanNode, minSec: number, minNsec: number): boolean {
  if (p.mtimeSec !== minSec || p.mtimeNsec !== minNsec) return false;
  if (p.nlink > 0xffff || p.uid > 0xffff || p.gid > 0xffff) return false;
  const size = (p.mode & S_IFMT) === S_IFDIR ? p.nBlocks * EROFS_BLKSIZ + p.tailSize : p.size;
  return size <= 0xffffffff;
}

/** Padding before the inode so its tail does not cross a block; may move the tail to a block. */
function tailPadding(p: PlanNode, pos: number, nonTail: number): number {
  const total = nonTail + p.tailSize;
  if ((p.mode & S_IFMT) === S_IFLNK) {
    // A symlink keeps inode and target in one block; if they cannot share one, the target moves out.
    if (Math.floor(total / EROFS_BLKSIZ) > 0) { p.nBlocks++; p.tailSize = 0; }
    if (Math.floor(pos / EROFS_BLKSIZ) !== Math.floor((pos + total - 1) / EROFS_BLKSIZ)) return roundUp(pos, EROFS_BLKSIZ) - pos;
    return 0;
  }
  let remainder = EROFS_BLKSIZ - ((pos + nonTail) % EROFS_BLKSIZ);
  if (remainder < p.tailSize) {
    const extra = roundUp(remainder, EROFS_SLOTSIZE);
    remainder = EROFS_BLKSIZ - ((pos + nonTail + extra) % EROFS_BLKSIZ);
    if (p.tailSize <= remainder) return extra;
    p.nBlocks++;
    p.tailSize = 0;
    return roundUp(pos, EROFS_BLKSIZ) - pos;
  }
  return 0;
}
