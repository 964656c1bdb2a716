// The kernel overlayfs upper-dir format, entry by entry: what one file in an upper (or a bare
// delta dir) means for the merged view. Whiteouts, opaque dirs, redirects, metacopy and the
// overlay-private xattrs are decided here and nowhere else; union.ts combines these decisions
// with a lower layer. No FUSE types, no store types: plain paths, stats and xattrs.
//
// Public surface: XattrNamespace, UpperStyle, UpperEntry, readUpperEntry, visibleXattrs,
// storedXattrName, isOverlayWhiteout, ociWhiteoutTarget, OCI_OPAQUE, makeFreshUpper, upperRootAttr, setMtime.
import { promises as fsp, type BigIntStats } from 'node:fs';
import { anyLength, lutimensNs } from '../native/files.js';
import { lsetxattr } from '../native/xattr.js';
import { isSystemError, wrapSystemError } from './error.js';
import { S_IFDIR, S_IFMT, S_IFREG, isWhiteout } from './image/erofs.js';
import type { ByteString, Inode, Xattr } from './image/tree.js';
import { byteString } from './image/tree.js';
import { readXattrs, splitNs } from './source.js';

/** Where overlay's own xattrs live in an upper: `trusted.` when written as root, `user.` otherwise. */
export type XattrNamespace = 'trusted' | 'user';

/**
 * `overlay`: a HEAD's upper, read as the kernel does (char 0:0 whiteouts only, opaque, redirect,
 * metacopy). `bare`: a delta dir from outside (`import --bare`): char 0:0 and xattr whiteouts,
 * the opaque xattr in either namespace, and OCI's `.wh.<name>` / `.wh..wh..opq`; no redirects
 * and no metacopy.
 */
export type UpperStyle = 'overlay' | 'bare';

export interface UpperEntry {
  kind: 'whiteout' | 'dir' | 'metacopy' | 'plain';
  stat: BigIntStats;
  /** Every xattr as stored, overlay-private ones included. */
  raw: Xattr[];
  /** Directories: do not merge with anything below. */
  opaque: boolean;
  /** Directories and metacopy files: where the lower (data) lives; absolute (`/a/b`) or a sibling name. */
  redirect: ByteString | undefined;
}

/** OCI layer marker: the directory holding it hides everything below. */
export const OCI_OPAQUE = '.wh..wh..opq';
const OCI_PREFIX = '.wh.';

/** `.wh.<name>` -> `<name>`; undefined for any other name (and for the opaque marker). */
export function ociWhiteoutTarget(name: ByteString): ByteString | undefined {
  if (!name.startsWith(OCI_PREFIX) || name === OCI_OPAQUE) return undefined;
  const target = name.slice(OCI_PREFIX.length);
  return target.length > 0 ? target : undefined;
}

export function isOverlayWhiteout(stat: { mode: number | bigint; rdev: number | bigint }): boolean {
  return isWhiteout(Number(stat.mode), Number(stat.rdev));
}

/** Reads one upper entry; undefined when it does not exist. */
export function readUpperEntry(path: Buffer, stat: BigIntStats, ns: XattrNamespace, style: UpperStyle): UpperEntry {
  const raw = anyLength(path, readXattrs);
  const type = Number(stat.mode) & S_IFMT;
  const get = (suffix: string, namespaces: XattrNamespace[] = [ns]): Uint8Array | undefined => {
    for (const n of namespaces) {
      const x = raw.find((a) => a.name === `${n}.overlay.${suffix}`);
      if (x) return x.value;
    }
    return undefined;
  };
  const entry: UpperEntry = { kind: 'plain', stat, raw, opaque: false, redirect: undefined };
  const both: XattrNamespace[] = ['trusted', 'user'];
  if (isOverlayWhiteout(stat)) entry.kind = 'whiteout';
  else if (style === 'bare' && type === S_IFREG && stat.size === 0n && get('whiteout', both) !== undefined) entry.kind = 'whiteout';
  else if (type === S_IFDIR) {
    entry.kind = 'dir';
    const opaque = get('opaque', style === 'bare' ? both : [ns]);
    entry.opaque = opaque !== undefined && opaque.length === 1 && opaque[0] === 0x79; // 'y'
    const redirect = style === 'overlay' ? get('redirect') : undefined;
    if (redirect && redirect.length > 0) entry.redirect = byteString(redirect);
  } else if (type === S_IFREG && style === 'overlay' && get('metacopy') !== undefined) {
    entry.kind = 'metacopy';
    const redirect = get('redirect');
    if (redirect && redirect.length > 0) entry.redirect = byteString(redirect);
  }
  return entry;
}

