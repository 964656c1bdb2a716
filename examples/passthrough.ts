// A TS filesystem that mirrors a directory through the FUSE binding (src/native/fuse.ts).
// Used by test/native/fuse*.test.ts and bench/fuse-binding.ts; also runnable:
//   node dist/examples/passthrough.js <backing-dir> <mountpoint> [--timeout S] [--no-keep-cache]
//        [--writeback] [--splice] [--immutable] [--control] [--open-in-js] [--no-flush]
//        [--readdirplus auto|always|never] [--threads N] [--clone-fd] [-o opt,opt]
// prints "ready <pid>" once mounted, exits 0 when the mount goes away (unmount, umount -l, SIGTERM).
//
// Inodes: one table keyed by the backing st_ino (one backing filesystem), with exact lookup counts.
// An inode knows the (parent, name) links it was reached by, so paths follow renames of directories
// and hardlinks keep one node id. Data: open/create hand the backing fd to the binding, which serves
// read/write/fsync/fallocate/lseek in C; JS sees only the control plane.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { pathToFileURL } from 'node:url';
import {
  ATTR_LEN, backing, FuseError, mount, RENAME_EXCHANGE, UTIME_NOW, UTIME_OMIT,
  type AttrReply, type Caller, type DirEntry, type Entry, type FuseHandlers, type FuseSession,
  type MountOptions, type OpenReply, type SetAttr, type StatFs, type Timespec,
} from '../src/native/fuse.js';

export interface PassthroughOptions {
  /** entry and attr timeout in seconds (long: the backing dir changes only through the mount) */
  timeout?: number;
  /** keep the page cache across opens (default true) */
  keepCache?: boolean;
  /** kernel writeback cache (changes open flags: O_WRONLY -> O_RDWR, O_APPEND dropped) */
  writeback?: boolean;
  /** let C open regular files by their backing path without asking JS (default true) */
  openInC?: boolean;
  /** serve CONTROL_NAME at the root from TS (no backing fd): read = JSON stats, write = commands */
  control?: boolean;
}

/** The control file: reading gives {inodes, jsRequests, cRequests, pending}; writing
 * "inval-inode <path>" or "inval-entry <dir path> <name>" (paths relative to the root, "." = root)
 * sends the kernel that notification. */
export const CONTROL_NAME = '.stratum-control';
const CONTROL_INO = 2 ** 52;

const { O_WRONLY, O_RDWR, O_APPEND, O_CREAT, O_DIRECT } = fs.constants;
const O_ACCMODE = 3;
const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_ISGID = 0o2000;
const O_PATH = 0o10000000, O_NOFOLLOW = fs.constants.O_NOFOLLOW;
const N_OPATH = (path: Buffer): number => { try { return backing.open(path, O_PATH | O_NOFOLLOW); } catch { return -1; } };
const SLASH = Buffer.from('/'), DOT = Buffer.from('.'), DOTDOT = Buffer.from('..');

interface Link { parent: Inode; name: Buffer }
interface Inode {
  id: number;
  backingIno: number;
  nlookup: number;
  isDir: boolean;
  links: Link[];
  /** how many links of other table inodes name this one as parent (keeps it in the table) */
  children: number;
  path?: Buffer;
  pathStamp: number;
  /** open handles (release notifications arrive after C closed the fd) */
  opens: number;
  /** O_PATH fd kept when the last name of an open file went away: fstat still works */
  orphanFd: number;
}
interface DirHandle { entries: { name: Buffer; ino: number; type: number }[] }

export class Passthrough implements FuseHandlers {
  private readonly root: Inode;
  private readonly byId = new Map<number, Inode>();
  private readonly byBacking = new Map<number, Inode>();
  private readonly dirs = new Map<number, DirHandle>();
  private nextId = 2;
  private nextDirFh = 1;
  private pathStamp = 0;  // bumped by every rename: cached paths are rebuilt
  private readonly timeout: number;
  private readonly keepCache: boolean;
  private readonly writeback: boolean;
  private readonly asRoot = process.geteuid?.() === 0;
  private readonly vec = new Float64Array(ATTR_LEN);
  private readonly control: boolean;
  private readonly openInC: boolean;
  private readonly controlReads = new Map<number, Buffer>();
  /** set by mountPassthrough: notifications and stats for the control file */
  session?: FuseSession;

