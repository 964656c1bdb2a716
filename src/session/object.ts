// One session object as stored: a frame named by the sha256 of its bytes. Both implementations
// keep frames, so a damaged object is caught the same way in each. Pure: no I/O.
//
// Public surface: encodeObject, decodeObject, MAX_OBJECT_BYTES.
import { SessionError } from './error.js';
import { decodeFrame, encodeFrame, sha256Hex } from './frame.js';
import type { SessionObject } from './session.js';

/** The largest object a session reads back (it is held in memory whole). */
export const MAX_OBJECT_BYTES = 1 << 30;

export function encodeObject(type: string, data: Uint8Array): { hash: string; frame: Buffer } {
  const frame = encodeFrame(type, data, { digest: sha256Hex });
  return { hash: frame.toString('latin1', 0, 64), frame };
}

/** The object, checked: its frame decodes, and is named `hash`. Anything else is CORRUPT_OBJECT. */
export function decodeObject(hash: string, frame: Uint8Array, maxSize = MAX_OBJECT_BYTES): SessionObject {
  let decoded;
  try {
    decoded = decodeFrame(frame, { maxSize, digest: sha256Hex });
  } catch (err) {
    if (err instanceof SessionError) throw new SessionError('CORRUPT_OBJECT', `object ${hash} is damaged (${err.message}); it cannot be read`, { cause: err });
    throw err;
  }
  if (decoded.name !== hash) throw new SessionError('CORRUPT_OBJECT', `object ${hash} holds object ${decoded.name}`);
  return { hash, type: decoded.type, data: decoded.data };
}
