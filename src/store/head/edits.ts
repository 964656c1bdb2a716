// The fast path of a commit: when the upper only *edits* paths of the base (file contents and
// metadata, directory metadata) and every edited inode keeps its encoded size, the new image is the
// base image with those inodes rewritten in place (image/patch.ts), byte for byte what the writer
// would produce for the merged tree, and the Merkle root is updated from a cache of the base's Merkle levels.
// The cost is the change plus one pass over the image bytes (its fs-verity digest), not the tree.
// Anything else (a new or deleted name, a rename, a hardlink, a size class change, a shared xattr,
// no cache) is refused with `undefined`, and the caller takes the full path. The tests compare
// both paths on random edits.
//
// The Merkle cache (refs/<label>/head.merkle) belongs to HEAD's current base: sorted leaf paths
// and every level of the Merkle tree. Both paths use it: this one updates its levels along the
// edited leaves, the full one (build.ts) takes every leaf the change did not touch from it. It
// is written whole (tmp/, fsync, rename) and checked before use: the commit id in its header,
// a sha256 of its body, and its root against the commit's metadata; any doubt and it is ignored.
//
// Public surface: scanEdits, EditScan, Edit, patchImage, MerkleCache, readMerkleCache,
// writeMerkleCache, MERKLE_CACHE_FILE.
import { lstatSync, readFileSync, readdirSync, type BigIntStats } from 'node:fs';
import { anyLength } from '../../native/files.js';
import { createHash } from 'node:crypto';
import { type TmpArea, writeFileAtomic } from '../tmp.js';
import { LCFS_RECOMMENDED_INLINE_CONTENT_MAX, S_IFDIR, S_IFMT, S_IFREG } from '../image/erofs.js';
import { type InodePatch, patchInode } from '../image/patch.js';
import { type ImageReader } from '../image/read.js';
import { type ByteString, type Xattr, byteString } from '../image/tree.js';
import type { CommitMetadata } from '../metadata.js';
import { leafHash, updateLeaf } from '../merkle.js';
import { type XattrNamespace, readUpperEntry, upperRootAttr, visibleXattrs } from '../upper.js';

export const MERKLE_CACHE_FILE = 'head.merkle';

/** Why the fast path was refused, for STRATUM_DEBUG_FASTPATH=1 (always returns undefined/false). */
function refuse(why: string): undefined {
  if (process.env.STRATUM_DEBUG_FASTPATH) process.stderr.write(`fast path refused: ${why}\n`);
  return undefined;
}
const MAGIC = 0x324b4d53; // "SMK2"
/** magic u32, leaf count u32, commit id (32 bytes), sha256 of the rest (32 bytes). */
const HEADER = 72;
const sha256 = (data: Uint8Array): Buffer => createHash('sha256').update(data).digest();

/** One edited path: its base inode and what the upper says now. */
export interface Edit {
  path: ByteString;
  nid: number;
  upperPath: Buffer;
  stat: BigIntStats;
  kind: 'dir' | 'content' | 'metadata';
  /** New content's digest, set by the caller after hashing (kind 'content'). */
  digest?: string;
}

export interface EditScan {
  edits: Edit[];
  /** Upper entries seen (the root not counted). */
  upperEntries: number;
}

