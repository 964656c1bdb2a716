// Commits on disk: commits/<id>/{commit.cfs,metadata.toml}, never modified once in place. A new
// commit is assembled in a locked tmp dir, fsynced, and renamed into place as a whole, so a commit
// dir either is complete or does not exist.
//
// Public surface: CommitStore, CommitState, IMAGE_FILE, METADATA_FILE.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { fsverityDigest, isDigest } from './digest.js';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { type CommitMetadata, formatMetadata, parseMetadata } from './metadata.js';
import { syncDir, writeFileAtomic, type TmpArea } from './tmp.js';
import { exists } from '../native/files.js';

export const IMAGE_FILE = 'commit.cfs';
export const METADATA_FILE = 'metadata.toml';

export class CommitStore {
  constructor(
    readonly dir: string,
    private readonly tmp: TmpArea,
  ) {}

  path(id: string): string {
    if (!isDigest(id)) throw new StratumError('BAD_NAME', `${JSON.stringify(id.slice(0, 80))} is not a commit id`);
    return join(this.dir, id);
  }

  imagePath(id: string): string {
    return join(this.path(id), IMAGE_FILE);
  }

  /** The commit is whole: its image and its metadata are both here. */
  async has(id: string): Promise<boolean> {
    return (await this.state(id)) === 'whole';
  }

  /**
   * How much of a commit is here. Only an interrupted copy (rsync of a store) or a hand leaves a
   * part: `add` renames whole dirs into place. A part still counts for refs and gc.
   */
  async state(id: string): Promise<CommitState> {
    const [image, meta] = await Promise.all([exists(join(this.path(id), IMAGE_FILE)), exists(join(this.path(id), METADATA_FILE))]);
    if (image && meta) return 'whole';
    if (image) return 'no-metadata';
    if (meta) return 'no-image';
    return (await exists(this.path(id))) ? 'empty' : 'missing';
  }

  /** Some part of the commit is here (what a ref may name, and gc must keep). */
  async present(id: string): Promise<boolean> {
    return (await this.state(id)) !== 'missing';
  }

  async metadata(id: string): Promise<CommitMetadata> {
    let text: string;
    try {
      text = await fsp.readFile(join(this.path(id), METADATA_FILE), 'utf8');
    } catch (err) {
      if (!isSystemError(err, 'ENOENT')) throw wrapSystemError(err, `reading commit ${id}`);
      if (await exists(this.imagePath(id))) throw new StratumError('CORRUPT_STORE', `commit ${id} has no ${METADATA_FILE} (an interrupted copy of the store?); \`stratum verify --repair\` rebuilds it from ${IMAGE_FILE}`);
      throw new StratumError('NOT_FOUND', `commit ${id} is not in the store`);
    }
    const meta = parseMetadata(text, id);
    if (meta.metadataHash !== id) throw new StratumError('CORRUPT_STORE', `commit ${id} says its id is ${meta.metadataHash}`);
    return meta;
  }

  /**
   * Puts one missing file of a commit in place (create-only, durable). The image must hash to the
   * id; metadata is what `add` or `verify --repair` made of the image.
   */
  async restore(id: string, file: typeof IMAGE_FILE | typeof METADATA_FILE, data: string | Uint8Array): Promise<void> {
    if (file === IMAGE_FILE && fsverityDigest(data as Uint8Array) !== id) throw new StratumError('CORRUPT_IMAGE', `an image for commit ${id} hashes to something else`);
    try {
      await writeFileAtomic(this.tmp, join(this.path(id), file), data, { noReplace: true, mode: 0o444 });
    } catch (err) {
      if (!isSystemError(err, 'EEXIST')) throw err; // put back by another process meanwhile
    }
  }

  /** Every commit id in the store. */
  async list(): Promise<string[]> {
    try {
      return (await fsp.readdir(this.dir)).filter(isDigest).sort();
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return [];
      throw wrapSystemError(err, 'listing commits');
    }
  }

  /** Ids starting with `prefix`. */
  async withPrefix(prefix: string): Promise<string[]> {
    return (await this.list()).filter((id) => id.startsWith(prefix));
  }

  /**
   * Puts a commit in place; false when an identical one (same id) was already there. A commit
   * that is here only in part gets its missing files (an import of the same tree heals it).
   */
  async add(image: Uint8Array, meta: CommitMetadata): Promise<boolean> {
    const id = meta.metadataHash;
    const state = await this.state(id);
    if (state === 'whole') return false;
    if (state !== 'missing') {
      if (state !== 'no-metadata') await this.restore(id, IMAGE_FILE, image);
      if (state !== 'no-image') await this.restore(id, METADATA_FILE, formatMetadata(meta));
      return false;
    }
    const staging = await this.tmp.makeDir('commit');
    try {
      await writeDurably(join(staging.path, IMAGE_FILE), image);
      await writeDurably(join(staging.path, METADATA_FILE), formatMetadata(meta));
      await syncDir(staging.path);
      await fsp.mkdir(this.dir, { recursive: true });
      try {
        await fsp.rename(staging.path, this.path(id));
      } catch (err) {
        // another process put the same commit in place first: same id, same bytes
        if (isSystemError(err, 'ENOTEMPTY') || isSystemError(err, 'EEXIST')) return false;
        throw err;
      }
      await syncDir(this.dir);
      return true;
    } catch (err) {
      throw wrapSystemError(err, `writing commit ${id}`);
    } finally {
      await staging.dispose();
    }
  }
}

export type CommitState = 'whole' | 'no-metadata' | 'no-image' | 'empty' | 'missing';

async function writeDurably(path: string, data: string | Uint8Array): Promise<void> {
  const handle = await fsp.open(path, 'wx', 0o444);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
