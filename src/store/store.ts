// A Stratum store on disk (DESIGN.md "Store layout"): opening validates the `info` file, creates
// the layout on first write, and clears staging debris a crashed process left behind.
//
// Public surface: Store, STORE_FORMAT, STORE_DIR_MODE, OpenOptions, openToOthers.
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { CommitStore } from './commits.js';
import { HeadStore } from './head.js';
import { StoreLock } from './lock.js';
import { ObjectStore } from './objects.js';
import { TagStore } from './refs.js';
import { TmpArea, writeFileAtomic } from './tmp.js';

/** The store format this code reads and writes; a store with another major number is refused. */
export const STORE_FORMAT = 1;

const version: string = (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;

export interface OpenOptions {
  /** Create the store if it does not exist (every writing command); readers pass false. */
  create?: boolean;
}

export class Store {
  readonly objects: ObjectStore;
  readonly commits: CommitStore;
  readonly tags: TagStore;
  readonly heads: HeadStore;
  readonly tmp: TmpArea;
  readonly lock: StoreLock;

  /** Machine-local caches (the import cache); safe to delete at any time. */
  get cacheDir(): string {
    return join(this.root, 'cache');
  }

  private constructor(readonly root: string) {
    this.tmp = new TmpArea(join(root, 'tmp'));
    this.objects = new ObjectStore(join(root, 'objects'), this.tmp);
    this.commits = new CommitStore(join(root, 'commits'), this.tmp);
    this.tags = new TagStore(join(root, 'refs'), this.tmp, (id) => this.commits.present(id));
    this.heads = new HeadStore(join(root, 'refs'), this.tmp);
    this.lock = new StoreLock(join(root, 'lock'));
  }

  static async open(root: string, options: OpenOptions = {}): Promise<Store> {
    const store = new Store(root);
    try {
      const info = await readInfo(root);
      if (info === undefined) {
        if (!options.create) throw new StratumError('NOT_FOUND', `no stratum store at ${root} (it is created by the first import)`);
        await store.create();
      }
      await store.tmp.cleanStale();
    } catch (err) {
      throw wrapSystemError(err, `opening the store at ${root}`);
    }
    return store;
  }

  /** Lays out an empty store. The info file comes last: a store is only a store once it has one. */
  private async create(): Promise<void> {
    // 0700: objects keep their content but not their owner's permissions, so a 0600 file imported
    // by root would be readable by everyone through objects/ otherwise (docs/store.md "Access")
    await fsp.mkdir(dirname(this.root), { recursive: true });
    await fsp.mkdir(this.root, { mode: STORE_DIR_MODE }).catch((err: unknown) => {
      if (!isSystemError(err, 'EEXIST')) throw err; // an empty dir the user made: its mode is theirs
    });
    const existing = (await fsp.readdir(this.root)).filter((n) => !['objects', 'commits', 'refs', 'tmp', 'lock', 'cache'].includes(n));
    if (existing.length > 0) {
      throw new StratumError('USAGE', `${this.root} is not empty and not a stratum store (found ${existing.slice(0, 3).join(', ')}); choose an empty directory`);
    }
    for (const dir of LAYOUT_DIRS) await fsp.mkdir(join(this.root, dir), { recursive: true, mode: STORE_DIR_MODE });
    try {
      await writeFileAtomic(this.tmp, join(this.root, 'info'), `${STORE_FORMAT}\nstratum ${version}\n`, { noReplace: true });
    } catch (err) {
      if (!isSystemError(err, 'EEXIST')) throw err; // another process created it at the same time
      await readInfo(this.root);
    }
  }
}

/** The store and the dirs under it that hold content or names: the owner's alone. */
export const STORE_DIR_MODE = 0o700;
const LAYOUT_DIRS = ['objects', 'commits', 'refs', 'tmp'];
/** cache/ is made by the first import (src/store/import-cache.ts), 0700 as well. */
const PRIVATE_DIRS = [...LAYOUT_DIRS, 'cache'];

/**
 * What of the store other users can read or enter (group or other bits on the store or the
 * dirs under it), one line each; verify warns with these. Existing stores are not changed behind
 * their owner's back: `chmod 700` of the listed paths is theirs to run.
 */
export async function openToOthers(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const path of [root, ...PRIVATE_DIRS.map((d) => join(root, d))]) {
    let mode: number;
    try {
      mode = (await fsp.stat(path)).mode & 0o777;
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) continue;
      throw wrapSystemError(err, `checking ${path}`);
    }
    if (mode & 0o077) out.push(`${path} is mode ${mode.toString(8).padStart(4, '0')}: other users can read the store (chmod 700 ${path})`);
  }
  return out;
}

/** The info file's format version, checked; undefined when there is no store at all. */
async function readInfo(root: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(join(root, 'info'), 'utf8');
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return undefined;
    throw err;
  }
  const [first, second] = text.split('\n');
  if (!first || !/^\d{1,9}$/.test(first) || !second?.startsWith('stratum ')) {
    throw new StratumError('CORRUPT_STORE', `${join(root, 'info')} is not a stratum info file (expected "${STORE_FORMAT}" and "stratum <version>" lines)`);
  }
  const format = Number(first);
  if (format !== STORE_FORMAT) {
    throw new StratumError('STORE_VERSION', `the store at ${root} has format ${format}, written by ${second}; this stratum ${version} reads format ${STORE_FORMAT} only`);
  }
  return format;
}
