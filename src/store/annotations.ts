// Annotations: free key/value pairs a user attaches to a commit or a label (`stratum annotate`),
// kept in a session inside the store (<store>/annotations.session, docs/session.md):
//
//   commits/<commit id>/<key>   Data: the value, UTF-8     (a commit's annotations)
//   labels/<label>/<key>        Data: the value, UTF-8     (a label's annotations)
//
// Annotation keys may hold '.' (OCI-style `org.opencontainers.image.source`), which session keys may
// not, so each key and label is escaped into a session segment: every character other than
// [a-zA-Z0-9-] becomes _xx (its hex code). The session's objects are its own (annotations.session/
// objects), apart from the store's objects/, so gc never sees or removes them.
//
// Public surface: annotationsOf, annotationsOfEach, setAnnotations, labelAnnotationsOf, setLabelAnnotations,
// removeLabelAnnotations, pruneAnnotations, parseAnnotationChanges, parseAnnotations, checkAnnotationKey, Annotations, AnnotationChanges,
// ANNOTATIONS_SESSION.
import { join } from 'node:path';
import { openSession, SessionError, type FsSession, type Session } from '../session/index.js';
import { isSystemError, StratumError, wrapSystemError, type ErrorCode } from './error.js';
import { checkLabel } from './names.js';
import type { Store } from './store.js';

export const ANNOTATIONS_SESSION = 'annotations.session';
const KEY_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,78}[A-Za-z0-9])?$/;
const MAX_VALUE_BYTES = 64 * 1024;

export type Annotations = Record<string, string>;

export interface AnnotationChanges {
  set?: Annotations;
  remove?: string[];
}

/** A JSON object of string values whose keys and values pass the checks (a bundle's record). */
export function parseAnnotations(doc: unknown): Annotations {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new StratumError('USAGE', 'annotations must be a JSON object');
  const out: Annotations = {};
  for (const [key, value] of Object.entries(doc)) out[checkAnnotationKey(key)] = checkValue(key, value as string);
  return out;
}

export function checkAnnotationKey(key: string): string {
  if (!KEY_PATTERN.test(key)) {
    throw new StratumError('BAD_NAME', `bad annotation key ${JSON.stringify(key.slice(0, 90))}: 1-80 letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit`);
  }
  return key;
}

function checkValue(key: string, value: string): string {
  if (typeof value !== 'string' || Buffer.byteLength(value) > MAX_VALUE_BYTES || value.includes('\0')) {
    throw new StratumError('USAGE', `the value of annotation ${key} must be text without NUL bytes, at most ${MAX_VALUE_BYTES} bytes`);
  }
  return value;
}

/** `key=value` sets, `key-` removes (as kubectl annotate does); anything else is a usage error. */
export function parseAnnotationChanges(args: string[]): AnnotationChanges {
  const set: Annotations = {};
  const remove: string[] = [];
  for (const arg of args) {
    const eq = arg.indexOf('=');
    if (eq > 0) set[checkAnnotationKey(arg.slice(0, eq))] = checkValue(arg.slice(0, eq), arg.slice(eq + 1));
    else if (arg.endsWith('-') && eq < 0) remove.push(checkAnnotationKey(arg.slice(0, -1)));
    else throw new StratumError('USAGE', `annotation ${JSON.stringify(arg)} is neither key=value (set) nor key- (remove)`);
  }
  for (const key of remove) if (key in set) throw new StratumError('USAGE', `annotation ${key} is both set and removed`);
  return { set, remove };
}

