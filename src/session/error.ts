// The session library's one error type: a stable code for programs, a one-line message for people.
// The library stands alone (Stratum's store imports it, never the other way round), so it has its
// own error class; Stratum maps these codes onto its own (src/store/annotations.ts, bundles).
//
// Public surface: SessionError, SessionErrorCode.

export type SessionErrorCode =
  | 'BAD_KEY' // a key is empty, too long, or has a character outside [a-zA-Z0-9_-] in a segment
  | 'BAD_VALUE' // a value to store is not one of the four kinds, or is malformed (bad hash, bad type)
  | 'NOT_A_SESSION' // the directory is not a session (no info file, or its name lacks ".session")
  | 'SESSION_VERSION' // the info file names a session format version we do not know
  | 'KIND_CONFLICT' // a key is a Map where a single value was expected, or the other way round
  | 'CORRUPT_VALUE' // a stored value file does not parse
  | 'CORRUPT_OBJECT' // an object's bytes are truncated or do not match its name
  | 'CORRUPT_FRAME' // a framed object is truncated, oversized or mislabelled
  | 'IO'; // the filesystem underneath failed

export class SessionError extends Error {
  readonly code: SessionErrorCode;

  constructor(code: SessionErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SessionError';
    this.code = code;
  }
}
