// `list`: the labels of a store, or the commits of one label, one row each with the tags that
// name it (as `podman images` lists images). A commit's id tag (its 64-hex name, given by import
// and untagged commits) shows only with `all`. A tag that cannot be resolved is listed with its
// problem instead of failing the whole listing.
//
// Public surface: listLabels, listTags, listCommits, LabelEntry, TagEntry, CommitRow.
import { StratumError } from '../error.js';
import { checkLabel } from '../names.js';
import type { Store } from '../store.js';

export interface CommitRow {
  id: string;
  /** Tags naming it, sorted; the id tag only with `all`. */
  tags: string[];
  timestamp: string;
  bytes: number;
  /** HEAD's base is this commit. */
  head: boolean;
}

export interface LabelEntry {
  label: string;
  /** Commits its tags or HEAD name, and its tags without the id tags. */
  commits: number;
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
  return Promise.all(labels.map(async (label) => {
    const { commits } = await listCommits(store, label);
    return { label, commits: commits.length, tags: commits.reduce((n, c) => n + c.tags.length, 0) };
  }));
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

/** One row per commit the label's tags or HEAD name, newest first, and the tags that do not resolve. */
export async function listCommits(store: Store, label: string, options: { all?: boolean } = {}): Promise<{ commits: CommitRow[]; broken: TagEntry[] }> {
  const tags = await listTags(store, label);
  const head = await store.heads.read(label);
  const rows = new Map<string, CommitRow>();
  const row = async (id: string): Promise<CommitRow> => {
    let r = rows.get(id);
    if (!r) {
      const meta = await store.commits.metadata(id);
      r = { id, tags: [], timestamp: meta.timestamp, bytes: meta.files.totalSize, head: head?.base === id };
      rows.set(id, r);
    }
    return r;
  };
  for (const t of tags) {
    if (!t.id) continue;
    const r = await row(t.id);
    if (t.tag !== t.id || options.all) r.tags.push(t.tag);
  }
  if (head && (await store.commits.has(head.base))) await row(head.base);
  const commits = [...rows.values()].sort((a, b) => b.timestamp.localeCompare(a.timestamp) || a.id.localeCompare(b.id));
  for (const r of commits) r.tags.sort();
  return { commits, broken: tags.filter((t) => !t.id) };
}
