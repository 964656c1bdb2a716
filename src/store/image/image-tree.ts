// An image read back as a Tree that writes back to the same bytes: what a commit starts from.
// Hardlinks become shared inodes, and each hardlinked inode's primary entry is the one where the
// writer had laid it out (recovered from the inode numbers, which are the writer's BFS order,
// counting the root's hidden whiteout stubs). A directory met twice (a cycle, or a directory
// hardlink) is CORRUPT_IMAGE: the walk would never end.
//
// `lazyImageTree` gives the same tree read only where it is looked at: each directory's entries
// are read the first time its `children` are, so a commit that merges a small upper over a large
// base reads only the directories the upper goes through (splice.ts places the rest from the image).
//
// Public surface: imageTree, imageTreeFromBytes, emptyTree, lazyImageTree, ImageOrigin.
import { StratumError } from '../error.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './erofs.js';
import { ImageReader, type InodeAttr } from './read.js';
import { type ByteString, type Entry, type Inode, type Tree, newInode, objectPath } from './tree.js';

/** An empty root directory: the tree of `init`. */
export function emptyTree(): Tree {
  return { root: newInode({ mode: S_IFDIR | 0o755 }) };
}

/** The tree of an image, read through `reader` (either mode). */
export function imageTree(reader: ImageReader): Tree {
  const root = inodeOf(reader, reader.rootNid, reader.getattr(reader.rootNid));
  const byNid = new Map<number, { inode: Inode; tentative: Entry | undefined }>();
  const seenDirs = new Set<number>([reader.rootNid]);
  const queue: Array<{ nid: number; inode: Inode }> = [{ nid: reader.rootNid, inode: root }];
  let next = 1;
  for (let qi = 0; qi < queue.length; qi++) {
    const { nid: dirNid, inode: dir } = queue[qi]!;
    let stub = qi === 0 ? 0 : 256; // root: stubs 00..ff not taken by a real name
    const entries = visibleEntries(reader, dirNid);
    const taken = qi === 0 ? new Set<ByteString>(entries.map((e) => e.name)) : undefined;
    const skipStubsBefore = (name: ByteString | undefined): void => {
      for (; stub < 256; stub++) {
        const s = stub.toString(16).padStart(2, '0');
        if (name !== undefined && s >= name) break;
        if (!taken!.has(s)) next++;
      }
    };
    for (const { name, nid } of entries) {
      if (taken) skipStubsBefore(name);
      const attr = reader.getattr(nid);
      const known = byNid.get(nid);
      if (known) {
        const entry: Entry = { inode: known.inode, hardlink: true };
        if (known.tentative && attr.ino === next) {
          known.tentative.hardlink = true;
          entry.hardlink = false;
          known.tentative = undefined;
          next++;
        }
        dir.children!.set(name, entry);
        continue;
      }
      const isDir = (attr.mode & S_IFMT) === S_IFDIR;
      if (isDir) {
        if (seenDirs.has(nid)) throw new StratumError('CORRUPT_IMAGE', `corrupt image: directory ${nid} appears twice (a cycle or a directory hardlink)`);
        seenDirs.add(nid);
      }
      const inode = inodeOf(reader, nid, attr);
      const entry: Entry = { inode, hardlink: false };
      dir.children!.set(name, entry);
      const allocated = isDir || attr.ino === next;
      if (allocated) next++;
      if (isDir) queue.push({ nid, inode });
      else byNid.set(nid, { inode, tentative: allocated ? undefined : entry });
    }
    if (taken) skipStubsBefore(undefined);
  }
  return { root };
}

/** imageTree for a whole image in memory: the reader's whole mode (same checks, no caches to churn). */
export function imageTreeFromBytes(img: Uint8Array): Tree {
  return imageTree(ImageReader.whole(img));
}

/** Visible entries (no `.`, `..`, whiteouts), in dirent (byte) order. */
function visibleEntries(reader: ImageReader, dirNid: number): Array<{ name: ByteString; nid: number }> {
  const out: Array<{ name: ByteString; nid: number }> = [];
  for (let offset = 0; ;) {
    const batch = reader.readdir(dirNid, offset, 1024);
    if (batch.length === 0) break;
    for (const e of batch) if (e.name !== '.' && e.name !== '..') out.push({ name: e.name, nid: e.nid });
    offset = batch[batch.length - 1]!.next;
  }
  return out;
}

function inodeOf(reader: ImageReader, nid: number, a: InodeAttr): Inode {
  const type = a.mode & S_IFMT;
  const { xattrs, object } = reader.xattrsAndObject(nid);
  const inode = newInode({ mode: a.mode, uid: a.uid, gid: a.gid, nlink: a.nlink, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec, size: type === S_IFREG ? a.size : 0, rdev: a.rdev, xattrs });
  if (type === S_IFLNK) {
    inode.symlinkTarget = reader.readlink(nid);
    inode.size = inode.symlinkTarget.length;
  } else if (type === S_IFREG && a.size > 0) {
    if (object !== undefined) {
      inode.digest = object;
      inode.payload = objectPath(object);
    } else inode.content = reader.readContent(nid);
  }
  return inode;
}

/** Where an inode of a lazy tree comes from in its image. */
export interface ImageOrigin {
  nid: number;
  /** Its path in the image ('/' for the root). */
  path: ByteString;
}

/**
 * The tree of an image, read lazily (see the top). `origin` tells, for every inode it made, its
 * nid and path. No hardlink is resolved: an inode met under two names is two inodes here (a
 * caller that can meet hardlinks must refuse them: splice.ts does, the image index tells it).
 */
export function lazyImageTree(reader: ImageReader): { tree: Tree; origin: WeakMap<Inode, ImageOrigin> } {
  const origin = new WeakMap<Inode, ImageOrigin>();
  const seenDirs = new Set<number>();
  const make = (nid: number, path: ByteString): Inode => {
    const attr = reader.getattr(nid);
    const inode = inodeOf(reader, nid, attr);
    origin.set(inode, { nid, path });
    if ((attr.mode & S_IFMT) !== S_IFDIR) return inode;
    if (seenDirs.has(nid)) throw new StratumError('CORRUPT_IMAGE', `corrupt image: directory ${nid} appears twice (a cycle or a directory hardlink)`);
    seenDirs.add(nid);
    const prefix = path === '/' ? '' : path;
    Object.defineProperty(inode, 'children', {
      configurable: true,
      enumerable: true,
      get(): Map<ByteString, Entry> {
        const children = new Map<ByteString, Entry>();
        for (const e of visibleEntries(reader, nid)) children.set(e.name, { inode: make(e.nid, `${prefix}/${e.name}`), hardlink: false });
        Object.defineProperty(inode, 'children', { value: children, writable: true, configurable: true, enumerable: true });
        return children;
      },
    });
    return inode;
  };
  return { tree: { root: make(reader.rootNid, '/') }, origin };
}
