// Writing a HEAD's upper dir in the kernel overlayfs format, one change at a time: what a live
// server does where the kernel would do it (copy-up, whiteouts, opaque dirs, redirects). The rules
// are upper.ts's read rules run backwards; docs/fuse.md lists them. No FUSE types: plain paths,
// attributes and xattrs, so the rules can be tested without a mount.
//
// Every new entry is built in a scratch dir on the upper's filesystem (the label's work dir, as the
// kernel does) and renamed into place, so the upper never shows a half-made file or dir.
// Upper paths may be longer than PATH_MAX (a mount's paths have no such limit when a process
// walks down with relative paths): every call on one goes through `at` (anyLength). Scratch
// paths are short.
//
// copyUpEntry decides what a copy-up takes from the merged view (which bytes: an object, a middle
// layer's file, inline bytes; which attributes and xattrs; the parent's times kept) and has
// UpperWriter write it; the FUSE layer only walks its inode table to the parents and registers.
//
// Public surface: UpperWriter, CopyUpAttrs, CopyUpData, copyUpEntry, copyUpData, CopyUpOptions.
import { constants as C, closeSync, readSync, copyFileSync, fchownSync, fchmodSync, fsyncSync, lchownSync, linkSync, mkdirSync, openSync, readdirSync, rmSync, rmdirSync, symlinkSync, unlinkSync, writeSync } from 'node:fs';
import { anyLength as at, mknod, renameat2, RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT } from '../native/files.js';
import { lsetxattr, lremovexattr } from '../native/xattr.js';
import { backing } from '../native/fuse.js';
import { isSystemError } from './error.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './image/erofs.js';
import type { ByteString, Xattr } from './image/tree.js';
import { isOverlayWhiteout, storedXattrName, type XattrNamespace } from './upper.js';
import type { UnionNode, UnionView } from './union.js';

/** What a copied-up entry keeps of the entry it replaces. */
export interface CopyUpAttrs {
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Visible xattrs (stored escaped where they collide with overlay's own). */
  xattrs: Xattr[];
}

/**
 * Where a regular file's bytes come from when it is copied up. `prepared`: a file from
 * `scratchFile()` that already holds them (copied off the caller's thread); copyUp consumes it.
 */
export type CopyUpData = { kind: 'file'; path: string | Buffer } | { kind: 'bytes'; bytes: Uint8Array } | { kind: 'empty' } | { kind: 'prepared'; path: Buffer };

const child = (dir: Buffer, name: ByteString | Buffer): Buffer => Buffer.concat([dir, Buffer.from('/'), typeof name === 'string' ? Buffer.from(name, 'latin1') : name]);

export class UpperWriter {
  private readonly scratch: Buffer;
  private seq = 0;
  private readonly asRoot = process.getuid?.() === 0;

  /**
   * `scratchDir`: a directory on the upper's filesystem that nothing else uses (made and emptied
   * here). Files a live commit had set aside (`kept.*`, with `kept.json` naming their paths) are
   * not deleted: a server killed during a commit leaves them, and they move to `preserved` for
   * a person to look at (the path is in `preserved`).
   */
  readonly preserved: string | undefined;

  constructor(readonly ns: XattrNamespace, scratchDir: string) {
    let keep = false;
    try {
      keep = readdirSync(scratchDir).some((n) => n.startsWith('kept.'));
    } catch {
      keep = false;
    }
    if (keep) {
      this.preserved = `${scratchDir}-kept-${new Date().toISOString().replace(/[:.]/g, '')}`;
      renameat2(scratchDir, this.preserved, RENAME_NOREPLACE);
    }
    rmSync(scratchDir, { recursive: true, force: true });
    mkdirSync(scratchDir, { recursive: true, mode: 0o700 });
    this.scratch = Buffer.from(scratchDir);
  }

  private tmp(): Buffer {
    return child(this.scratch, `t${process.pid}.${this.seq++}`);
  }

  /** A fresh name in the scratch dir (same filesystem as the upper) for a `prepared` copy-up. */
  scratchFile(): Buffer {
    return this.tmp();
  }

