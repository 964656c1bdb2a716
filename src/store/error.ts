// The one error type of Stratum: a stable code for programs, a one-line message for people.

/** Stable error codes; the CLI maps each to an exit status (see `exitStatus`). */
export type ErrorCode =
  | 'USAGE' // the command line is wrong
  | 'BAD_NAME' // a label, tag or reference is not well formed
  | 'BAD_PATH' // a path from outside is unsafe (.., absolute, NUL, escapes a root)
  | 'AMBIGUOUS_REF' // an id prefix matches several commits
  | 'NOT_FOUND' // a label, tag, commit or object does not exist
  | 'TAG_EXISTS' // a tag would be overwritten
  | 'REF_CYCLE' // an alias chain loops back on itself
  | 'REF_TOO_DEEP' // an alias chain is longer than we follow
  | 'DANGLING_REF' // a ref names a commit that is not in the store
  | 'STORE_VERSION' // the store was written by an incompatible major version
  | 'CORRUPT_STORE' // the store's own files (info, refs) are unreadable
  | 'CORRUPT_OBJECT' // an object's bytes do not match its name
  | 'CORRUPT_FRAME' // a framed (bundle) object is truncated, oversized or mislabelled
  | 'CORRUPT_IMAGE' // a commit image is malformed
  | 'SOURCE_CHANGED' // a file kept changing while it was being imported
  | 'NO_SPACE' // the store's filesystem is full
  | 'BUSY' // a lock is held or a mount is in the way
  | 'PERMISSION' // the caller lacks a privilege the operation needs
  | 'IO'; // any other failure of the system underneath

const USAGE_CODES: ReadonlySet<ErrorCode> = new Set(['USAGE', 'BAD_NAME', 'BAD_PATH', 'AMBIGUOUS_REF']);

export class StratumError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StratumError';
    this.code = code;
  }
}

/** Exit status for the CLI: 2 for mistakes in what the user typed, 1 for operations that failed. */
export function exitStatus(err: StratumError): 1 | 2 {
  return USAGE_CODES.has(err.code) ? 2 : 1;
}

/** A Node system error (`err.code` like 'ENOENT'), as thrown by node:fs and by our native addon. */
export interface SystemError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

export function isSystemError(err: unknown, code?: string): err is SystemError {
  return err instanceof Error && typeof (err as SystemError).code === 'string' && (code === undefined || (err as SystemError).code === code);
}

/** The code a system error's errno stands for: full disks and quota, permissions, else IO. */
export function codeOfErrno(errno: string | undefined): 'NO_SPACE' | 'PERMISSION' | 'IO' {
  return errno === 'ENOSPC' || errno === 'EDQUOT' ? 'NO_SPACE' : errno === 'EACCES' || errno === 'EPERM' ? 'PERMISSION' : 'IO';
}

/**
 * Turns a system error into a StratumError that says what we were doing; full disks and quota
 * get their own code because the user's fix (free space) differs from other I/O failures.
 */
export function wrapSystemError(err: unknown, doing: string): StratumError {
  if (err instanceof StratumError) return err;
  if (isSystemError(err)) {
    const code = codeOfErrno(err.code);
    const what = code === 'NO_SPACE' ? "no space left on the store's filesystem" : code === 'PERMISSION' ? `permission denied (${err.code})` : `${err.code}${err.path ? ` on ${err.path}` : ''}`;
    return new StratumError(code, `${doing}: ${what}`, { cause: err });
  }
  return new StratumError('IO', `${doing}: ${String(err)}`, { cause: err });
}
