import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { findCredentials, parseChallenge } from '../../src/oci/auth.js';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { parseRemote, RegistryClient } from '../../src/oci/registry.js';
import { StratumError } from '../../src/store/error.js';
import { withTempDir } from '../helpers/dirs.js';

const auth = (user: string, pass: string) => ({ auth: Buffer.from(`${user}:${pass}`).toString('base64') });

test('credentials: $REGISTRY_AUTH_FILE, then $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json', () =>
  withTempDir(async (dir) => {
    mkdirSync(join(dir, 'run/containers'), { recursive: true });
    mkdirSync(join(dir, 'home/.docker'), { recursive: true });
    writeFileSync(join(dir, 'explicit.json'), JSON.stringify({ auths: { 'a.example:5000': auth('explicit', 'p1') } }));
    writeFileSync(join(dir, 'run/containers/auth.json'), JSON.stringify({ auths: { 'a.example:5000': auth('podman', 'p2'), 'b.example': auth('podman-b', 'p3') } }));
    writeFileSync(join(dir, 'home/.docker/config.json'), JSON.stringify({ auths: { 'https://c.example/v1/': auth('docker', 'p:4') } }));
    const env = { REGISTRY_AUTH_FILE: join(dir, 'explicit.json'), XDG_RUNTIME_DIR: join(dir, 'run'), HOME: join(dir, 'home') };
    assert.equal(findCredentials('a.example:5000', env), { username: 'explicit', password: 'p1' });
    assert.equal(findCredentials('b.example', env), { username: 'podman-b', password: 'p3' });
    assert.equal(findCredentials('c.example', env), { username: 'docker', password: 'p:4' });
    assert.is(findCredentials('d.example', env), undefined);
    assert.equal(findCredentials('a.example:5000', { ...env, REGISTRY_AUTH_FILE: join(dir, 'missing.json') }), { username: 'podman', password: 'p2' });
  }));

test('WWW-Authenticate challenges are parsed, quoted commas and all', () => {
  assert.equal(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push' },
  });
  assert.equal(parseChallenge('Basic realm="basic-realm"'), { scheme: 'basic', params: { realm: 'basic-realm' } });
  assert.is(parseChallenge('Negotiate abc'), undefined);
  assert.is(parseChallenge(null), undefined);
});

test('registry references: host required, lowercase repo paths, tag optional', () => {
  assert.equal(parseRemote('127.0.0.1:5000/team/app:v1'), { host: '127.0.0.1:5000', repo: 'team/app', tag: 'v1' });
  assert.equal(parseRemote('ghcr.io/me/app'), { host: 'ghcr.io', repo: 'me/app' });
  for (const bad of ['app:v1', '/app', 'host/App', 'host/a//b', 'host/app:bad tag', 'host/../x']) {
    try {
      parseRemote(bad);
      assert.unreachable(bad);
    } catch (err) {
      assert.instance(err, StratumError);
      assert.is((err as StratumError).code, 'USAGE', bad);
    }
  }
});

/** A one-route HTTP server on 127.0.0.1 for the duration of fn. */
async function withServer(answer: (req: IncomingMessage, res: ServerResponse) => void, fn: (host: string) => Promise<void>): Promise<void> {
  const server = createServer(answer);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const address = server.address() as { port: number };
    await fn(`127.0.0.1:${address.port}`);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

async function failure(promise: Promise<unknown>): Promise<StratumError> {
  try {
    await promise;
  } catch (err) {
    assert.instance(err, StratumError, String(err));
    return err as StratumError;
  }
  return assert.unreachable('expected a refusal') as never;
}

test('a token realm that is no URL, or plain http from an https registry, is one PERMISSION line; no credentials are sent', async () => {
  let tokenRequests = 0;
  await withServer((req, res) => {
    if (req.url?.startsWith('/token')) tokenRequests++;
    res.writeHead(401, { 'www-authenticate': 'Bearer realm="not a url",service="x"' }).end();
  }, async (host) => {
    const err = await failure(new RegistryClient(host, { plainHttp: true, credentials: { username: 'u', password: 'p' } }).hasBlob('a/b', `sha256:${'0'.repeat(64)}`));
    assert.is(err.code, 'PERMISSION');
    assert.match(err.message, /unusable token realm "not a url"/);
  });
  assert.is(tokenRequests, 0);
});

test('https to a registry that speaks plain HTTP says to add --plain-http', () =>
  withServer((_req, res) => res.writeHead(200).end(), async (host) => {
    const err = await failure(new RegistryClient(host, { plainHttp: false }).hasBlob('a/b', `sha256:${'0'.repeat(64)}`));
    assert.match(err.message, /cannot reach registry .*add --plain-http\)$/);
  }));

test.run();