  /** Overlay-private xattr name in this upper's namespace: `<ns>.overlay.<what>`. */
  private priv(what: string): Buffer {
    return Buffer.from(`${this.ns}.overlay.${what}`);
  }

  /** Copies attributes onto a freshly made scratch entry (owner, mode, xattrs, times to the ns). */
  private applyAttrs(path: Buffer, a: CopyUpAttrs, type: number): void {
    if (this.asRoot) lchownSync(path, a.uid, a.gid);
    if (type !== S_IFLNK) backing.chmod(path, -1, a.mode & 0o7777);
    for (const x of a.xattrs) {
      try {
        lsetxattr(path, Buffer.from(storedXattrName(x.name, this.ns), 'latin1'), x.value);
      } catch (err) {
        // user.* cannot live on symlinks and specials; unprivileged servers cannot write trusted.*
        if (!(isSystemError(err, 'EPERM') || isSystemError(err, 'ENOTSUP') || isSystemError(err, 'EOPNOTSUPP'))) throw err;
      }
    }
    backing.utimens(path, -1, { sec: a.mtimeSec, nsec: a.mtimeNsec }, { sec: a.mtimeSec, nsec: a.mtimeNsec });
  }

  /** Makes `dest` (absent, or a whiteout, or a metacopy file) a full copy of an entry. Not for dirs with content. */
  copyUp(dest: Buffer, a: CopyUpAttrs, data: CopyUpData | undefined, target?: Buffer): void {
    const t = data?.kind === 'prepared' ? data.path : this.tmp();
    const type = a.mode & S_IFMT;
    try {
      switch (type) {
        case S_IFDIR:
          mkdirSync(t, { mode: 0o700 });
          break;
        case S_IFREG:
          if (data?.kind === 'file') at(Buffer.from(data.path), (src) => copyFileSync(src, t));
          else if (data?.kind === 'prepared') break;
          else {
            const fd = openSync(t, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
            try {
              if (data?.kind === 'bytes' && data.bytes.length > 0) writeSync(fd, data.bytes);
            } finally {
              closeSync(fd);
            }
          }
          break;
        case S_IFLNK:
          symlinkSync(target!, t);
          break;
        case S_IFCHR: case S_IFBLK: case S_IFIFO: case S_IFSOCK:
          mknod(t, type | 0o600, Math.floor(a.rdev / 256) & 0xfff, (a.rdev & 0xff) | ((a.rdev >> 12) & 0xfff00));
          break;
        default:
          throw Object.assign(new Error(`cannot copy up mode ${type.toString(8)}`), { code: 'EIO', errno: 5 });
      }
      this.applyAttrs(t, a, type);
      at(dest, (d) => renameat2(t, d, 0));
    } catch (err) {
      rmSync(t, { recursive: true, force: true });
      throw err;
    }
  }

  /** A new dir at `dest` (replacing a whiteout there if any), opaque when asked. */
  mkdir(dest: Buffer, mode: number, owner: { uid: number; gid: number } | undefined, opaque: boolean): void {
    const t = this.tmp();
    mkdirSync(t, { mode: 0o700 });
    try {
      if (owner && this.asRoot) lchownSync(t, owner.uid, owner.gid);
      backing.chmod(t, -1, mode & 0o7777);
      if (opaque) this.setOpaque(t);
      this.replaceWhiteout(t, dest);
    } catch (err) {
      rmSync(t, { recursive: true, force: true });
      throw err;
    }
  }

  /** Moves a scratch entry to `dest`, which may be a whiteout (replaced) or absent. */
  private replaceWhiteout(t: Buffer, dest: Buffer): void {
    at(dest, (d) => {
      try {
        renameat2(t, d, RENAME_NOREPLACE);
      } catch (err) {
        if (!isSystemError(err, 'EEXIST')) throw err;
        const v = backing.stat(d);
        if (!isOverlayWhiteout({ mode: v[1]!, rdev: v[5]! })) throw err;
        // a dir cannot replace a char dev by rename: swap them (atomic, as the kernel does), drop the whiteout
        renameat2(t, d, RENAME_EXCHANGE);
        unlinkSync(t);
      }
    });
  }

  /** Removes a whiteout at `dest` if there is one (before making a new entry there). */
  clearWhiteout(dest: Buffer): boolean {
    return at(dest, (d) => {
      const v = new Float64Array(15);
      if (backing.statInto(d, -1, v) < 0) return false;
      if (!isOverlayWhiteout({ mode: v[1]!, rdev: v[5]! })) return false;
      unlinkSync(d);
      return true;
    });
  }

  /** Puts a whiteout at `dest` (replacing whatever upper entry is there; dirs must be empty of real entries). */
  whiteout(dest: Buffer): void {
    const t = this.tmp();
    mknod(t, S_IFCHR, 0, 0);
    try {
      at(dest, (d) => renameat2(t, d, 0));
    } catch (err) {
      if (!(isSystemError(err, 'EISDIR') || isSystemError(err, 'ENOTEMPTY') || isSystemError(err, 'EEXIST'))) {
        unlinkSync(t);
        throw err;
      }
      this.removeDir(dest);
      at(dest, (d) => renameat2(t, d, 0));
    }
  }

  /** Removes an upper entry (a dir with whatever whiteouts it holds, or anything else). */
  remove(path: Buffer): void {
    const v = new Float64Array(15);
    if (at(path, (p) => backing.statInto(p, -1, v)) < 0) return;
    if ((v[1]! & S_IFMT) === S_IFDIR) this.removeDir(path);
    else at(path, (p) => unlinkSync(p));
  }

  /** An upper dir the view sees as empty holds only whiteouts (and empty dirs of them): clear it. */
  private removeDir(path: Buffer): void {
    for (const name of at(path, (p) => readdirSync(p, { encoding: 'buffer' }) as Buffer[])) this.remove(child(path, name));
    at(path, (p) => rmdirSync(p));
  }

  /** Empties an upper dir of whiteouts (rename over it needs an empty dir). */
  clearDir(path: Buffer): void {
    for (const name of at(path, (p) => readdirSync(p, { encoding: 'buffer' }) as Buffer[])) this.remove(child(path, name));
  }

  /**
   * Removes a name from the merged view, the upper path `dest` standing for it (its parent copied
   * up): a name that exists below the upper (`below`) must stay deleted there, so it becomes a
   * whiteout; otherwise its upper entry (`inUpper`) simply goes (a dir with the whiteouts it holds).
   */
  removeName(dest: Buffer, o: { below: boolean; inUpper: boolean; isDir: boolean }): void {
    if (o.below) this.whiteout(dest);
    else if (o.inUpper) {
      if (o.isDir) this.remove(dest);
      else at(dest, (d) => unlinkSync(d));
    }
  }

  /**
   * rename(2) of a merged-view name whose entry is copied up at `from` to the upper path `to` (its
   * parent copied up), as overlayfs does it: a dir merging a lower dir gets an absolute redirect to
   * it (`lowerPath`, when `hasBelow`), a pure upper dir landing on a name that exists below
   * (`destBelow`) gets opaque; whatever the upper holds at `to` (a whiteout, a dir of whiteouts
   * the view shows empty, a file) makes way; a whiteout stays at `from` when the source name
   * exists below (`srcBelow`). Table and caches are the caller's.
   */
  moveName(from: Buffer, to: Buffer, o: { srcDir: boolean; lowerPath: ByteString | undefined; hasBelow: boolean; destBelow: boolean; srcBelow: boolean }): void {
    if (o.srcDir) {
      if (o.lowerPath !== undefined && o.hasBelow) this.setRedirect(from, o.lowerPath);
      else if (o.destBelow) this.setOpaque(from);
    }
    const v = new Float64Array(15);
    if (at(to, (t) => backing.statInto(t, -1, v)) === 0) {
      if ((v[1]! & S_IFMT) === S_IFDIR) {
        if (o.srcDir) this.clearDir(to);
        else this.remove(to);
      } else if (o.srcDir) at(to, (t) => unlinkSync(t));
    }
    this.rename(from, to, o.srcBelow);
  }

  /**
   * rename(2) with RENAME_EXCHANGE of two copied-up entries: each dir merging a lower dir gets an
   * absolute redirect to it, a pure upper dir landing on a name that exists below gets opaque;
   * both names stay occupied, so no whiteout is needed.
   */
  exchangeNames(a: { path: Buffer; dir: boolean; lowerPath: ByteString | undefined; hasBelow: boolean; landsBelow: boolean }, b: { path: Buffer; dir: boolean; lowerPath: ByteString | undefined; hasBelow: boolean; landsBelow: boolean }): void {
    for (const x of [a, b]) {
      if (!x.dir) continue;
      if (x.lowerPath !== undefined && x.hasBelow) this.setRedirect(x.path, x.lowerPath);
      else if (x.landsBelow) this.setOpaque(x.path);
    }
    this.rename(a.path, b.path, false, RENAME_EXCHANGE);
  }

  /** rename(2) leaving a whiteout where the source was, when the name must stay deleted below. */
  rename(from: Buffer, to: Buffer, leaveWhiteout: boolean, flags = 0): void {
    at(from, (f) => at(to, (t) => renameat2(f, t, flags | (leaveWhiteout ? RENAME_WHITEOUT : 0))));
  }

  /** A new name `dest` for the file at `existing` (link(2) in the scratch dir, renamed over whatever `dest` is). */
  linkOver(existing: Buffer, dest: Buffer): void {
    const t = this.tmp();
    at(existing, (e) => linkSync(e, t));
    try {
      at(dest, (d) => renameat2(t, d, 0));
    } catch (err) {
      rmSync(t, { force: true });
      throw err;
    }
  }

  setOpaque(path: Buffer): void {
    at(path, (p) => lsetxattr(p, this.priv('opaque'), Buffer.from('y')));
  }

  clearOpaque(path: Buffer): void {
    try {
      at(path, (p) => lremovexattr(p, this.priv('opaque')));
    } catch (err) {
      if (!isSystemError(err, 'ENODATA')) throw err;
    }
  }

  /** An absolute redirect (`/a/b` in the lower): the dir merges with that lower dir wherever it is. */
  setRedirect(path: Buffer, lowerPath: ByteString): void {
    at(path, (p) => lsetxattr(p, this.priv('redirect'), Buffer.from(lowerPath, 'latin1')));
  }

  /** Turns a metacopy upper file into a plain one holding `data` (kernel-written uppers may have them). */
  fillMetacopy(path: Buffer, data: CopyUpData): void {
    const fd = at(path, (p) => openSync(p, C.O_WRONLY | C.O_NOFOLLOW));
    try {
      if (data.kind === 'file') {
        const src = at(Buffer.from(data.path), (p) => openSync(p, C.O_RDONLY));
        try {
          const buf = Buffer.alloc(1 << 20);
          for (let off = 0; ;) {
            const n = readSync(src, buf, 0, buf.length, off);
            if (n === 0) break;
            writeSync(fd, buf, 0, n, off);
            off += n;
          }
        } finally {
          closeSync(src);
        }
      } else if (data.kind === 'bytes') writeSync(fd, data.bytes, 0, data.bytes.length, 0);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    for (const what of ['metacopy', 'redirect']) {
      try {
        at(path, (p) => lremovexattr(p, this.priv(what)));
      } catch (err) {
        if (!isSystemError(err, 'ENODATA')) throw err;
      }
    }
  }

  /** Owner and mode for something a caller creates (root servers only: others own what they make). */
  give(path: Buffer | null, fd: number, uid: number, gid: number): void {
    if (!this.asRoot) return;
    if (fd >= 0) fchownSync(fd, uid, gid);
    else at(path!, (p) => lchownSync(p, uid, gid));
  }

  /** chmod through an fd (create: the kernel already applied the umask). */
  static fchmod(fd: number, mode: number): void {
    fchmodSync(fd, mode & 0o7777);
  }
}

export { child as upperChild };

/**
 * Where a copy-up of the regular file u takes its bytes (u has no full upper file: absent, or a
 * metacopy): a live commit's middle layer file, else the image's object, inline bytes or nothing.
 */
export function copyUpData(view: UnionView, objectsDir: string, u: UnionNode): CopyUpData {
  const c = view.content(u);
  switch (c.kind) {
    case 'upper': return { kind: 'file', path: c.path };
    case 'object': return { kind: 'file', path: `${objectsDir}/${c.digest.slice(0, 2)}/${c.digest.slice(2)}` };
    case 'inline': return { kind: 'bytes', bytes: c.bytes };
    case 'empty': return { kind: 'empty' };
  }
}

export interface CopyUpOptions {
  /** The store's objects dir: data from under it is an object, checked before it is copied. */
  objectsDir: string;
  /**
   * Checks an object (by path) before its bytes go into the upper, where nothing checks them
   * again: throws (the caller's EIO) when its content does not match its name. undefined: no check.
   */
  checkObject?: (path: string) => void;
  /** A `scratchFile()` already holding u's bytes (copied off the caller's thread); consumed either way. */
  prepared?: Buffer;
}

/**
 * Copies the merged entry u up to `name` in `parent` (a dir already copied up), as kernel
 * overlayfs does: a metacopy upper file gets its data; anything else gets a full upper entry with
 * u's mode, owner, rdev, mtime and visible xattrs (in listing order), regular files their bytes,
 * symlinks their target. A dir is made empty: it merges with its lower dir through its name. The
 * parent's times are restored afterwards (the kernel does too). An object is checked first, so a
 * corrupt one leaves nothing in the upper. Returns u's link count below the upper (over 1: a
 * hardlink, which the copy breaks).
 */
export function copyUpEntry(view: UnionView, w: UpperWriter, u: UnionNode, parent: UnionNode, name: ByteString, o: CopyUpOptions): { nlinkBelow: number } {
  let prepared = o.prepared;
  const drop = (): void => { if (prepared) rmSync(prepared, { force: true }); prepared = undefined; };
  const checked = (d: CopyUpData): CopyUpData => {
    if (d.kind === 'file' && o.checkObject && d.path.toString().startsWith(`${o.objectsDir}/`)) o.checkObject(d.path.toString());
    return d;
  };
  try {
    const pu = parent.upper;
    if (!pu) throw Object.assign(new Error('copy-up into a parent that is not an upper dir'), { code: 'EIO', errno: 5 });
    const nlinkBelow = u.upper ? 1 : view.getattr(u).nlink;
    const dest = child(pu.path, name);
    const pv = at(pu.path, (p) => backing.stat(p));
    if (u.upper?.entry.kind === 'metacopy') {
      drop();  // a metacopy is filled in place
      w.fillMetacopy(dest, checked(copyUpData(view, o.objectsDir, u)));
    } else {
      const a = view.getattr(u);
      const attrs: CopyUpAttrs = { mode: a.mode, uid: a.uid, gid: a.gid, rdev: a.rdev, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec, xattrs: view.xattrsAsListed(u) };
      const type = a.mode & S_IFMT;
      if (type !== S_IFREG) drop();
      const data = type !== S_IFREG ? undefined : prepared ? { kind: 'prepared' as const, path: prepared } : checked(copyUpData(view, o.objectsDir, u));
      prepared = undefined;  // UpperWriter.copyUp consumes it
      w.copyUp(dest, attrs, data, type === S_IFLNK ? Buffer.from(view.readlink(u), 'latin1') : undefined);
    }
    at(pu.path, (p) => backing.utimens(p, -1, { sec: pv[9]!, nsec: pv[10]! }, { sec: pv[11]!, nsec: pv[12]! }));
    return { nlinkBelow };
  } catch (err) {
    drop();
    throw err;
  }
}
