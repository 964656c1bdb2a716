// `diff <a> <b>`: paths added, removed and changed between two commits, found by walking both
// images in step. Directory listings in an image are sorted (strcmp), so each directory is one
// merge of two sorted lists; a path is "changed" when anything a user sees differs: type, mode,
// owner, mtime, size, device, symlink target, xattrs or content (compared by object digest or
// inline bytes, never by reading objects). Directories are reported for their own metadata only.
//
// Public surface: diff, diffImages, DiffEntry.
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../image/erofs.js';
import { FileSource, ImageReader, type DirEntry, type InodeAttr } from '../image/read.js';
import { compareBytes, type ByteString } from '../image/tree.js';
import { StratumError } from '../error.js';
import { parseRef } from '../names.js';
import { resolveRef } from '../resolve.js';
import type { Store } from '../store.js';

export interface DiffEntry {
  path: string;
  change: 'added' | 'removed' | 'changed';
  /** For changes: which aspects differ. */
  what?: string[];
}

export async function diff(store: Store, a: string, b: string): Promise<{ from: string; to: string; entries: DiffEntry[] }> {
  const from = (await resolveRef(store, parseRef(a))).id;
  const to = (await resolveRef(store, parseRef(b))).id;
  const sa = new FileSource(store.commits.imagePath(from));
  const sb = new FileSource(store.commits.imagePath(to));
  try {
    return { from, to, entries: diffImages(ImageReader.open(sa), ImageReader.open(sb)) };
  } finally {
    sa.close();
    sb.close();
  }
}

const MAX_DEPTH = 4096;

export function diffImages(a: ImageReader, b: ImageReader): DiffEntry[] {
  const out: DiffEntry[] = [];
  const show = (path: ByteString): string => Buffer.from(path || '/', 'latin1').toString('utf8');
  const rootChange = differences(a, a.rootNid, b, b.rootNid);
  if (rootChange.length) out.push({ path: '/', change: 'changed', what: rootChange });

  // a directory met twice in one image is a cycle (or a directory hardlink): refused, never followed
  const seen = { a: new Set<number>(), b: new Set<number>() };
  const enter = (side: 'a' | 'b', nid: number): void => {
    const dirs = seen[side];
    if (dirs.has(nid)) throw new StratumError('CORRUPT_IMAGE', `corrupt image: directory ${nid} appears twice (a cycle or a directory hardlink)`);
    dirs.add(nid);
  };

  const everything = (reader: ImageReader, nid: number, path: ByteString, change: 'added' | 'removed', depth: number): void => {
    out.push({ path: show(path), change });
    if ((reader.getattr(nid).mode & S_IFMT) !== S_IFDIR) return;
    if (depth > MAX_DEPTH) throw new StratumError('CORRUPT_IMAGE', `corrupt image: directories nested deeper than ${MAX_DEPTH}`);
    enter(change === 'removed' ? 'a' : 'b', nid);
    for (const e of children(reader, nid)) everything(reader, e.nid, `${path}/${e.name}`, change, depth + 1);
  };

  const walk = (an: number, bn: number, path: ByteString, depth: number): void => {
    if (depth > MAX_DEPTH) throw new StratumError('CORRUPT_IMAGE', `corrupt image: directories nested deeper than ${MAX_DEPTH}`);
    enter('a', an);
    enter('b', bn);
    const left = children(a, an);
    const right = children(b, bn);
    let i = 0;
    let j = 0;
    while (i < left.length || j < right.length) {
      const order = i >= left.length ? 1 : j >= right.length ? -1 : compareBytes(left[i]!.name, right[j]!.name);
      if (order < 0) {
        everything(a, left[i]!.nid, `${path}/${left[i]!.name}`, 'removed', depth + 1);
        i++;
      } else if (order > 0) {
        everything(b, right[j]!.nid, `${path}/${right[j]!.name}`, 'added', depth + 1);
        j++;
      } else {
        const child = `${path}/${left[i]!.name}`;
        const ta = a.getattr(left[i]!.nid).mode & S_IFMT;
        const tb = b.getattr(right[j]!.nid).mode & S_IFMT;
        if (ta !== tb) {
          everything(a, left[i]!.nid, child, 'removed', depth + 1);
          everything(b, right[j]!.nid, child, 'added', depth + 1);
        } else {
          const what = differences(a, left[i]!.nid, b, right[j]!.nid);
          if (what.length) out.push({ path: show(child), change: 'changed', what });
          if (ta === S_IFDIR) walk(left[i]!.nid, right[j]!.nid, child, depth + 1);
        }
        i++;
        j++;
      }
    }
  };
  walk(a.rootNid, b.rootNid, '', 0);
  return out;
}

function children(reader: ImageReader, nid: number): DirEntry[] {
  const all: DirEntry[] = [];
  for (let offset = 0; ; ) {
    const batch = reader.readdir(nid, offset, 1024);
    if (batch.length === 0) return all;
    for (const e of batch) if (e.name !== '.' && e.name !== '..') all.push(e);
    offset = batch[batch.length - 1]!.next;
  }
}

function differences(a: ImageReader, an: number, b: ImageReader, bn: number): string[] {
  const x: InodeAttr = a.getattr(an);
  const y: InodeAttr = b.getattr(bn);
  const what: string[] = [];
  const type = x.mode & S_IFMT;
  if (x.mode !== y.mode) what.push('mode');
  if (x.uid !== y.uid || x.gid !== y.gid) what.push('owner');
  if (x.mtimeSec !== y.mtimeSec || x.mtimeNsec !== y.mtimeNsec) what.push('mtime');
  if (x.rdev !== y.rdev) what.push('device');
  if (type === S_IFLNK && a.readlink(an) !== b.readlink(bn)) what.push('target');
  if (type === S_IFREG && !sameContent(a, an, x, b, bn, y)) what.push('content');
  if (!sameXattrs(a, an, b, bn)) what.push('xattrs');
  return what;
}

function sameContent(a: ImageReader, an: number, x: InodeAttr, b: ImageReader, bn: number, y: InodeAttr): boolean {
  if (x.size !== y.size) return false;
  const ea = a.objectOf(an);
  const eb = b.objectOf(bn);
  if (ea !== undefined || eb !== undefined) return ea === eb;
  return Buffer.from(a.readContent(an)).equals(Buffer.from(b.readContent(bn)));
}

function sameXattrs(a: ImageReader, an: number, b: ImageReader, bn: number): boolean {
  const norm = (xs: Array<{ name: ByteString; value: Uint8Array }>): string =>
    xs.map((v) => `${v.name}=${Buffer.from(v.value).toString('hex')}`).sort().join('\n');
  return norm(a.xattrs(an)) === norm(b.xattrs(bn));
}
