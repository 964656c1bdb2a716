// The filesystem session (the seed's layout, docs/session.md):
//
//   <name>.session/
//     info               "1\n<app> <version>\n": written once at creation, never rewritten
//     store/<key>        a Map is a directory; any other value is one file (src/session/value.ts)
//     objects/ab/cdef…   frames `[sha256]\0[type]\0[zstd bytes]`, named by the sha256 of the bytes
//     tmp/               staging: every file is written here, fsynced, then renamed into place
//
// Every file reaches its name whole by rename, so readers, other writers and file-sync services
// never see a half-written file; two processes writing different keys never touch the same file.
//
// Public surface: FsSession, openSession, OpenSessionOptions.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { SessionError } from './error.js';
import { checkKey, isSegment, joinKey } from './key.js';
import { decodeObject, encodeObject } from './object.js';
import { resolveValue, SESSION_FORMAT, type ResolveOptions, type Resolution, type Session, type SessionInfo, type SessionObject } from './session.js';
import { checkPutValue, decodeValue, encodeValue, isHash, type PutValue, type Value } from './value.js';

export interface OpenSessionOptions {
  /** Create the session when the directory has none (else NOT_A_SESSION). */
  create?: boolean;
  /** Who creates it: the info file's second line. Only used when creating. */
  app?: { name: string; version: string };
}

/** Staging files older than this belong to a writer that died; younger ones may be in use. */
const STALE_TMP_MS = 60 * 60 * 1000;

function code(err: unknown): string | undefined {
  return err instanceof Error ? (err as { code?: string }).code : undefined;
}

function io(err: unknown, doing: string): SessionError {
  if (err instanceof SessionError) return err;
  return new SessionError('IO', `${doing}: ${code(err) ?? String(err)}`, { cause: err });
}

/** Opens (or with `create`, creates) the session in `dir`, whose name must end in ".session". */
export async function openSession(dir: string, options: OpenSessionOptions = {}): Promise<FsSession> {
  const root = resolve(dir);
  if (!basename(root).endsWith('.session') || basename(root) === '.session') {
    throw new SessionError('NOT_A_SESSION', `${root}: a session directory's name must end in ".session"`);
  }
  try {
    let info = await readInfo(root);
    if (info === undefined) {
      if (!options.create) throw new SessionError('NOT_A_SESSION', `no session at ${root} (no info file)`);
      info = await create(root, options.app ?? { name: 'unknown', version: '0' });
    }
    const session = new FsSession(root, info);
    await session.cleanStale();
    return session;
  } catch (err) {
    throw io(err, `opening the session at ${root}`);
  }
}

async function readInfo(root: string): Promise<SessionInfo | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(join(root, 'info'), 'utf8');
  } catch (err) {
    if (code(err) === 'ENOENT') return undefined;
    throw err;
  }
  const [first = '', second = ''] = text.split('\n');
  if (!/^\d+$/.test(first)) throw new SessionError('NOT_A_SESSION', `${root}/info does not start with a session format version (found ${JSON.stringify(first.slice(0, 40))})`);
  const version = Number(first);
  if (version !== SESSION_FORMAT) {
    throw new SessionError('SESSION_VERSION', `the session at ${root} has format version ${version}; this library reads version ${SESSION_FORMAT} only`);
  }
  const space = second.indexOf(' ');
  return { version, app: space < 0 ? second : second.slice(0, space), appVersion: space < 0 ? '' : second.slice(space + 1) };
}

/** Lays out a session; the info file comes last and is never replaced (link fails if it exists). */
async function create(root: string, app: { name: string; version: string }): Promise<SessionInfo> {
  if (!/^[^\s]+$/.test(app.name) || /\n/.test(app.version)) throw new SessionError('BAD_VALUE', `an application name has no spaces and a version no newlines (got ${JSON.stringify(app)})`);
  for (const sub of ['store', 'objects', 'tmp']) await fsp.mkdir(join(root, sub), { recursive: true });
  const staged = join(root, 'tmp', `.info-${process.pid}-${randomBytes(6).toString('hex')}`);
  await writeDurably(staged, Buffer.from(`${SESSION_FORMAT}\n${app.name} ${app.version}\n`));
  try {
    await fsp.link(staged, join(root, 'info'));
    await syncDir(root);
  } catch (err) {
    if (code(err) !== 'EEXIST') throw err; // another process created the session at the same moment
  } finally {
    await fsp.rm(staged, { force: true });
  }
  const info = await readInfo(root);
  if (!info) throw new SessionError('IO', `${root}/info vanished while the session was being created`);
  return info;
}

