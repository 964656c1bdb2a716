// `status [label[:tag]]`: the store at a glance, or one label: its HEAD, tags and what they point at.
import { promises as fsp } from 'node:fs';
import { annotationsOf, labelAnnotationsOf, type Annotations } from '../annotations.js';
import { type CommitState, IMAGE_FILE, METADATA_FILE } from '../commits.js';
import { StratumError } from '../error.js';
import { parseRef } from '../names.js';
import { resolveRef } from '../resolve.js';
import type { Store } from '../store.js';
import { MountState } from '../mount-state.js';
import { recoverHead } from '../head/index.js';
import { listTags, type TagEntry } from './list.js';

export interface MountInfo {
  label: string;
  ref: string;
  mountpoint: string;
  pid: number;
  mode: string;
  /** Notes of the server (why this mode, what is not checked). */
  notes?: string[];
  /** The server is gone: the mount is dead and `stratum mount` again recovers it. */
  stale: boolean;
  log?: string;
}

export interface StoreStatus {
  store: string;
  mounts: MountInfo[];
  labels: number;
  commits: number;
  objects: number;
  objectBytes: number;
  /** Refs that name a commit the store lacks or has only in part (each a line for the user). */
  problems: string[];
}

export interface LabelStatus {
  label: string;
  head?: { base: string; baseTime: string; xattrNamespace: string; upperEntries: number; lastCommit?: string; annotations: Annotations };
  tags: TagEntry[];
  /** The label's own annotations (`stratum annotate <label> key=value`). */
  annotations: Annotations;
  mounts: MountInfo[];
  /** When a tag was asked for: the commit it names. */
  commit?: { ref: string; id: string; timestamp: string; files: number; bytes: number; parent?: string; annotations: Annotations };
  /** Refs of the label that name a commit the store lacks or has only in part. */
  problems: string[];
}

export async function storeStatus(store: Store): Promise<StoreStatus> {
  let objects = 0;
  let objectBytes = 0;
  for await (const digest of store.objects.list()) {
    objects++;
    objectBytes += (await fsp.lstat(store.objects.path(digest))).size;
  }
  const labels = await store.tags.labels();
  const problems: string[] = [];
  for (const label of labels) problems.push(...(await refProblems(store, label)));
  return { store: store.root, mounts: await mountsOf(store), labels: labels.length, commits: (await store.commits.list()).length, objects, objectBytes, problems };
}

export async function labelStatus(store: Store, what: string): Promise<LabelStatus> {
  const ref = parseRef(what);
  const status: LabelStatus = { label: ref.label, tags: await listTags(store, ref.label), annotations: await labelAnnotationsOf(store, ref.label), mounts: await mountsOf(store, ref.label), problems: [] };
  // a commit killed half way is finished or undone first, so HEAD is reported as it really is
  await store.lock.with('exclusive', () => recoverHead(store, ref.label));
  status.problems = await refProblems(store, ref.label);
  const head = await store.heads.read(ref.label);
  if (head) {
    const meta = await store.commits.metadata(head.base).catch(() => undefined);
    status.head = { base: head.base, baseTime: meta?.timestamp ?? '', xattrNamespace: head.xattrNamespace, upperEntries: await store.heads.upperEntries(ref.label), annotations: await annotationsOf(store, head.base) };
    if (head.lastCommit) status.head.lastCommit = head.lastCommit;
  }
  if (ref.target.kind !== 'head') {
    const { id } = await resolveRef(store, ref);
    const meta = await store.commits.metadata(id);
    status.commit = { ref: what, id, timestamp: meta.timestamp, files: meta.files.count, bytes: meta.files.totalSize, annotations: await annotationsOf(store, id) };
    if (meta.parentCommit) status.commit.parent = meta.parentCommit;
  }
  return status;
}

/** HEAD and tags of a label that name a missing or partial commit, as lines for the user. */
async function refProblems(store: Store, label: string): Promise<string[]> {
  const out: string[] = [];
  const head = await store.heads.read(label);
  if (head) {
    const state = await store.commits.state(head.base);
    if (state !== 'whole') out.push(`HEAD of ${label} is on commit ${head.base}, which ${commitStateText(state)}`);
  }
  for (const tag of await store.tags.tags(label)) {
    let id: string;
    try {
      id = (await store.tags.resolve(label, tag)).id;
    } catch (err) {
      if (!(err instanceof StratumError)) throw err;
      out.push(err.message);
      continue;
    }
    const state = await store.commits.state(id);
    if (state !== 'whole') out.push(`tag ${label}:${tag} names commit ${id}, which ${commitStateText(state)}`);
  }
  return out;
}

function commitStateText(state: CommitState): string {
  if (state === 'no-metadata') return `has no ${METADATA_FILE} (\`stratum verify --repair\` rebuilds it)`;
  if (state === 'no-image') return `has no ${IMAGE_FILE}`;
  return 'is not in the store';
}

/** The state file's entries for this store (and label), live or stale. */
async function mountsOf(store: Store, label?: string): Promise<MountInfo[]> {
  const all = await new MountState().list();
  return all
    .filter((e) => e.store === store.root && (label === undefined || e.label === label))
    .map((e) => ({ label: e.label, ref: e.ref, mountpoint: e.mountpoint, pid: e.pid, mode: e.mode, stale: e.stale, ...(e.log ? { log: e.log } : {}), ...(e.notes?.length ? { notes: e.notes } : {}) }));
}
