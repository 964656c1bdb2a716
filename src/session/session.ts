// The Session interface (the seed's `Session` trait): a key-value store of typed values beside a
// content-addressed object store. Two implementations: FsSession (the on-disk layout) and
// MemorySession; anything else that passes test/session/suite.ts is a session too.
//
// Public surface: Session, SessionInfo, SessionObject, Resolution, ResolveOptions, resolveValue,
// DEFAULT_MAX_DEPTH, SESSION_FORMAT.
import type { Data, MapValue, ObjRef, PutValue, Value } from './value.js';

/** The session format version this library reads and writes (the info file's first line). */
export const SESSION_FORMAT = 1;
/** How many ValRefs `resolve` follows before it gives up. */
export const DEFAULT_MAX_DEPTH = 1000;

export interface SessionInfo {
  version: number;
  app: string;
  appVersion: string;
}

export interface SessionObject {
  hash: string;
  type: string;
  data: Buffer;
}

export interface ResolveOptions {
  maxDepth?: number;
}

/**
 * Where a chain of ValRefs ends. Never thrown: a broken chain is an answer, not an error.
 * `chain` lists the keys visited, starting with the one asked for.
 */
export type Resolution =
  | { status: 'ok'; key: string; value: MapValue | ObjRef | Data; chain: string[] }
  /** A key on the chain holds nothing (the first key itself, or a ValRef's target). */
  | { status: 'dangling'; missing: { kind: 'key'; key: string } | { kind: 'object'; hash: string }; chain: string[] }
  | { status: 'cycle'; chain: string[] }
  | { status: 'too-deep'; chain: string[] };

export interface Session {
  readonly info: SessionInfo;
  /** The value under key; a Map lists its direct entries. Undefined when nothing is there. */
  get(key: string): Promise<Value | undefined>;
  /** Stores a value; parents become Maps. A Map over a single value (or the reverse) is KIND_CONFLICT. */
  put(key: string, value: PutValue): Promise<void>;
  /** Removes a value or a whole Map; false when nothing was there. */
  delete(key: string): Promise<boolean>;
  /** Every non-Map key below `prefix` (a Map's key, '' for all), sorted. */
  list(prefix?: string): Promise<string[]>;
  /** Stores bytes as an object of `type`; returns its name, the sha256 of the bytes. */
  putObject(type: string, data: Uint8Array): Promise<string>;
  /** The object, checked against its name; undefined when absent; CORRUPT_OBJECT when damaged. */
  getObject(hash: string): Promise<SessionObject | undefined>;
  hasObject(hash: string): Promise<boolean>;
  /** Follows ValRefs from key to a Map, ObjRef or Data (an ObjRef's object must exist). */
  resolve(key: string, options?: ResolveOptions): Promise<Resolution>;
}

/** `resolve` for any session, built on get and hasObject: iterative, so chain length costs no stack. */
export async function resolveValue(session: Pick<Session, 'get' | 'hasObject'>, key: string, options: ResolveOptions = {}): Promise<Resolution> {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  const chain: string[] = [];
  const seen = new Set<string>();
  let current = key;
  for (;;) {
    if (seen.has(current)) return { status: 'cycle', chain: [...chain, current] };
    seen.add(current);
    chain.push(current);
    const value = await session.get(current);
    if (value === undefined) return { status: 'dangling', missing: { kind: 'key', key: current }, chain };
    if (value.kind !== 'valref') {
      if (value.kind === 'objref' && !(await session.hasObject(value.hash))) return { status: 'dangling', missing: { kind: 'object', hash: value.hash }, chain };
      return { status: 'ok', key: current, value, chain };
    }
    if (chain.length > maxDepth) return { status: 'too-deep', chain };
    current = value.key;
  }
}
