// Random trees and random file-system operations for the differential HEAD tests. Everything is
// driven by a seeded generator, so a failing seed replays exactly.
import {
  chmodSync, closeSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, readdirSync, renameSync, rmSync,
  rmdirSync, symlinkSync, truncateSync, unlinkSync, writeFileSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { mknod, S_IFIFO } from '../../../src/native/files.js';
import { lremovexattr, lsetxattr, llistxattr } from '../../../src/native/xattr.js';
import { pseudoRandomBytes } from '../../helpers/bytes.js';

export class Random {
  private x: number;
  constructor(seed: number) {
    this.x = (seed * 2654435761) >>> 0 || 1;
  }
  next(): number {
    this.x ^= this.x << 13;
    this.x >>>= 0;
    this.x ^= this.x >>> 17;
    this.x ^= this.x << 5;
    this.x >>>= 0;
    return this.x / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/**
 * Seeds and operations per seed for the mount differential tests: STRATUM_SEED=<n> replays one
 * seed; else STRATUM_FUSE_SEEDS (default `defaultSeeds`) seeds from STRATUM_FUSE_SEED_FROM (1);
 * STRATUM_FUSE_OPS (40) operations each.
 */
export function mountBudget(defaultSeeds: number): { seeds: number[]; ops: number } {
  const env = process.env;
  const seeds = env.STRATUM_SEED ? [Number(env.STRATUM_SEED)] : Array.from({ length: Number(env.STRATUM_FUSE_SEEDS ?? defaultSeeds) }, (_, i) => i + Number(env.STRATUM_FUSE_SEED_FROM ?? 1));
  return { seeds, ops: Number(env.STRATUM_FUSE_OPS ?? 40) };
}

const SIZES = [0, 1, 5, 64, 65, 300, 4096, 5000, 70_000];
const NAMES = ['a', 'b', 'c', 'dir', 'x.txt', 'y', 'zz', 'ünï', 'sub', 'data.bin'];

function freshName(rnd: Random, dir: string): string | undefined {
  for (let i = 0; i < 8; i++) {
    const name = rnd.pick(NAMES) + (rnd.chance(0.5) ? String(rnd.int(20)) : '');
    try {
      lstatSync(join(dir, name));
    } catch {
      return name;
    }
  }
  return undefined;
}

/** A random base tree on disk: files of every size class, dirs, symlinks, hardlinks (unless `links` is false), xattrs, a fifo. */
export function makeBase(root: string, rnd: Random, entries = 40, links = true): void {
  mkdirSync(root, { recursive: true });
  const dirs = [root];
  const files: string[] = [];
  for (let i = 0; i < entries; i++) {
    const dir = rnd.pick(dirs);
    const name = freshName(rnd, dir);
    if (!name) continue;
    const path = join(dir, name);
    const kind = rnd.int(10);
    if (kind < 3) {
      mkdirSync(path);
      dirs.push(path);
    } else if (kind < 8) {
      writeFileSync(path, pseudoRandomBytes(rnd.pick(SIZES), rnd.int(1e9)));
      if (rnd.chance(0.3)) lsetxattr(path, 'user.base', Buffer.from(`v${rnd.int(100)}`));
      files.push(path);
    } else if (kind < 9) {
      symlinkSync(rnd.pick(['a', '../b', '/etc/passwd', 'x'.repeat(100)]), path);
    } else if (files.length > 0 && links) {
      linkSync(rnd.pick(files), path);
    }
  }
  mknod(join(root, 'fifo'), S_IFIFO | 0o644);
}

interface Listing {
  dirs: string[];
  files: string[];
  others: string[];
}

function list(root: string): Listing {
  const out: Listing = { dirs: [root], files: [], others: [] };
  const visit = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      // a kernel-mode mount lists its control dir; it is not part of the tree under test
      if (dir === root && name === '.stratum') continue;
      const path = join(dir, name);
      const st = lstatSync(path);
      if (st.isDirectory()) {
        out.dirs.push(path);
        visit(path);
      } else if (st.isFile()) out.files.push(path);
      else out.others.push(path);
    }
  };
  visit(root);
  return out;
}

/** Runs `count` random operations inside the mounted `root` (no hardlinks when `links` is false); returns a log for failure messages. */
export function randomOps(root: string, rnd: Random, count: number, links = true): string[] {
  const log: string[] = [];
  const rel = (p: string): string => p.slice(root.length) || '/';
  for (let i = 0; i < count; i++) {
    const l = list(root);
    const anyPath = (): string => rnd.pick([...l.dirs, ...l.files, ...l.others]);
    const op = rnd.int(17);
    try {
      switch (op) {
        case 0: { // create
          const dir = rnd.pick(l.dirs);
          const name = freshName(rnd, dir);
          if (!name) break;
          const size = rnd.pick(SIZES);
          writeFileSync(join(dir, name), pseudoRandomBytes(size, rnd.int(1e9)));
          log.push(`create ${rel(join(dir, name))} ${size}`);
          break;
        }
        case 1: { // write at offset
          if (!l.files.length) break;
          const f = rnd.pick(l.files);
          const offset = rnd.int(80_000);
          const len = 1 + rnd.int(5000);
          const fd = openSync(f, 'r+');
          try {
            writeSync(fd, pseudoRandomBytes(len, rnd.int(1e9)), 0, len, offset);
          } finally {
            closeSync(fd);
          }
          log.push(`write ${rel(f)} @${offset}+${len}`);
          break;
        }
        case 2: { // truncate
          if (!l.files.length) break;
          const f = rnd.pick(l.files);
          const size = rnd.pick(SIZES);
          truncateSync(f, size);
          log.push(`truncate ${rel(f)} ${size}`);
          break;
        }
        case 3: { // chmod
          const p = rnd.pick([...l.dirs, ...l.files]);
          const mode = rnd.pick([0o755, 0o700, 0o644, 0o600, 0o4755, 0o1777, 0o444]);
          chmodSync(p, mode);
          log.push(`chmod ${rel(p)} ${mode.toString(8)}`);
          break;
        }
        case 4: { // chown
          const p = anyPath();
          const uid = rnd.pick([0, 1, 1000, 65534]);
          const gid = rnd.pick([0, 2, 1000]);
          lchownSync(p, uid, gid);
          log.push(`chown ${rel(p)} ${uid}:${gid}`);
          break;
        }
        case 5: { // utimes
          const p = anyPath();
          const t = 1_600_000_000 + rnd.int(100_000_000) + rnd.int(1000) / 1000;
          lutimesSync(p, t, t);
          log.push(`utimes ${rel(p)} ${t}`);
          break;
        }
        case 6: { // setxattr / removexattr
          const p = rnd.pick([...l.dirs, ...l.files]);
          const existing = llistxattr(p).filter((n) => n.startsWith('user.') || n.startsWith('trusted.t')).sort(); // list order differs between kernel and FUSE uppers
          if (existing.length && rnd.chance(0.4)) {
            const n = rnd.pick(existing);
            lremovexattr(p, n);
            log.push(`removexattr ${rel(p)} ${n}`);
          } else {
            const n = rnd.pick(['user.a', 'user.b', 'trusted.t', 'user.base']);
            lsetxattr(p, n, pseudoRandomBytes(rnd.int(40), rnd.int(1e9)));
            log.push(`setxattr ${rel(p)} ${n}`);
          }
          break;
        }
        case 7: { // mkdir
          const dir = rnd.pick(l.dirs);
          const name = freshName(rnd, dir);
          if (!name) break;
          mkdirSync(join(dir, name));
          log.push(`mkdir ${rel(join(dir, name))}`);
          break;
        }
        case 8: { // rmdir (recursive: whiteouts of lower subtrees)
          const dirs = l.dirs.slice(1);
          if (!dirs.length) break;
          const d = rnd.pick(dirs);
          if (rnd.chance(0.5)) rmSync(d, { recursive: true });
          else rmdirSync(d);
          log.push(`rmdir ${rel(d)}`);
          break;
        }
        case 9: { // unlink
          const cands = [...l.files, ...l.others];
          if (!cands.length) break;
          const f = rnd.pick(cands);
          unlinkSync(f);
          log.push(`unlink ${rel(f)}`);
          break;
        }
        case 10:
        case 11: { // rename a file or a dir (lower dirs get redirects)
          const from = rnd.pick([...l.dirs.slice(1), ...l.files, ...l.others]);
          if (!from) break;
          const dir = rnd.pick(l.dirs);
          if (dir === from || dir.startsWith(from + '/')) break;
          const name = rnd.chance(0.3) ? rnd.pick(NAMES) : freshName(rnd, dir);
          if (!name) break;
          const to = join(dir, name);
          if (to === from || to.startsWith(from + '/')) break;
          renameSync(from, to);
          log.push(`rename ${rel(from)} -> ${rel(to)}`);
          break;
        }
        case 12: { // hardlink
          if (!l.files.length || !links) break;
          const f = rnd.pick(l.files);
          const dir = rnd.pick(l.dirs);
          const name = freshName(rnd, dir);
          if (!name) break;
          linkSync(f, join(dir, name));
          log.push(`link ${rel(f)} -> ${rel(join(dir, name))}`);
          break;
        }
        case 13: { // symlink
          const dir = rnd.pick(l.dirs);
          const name = freshName(rnd, dir);
          if (!name) break;
          const target = rnd.pick(['t', '../up', '/abs/path', 'ü']);
          symlinkSync(target, join(dir, name));
          log.push(`symlink ${rel(join(dir, name))} -> ${target}`);
          break;
        }
        case 14: { // replace a dir by a file
          const dirs = l.dirs.slice(1);
          if (!dirs.length) break;
          const d = rnd.pick(dirs);
          rmSync(d, { recursive: true });
          writeFileSync(d, pseudoRandomBytes(rnd.pick(SIZES), rnd.int(1e9)));
          log.push(`dir->file ${rel(d)}`);
          break;
        }
        case 15: { // replace a file by a dir (and put something in it)
          const cands = [...l.files, ...l.others];
          if (!cands.length) break;
          const f = rnd.pick(cands);
          unlinkSync(f);
          mkdirSync(f);
          if (rnd.chance(0.5)) writeFileSync(join(f, 'inner'), pseudoRandomBytes(rnd.pick(SIZES), rnd.int(1e9)));
          log.push(`file->dir ${rel(f)}`);
          break;
        }
        case 16: { // fifo
          const dir = rnd.pick(l.dirs);
          const name = freshName(rnd, dir);
          if (!name) break;
          mknod(join(dir, name), S_IFIFO | 0o600);
          log.push(`mkfifo ${rel(join(dir, name))}`);
          break;
        }
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // legitimate refusals (rmdir of a non-empty dir, rename over a non-empty dir, ...)
      if (!['ENOTEMPTY', 'EISDIR', 'ENOTDIR', 'EEXIST', 'EINVAL', 'EXDEV', 'EPERM', 'ENOENT', 'EMLINK'].includes(code ?? '')) throw err;
      log.push(`op ${op} refused: ${code}`);
    }
  }
  return log;
}

/** Edits only: existing files and dirs change content or metadata; no name appears or goes. */
export function randomEdits(root: string, rnd: Random, count: number): string[] {
  const log: string[] = [];
  const rel = (p: string): string => p.slice(root.length) || '/';
  for (let i = 0; i < count; i++) {
    const l = list(root);
    const files = l.files.filter((f) => lstatSync(f).size > 64);
    const op = rnd.int(20);
    if (op < 8 && files.length) {
      const f = rnd.pick(files);
      const offset = rnd.int(6000);
      const len = 1 + rnd.int(3000);
      const fd = openSync(f, 'r+');
      try {
        writeSync(fd, pseudoRandomBytes(len, rnd.int(1e9)), 0, len, offset);
      } finally {
        closeSync(fd);
      }
      log.push(`write ${rel(f)} @${offset}+${len}`);
    } else if (op < 11) {
      const p = rnd.pick([...l.dirs, ...files]);
      const mode = rnd.pick([0o755, 0o700, 0o644, 0o600, 0o2755]);
      chmodSync(p, mode);
      log.push(`chmod ${rel(p)} ${mode.toString(8)}`);
    } else if (op < 14) {
      const p = rnd.pick([...l.dirs, ...files]);
      const uid = rnd.pick([0, 1, 1000, 70000]);
      lchownSync(p, uid, rnd.pick([0, 2, 1000]));
      log.push(`chown ${rel(p)} ${uid}`);
    } else if (op < 19) {
      const p = rnd.pick([...l.dirs, ...files]);
      const t = 1_750_000_000 + rnd.int(1_000_000) + rnd.int(1000) / 1000;
      lutimesSync(p, t, t);
      log.push(`utimes ${rel(p)} ${t}`);
    } else if (files.length) {
      const f = rnd.pick(files);
      lsetxattr(f, 'user.edit', Buffer.from('e'));
      log.push(`setxattr ${rel(f)} (takes the full path)`);
    }
  }
  return log;
}