function escape(name: string): string {
  return name.replace(/[^a-zA-Z0-9-]/g, (c) => `_${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function unescape(segment: string): string {
  return segment.replace(/_([0-9a-f]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

const SESSION_CODES: Partial<Record<string, ErrorCode>> = { BAD_KEY: 'BAD_NAME', BAD_VALUE: 'USAGE', SESSION_VERSION: 'STORE_VERSION' };

function asStratumError(err: unknown): unknown {
  if (!(err instanceof SessionError)) return err;
  if (err.code === 'IO' && isSystemError(err.cause)) return wrapSystemError(err.cause, `annotations: ${err.message.replace(/: [A-Z]+$/, '')}`);
  const code = SESSION_CODES[err.code] ?? (err.code === 'IO' ? 'IO' : 'CORRUPT_STORE');
  return new StratumError(code, `annotations: ${err.message}`, { cause: err });
}

async function withSession<T>(store: Store, create: boolean, fn: (session: Session) => Promise<T>): Promise<T | undefined> {
  let session: FsSession;
  try {
    session = await openSession(join(store.root, ANNOTATIONS_SESSION), { create, app: { name: 'stratum', version: '1' } });
  } catch (err) {
    if (!create && err instanceof SessionError && err.code === 'NOT_A_SESSION') return undefined; // nothing annotated yet
    throw asStratumError(err);
  }
  try {
    return await fn(session);
  } catch (err) {
    throw asStratumError(err);
  }
}

async function readIn(session: Session, prefix: string): Promise<Annotations> {
  const out: Annotations = {};
  for (const key of await session.list(prefix)) {
    const value = await session.get(key);
    if (value?.kind !== 'data') continue; // not ours: something else wrote there
    out[unescape(key.slice(prefix.length + 1))] = Buffer.from(value.bytes).toString('utf8');
  }
  return sortKeys(out);
}

async function read(store: Store, prefix: string): Promise<Annotations> {
  return (await withSession(store, false, (session) => readIn(session, prefix))) ?? {};
}

/** The annotations of several commits, the session opened once (for `log`). */
export async function annotationsOfEach(store: Store, commits: string[]): Promise<Map<string, Annotations>> {
  const found = await withSession(store, false, async (session) => {
    const out = new Map<string, Annotations>();
    for (const id of commits) out.set(id, await readIn(session, `commits/${checkCommitId(id)}`));
    return out;
  });
  return found ?? new Map(commits.map((id) => [id, {}]));
}

async function write(store: Store, prefix: string, changes: AnnotationChanges): Promise<Annotations> {
  for (const [key, value] of Object.entries(changes.set ?? {})) checkValue(checkAnnotationKey(key), value);
  for (const key of changes.remove ?? []) checkAnnotationKey(key);
  await withSession(store, true, async (session) => {
    // each annotation is its own file: two processes annotating different keys never collide
    for (const [key, value] of Object.entries(changes.set ?? {})) await session.put(`${prefix}/${escape(key)}`, { kind: 'data', bytes: Buffer.from(value) });
    for (const key of changes.remove ?? []) await session.delete(`${prefix}/${escape(key)}`);
  });
  return read(store, prefix);
}

function sortKeys(a: Annotations): Annotations {
  return Object.fromEntries(Object.entries(a).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
}

function checkCommitId(id: string): string {
  if (!/^[0-9a-f]{64}$/.test(id)) throw new StratumError('BAD_NAME', `${JSON.stringify(id.slice(0, 80))} is not a commit id`);
  return id;
}

/** The annotations of a commit (by full id); {} when it has none. */
export async function annotationsOf(store: Store, commit: string): Promise<Annotations> {
  return read(store, `commits/${checkCommitId(commit)}`);
}

/** Sets and removes annotations of a commit, which must be in the store; returns them all after. */
export async function setAnnotations(store: Store, commit: string, changes: AnnotationChanges, options: { lockHeld?: boolean } = {}): Promise<Annotations> {
  checkCommitId(commit);
  // under the store lock, so gc cannot remove the commit between this check and the write
  const locked = async () => {
    if (!(await store.commits.has(commit))) throw new StratumError('NOT_FOUND', `commit ${commit} is not in the store`);
    return write(store, `commits/${commit}`, changes);
  };
  return options.lockHeld ? locked() : store.lock.with('shared', locked);
}

export async function labelAnnotationsOf(store: Store, label: string): Promise<Annotations> {
  const key = labelKey(label);
  return key === undefined ? {} : read(store, key);
}

export async function setLabelAnnotations(store: Store, label: string, changes: AnnotationChanges): Promise<Annotations> {
  const key = labelKey(label);
  if (key === undefined) throw new StratumError('BAD_NAME', `label ${label} cannot be annotated: with its '.' and '_' escaped it is longer than 255 bytes`);
  return write(store, key, changes);
}

/** The session key of a label's annotations; undefined for a label too long once escaped (none can be set). */
function labelKey(label: string): string | undefined {
  const segment = escape(checkLabel(label));
  return segment.length <= 255 ? `labels/${segment}` : undefined;
}

/** Forgets a removed label's annotations, so a new label of that name starts with none. */
export async function removeLabelAnnotations(store: Store, label: string): Promise<void> {
  const key = labelKey(label);
  if (key !== undefined) await withSession(store, false, (session) => session.delete(key));
}

/** Drops the annotations of commits `keep` rejects (for gc, after it removed commits); returns how many commits. */
export async function pruneAnnotations(store: Store, keep: (commit: string) => boolean | Promise<boolean>): Promise<number> {
  const pruned = await withSession(store, false, async (session) => {
    const commits = await session.get('commits');
    let n = 0;
    for (const id of commits?.kind === 'map' ? commits.keys : []) {
      if (!(await keep(id)) && (await session.delete(`commits/${id}`))) n++;
    }
    return n;
  });
  return pruned ?? 0;
}
