// The filesystem a Stratum mount serves: a base commit image under HEAD's upper dir (or a tag's
// image alone, read-only), translated to FUSE. Union decisions come from UnionView (reading) and
// UpperWriter (writing the kernel overlayfs upper format); this module keeps the inode table and
// translates requests. The control files at /.stratum are ControlFiles' (control.ts). docs/fuse.md
// describes the inode numbers, caching and the live commit.
//
// Public surface: UnionFs, UnionFsOptions.
import { constants as C, closeSync, fdatasyncSync, fsyncSync, linkSync, openSync, readFileSync, readSync, rmSync, symlinkSync, writeSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import {
  ATTR_LEN, backing, FuseError, RENAME_EXCHANGE, RENAME_NOREPLACE, UTIME_NOW, UTIME_OMIT,
  type AttrReply, type Caller, type DirEntry, type Entry, type FuseHandlers, type FuseSession, type OpenReply,
  type SetAttr, type StatFs, type Timespec,
} from '../native/fuse.js';
import { anyLength as at } from '../native/files.js';
import { lsetxattr, lremovexattr } from '../native/xattr.js';
import { digestFd, digestFdSync } from '../native/verity.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../store/image/erofs.js';
import { FileSource, ImageReader } from '../store/image/read.js';
import type { ByteString, Xattr } from '../store/image/tree.js';
import { UnionView, type UnionNode } from '../store/union.js';
import { UpperWriter, copyUpData, copyUpEntry, upperChild, type CopyUpData } from '../store/union-write.js';
import { storedXattrName, type XattrNamespace } from '../store/upper.js';
import { CONTROL_DIR_NAME, ControlFiles, type ControlHooks } from '../mount/control.js';

export interface UnionFsOptions {
  /** The commit image to serve. */
  imagePath: string;
  objectsDir: string;
  /** HEAD's upper dir; undefined for a read-only tag mount. */
  upperDir?: string;
  /** A scratch dir on the upper's filesystem (the label's work dir). */
  scratchDir?: string;
  ns: XattrNamespace;
  /** Where statfs looks (the store). */
  statfsPath: string;
  control: ControlHooks;
  /** Entry/attr timeout for lower (immutable) entries, seconds. */
  lowerTimeout?: number;
  /** Entry/attr timeout for upper entries, seconds. */
  upperTimeout?: number;
  /**
   * Check each object's fs-verity digest against its name the first time this mount opens it
   * (default true; the result is kept for the mount): a corrupt object answers EIO, and `onCorrupt`
   * (the server's log) is told its name. Off only for benchmarks' baselines.
   */
  verifyObjects?: boolean;
  onCorrupt?: (object: string, actual: string) => void;
}

const E = osConstants.errno;
const fail = (code: keyof typeof E, why?: string): never => { throw FuseError.of(code, why); };
/** The kernel asks getxattr(security.capability) before writes: the usual answer is thrown often, so once made. */
const NO_XATTR = FuseError.of('ENODATA');
const O_ACCMODE = 3;
const S_ISGID = 0o2000;
const O_PATH = 0o10000000;
/** An object's name (its digest) from its path, objects/ab/cdef...: the last two parts joined. */
const objectNameOf = (path: string | Buffer): string => path.slice(-65).toString().replace('/', '');

/** `at` (anyLength: upper paths may be longer than PATH_MAX) for a call that takes a path or an fd. */
const atOrFd = <T>(path: Buffer | null, fn: (p: Buffer | null) => T): T => (path === null ? fn(null) : at(path, fn));

/** A write-open's copy-up of a file this big or bigger copies its bytes off the JS thread. */
const OFF_THREAD_COPY_MIN = 1 << 20;

/** Node id of /.stratum (its files are ControlFiles' nodes 3 to 5); real nodes start at FIRST_NODE. */
const CTL_DIR = 2, FIRST_NODE = 16;
/** st_ino ranges: lower entries epoch * 2^32 + image ino + 1; upper entries 2^48 + upper st_ino; control files 2^50 + k. */
const UPPER_INO_BASE = 2 ** 48;

interface Link { parent: Node; name: ByteString }
interface Node {
  id: number;
  stIno: number;
  key: string;
  nlookup: number;
  /** links of other table nodes that name this one as parent */
  children: number;
  /** those links by name */
  kids?: Map<ByteString, Node>;
  links: Link[];
  u: UnionNode | undefined;
  stamp: number;
  /** The epoch its key was computed in: keys of earlier epochs are brought up to date when met (switchBase). */
  keyEpoch: number;
  isDir: boolean;
  /** registered with the binding's per-node backing table (setOpenable: an object, or an upper file) */
  openable?: boolean;
  /** set when the last name went away while the kernel still knew the node */
  detached?: { u: UnionNode; orphanFd: number };
}
interface DirHandle { entries: Array<{ name: ByteString; nid?: number }> }

export class UnionFs implements FuseHandlers {
  session?: FuseSession;
  readonly readOnly: boolean;
  /** holdWrites in effect (a commit before its split, an apply): no backing is marked writable. */
  private writesHeld = 0;
  private reader: ImageReader;
  private source: FileSource;
  private view: UnionView;
  private writer: UpperWriter | undefined;
  private epoch = 1;
  private stamp = 0;
  private readonly root: Node;
  private readonly byId = new Map<number, Node>();
  private readonly byKey = new Map<string, Node>();
  private readonly dirs = new Map<number, DirHandle>();
  private nextId = FIRST_NODE;
  private nextFh = 1;
  /** Objects hashed by this mount: name -> content matches (verifyObjects). */
  private readonly objectsChecked = new Map<string, boolean>();
  private readonly objectsChecking = new Map<string, Promise<boolean>>();
  /** Checked objects' st_ino: a lookup of a lower file whose object is here registers it with C at once. */
  private readonly objectInos = new Map<string, number>();
  private readonly lowerTimeout: number;
  private readonly upperTimeout: number;
  private readonly vec = new Float64Array(ATTR_LEN);
  private readonly control: ControlFiles;
  /** upper st_ino -> the number its entry had before copy-up, so a copy-up never renumbers */
  private readonly copiedUp = new Map<number, number>();
  /**
   * Copy-ups whose data is being copied on a pool thread (copyUpOffThread), by node; settled
   * (never rejects). Requests that would copy up or change that node wait for it.
   */
  private readonly copying = new Map<Node, Promise<void>>();
  /** While set, every request but forget/release/control waits for it (live commit). */
  private gate: Promise<void> | undefined;
  /** Dirs the view uses through /proc/self/fd during and after a live commit (layer, rebase). */
  private dirFds: number[] = [];

  constructor(private readonly opts: UnionFsOptions) {
    this.readOnly = opts.upperDir === undefined;
    this.source = new FileSource(opts.imagePath, { cacheBlocks: 8192 });
    this.reader = ImageReader.open(this.source);
    this.view = new UnionView(this.reader, opts.upperDir ?? '/nonexistent/stratum-no-upper', opts.ns);
    if (!this.readOnly) this.writer = new UpperWriter(opts.ns, opts.scratchDir!);
    this.control = new ControlFiles(opts.control, { readOnly: this.readOnly, dirNode: CTL_DIR,
      noHandles: { invalidate: (ino) => this.session?.invalInode(ino) ?? Promise.resolve() } });
    this.lowerTimeout = opts.lowerTimeout ?? 86_400;
    this.upperTimeout = opts.upperTimeout ?? 1;
    const u = this.view.root();
    this.root = { id: 1, stIno: 1, key: 'root', nlookup: 1, children: 0, links: [], u, stamp: this.stamp, keyEpoch: Infinity, isDir: true };
    this.byId.set(1, this.root);
  }

  // ------------------------------------------------------------------ inode table

  private node(id: number): Node {
    const n = this.byId.get(id);
    if (!n) fail('ESTALE', `no inode ${id}`);
    return n!;
  }

  /** The union node for a table node, re-resolved along its first link when a rename made it stale. */
  private resolve(n: Node): UnionNode {
    if (n.detached) return n.detached.u;
    if (n.u && n.stamp === this.stamp) return n.u;
    if (n === this.root) n.u = this.view.root();
    else {
      const l = n.links[0];
      if (!l) fail('ENOENT', 'inode has no name left');
      const u = this.view.child(this.resolve(l!.parent), l!.name);
      if (!u) fail('ENOENT', `${l!.name} is gone`);
      n.u = u;
    }
    n.stamp = this.stamp;
    return n.u!;
  }

  /** Re-reads one node from its parent after a change to it. */
  private refresh(n: Node): UnionNode {
    n.u = undefined;
    const u = this.resolve(n);
    this.rekey(n, u);
    return u;
  }

  /**
   * Identity of an entry: an upper inode, or an image inode. Names of a hardlinked lower file are
   * separate nodes (sharing st_ino): a copy-up changes only the name it happens through, as in
   * kernel overlayfs without index.
   */
  private keyOf(u: UnionNode, parent: Node | undefined, name: ByteString | undefined): string {
    const top = this.view.top(u);
    if (top) return `U${top.entry.stat.ino}`;
    const a = this.reader.getattr(u.lower!);
    if (a.nlink > 1 && (a.mode & S_IFMT) !== S_IFDIR) return `L${this.epoch}:${u.lower}:${parent?.id}/${name}`;
    return `L${this.epoch}:${u.lower}`;
  }

  private keyOfNode(n: Node, u: UnionNode): string {
    const l = n.links[0];
    return this.keyOf(u, l?.parent, l?.name);
  }

  private rekey(n: Node, u: UnionNode): void {
    if (n === this.root) return;
    const key = this.keyOfNode(n, u);
    n.keyEpoch = this.epoch;
    if (key === n.key) return;
    if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
    n.key = key;
    this.byKey.set(key, n);
  }

  private stInoOf(u: UnionNode): number {
    const top = this.view.top(u);
    if (top) {
      const ino = Number(top.entry.stat.ino);
      return this.copiedUp.get(ino) ?? UPPER_INO_BASE + ino;
    }
    return this.epoch * 2 ** 32 + this.reader.getattr(u.lower!).ino + 1;
  }

  /** Counts one lookup of parent/name (resolved as u); returns its Entry. */
  private remember(parent: Node, name: ByteString, u: UnionNode): Entry {
    const key = this.keyOf(u, parent, name);
    let n = this.nodeFor(key, parent, name);
    if (!n) {
      const isDir = (this.view.getattr(u).mode & S_IFMT) === S_IFDIR;
      n = { id: this.nextId++, stIno: this.stInoOf(u), key, nlookup: 0, children: 0, links: [], u, stamp: this.stamp, keyEpoch: this.epoch, isDir };
      this.byId.set(n.id, n);
      this.byKey.set(key, n);
    }
    n.nlookup++;
    if (!n.openable) this.openableIfChecked(n, u);
    if (!n.openable) this.registerUpper(n, u);
    if (!n.links.some((l) => l.parent === parent && l.name === name)) {
      if (n.isDir) this.dropLinks(n);
      this.addLink(n, parent, name);
      if (n.links.length === 1) { n.u = u; n.stamp = this.stamp; }
    }
    const attr = this.attrOf(n, u);
    const t = this.timeoutOf(u);
    this.attrsInC(n, u);
    return { ino: n.id, entryTimeout: t, attrTimeout: t, attr };
  }

  /**
   * The table node with `key` (parent/name resolved to it), if any. After a switch of base, keys
   * are recomputed when met rather than all at once (the switch holds requests): a node keyed in
   * an earlier epoch is brought up to date first, and the node linked at parent/name is checked
   * too, so a file the kernel knows keeps its node id and st_ino.
   */
  private nodeFor(key: string, parent: Node, name: ByteString): Node | undefined {
    let n = this.byKey.get(key);
    if (n && n.keyEpoch < this.epoch) {
      this.freshKey(n);
      if (n.key !== key) n = undefined;
    }
    if (!n) {
      const linked = parent.kids?.get(name);
      if (linked && linked.keyEpoch < this.epoch) {
        this.freshKey(linked);
        if (linked.key === key) n = linked;
      }
    }
    return n;
  }

  /** Recomputes a node's key in the current epoch (see nodeFor). */
  private freshKey(n: Node): void {
    n.keyEpoch = this.epoch;
    if (n.detached) return;
    try {
      this.rekey(n, this.resolve(n));
    } catch {
      if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
      n.u = undefined;
      n.key = `gone${n.id}`;
    }
  }

  private timeoutOf(u: UnionNode): number {
    return this.view.top(u) ? this.upperTimeout : this.lowerTimeout;
  }

  private addLink(n: Node, parent: Node, name: ByteString): void {
    n.links.push({ parent, name });
    (parent.kids ??= new Map()).set(name, n);
    parent.children++;
  }

  private delLink(n: Node, i: number): void {
    const l = n.links[i]!;
    n.links.splice(i, 1);
    if (l.parent.kids?.get(l.name) === n) l.parent.kids.delete(l.name);
    this.unref(l.parent);
  }

  private dropLinks(n: Node): void {
    while (n.links.length > 0) this.delLink(n, n.links.length - 1);
  }

  private unref(n: Node): void {
    n.children--;
    this.maybeDrop(n);
  }

  private maybeDrop(n: Node): void {
    if (n === this.root || n.nlookup > 0 || n.children > 0) return;
    this.byId.delete(n.id);
    if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
    if (n.detached && n.detached.orphanFd >= 0) backing.close(n.detached.orphanFd);
    if (n.openable) this.session?.clearOpenable(n.id);
    this.dropLinks(n);
  }

  private removeLink(parent: Node, name: ByteString): Node | undefined {
    const n = parent.kids?.get(name);
    if (!n) return undefined;
    const i = n.links.findIndex((l) => l.parent === parent && l.name === name);
    if (i >= 0) this.delLink(n, i);
    n.stamp = -1;
    return n;
  }

  /** The table node linked as parent/name, if any. */
  private linkedTo(parent: Node, name: ByteString): Node | undefined {
    return parent.kids?.get(name);
  }

  // ------------------------------------------------------------------ attributes

  private attrOf(n: Node, u: UnionNode): Float64Array {
    const v = new Float64Array(ATTR_LEN);
    const top = this.view.top(u);
    if (top || (n.detached && n.detached.orphanFd >= 0)) {
      const rc = n.detached && n.detached.orphanFd >= 0 ? backing.statInto(null, n.detached.orphanFd, v) : at(top!.path, (p) => backing.statInto(p, -1, v));
      if (rc < 0) throw new FuseError(-rc);
      if (top?.entry.kind === 'metacopy' && u.lower !== undefined) {
        const size = this.reader.getattr(u.lower).size;
        v[6] = size;
        v[7] = Math.ceil(size / 512);
      }
      if ((v[1]! & S_IFMT) === S_IFDIR && (u.upper ? this.view.hasBelow(u) : u.lower !== undefined)) v[2] = 1;  // merged dir: overlayfs reports 1
    } else {
      const a = this.reader.getattr(u.lower!);
      v[1] = a.mode; v[2] = a.nlink; v[3] = a.uid; v[4] = a.gid; v[5] = a.rdev; v[6] = a.size;
      v[7] = Math.ceil(a.size / 512); v[8] = 4096;
      v[9] = v[11] = v[13] = a.mtimeSec; v[10] = v[12] = v[14] = a.mtimeNsec;
    }
    v[0] = n.stIno;
    return v;
  }

  // ------------------------------------------------------------------ writing helpers

  private writable(): UpperWriter {
    if (!this.writer) fail('EROFS', 'a tag mount is read-only');
    return this.writer!;
  }

  /** Visible xattrs in the order the kernel lists them (UnionView.xattrsAsListed). */
  private xattrsOf(u: UnionNode): Xattr[] {
    return this.view.xattrsAsListed(u);
  }

  /** Where n's bytes are when it has no full upper file (copyUpData). */
  private dataOf(u: UnionNode): CopyUpData {
    return copyUpData(this.view, this.opts.objectsDir, u);
  }

  /**
   * undefined when the object at path (open as fd) is known good for this mount; else a promise
   * that hashes it on a pool thread (one hash per object however many open it at once) and
   * rejects with EIO when its content does not match its name.
   */
  private objectChecked(path: string, fd: number): Promise<void> | undefined {
    if (this.opts.verifyObjects === false) return undefined;
    const name = objectNameOf(path);
    const known = this.objectsChecked.get(name);
    if (known === true) return undefined;
    if (known === false) { backing.close(fd); fail('EIO'); }
    let pending = this.objectsChecking.get(name);
    if (!pending) {
      pending = digestFd(fd).then((actual) => this.objectHashed(name, actual)).finally(() => this.objectsChecking.delete(name));
      this.objectsChecking.set(name, pending);
    }
    return pending.then((good) => { if (!good) fail('EIO'); });
  }

  private objectHashed(name: string, actual: string): boolean {
    const good = actual === name;
    this.objectsChecked.set(name, good);
    if (!good) this.opts.onCorrupt?.(name, actual);
    return good;
  }

  /** copyUpEntry's object check: hashes it once for the mount (EIO when it does not match its name). */
  private checkObjectForCopy(path: string): void {
    if (this.opts.verifyObjects === false) return;
    const name = objectNameOf(path);
    let good = this.objectsChecked.get(name);
    if (good === undefined) {
      const fd = openSync(path, C.O_RDONLY);
      try {
        good = this.objectHashed(name, digestFdSync(fd));
      } finally {
        closeSync(fd);
      }
    }
    if (!good) fail('EIO');
  }

  /**
   * Makes sure n has a full upper entry (dirs: an upper dir merged with its lower). Returns its union node.
   * `prepared`: a scratch file already holding n's bytes (copyUpOffThread); consumed either way.
   */
  private copyUp(n: Node, prepared?: Buffer): UnionNode {
    const drop = (): void => { if (prepared) rmSync(prepared, { force: true }); };
    let u = this.resolve(n);
    if (u.upper && u.upper.entry.kind !== 'metacopy') { drop(); return u; }
    if (this.view.layered) {
      // a live commit's second probe may have made this dir in the upper meanwhile (keepInUpper)
      u = this.refresh(n);
      if (u.upper && u.upper.entry.kind !== 'metacopy') { drop(); return u; }
    }
    let w: UpperWriter;
    try {
      w = this.writable();
      if (n === this.root) fail('EIO', 'HEAD has no upper root');
      if (!n.links[0]) fail('ENOENT', 'copy-up of a file that has no name left');
    } catch (err) {
      drop();
      throw err;
    }
    this.notOpenable(n);  // from now on its opens go to TS, which serves the upper file
    const l = n.links[0];
    let pu: UnionNode;
    try {
      pu = this.copyUp(l!.parent);
    } catch (err) {
      drop();
      throw err;
    }
    const { nlinkBelow } = copyUpEntry(this.view, w, u, pu, l!.name, { objectsDir: this.opts.objectsDir, checkObject: (p) => this.checkObjectForCopy(p), prepared });
    const fresh = this.refresh(n);
    // a lower dir's attributes were given out with the long lower timeout; merged, its link
    // count is 1 (as the kernel's overlay says), so the kernel must ask again
    if (n.isDir && !u.upper) void this.session?.invalInode(n.id).catch(() => undefined);
    // a copied-up hardlink is a new file (the kernel breaks the link too): it gets its own number
    // when the names left below report the one it has (a lower hardlink's image inode, a middle
    // file's); a number from before a commit (an upper file's) is its own and stays
    if (!n.isDir && nlinkBelow > 1 && n.stIno === this.stInoOf(u)) n.stIno = this.stInoOf(fresh);
    // names of one upper file before a commit are one node: the names not copied up are another
    // file now, which the kernel must look up again (its dentries lead to this node)
    if (!n.isDir && nlinkBelow > 1) {
      while (n.links.length > 1) {
        const other = n.links[n.links.length - 1]!;
        this.delLink(n, n.links.length - 1);
        void this.session?.invalEntry(other.parent.id, Buffer.from(other.name, 'latin1')).catch(() => undefined);
      }
    }
    else if (fresh.upper) this.copiedUp.set(Number(fresh.upper.entry.stat.ino), n.stIno);
    return fresh;
  }

  /**
   * A lower file whose object this mount already checked: C may open it from the first open (or
   * zero-message read) on, without a JS round trip; after drop_caches the kernel forgets the
   * node but the object stays checked.
   */
  private openableIfChecked(n: Node, u: UnionNode): void {
    if (!this.session || n.isDir || n.detached || u.upper || u.middle || u.lower === undefined) return;
    const digest = this.reader.objectOf(u.lower);
    if (!digest) return;
    const path = join(this.opts.objectsDir, digest.slice(0, 2), digest.slice(2));
    const ino = this.objectInos.get(objectNameOf(path));
    if (ino === undefined) return;
    this.session.setOpenable(n.id, Buffer.from(path), ino, { keepCache: true, readOnly: !this.readOnly });
    n.openable = true;
  }

  /** C may open n's object by itself from now on (checked: called after objectChecked). */
  private registerOpenable(n: Node, path: Buffer, fd: number): void {
    if (!this.session || n.detached) return;
    const v = backing.stat(null, fd);
    this.objectInos.set(objectNameOf(path.toString()), v[0]!);
    // any open on a tag mount; on HEAD only opens without write access or O_TRUNC (a root
    // server must never open an object for writing: those come here and copy up, which
    // clears the registration)
    this.session.setOpenable(n.id, path, v[0]!, { keepCache: true, readOnly: !this.readOnly });
    n.openable = true;
  }

  /**
   * C serves reads of n (and, marked `writable`, writes, fallocate and fsync) from its upper file
   * by node (zero-message open): a plain upper file, or a live commit's middle-layer file (reads
   * only: the middle is being committed). Not while writes are held (TS writes then, each through
   * an fd of its own).
   */
  private registerUpper(n: Node, u: UnionNode, writeFd = -1): void {
    const top = this.view.top(u);
    if (!this.session || this.readOnly || n.isDir || n.detached || !top || top.entry.kind !== 'plain' || !top.entry.stat.isFile()) {
      if (writeFd >= 0) backing.close(writeFd);
      return;
    }
    const writable = u.upper !== undefined && this.writesHeld === 0;
    // writeFd (an fd TS wrote through) goes to C, which keeps it as the node's writable backing
    this.session.setOpenable(n.id, top.path, Number(top.entry.stat.ino), { keepCache: true, writable, writeFd });
    n.openable = true;
  }

  /** Where n's upper file is for an open: its path, or, once its last name went, its O_PATH fd's magic link. */
  private backingPath(n: Node, path: Buffer): Buffer {
    if (n.detached && n.detached.orphanFd >= 0) return Buffer.from(`/proc/self/fd/${n.detached.orphanFd}`);
    return path;
  }

  /**
   * Starts the copy-up of a lower regular file held as a file (an object, a live commit's middle
   * layer) with its bytes copied on a pool thread: the JS thread serves every other request
   * meanwhile. The object is checked first (EIO, nothing copied), the bytes go to a scratch file,
   * and copyUp then gives it attributes and renames it into the upper, under the gate, as a copy-up
   * on the JS thread would; a kill -9 meanwhile leaves only the scratch file (emptied at start).
   * undefined: nothing to copy off the thread (dirs, upper files, files under 1 MiB); the
   * caller copies up on the JS thread as before. Requests on n wait for it (`copying`).
   */
  private copyUpOffThread(n: Node): Promise<void> | undefined {
    if (n.isDir || this.copying.has(n)) return this.copying.get(n);
    const u = this.resolve(n);
    if (u.upper || this.view.layered) return undefined;  // (a middle layer exists only while layered)
    const a = this.view.getattr(u);
    // below 1 MiB the copy takes less than the two pool hops would
    if ((a.mode & S_IFMT) !== S_IFREG || a.size < OFF_THREAD_COPY_MIN) return undefined;
    const data = this.dataOf(u);
    if (data.kind !== 'file') return undefined;
    const source = data.path.toString();
    const tmp = this.writable().scratchFile();
    const done = (async () => {
      await this.checkedForCopyOffThread(source);
      await backing.copyFile(Buffer.from(source), tmp);
      await this.gated(() => {
        // a live apply may have changed what n is meanwhile: copy what it is now
        const now = this.resolve(n);
        const still = !now.upper && !this.view.layered && (() => { const d = this.dataOf(now); return d.kind === 'file' && d.path.toString() === source; })();
        if (still) this.copyUp(n, tmp);
        else { rmSync(tmp, { force: true }); this.copyUp(n); }
      });
    })().catch((err: unknown) => { rmSync(tmp, { force: true }); throw err; });
    const settled = done.then(() => undefined, () => undefined).finally(() => this.copying.delete(n));
    this.copying.set(n, settled);
    return done;
  }

  /** checkObjectForCopy with the hashing on a pool thread (objectChecked). */
  private async checkedForCopyOffThread(path: string): Promise<void> {
    if (this.opts.verifyObjects === false || !path.startsWith(`${this.opts.objectsDir}/`)) return;
    const known = this.objectsChecked.get(objectNameOf(path));
    if (known !== undefined) {
      if (!known) fail('EIO');
      return;
    }
    const fd = openSync(path, C.O_RDONLY);
    try {
      await this.objectChecked(path, fd);
    } finally {
      closeSync(fd);
    }
  }

  /** When a copy-up of ino runs off the JS thread: `again` once it is over (the request waits). */
  private afterCopyUp<T>(ino: number, again: () => T | Promise<T>): Promise<T> | undefined {
    const n = this.byId.get(ino);
    const p = n && this.copying.get(n);
    return p?.then(again);
  }

  /**
   * Lets C answer getattr of n, and setattr of owner, mode and times, while its attributes are its
   * upper file's (HEAD, plain or dir, the upper on top: no live commit's layers): after a create
   * or a write the kernel asks often, and tar sets owner, mode and times of every file.
   */
  private attrsInC(n: Node, u: UnionNode): void {
    const up = u.upper;
    if (!this.session || this.readOnly || this.view.layered || n.detached || !up || (up.entry.kind !== 'plain' && up.entry.kind !== 'dir')) return;
    // setattr of an upper entry only applies owner, mode and times to its file: C can do that too
    this.session.setAttrSource(n.id, up.path, Number(up.entry.stat.ino), n.stIno, this.upperTimeout, { nlink1: up.entry.kind === 'dir' && this.view.hasBelow(u), setattr: true });
  }

  /** Opens of n go to TS again (its data is no longer the object C would open). */
  private notOpenable(n: Node): void {
    if (!n.openable) return;
    this.session?.clearOpenable(n.id);
    n.openable = false;
  }

  /** The upper path for a new name in dir p (p copied up; a whiteout there is replaced). */
  private newEntryPath(p: Node, name: ByteString): { path: Buffer; overLower: boolean; pu: UnionNode } {
    if (p === this.root && name === CONTROL_DIR_NAME) fail('EEXIST');
    const pu = this.copyUp(p);
    const path = upperChild(pu.upper!.path, name);
    const overLower = this.writer!.clearWhiteout(path);
    return { path, overLower, pu };
  }

  private owner(c: Caller, pu: UnionNode): { uid: number; gid: number; sgid: boolean } {
    const pv = at(pu.upper!.path, (p) => backing.stat(p));
    const sgid = (pv[1]! & S_ISGID) !== 0;
    return { uid: c.uid, gid: sgid ? pv[4]! : c.gid, sgid };
  }

  private entryAfterCreate(p: Node, name: ByteString): Entry {
    // p's union node stays valid: attributes are read fresh from the upper path, and what the node
    // caches (upper path, inode, kind, xattrs) does not change when an entry is added
    const u = this.view.child(this.resolve(p), name);
    if (!u) fail('EIO', 'created entry vanished');
    return this.remember(p, name, u!);
  }

  /** Whether `name` in p's lower (merged part) exists: removing it then needs a whiteout. */
  private inLower(pu: UnionNode, name: ByteString): boolean {
    return this.view.inBelow(pu, name);
  }

  private childOf(p: Node, name: ByteString): UnionNode | undefined {
    if (p === this.root && name === CONTROL_DIR_NAME) return undefined;
    return this.view.child(this.resolve(p), name);
  }

  /** A lower path for a redirect: where the lower dir merged into u lives in the base image. */
  private lowerPathOf(n: Node): ByteString | undefined {
    const u = this.resolve(n);
    if (!this.view.hasBelow(u)) return undefined;
    if (n === this.root) return '';
    const redirect = u.upper?.entry.redirect;
    if (redirect !== undefined && redirect.startsWith('/')) return redirect;
    const l = n.links[0]!;
    const parentPath = this.lowerPathOf(l.parent);
    if (parentPath === undefined) return undefined;
    return `${parentPath}/${redirect ?? l.name}`;
  }

  // ------------------------------------------------------------------ gate (live commit)

  /** Runs fn now, or after the live commit in progress. */
  private gated<T>(fn: () => T | Promise<T>): T | Promise<T> {
    if (!this.gate) return fn();
    return this.gate.then(() => this.gated(fn));
  }

  // ------------------------------------------------------------------ handlers: reading

  lookup(_c: Caller, parent: number, name: Buffer): Entry | Promise<Entry> {
    const s = name.toString('latin1');
    // the control files answer during a live commit too (status while it runs)
    if (parent === 1 && s === CONTROL_DIR_NAME) return this.control.entry(CTL_DIR);
    if (parent === CTL_DIR) return this.control.lookup(s);
    return this.gated(() => {
      const p = this.node(parent);
      const u = this.view.child(this.resolve(p), s);
      if (!u) return { ino: 0, entryTimeout: this.readOnly ? this.lowerTimeout : 0, attrTimeout: 0, attr: this.vec };
      return this.remember(p, s, u);
    });
  }

  forget(ino: number, nlookup: number): void {
    const n = this.byId.get(ino);
    if (!n || n === this.root) return;
    n.nlookup = Math.max(0, n.nlookup - nlookup);
    this.maybeDrop(n);
  }

  getattr(_c: Caller, ino: number, fh: number | undefined): AttrReply | Promise<AttrReply> {
    if (ino < FIRST_NODE && ino !== 1) return this.control.getattr(ino);
    return this.gated(() => {
      const n = this.node(ino);
      const u = this.resolve(n);
      const attr = this.attrOf(n, u);
      this.attrsInC(n, u);
      return { attr, timeout: this.timeoutOf(u) };
    });
  }

  readlink(_c: Caller, ino: number): Buffer | Promise<Buffer> {
    return this.gated(() => Buffer.from(this.view.readlink(this.resolve(this.node(ino))), 'latin1'));
  }

  opendir(_c: Caller, ino: number): OpenReply | Promise<OpenReply> {
    if (ino === CTL_DIR) {
      const fh = this.nextFh++;
      this.dirs.set(fh, { entries: [] });  // the listing is ControlFiles'
      return { fh };
    }
    return this.gated(() => {
      const n = this.node(ino);
      const u = this.resolve(n);
      let entries: DirHandle['entries'];
      if (!u.upper && !u.middle && u.lower !== undefined) {
        entries = [];
        for (let off = 0; ;) {
          const batch = this.reader.readdir(u.lower, off, 1024);
          if (batch.length === 0) break;
          for (const e of batch) if (e.name !== '.' && e.name !== '..') entries.push({ name: e.name, nid: e.nid });
          off = batch[batch.length - 1]!.next;
        }
      } else entries = this.view.readdir(u).map((name) => ({ name }));
      if (n === this.root) entries = entries.filter((e) => e.name !== CONTROL_DIR_NAME);
      const fh = this.nextFh++;
      this.dirs.set(fh, { entries });
      return { fh, keepCache: true, cacheReaddir: true };
    });
  }

  readdir(_c: Caller, ino: number, fh: number, offset: number, plus: boolean, size: number): DirEntry[] | Promise<DirEntry[]> {
    return this.gated(() => {
      const d = this.dirs.get(fh);
      if (!d) fail('EBADF');
      const max = Math.ceil(size / (plus ? 152 : 24));
      const out: DirEntry[] = [];
      const DT_DIR = 4;
      if (ino === CTL_DIR) return this.control.readdir(offset, max);
      const p = this.node(ino);
      const pu = this.resolve(p);
      for (let i = offset; i < 2 + d!.entries.length && out.length < max; i++) {
        if (i < 2) { out.push({ name: Buffer.from(i === 0 ? '.' : '..'), next: i + 1, ino: i === 0 ? p.stIno : (p.links[0]?.parent ?? p).stIno, mode: DT_DIR << 12 }); continue; }
        const e = d!.entries[i - 2]!;
        const path = pu.path === '/' ? `/${e.name}` : `${pu.path}/${e.name}`;
        const u = e.nid !== undefined ? { path, lower: e.nid } : this.view.child(pu, e.name);
        if (!u) continue;  // gone since opendir
        const name = Buffer.from(e.name, 'latin1');
        if (plus) {
          const entry = this.remember(p, e.name, u);
          const attr = entry.attr as Float64Array;
          out.push({ name, next: i + 1, ino: attr[0]!, mode: attr[1]!, entry });
        } else {
          const known = this.nodeFor(this.keyOf(u, p, e.name), p, e.name);
          out.push({ name, next: i + 1, ino: known ? known.stIno : this.stInoOf(u), mode: this.view.getattr(u).mode });
        }
      }
      return out;
    });
  }

  releasedir(_ino: number, fh: number): void { this.dirs.delete(fh); }

  statfs(): StatFs { return backing.statfs(Buffer.from(this.opts.statfsPath)); }

  getxattr(_c: Caller, ino: number, name: Buffer): Buffer | Promise<Buffer> {
    if (ino < FIRST_NODE && ino !== 1) fail('ENODATA');
    return this.gated(() => {
      const s = name.toString('latin1');
      const x = this.view.xattrs(this.resolve(this.node(ino))).find((a) => a.name === s);
      if (!x) throw NO_XATTR;
      return Buffer.from(x!.value);
    });
  }

  listxattr(_c: Caller, ino: number): Buffer | Promise<Buffer> {
    if (ino < FIRST_NODE && ino !== 1) return Buffer.alloc(0);
    return this.gated(() => Buffer.concat(this.xattrsOf(this.resolve(this.node(ino))).map((x) => Buffer.from(`${x.name}\0`, 'latin1'))));
  }

  // ------------------------------------------------------------------ handlers: creating and reading files
  //
  // Zero-message open (docs/fuse.md "Zero-message open"), tags and HEAD: C answers every open of
  // a file ENOSYS, so the kernel sends no open or release for files; reads and writes come by
  // node. On a HEAD, copy-up happens at the first write, setattr(size) or fallocate, C writes
  // only to upper files TS marked writable, and a live commit or apply holds C's writes
  // (`holdWrites`) so nothing writes the upper being committed after the split.

  create(c: Caller, parent: number, name: Buffer, mode: number, flags: number): { entry: Entry; open: OpenReply } | Promise<{ entry: Entry; open: OpenReply }> {
    if (parent < FIRST_NODE && parent !== 1) fail('EACCES');
    return this.gated(() => {
      this.writable();
      const p = this.node(parent);
      const s = name.toString('latin1');
      if (this.childOf(p, s)) {
        if (flags & C.O_EXCL) fail('EEXIST');
        const e = this.lookup(c, parent, name) as Entry;
        return this.openedByNode(e, flags);
      }
      const { path, pu } = this.newEntryPath(p, s);
      const f = (flags & ~(C.O_DIRECT | C.O_NOCTTY)) | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
      const fd = at(path, (p) => backing.open(p, f, mode & 0o7777));
      try {
        const o = this.owner(c, pu);
        this.writer!.give(null, fd, o.uid, o.gid);
      } catch (err) {
        backing.close(fd);
        throw err;
      }
      let entry: Entry;
      try {
        entry = this.entryAfterCreate(p, s);
      } catch (err) {
        backing.close(fd);
        throw err;
      }
      const n = this.node(entry.ino);
      this.session?.capabilityNone(n.id);  // a new file: the kernel's getxattr before each write is answered in C
      // served by node: C writes through this fd (a file created read-only stays writable to
      // its creator, as through the creator's own fd)
      this.registerUpper(n, this.resolve(n), (flags & O_ACCMODE) !== C.O_RDONLY ? fd : (backing.close(fd), -1));
      return { entry, open: { fh: -1, keepCache: true } };
    });
  }

  /**
   * create(2) of a name that exists (the kernel's dentry was negative) on a zero-open mount: what
   * the open would have done (copy-up for write access or O_TRUNC, truncation), and no handle.
   */
  private openedByNode(e: Entry, flags: number): { entry: Entry; open: OpenReply } | Promise<{ entry: Entry; open: OpenReply }> {
    const open: OpenReply = { fh: -1, keepCache: true };
    const write = (flags & O_ACCMODE) !== C.O_RDONLY || (flags & C.O_TRUNC) !== 0;
    if (!write) return { entry: e, open };
    const n = this.node(e.ino);
    const copying = this.copyUpOffThread(n);
    if (copying) return copying.then(() => this.gated(() => this.openedByNode(e, flags)));
    const u = this.copyUp(n);
    if (flags & C.O_TRUNC) at(u.upper!.path, (p) => backing.truncate(p, -1, 0));
    this.registerUpper(n, u);
    return { entry: { ...e, attr: this.attrOf(n, u) }, open };
  }

  read(_c: Caller, ino: number, fh: number, size: number, offset: number): Buffer | Promise<Buffer> {
    if (fh >= 0) fail('EBADF');  // no handles (zero-message open): every file is read by node
    if (this.control.isFile(ino)) return this.control.readByNode(ino, size, offset);
    return this.readByNode(ino, size, offset);
  }

  /**
   * A read without a handle (zero-message open) that C could not serve: the node's object is
   * checked and registered (C serves its later reads), and this read is answered from it; inline
   * and empty files are answered from the image.
   */
  private readByNode(ino: number, size: number, offset: number): Buffer | Promise<Buffer> {
    return this.gated(() => {
      const n = this.node(ino);
      const u = this.resolve(n);
      const top = this.view.top(u);
      const orphan = n.detached !== undefined && n.detached.orphanFd >= 0;
      const data: CopyUpData = orphan ? { kind: 'file', path: this.backingPath(n, Buffer.alloc(0)) }
        : top && top.entry.kind !== 'metacopy' ? { kind: 'file', path: this.backingPath(n, top.path) } : this.dataOf(u);
      if (data.kind === 'empty') return Buffer.alloc(0);
      if (data.kind === 'bytes') return Buffer.from(data.bytes.subarray(offset, offset + size));
      const path = Buffer.from(data.path as string);
      const fd = at(path, (p) => backing.open(p, C.O_RDONLY | (n.detached ? 0 : C.O_NOFOLLOW)));
      const served = (): Buffer => {
        try {
          if (orphan) { /* served by TS: no name C could open */ } else if (!top) this.registerOpenable(n, path, fd);
          else if (!n.openable) this.registerUpper(n, u);
          const b = Buffer.alloc(size);
          return b.subarray(0, readSync(fd, b, 0, size, offset));
        } finally {
          backing.close(fd);
        }
      };
      const checking = top || orphan ? undefined : this.objectChecked(data.path as string, fd);
      return checking === undefined ? served() : checking.then(served, (err: unknown) => { backing.close(fd); throw err; });
    });
  }

  /** fsync without a handle (C had no writable backing for the node): the upper file, if any. */
  fsync(_c: Caller, ino: number, fh: number, datasync: boolean): void | Promise<void> {
    if (fh >= 0 || this.readOnly || ino < FIRST_NODE) return;
    return this.gated(() => {
      const n = this.node(ino);
      const top = this.view.top(this.resolve(n));
      const orphan = n.detached !== undefined && n.detached.orphanFd >= 0;
      if (!orphan && (!top || top.entry.kind === 'whiteout')) return;
      const fd = at(this.backingPath(n, top ? top.path : Buffer.alloc(0)), (p) => openSync(p, C.O_RDONLY | (n.detached ? 0 : C.O_NOFOLLOW)));
      try { if (datasync) fdatasyncSync(fd); else fsyncSync(fd); } finally { closeSync(fd); }
    });
  }

  fsyncdir(_c: Caller, ino: number, _fh: number, datasync: boolean): void {
    if (this.readOnly || ino < FIRST_NODE) return;
    const u = this.resolve(this.node(ino));
    if (!u.upper) return;
    const fd = at(u.upper.path, (p) => openSync(p, C.O_RDONLY | C.O_DIRECTORY));
    try { if (datasync) fdatasyncSync(fd); else fsyncSync(fd); } finally { closeSync(fd); }
  }

  // ------------------------------------------------------------------ handlers: changing the tree

  setattr(c: Caller, ino: number, set: SetAttr, fh: number | undefined): AttrReply | Promise<AttrReply> {
    if (ino < FIRST_NODE && ino !== 1) return this.control.setattr(ino, set);
    const later = this.afterCopyUp(ino, () => this.setattr(c, ino, set, fh));
    if (later) return later;
    return this.gated(() => {
      this.writable();
      const n = this.node(ino);
      const wasUpper = this.resolve(n).upper?.entry.kind === 'plain' || this.resolve(n).upper?.entry.kind === 'dir';
      let u: UnionNode, path: Buffer | null = null, target = -1;
      if (n.detached) {
        // its last name went while the kernel still knew it (ftruncate, fchmod...): an fd on the
        // file itself, through its O_PATH fd's magic link (an O_PATH fd takes none of these)
        if (n.detached.orphanFd < 0) this.orphanCopy(n);
        u = n.detached.u;
        const file = this.backingPath(n, Buffer.alloc(0));
        target = set.size !== undefined ? this.openForWriting(file, false) : backing.open(file, C.O_RDONLY);
      } else {
        u = this.copyUp(n);
        path = u.upper!.path;
      }
      try {
        const type = this.view.getattr(u).mode & S_IFMT;
        if (set.uid !== undefined || set.gid !== undefined) atOrFd(path, (p) => backing.chown(p, target, set.uid ?? -1, set.gid ?? -1));
        if (set.mode !== undefined && type !== S_IFLNK) atOrFd(path, (p) => backing.chmod(p, target, set.mode! & 0o7777));
        if (set.size !== undefined) atOrFd(path, (p) => backing.truncate(p, target, set.size!));
        if (set.atime !== undefined || set.mtime !== undefined) {
          const t = (x: Timespec | 'now' | undefined): Timespec => (x === undefined ? { sec: 0, nsec: UTIME_OMIT } : x === 'now' ? { sec: 0, nsec: UTIME_NOW } : x);
          atOrFd(path, (p) => backing.utimens(p, target, t(set.atime), t(set.mtime)));
        }
      } finally {
        if (target >= 0) backing.close(target);
      }
      // mode, owner, size and times are read fresh from the upper; only a copy-up changes the node
      const fresh = n.detached ? n.detached.u : wasUpper ? u : this.refresh(n);
      const attr = this.attrOf(n, fresh);
      this.attrsInC(n, fresh);
      if (!n.openable) this.registerUpper(n, fresh);
      return { attr, timeout: this.timeoutOf(fresh) };
    });
  }

  mknod(c: Caller, parent: number, name: Buffer, mode: number, rdev: number): Entry | Promise<Entry> {
    // a char device 0:0 is a whiteout in the upper: overlayfs refuses to create one, so do we
    if ((mode & S_IFMT) === 0o020000 && rdev === 0) fail('EPERM', 'a 0:0 character device would read as a whiteout');
    return this.make(c, parent, name, (path, pu) => {
      at(path, (p) => backing.mknod(p, mode, rdev));
      const o = this.owner(c, pu);
      this.writer!.give(path, -1, o.uid, o.gid);
    });
  }

  mkdir(c: Caller, parent: number, name: Buffer, mode: number): Entry | Promise<Entry> {
    if (parent < FIRST_NODE && parent !== 1) fail('EACCES');
    return this.gated(() => {
      this.writable();
      const p = this.node(parent);
      const s = name.toString('latin1');
      if (this.childOf(p, s) || (p === this.root && s === CONTROL_DIR_NAME)) fail('EEXIST');
      const pu = this.copyUp(p);
      const path = upperChild(pu.upper!.path, s);
      const o = this.owner(c, pu);
      // over a deleted lower entry the new dir must not merge with what is below: opaque
      const wasWhiteout = at(path, (p) => backing.statInto(p, -1, this.vec)) === 0;
      this.writer!.mkdir(path, o.sgid ? mode | S_ISGID : mode, o, wasWhiteout || this.inLower(pu, s));
      return this.entryAfterCreate(p, s);
    });
  }

  symlink(c: Caller, parent: number, name: Buffer, target: Buffer): Entry | Promise<Entry> {
    return this.make(c, parent, name, (path, pu) => {
      at(path, (p) => symlinkSync(target, p));
      const o = this.owner(c, pu);
      this.writer!.give(path, -1, o.uid, o.gid);
    });
  }

  private make(_c: Caller, parent: number, name: Buffer, fn: (path: Buffer, pu: UnionNode) => void): Entry | Promise<Entry> {
    if (parent < FIRST_NODE && parent !== 1) fail('EACCES');
    return this.gated(() => {
      this.writable();
      const p = this.node(parent);
      const s = name.toString('latin1');
      if (this.childOf(p, s)) fail('EEXIST');
      const { path, pu } = this.newEntryPath(p, s);
      fn(path, pu);
      return this.entryAfterCreate(p, s);
    });
  }

  link(c: Caller, ino: number, newParent: number, newName: Buffer): Entry | Promise<Entry> {
    if (newParent < FIRST_NODE && newParent !== 1) fail('EACCES');
    const later = this.afterCopyUp(ino, () => this.link(c, ino, newParent, newName));
    if (later) return later;
    return this.gated(() => {
      this.writable();
      const n = this.node(ino);
      const p = this.node(newParent);
      const s = newName.toString('latin1');
      if (this.childOf(p, s)) fail('EEXIST');
      const u = this.copyUp(n);
      const { path } = this.newEntryPath(p, s);
      at(u.upper!.path, (from) => at(path, (to) => linkSync(from, to)));
      this.refresh(n);
      return this.entryAfterCreate(p, s);
    });
  }

  unlink(_c: Caller, parent: number, name: Buffer): void | Promise<void> { return this.remove(parent, name, false); }
  rmdir(_c: Caller, parent: number, name: Buffer): void | Promise<void> { return this.remove(parent, name, true); }

  private remove(parent: number, name: Buffer, dir: boolean): void | Promise<void> {
    if (parent < FIRST_NODE && parent !== 1) fail('EPERM');
    return this.gated(() => {
      this.writable();
      const p = this.node(parent);
      const s = name.toString('latin1');
      if (p === this.root && s === CONTROL_DIR_NAME) fail('EPERM');
      const u = this.childOf(p, s);
      if (!u) fail('ENOENT');
      const isDir = (this.view.getattr(u!).mode & S_IFMT) === S_IFDIR;
      if (dir && !isDir) fail('ENOTDIR');
      if (!dir && isDir) fail('EISDIR');
      if (isDir && this.view.readdir(u!).length > 0) fail('ENOTEMPTY');
      const pu = this.copyUp(p);
      const path = upperChild(pu.upper!.path, s);
      const victim = this.linkedTo(p, s);
      if (victim) this.session?.clearAttrSource(victim.id);  // its inode number may be reused
      if (victim && !isDir && victim.links.length === 1 && victim.nlookup > 0) {
        // the kernel may still use it through an open file: keep what fstat needs
        let orphanFd = -1;
        const top = this.view.top(u!);
        if (top) { try { orphanFd = at(top.path, (p) => backing.open(p, O_PATH | C.O_NOFOLLOW)); } catch { orphanFd = -1; } }
        victim.detached = { u: u!, orphanFd };
        this.notOpenable(victim);  // its path is gone (ext4 may reuse the inode number): TS serves it by orphanFd
      }
      this.writer!.removeName(path, { below: this.inLower(pu, s), inUpper: u!.upper !== undefined, isDir });
      this.removeLink(p, s);
      if (victim && !victim.detached) this.refreshQuiet(victim);
    });
  }

  /** After one name of a hardlinked file went away: its attributes (nlink) change. */
  private refreshQuiet(n: Node): void {
    try { if (n.links.length > 0) this.refresh(n); } catch { /* gone */ }
  }

  rename(_c: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): void | Promise<void> {
    if ((parent < FIRST_NODE && parent !== 1) || (newParent < FIRST_NODE && newParent !== 1)) fail('EPERM');
    return this.gated(() => {
      this.writable();
      if (flags === RENAME_EXCHANGE) return this.exchange(parent, name, newParent, newName);
      if (flags & ~RENAME_NOREPLACE) fail('EINVAL', 'only RENAME_NOREPLACE and RENAME_EXCHANGE are supported');
      const p = this.node(parent), np = this.node(newParent);
      const s = name.toString('latin1'), ns = newName.toString('latin1');
      if ((p === this.root && s === CONTROL_DIR_NAME) || (np === this.root && ns === CONTROL_DIR_NAME)) fail('EPERM');
      const su = this.childOf(p, s);
      if (!su) fail('ENOENT');
      const srcDir = (this.view.getattr(su!).mode & S_IFMT) === S_IFDIR;
      const du = this.childOf(np, ns);
      if (du) {
        if (flags & RENAME_NOREPLACE) fail('EEXIST');
        const dstDir = (this.view.getattr(du).mode & S_IFMT) === S_IFDIR;
        if (srcDir && !dstDir) fail('ENOTDIR');
        if (!srcDir && dstDir) fail('EISDIR');
        if (dstDir && this.view.readdir(du).length > 0) fail('ENOTEMPTY');
        // two names of one file: rename(2) does nothing
        if (!srcDir && this.sameFile(su!, du)) return;
      }
      if (p === np && s === ns) return;
      const w = this.writer!;
      // the source: its own upper entry (dirs carry a redirect to their lower)
      const moved = this.linkedTo(p, s) ?? this.tempNode(p, s, su!);
      const lowerPath = srcDir ? this.lowerPathOf(moved) : undefined;
      const mu = this.copyUp(moved);
      const pu = this.resolve(p);
      const npu = this.copyUp(np);
      const from = upperChild(pu.upper!.path, s);
      const to = upperChild(npu.upper!.path, ns);
      const victim = du ? this.linkedTo(np, ns) : undefined;
      if (victim) this.session?.clearAttrSource(victim.id);  // its inode number may be reused
      if (victim && !victim.isDir && victim.links.length === 1 && victim.nlookup > 0) {
        let orphanFd = -1;
        const top = this.view.top(du!);
        if (top) { try { orphanFd = at(top.path, (p) => backing.open(p, O_PATH | C.O_NOFOLLOW)); } catch { orphanFd = -1; } }
        victim.detached = { u: du!, orphanFd };
        this.notOpenable(victim);
      }
      w.moveName(from, to, { srcDir, lowerPath, hasBelow: this.view.hasBelow(mu), destBelow: this.inLower(npu, ns), srcBelow: this.inLower(pu, s) });
      // the table follows
      if (victim) this.removeLink(np, ns);
      const i = moved.links.findIndex((l) => l.parent === p && l.name === s);
      if (i >= 0) {
        this.addLink(moved, np, ns);  // first: the source dir must not drop out of the table meanwhile
        this.delLink(moved, i);
      }
      this.stamp++;
      if (moved.nlookup === 0 && moved.children === 0) this.maybeDrop(moved);
    });
  }

  /**
   * rename(2) with RENAME_EXCHANGE: both entries are copied up (a dir alone, as for a rename), each
   * dir that merges a lower gets an absolute redirect to it and a pure upper dir landing on a name
   * the lower has gets opaque, then the two upper names swap with renameat2(RENAME_EXCHANGE). Both
   * names stay occupied, so no whiteout is needed.
   */
  private exchange(parent: number, name: Buffer, newParent: number, newName: Buffer): void {
    const p = this.node(parent), np = this.node(newParent);
    const s = name.toString('latin1'), ns = newName.toString('latin1');
    if ((p === this.root && s === CONTROL_DIR_NAME) || (np === this.root && ns === CONTROL_DIR_NAME)) fail('EPERM');
    const su = this.childOf(p, s), du = this.childOf(np, ns);
    if (!su || !du) fail('ENOENT');
    if (p === np && s === ns) return;
    const srcDir = (this.view.getattr(su!).mode & S_IFMT) === S_IFDIR;
    const dstDir = (this.view.getattr(du!).mode & S_IFMT) === S_IFDIR;
    // two names of one file: nothing to do (as vfs_rename)
    if (!srcDir && !dstDir && this.sameFile(su!, du!)) return;
    const w = this.writer!;
    const a = this.linkedTo(p, s) ?? this.tempNode(p, s, su!);
    const b = this.linkedTo(np, ns) ?? this.tempNode(np, ns, du!);
    // where each dir's lower is, before anything moves
    const aLower = srcDir ? this.lowerPathOf(a) : undefined;
    const bLower = dstDir ? this.lowerPathOf(b) : undefined;
    const au = this.copyUp(a);
    const bu = this.copyUp(b);
    const pu = this.resolve(p), npu = this.resolve(np);
    const from = upperChild(pu.upper!.path, s);
    const to = upperChild(npu.upper!.path, ns);
    w.exchangeNames({ path: from, dir: srcDir, lowerPath: aLower, hasBelow: this.view.hasBelow(au), landsBelow: this.inLower(npu, ns) },
      { path: to, dir: dstDir, lowerPath: bLower, hasBelow: this.view.hasBelow(bu), landsBelow: this.inLower(pu, s) });
    // the table follows: a is now np/ns, b is p/s (add first: a dir must not drop out meanwhile)
    this.addLink(a, np, ns);
    this.addLink(b, p, s);
    const i = a.links.findIndex((l) => l.parent === p && l.name === s);
    if (i >= 0) this.delLink(a, i);
    const j = b.links.findIndex((l) => l.parent === np && l.name === ns);
    if (j >= 0) this.delLink(b, j);
    this.stamp++;
    for (const n of [a, b]) if (n.nlookup === 0 && n.children === 0) this.maybeDrop(n);
  }

  /** Two names of one file (rename(2) then does nothing): one upper or middle inode, or one image inode. */
  private sameFile(a: UnionNode, b: UnionNode): boolean {
    const ta = this.view.top(a), tb = this.view.top(b);
    if (ta || tb) return ta !== undefined && tb !== undefined && ta.entry.stat.ino === tb.entry.stat.ino;
    return a.lower === b.lower;
  }

  /** A table node for an entry the kernel never looked up (rename needs its links). */
  private tempNode(p: Node, name: ByteString, u: UnionNode): Node {
    const e = this.remember(p, name, u);
    const n = this.node(e.ino);
    n.nlookup--;
    return n;
  }

  setxattr(c: Caller, ino: number, name: Buffer, value: Buffer, flags: number): void | Promise<void> {
    if (ino < FIRST_NODE && ino !== 1) fail('EPERM');
    const later = this.afterCopyUp(ino, () => this.setxattr(c, ino, name, value, flags));
    if (later) return later;
    return this.gated(() => {
      this.writable();
      const n = this.node(ino);
      const u = this.copyUp(n);
      at(u.upper!.path, (p) => lsetxattr(p, Buffer.from(storedXattrName(name.toString('latin1'), this.opts.ns), 'latin1'), value, flags));
      this.refresh(n);
    });
  }

  removexattr(c: Caller, ino: number, name: Buffer): void | Promise<void> {
    if (ino < FIRST_NODE && ino !== 1) fail('EPERM');
    const later = this.afterCopyUp(ino, () => this.removexattr(c, ino, name));
    if (later) return later;
    return this.gated(() => {
      this.writable();
      const n = this.node(ino);
      const s = name.toString('latin1');
      if (!this.view.xattrs(this.resolve(n)).some((x) => x.name === s)) fail('ENODATA');
      const u = this.copyUp(n);
      at(u.upper!.path, (p) => lremovexattr(p, Buffer.from(storedXattrName(s, this.opts.ns), 'latin1')));
      this.refresh(n);
    });
  }

  // ------------------------------------------------------------------ control files

  /**
   * Control files, and writes by node (zero-message open) that C could not take: the node is
   * copied up first (a lower or middle file), the bytes written through an fd of this call's own,
   * and the upper file marked writable for C (unless writes are held). There are no handles:
   * every file, control files included, is written by node.
   */
  write(c: Caller, ino: number, fh: number, data: Buffer, offset: number): number | Promise<number> {
    if (fh >= 0) fail('EBADF');  // no handles, as read
    if (this.control.isFile(ino)) return this.control.writeByNode(ino, data);
    return this.byNodeForWriting(ino, () => this.write(c, ino, fh, data, offset), (fd) => writeSync(fd, data, 0, data.length, offset));
  }

  /** fallocate by node (zero-message open), as write: copy-up first, then through an fd of its own. */
  fallocate(c: Caller, ino: number, fh: number, mode: number, offset: number, length: number): void | Promise<void> {
    if (ino < FIRST_NODE && ino !== 1) fail('EPERM');
    if (fh >= 0) fail('EBADF');
    return this.byNodeForWriting(ino, () => this.fallocate(c, ino, fh, mode, offset, length), (fd) => backing.fallocate(fd, mode, offset, length));
  }

  /**
   * A change to a lower file whose last name went while the kernel still knew it. The kernel's
   * overlay copies a file up when a writer opens it, so its writer goes on after an unlink; a
   * zero-open server never sees that open. So the bytes and attributes go to a nameless copy now
   * (made in the scratch dir, then unlinked), which serves the node from then on, as an upper
   * file's orphan does. The object is checked first, as for any copy-up.
   */
  private orphanCopy(n: Node): void {
    const d = n.detached!;
    const w = this.writable();
    const a = this.view.getattr(d.u);
    if ((a.mode & S_IFMT) !== S_IFREG) fail('ENOENT');
    const data = this.dataOf(d.u);
    if (data.kind === 'file' && String(data.path).startsWith(`${this.opts.objectsDir}/`)) this.checkObjectForCopy(String(data.path));
    const dest = w.scratchFile();
    w.copyUp(dest, { mode: a.mode, uid: a.uid, gid: a.gid, rdev: a.rdev, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec, xattrs: this.view.xattrsAsListed(d.u) }, data);
    try {
      d.orphanFd = at(dest, (p) => backing.open(p, O_PATH | C.O_NOFOLLOW));
    } finally {
      rmSync(dest, { force: true });
    }
  }

  /**
   * Runs fn on an O_WRONLY fd of node ino's upper file, copying it up first (off the JS thread for
   * a big file: `again` once that is done); marks the upper file writable for C afterwards.
   */
  private byNodeForWriting<T>(ino: number, again: () => T | Promise<T>, fn: (fd: number) => T): T | Promise<T> {
    const later = this.afterCopyUp(ino, again);
    if (later) return later;
    return this.gated(() => {
      this.writable();
      const n = this.node(ino);
      let u = this.resolve(n);
      let path: Buffer;
      if (n.detached) {
        // its last name went while the kernel still knew it: the file itself (an upper one's, or
        // the nameless copy a lower one gets now)
        if (n.detached.orphanFd < 0) this.orphanCopy(n);
        path = this.backingPath(n, Buffer.alloc(0));
      } else {
        const copying = this.copyUpOffThread(n);
        if (copying) return copying.then(again);
        u = this.copyUp(n);
        path = u.upper!.path;
      }
      const fd = this.openForWriting(path, !n.detached);
      let r: T;
      try {
        r = fn(fd);
      } catch (err) {
        backing.close(fd);
        throw err;
      }
      if (n.detached) backing.close(fd);
      else this.registerUpper(n, u, fd);  // C writes through it from now on
      return r;
    });
  }

  /**
   * An O_WRONLY fd on an upper file. The kernel already allowed the write (the writer's open or
   * create did): a server that is not root gets EACCES for a file it made read-only (created
   * 0444, or chmodded after the writer opened it), so it lends itself write permission for the
   * open and puts the mode back.
   */
  private openForWriting(path: Buffer, noFollow: boolean): number {
    const flags = C.O_WRONLY | (noFollow ? C.O_NOFOLLOW : 0);
    try {
      return at(path, (p) => backing.open(p, flags));
    } catch (err) {
      if (!(err instanceof FuseError) || err.errno !== E.EACCES || process.geteuid?.() === 0) throw err;
      const mode = at(path, (p) => backing.stat(p))[1]! & 0o7777;
      at(path, (p) => backing.chmod(p, -1, mode | 0o200));
      try {
        return at(path, (p) => backing.open(p, flags));
      } finally {
        at(path, (p) => backing.chmod(p, -1, mode));
      }
    }
  }

  /**
   * The write barrier (docs/fuse.md "On a HEAD"): from now until the returned release, C writes
   * nothing by node (writes in progress are waited for, every writable backing fd is closed) and
   * TS marks nothing writable; TS writes through fds of its own meanwhile. Release is idempotent.
   */
  holdWrites(): () => void {
    this.writesHeld++;
    if (this.writesHeld === 1) this.session?.holdWrites(true);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.writesHeld--;
      if (this.writesHeld === 0) this.session?.holdWrites(false);
    };
  }

  // ------------------------------------------------------------------ live commit support

  /**
   * Freezes the tree for an apply: every request waits until `fn` is done, then the view switches
   * to the new base (`after`) and, when the tree changed, the kernel's caches are invalidated.
   */
  async frozen<T>(fn: () => Promise<T>, after: (result: T) => { imagePath: string; upperDir: string; viewChanged?: boolean } | undefined): Promise<T> {
    while (this.gate) await this.gate;
    let open!: () => void;
    this.gate = new Promise((r) => { open = r; });
    this.session?.clearAttrSource();  // getattr waits at the gate too while the upper may change
    const releaseWrites = this.holdWrites();  // C writes by node wait at the gate too (in TS)
    let inval: Array<[number, Buffer | undefined]> = [];
    try {
      const result = await fn();
      const next = after(result);
      if (next) {
        // the kernel's caches of a view that changed: every name and inode it may hold
        if (next.viewChanged) for (const n of this.byId.values()) {
          inval.push([n.id, undefined]);
          for (const l of n.links) inval.push([l.parent.id, Buffer.from(l.name, 'latin1')]);
        }
        this.switchBase(next.imagePath, next.upperDir);
        this.setDirFds([]);
      }
      return result;
    } finally {
      releaseWrites();
      this.gate = undefined;
      open();
      // after the gate opened: the kernel may hold a dir lock for a request that waited on it
      const session = this.session;
      if (session && inval.length > 0) {
        const list = inval;
        inval = [];
        void (async () => {
          for (const [id, name] of list) {
            try { if (name) await session.invalEntry(id, name); else await session.invalInode(id); } catch { /* forgotten meanwhile */ }
          }
        })();
      }
    }
  }

  /**
   * A live commit's split (LiveMount.layer, docs/fuse.md "Live commit"): from now on the view is
   * the same base with `middle` (the upper being committed) as a read-only layer under `next`,
   * where writes go. The tree shown does not change, so node keys and the kernel's caches stay.
   * Returns the time requests were held (ms).
   */
  async layer(middle: string, next: string): Promise<number> {
    return this.switching(() => {
      const m = this.dirFd(middle), u = this.dirFd(next);
      this.view = new UnionView(this.reader, u.path, this.opts.ns, m.path);
      this.session?.clearAttrSource();  // upper files are the middle layer's now
      this.setDirFds([m.fd, u.fd]);
      this.stamp++;
    });
  }

  /** The commit point of a live commit (LiveMount.rebase): the new commit under `upper` (what was `next`). Returns the time requests were held (ms). */
  async rebase(imagePath: string, upper: string): Promise<number> {
    return this.switching(() => {
      const u = this.dirFd(upper);
      this.switchBase(imagePath, u.path);
      this.setDirFds([u.fd]);
    });
  }

  /** Runs a synchronous switch of the view once no apply holds the gate; the time it took (ms). */
  private async switching(fn: () => void): Promise<number> {
    while (this.gate) await this.gate;
    const t = process.hrtime.bigint();
    fn();
    return Number(process.hrtime.bigint() - t) / 1e6;
  }

  /**
   * A dir of a live commit, held by an fd and reached through /proc/self/fd: the commit engine
   * exchanges head/ and head.swap by rename while the view uses them, and the view must follow
   * the dirs, not their names.
   */
  private dirFd(path: string): { fd: number; path: string } {
    const fd = openSync(path, C.O_RDONLY | C.O_DIRECTORY);
    // `/.`: the dir itself (lstat of the magic link alone would see a symlink)
    return { fd, path: `/proc/self/fd/${fd}/.` };
  }

  private setDirFds(fds: number[]): void {
    for (const fd of this.dirFds) closeSync(fd);
    this.dirFds = fds;
  }

  /** Runs fn(path) and puts back the times of path's parent dir, as a copy-up does. */
  private keepingParentTimes(path: Buffer, fn: (path: Buffer) => void): void {
    const parent = path.subarray(0, path.lastIndexOf(0x2f));
    const pv = at(parent, (p) => backing.stat(p));
    fn(path);
    at(parent, (p) => backing.utimens(p, -1, { sec: pv[9]!, nsec: pv[10]! }, { sec: pv[11]!, nsec: pv[12]! }));
  }

  /** The table node of the dir at a union path (parts), copied up; throws if it is not a dir. */
  private upperDirAt(parts: ByteString[]): UnionNode {
    let node = this.root;
    for (const part of parts) {
      const u = this.view.child(this.resolve(node), part);
      if (!u || (this.view.getattr(u).mode & S_IFMT) !== S_IFDIR) throw new Error('dir gone');
      node = this.linkedTo(node, part) ?? this.tempNode(node, part, u);
    }
    return this.copyUp(node);
  }

  /** Puts the file at `from` at every union path in `paths` of the current upper (parents copied up). */
  private placeAt(from: Buffer, paths: ByteString[]): void {
    let first: Buffer | undefined;
    for (const path of paths) {
      const parts = path.split('/').filter((x) => x !== '');
      const name = parts.pop()!;
      const pu = this.upperDirAt(parts);
      const dest = upperChild(pu.upper!.path, name);
      this.keepingParentTimes(dest, (d) => {
        if (first) this.writer!.linkOver(first, d);
        else this.writer!.rename(from, d, false);
      });
      first ??= dest;
    }
  }

  /** After a commit or apply: serve the new base under `upperDir` (new or kept); node ids and st_ino stay. */
  private switchBase(imagePath: string, upperDir: string): void {
    const source = new FileSource(imagePath, { cacheBlocks: 8192 });
    const reader = ImageReader.open(source);
    this.source.close();
    this.source = source;
    this.reader = reader;
    this.view = new UnionView(reader, upperDir, this.opts.ns);
    this.epoch++;
    this.stamp++;
    // keys are recomputed when met (nodeFor): this switch holds requests, and the table may be large
    for (const n of this.byId.values()) this.notOpenable(n);  // the new base may have other data at this name
    this.session?.capabilityForget();  // ... and other xattrs
    this.session?.clearAttrSource();  // ... and another upper
    this.root.u = undefined;
  }

  /**
   * Puts back files a live commit had set aside when its server died (the scratch dir moved to
   * `preservedKept` at start, `kept.json` naming each file's path): each goes to its path in the
   * upper, replacing the copy the commit took, so the writes made after the commit began are kept.
   * Call before mounting. Returns the paths restored and those left in place (their dir is gone).
   */
  restoreKept(): { restored: string[]; left: string[] } {
    const dir = this.writer?.preserved;
    const out = { restored: [] as string[], left: [] as string[] };
    if (!dir) return out;
    let list: Array<{ file: string; path: string; also?: string[] }>;
    try {
      list = JSON.parse(readFileSync(join(dir, 'kept.json'), 'latin1')) as Array<{ file: string; path: string; also?: string[] }>;
    } catch {
      return out;
    }
    for (const { file, path, also } of list) {
      const here = join(dir, file.slice(file.lastIndexOf('/') + 1));
      try {
        this.placeAt(Buffer.from(here, 'latin1'), [path, ...(also ?? [])]);
        out.restored.push(path);
      } catch {
        out.left.push(path);
      }
    }
    if (out.left.length === 0) rmSync(dir, { recursive: true, force: true });
    return out;
  }

  /** Where files set aside by a live commit that never finished were moved at start, if any. */
  get preservedKept(): string | undefined {
    return this.writer?.preserved;
  }

  close(): void {
    this.setDirFds([]);
    this.source.close();
  }
}
