// `commit label[:tag]`: HEAD's base ⊕ its upper dir becomes a new commit, tagged, and HEAD moves
// onto it with an empty upper. The work is src/store/head/ (docs/head.md): this command checks
// its arguments, takes the store lock, recovers HEAD and refuses what must not be committed.
//
// Public surface: commitHead; and, for existing callers, the HEAD names that
// used to live here (re-exported from src/store/head/).
import { StratumError } from '../error.js';
import { checkLabel, checkTag } from '../names.js';
import type { Store } from '../store.js';
import { type CommitOptions, type CommitResult, commitUpper, refuseTakenTag } from '../head/engine.js';
import { headPaths } from '../head/paths.js';
import { recoverHead } from '../head/recover.js';
import { refuseMountedUpper } from '../head/upper-dir.js';

export * from '../head/index.js';

export async function commitHead(store: Store, options: CommitOptions): Promise<CommitResult> {
  const label = checkLabel(options.label);
  if (options.tag !== undefined) checkTag(options.tag);
  return store.lock.with('exclusive', async () => {
    await recoverHead(store, label, { orBusy: true });
    const head = await store.heads.read(label);
    if (!head) throw new StratumError('NOT_FOUND', `label ${label} has no HEAD; create one with \`stratum init ${label}\` or an import`);
    await refuseTakenTag(store, label, options.tag);
    const paths = headPaths(store, label);
    await refuseMountedUpper(paths, label, store.root);
    return commitUpper(store, head, paths, { tag: options.tag, onStep: options.onStep, nextUpper: 'fresh', splice: options.splice });
  });
}
