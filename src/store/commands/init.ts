// `init label [mountpoint] [--migrate]`: a new label whose HEAD is the empty tree, or, with
// `migrate`, the directory at the mountpoint imported as the first commit. The upper and work
// dirs are prepared; mounting is a separate command.
//
// Public surface: initLabel, InitOptions, InitResult.
import { StratumError } from '../error.js';
import { S_IFDIR } from '../image/erofs.js';
import { newInode } from '../image/tree.js';
import { checkLabel } from '../names.js';
import type { Store } from '../store.js';
import { buildCommit, importDirectory } from './import.js';
import { ensureUpper, recoverHead } from '../head/index.js';

export interface InitOptions {
  label: string;
  mountpoint?: string | undefined;
  migrate?: boolean;
}

export interface InitResult {
  label: string;
  base: string;
  /** With migrate: paths and content bytes imported from the mountpoint. */
  migrated?: { files: number; bytes: number; newObjects: number };
  mountpoint?: string;
}

export async function initLabel(store: Store, options: InitOptions): Promise<InitResult> {
  const label = checkLabel(options.label);
  if (options.migrate && !options.mountpoint) throw new StratumError('USAGE', `--migrate imports the directory at the mountpoint: stratum init ${label} <mountpoint> --migrate`);
  const existing = await store.heads.read(label);
  if (existing) throw new StratumError('BUSY', `label ${label} already has a HEAD (on ${existing.base.slice(0, 12)}); use \`stratum apply\` to move it`);
  let result: InitResult;
  if (options.migrate) {
    const imported = await importDirectory(store, options.mountpoint!, { label });
    if (!imported.head) throw new StratumError('BUSY', `label ${label} got a HEAD from another command meanwhile; nothing to initialize`);
    result = { label, base: imported.id, migrated: { files: imported.files, bytes: imported.bytes, newObjects: imported.newObjects } };
  } else {
    result = await store.lock.with('exclusive', async () => {
      // The empty tree: a root dir owned by the caller, mtime 0, so every init of a user agrees on
      // the id; the commit's time is when it was made (the first init's, if it existed already).
      const root = newInode({ mode: S_IFDIR | 0o755, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
      const { id, meta, image } = buildCommit({ root });
      await store.commits.add(image, meta);
      const created = await store.heads.createIfAbsent(label, id);
      if (!created) throw new StratumError('BUSY', `label ${label} got a HEAD from another command meanwhile; nothing to initialize`);
      return { label, base: id };
    });
  }
  await store.lock.with('exclusive', async () => {
    await recoverHead(store, label, { orBusy: true });
    const head = (await store.heads.read(label))!;
    await ensureUpper(store, head);
  });
  if (options.mountpoint) result.mountpoint = options.mountpoint;
  return result;
}
