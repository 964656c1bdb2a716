// What a key may be (docs/session.md "Keys"). A key is a path of segments joined by '/'; every
// segment is 1-255 bytes of [a-zA-Z0-9_-], so a segment is always a portable file name (no '.',
// '..', separators, NUL, spaces or characters a sync service or another OS would rewrite), and a
// key always maps to a path inside the session's store/ directory.
//
// Public surface: checkKey, isSegment, joinKey, MAX_KEY_BYTES, MAX_SEGMENT_BYTES, MAX_SEGMENTS.
import { SessionError } from './error.js';

export const MAX_SEGMENT_BYTES = 255;
export const MAX_KEY_BYTES = 1024;
export const MAX_SEGMENTS = 32;
const SEGMENT = /^[a-zA-Z0-9_-]{1,255}$/;

export function isSegment(s: string): boolean {
  return SEGMENT.test(s);
}

/** The key's segments, or BAD_KEY naming what is wrong. `allowEmpty` admits '' (the root map). */
export function checkKey(key: unknown, options: { allowEmpty?: boolean } = {}): string[] {
  if (typeof key !== 'string') throw new SessionError('BAD_KEY', `a key must be a string, not ${typeof key}`);
  if (key === '' && options.allowEmpty) return [];
  const shown = JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}…` : key);
  if (key === '') throw new SessionError('BAD_KEY', 'a key cannot be empty');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new SessionError('BAD_KEY', `key ${shown} is longer than ${MAX_KEY_BYTES} bytes`);
  const segments = key.split('/');
  if (segments.length > MAX_SEGMENTS) throw new SessionError('BAD_KEY', `key ${shown} has more than ${MAX_SEGMENTS} segments`);
  for (const segment of segments) {
    if (segment === '') throw new SessionError('BAD_KEY', `key ${shown} has an empty segment (leading, trailing or doubled '/')`);
    if (segment.length > MAX_SEGMENT_BYTES) throw new SessionError('BAD_KEY', `key ${shown} has a segment longer than ${MAX_SEGMENT_BYTES} bytes`);
    if (!SEGMENT.test(segment)) throw new SessionError('BAD_KEY', `key ${shown}: segments may only hold letters, digits, '_' and '-'`);
  }
  return segments;
}

export function joinKey(...parts: string[]): string {
  return parts.filter((p) => p !== '').join('/');
}
