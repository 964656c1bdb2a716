// An in-process registry for the cases a real one will not produce: a 202 to a monolithic POST,
// Range ignored, mounts refused, token auth, and hostile replies (tampered blobs and manifests,
// endless bodies). It keeps blobs and manifests in memory and speaks just enough of the
// distribution spec for push and pull.
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { RegistryClient } from '../../src/oci/registry.js';
import { withTempDir } from '../helpers/dirs.js';

export interface FakeOptions {
  monolithic202?: boolean;
  ignoreRange?: boolean;
  refuseMount?: boolean;
  /** Basic credentials the token service wants; requests to /v2 then need its Bearer token. */
  token?: { username: string; password: string };
  /** A blob digest whose GET never ends. */
  endless?: string;
  /** A blob digest whose GET sends its headers and a few bytes, then nothing, never closing. */
  stall?: string;
  /** Serve the referrers API (distribution-spec 1.1) and answer a manifest PUT with a subject with OCI-Subject. */
  referrersApi?: boolean;
}

export class FakeRegistry {
  readonly blobs = new Map<string, Buffer>(); // "repo@digest" and "digest"
  readonly manifests = new Map<string, Buffer>(); // "repo:ref"
  readonly log: string[] = [];
  host = '';
  private server: Server | undefined;
  private readonly uploads = new Map<string, { repo: string; chunks: Buffer[] }>();
  private readonly tokenValue = randomUUID();

  constructor(public options: FakeOptions = {}) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      void this.handle(req, res).catch((err) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.host = `127.0.0.1:${(this.server!.address() as { port: number }).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  /** Replaces a blob's stored bytes (they then no longer match their digest). */
  tamper(digest: string, bytes: Buffer): void {
    for (const key of this.blobs.keys()) if (key.endsWith(digest)) this.blobs.set(key, bytes);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url!, `http://${this.host}`);
    const body = await readAll(req);
    this.log.push(`${req.method} ${url.pathname}${url.search}`);
    if (url.pathname === '/token') {
      const want = `Basic ${Buffer.from(`${this.options.token?.username}:${this.options.token?.password}`).toString('base64')}`;
      if (req.headers.authorization !== want) return send(res, 401, '{}');
      return send(res, 200, JSON.stringify({ token: this.tokenValue }), { 'content-type': 'application/json' });
    }
    if (this.options.token && req.headers.authorization !== `Bearer ${this.tokenValue}`) {
      const repo = /^\/v2\/(.+?)\/(blobs|manifests)\//.exec(url.pathname)?.[1] ?? 'x';
      return send(res, 401, '{"errors":[{"code":"UNAUTHORIZED"}]}', {
        'www-authenticate': `Bearer realm="http://${this.host}/token",service="fake",scope="repository:${repo}:pull,push"`,
      });
    }
    if (url.pathname === '/v2/') return send(res, 200, '{}');
    let m = /^\/v2\/(.+)\/blobs\/uploads\/([^/]*)$/.exec(url.pathname);
    if (m) {
      const repo = m[1]!;
      if (req.method === 'POST') {
        const mount = url.searchParams.get('mount');
        if (mount && !this.options.refuseMount && this.blobs.has(`${url.searchParams.get('from')}@${mount}`)) {
          this.blobs.set(`${repo}@${mount}`, this.blobs.get(mount)!);
          return send(res, 201, '');
        }
        const digest = url.searchParams.get('digest');
        if (digest && !this.options.monolithic202) return this.putBlob(res, repo, digest, body);
        const id = randomUUID();
        this.uploads.set(id, { repo, chunks: [] });
        return send(res, 202, '', { location: `/v2/${repo}/blobs/uploads/${id}?_state=x` });
      }
      const upload = this.uploads.get(m[2]!);
      if (!upload) return send(res, 404, '');
      if (req.method === 'PATCH') {
        upload.chunks.push(body);
        return send(res, 202, '', { location: url.pathname });
      }
      if (req.method === 'PUT') {
        this.uploads.delete(m[2]!);
        return this.putBlob(res, repo, url.searchParams.get('digest')!, Buffer.concat([...upload.chunks, body]));
      }
      if (req.method === 'DELETE') return send(res, 204, '');
    }
    m = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
    if (m) {
      const blob = this.blobs.get(`${m[1]}@${m[2]}`);
      if (!blob) return send(res, 404, '{"errors":[{"code":"BLOB_UNKNOWN"}]}');
      if (req.method === 'HEAD') return send(res, 200, '', { 'content-length': String(blob.length) }, true);
      if (this.options.endless === m[2]) return endless(res);
      if (this.options.stall === m[2]) {
        res.writeHead(200, { 'content-length': String(blob.length) });
        res.write(blob.subarray(0, 10));
        return;
      }
      const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (range && !this.options.ignoreRange) {
        const start = Number(range[1]);
        const end = Math.min(Number(range[2]), blob.length - 1);
        return send(res, 206, blob.subarray(start, end + 1), { 'content-range': `bytes ${start}-${end}/${blob.length}` });
      }
      return send(res, 200, blob);
    }
    m = /^\/v2\/(.+)\/referrers\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
    if (m && this.options.referrersApi) return send(res, 200, this.referrers(m[1]!, m[2]!), { 'content-type': 'application/vnd.oci.image.index.v1+json' });
    m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const key = `${m[1]}:${m[2]}`;
      if (req.method === 'PUT') {
        const digest = sha256(body);
        this.manifests.set(key, body);
        this.manifests.set(`${m[1]}:${digest}`, body);
        const subject = (JSON.parse(body.toString()) as { subject?: { digest?: string } }).subject?.digest;
        return send(res, 201, '', { 'docker-content-digest': digest, ...(subject && this.options.referrersApi ? { 'oci-subject': subject } : {}) });
      }
      const manifest = this.manifests.get(key);
      if (!manifest) return send(res, 404, '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
      const headers = { 'docker-content-digest': sha256(manifest), 'content-type': 'application/vnd.oci.image.manifest.v1+json' };
      if (req.method === 'HEAD') return send(res, 200, '', { ...headers, 'content-length': String(manifest.length) }, true);
      return send(res, 200, manifest, headers);
    }
    send(res, 404, '');
  }

