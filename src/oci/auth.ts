// Registry credentials and the WWW-Authenticate flow. Credentials are read from the files podman
// and docker write: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json
// (the first that names the registry wins; credential helpers are not run).
//
// Public surface: Credentials, findCredentials, parseChallenge, Challenge.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface Credentials {
  username: string;
  password: string;
}

export function authFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) files.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  files.push(join(env.HOME ?? homedir(), '.docker', 'config.json'));
  return files;
}

/** The credentials stored for `host` (host:port), if any file has them. */
export function findCredentials(host: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  for (const file of authFiles(env)) {
    let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
    try {
      doc = JSON.parse(readFileSync(file, 'utf8')) as typeof doc;
    } catch {
      continue;
    }
    for (const [key, entry] of Object.entries(doc.auths ?? {})) {
      if (hostOf(key) !== host) continue;
      if (entry.username && entry.password) return { username: entry.username, password: entry.password };
      if (entry.auth) {
        const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
        const colon = plain.indexOf(':');
        if (colon > 0) return { username: plain.slice(0, colon), password: plain.slice(colon + 1) };
      }
    }
  }
  return undefined;
}

/** docker writes keys like https://index.docker.io/v1/; podman writes host[:port][/path]. */
function hostOf(key: string): string {
  return key.replace(/^https?:\/\//, '').split('/')[0]!;
}

export interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

/** `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`. */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  return { scheme, params };
}
