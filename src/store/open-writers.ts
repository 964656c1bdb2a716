// Upper files that some process still has open for writing, for a live commit of a kernel-mode
// HEAD (docs/kernel.md "Live commit"). The FUSE server sees every handle it hands out; with the
// kernel overlay in between we do not, so we ask the kernel: a read lease on a file is refused
// while anyone has it open for writing or mapped shared-writable (fcntl F_SETLEASE).
//
// Such a file must neither become an object by hard link (later writes would change an object)
// nor leave HEAD (later writes would be lost). So its inode moves on into the next upper under
// every name (`keepInUpper`), and the upper being committed gets a copy in its place
// (`snapshotKept`): the commit stores the file as it was when the copy was taken.
//
// Public surface: KeptFile, openWriters, mergeKept, keepInUpper, snapshotKept.
import { chmodSync, chownSync, closeSync, constants as C, copyFileSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { anyLength, lutimensNs, openForWriting } from '../native/files.js';
import { lgetxattr, llistxattr, lsetxattr } from '../native/xattr.js';
import { isSystemError, wrapSystemError } from './error.js';

/** One inode being written: its inode number and every name it has in the upper (relative, hex). */
export interface KeptFile {
  ino: string;
  names: string[];
}

const at = (root: string, rel: string): Buffer => Buffer.concat([Buffer.from(root + '/'), Buffer.from(rel, 'hex')]);

/** Every writer found in `a` or `b`, one entry per inode with the names of both. */
export function mergeKept(a: KeptFile[], b: KeptFile[]): KeptFile[] {
  const byIno = new Map<string, KeptFile>();
  for (const k of [...a, ...b]) {
    const seen = byIno.get(k.ino);
    byIno.set(k.ino, seen ? { ino: k.ino, names: [...new Set([...seen.names, ...k.names])] } : { ino: k.ino, names: [...k.names] });
  }
  return [...byIno.values()];
}

/** Regular files of `upper` open for writing somewhere, each with all its names. */
export function openWriters(upper: string): KeptFile[] {
  const names = new Map<string, string[]>();
  const written = new Set<string>();
  const walk = (dir: Buffer, rel: Buffer | undefined): void => {
    let entries: Buffer[];
    try {
      entries = anyLength(dir, (p) => readdirSync(p, { encoding: 'buffer' }) as Buffer[]);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return;
      throw wrapSystemError(err, `reading ${dir.toString()}`);
    }
    for (const name of entries) {
      const path = Buffer.concat([dir, Buffer.from('/'), name]);
      const r = rel ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
      const st = anyLength(path, (p) => lstatSync(p, { bigint: true, throwIfNoEntry: false }));
      if (st?.isDirectory()) walk(path, r);
      if (!st?.isFile()) continue;
      const ino = String(st.ino);
      const seen = names.get(ino);
      if (seen) { seen.push(r.toString('hex')); continue; }
      names.set(ino, [r.toString('hex')]);
      if (beingWritten(path)) written.add(ino);
    }
  };
  walk(Buffer.from(upper), undefined);
  return [...written].map((ino) => ({ ino, names: names.get(ino)! }));
}

function beingWritten(path: Buffer): boolean {
  let fd: number;
  try {
    fd = anyLength(path, (p) => openSync(p, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK));
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return false;
    throw wrapSystemError(err, `opening ${path.toString()}`);
  }
  try {
    return openForWriting(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Links each kept file into `next` (the next upper) under every name it has in `upper`, making
 * missing parent dirs with the attributes of the same dirs in `upper` (but none of their overlay
 * xattrs: the dir in `next` merges with the one below it). A name `next` already has is left
 * alone.
 */
export function keepInUpper(upper: string, next: string, kept: KeptFile[]): void {
  for (const k of kept) {
    for (const rel of k.names) {
      try {
        const dest = at(next, rel);
        if (lstatSync(dest, { throwIfNoEntry: false })) continue;
        const parent = ensureParents(upper, next, Buffer.from(rel, 'hex'));
        if (!parent) continue;
        keepingTimes(parent, () => linkSync(at(upper, rel), dest));
      } catch (err) {
        // the next upper changed the path meanwhile (a whiteout, a file where a dir was): the
        // newer state wins there; the commit still gets its copy (snapshotKept)
        if (!['ENOTDIR', 'ENOENT', 'EEXIST'].some((c) => isSystemError(err, c))) throw err;
      }
    }
  }
}

/** Makes the parent dirs of `rel` in `next` like those in `upper`; their path in `next`, or undefined if `upper` has none. */
function ensureParents(upper: string, next: string, rel: Buffer): Buffer | undefined {
  const parts: Buffer[] = [];
  for (let start = 0, i = rel.indexOf(0x2f); i >= 0; start = i + 1, i = rel.indexOf(0x2f, start)) parts.push(rel.subarray(0, i));
  let parent: Buffer = Buffer.from(next);
  for (const part of parts) {
    const dest = at(next, part.toString('hex'));
    const st = lstatSync(dest, { bigint: true, throwIfNoEntry: false });
    if (st?.isDirectory()) { parent = dest; continue; }
    if (st) return undefined; // something else took the name in the next upper
    const src = at(upper, part.toString('hex'));
    const from = lstatSync(src, { bigint: true, throwIfNoEntry: false });
    if (!from?.isDirectory()) return undefined;
    keepingTimes(parent, () => mkdirSync(dest, { mode: 0o700 }));
    copyAttributes(src, dest, from, true);
    parent = dest;
  }
  return parent;
}

/**
 * Gives every kept file still shared with the next upper a copy of its own in `upper`, under
 * every name: from here on `upper` can be committed (and its files linked into objects) while the
 * writers go on writing the inode that now lives in the next upper only. Idempotent (a crash
 * recovery runs it again): a name no longer pointing at the kept inode is done.
 */
export function snapshotKept(upper: string, tmpDir: string, kept: KeptFile[]): number {
  let copied = 0;
  for (const k of kept) {
    const names = k.names.filter((rel) => String(lstatSync(at(upper, rel), { bigint: true, throwIfNoEntry: false })?.ino) === k.ino);
    if (names.length === 0) continue;
    const first = at(upper, names[0]!);
    const st = lstatSync(first, { bigint: true });
    const copy = join(tmpDir, `kept-${process.pid}-${k.ino}`);
    rmSync(copy, { force: true });
    try {
      copyFileSync(first, copy, C.COPYFILE_EXCL);
      copyAttributes(first, Buffer.from(copy), st, false);
      for (const rel of names) {
        const dest = at(upper, rel);
        const step = `${copy}.${names.indexOf(rel)}`;
        rmSync(step, { force: true });
        linkSync(copy, step);
        const parent = dest.subarray(0, dest.lastIndexOf(0x2f));
        keepingTimes(parent, () => renameSync(step, dest));
      }
    } catch (err) {
      throw wrapSystemError(err, `copying ${first.toString()}, which is open for writing`);
    } finally {
      rmSync(copy, { force: true });
    }
    copied++;
  }
  return copied;
}

/** Owner, mode, xattrs (without overlay ones for dirs) and times of `src` onto `dest`. */
function copyAttributes(src: Buffer, dest: Buffer | string, st: BigIntStats, dropOverlayXattrs: boolean): void {
  try {
    chownSync(dest, Number(st.uid), Number(st.gid));
  } catch (err) {
    if (!isSystemError(err, 'EPERM')) throw err;
  }
  chmodSync(dest, Number(st.mode) & 0o7777);
  for (const name of llistxattr(src, { encoding: 'buffer' })) {
    const text = name.toString('latin1');
    if (dropOverlayXattrs && /^(trusted|user)\.overlay\./.test(text)) continue;
    try {
      lsetxattr(dest, name, lgetxattr(src, name));
    } catch (err) {
      if (!isSystemError(err, 'EPERM') && !isSystemError(err, 'ENOTSUP') && !isSystemError(err, 'EOPNOTSUPP') && !isSystemError(err, 'ENODATA')) throw err;
    }
  }
  lutimensNs(dest, nsOf(st.mtimeNs), nsOf(st.atimeNs));
}

/** Runs fn and puts back the dir's times, which adding or replacing an entry changes. */
function keepingTimes(dir: Buffer | string, fn: () => void): void {
  const st = lstatSync(dir, { bigint: true });
  fn();
  lutimensNs(dir, nsOf(st.mtimeNs), nsOf(st.atimeNs));
}

function nsOf(ns: bigint): { sec: number; nsec: number } {
  return { sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) };
}
