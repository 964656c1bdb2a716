// The object store: immutable blobs under objects/ab/cdef…, named by their fs-verity digest, the
// layout of a composefs digest store (so `mkcomposefs --digest-store` and the kernel's data-only
// overlay layer read it as is).
//
// Objects are written in batches. A batch stages every new object in its own locked tmp dir,
// then `commit()` makes them durable with one syncfs, renames them into place, and syncs again:
// an object never has its name before its bytes are on disk, and a crash leaves only tmp debris.
// Puts of the same content from several processes are safe: the renames carry identical bytes.
//
// Public surface: ObjectStore, PutBatch, StoredFile.
import { type BigIntStats, closeSync, constants as C, existsSync, fstatSync, linkSync, mkdirSync, openSync, promises as fsp, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FsverityHasher, fsverityDigest, isDigest } from './digest.js';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { digestFd } from '../native/verity.js';
import { display } from './paths.js';
import { syncFilesystem, type TmpArea, type TmpEntry } from './tmp.js';

/** Files up to this size are read whole, hashed, and written only if new. */
const SMALL_FILE = 1 << 20;
const OBJECT_MODE = 0o444;
/** Reads of a source file that keeps changing before putFile gives up with SOURCE_CHANGED. */
const SOURCE_ATTEMPTS = 3;

/** What putFile stored: the digest and size of the bytes, and the source's state they are of. */
export interface StoredFile {
  digest: string;
  size: number;
  dev: bigint;
  ino: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export class ObjectStore {
  constructor(
    readonly root: string,
    private readonly tmp: TmpArea,
  ) {}

  path(digest: string): string {
    checkDigest(digest);
    return join(this.root, digest.slice(0, 2), digest.slice(2));
  }

  /** Synchronous on purpose: one stat, far cheaper than a trip through the libuv pool. */
  has(digest: string): boolean {
    return existsSync(this.path(digest));
  }

  async open(digest: string): Promise<fsp.FileHandle> {
    try {
      return await fsp.open(this.path(digest), C.O_RDONLY);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw new StratumError('NOT_FOUND', `object ${digest} is missing from the store`);
      throw wrapSystemError(err, `opening object ${digest}`);
    }
  }

  /** Re-hashes an object; throws CORRUPT_OBJECT when its bytes do not match its name. */
  async verify(digest: string): Promise<void> {
    const handle = await this.open(digest);
    let actual: string;
    try {
      actual = await digestFd(handle.fd);
    } finally {
      await handle.close();
    }
    if (actual !== digest) throw new StratumError('CORRUPT_OBJECT', `object ${digest} is corrupt (its content hashes to ${actual})`);
  }

  /** Every object name in the store (for gc and verify), in no particular order. */
  async *list(): AsyncGenerator<string> {
    let fanout: string[];
    try {
      fanout = await fsp.readdir(this.root);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return;
      throw err;
    }
    for (const dir of fanout) {
      if (!/^[0-9a-f]{2}$/.test(dir)) continue;
      for (const rest of await fsp.readdir(join(this.root, dir))) {
        const digest = dir + rest;
        if (isDigest(digest)) yield digest;
      }
    }
  }

  async batch(): Promise<PutBatch> {
    return new PutBatch(this, await this.tmp.makeDir('objects'));
  }

  /**
   * The one way objects become visible: files staged in `staging` under their digests are made
   * durable, then put under their names, then the names made durable. 'rename' moves a staged
   * file (a missing one was not new: nothing was staged); 'link' adds the name and keeps the
   * staged inode's other links (a commit's objects share an inode with an upper file until the
   * retired upper is removed). Returns the digests published.
   */
  async publish(staging: TmpEntry, digests: Iterable<string>, how: 'rename' | 'link'): Promise<string[]> {
    const added: string[] = [];
    const list = [...digests];
    if (list.length === 0) return added;
    try {
      syncFilesystem(staging.fd);
      const made = new Set<string>();
      for (const digest of list) {
        const fan = join(this.root, digest.slice(0, 2));
        if (!made.has(fan)) {
          mkdirSync(fan, { recursive: true });
          made.add(fan);
        }
        const from = join(staging.path, digest);
        try {
          if (how === 'rename') renameSync(from, this.path(digest));
          else linkSync(from, this.path(digest));
          added.push(digest);
        } catch (err) {
          if (!isSystemError(err, how === 'rename' ? 'ENOENT' : 'EEXIST')) throw wrapSystemError(err, `publishing object ${digest}`);
        }
      }
      syncFilesystem(staging.fd);
    } catch (err) {
      throw wrapSystemError(err, 'publishing objects');
    }
    return added;
  }

  /** One object, durable and in place when this returns. */
  async putBuffer(data: Uint8Array): Promise<string> {
    const batch = await this.batch();
    try {
      const digest = await batch.putBuffer(data);
      await batch.commit();
      return digest;
    } finally {
      await batch.dispose();
    }
  }
}

export class PutBatch {
  /** digest -> staged path, or the promise of a put of that digest under way. */
  private readonly staged = new Map<string, Promise<void>>();
  private counter = 0;
  private committed = false;

