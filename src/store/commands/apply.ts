// `apply label:tag`: HEAD's base becomes that commit. Uncommitted changes are never lost
// silently: with changes in the upper, apply refuses unless told to `discard` them (the upper is
// swapped for a fresh one) or to `keep` them (the upper stays, now on top of the new base). The
// swap runs through the same journal as commit, so a kill -9 leaves the old HEAD or the new one.
// Before a `keep`, metacopy upper files (metadata changed, data still in the old base) get their
// data written into the upper, so they keep their content whatever the new base holds there.
//
// Public surface: applyHead, ApplyOptions, ApplyResult.
import { constants as C, promises as fsp } from 'node:fs';
import { lremovexattr } from '../../native/xattr.js';
import { isSystemError } from '../error.js';
import { S_IFDIR, S_IFMT, S_IFREG } from '../image/erofs.js';
import { FileSource, ImageReader } from '../image/read.js';
import { UnionView } from '../union.js';
import { type XattrNamespace, readUpperEntry, setMtime, upperRootAttr } from '../upper.js';
import { StratumError } from '../error.js';
import { type Ref, checkLabel, formatRef, parseRef } from '../names.js';
import { resolveRef } from '../resolve.js';
import type { Store } from '../store.js';
import { makeFreshUpper } from '../upper.js';
import { defaultXattrNamespace } from '../head.js';
import { commitRoot, countUpper, refuseMountedUpper, ensureUpper, headPaths, recoverHead, removeTree, upperRootChanged, writeJournal } from '../head/index.js';

export interface ApplyOptions {
  discard?: boolean;
  keep?: boolean;
}

export interface ApplyResult {
  label: string;
  from: string | undefined;
  to: string;
  /** Changed upper paths found (the root counts when its attributes changed). */
  changes: number;
  /** What happened to them. */
  changesWere: 'none' | 'discarded' | 'kept';
}

export async function applyHead(store: Store, what: string, options: ApplyOptions = {}): Promise<ApplyResult> {
  if (options.discard && options.keep) throw new StratumError('USAGE', 'apply takes --discard or --keep, not both');
  const ref: Ref = parseRef(what, { bareLabel: 'error' });
  const label = checkLabel(ref.label);
  return store.lock.with('exclusive', async () => {
    await recoverHead(store, label, { orBusy: true });
    const { id: to } = await resolveRef(store, ref);
    const head = await store.heads.read(label);
    const paths = headPaths(store, label);
    await refuseMountedUpper(paths, label, store.root);
    if (!head) {
      const now = new Date().toISOString();
      const state = { label, base: to, xattrNamespace: defaultXattrNamespace(), created: now, updated: now };
      await store.heads.write(state, { create: true });
      await ensureUpper(store, state);
      return { label, from: undefined, to, changes: 0, changesWere: 'none' };
    }
    const changes = (await countUpper(paths.upper)) + ((await upperRootChanged(paths.upper, commitRoot(store, head.base))) ? 1 : 0);
    if (changes > 0 && !options.discard && !options.keep) {
      throw new StratumError('BUSY', `HEAD of ${label} has uncommitted changes (${changes} changed path${changes === 1 ? '' : 's'}); commit them first (stratum commit ${label}:<tag>), or apply ${formatRef(ref)} with --discard to drop them or --keep to keep them on top`);
    }
    if (changes > 0 && options.keep) {
      await materializeMetacopy(store, head.base, paths.upper, head.xattrNamespace);
      await store.heads.write({ ...head, base: to, updated: new Date().toISOString() });
      return { label, from: head.base, to, changes, changesWere: 'kept' };
    }
    // A fresh upper carrying the new base's root attributes, swapped in through the journal.
    await removeTree(store, paths.swap);
    await makeFreshUpper(paths.swap, commitRoot(store, to), head.xattrNamespace);
    const freshIno = String((await fsp.lstat(paths.swap, { bigint: true })).ino);
    await writeJournal(store, paths, { op: 'apply', label, from: head.base, to, tag: '', explicitTag: false, freshIno, linked: [] });
    await recoverHead(store, label);
    await ensureUpper(store, { ...head, base: to });
    return { label, from: head.base, to, changes, changesWere: changes > 0 ? 'discarded' : 'none' };
  });
}

/**
 * Gives every metacopy file of the upper its data from `base` (object or inline content), then
 * drops its metacopy and redirect xattrs, keeping its mtime. Data first, xattrs after: a crash
 * in between leaves a metacopy file whose view is unchanged, and a rerun finishes it.
 */
async function materializeMetacopy(store: Store, base: string, upper: string, ns: XattrNamespace): Promise<number> {
  const source = new FileSource(store.commits.imagePath(base));
  let done = 0;
  try {
    const view = new UnionView(ImageReader.open(source), upper, ns);
    const seen = new Set<string>();
    const walk = async (dir: Buffer, rel: string): Promise<void> => {
      for (const name of (await fsp.readdir(dir, { encoding: 'buffer' })) as Buffer[]) {
        const path = Buffer.concat([dir, Buffer.from('/'), name]);
        const childRel = `${rel}/${name.toString('latin1')}`;
        const stat = await fsp.lstat(path, { bigint: true });
        const type = Number(stat.mode) & S_IFMT;
        if (type === S_IFDIR) await walk(path, childRel);
        if (type !== S_IFREG) continue;
        const key = `${stat.dev}:${stat.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
        if (readUpperEntry(path, stat, ns, 'overlay').kind !== 'metacopy') continue;
        const node = view.lookup(childRel);
        if (!node) continue;
        const content = view.content(node);
        const out = await fsp.open(path, C.O_WRONLY | C.O_NOFOLLOW);
        try {
          if (content.kind === 'inline') await out.write(content.bytes, 0, content.bytes.length, 0);
          if (content.kind === 'object') {
            const input = await fsp.open(store.objects.path(content.digest), 'r');
            try {
              const buf = Buffer.allocUnsafe(1 << 20);
              for (let pos = 0; ; ) {
                const { bytesRead } = await input.read(buf, 0, buf.length, pos);
                if (bytesRead === 0) break;
                await out.write(buf, 0, bytesRead, pos);
                pos += bytesRead;
              }
            } finally {
              await input.close();
            }
          }
          await out.sync();
        } finally {
          await out.close();
        }
        for (const x of ['metacopy', 'redirect']) {
          try {
            lremovexattr(path, `${ns}.overlay.${x}`);
          } catch (err) {
            if (!isSystemError(err, 'ENODATA')) throw err;
          }
        }
        const { mtimeSec, mtimeNsec } = upperRootAttr(stat);
        setMtime(path, mtimeSec, mtimeNsec);
        done++;
      }
    };
    await walk(Buffer.from(upper), '');
  } finally {
    source.close();
  }
  return done;
}