  constructor(readonly backingRoot: string, opts: PassthroughOptions = {}) {
    this.timeout = opts.timeout ?? 1;
    this.keepCache = opts.keepCache ?? true;
    this.writeback = opts.writeback ?? false;
    this.control = opts.control ?? false;
    this.openInC = opts.openInC ?? true;
    const rootPath = Buffer.from(fs.realpathSync(backingRoot));
    const v = backing.stat(rootPath);
    this.root = { id: 1, backingIno: v[0]!, nlookup: 1, isDir: true, links: [], children: 0, path: rootPath, pathStamp: Infinity, opens: 0, orphanFd: -1 };
    this.byId.set(1, this.root);
    this.byBacking.set(this.root.backingIno, this.root);
  }

  /** Inodes currently known (lookup count > 0 or parent of one): tests check forget exactness. */
  get inodeCount(): number { return this.byId.size; }

  // ---- inode table

  private inode(id: number): Inode {
    const n = this.byId.get(id);
    if (!n) throw FuseError.of('ESTALE', `no inode ${id}`);
    return n;
  }

  private pathOf(n: Inode): Buffer {
    if (n === this.root) return n.path!;
    if (n.path && n.pathStamp === this.pathStamp) return n.path;
    const l = n.links[0];
    if (!l) throw FuseError.of('ENOENT', 'inode has no name left');
    n.path = Buffer.concat([this.pathOf(l.parent), SLASH, l.name]);
    n.pathStamp = this.pathStamp;
    return n.path;
  }

  private childPath(parent: Inode, name: Buffer): Buffer {
    return Buffer.concat([this.pathOf(parent), SLASH, name]);
  }

  /** Count one lookup of the inode found at parent/name whose attrs are in v; returns its Entry. */
  private remember(parent: Inode, name: Buffer, v: Float64Array): Entry {
    const bino = v[0]!;
    let n = this.byBacking.get(bino);
    if (!n) {
      n = { id: this.nextId++, backingIno: bino, nlookup: 0, isDir: (v[1]! & S_IFMT) === S_IFDIR, links: [], children: 0, pathStamp: -1, opens: 0, orphanFd: -1 };
      this.byId.set(n.id, n);
      this.byBacking.set(bino, n);
      if (this.openInC && (v[1]! & S_IFMT) === S_IFREG) this.offerOpen(n, this.childPath(parent, name));
    }
    n.nlookup++;
    if (!n.links.some((l) => l.parent === parent && l.name.equals(name))) {
      if (n.isDir) this.dropLinks(n);  // a directory has one name
      n.links.push({ parent, name: Buffer.from(name) });
      parent.children++;
      n.pathStamp = -1;
    }
    return { ino: n.id, entryTimeout: this.timeout, attrTimeout: this.timeout, attr: v };
  }

  private offerOpen(n: Inode, path: Buffer): void {
    this.session?.setOpenable(n.id, path, n.backingIno, { keepCache: this.keepCache, writeback: this.writeback });
  }

  private dropLinks(n: Inode): void {
    for (const l of n.links) this.unref(l.parent);
    n.links = [];
  }

  private removeLink(parent: Inode, name: Buffer, bino: number): Inode | undefined {
    const n = this.byBacking.get(bino);
    if (!n) return undefined;
    const i = n.links.findIndex((l) => l.parent === parent && l.name.equals(name));
    if (i >= 0) { n.links.splice(i, 1); this.unref(parent); n.pathStamp = -1; }
    return n;
  }

  private unref(n: Inode): void {
    n.children--;
    this.maybeDrop(n);
  }

  private maybeDrop(n: Inode): void {
    if (n === this.root || n.nlookup > 0 || n.children > 0) return;
    this.byId.delete(n.id);
    if (this.byBacking.get(n.backingIno) === n) this.byBacking.delete(n.backingIno);
    if (n.orphanFd >= 0) { backing.close(n.orphanFd); n.orphanFd = -1; }
    if (this.openInC && !n.isDir) this.session?.clearOpenable(n.id);
    this.dropLinks(n);
  }

  private entryAt(parent: Inode, name: Buffer): Entry {
    const v = this.vec, path = this.childPath(parent, name);
    const rc = backing.statInto(path, -1, v);
    if (rc < 0) throw new FuseError(-rc);
    return this.remember(parent, name, v);
  }