  constructor(
    private readonly objects: ObjectStore,
    private readonly dir: TmpEntry,
  ) {}

  /** How many new objects this batch will add. */
  get size(): number {
    return this.staged.size;
  }

  async putBuffer(data: Uint8Array): Promise<string> {
    const digest = fsverityDigest(data);
    this.stageSync(digest, (path) => writeFileSync(path, data, { flag: 'wx', mode: OBJECT_MODE }));
    await this.staged.get(digest);
    return digest;
  }

  /**
   * Stores a file's content and says what was stored. The name is always the digest of the bytes
   * written under it (a large file is hashed from its copy, not from the source), and the source
   * must not change while it is read: its size, mtime and ctime are compared before and after, and
   * a file that changes is read again, up to SOURCE_ATTEMPTS times, then refused (SOURCE_CHANGED).
   */
  async putFile(path: string | Buffer): Promise<StoredFile> {
    try {
      for (let attempt = 1; ; attempt++) {
        // Never through a symlink: the caller asked for this file, not for what it points at.
        // Small files take synchronous calls: a put is ~8 syscalls of a few µs each, and a trip
        // through the libuv pool per call made imports of many small files 4× slower than cp.
        const fd = openSync(path, C.O_RDONLY | C.O_NOFOLLOW);
        try {
          const before = fstatSync(fd, { bigint: true });
          const stored = before.size <= SMALL_FILE ? await this.putSmall(fd, before) : await this.copyAndDigest(fd, before);
          if (stored) return stored;
        } finally {
          closeSync(fd);
        }
        if (attempt >= SOURCE_ATTEMPTS) {
          throw new StratumError('SOURCE_CHANGED', `${display(path)} changed while it was being stored (${SOURCE_ATTEMPTS} tries); store it again once nothing writes to it`);
        }
      }
    } catch (err) {
      throw wrapSystemError(err, `storing ${display(path)}`);
    }
  }

  /** Read whole, hashed, written only if new; undefined when the file changed meanwhile. */
  private async putSmall(fd: number, before: BigIntStats): Promise<StoredFile | undefined> {
    const data = readFileSync(fd);
    if (!unchanged(before, fstatSync(fd, { bigint: true }), data.length)) return undefined;
    const digest = fsverityDigest(data);
    this.stageSync(digest, (staged) => writeFileSync(staged, data, { flag: 'wx', mode: OBJECT_MODE }));
    await this.staged.get(digest);
    return { digest, size: data.length, dev: before.dev, ino: before.ino, mtimeNs: before.mtimeNs, ctimeNs: before.ctimeNs };
  }

  async putStream(stream: Readable): Promise<string> {
    try {
      return await this.putStreamInto(stream);
    } catch (err) {
      throw wrapSystemError(err, 'storing a stream');
    }
  }

