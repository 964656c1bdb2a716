// What any mount of `label[:tag]` needs before it mounts, FUSE or kernel: the store opened, the
// names checked, and for HEAD a finished (recovered) HEAD with an upper dir; for a tag the commit.
//
// Public surface: prepareMountTarget, MountTarget, MountTargetOptions.
import { resolve } from 'node:path';
import { ensureUpper, headPaths, recoverHead, type HeadPaths } from './commands/commit.js';
import { StratumError } from './error.js';
import { checkLabel, checkTag } from './names.js';
import { resolveRef } from './resolve.js';
import { Store } from './store.js';

export interface MountTargetOptions {
  store: string;
  label: string;
  /** a tag, or `@<commit id>`; undefined = HEAD */
  tag?: string | undefined;
  mountpoint: string;
}

export interface MountTarget {
  store: Store;
  storeRoot: string;
  label: string;
  /** `HEAD` or the tag as given */
  ref: string;
  head: boolean;
  mountpoint: string;
  /** the commit served: HEAD's base, or what the tag names */
  commit: string;
  /** HEAD only: where the upper lives and which xattr namespace it uses */
  paths: HeadPaths;
  xattrNamespace: 'trusted' | 'user';
}

export async function prepareMountTarget(o: MountTargetOptions): Promise<MountTarget> {
  const label = checkLabel(o.label);
  if (o.tag !== undefined && !o.tag.startsWith('@')) checkTag(o.tag);
  const storeRoot = resolve(o.store);
  const store = await Store.open(storeRoot);
  const head = o.tag === undefined;
  const paths = headPaths(store, label);
  let commit: string;
  let xattrNamespace: 'trusted' | 'user' = 'trusted';
  if (head) {
    const state = await store.lock.with('exclusive', async () => {
      await recoverHead(store, label, { orBusy: true });
      const s = await store.heads.read(label);
      if (!s) throw new StratumError('NOT_FOUND', `label ${label} has no HEAD; create one with \`stratum init ${label}\``);
      await ensureUpper(store, s);
      return s;
    });
    commit = state.base;
    xattrNamespace = state.xattrNamespace;
  } else {
    const target = o.tag!.startsWith('@') ? { kind: 'id' as const, id: o.tag!.slice(1) } : { kind: 'name' as const, name: o.tag! };
    commit = (await resolveRef(store, { label, target })).id;
  }
  return { store, storeRoot, label, ref: head ? 'HEAD' : o.tag!, head, mountpoint: resolve(o.mountpoint), commit, paths, xattrNamespace };
}
