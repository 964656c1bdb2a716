// `import --bare <dir> label[:tag]`: a delta dir applied to the label's HEAD base as a new commit.
// Deletions may be overlay whiteouts (char 0:0, the opaque xattr in either namespace, zero-size
// files carrying overlay.whiteout) or OCI layer whiteouts (`.wh.<name>`, `.wh..wh..opq`), so an
// unpacked OCI layer applies as a delta. Files are copied into the store (the dir stays the
// caller's). HEAD itself is left as it is: the result is a tagged commit, `apply` moves HEAD.
//
// Public surface: importBare, BareOptions, BareResult.
import { constants as C, promises as fsp } from 'node:fs';
import { StratumError, wrapSystemError } from '../error.js';
import { S_IFDIR, S_IFMT } from '../image/erofs.js';
import { objectPath } from '../image/tree.js';
import { checkLabel, checkTag } from '../names.js';
import { INLINE_LIMIT } from '../source.js';
import type { Store } from '../store.js';
import { emptyTree, mergeUpper } from '../union.js';
import { baseTree, recoverHead } from '../head/index.js';
import { buildHeadCommit } from '../head/build.js';

export interface BareOptions {
  label: string;
  tag?: string | undefined;
}

export interface BareResult {
  id: string;
  label: string;
  tag: string;
  /** HEAD's base the delta was applied to; undefined when the label had no HEAD (empty base). */
  parent: string | undefined;
  newCommit: boolean;
  newObjects: number;
  changedPaths: number;
  deletions: number;
  files: number;
  bytes: number;
}

export async function importBare(store: Store, dir: string, options: BareOptions): Promise<BareResult> {
  const label = checkLabel(options.label);
  const explicitTag = options.tag !== undefined;
  if (explicitTag) checkTag(options.tag!);
  const st = await fsp.lstat(dir).catch((err: unknown) => {
    throw wrapSystemError(err, `reading ${dir}`);
  });
  if ((st.mode & S_IFMT) !== S_IFDIR) throw new StratumError('BAD_PATH', `${dir} is not a directory`);
  return store.lock.with('exclusive', async () => {
    await recoverHead(store, label, { orBusy: true });
    if (explicitTag && (await store.tags.read(label, options.tag!))) throw new StratumError('TAG_EXISTS', `tag ${label}:${options.tag} exists; choose another tag (nothing was imported)`);
    const head = await store.heads.read(label);
    const base = head ? baseTree(store, head.base) : emptyTree();
    const merged = mergeUpper(base, dir, { ns: 'trusted', style: 'bare' });
    const batch = await store.objects.batch();
    let newObjects: number;
    try {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < merged.pending.length) {
          const { path, inode } = merged.pending[next++]!;
          if (inode.size <= INLINE_LIMIT) {
            const handle = await fsp.open(path, C.O_RDONLY | C.O_NOFOLLOW);
            try {
              const buf = Buffer.alloc(inode.size);
              const { bytesRead } = await handle.read(buf, 0, inode.size, 0);
              inode.content = buf.subarray(0, bytesRead);
              inode.size = bytesRead;
            } finally {
              await handle.close();
            }
            if (inode.size === 0) delete inode.content;
            continue;
          }
          const { digest, size } = await batch.putFile(path);
          inode.size = size;
          inode.digest = digest;
          inode.payload = objectPath(digest);
        }
      };
      await Promise.all(Array.from({ length: Math.min(16, merged.pending.length) }, worker));
      newObjects = (await batch.commit()).length;
    } finally {
      await batch.dispose();
    }
    const { id, meta, image } = buildHeadCommit(merged.tree, head?.base);
    const tag = options.tag ?? id;
    const newCommit = await store.commits.add(image, meta);
    const existing = await store.tags.read(label, tag);
    if (!existing) await store.tags.write(label, tag, { kind: 'id', id });
    else if (!(existing.kind === 'id' && existing.id === id)) throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists and points elsewhere`);
    return { id, label, tag, parent: head?.base, newCommit, newObjects, changedPaths: merged.upperEntries, deletions: merged.whiteouts, files: meta.files.count, bytes: meta.files.totalSize };
  });
}
