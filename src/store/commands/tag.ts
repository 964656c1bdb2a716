// `tag <label:ref> <new>`: name a commit. The new tag is a copy of what the ref resolves to (a
// commit id), in the same label unless `new` says `label:tag`. `--move` renames a tag.
import { StratumError } from '../error.js';
import { checkTag, formatRef, parseRef } from '../names.js';
import { resolveRef } from '../resolve.js';
import type { Store } from '../store.js';

export interface TagOptions {
  move?: boolean;
  force?: boolean;
}

export interface TagResult {
  label: string;
  tag: string;
  id: string;
  /** The tag that --move removed. */
  moved?: string;
}

export async function tagCommit(store: Store, source: string, destination: string, options: TagOptions = {}): Promise<TagResult> {
  const from = parseRef(source, { bareLabel: 'error' });
  const to = destination.includes(':') ? parseRef(destination, { bareLabel: 'error' }) : { label: from.label, target: { kind: 'name' as const, name: checkTag(destination) } };
  if (to.target.kind !== 'name') throw new StratumError('BAD_NAME', `${destination} is not a tag name`);
  const toTag = to.target.name;
  if (options.move && from.target.kind !== 'name') throw new StratumError('USAGE', `--move renames a tag; ${source} is not one`);
  return store.lock.with('shared', async () => {
    const resolved = await resolveRef(store, from);
    if (options.move && resolved.via !== 'tag') throw new StratumError('USAGE', `--move renames a tag; ${formatRef(from)} is a commit id, not a tag`);
    if (options.move && from.label === to.label && from.target.kind === 'name' && from.target.name === toTag) {
      return { label: to.label, tag: toTag, id: resolved.id };
    }
    await store.tags.write(to.label, toTag, { kind: 'id', id: resolved.id }, { force: options.force ?? false });
    const result: TagResult = { label: to.label, tag: toTag, id: resolved.id };
    if (options.move && from.target.kind === 'name') {
      await store.tags.remove(from.label, from.target.name);
      result.moved = formatRef(from);
    }
    return result;
  });
}
