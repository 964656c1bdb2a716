// What names a commit, and what a commit descends from: the roots of gc, verify and log.
//
// Public surface: labelRoots, allRoots, withAncestors, ancestry.
import { StratumError } from './error.js';
import type { CommitMetadata } from './metadata.js';
import type { Store } from './store.js';

/** Commits a label's tags and HEAD name; tags that do not resolve name nothing. */
export async function labelRoots(store: Store, label: string): Promise<string[]> {
  const roots: string[] = [];
  for (const tag of await store.tags.tags(label)) {
    try {
      roots.push((await store.tags.resolve(label, tag)).id);
    } catch (err) {
      if (!(err instanceof StratumError)) throw err;
    }
  }
  const head = await store.heads.read(label);
  if (head) roots.push(head.base);
  return roots;
}

export async function allRoots(store: Store): Promise<string[]> {
  const roots: string[] = [];
  for (const label of await store.tags.labels()) roots.push(...(await labelRoots(store, label)));
  return roots;
}

/**
 * The roots and every commit they descend from, as far as the store has them. A root counts even
 * when the store has it only in part, or not at all, and so does an ancestor the store has a part
 * of: gc and verify must see them.
 */
export async function withAncestors(store: Store, roots: Iterable<string>): Promise<Set<string>> {
  const seen = new Set<string>();
  for (const root of roots) {
    let current: string | undefined = root;
    while (current !== undefined && !seen.has(current)) {
      // history may leave the store (a bundle of the tip alone); a part of a commit still counts
      const state = await store.commits.state(current);
      if (current !== root && state === 'missing') break;
      seen.add(current);
      if (state !== 'whole' && state !== 'no-image') break; // no metadata: its parent is unknown
      current = (await store.commits.metadata(current)).parentCommit;
    }
  }
  return seen;
}

/** A commit and its parents, newest first, until the chain ends or leaves the store. */
export async function* ancestry(store: Store, id: string): AsyncGenerator<{ id: string; meta: CommitMetadata }> {
  const visited = new Set<string>();
  let current: string | undefined = id;
  // the metadata is what a step needs: a commit that lost only its image still has its history
  while (current && !visited.has(current) && ['whole', 'no-image'].includes(await store.commits.state(current))) {
    visited.add(current);
    const meta = await store.commits.metadata(current);
    yield { id: current, meta };
    current = meta.parentCommit;
  }
}
