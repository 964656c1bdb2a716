// The base tree cache (refs/<label>/head.tree): HEAD's base commit as a Tree in a compact form,
// so a full-path commit does not parse the whole base image again. Written by the import that
// creates a HEAD and by every full-path commit, from the very tree the image was written from;
// read back only when its header names the base commit and a sha256 of its body matches, and
// anything unexpected while decoding is a miss: the caller then parses the image, so a bad
// cache costs time, never a wrong commit. docs/commit.md.
//
// Layout after the header: the root inode, then depth first, each directory's entries as
// name, hardlink flag, and either a new inode (tag 0) or the index of one met before (tag 1).
//
// A directory's record (its inode and everything below it) depends on nothing outside it unless
// a hardlink crosses it, so the next commit's cache is mostly the old one: the decoder notes
// where each link-free directory's record lies (CachedTree.spans), and the encoder copies the
// record of every directory the commit left untouched (the merge shares those Inode objects)
// instead of walking it. A commit then encodes only the root and the directories it changed,
// plus one copy of the file; the bytes are those a fresh encoding gives (the tests check both).
//
// Public surface: TREE_CACHE_FILE, CachedTree, readTreeCache, writeTreeCache, encodeTree,
// decodeTree, decodeTreeCache.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { S_IFDIR, S_IFMT } from '../image/erofs.js';
import { type Inode, type Tree, type Xattr, objectPath } from '../image/tree.js';
import { type TmpArea, writeFileAtomic } from '../tmp.js';

export const TREE_CACHE_FILE = 'head.tree';

const MAGIC = 0x31525453; // "STR1"
/** magic u32, commit id (32 bytes), sha256 of the rest (32 bytes). */
const HEADER = 68;
const HAS_CONTENT = 1;
const HAS_DIGEST = 2;
const OWN_PAYLOAD = 4; // a payload other than objectPath(digest)
const HAS_SYMLINK = 8;

class Writer {
  buf: Buffer;
  pos = HEADER;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }
  u8(v: number): void { this.room(1); this.buf[this.pos++] = v; }
  u32(v: number): void { this.room(4); this.buf.writeUInt32LE(v, this.pos); this.pos += 4; }
  f64(v: number): void { this.room(8); this.buf.writeDoubleLE(v, this.pos); this.pos += 8; }
  /** A byte string (a loop: Buffer#write's per-call cost dominates for names this short). */
  str(s: string): void {
    this.u32(s.length);
    this.room(s.length);
    const b = this.buf;
    let at = this.pos;
    for (let i = 0; i < s.length; i++) b[at++] = s.charCodeAt(i);
    this.pos = at;
  }
  bytes(b: Uint8Array): void { this.u32(b.length); this.room(b.length); this.buf.set(b, this.pos); this.pos += b.length; }
}

/**
 * A decoded cache: the tree, and where each link-free directory's record lies in `bytes` (no
 * hardlink entry, no inode met twice, no file with nlink > 1 below it).
 */
export interface CachedTree {
  tree: Tree;
  bytes: Buffer;
  spans: Map<Inode, Span>;
  /** No inode of the tree has nlink > 1 and no entry is a hardlink (seen while decoding): a
   * merge onto it need not walk the tree for hardlink groups (union.ts mergeUpper). */
  linkFree: boolean;
}

interface Span {
  start: number;
  end: number;
  /** Inodes in the record: the index the next inode gets moves on by this many. */
  inodes: number;
}

/** Thrown inside encodeTree when a copy cannot be taken: a hardlink met before its inode. */
const LINKED = Symbol('hardlink outside copied records');

/**
 * The cache file's bytes for commit `id` whose tree is `tree`. Given `previous` (the cache the
 * tree was merged from), the record of each directory it shares with `previous` is copied.
 */
export function encodeTree(id: string, tree: Tree, previous?: CachedTree): Buffer {
  if (previous) {
    try {
      return encodeWith(id, tree, previous);
    } catch (err) {
      if (err !== LINKED) throw err;
    }
  }
  return encodeWith(id, tree, undefined);
}

