// The control files of a mount (docs/fuse.md "Control files"): one dir holding `commit`, `status`
// and, on a writable HEAD, `apply`. Reading one gives a text; a write to `commit` or `apply` runs
// the server's hook and its reply waits for the hook. This module owns their node ids and
// attributes, their open handles, the last commit/apply texts and how a hook's error becomes an
// errno. A host serves it where it likes: UnionFs at /.stratum, ControlFs (control-fs.ts) as the
// root of a mount of its own. Nothing here waits but the hooks themselves.
//
// Public surface: ControlFiles, ControlFilesOptions, ControlHooks, CONTROL_DIR_NAME.
import { constants as C } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { ATTR_LEN, errnoOf, FuseError, type AttrReply, type DirEntry, type Entry, type OpenReply, type SetAttr } from '../native/fuse.js';
import { StratumError } from '../store/error.js';
import { S_IFDIR, S_IFREG } from '../store/image/erofs.js';

export const CONTROL_DIR_NAME = '.stratum';

/** What the control files call; the server supplies them (they need the store and the mount state). */
export interface ControlHooks {
  /** Commit HEAD as label:tag ('' = tagged by its id); returns the text `commit` then reads back. */
  commit?(tag: string): Promise<string>;
  /** Move HEAD onto `ref` (`tag`, optionally followed by --discard or --keep); returns the result text. */
  apply?(args: string): Promise<string>;
  /** The text of `status`. */
  status(): Promise<string> | string;
}

export interface ControlFilesOptions {
  /** A tag mount: `commit` is read-only (writes EROFS) and there is no `apply`. */
  readOnly: boolean;
  /** The node id the host gives the dir; the files are nodes 3, 4 and 5 in every host. */
  dirNode: number;
  /**
   * A host with zero-message open (no open, no handles, no direct_io: the kernel caches pages):
   * getattr reads the file's text as of now and gives its size, reads serve that text by node,
   * and `invalidate` (awaited before getattr answers) drops the kernel's pages when it changed.
   */
  noHandles?: { invalidate(ino: number): Promise<void> };
}

type ControlFile = 'commit' | 'status' | 'apply';
const FILE_NODES: Record<ControlFile, number> = { commit: 3, status: 4, apply: 5 };
const FILE_OF = new Map<number, ControlFile>(Object.entries(FILE_NODES).map(([name, id]) => [id, name as ControlFile]));
/** st_ino is 2^50 + k (the dir k = 2) whatever node ids the host uses, so every kind of mount shows the same numbers. */
const VIRTUAL_INO_BASE = 2 ** 50, DIR_KEY = 2;
const E = osConstants.errno;
const O_ACCMODE = 3;
const DT_DIR = 4;
/** What a negative entry carries (the kernel ignores it). */
const NO_ATTR = new Float64Array(ATTR_LEN);
/** noHandles: what a file's text is taken to be after a write by node (never a real text: the next getattr invalidates). */
const WRITTEN = Buffer.from([0]);

const fail = (code: 'EACCES' | 'EBADF' | 'ENOENT' | 'EPERM' | 'EROFS'): never => { throw FuseError.of(code); };

interface Handle { file: ControlFile; bytes: Buffer }

/**
 * The errno a failed hook's write answers; its message stays readable in the file. Stratum's own
 * refusals have fixed errnos; a failure of the system underneath (a full disk, quota, a name too
 * long) answers the errno the system gave, so `echo > commit` says "No space left on device".
 */
function errnoOfHookError(err: unknown): number {
  const code = err instanceof StratumError ? err.code : '';
  if (code === 'TAG_EXISTS') return E.EEXIST;
  if (code === 'BAD_NAME' || code === 'USAGE' || code === 'AMBIGUOUS_REF') return E.EINVAL;
  if (code === 'NOT_FOUND') return E.ENOENT;
  if (code === 'BUSY') return E.EBUSY;
  const errno = errnoOf(err);
  if (errno !== E.EIO) return errno;
  if (code === 'NO_SPACE') return E.ENOSPC;
  if (code === 'PERMISSION') return E.EACCES;
  return E.EIO;
}