async function writeDurably(path: string, data: Uint8Array): Promise<void> {
  const handle = await fsp.open(path, 'wx', 0o644);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export class FsSession implements Session {
  private readonly store: string;
  private readonly objects: string;
  private readonly tmp: string;

  constructor(readonly root: string, readonly info: SessionInfo) {
    this.store = join(root, 'store');
    this.objects = join(root, 'objects');
    this.tmp = join(root, 'tmp');
  }

  private pathOf(segments: string[]): string {
    return join(this.store, ...segments);
  }

  /** A path in tmp/ nothing else will use; its name has a '.', so it can never be a key. */
  private staging(kind: string): string {
    return join(this.tmp, `.${kind}-${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  /** Writes `data` to `target` whole: stage in tmp/, fsync, rename, fsync the directory. */
  private async replace(target: string, data: Uint8Array): Promise<void> {
    const staged = this.staging('put');
    try {
      await writeDurably(staged, data);
      await fsp.rename(staged, target);
    } catch (err) {
      await fsp.rm(staged, { force: true });
      throw err;
    }
    await syncDir(dirname(target));
  }

  /**
   * True when every Map on the way to the key is a real directory. A symlink planted in store/ (by
   * hand, or arriving through a sync service) must not lead reads, writes or deletes out of the
   * session, so a path through one holds nothing.
   */
  private async insideStore(segments: string[]): Promise<boolean> {
    for (let i = 1; i < segments.length; i++) {
      try {
        if (!(await fsp.lstat(this.pathOf(segments.slice(0, i)))).isDirectory()) return false;
      } catch (err) {
        if (code(err) === 'ENOENT' || code(err) === 'ENOTDIR') return false;
        throw err;
      }
    }
    return true;
  }

  async get(key: string): Promise<Value | undefined> {
    const segments = checkKey(key);
    const path = this.pathOf(segments);
    try {
      if (!(await this.insideStore(segments))) return undefined;
      const stat = await fsp.lstat(path);
      if (stat.isDirectory()) return { kind: 'map', keys: (await fsp.readdir(path)).filter(isSegment).sort() };
      if (!stat.isFile()) throw new SessionError('CORRUPT_VALUE', `${key} is neither a file nor a directory in ${this.store}`);
      return decodeValue(await fsp.readFile(path), key);
    } catch (err) {
      if (code(err) === 'ENOENT' || code(err) === 'ENOTDIR') return undefined;
      throw io(err, `reading ${key}`);
    }
  }

  async put(key: string, value: PutValue): Promise<void> {
    const segments = checkKey(key);
    const checked = checkPutValue(value);
    try {
      await this.makeMaps(segments.slice(0, -1), key);
      const path = this.pathOf(segments);
      if (checked.kind === 'map') {
        await this.makeMaps(segments, key);
        return;
      }
      try {
        await this.replace(path, encodeValue(checked));
      } catch (err) {
        if (code(err) === 'EISDIR' || code(err) === 'ENOTEMPTY' || code(err) === 'EEXIST') {
          throw new SessionError('KIND_CONFLICT', `cannot put a value at ${key}: it is a map (delete it first)`);
        }
        throw err;
      }
    } catch (err) {
      throw io(err, `writing ${key}`);
    }
  }

  /** Makes each prefix of `segments` a directory; a prefix that is a value file is KIND_CONFLICT. */
  private async makeMaps(segments: string[], key: string): Promise<void> {
    for (let i = 1; i <= segments.length; i++) {
      const path = this.pathOf(segments.slice(0, i));
      try {
        await fsp.mkdir(path);
        await syncDir(dirname(path));
      } catch (err) {
        if (code(err) === 'EEXIST' && (await fsp.lstat(path)).isDirectory()) continue;
        if (code(err) === 'EEXIST' || code(err) === 'ENOTDIR') {
          const what = i === segments.length && i === checkKey(key).length ? `cannot make ${key} a map: it holds a value (delete it first)` : `cannot put ${key}: ${segments.slice(0, i).join('/')} holds a value, not a map`;
          throw new SessionError('KIND_CONFLICT', what);
        }
        throw err;
      }
    }
  }

  async delete(key: string): Promise<boolean> {
    const segments = checkKey(key);
    const path = this.pathOf(segments);
    try {
      if (!(await this.insideStore(segments))) return false;
      let stat;
      try {
        stat = await fsp.lstat(path);
      } catch (err) {
        if (code(err) === 'ENOENT' || code(err) === 'ENOTDIR') return false;
        throw err;
      }
      if (stat.isDirectory()) {
        // a Map leaves the tree in one rename, so nobody sees it half deleted
        const doomed = this.staging('delete');
        try {
          await fsp.rename(path, doomed);
        } catch (err) {
          if (code(err) === 'ENOENT') return false;
          throw err;
        }
        await syncDir(dirname(path));
        await fsp.rm(doomed, { recursive: true, force: true });
        return true;
      }
      try {
        await fsp.unlink(path);
      } catch (err) {
        if (code(err) === 'ENOENT') return false;
        throw err;
      }
      await syncDir(dirname(path));
      return true;
    } catch (err) {
      throw io(err, `deleting ${key}`);
    }
  }

  async list(prefix = ''): Promise<string[]> {
    const segments = checkKey(prefix, { allowEmpty: true });
    const out: string[] = [];
    const walk = async (path: string, key: string): Promise<void> => {
      let entries;
      try {
        entries = await fsp.readdir(path, { withFileTypes: true });
      } catch (err) {
        if (code(err) === 'ENOENT' || code(err) === 'ENOTDIR') return; // deleted while we walked, or a value
        throw err;
      }
      for (const entry of entries) {
        if (!isSegment(entry.name)) continue; // not ours: a sync service's conflict copy, an editor's backup
        if (entry.isDirectory()) await walk(join(path, entry.name), joinKey(key, entry.name));
        else if (entry.isFile()) out.push(joinKey(key, entry.name));
      }
    };
    try {
      if (!(await this.insideStore([...segments, 'x']))) return []; // the prefix itself must be a real directory too
      await walk(this.pathOf(segments), prefix);
    } catch (err) {
      throw io(err, `listing ${prefix || 'the session'}`);
    }
    return out.sort();
  }

  private objectPath(hash: string): string {
    return join(this.objects, hash.slice(0, 2), hash.slice(2));
  }

  async putObject(type: string, data: Uint8Array): Promise<string> {
    const { hash, frame } = encodeObject(type, data);
    const path = this.objectPath(hash);
    try {
      if (await this.hasObject(hash)) return hash;
      await fsp.mkdir(dirname(path), { recursive: true });
      if (!(await fsp.lstat(dirname(path))).isDirectory()) throw new SessionError('IO', `${dirname(path)} is not a directory (a symlink?); the session's objects must stay inside it`);
      await this.replace(path, frame);
      return hash;
    } catch (err) {
      throw io(err, `writing object ${hash}`);
    }
  }

  async getObject(hash: string): Promise<SessionObject | undefined> {
    if (!isHash(hash)) throw new SessionError('BAD_VALUE', `an object name is a sha256 (64 lowercase hex digits), not ${JSON.stringify(String(hash).slice(0, 80))}`);
    let frame: Buffer;
    try {
      frame = await fsp.readFile(this.objectPath(hash));
    } catch (err) {
      if (code(err) === 'ENOENT') return undefined;
      throw io(err, `reading object ${hash}`);
    }
    return decodeObject(hash, frame);
  }

  async hasObject(hash: string): Promise<boolean> {
    if (!isHash(hash)) return false;
    try {
      return (await fsp.lstat(this.objectPath(hash))).isFile();
    } catch (err) {
      if (code(err) === 'ENOENT') return false;
      throw io(err, `looking for object ${hash}`);
    }
  }

  async resolve(key: string, options?: ResolveOptions): Promise<Resolution> {
    checkKey(key);
    return resolveValue(this, key, options);
  }

  /**
   * Removes staging debris of writers that died (by age: a live writer's file is seconds old).
   * Best effort: a reader without write access to the session still opens it.
   */
  async cleanStale(now = Date.now()): Promise<void> {
    const names = await fsp.readdir(this.tmp).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(this.tmp, name);
      const stat = await fsp.lstat(path).catch(() => undefined);
      if (stat && now - stat.mtimeMs > STALE_TMP_MS) await fsp.rm(path, { recursive: true, force: true }).catch(() => {});
    }
  }
}