  /**
   * A large file: the kernel copies it (copy_file_range, or a reflink), then a pool thread hashes
   * the copy in C (two threads above 64 MiB) from the page cache. Hashing the copy, not the
   * source, is what makes the name the digest of the stored bytes whatever writes to the source.
   * Undefined when the source changed meanwhile (nothing is staged then).
   */
  private async copyAndDigest(fd: number, before: BigIntStats): Promise<StoredFile | undefined> {
    let size = 0;
    const digest = await this.intoScratch(async (scratch) => {
      // copy through the open fd, so the bytes copied are those of the file we stat
      await fsp.copyFile(`/proc/self/fd/${fd}`, scratch, C.COPYFILE_EXCL);
      const copy = await fsp.open(scratch, C.O_RDONLY);
      try {
        await copy.chmod(OBJECT_MODE); // copyFile gave it the source's mode
        size = Number((await copy.stat()).size);
        if (!unchanged(before, fstatSync(fd, { bigint: true }), size)) return undefined;
        return await digestFd(copy.fd);
      } finally {
        await copy.close();
      }
    });
    return digest === undefined ? undefined : { digest, size, dev: before.dev, ino: before.ino, mtimeNs: before.mtimeNs, ctimeNs: before.ctimeNs };
  }

  /** Streams into a fresh staged file while hashing. */
  private putStreamInto(stream: Readable): Promise<string> {
    return this.intoScratch(async (scratch) => {
      const dest = await fsp.open(scratch, 'wx', OBJECT_MODE);
      try {
        const hasher = new FsverityHasher();
        for await (const chunk of stream) {
          const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
          hasher.update(bytes);
          await writeAll(dest, bytes);
        }
        return hasher.digest();
      } finally {
        await dest.close();
      }
    });
  }

  /** `fill` writes a scratch file and returns its digest; it is then staged under that name (or dropped as a duplicate, or when undefined). */
  private async intoScratch<D extends string | undefined>(fill: (scratch: string) => Promise<D>): Promise<D> {
    const scratch = join(this.dir.path, `partial-${this.counter++}`);
    try {
      const digest = await fill(scratch);
      if (digest !== undefined) await this.stage(digest, (staged) => fsp.rename(scratch, staged));
      return digest;
    } finally {
      await fsp.rm(scratch, { force: true });
    }
  }

  /** Like `stage`, with the write done now; the map then holds a settled promise. */
  private stageSync(digest: string, write: (path: string) => void): void {
    if (this.committed) throw new StratumError('IO', 'object batch used after commit');
    if (this.staged.has(digest)) return;
    if (!this.objects.has(digest)) write(join(this.dir.path, digest));
    this.staged.set(digest, Promise.resolve());
  }

  /** Runs `write(stagedPath)` once per new digest; a digest already stored or staged costs nothing. */
  private async stage(digest: string, write: (path: string) => Promise<void>): Promise<void> {
    if (this.committed) throw new StratumError('IO', 'object batch used after commit');
    const pending = this.staged.get(digest);
    if (pending) return pending;
    const work = (async () => {
      if (this.objects.has(digest)) return;
      await write(join(this.dir.path, digest));
    })();
    this.staged.set(digest, work);
    try {
      await work;
    } catch (err) {
      this.staged.delete(digest);
      throw err;
    }
  }

  /** Makes every staged object durable and visible under its name. */
  async commit(): Promise<string[]> {
    this.committed = true;
    await Promise.all(this.staged.values());
    return this.objects.publish(this.dir, this.staged.keys(), 'rename');
  }

  /** Drops whatever was not committed and releases the staging dir. */
  async dispose(): Promise<void> {
    await this.dir.dispose();
  }
}

/** The source is as it was before it was read, and what was read is all of it. */
function unchanged(before: BigIntStats, after: BigIntStats, bytesRead: number): boolean {
  return before.size === after.size && before.mtimeNs === after.mtimeNs && before.ctimeNs === after.ctimeNs && BigInt(bytesRead) === after.size;
}

function checkDigest(digest: string): void {
  if (!isDigest(digest)) throw new StratumError('BAD_NAME', `${JSON.stringify(digest.slice(0, 80))} is not an object digest (64 hex digits)`);
}

async function writeAll(dest: fsp.FileHandle, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await dest.write(bytes, done, bytes.length - done);
    done += bytesWritten;
  }
}