export class ControlFiles {
  readonly readOnly: boolean;
  readonly dirNode: number;
  /** Handles are this module's own: a host routes read, write and release here by node id. */
  private readonly handles = new Map<number, Handle>();
  private nextFh = 1;
  private lastCommit = '';
  private lastApply = '';
  private readonly uid: number;
  private readonly gid: number;
  private readonly noHandles: ControlFilesOptions['noHandles'];
  /** noHandles: each file's text as its last getattr gave it (what reads serve). */
  private readonly texts = new Map<number, Buffer>();

  constructor(private readonly hooks: ControlHooks, options: ControlFilesOptions) {
    this.readOnly = options.readOnly;
    this.dirNode = options.dirNode;
    this.noHandles = options.noHandles;
    const asRoot = process.getuid?.() === 0;
    this.uid = asRoot ? 0 : (process.getuid?.() ?? 0);
    this.gid = asRoot ? 0 : (process.getgid?.() ?? 0);
  }

  /** Whether node `ino` is the dir or one of its files. */
  has(ino: number): boolean {
    return ino === this.dirNode || FILE_OF.has(ino);
  }

  /** Whether node `ino` is one of the files. */
  isFile(ino: number): boolean {
    return FILE_OF.has(ino);
  }

  /** The names the dir lists, sorted. */
  names(): ControlFile[] {
    return this.readOnly ? ['commit', 'status'] : ['apply', 'commit', 'status'];
  }

  /** The entry of the dir or a file; timeouts 0, the kernel asks every time (the texts change). */
  entry(ino: number): Entry {
    const now = Math.floor(Date.now() / 1000);
    const dir = ino === this.dirNode;
    const file = FILE_OF.get(ino);
    const mode = dir ? S_IFDIR | 0o555 : file !== 'status' && !this.readOnly ? S_IFREG | 0o644 : S_IFREG | 0o444;
    return { ino, entryTimeout: 0, attrTimeout: 0, attr: {
      ino: VIRTUAL_INO_BASE + (dir ? DIR_KEY : ino), mode, nlink: dir ? 2 : 1, uid: this.uid, gid: this.gid, rdev: 0,
      size: this.texts.get(ino)?.length ?? 0, blocks: 0, blksize: 4096, atime: now, atimeNsec: 0, mtime: now, mtimeNsec: 0, ctime: now, ctimeNsec: 0 } };
  }

  /** `name` in the dir: a file's entry, or a negative entry the kernel does not keep. */
  lookup(name: string): Entry {
    if ((this.names() as string[]).includes(name)) return this.entry(FILE_NODES[name as ControlFile]);
    return { ino: 0, entryTimeout: 0, attrTimeout: 0, attr: NO_ATTR };
  }

  getattr(ino: number): AttrReply | Promise<AttrReply> {
    if (!this.noHandles || !FILE_OF.has(ino)) return { attr: this.entry(ino).attr, timeout: 0 };
    return this.snapshot(ino).then(() => ({ attr: this.entry(ino).attr, timeout: 0 }));
  }

  /** noHandles: takes the file's text as of now; the kernel's cached pages go when it changed. */
  private async snapshot(ino: number): Promise<Buffer> {
    const file = FILE_OF.get(ino)!;
    const bytes = Buffer.from(file === 'status' ? await this.hooks.status() : file === 'apply' ? this.lastApply : this.lastCommit);
    const old = this.texts.get(ino);
    this.texts.set(ino, bytes);
    if (old && !old.equals(bytes)) await this.noHandles!.invalidate(ino).catch(() => undefined);
    return bytes;
  }

  /** noHandles: a read by node, from the text the last getattr took (the size the kernel knows). */
  async readByNode(ino: number, size: number, offset: number): Promise<Buffer> {
    if (!FILE_OF.has(ino)) return fail('EBADF');
    const bytes = this.texts.get(ino) ?? await this.snapshot(ino);
    return Buffer.from(bytes.subarray(offset, offset + size));
  }

