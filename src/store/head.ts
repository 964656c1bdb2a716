// HEAD of a label: refs/<label>/head.toml names the base commit and how the upper dir
// (refs/<label>/head/) is written. This module reads and writes that file, and holds
// refs/<label>/head.lock for a server of HEAD: one writable HEAD per label per store, whatever
// mount state file each process uses (an flock: a dead server's goes with it, kill -9 included).
//
// Public surface: HeadState, HeadStore, ServingLock, headServedBy, HEAD_FORMAT, defaultXattrNamespace.
import { closeSync, constants as C, ftruncateSync, openSync, promises as fsp, readFileSync, writeSync } from 'node:fs';
import { tryFlock } from '../native/files.js';
import { join } from 'node:path';
import { parse, stringify } from 'smol-toml';
import { isDigest } from './digest.js';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { checkLabel } from './names.js';
import { writeFileAtomic, type TmpArea } from './tmp.js';

export const HEAD_FORMAT = 1;

export interface HeadState {
  label: string;
  /** The commit HEAD's upper dir is layered on. */
  base: string;
  /** Namespace of overlay xattrs in the upper dir: `trusted` when written as root, else `user`. */
  xattrNamespace: 'trusted' | 'user';
  created: string;
  updated: string;
  /** The commit HEAD last produced, if any. */
  lastCommit?: string;
}

/** Overlay xattrs can only be `trusted.` for root; everyone else writes `user.` (userxattr). */
export function defaultXattrNamespace(): 'trusted' | 'user' {
  return process.getuid?.() === 0 ? 'trusted' : 'user';
}

/** Held by the one process serving a label's HEAD, until `release` or its exit. */
export interface ServingLock {
  release(): void;
}

/**
 * Where another process serves the HEAD whose label dir this is ("at <mnt> (server pid <pid>)"),
 * found by its serving lock; undefined when nobody else holds it. For commit and apply from
 * outside, whose own mount state may not know that server.
 */
export function headServedBy(labelDir: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(join(labelDir, 'head.lock'), C.O_RDONLY);
  } catch {
    return undefined;  // no lock file: never served
  }
  try {
    tryFlock(fd, 'shared');
    return undefined;
  } catch (err) {
    if (!isSystemError(err, 'EAGAIN')) return undefined;
    let holder = '';
    try { holder = readFileSync(fd, 'utf8'); } catch { /* say less */ }
    const m = /^(\d+) (.+)\n$/.exec(holder);
    if (m && Number(m[1]) === process.pid) return undefined;
    return m ? `at ${m[2]} (server pid ${m[1]})` : 'by another process';
  } finally {
    closeSync(fd);
  }
}

export class HeadStore {
  constructor(
    private readonly refsDir: string,
    private readonly tmp: TmpArea,
  ) {}

  path(label: string): string {
    return join(this.refsDir, checkLabel(label), 'head.toml');
  }

