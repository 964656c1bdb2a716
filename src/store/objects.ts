// The object store: immutable blobs under objects/ab/cdef…, named by their fs-verity digest, the
// layout of a composefs digest store (so `mkcomposefs --digest-store` and the kernel's data-only
// overlay layer read it as is).
//
// Objects are written in batches. A batch stages every new object in its own locked tmp dir,
// then `commit()` makes them durable with one syncfs, renames them into place, and syncs again:
// an object never has its name before its bytes are on disk, and a crash leaves only tmp debris.
// Puts of the same content from several processes are safe: the renames carry identical bytes.
//
// Public surface: ObjectStore, PutBatch.
import { closeSync, constants as C, existsSync, fstatSync, mkdirSync, openSync, promises as fsp, readFileSync, renameSync, writeFileSync } from 'node:fs';
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
   * Stores a file's content. With `digest` (already known, e.g. from an earlier hash pass) an
   * object that exists is not read at all and a new one is copied by the kernel.
   */
  async putFile(path: string | Buffer, known?: { digest?: string; size?: number }): Promise<string> {
    try {
      if (known?.digest) {
        const digest = known.digest;
        await this.stage(digest, (dest) => fsp.copyFile(path, dest, C.COPYFILE_EXCL));
        return digest;
      }
      // Never through a symlink: the caller asked for this file, not for what it points at.
      // Small files take synchronous calls: a put is ~8 syscalls of a few µs each, and a trip
      // through the libuv pool per call made imports of many small files 4× slower than cp.
      const fd = openSync(path, C.O_RDONLY | C.O_NOFOLLOW);
      try {
        const size = known?.size ?? fstatSync(fd).size;
        if (size <= SMALL_FILE) {
          const data = readFileSync(fd);
          const digest = fsverityDigest(data);
          this.stageSync(digest, (staged) => writeFileSync(staged, data, { flag: 'wx', mode: OBJECT_MODE }));
          await this.staged.get(digest);
          return digest;
        }
        return await this.copyAndDigest(fd);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      throw wrapSystemError(err, `storing ${display(path)}`);
    }
  }

  async putStream(stream: Readable): Promise<string> {
    try {
      return await this.putStreamInto(stream);
    } catch (err) {
      throw wrapSystemError(err, 'storing a stream');
    }
  }

  /**
   * A large file: the kernel copies it (copy_file_range) while a pool thread hashes it from the
   * page cache in C, so copy and hash run on both cores and neither passes through JavaScript.
   */
  private copyAndDigest(fd: number): Promise<string> {
    return this.intoScratch(async (scratch) => {
      // copy through the open fd, so the bytes copied are the bytes hashed even if the path is replaced
      const [digest] = await Promise.all([digestFd(fd), fsp.copyFile(`/proc/self/fd/${fd}`, scratch, C.COPYFILE_EXCL)]);
      return digest;
    });
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

  /** `fill` writes a scratch file and returns its digest; it is then staged under that name (or dropped as a duplicate). */
  private async intoScratch(fill: (scratch: string) => Promise<string>): Promise<string> {
    const scratch = join(this.dir.path, `partial-${this.counter++}`);
    try {
      const digest = await fill(scratch);
      await this.stage(digest, (staged) => fsp.rename(scratch, staged));
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
    const added: string[] = [];
    try {
      syncFilesystem(this.dir.fd);
      const made = new Set<string>();
      for (const digest of this.staged.keys()) {
        const from = join(this.dir.path, digest);
        const fan = join(this.objects.root, digest.slice(0, 2));
        if (!made.has(fan)) {
          mkdirSync(fan, { recursive: true });
          made.add(fan);
        }
        try {
          renameSync(from, this.objects.path(digest));
          added.push(digest);
        } catch (err) {
          if (!isSystemError(err, 'ENOENT')) throw err; // ENOENT: existed already, nothing staged
        }
      }
      syncFilesystem(this.dir.fd);
    } catch (err) {
      throw wrapSystemError(err, 'publishing objects');
    }
    return added;
  }

  /** Drops whatever was not committed and releases the staging dir. */
  async dispose(): Promise<void> {
    await this.dir.dispose();
  }
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
