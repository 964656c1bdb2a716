// What a mounted commit should look like, path by path, computed three ways for the tests:
// from the source tree (the spec of the kernel's view), through our reader, and (kernel test)
// through a real erofs + overlayfs mount.
import { createHash } from 'node:crypto';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, XATTR_PREFIXES } from '../../../src/store/image/erofs.js';
import { type ImageReader, walkImage } from '../../../src/store/image/read.js';
import { type ByteString, type Inode, type Tree, byteString, walkTree } from '../../../src/store/image/tree.js';

export interface View {
  mode: string;
  uid: number;
  gid: number;
  mtime: string;
  size?: number;
  rdev?: number;
  target?: string;
  content?: string;
  xattrs: string[];
}

export type Resolve = (path: ByteString | undefined, digest: string | undefined) => Uint8Array | undefined;

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
export const contentId = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const isWhiteout = (n: Inode): boolean => (n.mode & S_IFMT) === S_IFCHR && n.rdev === 0;
const knownNamespace = (name: string): boolean => XATTR_PREFIXES.some(([p]) => name.startsWith(p));

/**
 * `name=value` in hex, sorted. The VFS lists user.* xattrs of special files and symlinks but
 * refuses to read them (ENODATA), whoever serves the inode; such values show as `?`.
 */
export function fmtXattrs(list: Array<{ name: ByteString; value: Uint8Array | undefined }>, mode: number): string[] {
  const type = mode & S_IFMT;
  const readable = (name: string): boolean => !name.startsWith('user.') || type === S_IFREG || type === S_IFDIR;
  return list.map((x) => `${Buffer.from(x.name, 'latin1').toString('hex')}=${x.value && readable(x.name) ? hex(x.value) : '?'}`).sort();
}

/** The view overlayfs gives of the image written from `tree` (composefs_version `version`). */
export function expectedView(tree: Tree, version: number, resolve: Resolve): Map<ByteString, View> {
  const out = new Map<ByteString, View>();
  const parentMarks = new Map<Inode, Map<string, Uint8Array>>();
  // First find the directories that hold a primary whiteout entry.
  for (const [path, entry] of walkTree(tree)) {
    if (entry.hardlink || !isWhiteout(entry.inode)) continue;
    const parentPath = path.slice(0, path.lastIndexOf('/')) || '/';
    let parent = tree.root;
    for (const part of parentPath.split('/')) if (part) parent = parent.children!.get(part)!.inode;
    const marks = parentMarks.get(parent) ?? new Map<string, Uint8Array>();
    marks.set('trusted.overlay.whiteouts', new Uint8Array(0));
    marks.set('user.overlay.whiteouts', new Uint8Array(0));
    if (version >= 1) {
      marks.set('trusted.overlay.opaque', Uint8Array.of(0x78));
      marks.set('user.overlay.opaque', Uint8Array.of(0x78));
    }
    parentMarks.set(parent, marks);
  }
  for (const [path, entry] of walkTree(tree)) {
    const n = entry.inode;
    const xattrs = new Map<string, Uint8Array>();
    for (const x of n.xattrs) if (knownNamespace(x.name)) xattrs.set(x.name, x.value);
    let mode = n.mode;
    const type = n.mode & S_IFMT;
    if (isWhiteout(n)) {
      mode = S_IFREG | (n.mode & ~S_IFMT);
      xattrs.set('trusted.overlay.whiteout', new Uint8Array(0));
      xattrs.set('user.overlay.whiteout', new Uint8Array(0));
    }
    for (const [k, v] of parentMarks.get(n) ?? []) xattrs.set(k, v);
    const v: View = { mode: mode.toString(8), uid: n.uid, gid: n.gid, mtime: `${n.mtimeSec}.${n.mtimeNsec}`, xattrs: fmtXattrs([...xattrs].map(([name, value]) => ({ name, value })), mode) };
    if (type === S_IFLNK) v.target = n.symlinkTarget!;
    if ((mode & S_IFMT) === S_IFCHR || type === S_IFBLK) v.rdev = n.rdev % 2 ** 32;
    if ((mode & S_IFMT) === S_IFREG) {
      v.size = isWhiteout(n) ? 0 : n.size;
      const bytes = isWhiteout(n) || n.size === 0 ? new Uint8Array(0) : n.content ?? resolve(n.payload, n.digest);
      v.content = bytes ? contentId(bytes) : `object:${n.payload ?? ''}:${n.digest ?? ''}`;
    }
    out.set(path, v);
  }
  return out;
}

/** The same through our reader. */
export function readerView(reader: ImageReader, resolve: Resolve): Map<ByteString, View> {
  const out = new Map<ByteString, View>();
  walkImage(reader, (path, a, nid) => {
    const type = a.mode & S_IFMT;
    const v: View = { mode: a.mode.toString(8), uid: a.uid, gid: a.gid, mtime: `${a.mtimeSec}.${a.mtimeNsec}`, xattrs: fmtXattrs(reader.xattrs(nid), a.mode) };
    if (type === S_IFLNK) v.target = reader.readlink(nid);
    if (type === S_IFCHR || type === S_IFBLK) v.rdev = a.rdev;
    if (type === S_IFREG) {
      v.size = a.size;
      const ext = reader.external(nid);
      if (ext) {
        const bytes = resolve(ext.path, ext.digest);
        v.content = bytes ? contentId(bytes) : `object:${ext.path ?? ''}:${ext.digest ?? ''}`;
      } else v.content = contentId(reader.readContent(nid));
    }
    out.set(path, v);
  });
  return out;
}

/** The view with every mtime at or after `since` (unix seconds) shown as 'recent': times the clock set. */
export function maskRecent(view: Map<ByteString, View>, since: number): Map<ByteString, View> {
  const out = new Map<ByteString, View>();
  for (const [path, v] of view) out.set(path, Number(v.mtime.split('.')[0]) >= since ? { ...v, mtime: 'recent' } : v);
  return out;
}

export function diffViews(a: Map<ByteString, View>, b: Map<ByteString, View>, limit = 5): string[] {
  const problems: string[] = [];
  for (const [path, va] of a) {
    const vb = b.get(path);
    const show = JSON.stringify(path);
    if (!vb) problems.push(`${show} missing on the right`);
    else if (JSON.stringify(va) !== JSON.stringify(vb)) problems.push(`${show}: ${JSON.stringify(va)} != ${JSON.stringify(vb)}`);
    if (problems.length >= limit) return problems;
  }
  for (const path of b.keys()) if (!a.has(path)) problems.push(`${JSON.stringify(path)} missing on the left`);
  return problems.slice(0, limit);
}

export { byteString };
