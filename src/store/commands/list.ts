// `list`: the labels of a store, or the tags of one label with what each points at. A tag that
// cannot be resolved is listed with its problem instead of failing the whole listing.
import { StratumError } from '../error.js';
import { checkLabel } from '../names.js';
import type { Store } from '../store.js';

export interface LabelEntry {
  label: string;
  tags: number;
}

export interface TagEntry {
  tag: string;
  /** The commit the tag resolves to, when it does, with its time and content size. */
  id?: string;
  timestamp?: string;
  bytes?: number;
  /** Tags followed to get there, for aliases. */
  via?: string[];
  /** Why it does not resolve (dangling, loop, unreadable). */
  problem?: { code: string; message: string };
}

export async function listLabels(store: Store): Promise<LabelEntry[]> {
  const labels = await store.tags.labels();
  return Promise.all(labels.map(async (label) => ({ label, tags: (await store.tags.tags(label)).length })));
}

export async function listTags(store: Store, label: string): Promise<TagEntry[]> {
  checkLabel(label);
  if (!(await store.tags.labels()).includes(label)) throw new StratumError('NOT_FOUND', `label ${label} does not exist; \`stratum list\` shows the labels`);
  const entries: TagEntry[] = [];
  for (const tag of await store.tags.tags(label)) {
    try {
      const { id, chain } = await store.tags.resolve(label, tag);
      const meta = await store.commits.metadata(id);
      const entry: TagEntry = { tag, id, timestamp: meta.timestamp, bytes: meta.files.totalSize };
      if (chain.length > 1) entry.via = chain.slice(1);
      entries.push(entry);
    } catch (err) {
      if (!(err instanceof StratumError)) throw err;
      entries.push({ tag, problem: { code: err.code, message: err.message } });
    }
  }
  return entries;
}