  /** Only the truncation of `commit` or `apply` that O_TRUNC on open sends; anything else EPERM. */
  setattr(ino: number, set: SetAttr): AttrReply | Promise<AttrReply> {
    const file = FILE_OF.get(ino);
    if (set.size !== undefined && (file === 'commit' || file === 'apply')) return this.getattr(ino);
    // noHandles: writing status (O_TRUNC first) answers as its open would with handles
    if (set.size !== undefined && file === 'status' && this.noHandles) return fail('EACCES');
    return fail('EPERM');
  }

  /** The dir's listing from `offset` ('.' and '..' first), at most `max` entries. */
  readdir(offset: number, max: number): DirEntry[] {
    const names = this.names();
    const out: DirEntry[] = [];
    for (let i = offset; i < 2 + names.length && out.length < max; i++) {
      if (i < 2) { out.push({ name: Buffer.from(i === 0 ? '.' : '..'), next: i + 1, ino: VIRTUAL_INO_BASE, mode: DT_DIR << 12 }); continue; }
      const name = names[i - 2]!;
      out.push({ name: Buffer.from(name), next: i + 1, ino: VIRTUAL_INO_BASE + FILE_NODES[name], mode: S_IFREG });
    }
    return out;
  }

  /** A handle on a file holding its text as of now (status asks its hook); direct_io, so every read and write reaches us. */
  async open(ino: number, flags: number): Promise<OpenReply> {
    const file = FILE_OF.get(ino);
    if (!file) return fail('EPERM');
    const write = (flags & O_ACCMODE) !== C.O_RDONLY;
    if (file === 'status' && write) fail('EACCES');
    if (file !== 'status' && write && this.readOnly) fail('EROFS');
    const text = file === 'status' ? await this.hooks.status() : file === 'apply' ? this.lastApply : this.lastCommit;
    const fh = this.nextFh++;
    this.handles.set(fh, { file, bytes: Buffer.from(text) });
    return { fh, directIo: true, nonSeekable: false };
  }

  read(fh: number, size: number, offset: number): Buffer {
    const h = this.handles.get(fh);
    if (!h) return fail('EBADF');
    return Buffer.from(h.bytes.subarray(offset, offset + size));
  }

  /**
   * Runs the file's hook with the written text (trimmed); the reply waits for it. Its result (or
   * `error: <message>`) becomes what the file reads, through this handle and later opens.
   */
  async write(fh: number, data: Buffer): Promise<number> {
    const h = this.handles.get(fh);
    if (!h || h.file === 'status') return fail('EBADF');
    const text = await this.run(h.file, data);
    h.bytes = Buffer.from(text);
    return data.length;
  }

  /** The file's hook with the written text; its result (or `error: <message>`) is what the file reads from now on. */
  private async run(file: 'commit' | 'apply', data: Buffer): Promise<string> {
    const hook = file === 'commit' ? this.hooks.commit : this.hooks.apply;
    if (this.readOnly || !hook) return fail('EROFS');
    let text: string;
    try {
      text = await hook.call(this.hooks, data.toString('utf8').trim());
    } catch (err) {
      this.remember(file, `error: ${(err as Error).message}\n`);
      if (err instanceof FuseError) throw err;
      throw new FuseError(errnoOfHookError(err), (err as Error).message);
    }
    this.remember(file, text);
    return text;
  }

  /**
   * noHandles: a write by node runs the hook as a handle's write does (each write(2) of a few
   * bytes is one request: the kernel writes through). The kernel's pages of the file now hold the
   * written bytes, so the next getattr drops them whatever the text is.
   */
  async writeByNode(ino: number, data: Buffer): Promise<number> {
    const file = FILE_OF.get(ino);
    if (!this.noHandles || file === undefined) return fail('EBADF');
    if (file === 'status') return fail('EACCES');
    if (this.readOnly) return fail('EROFS');
    this.texts.set(ino, WRITTEN);
    try {
      await this.run(file, data);
    } finally {
      this.texts.set(ino, WRITTEN);
    }
    return data.length;
  }

  release(fh: number): void {
    this.handles.delete(fh);
  }

  private remember(file: 'commit' | 'apply', text: string): void {
    if (file === 'commit') this.lastCommit = text; else this.lastApply = text;
  }
}