  private attrReply(path: Buffer | null, fd: number): AttrReply {
    const rc = backing.statInto(path, fd, this.vec);
    if (rc < 0) throw new FuseError(-rc);
    return { attr: this.vec, timeout: this.timeout };
  }

  /** A new file belongs to the caller; its group follows a setgid parent like on any Linux fs. */
  private giveToCaller(c: Caller, parent: Inode, path: Buffer, fd = -1): void {
    if (!this.asRoot || (c.uid === 0 && c.gid === 0)) return;
    const pv = backing.stat(this.pathOf(parent));
    const gid = (pv[1]! & S_ISGID) ? -1 : c.gid;
    backing.chown(fd >= 0 ? null : path, fd, c.uid, gid);
  }

  // ---- handlers

  lookup(_c: Caller, parent: number, name: Buffer): Entry {
    if (this.control && parent === 1 && name.toString('latin1') === CONTROL_NAME) return this.controlEntry();
    const p = this.inode(parent);
    const v = this.vec;
    const rc = backing.statInto(this.childPath(p, name), -1, v);
    if (rc === -osConstants.errno.ENOENT) return { ino: 0, entryTimeout: this.timeout, attrTimeout: 0, attr: v };
    if (rc < 0) throw new FuseError(-rc);
    return this.remember(p, name, v);
  }

  forget(ino: number, nlookup: number): void {
    const n = this.byId.get(ino);
    if (!n || n === this.root) return;
    n.nlookup -= nlookup;
    if (n.nlookup < 0) n.nlookup = 0;
    this.maybeDrop(n);
  }

  getattr(_c: Caller, ino: number, fh: number | undefined): AttrReply {
    if (ino === CONTROL_INO) return { attr: this.controlEntry().attr, timeout: 0 };
    if (fh !== undefined) return this.attrReply(null, fh);
    const n = this.inode(ino);
    if (n.links.length === 0 && n.orphanFd >= 0) return this.attrReply(null, n.orphanFd);
    return this.attrReply(this.pathOf(n), -1);
  }

  setattr(_c: Caller, ino: number, set: SetAttr, fh: number | undefined): AttrReply {
    if (ino === CONTROL_INO) return { attr: this.controlEntry().attr, timeout: 0 };
    const n = this.inode(ino);
    const path = fh === undefined ? this.pathOf(n) : null, fd = fh ?? -1;
    if (set.mode !== undefined) {
      const cur = backing.stat(path, fd);
      if ((cur[1]! & S_IFMT) !== S_IFLNK) backing.chmod(path, fd, set.mode & 0o7777);
    }
    if (set.uid !== undefined || set.gid !== undefined) backing.chown(path, fd, set.uid ?? -1, set.gid ?? -1);
    if (set.size !== undefined) backing.truncate(path, fd, set.size);
    if (set.atime !== undefined || set.mtime !== undefined) {
      const t = (x: Timespec | 'now' | undefined): Timespec =>
        x === undefined ? { sec: 0, nsec: UTIME_OMIT } : x === 'now' ? { sec: 0, nsec: UTIME_NOW } : x;
      backing.utimens(path, fd, t(set.atime), t(set.mtime));
    }
    return this.attrReply(path, fd);
  }

  readlink(_c: Caller, ino: number): Buffer {
    return fs.readlinkSync(this.pathOf(this.inode(ino)), { encoding: 'buffer' });
  }

  mknod(c: Caller, parent: number, name: Buffer, mode: number, rdev: number): Entry {
    const p = this.inode(parent), path = this.childPath(p, name);
    backing.mknod(path, mode, rdev);
    this.giveToCaller(c, p, path);
    return this.entryAt(p, name);
  }

  mkdir(c: Caller, parent: number, name: Buffer, mode: number): Entry {
    const p = this.inode(parent), path = this.childPath(p, name);
    fs.mkdirSync(path, mode);
    this.giveToCaller(c, p, path);
    return this.entryAt(p, name);
  }

  symlink(c: Caller, parent: number, name: Buffer, target: Buffer): Entry {
    const p = this.inode(parent), path = this.childPath(p, name);
    fs.symlinkSync(target, path);
    this.giveToCaller(c, p, path);
    return this.entryAt(p, name);
  }

  link(_c: Caller, ino: number, newParent: number, newName: Buffer): Entry {
    const n = this.inode(ino), p = this.inode(newParent);
    fs.linkSync(this.pathOf(n), this.childPath(p, newName));
    return this.entryAt(p, newName);
  }

