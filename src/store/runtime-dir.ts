// Where a user's mount state, mount logs and default mountpoints live: one rule for every command.
// Root: /run/stratum. Others: $XDG_RUNTIME_DIR/stratum when the login set it (pam_systemd), else
// /tmp/stratum-<uid>, a private dir that must be ours, a real dir and mode 0700 (tmux and
// ssh-agent do the same), since anyone could have made it first. Reading commands never create it.
//
// Public surface: runtimeDir, ensureRuntimeDir, existingRuntimeDir.
import { lstatSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { StratumError, isSystemError } from './error.js';

/** The runtime dir for this user and environment (not created). */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? 0): string {
  if (uid === 0) return '/run/stratum';
  if (env.XDG_RUNTIME_DIR) return join(resolve(env.XDG_RUNTIME_DIR), 'stratum');
  return `/tmp/stratum-${uid}`;
}

/** Creates the runtime dir if needed (mode 0700) and checks it is private to us; returns it. */
export function ensureRuntimeDir(dir = runtimeDir(), uid = process.getuid?.() ?? 0): string {
  try {
    mkdirSync(dir, { recursive: uid === 0 || dir !== `/tmp/stratum-${uid}`, mode: 0o700 });
  } catch (err) {
    if (isSystemError(err, 'EEXIST')) { /* checked below */ } else if (isSystemError(err, 'EACCES') || isSystemError(err, 'EPERM')) {
      throw new StratumError('PERMISSION', `cannot create the runtime dir ${dir} (${err.code}); set XDG_RUNTIME_DIR to a directory of yours`);
    } else throw err;
  }
  checkPrivate(dir, uid);
  return dir;
}

/** The runtime dir if it exists (checked as ensureRuntimeDir does), else undefined: for readers. */
export function existingRuntimeDir(dir = runtimeDir(), uid = process.getuid?.() ?? 0): string | undefined {
  try {
    lstatSync(dir);
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return undefined;
    throw err;
  }
  checkPrivate(dir, uid);
  return dir;
}

/** A dir someone else made (or a symlink to one) could feed us mount state or catch our logs. */
function checkPrivate(dir: string, uid: number): void {
  const st = lstatSync(dir);
  const fix = `remove it, or set XDG_RUNTIME_DIR to a private directory of yours`;
  if (st.isSymbolicLink()) throw new StratumError('PERMISSION', `the runtime dir ${dir} is a symlink, not a directory of yours; ${fix}`);
  if (!st.isDirectory()) throw new StratumError('PERMISSION', `the runtime dir ${dir} is not a directory; ${fix}`);
  if (st.uid !== uid) throw new StratumError('PERMISSION', `the runtime dir ${dir} belongs to uid ${st.uid}, not to you (uid ${uid}); ${fix}`);
  if ((st.mode & 0o077) !== 0 && uid !== 0) throw new StratumError('PERMISSION', `the runtime dir ${dir} is open to others (mode ${(st.mode & 0o777).toString(8)}); chmod 700 it, or ${fix}`);
}