/**
 * The xattrs the merged view shows for an upper entry: overlay's private ones (`<ns>.overlay.*`:
 * opaque, redirect, metacopy, origin, impure, nlink, ...) hidden, escaped ones
 * (`<ns>.overlay.overlay.*`, how overlay stores a user's `<ns>.overlay.*`) unescaped.
 */
export function visibleXattrs(raw: Xattr[], ns: XattrNamespace, style: UpperStyle = 'overlay'): Xattr[] {
  const prefix = `${ns}.overlay.`;
  // A bare dir marks deletions in either namespace; the markers are never content.
  const markers = style === 'bare' ? BARE_MARKERS : NO_MARKERS;
  const escaped = `${ns}.overlay.overlay.`;
  const out: Xattr[] = [];
  for (const x of raw) {
    if (x.name.startsWith(escaped)) out.push({ name: prefix + x.name.slice(escaped.length), value: x.value });
    else if (!x.name.startsWith(prefix) && !markers.has(x.name)) out.push(x);
  }
  return out;
}

const NO_MARKERS: ReadonlySet<string> = new Set();
const BARE_MARKERS: ReadonlySet<string> = new Set(['trusted', 'user'].flatMap((n) => ['opaque', 'whiteout', 'whiteouts'].map((m) => `${n}.overlay.${m}`)));

/** The name under which a visible xattr is stored in an upper (the inverse of visibleXattrs). */
export function storedXattrName(name: ByteString, ns: XattrNamespace): ByteString {
  const prefix = `${ns}.overlay.`;
  return name.startsWith(prefix) ? `${ns}.overlay.overlay.${name.slice(prefix.length)}` : name;
}

/** The root attributes of an upper dir, as a tree inode (without children). */
export function upperRootAttr(stat: BigIntStats): Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec'> {
  const { sec, nsec } = splitNs(stat.mtimeNs);
  return { mode: Number(stat.mode), uid: Number(stat.uid), gid: Number(stat.gid), mtimeSec: sec, mtimeNsec: nsec };
}

/** Sets a path's mtime to the nanosecond (Node's utimes rounds through a double). */
export function setMtime(path: string | Buffer, sec: number, nsec: number): void {
  lutimensNs(path, { sec, nsec });
}

/**
 * Creates `dir` as an empty upper whose root looks exactly like `root` (mode, owner, mtime to the
 * nanosecond, xattrs): the kernel shows the upper root's attributes for the merged root, so a
 * fresh upper over a commit must carry that commit's root attributes.
 */
export async function makeFreshUpper(dir: string, root: Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'>, ns: XattrNamespace): Promise<void> {
  try {
    await fsp.mkdir(dir, { mode: 0o700 });
    try {
      await fsp.chown(dir, root.uid, root.gid);
    } catch (err) {
      if (!isSystemError(err, 'EPERM')) throw err; // not root: the upper stays ours
    }
    await fsp.chmod(dir, root.mode & 0o7777);
    for (const x of root.xattrs) {
      try {
        lsetxattr(dir, Buffer.from(storedXattrName(x.name, ns), 'latin1'), x.value);
      } catch (err) {
        if (!(isSystemError(err, 'EPERM') || isSystemError(err, 'ENOTSUP') || isSystemError(err, 'EOPNOTSUPP'))) throw err;
      }
    }
    setMtime(dir, root.mtimeSec, root.mtimeNsec);
  } catch (err) {
    throw wrapSystemError(err, `preparing the upper dir ${dir}`);
  }
}