  unlink(_c: Caller, parent: number, name: Buffer): void { this.remove(parent, name, false); }
  rmdir(_c: Caller, parent: number, name: Buffer): void { this.remove(parent, name, true); }

  private remove(parent: number, name: Buffer, dir: boolean): void {
    const p = this.inode(parent), path = this.childPath(p, name);
    const v = this.vec;
    const rc = backing.statInto(path, -1, v);
    if (rc < 0) throw new FuseError(-rc);
    const bino = v[0]!, nlink = v[2]!;
    this.keepOrphan(bino, nlink, path);
    if (dir) fs.rmdirSync(path); else fs.unlinkSync(path);
    this.removeLink(p, name, bino);
  }

  /** Before the last name of an open file goes: keep an O_PATH fd so getattr can still fstat it. */
  private keepOrphan(bino: number, nlink: number, path: Buffer): void {
    const n = this.byBacking.get(bino);
    // C may have opened it without telling TS: any inode the kernel still holds may be open
    if (!n || n.isDir || (n.opens === 0 && !this.openInC) || n.nlookup === 0 || nlink > 1 || n.orphanFd >= 0) return;
    const fd = backing.statInto(path, -1, this.vec) === 0 ? N_OPATH(path) : -1;
    if (fd >= 0) n.orphanFd = fd;
  }

  rename(_c: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): void {
    const p = this.inode(parent), np = this.inode(newParent);
    const from = this.childPath(p, name), to = this.childPath(np, newName);
    const v = this.vec;
    let rc = backing.statInto(from, -1, v);
    if (rc < 0) throw new FuseError(-rc);
    const moved = v[0]!;
    rc = backing.statInto(to, -1, v);
    const replaced = rc === 0 ? v[0]! : undefined;
    if (replaced !== undefined && !(flags & RENAME_EXCHANGE)) this.keepOrphan(replaced, v[2]!, to);
    backing.rename(from, to, flags);
    this.pathStamp++;
    const relink = (bino: number, oldP: Inode, oldName: Buffer, newP: Inode, nn: Buffer) => {
      const n = this.removeLink(oldP, oldName, bino);
      if (n) { n.links.push({ parent: newP, name: Buffer.from(nn) }); newP.children++; }
    };
    if (replaced !== undefined && replaced === moved) return;  // two names of one inode: no-op
    if (flags & RENAME_EXCHANGE) {
      const a = this.removeLink(p, name, moved), b = replaced === undefined ? undefined : this.removeLink(np, newName, replaced);
      if (a) { a.links.push({ parent: np, name: Buffer.from(newName) }); np.children++; }
      if (b) { b.links.push({ parent: p, name: Buffer.from(name) }); p.children++; }
      return;
    }
    if (replaced !== undefined) this.removeLink(np, newName, replaced);
    relink(moved, p, name, np, newName);
  }

  private openFlags(flags: number): number {
    let f = flags & ~O_DIRECT & ~O_CREAT;
    if (this.writeback) {
      if ((f & O_ACCMODE) === O_WRONLY) f = (f & ~O_ACCMODE) | O_RDWR;
      f &= ~O_APPEND;
    }
    return f;
  }

  open(_c: Caller, ino: number, flags: number): OpenReply {
    if (ino === CONTROL_INO) {
      const fh = -this.nextDirFh++;  // negative: never a backing fd
      const s = this.session?.stats();
      this.controlReads.set(fh, Buffer.from(JSON.stringify({ inodes: this.byId.size, ...s }) + '\n'));
      return { fh, directIo: true };
    }
    const n = this.inode(ino), path = this.pathOf(n);
    const fd = backing.open(path, this.openFlags(flags));
    n.opens++;
    if (this.openInC) this.offerOpen(n, path);  // C tried and missed: the path changed
    return { fh: fd, fd, keepCache: this.keepCache };
  }

  create(c: Caller, parent: number, name: Buffer, mode: number, flags: number): { entry: Entry; open: OpenReply } {
    const p = this.inode(parent), path = this.childPath(p, name);
    const fd = backing.open(path, this.openFlags(flags) | O_CREAT, mode);
    try {
      this.giveToCaller(c, p, path, fd);
      const rc = backing.statInto(null, fd, this.vec);
      if (rc < 0) throw new FuseError(-rc);
    } catch (e) {
      backing.close(fd);
      throw e;
    }
    const entry = this.remember(p, name, this.vec);
    this.byId.get(entry.ino)!.opens++;
    return { entry, open: { fh: fd, fd, keepCache: this.keepCache } };
  }

