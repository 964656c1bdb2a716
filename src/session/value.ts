// The four kinds of value and how a single (non-Map) value is written as a file: its first line
// says what it is, in the seed's ref format. Pure: no I/O.
//
//   <64 hex>\n            ObjRef: the sha256 of an object in objects/ (later lines: free)
//   refs/<key>\n          ValRef: the value stored under <key> (later lines: free)
//   data\n<bytes>         Data: the bytes after the first newline, verbatim
//
// Public surface: Value, PutValue, ObjRef, ValRef, Data, MapValue, encodeValue, decodeValue,
// checkPutValue, isHash.
import { SessionError } from './error.js';
import { checkKey } from './key.js';

export interface MapValue {
  kind: 'map';
  /** The map's direct entries (segments), sorted. */
  keys: string[];
}
export interface ObjRef {
  kind: 'objref';
  hash: string;
}
export interface ValRef {
  kind: 'valref';
  key: string;
}
export interface Data {
  kind: 'data';
  bytes: Uint8Array;
}
export type Value = MapValue | ObjRef | ValRef | Data;
/** What `put` takes: a Map is put empty (its entries are put under its key one by one). */
export type PutValue = { kind: 'map' } | ObjRef | ValRef | Data;

export function isHash(s: unknown): boolean {
  return typeof s === 'string' && /^[0-9a-f]{64}$/.test(s);
}

/** Throws BAD_VALUE unless `value` is a well-formed PutValue. */
export function checkPutValue(value: unknown): PutValue {
  const v = value as Partial<PutValue> | null;
  switch (v?.kind) {
    case 'map':
      return { kind: 'map' };
    case 'objref':
      if (!isHash((v as ObjRef).hash)) throw new SessionError('BAD_VALUE', `an ObjRef needs a sha256 (64 lowercase hex digits), not ${JSON.stringify((v as ObjRef).hash)}`);
      return v as ObjRef;
    case 'valref':
      checkKey((v as ValRef).key);
      return v as ValRef;
    case 'data':
      if (!((v as Data).bytes instanceof Uint8Array)) throw new SessionError('BAD_VALUE', 'a Data value needs bytes (a Uint8Array)');
      return v as Data;
    default:
      throw new SessionError('BAD_VALUE', `a value is a map, objref, valref or data, not ${JSON.stringify(v?.kind)}`);
  }
}

export function encodeValue(value: ObjRef | ValRef | Data): Buffer {
  switch (value.kind) {
    case 'objref':
      return Buffer.from(`${value.hash}\n`);
    case 'valref':
      return Buffer.from(`refs/${value.key}\n`);
    case 'data':
      return Buffer.concat([Buffer.from('data\n'), value.bytes]);
  }
}

export function decodeValue(file: Buffer, key: string): ObjRef | ValRef | Data {
  const end = file.indexOf(0x0a);
  const first = file.toString('latin1', 0, end < 0 ? file.length : end);
  if (isHash(first)) return { kind: 'objref', hash: first };
  if (first === 'data' && end >= 0) return { kind: 'data', bytes: file.subarray(end + 1) };
  if (first.startsWith('refs/')) {
    const target = first.slice('refs/'.length);
    try {
      checkKey(target);
    } catch {
      throw new SessionError('CORRUPT_VALUE', `the value of ${key} refers to a malformed key ${JSON.stringify(target.slice(0, 80))}`);
    }
    return { kind: 'valref', key: target };
  }
  throw new SessionError('CORRUPT_VALUE', `the value of ${key} does not start with a sha256, refs/<key> or data (found ${JSON.stringify(first.slice(0, 40))})`);
}
