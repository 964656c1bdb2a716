// Commits on disk: commits/<id>/{commit.cfs,metadata.toml}, never modified once in place. A new
// commit is assembled in a locked tmp dir, fsynced, and renamed into place as a whole, so a commit
// dir either is complete or does not exist.
//
// Public surface: CommitStore, imagePath.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { isDigest } from './digest.js';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { type CommitMetadata, formatMetadata, parseMetadata } from './metadata.js';
import { syncDir, type TmpArea } from './tmp.js';

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

  async has(id: string): Promise<boolean> {
    try {
      await fsp.access(join(this.path(id), METADATA_FILE));
      return true;
    } catch {
      return false;
    }
  }

  async metadata(id: string): Promise<CommitMetadata> {
    let text: string;
    try {
      text = await fsp.readFile(join(this.path(id), METADATA_FILE), 'utf8');
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw new StratumError('NOT_FOUND', `commit ${id} is not in the store`);
      throw wrapSystemError(err, `reading commit ${id}`);
    }
    const meta = parseMetadata(text, id);
    if (meta.metadataHash !== id) throw new StratumError('CORRUPT_STORE', `commit ${id} says its id is ${meta.metadataHash}`);
    return meta;
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

  /** Puts a commit in place; false when an identical one (same id) was already there. */
  async add(image: Uint8Array, meta: CommitMetadata): Promise<boolean> {
    const id = meta.metadataHash;
    if (await this.has(id)) return false;
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

async function writeDurably(path: string, data: string | Uint8Array): Promise<void> {
  const handle = await fsp.open(path, 'wx', 0o444);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