  /** Every manifest of `repo` whose subject is `digest`, as the referrers API lists them (newest first, to show order is not relied on). */
  private referrers(repo: string, digest: string): string {
    const manifests = [];
    for (const [key, body] of this.manifests) {
      if (!key.startsWith(`${repo}:sha256:`)) continue;
      const doc = JSON.parse(body.toString()) as { mediaType?: string; artifactType?: string; subject?: { digest?: string }; annotations?: Record<string, string> };
      if (doc.subject?.digest !== digest) continue;
      manifests.unshift({ mediaType: doc.mediaType, digest: sha256(body), size: body.length, artifactType: doc.artifactType, annotations: doc.annotations });
    }
    return JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests });
  }

  private putBlob(res: ServerResponse, repo: string, digest: string, bytes: Buffer): void {
    if (sha256(bytes) !== digest) return send(res, 400, '{"errors":[{"code":"DIGEST_INVALID"}]}');
    this.blobs.set(digest, bytes);
    this.blobs.set(`${repo}@${digest}`, bytes);
    send(res, 201, '', { location: `/v2/${repo}/blobs/${digest}` });
  }
}

export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}, head = false): void {
  res.writeHead(status, head ? headers : { 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(head ? undefined : body);
}

function endless(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const chunk = Buffer.alloc(1 << 16, 7);
  const pump = (): void => {
    while (!res.destroyed && res.write(chunk));
    if (!res.destroyed) res.once('drain', pump);
  };
  res.on('close', () => res.removeAllListeners('drain'));
  pump();
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A fake registry and a temp dir for fn; the registry stops on every path. */
export async function withFake(options: FakeOptions, fn: (fake: FakeRegistry, dir: string) => Promise<void>): Promise<void> {
  const fake = await new FakeRegistry(options).start();
  try {
    await withTempDir((dir) => fn(fake, dir));
  } finally {
    await fake.stop();
  }
}

/** A client of the fake registry (plain HTTP). */
export const fakeClient = (fake: FakeRegistry): RegistryClient => new RegistryClient(fake.host, { plainHttp: true });