  // ---- the control file: a handle served in TS

  private controlEntry(): Entry {
    const now = Math.floor(Date.now() / 1000);
    return { ino: CONTROL_INO, entryTimeout: 0, attrTimeout: 0, attr: {
      ino: CONTROL_INO, mode: 0o100666, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0, blocks: 0, blksize: 4096,
      atime: now, atimeNsec: 0, mtime: now, mtimeNsec: 0, ctime: now, ctimeNsec: 0 } };
  }

  read(_c: Caller, _ino: number, fh: number, size: number, offset: number): Buffer {
    const b = this.controlReads.get(fh);
    if (!b) throw FuseError.of('EBADF');
    return b.subarray(offset, offset + size);
  }

  async write(_c: Caller, _ino: number, _fh: number, data: Buffer, _offset: number): Promise<number> {
    const [cmd, a, b] = data.toString('utf8').trim().split(/\s+/);
    const known = (rel: string | undefined): Inode => {
      const path = rel === undefined || rel === '.' ? this.root.path! : Buffer.concat([this.root.path!, SLASH, Buffer.from(rel)]);
      const n = this.byBacking.get(backing.stat(path)[0]!);
      if (!n) throw FuseError.of('ENOENT', 'inode not known to the kernel');
      return n;
    };
    if (!this.session) throw FuseError.of('EIO');
    if (cmd === 'inval-inode') await this.session.invalInode(known(a).id);
    else if (cmd === 'inval-entry' && b) await this.session.invalEntry(known(a).id, Buffer.from(b));
    else throw FuseError.of('EINVAL');
    return data.length;
  }

  release(ino: number, fh: number): void {  // fd handles: the binding closed the backing fd already
    if (ino === CONTROL_INO) { this.controlReads.delete(fh); return; }
    const n = this.byId.get(ino);
    if (n && n.opens > 0) n.opens--;
  }

  opendir(_c: Caller, ino: number): OpenReply {
    const DT_DIR = 4;
    const n = this.inode(ino);
    const up = n.links[0]?.parent ?? n;
    const entries = [{ name: DOT, ino: n.backingIno, type: DT_DIR }, { name: DOTDOT, ino: up.backingIno, type: DT_DIR },
      ...backing.readdir(this.pathOf(n))];
    const fh = this.nextDirFh++;
    this.dirs.set(fh, { entries });
    return { fh, keepCache: this.keepCache, cacheReaddir: this.keepCache && this.timeout > 1 };
  }

  readdir(_c: Caller, ino: number, fh: number, offset: number, plus: boolean, size: number): DirEntry[] {
    const d = this.dirs.get(fh);
    if (!d) throw FuseError.of('EBADF');
    const p = this.inode(ino);
    const max = Math.ceil(size / (plus ? 152 : 24));
    const out: DirEntry[] = [];
    for (let i = offset; i < d.entries.length && out.length < max; i++) {
      const e = d.entries[i]!;
      if (!plus || i < 2) { out.push({ name: e.name, next: i + 1, ino: e.ino, mode: e.type << 12 }); continue; }
      const v = new Float64Array(ATTR_LEN);
      if (backing.statInto(this.childPath(p, e.name), -1, v) < 0) continue;  // gone since opendir
      out.push({ name: e.name, next: i + 1, ino: v[0]!, mode: v[1]!, entry: this.remember(p, e.name, v) });
    }
    return out;
  }

  releasedir(_ino: number, fh: number): void { this.dirs.delete(fh); }

