// `stratum/session`: typed key-value sessions over a content-addressed object store, the "tempo
// sessions" format (docs/session.md). The package entry point; everything a user needs is here.
export { openSession, FsSession, type OpenSessionOptions } from './fs-session.js';
export { openMemorySession, MemorySession } from './memory-session.js';
export { DEFAULT_MAX_DEPTH, SESSION_FORMAT, resolveValue, type Resolution, type ResolveOptions, type Session, type SessionInfo, type SessionObject } from './session.js';
export type { Data, MapValue, ObjRef, PutValue, ValRef, Value } from './value.js';
export { SessionError, type SessionErrorCode } from './error.js';
export { checkKey, MAX_KEY_BYTES, MAX_SEGMENT_BYTES, MAX_SEGMENTS } from './key.js';
export { decodeFrame, encodeFrame, sha256Hex, FRAME_TYPE_PATTERN, type Frame, type FrameDigest } from './frame.js';
