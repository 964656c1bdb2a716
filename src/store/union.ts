// The merged view of a HEAD: a base commit image under an upper dir in the kernel overlayfs
// format, exactly as kernel overlayfs shows it when mounted the way composefs mounts
// (`metacopy=on,redirect_dir=on`, objects as a data-only lower layer). docs/union.md lists the
// rules; upper.ts decodes each upper entry, this module combines entries with the lower layer.
//
// Two faces of the same rules:
//   - UnionView: lazy, path by path, over an ImageReader (what a live view asks: lookup, readdir,
//     getattr, readlink, xattrs, where a file's content is).
//   - mergeUpper: the whole merged Tree for a commit, built from the base Tree and a walk of the
//     upper only, so its I/O grows with the change, not with the tree.
// Both resolve the lower through one small interface (Lower), so redirect, opaque and metacopy
// lookups are written once.
//
// Public surface: UnionView, UnionNode, UnionAttr, ContentSource, mergeUpper, MergeOptions,
// MergeResult, PendingContent, imageTree, imageTreeFromBytes, emptyTree.
import { lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './image/erofs.js';
import type { ImageReader, InodeAttr } from './image/read.js';
import { type ByteString, type Entry, type Inode, type Tree, type Xattr, byteString, compareBytes, newInode } from './image/tree.js';
import { anyLength } from '../native/files.js';
import { display } from './paths.js';
import { OCI_OPAQUE, type UpperEntry, type UpperStyle, type XattrNamespace, ociWhiteoutTarget, readUpperEntry, upperRootAttr, visibleXattrs } from './upper.js';

// ---------------------------------------------------------------------------------------------
// The lower layer, abstracted: an image (nids) or an in-memory tree (Inodes).

interface Lower<N> {
  root: N;
  child(dir: N, name: ByteString): N | undefined;
  isDir(node: N): boolean;
  isReg(node: N): boolean;
}

/** A redirect: absolute (`/a/b`, from the lower root, whatever the parent) or a sibling's name. */
function followRedirect<N>(lower: Lower<N>, redirect: ByteString, parentLower: N | undefined): N | undefined {
  if (!redirect.startsWith('/')) return parentLower === undefined ? undefined : lower.child(parentLower, redirect);
  let node: N | undefined = lower.root;
  for (const part of redirect.split('/')) {
    if (part === '') continue;
    if (node === undefined || !lower.isDir(node)) return undefined;
    node = lower.child(node, part);
  }
  return node;
}

/** The lower directory an upper directory merges with, if any. */
function lowerDirOf<N>(lower: Lower<N>, entry: UpperEntry, name: ByteString, parentLower: N | undefined): N | undefined {
  if (entry.opaque) return undefined;
  const found = entry.redirect !== undefined ? followRedirect(lower, entry.redirect, parentLower) : parentLower === undefined ? undefined : lower.child(parentLower, name);
  return found !== undefined && lower.isDir(found) ? found : undefined;
}

/** The lower file holding a metacopy upper file's data. */
function lowerDataOf<N>(lower: Lower<N>, entry: UpperEntry, name: ByteString, parentLower: N | undefined): N | undefined {
  const found = entry.redirect !== undefined ? followRedirect(lower, entry.redirect, parentLower) : parentLower === undefined ? undefined : lower.child(parentLower, name);
  return found !== undefined && lower.isReg(found) ? found : undefined;
}

function imageLower(reader: ImageReader): Lower<number> {
  return {
    root: reader.rootNid,
    child: (dir, name) => reader.lookup(dir, name),
    isDir: (nid) => (reader.getattr(nid).mode & S_IFMT) === S_IFDIR,
    isReg: (nid) => (reader.getattr(nid).mode & S_IFMT) === S_IFREG,
  };
}

function treeLower(tree: Tree): Lower<Inode> {
  return {
    root: tree.root,
    child: (dir, name) => dir.children?.get(name)?.inode,
    isDir: (n) => (n.mode & S_IFMT) === S_IFDIR,
    isReg: (n) => (n.mode & S_IFMT) === S_IFREG,
  };
}

const join = (dir: Buffer, name: ByteString): Buffer => Buffer.concat([dir, Buffer.from('/'), Buffer.from(name, 'latin1')]);

/**
 * lstat, or undefined when nothing is there. Other failures keep their errno (as the `cause` of
 * the StratumError): the FUSE layer answers it, so a name over NAME_MAX gives ENAMETOOLONG, not EIO.
 */
function lstatOrUndefined(path: Buffer): BigIntStats | undefined {
  try {
    return anyLength(path, (p) => lstatSync(p, { bigint: true }));
  } catch (err) {
    if (isSystemError(err, 'ENOENT') || isSystemError(err, 'ENOTDIR')) return undefined;
    throw wrapSystemError(err, `reading ${display(path)}`);
  }
}

function readdirBytes(path: Buffer): ByteString[] {
  try {
    return anyLength(path, (p) => readdirSync(p, { encoding: 'buffer' }) as Buffer[]).map(byteString);
  } catch (err) {
    throw wrapSystemError(err, `reading directory ${display(path)}`);
  }
}

function readlinkBytes(path: Buffer): ByteString {
  try {
    return byteString(anyLength(path, (p) => readlinkSync(p, { encoding: 'buffer' }) as Buffer));
  } catch (err) {
    throw wrapSystemError(err, `reading symlink ${display(path)}`);
  }
}

/** NAME_MAX of the image format (and of the filesystems an upper lives on). */
const NAME_MAX = 255;

function mtimeOf(stat: BigIntStats): { mtimeSec: number; mtimeNsec: number } {
  const { mtimeSec, mtimeNsec } = upperRootAttr(stat);
  return { mtimeSec, mtimeNsec };
}

// ---------------------------------------------------------------------------------------------
// UnionView: the live view, path by path.

export interface UnionAttr {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
}

/** Where a regular file's bytes are. */
export type ContentSource =
  | { kind: 'upper'; path: Buffer } // a file in the upper dir holding its full data
  | { kind: 'inline'; bytes: Uint8Array } // stored inside the base image
  | { kind: 'object'; digest: string } // objects/ab/cdef…, by the image's metacopy digest
  | { kind: 'empty' };

export interface UnionNode {
  path: ByteString;
  /** The upper entry that decides this path, if the upper has one. */
  upper?: { path: Buffer; entry: UpperEntry };
  /**
   * The read-only middle layer's entry below the upper (a live commit's old upper, while it is
   * committed), if there is a middle layer and it has one: for dirs the middle dir merged in,
   * for metacopy upper files the middle file with the data, for entries the upper lacks the
   * entry itself.
   */
  middle?: { path: Buffer; entry: UpperEntry };
  /**
   * Image nid: for directories the lower dir merged in (none when opaque or new), for metacopy
   * files the lower file with the data, for lower-only entries the entry itself.
   */
  lower?: number;
}

/** What lies below the upper at one path: the middle layer's entry and the image's (either may be absent). */
interface Below {
  middle?: { path: Buffer; entry: UpperEntry };
  lower?: number;
}

export class UnionView {
  private readonly image: Lower<number>;
  /** The layers below the upper (middle over image), as one lower: redirects and opaque dirs resolve through it. */
  private readonly below: Lower<Below>;
  private readonly upperRoot: Buffer;
  private readonly middleRoot: Buffer | undefined;

  /**
   * `middleDir`: a read-only upper-format dir between the upper and the image (a live commit's
   * old upper): kernel overlayfs' rules for a lower dir layer (whiteouts, opaque dirs, redirects
   * into the image, metacopy files with their data in the image). The upper's redirects and
   * opaque dirs speak about middle and image together, as overlayfs' do about all lower layers.
   */
  constructor(
    readonly reader: ImageReader,
    upperDir: string,
    readonly ns: XattrNamespace,
    middleDir?: string,
  ) {
    this.image = imageLower(reader);
    this.upperRoot = Buffer.from(upperDir);
    this.middleRoot = middleDir === undefined ? undefined : Buffer.from(middleDir);
    const rootBelow: Below = { lower: reader.rootNid };
    if (this.middleRoot) {
      const stat = lstatOrUndefined(this.middleRoot);
      if (stat && (Number(stat.mode) & S_IFMT) === S_IFDIR) rootBelow.middle = { path: this.middleRoot, entry: readUpperEntry(this.middleRoot, stat, ns, 'overlay') };
    }
    this.below = {
      root: rootBelow,
      child: (dir, name) => this.childBelow(dir, name),
      isDir: (b) => (this.modeBelow(b) & S_IFMT) === S_IFDIR,
      isReg: (b) => (this.modeBelow(b) & S_IFMT) === S_IFREG,
    };
  }

  /** Whether this view has a middle layer (a live commit is under way). */
  get layered(): boolean {
    return this.middleRoot !== undefined;
  }

  private modeBelow(b: Below): number {
    if (b.middle) return Number(b.middle.entry.stat.mode);
    return b.lower === undefined ? 0 : this.reader.getattr(b.lower).mode;
  }

  /** `name` in the layers below the upper (middle over image), from what lies below its parent. */
  private childBelow(dir: Below, name: ByteString): Below | undefined {
    if (dir.middle) {
      if (dir.middle.entry.kind !== 'dir') return undefined;
      const path = join(dir.middle.path, name);
      const stat = lstatOrUndefined(path);
      if (stat) {
        const entry = readUpperEntry(path, stat, this.ns, 'overlay');
        if (entry.kind === 'whiteout') return undefined;
        const b: Below = { middle: { path, entry } };
        const lower = entry.kind === 'dir' ? lowerDirOf(this.image, entry, name, dir.lower) : entry.kind === 'metacopy' ? lowerDataOf(this.image, entry, name, dir.lower) : undefined;
        if (entry.kind === 'metacopy' && lower === undefined) throw new StratumError('CORRUPT_STORE', `${display(path)} is a metacopy upper file whose data is not in the base commit`);
        if (lower !== undefined) b.lower = lower;
        return b;
      }
    }
    if (dir.lower === undefined) return undefined;
    const nid = this.reader.lookup(dir.lower, name);
    return nid === undefined ? undefined : { lower: nid };
  }

  private static belowOf(node: UnionNode): Below | undefined {
    if (node.middle === undefined && node.lower === undefined) return undefined;
    const b: Below = {};
    if (node.middle) b.middle = node.middle;
    if (node.lower !== undefined) b.lower = node.lower;
    return b;
  }

  private static withBelow(node: UnionNode, b: Below | undefined): UnionNode {
    if (b?.middle) node.middle = b.middle;
    if (b?.lower !== undefined) node.lower = b.lower;
    return node;
  }

  /** The entry of the topmost dir layer that has one (upper, else middle): it decides attributes and data. */
  top(node: UnionNode): { path: Buffer; entry: UpperEntry } | undefined {
    return node.upper ?? node.middle;
  }

  /** Whether `name` exists below the upper in dir (middle or image): removing it then needs a whiteout. */
  inBelow(dir: UnionNode, name: ByteString): boolean {
    const b = UnionView.belowOf(dir);
    return b !== undefined && this.below.isDir(b) && this.childBelow(b, name) !== undefined;
  }

  /** Whether anything lies below the upper at this node (a dir merged with a lower one, a lower file). */
  hasBelow(node: UnionNode): boolean {
    return node.middle !== undefined || node.lower !== undefined;
  }

  root(): UnionNode {
    const stat = lstatOrUndefined(this.upperRoot);
    const node = UnionView.withBelow({ path: '/' }, this.below.root);
    if (stat && (Number(stat.mode) & S_IFMT) === S_IFDIR) node.upper = { path: this.upperRoot, entry: readUpperEntry(this.upperRoot, stat, this.ns, 'overlay') };
    return node;
  }

  isDir(node: UnionNode): boolean {
    return (this.getattr(node).mode & S_IFMT) === S_IFDIR;
  }

  /** The entry `name` in directory `dir`, or undefined (absent or whited out). */
  child(dir: UnionNode, name: ByteString): UnionNode | undefined {
    if (name === '' || name === '.' || name === '..' || name.includes('/')) return undefined;
    // as erofs and the upper's filesystem answer (kernel overlayfs passes that on)
    if (name.length > NAME_MAX) throw Object.assign(new Error(`ENAMETOOLONG: a name of ${name.length} bytes`), { code: 'ENAMETOOLONG', errno: -osConstants.errno.ENAMETOOLONG });
    if (!this.isDir(dir)) return undefined;
    const path = dir.path === '/' ? `/${name}` : `${dir.path}/${name}`;
    const dirBelow = dir.upper && dir.upper.entry.kind !== 'dir' ? undefined : UnionView.belowOf(dir);
    if (dir.upper) {
      const upperPath = join(dir.upper.path, name);
      const stat = lstatOrUndefined(upperPath);
      if (stat) {
        const entry = readUpperEntry(upperPath, stat, this.ns, 'overlay');
        if (entry.kind === 'whiteout') return undefined;
        const node: UnionNode = { path, upper: { path: upperPath, entry } };
        const below = entry.kind === 'dir' ? lowerDirOf(this.below, entry, name, dirBelow) : entry.kind === 'metacopy' ? lowerDataOf(this.below, entry, name, dirBelow) : undefined;
        if (entry.kind === 'metacopy' && below === undefined) throw new StratumError('CORRUPT_STORE', `${display(upperPath)} is a metacopy upper file whose data is not in the base commit`);
        return UnionView.withBelow(node, below);
      }
    }
    if (dirBelow === undefined) return undefined;
    const b = this.childBelow(dirBelow, name);
    return b === undefined ? undefined : UnionView.withBelow({ path }, b);
  }

  /** Resolves a `/`-separated path from the root. */
  lookup(path: ByteString): UnionNode | undefined {
    let node: UnionNode | undefined = this.root();
    for (const part of path.split('/')) {
      if (part === '') continue;
      node = this.child(node, part);
      if (!node) return undefined;
    }
    return node;
  }

  getattr(node: UnionNode): UnionAttr {
    const top = this.top(node);
    if (top) {
      const s = top.entry.stat;
      return { mode: Number(s.mode), uid: Number(s.uid), gid: Number(s.gid), nlink: Number(s.nlink), size: Number(s.size), rdev: Number(s.rdev), ...mtimeOf(s) };
    }
    const a: InodeAttr = this.reader.getattr(node.lower!);
    return { mode: a.mode, uid: a.uid, gid: a.gid, nlink: a.nlink, size: a.size, rdev: a.rdev, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec };
  }

  /** Names in a directory (without `.` and `..`), sorted by bytes. */
  readdir(dir: UnionNode): ByteString[] {
    const names = new Set<ByteString>();
    const shadowed = new Set<ByteString>();
    // each dir layer, top down: its entries hide the same names below; its whiteouts show nothing
    const layers = [dir.upper, dir.middle].filter((l) => l !== undefined);
    let opaque = false;
    for (const layer of layers) {
      if (layer.entry.kind !== 'dir') { opaque = true; break; }
      for (const name of readdirBytes(layer.path)) {
        if (shadowed.has(name)) continue;
        shadowed.add(name);
        const stat = lstatOrUndefined(join(layer.path, name));
        if (stat && readUpperEntry(join(layer.path, name), stat, this.ns, 'overlay').kind !== 'whiteout') names.add(name);
      }
    }
    if (dir.lower !== undefined && !opaque) {
      for (let offset = 0; ;) {
        const batch = this.reader.readdir(dir.lower, offset, 1024);
        if (batch.length === 0) break;
        for (const e of batch) if (e.name !== '.' && e.name !== '..' && !shadowed.has(e.name)) names.add(e.name);
        offset = batch[batch.length - 1]!.next;
      }
    }
    return [...names].sort(compareBytes);
  }

  readlink(node: UnionNode): ByteString {
    const top = this.top(node);
    if (top) return readlinkBytes(top.path);
    return this.reader.readlink(node.lower!);
  }

  xattrs(node: UnionNode): Xattr[] {
    const top = this.top(node);
    if (top) return visibleXattrs(top.entry.raw, this.ns);
    return this.reader.xattrs(node.lower!);
  }

  /**
   * Visible xattrs in the order the kernel lists them: an upper-format entry's as its filesystem
   * lists them; an image inode's inline ones first, then its shared ones (erofs_listxattr), which
   * is also the order a kernel copy-up writes them in.
   */
  xattrsAsListed(node: UnionNode): Xattr[] {
    if (this.top(node)) return this.xattrs(node);
    return this.reader.xattrsAsListed(node.lower!);
  }

  content(node: UnionNode): ContentSource {
    if ((this.getattr(node).mode & S_IFMT) !== S_IFREG) throw new StratumError('USAGE', `${display(Buffer.from(node.path, 'latin1'))} is not a regular file`);
    if (node.upper && node.upper.entry.kind !== 'metacopy') return { kind: 'upper', path: node.upper.path };
    if (node.middle && node.middle.entry.kind !== 'metacopy') return { kind: 'upper', path: node.middle.path };
    const nid = node.lower!;
    const digest = this.reader.objectOf(nid);
    if (digest) return { kind: 'object', digest };
    if (this.reader.getattr(nid).size === 0) return { kind: 'empty' };
    return { kind: 'inline', bytes: this.reader.readContent(nid) };
  }

  /** Every path of the merged view, parents before children. */
  *walk(): Generator<UnionNode> {
    const stack: UnionNode[] = [this.root()];
    while (stack.length > 0) {
      const node = stack.pop()!;
      yield node;
      if (!this.isDir(node)) continue;
      const children = this.readdir(node).map((name) => this.child(node, name)!).filter((c) => c !== undefined);
      for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The base commit as a Tree: image/image-tree.ts (re-exported here for existing callers).

export { emptyTree, imageTree, imageTreeFromBytes } from './image/image-tree.js';

// ---------------------------------------------------------------------------------------------
// mergeUpper: base Tree ⊕ upper dir -> merged Tree.

export interface MergeOptions {
  ns: XattrNamespace;
  style: UpperStyle;
  /** The caller knows that no inode of `base` has nlink > 1 and no entry is a hardlink (a
   * decoded head.tree tells): unless the upper brings an inode of nlink > 1, no hardlink group
   * can exist, and the two walks of the whole tree that find them are skipped. */
  baseLinkFree?: boolean | undefined;
}

/** A regular file whose bytes are in the upper (or bare) dir and must become inline content or an object. */
export interface PendingContent {
  path: Buffer;
  inode: Inode;
}

export interface MergeResult {
  tree: Tree;
  /** One per inode (hardlinks in the upper share one). */
  pending: PendingContent[];
  /** Entries found in the upper dir (whiteouts included, the root not). */
  upperEntries: number;
  /** Of those, whiteouts (deletions). */
  whiteouts: number;
}

/**
 * The merged tree of `base` under `upperDir`. Reads only the upper dir: untouched subtrees of
 * the base are shared into the result as they are. Overlay style takes the root's attributes from
 * the upper root (as the kernel shows them); bare style keeps the base root's attributes.
 * `base` must not be used afterwards (its hardlink flags are renormalized in place).
 */
export function mergeUpper(base: Tree, upperDir: string, options: MergeOptions): MergeResult {
  const lower = treeLower(base);
  const { ns, style, baseLinkFree = false } = options;
  const baseCounts = baseLinkFree ? new Map<Inode, unknown[]>() : linkGroups(base); // before the merge shares (and normalizeLinks edits) base entries
  let upperLinks = false; // an upper inode of nlink > 1 was met
  const pending: PendingContent[] = [];
  const linked = new Map<string, Inode>(); // dev:ino -> inode, for hardlinks inside the upper
  let upperEntries = 0;
  let whiteouts = 0;

  const fileInode = (path: Buffer, e: UpperEntry): Inode => {
    const s = e.stat;
    const key = `${s.dev}:${s.ino}`;
    if (s.nlink > 1n) {
      const seen = linked.get(key);
      if (seen) return seen;
    }
    if (s.nlink > 1n) upperLinks = true;
    const type = Number(s.mode) & S_IFMT;
    const inode = newInode({ mode: Number(s.mode), uid: Number(s.uid), gid: Number(s.gid), nlink: Number(s.nlink), ...mtimeOf(s), size: type === S_IFREG ? Number(s.size) : 0, rdev: Number(s.rdev), xattrs: visibleXattrs(e.raw, ns, style) });
    if (type === S_IFLNK) {
      inode.symlinkTarget = readlinkBytes(path);
      inode.size = inode.symlinkTarget.length;
    }
    if (s.nlink > 1n) linked.set(key, inode);
    return inode;
  };

  const mergeDir = (upperPath: Buffer, dir: Inode, lowerDir: Inode | undefined): void => {
    const children = dir.children!;
    if (lowerDir?.children) for (const [name, entry] of lowerDir.children) children.set(name, entry);
    const names = readdirBytes(upperPath);
    if (style === 'bare') {
      // OCI markers first: they speak about the lower layers, never about this dir's own entries.
      if (names.includes(OCI_OPAQUE)) {
        children.clear();
        upperEntries++;
      }
      for (const name of names) {
        const target = ociWhiteoutTarget(name);
        if (target === undefined) continue;
        children.delete(target);
        upperEntries++;
        whiteouts++;
      }
    }
    for (const name of names) {
      if (style === 'bare' && (name === OCI_OPAQUE || ociWhiteoutTarget(name) !== undefined)) continue;
      const childPath = join(upperPath, name);
      const stat = lstatOrUndefined(childPath);
      if (!stat) continue; // removed while we looked
      const e = readUpperEntry(childPath, stat, ns, style);
      upperEntries++;
      switch (e.kind) {
        case 'whiteout':
          children.delete(name);
          whiteouts++;
          break;
        case 'dir': {
          const below = style === 'overlay' ? lowerDirOf(lower, e, name, lowerDir) : bareLowerDir(lower, e, name, lowerDir);
          const inode = newInode({ mode: Number(stat.mode), uid: Number(stat.uid), gid: Number(stat.gid), ...mtimeOf(stat), xattrs: visibleXattrs(e.raw, ns, style) });
          children.set(name, { inode, hardlink: false });
          mergeDir(childPath, inode, below);
          break;
        }
        case 'metacopy': {
          const data = lowerDataOf(lower, e, name, lowerDir);
          if (data === undefined) throw new StratumError('CORRUPT_STORE', `${display(childPath)} is a metacopy upper file whose data is not in the base commit`);
          const inode = fileInode(childPath, e);
          inode.size = data.size;
          if (data.content) inode.content = data.content;
          if (data.digest) inode.digest = data.digest;
          if (data.payload) inode.payload = data.payload;
          children.set(name, { inode, hardlink: false });
          break;
        }
        case 'plain': {
          const fresh = !linked.has(`${stat.dev}:${stat.ino}`);
          const inode = fileInode(childPath, e);
          children.set(name, { inode, hardlink: false });
          if (fresh && (inode.mode & S_IFMT) === S_IFREG && inode.size > 0) pending.push({ path: childPath, inode });
          break;
        }
      }
    }
  };

  const upperRoot = Buffer.from(upperDir);
  const rootStat = lstatOrUndefined(upperRoot);
  const b = base.root;
  let root: Inode;
  if (style === 'overlay' && rootStat) {
    const e = readUpperEntry(upperRoot, rootStat, ns, style);
    root = newInode({ mode: Number(rootStat.mode), uid: Number(rootStat.uid), gid: Number(rootStat.gid), ...mtimeOf(rootStat), xattrs: visibleXattrs(e.raw, ns) });
  } else {
    root = newInode({ mode: b.mode, uid: b.uid, gid: b.gid, mtimeSec: b.mtimeSec, mtimeNsec: b.mtimeNsec, xattrs: b.xattrs });
  }
  if (rootStat) mergeDir(upperRoot, root, b);
  else for (const [name, entry] of b.children ?? []) root.children!.set(name, entry);
  const tree = { root };
  if (!baseLinkFree || upperLinks) normalizeLinks(tree, baseCounts);
  return { tree, pending, upperEntries, whiteouts };
}

/** Bare dirs have no redirects: a dir merges with the lower dir of the same name unless opaque. */
function bareLowerDir(lower: Lower<Inode>, e: UpperEntry, name: ByteString, parentLower: Inode | undefined): Inode | undefined {
  if (e.opaque || parentLower === undefined) return undefined;
  const found = lower.child(parentLower, name);
  return found !== undefined && lower.isDir(found) ? found : undefined;
}

/** Entries of every inode that may have several (nlink > 1, or reached through a hardlink entry). */
function linkGroups(tree: Tree): Map<Inode, Array<{ dir: Inode; name: ByteString; entry: Entry }>> {
  const groups = new Map<Inode, Array<{ dir: Inode; name: ByteString; entry: Entry }>>();
  const visit = (dir: Inode): void => {
    for (const [name, entry] of dir.children!) {
      const inode = entry.inode;
      if ((inode.mode & S_IFMT) === S_IFDIR) {
        visit(inode);
        continue;
      }
      if (inode.nlink <= 1 && !entry.hardlink) continue; // the common case: one entry, nothing to track
      const list = groups.get(inode);
      if (list) list.push({ dir, name, entry });
      else groups.set(inode, [{ dir, name, entry }]);
    }
  };
  visit(tree.root);
  return groups;
}

/**
 * Hardlinked inodes get exactly one primary entry (the first in byte order that was a primary
 * before, else the first) and an nlink that follows their entries: an inode from the upper gets
 * its number of entries; one from the base keeps what it had, minus the entries it lost, plus the
 * ones it gained (so links the imported tree counted outside itself are kept and an unchanged base
 * writes back to the same bytes). An inode with nlink 1 has one entry by construction.
 */
function normalizeLinks(tree: Tree, baseCounts: Map<Inode, Array<unknown>>): void {
  for (const [inode, list] of linkGroups(tree)) {
    list.sort((a, b) => compareBytes(pathKey(a.dir, a.name, tree), pathKey(b.dir, b.name, tree)));
    const primary = list.find((l) => !l.entry.hardlink) ?? list[0]!;
    const before = baseCounts.get(inode)?.length;
    inode.nlink = before === undefined ? list.length : Math.max(1, inode.nlink - before + list.length);
    for (const l of list) {
      const want = l !== primary;
      // entries may be shared with the base tree: replace rather than mutate
      if (l.entry.hardlink !== want) l.dir.children!.set(l.name, { inode, hardlink: want });
    }
  }
}

/** Path of an entry, for ordering hardlink groups; computed lazily (groups are rare). */
let parents: WeakMap<Inode, { parent: Inode; name: ByteString }> | undefined;
let parentsOf: Tree | undefined;
function pathKey(dir: Inode, name: ByteString, tree: Tree): ByteString {
  if (parentsOf !== tree) {
    parents = new WeakMap();
    const index = (d: Inode): void => {
      for (const [n, e] of d.children!) {
        if ((e.inode.mode & S_IFMT) === S_IFDIR) {
          parents!.set(e.inode, { parent: d, name: n });
          index(e.inode);
        }
      }
    };
    index(tree.root);
    parentsOf = tree;
  }
  const parts = [name];
  for (let d: Inode | undefined = dir; d && d !== tree.root; ) {
    const p = parents!.get(d);
    if (!p) break;
    parts.unshift(p.name);
    d = p.parent;
  }
  return '/' + parts.join('/');
}