/** Walks the upper: every entry must edit an existing base path of the same type, with the same xattrs. */
export function scanEdits(reader: ImageReader, upperDir: string, ns: XattrNamespace): EditScan | undefined {
  const edits: Edit[] = [];
  let upperEntries = 0;
  const rootPath = Buffer.from(upperDir);
  let rootStat: BigIntStats;
  try {
    rootStat = lstatSync(rootPath, { bigint: true });
  } catch {
    return { edits, upperEntries };
  }
  const visit = (dirPath: Buffer, dirNid: number, path: ByteString, stat: BigIntStats): boolean => {
    const entry = readUpperEntry(dirPath, stat, ns, 'overlay');
    if (entry.kind !== 'dir' || entry.opaque || entry.redirect !== undefined) return !!refuse(`${path}: opaque or redirected dir`);
    if (!sameXattrs(visibleXattrs(entry.raw, ns), reader.xattrs(dirNid))) return !!refuse(`${path}: dir xattrs differ ${JSON.stringify(visibleXattrs(entry.raw, ns).map((x) => x.name))} vs ${JSON.stringify(reader.xattrs(dirNid).map((x) => x.name))}`);
    if (!sameAttrs(stat, reader, dirNid)) edits.push({ path, nid: dirNid, upperPath: dirPath, stat, kind: 'dir' });
    for (const nameBytes of anyLength(dirPath, (p) => readdirSync(p, { encoding: 'buffer' }) as Buffer[])) {
      upperEntries++;
      const name = byteString(nameBytes);
      const childPath = Buffer.concat([dirPath, Buffer.from('/'), nameBytes]);
      const childStat = anyLength(childPath, (p) => lstatSync(p, { bigint: true }));
      const nid = reader.lookup(dirNid, name);
      if (nid === undefined) return !!refuse(`${name}: new name`); // a new name (or a whiteout of a missing one)
      const a = reader.getattr(nid);
      const type = Number(childStat.mode) & S_IFMT;
      if (type !== (a.mode & S_IFMT)) return !!refuse(`${name}: type change or whiteout`); // whiteouts land here too
      const childRel = `${path === '/' ? '' : path}/${name}`;
      if (type === S_IFDIR) {
        if (!visit(childPath, nid, childRel, childStat)) return false;
        continue;
      }
      if (type !== S_IFREG || childStat.nlink !== 1n || a.nlink !== 1) return !!refuse(`${name}: not a plain file or hardlinked`);
      const e = readUpperEntry(childPath, childStat, ns, 'overlay');
      if (!sameXattrs(visibleXattrs(e.raw, ns), reader.xattrs(nid))) return !!refuse(`${name}: xattrs differ`);
      if (e.kind === 'metacopy') {
        if (e.redirect !== undefined || Number(childStat.size) !== a.size) return !!refuse(`${name}: redirected metacopy`);
        edits.push({ path: childRel, nid, upperPath: childPath, stat: childStat, kind: 'metadata' });
      } else {
        if (!reader.external(nid) || childStat.size <= BigInt(LCFS_RECOMMENDED_INLINE_CONTENT_MAX)) return !!refuse(`${name}: inline content`);
        edits.push({ path: childRel, nid, upperPath: childPath, stat: childStat, kind: 'content' });
      }
    }
    return true;
  };
  if (!visit(rootPath, reader.rootNid, '/', rootStat)) return undefined;
  return { edits, upperEntries };
}

function sameAttrs(stat: BigIntStats, reader: ImageReader, nid: number): boolean {
  const a = reader.getattr(nid);
  const u = upperRootAttr(stat);
  return u.mode === a.mode && u.uid === a.uid && u.gid === a.gid && u.mtimeSec === a.mtimeSec && u.mtimeNsec === a.mtimeNsec;
}

function sameXattrs(a: Xattr[], b: Xattr[]): boolean {
  if (a.length !== b.length) return false;
  const key = (x: Xattr): string => `${x.name}\0${Buffer.from(x.value).toString('latin1')}`;
  const keys = new Set(b.map(key));
  return a.every((x) => keys.has(key(x)));
}

// ---------------------------------------------------------------------------------------------

export interface MerkleCache {
  id: string;
  /** Leaf paths, sorted by bytes. */
  paths: ByteString[];
  /**
   * Level k is one Buffer of 32-byte nodes: levels[0] the leaf hashes, each next level pairing
   * neighbours (an odd last node carried up), the last one the root (merkle.ts merkleLevels).
   */
  levels: Buffer[];
}

/**
 * The cache of commit `id`, or undefined when it is missing, of another commit, truncated or
 * corrupt (its checksum covers every byte after the header), or does not end in the root that
 * `meta` records. A cache that is undefined costs time, never correctness: the caller hashes.
 */
export function readMerkleCache(path: string, id: string, meta: CommitMetadata): MerkleCache | undefined {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch {
    return undefined;
  }
  try {
    if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC || buf.toString('hex', 8, 40) !== id) return undefined;
    if (!sha256(buf.subarray(HEADER)).equals(buf.subarray(40, HEADER))) return undefined;
    const n = buf.readUInt32LE(4);
    let pos = HEADER;
    const paths: ByteString[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const len = buf.readUInt16LE(pos);
      paths[i] = buf.toString('latin1', pos + 2, pos + 2 + len);
      pos += 2 + len;
    }
    // the levels are the rest of the file, as is: each a view of the file's buffer
    const levels: Buffer[] = [];
    for (let len = n; ; len = Math.ceil(len / 2)) {
      if (pos + 32 * len > buf.length) return undefined;
      levels.push(buf.subarray(pos, pos + 32 * len));
      pos += 32 * len;
      if (len <= 1) break;
    }
    const root = levels[levels.length - 1]!;
    if (pos !== buf.length || n !== meta.merkle.leafCount || root.length !== 32 || root.toString('hex') !== meta.merkleRoot) return undefined;
    return { id, paths, levels };
  } catch {
    return undefined;
  }
}

