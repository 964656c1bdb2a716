// HEAD: a label's writable state over its base commit (docs/head.md). head.toml itself is
// store/head.ts; this folder is the rest: where HEAD lives on disk (paths.ts), its upper dir
// (upper-dir.ts), its base read back (base.ts), the journals and how they are settled
// (journal.ts), recovery (recover.ts), and the commit engine (engine.ts) with its two ways to
// make the new image: written whole (build.ts) or the base patched for edits only (edits.ts).
// The commands commit, apply, bare and init are small functions over this surface.
//
// Public surface: everything re-exported below.
export { baseTree, commitRoot } from './base.js';
export { buildHeadCommit } from './build.js';
export { type CommitOptions, type CommitResult, commitUpper, refuseTakenTag } from './engine.js';
export { type CommitStep, type Journal, type LiveJournal, readLiveJournal, writeJournal, writeLiveJournal } from './journal.js';
export { type HeadPaths, headPaths } from './paths.js';
export { finishLiveCommit, recoverHead } from './recover.js';
export { countUpper, ensureUpper, refuseMountedUpper, removeTree, swapUpper, upperRootChanged } from './upper-dir.js';
