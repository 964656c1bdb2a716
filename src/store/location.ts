// Where the store lives when the user does not say: `--store`, then $STRATUM_STORE, then a
// system path for root and the XDG data dir for everyone else (like podman's storage).
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export interface LocationInput {
  flag?: string | undefined;
  env?: NodeJS.ProcessEnv;
  uid?: number;
}

export function resolveStorePath(input: LocationInput = {}): string {
  const env = input.env ?? process.env;
  const uid = input.uid ?? process.getuid?.() ?? 0;
  if (input.flag) return resolve(input.flag);
  if (env.STRATUM_STORE) return resolve(env.STRATUM_STORE);
  if (uid === 0) return '/var/lib/stratum';
  const dataHome = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return join(dataHome, 'stratum');
}
