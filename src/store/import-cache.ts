// What import already hashed, like git's index: a file whose device, inode, size, mtime and
// ctime are unchanged since it was stored has the same content, so a re-import only stats it.
// ctime cannot be set from user space, so any write to a file invalidates its entry. The cache
// is an optimisation only: a missing, stale or unreadable cache just means hashing again, and an
// entry is used only while its object is still in the store.
//
// Public surface: ImportCache.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { isDigest } from './digest.js';
import { writeFileAtomic, type TmpArea } from './tmp.js';

type Entry = [size: number, mtimeNs: string, ctimeNs: string, digest: string];

export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** Above this many entries the oldest are dropped, so the file stays small. */
const MAX_ENTRIES = 300_000;

export class ImportCache {
  private entries = new Map<string, Entry>();
  private dirty = false;

  private constructor(
    private readonly path: string,
    private readonly tmp: TmpArea,
  ) {}

  static async load(cacheDir: string, tmp: TmpArea): Promise<ImportCache> {
    const cache = new ImportCache(join(cacheDir, 'import.json'), tmp);
    try {
      const doc = JSON.parse(await fsp.readFile(cache.path, 'utf8')) as { version?: number; entries?: Record<string, Entry> };
      if (doc.version === 1 && doc.entries) cache.entries = new Map(Object.entries(doc.entries));
    } catch {
      // no cache yet, or an unreadable one: start empty
    }
    return cache;
  }

  /** The digest stored for this exact file state, if any. */
  lookup(file: FileIdentity): string | undefined {
    const entry = this.entries.get(`${file.dev}:${file.ino}`);
    if (!entry) return undefined;
    const [size, mtime, ctime, digest] = entry;
    return size === file.size && mtime === String(file.mtimeNs) && ctime === String(file.ctimeNs) && isDigest(digest) ? digest : undefined;
  }

  remember(file: FileIdentity, digest: string): void {
    const key = `${file.dev}:${file.ino}`;
    this.entries.delete(key); // re-insert: Map order is then oldest first
    this.entries.set(key, [file.size, String(file.mtimeNs), String(file.ctimeNs), digest]);
    this.dirty = true;
  }

  async save(): Promise<void> {
    if (!this.dirty) return;
    while (this.entries.size > MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    await fsp.mkdir(join(this.path, '..'), { recursive: true, mode: 0o700 }); // names inodes and digests: the owner's
    await writeFileAtomic(this.tmp, this.path, JSON.stringify({ version: 1, entries: Object.fromEntries(this.entries) }));
    this.dirty = false;
  }
}