  fsyncdir(_c: Caller, ino: number, _fh: number, datasync: boolean): void {
    const fd = backing.open(this.pathOf(this.inode(ino)), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try { if (datasync) fs.fdatasyncSync(fd); else fs.fsyncSync(fd); } finally { backing.close(fd); }
  }

  statfs(): StatFs { return backing.statfs(this.root.path!); }

  setxattr(_c: Caller, ino: number, name: Buffer, value: Buffer, flags: number): void {
    backing.setxattr(this.pathOf(this.inode(ino)), name, value, flags);
  }
  getxattr(_c: Caller, ino: number, name: Buffer): Buffer { return backing.getxattr(this.pathOf(this.inode(ino)), name); }
  listxattr(_c: Caller, ino: number): Buffer { return backing.listxattr(this.pathOf(this.inode(ino))); }
  removexattr(_c: Caller, ino: number, name: Buffer): void { backing.removexattr(this.pathOf(this.inode(ino)), name); }

  access(_c: Caller, ino: number, mask: number): void { fs.accessSync(this.pathOf(this.inode(ino)), mask); }
}

/** Mount a passthrough of `backingDir` at `mountpoint`. */
export function mountPassthrough(backingDir: string, mountpoint: string, opts: PassthroughOptions & MountOptions = {}):
  { session: FuseSession; fs: Passthrough } {
  const pt = new Passthrough(backingDir, opts);
  // readdirplus always: a tree walk with stat gets attributes per buffer, not a lookup per entry
  const session = mount(mountpoint, pt, { writebackCache: opts.writeback, readdirplus: 'always', ...opts, options: ['default_permissions', 'noatime', 'fsname=stratum-passthrough', ...(opts.options ?? [])] });
  pt.session = session;
  return { session, fs: pt };
}

export interface PassthroughServer {
  child: ChildProcess;
  pid: number;
  /** exit code of the server process (signal name if killed) */
  exited: Promise<number | string>;
  /** SIGTERM (the server unmounts and exits 0), then wait */
  stop(): Promise<number | string>;
  output(): string;
}

/** Start the passthrough in a child process (a FUSE server must never serve its own process).
 * `asUser`: run it unprivileged (setpriv), mounting through fusermount3. */
export function spawnPassthrough(backingDir: string, mountpoint: string, args: string[] = [],
  asUser?: { uid: number; gid: number }): Promise<PassthroughServer> {
  const script = new URL(import.meta.url).pathname;
  const cmd = asUser
    ? ['setpriv', `--reuid=${asUser.uid}`, `--regid=${asUser.gid}`, '--clear-groups', process.execPath, script]
    : [process.execPath, script];
  const child = spawn(cmd[0]!, [...cmd.slice(1), backingDir, mountpoint, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (/^ready \d+/m.test(out)) {
        child.stdout!.off('data', onData);
        child.stdout!.on('data', (x: Buffer) => { out += x.toString(); });
        resolve({ child, pid: child.pid!, exited, output: () => out,
          stop: async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); return exited; } });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    void exited.then((code) => reject(new Error(`passthrough exited (${code}) before ready: ${out}`)));
  });
}

async function main(argv: string[]): Promise<void> {
  const pos: string[] = [];
  const opts: PassthroughOptions & MountOptions = { options: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--timeout') opts.timeout = Number(argv[++i]);
    else if (a === '--no-keep-cache') opts.keepCache = false;
    else if (a === '--writeback') opts.writeback = true;
    else if (a === '--splice') opts.splice = true;
    else if (a === '--immutable') opts.autoInvalData = false;
    else if (a === '--control') opts.control = true;
    else if (a === '--open-in-js') opts.openInC = false;
    else if (a === '--no-flush') opts.noFlush = true;
    else if (a === '--threads') opts.maxThreads = Number(argv[++i]);
    else if (a === '--clone-fd') opts.cloneFd = true;
    else if (a === '--readdirplus') opts.readdirplus = argv[++i] as 'auto' | 'always' | 'never';
    else if (a === '-o') opts.options!.push(...argv[++i]!.split(','));
    else pos.push(a);
  }
  if (pos.length !== 2) {
    console.error('usage: passthrough <backing-dir> <mountpoint> [--timeout S] [--no-keep-cache] [--writeback] [--splice] [--immutable] [--control] [--open-in-js] [--no-flush] [--readdirplus auto|always|never] [--threads N] [--clone-fd] [-o opts]');
    process.exit(2);
  }
  process.umask(0);  // modes from the kernel already have the caller's umask applied
  const { session } = mountPassthrough(pos[0]!, pos[1]!, opts);
  const stop = () => { session.unmount().catch((e) => { console.error(String(e)); process.exit(1); }); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGUSR2', () => { console.log(`stats ${JSON.stringify(session.stats())}`); });
  console.log(`ready ${process.pid}`);
  const status = await session.exited;
  process.exit(status === 0 ? 0 : 1);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e) => { console.error(e); process.exit(1); });
}