  /**
   * Takes refs/<label>/head.lock for a server of HEAD, at once or BUSY: another process serves this
   * HEAD (maybe one recorded in another mount state file, so `stratum status` here cannot see it).
   * The holder writes `<pid> <mountpoint>` into the file, so the BUSY message can name them.
   */
  lockServing(label: string, mountpoint: string): ServingLock {
    // (Node opens with O_CLOEXEC: a child the server spawns does not inherit the lock)
    const dir = join(this.refsDir, checkLabel(label));
    let fd: number;
    try {
      fd = openSync(join(dir, 'head.lock'), C.O_RDWR | C.O_CREAT, 0o600);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw new StratumError('NOT_FOUND', `label ${label} has no HEAD; create one with \`stratum init ${label}\``);
      throw wrapSystemError(err, `locking HEAD of ${label}`);
    }
    try {
      exclusiveSoon(fd);
    } catch (err) {
      if (isSystemError(err, 'EAGAIN')) {
        let holder = '';
        try { holder = readFileSync(fd, 'utf8'); } catch { /* unreadable: say less */ }
        closeSync(fd);
        const m = /^(\d+) (.+)\n$/.exec(holder);
        const where = m ? ` at ${m[2]} (server pid ${m[1]})` : ' by another process';
        throw new StratumError('BUSY', `HEAD of ${label} is already mounted${where}; one writable HEAD per label: unmount it first or mount a tag (read-only)`);
      }
      closeSync(fd);
      throw wrapSystemError(err, `locking HEAD of ${label}`);
    }
    try {
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid} ${mountpoint}\n`, 0);
    } catch { /* the lock is what matters; the note is for messages */ }
    let held = true;
    return { release: () => { if (held) { held = false; closeSync(fd); } } };
  }

  /** Entries at the top of HEAD's upper dir: 0 means no uncommitted changes. */
  async upperEntries(label: string): Promise<number> {
    try {
      return (await fsp.readdir(join(this.refsDir, checkLabel(label), 'head'))).length;
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return 0;
      throw wrapSystemError(err, `reading HEAD of ${label}`);
    }
  }

  async read(label: string): Promise<HeadState | undefined> {
    let text: string;
    try {
      text = await fsp.readFile(this.path(label), 'utf8');
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return undefined;
      throw wrapSystemError(err, `reading HEAD of ${label}`);
    }
    return parseHead(text, label);
  }

  /** Gives a label its HEAD on `base` unless it has one; true when this call created it. */
  async createIfAbsent(label: string, base: string): Promise<boolean> {
    const now = new Date().toISOString();
    return this.write({ label, base, xattrNamespace: defaultXattrNamespace(), created: now, updated: now }, { create: true });
  }

  /** Writes HEAD; with `create`, only if the label has none yet (returns false if it had). */
  async write(state: HeadState, options: { create?: boolean } = {}): Promise<boolean> {
    await fsp.mkdir(join(this.refsDir, state.label), { recursive: true });
    try {
      await writeFileAtomic(this.tmp, this.path(state.label), formatHead(state), { noReplace: options.create ?? false });
      return true;
    } catch (err) {
      if (options.create && isSystemError(err, 'EEXIST')) return false;
      throw err;
    }
  }
}

function formatHead(s: HeadState): string {
  const doc: Record<string, string | number> = { format: HEAD_FORMAT, label: s.label, base: s.base, xattr_namespace: s.xattrNamespace, created: s.created, updated: s.updated };
  if (s.lastCommit) doc.last_commit = s.lastCommit;
  return stringify(doc) + '\n';
}

function parseHead(text: string, label: string): HeadState {
  const bad = (why: string): never => {
    throw new StratumError('CORRUPT_STORE', `HEAD of ${label} (refs/${label}/head.toml) is unreadable: ${why}`);
  };
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    return bad((err as Error).message.split('\n')[0]!);
  }
  const format = Number(doc.format);
  if (format !== HEAD_FORMAT) bad(`format ${String(doc.format)} is not ${HEAD_FORMAT}`);
  const base = doc.base;
  if (typeof base !== 'string' || !isDigest(base)) bad('base is not a commit id');
  const ns = doc.xattr_namespace;
  if (ns !== 'trusted' && ns !== 'user') bad('xattr_namespace must be "trusted" or "user"');
  const state: HeadState = {
    label,
    base: base as string,
    xattrNamespace: ns as 'trusted' | 'user',
    created: String(doc.created ?? ''),
    updated: String(doc.updated ?? ''),
  };
  if (typeof doc.last_commit === 'string' && isDigest(doc.last_commit)) state.lastCommit = doc.last_commit;
  return state;
}

/**
 * tryFlock exclusive, retried for about 0.1 s: `headServedBy` probes with a shared lock held for
 * microseconds, which must not make a starting server believe HEAD is served elsewhere.
 */
function exclusiveSoon(fd: number): void {
  for (let attempt = 0; ; attempt++) {
    try {
      tryFlock(fd, 'exclusive');
      return;
    } catch (err) {
      if (!isSystemError(err, 'EAGAIN') || attempt >= 50) throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
  }
}