/** Writes the cache whole through the store's tmp/ (durable, then renamed): never a half file. */
export async function writeMerkleCache(tmp: TmpArea, path: string, cache: MerkleCache): Promise<void> {
  let size = HEADER;
  for (const p of cache.paths) size += 2 + p.length;
  for (const level of cache.levels) size += level.length;
  const file = Buffer.alloc(size);
  file.writeUInt32LE(MAGIC, 0);
  file.writeUInt32LE(cache.paths.length, 4);
  file.write(cache.id, 8, 'hex');
  let pos = HEADER;
  for (const p of cache.paths) {
    file.writeUInt16LE(p.length, pos);
    pos += 2;
    for (let i = 0; i < p.length; i++) file[pos++] = p.charCodeAt(i); // Buffer#write costs more per call than these bytes
  }
  for (const level of cache.levels) {
    file.set(level, pos);
    pos += level.length;
  }
  sha256(file.subarray(HEADER)).copy(file, 40);
  await writeFileAtomic(tmp, path, file, { mode: 0o600 });
}

// ---------------------------------------------------------------------------------------------

/**
 * The base image with every edit applied in place, or undefined when an edit would change an
 * inode's encoded size or anything the writer decides globally. `image` is modified.
 */
export function patchImage(image: Buffer, reader: ImageReader, edits: Edit[], cache: MerkleCache): { levels: Buffer[]; sizeDelta: number } | undefined {
  const levels = cache.levels.map((l) => Buffer.from(l)); // the cache's own stay as read
  let sizeDelta = 0;
  const newDigests = new Set<string>();
  for (const edit of edits) {
    const a = reader.getattr(edit.nid);
    const u = upperRootAttr(edit.stat);
    let digest = '';
    let content: InodePatch['content'];
    if (edit.kind !== 'dir') {
      digest = reader.external(edit.nid)?.digest ?? '';
      if (edit.kind === 'content') {
        if (!edit.digest || newDigests.has(edit.digest)) return refuse(`${edit.path}: content shared with another edit`);
        newDigests.add(edit.digest);
        content = { size: Number(edit.stat.size), digest: edit.digest };
        digest = edit.digest;
      }
    }
    // The root's 256 whiteout stubs carry its owner and mtime (layout.ts): they would change too.
    if (edit.nid === reader.rootNid && (u.uid !== a.uid || u.gid !== a.gid || u.mtimeSec !== a.mtimeSec || u.mtimeNsec !== a.mtimeNsec)) return refuse("the root's owner or mtime (its whiteout stubs carry them)");
    const why = patchInode(image, reader, { nid: edit.nid, mode: u.mode, uid: u.uid, gid: u.gid, mtimeSec: u.mtimeSec, mtimeNsec: u.mtimeNsec, content });
    if (why !== undefined) return refuse(`${edit.path}: ${why}`);
    if (content) sizeDelta += content.size - a.size;
    const index = findPath(cache.paths, edit.path);
    if (index < 0) return refuse(`${edit.path}: not in the Merkle cache`);
    const leafSize = (u.mode & S_IFMT) === S_IFDIR ? a.size : content?.size ?? a.size;
    updateLeaf(levels, index, leafHash(edit.path, { mode: u.mode, uid: u.uid, gid: u.gid, mtimeSec: u.mtimeSec, mtimeNsec: u.mtimeNsec, size: leafSize, rdev: 0 }, '', reader.xattrs(edit.nid), digest));
  }
  return { levels, sizeDelta };
}

/** Index of `path` in sorted `paths`, or -1. */
export function findPath(paths: ByteString[], path: ByteString): number {
  let lo = 0;
  let hi = paths.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const p = paths[mid]!;
    if (p === path) return mid;
    if (p < path) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
