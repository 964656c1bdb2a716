// The tree of one commit: what an image stores, before any on-disk encoding.
//
// Names, paths, xattr names and symlink targets are *byte strings*: JS strings whose every char
// code is one byte (0-255, i.e. latin1). Linux names are bytes, not text; byte strings compare with
// `<` exactly like strcmp, which is the order the image format needs, and they are far cheaper
// than one Uint8Array per name on a 100 000-entry tree. Use `byteString`/`utf8` to convert.
// Contents and xattr values are Uint8Array.
//
// Hardlinks: several directory entries share one Inode object. Exactly one of them is the primary
// (`hardlink: false`), the place where the inode is laid out; the others have `hardlink: true`.
// The choice matters for byte identity: mkcomposefs lays the inode out where its non-`@` dump line is.
//
// Public surface: ByteString, Xattr, Inode, Entry, Tree, newInode, addEntry, lookupPath, walkTree,
// sortedNames, compareBytes, isExternal, objectPath, byteString, utf8, bytesOf, RECOMMENDED_INLINE_MAX.
import { LCFS_RECOMMENDED_INLINE_CONTENT_MAX, S_IFDIR, S_IFMT, S_IFREG } from './erofs.js';

export type ByteString = string;

/**
 * Regular files up to this size are stored in the image (`content`) when a tree is built from a
 * directory, larger ones become objects: mkcomposefs' LCFS_RECOMMENDED_INLINE_CONTENT_MAX.
 */
export const RECOMMENDED_INLINE_MAX = LCFS_RECOMMENDED_INLINE_CONTENT_MAX;

export interface Xattr {
  name: ByteString;
  value: Uint8Array;
}

export interface Inode {
  /** st_mode: type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** st_nlink as given; the writer recomputes it for directories (2 + subdirectories). */
  nlink: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Regular files: content size; symlinks: target length; directories: ignored by the writer. */
  size: number;
  /** Device number (Linux dev_t encoding) of character and block devices; 0 otherwise. */
  rdev: number;
  /** Symlinks: the target (non-empty). */
  symlinkTarget?: ByteString;
  /** Regular files stored in the image itself (1..5000 bytes). */
  content?: Uint8Array;
  /** Regular files stored as objects: the backing path in the objects dir, `ab/cdef…`. */
  payload?: ByteString;
  /** Regular files stored as objects: the fs-verity sha256 digest, 64 hex chars. */
  digest?: string;
  /** Unique names; order is irrelevant (the writer sorts). */
  xattrs: Xattr[];
  /** Directories only: name -> entry. */
  children?: Map<ByteString, Entry>;
}

export interface Entry {
  inode: Inode;
  /** True for every entry of a hardlinked inode except its primary one. */
  hardlink: boolean;
}

export interface Tree {
  root: Inode;
}

export function newInode(fields: Partial<Inode> & { mode: number }): Inode {
  const inode: Inode = {
    uid: 0,
    gid: 0,
    nlink: 1,
    mtimeSec: 0,
    mtimeNsec: 0,
    size: 0,
    rdev: 0,
    xattrs: [],
    ...fields,
  };
  if ((inode.mode & S_IFMT) === S_IFDIR && !inode.children) inode.children = new Map();
  if (inode.symlinkTarget !== undefined) inode.size = inode.symlinkTarget.length;
  if (inode.content !== undefined && (inode.mode & S_IFMT) === S_IFREG) inode.size = inode.content.length;
  return inode;
}

/** Adds `name` to directory `dir`; returns the entry. Throws if the name exists. */
export function addEntry(dir: Inode, name: ByteString, inode: Inode, options: { hardlink?: boolean } = {}): Entry {
  if (!dir.children) throw new TypeError('addEntry: not a directory');
  if (dir.children.has(name)) throw new TypeError(`addEntry: ${JSON.stringify(name)} exists`);
  const entry: Entry = { inode, hardlink: options.hardlink ?? false };
  dir.children.set(name, entry);
  return entry;
}

/** Resolves a `/`-separated byte-string path from the root; undefined if absent. */
export function lookupPath(tree: Tree, path: ByteString): Inode | undefined {
  let node: Inode | undefined = tree.root;
  for (const part of path.split('/')) {
    if (part === '') continue;
    node = node?.children?.get(part)?.inode;
    if (!node) return undefined;
  }
  return node;
}

/** Depth-first walk in byte order: yields [path, entry] for every entry below the root ('/' first). */
export function* walkTree(tree: Tree): Generator<[ByteString, Entry]> {
  yield ['/', { inode: tree.root, hardlink: false }];
  function* visit(dir: Inode, prefix: string): Generator<[ByteString, Entry]> {
    for (const name of sortedNames(dir)) {
      const entry = dir.children!.get(name)!;
      const path = `${prefix}/${name}`;
      yield [path, entry];
      if (!entry.hardlink && entry.inode.children) yield* visit(entry.inode, path);
    }
  }
  yield* visit(tree.root, '');
}

export function sortedNames(dir: Inode): ByteString[] {
  return dir.children ? [...dir.children.keys()].sort(compareBytes) : [];
}

/** strcmp order for byte strings. */
export function compareBytes(a: ByteString, b: ByteString): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A regular file whose content lives in the objects dir rather than in the image. */
export function isExternal(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFREG && inode.size > 0 && inode.content === undefined;
}

/** The object path composefs uses for a digest: `ab/cdef…`. */
export function objectPath(digest: string): ByteString {
  return `${digest.slice(0, 2)}/${digest.slice(2)}`;
}

export function byteString(bytes: Uint8Array): ByteString {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** UTF-8 text -> byte string (for names typed by people). */
export function utf8(text: string): ByteString {
  return Buffer.from(text, 'utf8').toString('latin1');
}

export function bytesOf(s: ByteString): Buffer {
  return Buffer.from(s, 'latin1');
}
