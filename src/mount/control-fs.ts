// A filesystem whose root is the control dir (ControlFiles, control.ts) and nothing else: what a
// kernel-mode mount puts on <mountpoint>/.stratum, since erofs + overlayfs have no room for
// virtual files. It refuses every change to the tree with the errno UnionFs gives for /.stratum,
// and it never gates: status answers while a commit or apply hook is still running.
//
// Public surface: ControlFs, ControlFsOptions, controlMountOptions.
import { FuseError, type AttrReply, type Caller, type DirEntry, type Entry, type FuseHandlers, type MountOptions, type OpenReply, type SetAttr, type StatFs } from '../native/fuse.js';
import { ControlFiles, type ControlHooks } from './control.js';
import { fuseMountOptions } from './options.js';

export interface ControlFsOptions {
  /** A tag mount: `commit` is read-only (EROFS) and there is no `apply`. */
  readOnly: boolean;
}

/** The FUSE root node id. */
const ROOT = 1;
/** statfs of a dir of three empty files: nothing to count. */
const STATFS: StatFs = { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 4, ffree: 0, favail: 0, fsid: 0, flag: 0, namemax: 255 };

const fail = (code: 'EACCES' | 'ENODATA' | 'ENOTDIR' | 'EPERM'): never => { throw FuseError.of(code); };

/**
 * How a ControlFs for `label` is mounted: the kernel checks permissions (only the owner, root for a
 * root server, writes commit and apply); each open is direct_io already (control.ts), so no cache
 * option is needed. `ro` is not: a read-only ControlFs refuses writes itself.
 */
export function controlMountOptions(label: string): MountOptions {
  return { options: fuseMountOptions(`stratum-control:${label}`, {}) };
}

export class ControlFs implements FuseHandlers {
  private readonly control: ControlFiles;

  constructor(hooks: ControlHooks, options: ControlFsOptions) {
    this.control = new ControlFiles(hooks, { readOnly: options.readOnly, dirNode: ROOT });
  }

  lookup(_c: Caller, parent: number, name: Buffer): Entry {
    if (parent !== ROOT) fail('ENOTDIR');
    return this.control.lookup(name.toString('latin1'));
  }

  /** The nodes are fixed: nothing to drop. */
  forget(): void {}

  getattr(_c: Caller, ino: number): AttrReply | Promise<AttrReply> { return this.control.getattr(ino); }

  setattr(_c: Caller, ino: number, set: SetAttr): AttrReply | Promise<AttrReply> { return this.control.setattr(ino, set); }

  open(_c: Caller, ino: number, flags: number): Promise<OpenReply> { return this.control.open(ino, flags); }

  read(_c: Caller, _ino: number, fh: number, size: number, offset: number): Buffer { return this.control.read(fh, size, offset); }

  write(_c: Caller, _ino: number, fh: number, data: Buffer): Promise<number> { return this.control.write(fh, data); }

  fsync(): void {}

  release(_ino: number, fh: number): void { this.control.release(fh); }

  opendir(_c: Caller, ino: number): OpenReply {
    if (ino !== ROOT) fail('ENOTDIR');
    return { fh: 0 };  // the listing is fixed for the mount: nothing to keep per handle
  }

  readdir(_c: Caller, _ino: number, _fh: number, offset: number, plus: boolean, size: number): DirEntry[] {
    return this.control.readdir(offset, Math.ceil(size / (plus ? 152 : 24)));
  }

  releasedir(): void {}

  fsyncdir(): void {}

  statfs(): StatFs { return STATFS; }

  // the tree never changes: as UnionFs answers for /.stratum
  create(): never { return fail('EACCES'); }
  mkdir(): never { return fail('EACCES'); }
  mknod(): never { return fail('EACCES'); }
  symlink(): never { return fail('EACCES'); }
  link(): never { return fail('EACCES'); }
  unlink(): never { return fail('EPERM'); }
  rmdir(): never { return fail('EPERM'); }
  rename(): never { return fail('EPERM'); }
  setxattr(): never { return fail('EPERM'); }
  removexattr(): never { return fail('EPERM'); }
  getxattr(): never { return fail('ENODATA'); }
  listxattr(): Buffer { return Buffer.alloc(0); }
}