function encodeWith(id: string, tree: Tree, previous: CachedTree | undefined): Buffer {
  const w = new Writer(previous ? previous.bytes.length + (1 << 16) : 1 << 20);
  const index = new Map<Inode, number>();
  let count = 0; // inodes written or copied so far: the index the next one gets
  const inode = (n: Inode): void => {
    const span = previous?.spans.get(n);
    if (span !== undefined) {
      w.room(span.end - span.start);
      w.pos += previous!.bytes.copy(w.buf, w.pos, span.start, span.end);
      count += span.inodes;
      return;
    }
    index.set(n, count++);
    const isDir = (n.mode & S_IFMT) === S_IFDIR;
    let subdirs = 0;
    if (isDir) for (const e of n.children!.values()) if (!e.hardlink && (e.inode.mode & S_IFMT) === S_IFDIR) subdirs++;
    w.u32(n.mode); w.u32(n.uid); w.u32(n.gid);
    w.u32(isDir ? 2 + subdirs : n.nlink); // what the image records (the writer counts a dir's links)
    w.f64(n.mtimeSec); w.u32(n.mtimeNsec); w.f64(n.size); w.f64(n.rdev);
    const own = n.payload !== undefined && (n.digest === undefined || !isObjectPathOf(n.payload, n.digest));
    w.u8((n.content ? HAS_CONTENT : 0) | (n.digest !== undefined ? HAS_DIGEST : 0) | (own ? OWN_PAYLOAD : 0) | (n.symlinkTarget !== undefined ? HAS_SYMLINK : 0));
    if (n.content) w.bytes(n.content);
    if (n.digest !== undefined) w.str(n.digest);
    if (own) w.str(n.payload!);
    if (n.symlinkTarget !== undefined) w.str(n.symlinkTarget);
    w.u32(n.xattrs.length);
    for (const x of n.xattrs) { w.str(x.name); w.bytes(x.value); }
    if (!isDir) return;
    w.u32(n.children!.size);
    for (const [name, e] of n.children!) {
      // A hardlink whose inode was not written yet may have its primary entry in a copied record
      // (as an inode of nlink 1): one index cannot name it there, so such a tree is encoded afresh.
      if (previous && e.hardlink && !index.has(e.inode)) throw LINKED;
      w.str(name);
      w.u8(e.hardlink ? 1 : 0);
      const known = index.get(e.inode);
      if (known !== undefined) { w.u8(1); w.u32(known); } else { w.u8(0); inode(e.inode); }
    }
  };
  inode(tree.root);
  const file = w.buf.subarray(0, w.pos);
  file.writeUInt32LE(MAGIC, 0);
  file.write(id, 4, 'hex');
  createHash('sha256').update(file.subarray(HEADER)).digest().copy(file, 36);
  return file;
}

/** payload === objectPath(digest), without building the path. */
function isObjectPathOf(payload: string, digest: string): boolean {
  if (payload.length !== digest.length + 1 || payload.charCodeAt(0) !== digest.charCodeAt(0) || payload.charCodeAt(1) !== digest.charCodeAt(1) || payload.charCodeAt(2) !== 0x2f) return false;
  for (let i = 2; i < digest.length; i++) if (payload.charCodeAt(i + 1) !== digest.charCodeAt(i)) return false;
  return true;
}

class Miss extends Error {}

/** The xattrs of every decoded inode that has none: one frozen array, not 100k empty ones. */
const NO_XATTRS = Object.freeze([]) as unknown as Xattr[];

/** The tree in a cache file of commit `id`, or undefined (another commit, damaged, truncated). */
export function decodeTree(buf: Buffer, id: string): Tree | undefined {
  return decodeTreeCache(buf, id)?.tree;
}

