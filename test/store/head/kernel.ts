// Shared by the HEAD tests: mount a HEAD with the kernel (erofs of the base image, then overlayfs
// with the objects dir as data-only lower, the label's upper and work dirs), and read views
// (kernel mount, UnionView, a committed image) into one comparable form (test/store/image/view.ts).
import { kernelModeUnavailable } from '../../../src/kernel/support.js';
import { closeSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { lgetxattr, llistxattr } from '../../../src/native/xattr.js';
import { MNT_DETACH, MS_RDONLY, mount, umount2 } from '../../../src/native/mount.js';
import { headPaths } from '../../../src/store/commands/commit.js';
import { S_IFMT } from '../../../src/store/image/erofs.js';
import { FileSource, ImageReader } from '../../../src/store/image/read.js';
import type { ByteString } from '../../../src/store/image/tree.js';
import type { Store } from '../../../src/store/store.js';
import { UnionView } from '../../../src/store/union.js';
import { type View, contentId, fmtXattrs, readerView } from '../image/view.js';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Why the kernel mounts of these tests cannot run here (the same check kernel mode makes), or undefined. */
export const kernelUnsupported = kernelModeUnavailable();

export interface HeadMount {
  merged: string;
  unmount(): void;
}

/** Mounts `label`'s HEAD (base image + upper) at `<scratch>/merged`; call unmount() in a finally. */
export function mountHead(store: Store, label: string, base: string, scratch: string): HeadMount {
  const paths = headPaths(store, label);
  const lower = join(scratch, 'lower');
  const merged = join(scratch, 'merged');
  mkdirSync(lower, { recursive: true });
  mkdirSync(merged, { recursive: true });
  mkdirSync(paths.work, { recursive: true });
  const mounted: string[] = [];
  const unmount = (): void => {
    for (const dir of mounted.splice(0).reverse()) {
      try {
        umount2(dir, 0);
      } catch {
        umount2(dir, MNT_DETACH);
      }
    }
  };
  try {
    mount(store.commits.imagePath(base), lower, 'erofs', MS_RDONLY, null);
    mounted.push(lower);
    mount('overlay', merged, 'overlay', 0, `lowerdir=${lower}::${store.objects.root},upperdir=${paths.upper},workdir=${paths.work},metacopy=on,redirect_dir=on`);
    mounted.push(merged);
  } catch (err) {
    unmount();
    throw err;
  }
  return { merged, unmount };
}

function readAll(path: Buffer | string): Buffer {
  return readFileSync(path);
}

/**
 * The view through a mounted directory, path -> View; `skip` leaves paths (and what is under
 * them) out; `content` gives the bytes a file's content marker is made of (default: all of them).
 */
export function dirView(root: string, skip: (path: ByteString) => boolean = () => false, content: (path: Buffer, size: number) => Uint8Array = (p) => readFileSync(p)): Map<ByteString, View> {
  const out = new Map<ByteString, View>();
  const visit = (abs: Buffer, path: ByteString): void => {
    if (skip(path)) return;
    const st = lstatSync(abs, { bigint: true });
    const mode = Number(st.mode);
    const type = mode & S_IFMT;
    const names = llistxattr(abs, { encoding: 'buffer' });
    const get = (n: Buffer): Buffer | undefined => {
      try {
        return lgetxattr(abs, n);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENODATA') return undefined;
        throw e;
      }
    };
    const xattrs = fmtXattrs(names.map((n) => ({ name: n.toString('latin1'), value: get(n) })), mode);
    const v: View = { mode: mode.toString(8), uid: Number(st.uid), gid: Number(st.gid), mtime: `${st.mtimeNs / 1_000_000_000n}.${st.mtimeNs % 1_000_000_000n}`, xattrs };
    if (type === 0o120000) v.target = (readlinkSync(abs, { encoding: 'buffer' }) as Buffer).toString('latin1');
    if (type === 0o020000 || type === 0o060000) v.rdev = Number(st.rdev);
    if (type === 0o100000) {
      v.size = Number(st.size);
      v.content = contentId(content(abs, v.size));
    }
    out.set(path, v);
    if (type === 0o040000) {
      for (const name of readdirSync(abs, { encoding: 'buffer' }) as Buffer[]) {
        visit(Buffer.concat([abs, Buffer.from('/'), name]), `${path === '/' ? '' : path}/${name.toString('latin1')}`);
      }
    }
  };
  visit(Buffer.from(root), '/');
  return out;
}

/** What UnionView shows of `label`'s HEAD (unmounted), path -> View. */
export function unionView(store: Store, label: string, base: string): Map<ByteString, View> {
  const source = new FileSource(store.commits.imagePath(base));
  try {
    const view = new UnionView(ImageReader.open(source), headPaths(store, label).upper, 'trusted');
    const out = new Map<ByteString, View>();
    for (const node of view.walk()) {
      const a = view.getattr(node);
      const type = a.mode & S_IFMT;
      const v: View = { mode: a.mode.toString(8), uid: a.uid, gid: a.gid, mtime: `${a.mtimeSec}.${a.mtimeNsec}`, xattrs: fmtXattrs(view.xattrs(node), a.mode) };
      if (type === 0o120000) v.target = view.readlink(node);
      if (type === 0o020000 || type === 0o060000) v.rdev = a.rdev;
      if (type === 0o100000) {
        v.size = a.size;
        const c = view.content(node);
        const bytes = c.kind === 'upper' ? readAll(c.path) : c.kind === 'inline' ? c.bytes : c.kind === 'empty' ? new Uint8Array(0) : readAll(store.objects.path(c.digest));
        v.content = contentId(bytes);
      }
      out.set(node.path, v);
    }
    return out;
  } finally {
    source.close();
  }
}

/** What a commit's image shows, path -> View (objects read from the store). */
export function commitView(store: Store, id: string): Map<ByteString, View> {
  const source = new FileSource(store.commits.imagePath(id));
  try {
    return readerView(ImageReader.open(source), (path) => (path ? readAll(join(store.objects.root, path)) : undefined));
  } finally {
    source.close();
  }
}

/** A file's bytes from a given offset, for spot checks. */
export function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    const n = readSync(fd, b, 0, length, offset);
    return b.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}
