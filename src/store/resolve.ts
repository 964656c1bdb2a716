// From what a user typed to a commit id: HEAD's base, a tag (following aliases), a unique id
// prefix, or a full id. Tags win over prefixes, as in git, so a tag named like hex stays usable.
//
// Public surface: resolveRef, Resolved.
import { StratumError } from './error.js';
import { type Ref, formatRef, isIdPrefix } from './names.js';
import type { Store } from './store.js';

export interface Resolved {
  id: string;
  /** How it was found: 'head', 'tag' (with the alias chain), 'prefix' or 'id'. */
  via: 'head' | 'tag' | 'prefix' | 'id';
  chain?: string[];
}

export async function resolveRef(store: Store, ref: Ref): Promise<Resolved> {
  const { label, target } = ref;
  switch (target.kind) {
    case 'head': {
      const head = await store.heads.read(label);
      if (!head) throw new StratumError('NOT_FOUND', `label ${label} has no HEAD (import a directory into it first)`);
      return { id: head.base, via: 'head' };
    }
    case 'id':
      if (!(await store.commits.present(target.id))) throw new StratumError('NOT_FOUND', `commit ${target.id} is not in the store`);
      return { id: target.id, via: 'id' };
    case 'name': {
      try {
        const { id, chain } = await store.tags.resolve(label, target.name);
        return { id, via: 'tag', chain };
      } catch (err) {
        if (!(err instanceof StratumError && err.code === 'NOT_FOUND' && isIdPrefix(target.name))) throw err;
      }
      const matches = await store.commits.withPrefix(target.name);
      if (matches.length === 1) return { id: matches[0]!, via: 'prefix' };
      if (matches.length > 1) {
        throw new StratumError('AMBIGUOUS_REF', `${formatRef(ref)} matches ${matches.length} commits (${matches.slice(0, 3).map((m) => m.slice(0, 12)).join(', ')}…); give more digits`);
      }
      throw new StratumError('NOT_FOUND', `${formatRef(ref)} is neither a tag nor a commit id prefix`);
    }
  }
}
