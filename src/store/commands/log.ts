// `log <label[:tag]>`: the commit and its ancestors, newest first, with the tags of the label
// that name each one.
import { annotationsOfEach, type Annotations } from '../annotations.js';
import { ancestry } from '../history.js';
import { parseRef } from '../names.js';
import { resolveRef } from '../resolve.js';
import type { Store } from '../store.js';

export interface LogEntry {
  id: string;
  timestamp: string;
  parent?: string;
  tags: string[];
  files: number;
  bytes: number;
  annotations: Annotations;
}

export async function log(store: Store, what: string): Promise<LogEntry[]> {
  const ref = parseRef(what);
  const { id } = await resolveRef(store, ref);
  const tagsOf = new Map<string, string[]>();
  for (const tag of await store.tags.tags(ref.label)) {
    try {
      const target = (await store.tags.resolve(ref.label, tag)).id;
      tagsOf.set(target, [...(tagsOf.get(target) ?? []), tag]);
    } catch {
      // a tag that does not resolve names no commit in the log
    }
  }
  const entries: LogEntry[] = [];
  for await (const { id: commit, meta } of ancestry(store, id)) {
    const entry: LogEntry = { id: commit, timestamp: meta.timestamp, tags: tagsOf.get(commit) ?? [], files: meta.files.count, bytes: meta.files.totalSize, annotations: {} };
    if (meta.parentCommit) entry.parent = meta.parentCommit;
    entries.push(entry);
  }
  const annotations = await annotationsOfEach(store, entries.map((e) => e.id));
  for (const entry of entries) entry.annotations = annotations.get(entry.id) ?? {};
  return entries;
}