/** decodeTree, with what encodeTree needs to copy the records of untouched directories. */
export function decodeTreeCache(buf: Buffer, id: string): CachedTree | undefined {
  if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC || buf.toString('hex', 4, 36) !== id) return undefined;
  if (!createHash('sha256').update(buf.subarray(HEADER)).digest().equals(buf.subarray(36, HEADER))) return undefined;
  let pos = HEADER;
  const need = (n: number): void => { if (pos + n > buf.length) throw new Miss(); };
  const u8 = (): number => { need(1); return buf[pos++]!; };
  const u32 = (): number => { need(4); const v = buf.readUInt32LE(pos); pos += 4; return v; };
  const f64 = (): number => { need(8); const v = buf.readDoubleLE(pos); pos += 8; return v; };
  const str = (): string => { const n = u32(); need(n); const s = buf.toString('latin1', pos, pos + n); pos += n; return s; };
  const bytes = (): Uint8Array => { const n = u32(); need(n); const b = buf.subarray(pos, pos + n); pos += n; return b; };
  const inodes: Inode[] = [];
  const spans = new Map<Inode, Span>();
  let links = 0; // hardlink entries, inodes met twice and files of nlink > 1 decoded so far
  const dirOf: number[] = []; // by inode index: the index of the directory holding it (-1: none)
  const open = new Set<number>(); // directories whose entries are being decoded
  // objectPath(digest) for the digest just read at buf[at, at + n), built in one flat string: a
  // concatenation would be flattened again by each later reader of every payload.
  const scratch = Buffer.allocUnsafe(256);
  const objectPathAt = (at: number, n: number): string => {
    if (n < 2 || n + 1 > scratch.length) return objectPath(buf.toString('latin1', at, at + n));
    scratch[0] = buf[at]!; scratch[1] = buf[at + 1]!; scratch[2] = 0x2f;
    buf.copy(scratch, 3, at + 2, at + n);
    return scratch.toString('latin1', 0, n + 1);
  };
  const inode = (dir: number): Inode => {
    const start = pos;
    const first = inodes.length;
    const linksBefore = links;
    const mode = u32();
    const n: Inode = { mode, uid: u32(), gid: u32(), nlink: u32(), mtimeSec: f64(), mtimeNsec: u32(), size: f64(), rdev: f64(), xattrs: NO_XATTRS };
    inodes.push(n);
    dirOf.push(dir);
    const flags = u8();
    if (flags & HAS_CONTENT) n.content = bytes();
    if (flags & HAS_DIGEST) { n.digest = str(); n.payload = objectPathAt(pos - n.digest.length, n.digest.length); }
    if (flags & OWN_PAYLOAD) n.payload = str();
    if (flags & HAS_SYMLINK) n.symlinkTarget = str();
    const nx = u32();
    if (nx > 0) {
      n.xattrs = [];
      for (let i = nx; i > 0; i--) n.xattrs.push({ name: str(), value: bytes() });
    }
    if ((mode & S_IFMT) !== S_IFDIR) {
      if (n.nlink > 1) links++;
      return n;
    }
    const children = new Map();
    n.children = children;
    open.add(first);
    for (let i = u32(); i > 0; i--) {
      const name = str();
      const hardlink = u8() === 1;
      const tag = u8();
      let child: Inode;
      if (hardlink) links++;
      if (tag === 1) {
        links++;
        const k = u32();
        if (k >= inodes.length || (inodes[k]!.mode & S_IFMT) === S_IFDIR) throw new Miss(); // only files are met twice
        child = inodes[k]!;
        // the directories closed already that hold inode k are not self-contained after all
        for (let d = dirOf[k]!; d >= 0 && !open.has(d); d = dirOf[d]!) spans.delete(inodes[d]!);
      } else if (tag === 0) child = inode(first);
      else throw new Miss();
      if (children.has(name)) throw new Miss();
      children.set(name, { inode: child, hardlink });
    }
    open.delete(first);
    if (links === linksBefore) spans.set(n, { start, end: pos, inodes: inodes.length - first });
    return n;
  };
  try {
    const root = inode(-1);
    if (pos !== buf.length || (root.mode & S_IFMT) !== S_IFDIR) return undefined;
    return { tree: { root }, bytes: buf, spans, linkFree: links === 0 };
  } catch (err) {
    if (err instanceof Miss || err instanceof RangeError) return undefined;
    throw err;
  }
}

/** The cached tree of commit `id`, or undefined when there is none that passes the checks. */
export function readTreeCache(path: string, id: string): CachedTree | undefined {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch {
    return undefined;
  }
  return decodeTreeCache(buf, id);
}

/**
 * Writes the cache whole through the store's tmp/ (durable, then renamed): never a half file.
 * `previous`: the cache `tree` was merged from, whose untouched records are copied.
 */
export async function writeTreeCache(tmp: TmpArea, path: string, id: string, tree: Tree, previous?: CachedTree): Promise<void> {
  await writeFileAtomic(tmp, path, encodeTree(id, tree, previous), { mode: 0o600 });
}
