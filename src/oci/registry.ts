// A client for the OCI distribution spec on Node's own fetch: blobs (HEAD, GET, Range GET,
// monolithic and streamed uploads, cross-repository mount) and manifests (GET, HEAD, PUT), with
// Basic and Bearer-token auth answered from the registry's WWW-Authenticate challenge. Every body
// a registry sends is bounded by the size we expect, so an endless or oversized body is cut off
// and refused; every blob is checked against its sha256 digest.
//
// Public surface: RegistryClient, RegistryOptions, BlobRef, Body, parseRemote, Remote.
import { createHash } from 'node:crypto';
import { StratumError } from '../store/error.js';
import { findCredentials, parseChallenge, type Credentials } from './auth.js';
import { MANIFEST_TYPE, MAX_MANIFEST, sha256Digest } from './manifest.js';

export interface RegistryOptions {
  plainHttp?: boolean;
  tlsVerify?: boolean;
  credentials?: Credentials;
}

/** A blob as the manifest names it. */
export interface BlobRef {
  digest: string;
  size: number;
}

/** An upload body: bytes, or a function making a fresh stream each time (a retry needs a new one). */
export type Body = Buffer | (() => AsyncIterable<Uint8Array>);

export interface Remote {
  host: string;
  repo: string;
  tag?: string;
}

/** `host[:port]/path/name[:tag]`; the host is required (no default registry: nothing is pushed by accident). */
export function parseRemote(text: string): Remote {
  const slash = text.indexOf('/');
  const usage = new StratumError('USAGE', `${JSON.stringify(text)} is not <registry>/<repo>[:<tag>] (e.g. 127.0.0.1:5000/team/myapp:v1)`);
  if (slash <= 0) throw usage;
  const host = text.slice(0, slash);
  let rest = text.slice(slash + 1);
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(tag)) throw usage;
  }
  if (!/^[A-Za-z0-9.-]+(:[0-9]+)?$/.test(host) && !/^\[[0-9a-fA-F:]+\](:[0-9]+)?$/.test(host)) throw usage;
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(rest)) {
    throw new StratumError('USAGE', `${JSON.stringify(rest)} is not a registry repository name (lowercase letters, digits, . _ - and /)`);
  }
  return { host, repo: rest, ...(tag !== undefined ? { tag } : {}) };
}

const SMALL_UPLOAD = 8 << 20;
/** A registry that sends or takes nothing for this long is given up on (a stalled body, a dead peer). */
const idleMs = (): number => Number(process.env.STRATUM_REGISTRY_IDLE_MS ?? 60_000);

/** Aborts a request when no bytes moved for idleMs(); every chunk read or sent pushes it back. */
class Watchdog {
  readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  fired: StratumError | undefined;

  constructor(private readonly host: string) {
    this.touch();
  }

  touch(): void {
    clearTimeout(this.timer);
    const ms = idleMs();
    this.timer = setTimeout(() => {
      this.fired = new StratumError('IO', `registry ${this.host} sent or took nothing for ${ms / 1000} s; giving up`);
      this.controller.abort(this.fired);
    }, ms);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

const watchdogs = new WeakMap<Response, Watchdog>();

/** Reads a response body chunk by chunk, feeding its watchdog; a fired watchdog becomes its error. */
async function* chunksOf(res: Response): AsyncGenerator<Uint8Array> {
  const dog = watchdogs.get(res);
  const reader = res.body!.getReader();
  try {
    for (;;) {
      let step: { done: boolean; value?: Uint8Array };
      try {
        step = await reader.read();
      } catch (err) {
        throw dog?.fired ?? err;
      }
      if (step.done) break;
      dog?.touch();
      yield step.value!;
    }
  } finally {
    dog?.stop();
    await reader.cancel().catch(() => undefined);
  }
}

export class RegistryClient {
  private readonly base: string;
  private readonly credentials: Credentials | undefined;
  private authorization: string | undefined;
  private readonly scopes = new Set<string>();
  /** Set once the registry answered a Range request with the whole blob. */
  rangeIgnored = false;
  /** Set once the registry answered a monolithic POST with 202: later uploads skip straight to POST + PUT. */
  monolithicRefused = false;
  /** Bytes sent in blob uploads, for progress and for tests. */
  uploaded = 0;
  /** Bytes received in blob bodies. */
  downloaded = 0;

  constructor(
    readonly host: string,
    options: RegistryOptions = {},
  ) {
    this.base = `${options.plainHttp ? 'http' : 'https'}://${host}/v2/`;
    this.credentials = options.credentials ?? findCredentials(host);
    // Node's fetch has no per-request switch; this is the process-wide one (podman's --tls-verify=false).
    if (options.tlsVerify === false) process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.request('HEAD', `${repo}/blobs/${digest}`, { ok: [200, 404] });
    return res.status === 200;
  }

  /**
   * Cross-repository mount. When the registry would rather have the bytes it answers 202 with an
   * upload session: with `keepSession` its location is returned for `uploadBlob`, else it is
   * cancelled.
   */
  async mountBlob(repo: string, digest: string, from: string, keepSession = false): Promise<{ mounted: boolean; location?: string }> {
    const res = await this.request('POST', `${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`, { ok: [201, 202, 404, 405] });
    await res.body?.cancel();
    if (res.status === 201) return { mounted: true };
    if (res.status === 202) {
      if (keepSession && res.headers.get('location')) return { mounted: false, location: this.location(res) };
      await this.cancelUpload(res);
    }
    return { mounted: false };
  }

  /**
   * Uploads a blob: into `session` when a refused mount left one; small bodies in one POST (the
   * registry may answer 202 and want a PUT); others POST then PUT.
   */
  async uploadBlob(repo: string, blob: BlobRef, body: Body, session?: string): Promise<void> {
    let location: string;
    if (session) location = session;
    else if (Buffer.isBuffer(body) && body.length <= SMALL_UPLOAD && !this.monolithicRefused) {
      const res = await this.request('POST', `${repo}/blobs/uploads/?digest=${encodeURIComponent(blob.digest)}`, { ok: [201, 202], body, length: blob.size });
      await res.body?.cancel();
      if (res.status === 201) {
        this.uploaded += blob.size;
        return;
      }
      // the registry dropped the bytes (distribution 2.x does): send them once, by PUT, from now on
      this.monolithicRefused = true;
      location = this.location(res);
    } else {
      const res = await this.request('POST', `${repo}/blobs/uploads/`, { ok: [202] });
      await res.body?.cancel();
      location = this.location(res);
    }
    const sep = location.includes('?') ? '&' : '?';
    const put = await this.request('PUT', `${location}${sep}digest=${encodeURIComponent(blob.digest)}`, { ok: [201, 204], body, length: blob.size, absolute: true });
    await put.body?.cancel();
    this.uploaded += blob.size;
  }

  /** The digest of the manifest at `ref`, or undefined when there is none. */
  async manifestDigest(repo: string, ref: string): Promise<string | undefined> {
    return (await this.manifestHead(repo, ref))?.digest;
  }

  /** The digest and size of the manifest at `ref` (HEAD), or undefined when there is none. */
  async manifestHead(repo: string, ref: string): Promise<BlobRef | undefined> {
    const res = await this.request('HEAD', `${repo}/manifests/${ref}`, { ok: [200, 404], headers: { accept: MANIFEST_TYPE } });
    const digest = res.headers.get('docker-content-digest');
    const size = Number(res.headers.get('content-length') ?? NaN);
    if (res.status !== 200 || !digest) return undefined;
    return { digest, size: Number.isSafeInteger(size) ? size : -1 };
  }

  /** PUTs a manifest (or, with `mediaType`, an index); true when the registry says it indexed its subject (OCI-Subject). */
  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType = MANIFEST_TYPE): Promise<boolean> {
    const res = await this.request('PUT', `${repo}/manifests/${ref}`, { ok: [200, 201], body: bytes, length: bytes.length, headers: { 'content-type': mediaType } });
    await res.body?.cancel();
    return res.headers.has('oci-subject');
  }

  async getManifest(repo: string, ref: string, mediaType = MANIFEST_TYPE): Promise<Buffer> {
    const res = await this.request('GET', `${repo}/manifests/${ref}`, { ok: [200], headers: { accept: mediaType }, notFound: `no manifest ${this.host}/${repo}:${ref}` });
    const bytes = await readBounded(res, MAX_MANIFEST, `the manifest of ${repo}:${ref}`);
    if (ref.startsWith('sha256:')) checkDigest(bytes, ref, 'manifest');
    return bytes;
  }

  /** A manifest or index at `ref`, or undefined on 404 (a tag that does not exist). */
  async findManifest(repo: string, ref: string, mediaType: string): Promise<Buffer | undefined> {
    const res = await this.request('GET', `${repo}/manifests/${ref}`, { ok: [200, 404], headers: { accept: mediaType } });
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    const bytes = await readBounded(res, MAX_MANIFEST, `the manifest of ${repo}:${ref}`);
    if (ref.startsWith('sha256:')) checkDigest(bytes, ref, 'manifest');
    return bytes;
  }

  /**
   * The referrers API (distribution-spec 1.1): the index of manifests whose subject is `digest`,
   * or undefined when the registry has no such API (404, 400, 405, 406: what crane falls back on;
   * distribution 2.8 answers 404).
   */
  async referrers(repo: string, digest: string, mediaType: string): Promise<Buffer | undefined> {
    const res = await this.request('GET', `${repo}/referrers/${digest}`, { ok: [200, 400, 404, 405, 406], headers: { accept: mediaType } });
    const type = res.headers.get('content-type') ?? '';
    if (res.status !== 200 || !type.startsWith(mediaType)) {
      await res.body?.cancel();
      return undefined;
    }
    return readBounded(res, MAX_MANIFEST, `the referrers of ${repo}@${digest}`);
  }

  /** A whole blob, checked against its digest and size. */
  async getBlob(repo: string, blob: BlobRef): Promise<Buffer> {
    const res = await this.request('GET', `${repo}/blobs/${blob.digest}`, { ok: [200], notFound: `blob ${blob.digest} is missing from ${this.host}/${repo}` });
    const bytes = await readBounded(res, blob.size, `blob ${blob.digest}`);
    this.downloaded += bytes.length;
    if (bytes.length !== blob.size) throw corrupt(`blob ${blob.digest} has ${bytes.length} bytes, not ${blob.size}`);
    checkDigest(bytes, blob.digest, 'blob');
    return bytes;
  }

  /** A blob's body as a stream of chunks, cut off past its size; the sha256 is checked at its end. */
  async *streamBlob(repo: string, blob: BlobRef): AsyncGenerator<Buffer> {
    const res = await this.request('GET', `${repo}/blobs/${blob.digest}`, { ok: [200], notFound: `blob ${blob.digest} is missing from ${this.host}/${repo}` });
    const hash = createHash('sha256');
    let total = 0;
    for await (const value of chunksOf(res)) {
      total += value.length;
      this.downloaded += value.length;
      if (total > blob.size) throw corrupt(`blob ${blob.digest} is longer than its ${blob.size} bytes`);
      hash.update(value);
      yield Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    }
    if (total !== blob.size) throw corrupt(`blob ${blob.digest} has ${total} bytes, not ${blob.size}`);
    if (`sha256:${hash.digest('hex')}` !== blob.digest) throw corrupt(`blob ${blob.digest} does not match its digest`);
  }

  /**
   * Byte ranges [start, end) of a blob. A registry that ignores Range (200, the whole body) is
   * read whole, checked, and sliced; `rangeIgnored` then tells the caller to fetch whole blobs.
   */
  async getRange(repo: string, blob: BlobRef, start: number, end: number): Promise<Buffer | { whole: Buffer }> {
    const res = await this.request('GET', `${repo}/blobs/${blob.digest}`, { ok: [200, 206], headers: { range: `bytes=${start}-${end - 1}` }, notFound: `blob ${blob.digest} is missing from ${this.host}/${repo}` });
    if (res.status === 200) {
      this.rangeIgnored = true;
      const bytes = await readBounded(res, blob.size, `blob ${blob.digest}`);
      this.downloaded += bytes.length;
      if (bytes.length !== blob.size) throw corrupt(`blob ${blob.digest} has ${bytes.length} bytes, not ${blob.size}`);
      checkDigest(bytes, blob.digest, 'blob');
      return { whole: bytes };
    }
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
    if (!range || Number(range[1]) !== start || Number(range[2]) !== end - 1) {
      await res.body?.cancel();
      throw corrupt(`the registry answered a Range request for ${blob.digest} with another range (${res.headers.get('content-range') ?? 'none'})`);
    }
    const bytes = await readBounded(res, end - start, `a range of blob ${blob.digest}`);
    this.downloaded += bytes.length;
    if (bytes.length !== end - start) throw corrupt(`a range of blob ${blob.digest} has ${bytes.length} bytes, not ${end - start}`);
    return bytes;
  }

  private location(res: Response): string {
    const loc = res.headers.get('location');
    if (!loc) throw new StratumError('IO', `registry ${this.host} started an upload without a Location`);
    return new URL(loc, this.base).toString();
  }

  private async cancelUpload(res: Response): Promise<void> {
    try {
      const r = await this.request('DELETE', this.location(res), { ok: [200, 204, 404, 405], absolute: true });
      await r.body?.cancel();
    } catch {
      // the registry expires abandoned uploads itself
    }
  }

  /** One request, answering an auth challenge once; a status outside `ok` becomes a StratumError. */
  private async request(
    method: string,
    path: string,
    o: { ok: number[]; body?: Body; length?: number; headers?: Record<string, string>; absolute?: boolean; notFound?: string },
  ): Promise<Response> {
    const url = o.absolute ? path : this.base + path;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...o.headers };
      if (this.authorization) headers.authorization = this.authorization;
      if (o.body !== undefined) {
        headers['content-type'] ??= 'application/octet-stream';
        headers['content-length'] = String(o.length ?? (Buffer.isBuffer(o.body) ? o.body.length : 0));
      }
      let res: Response;
      const dog = new Watchdog(this.host);
      try {
        const body = o.body === undefined ? undefined : Buffer.isBuffer(o.body) ? o.body : fed(o.body(), dog);
        res = await fetch(url, { method, headers, redirect: 'follow', signal: dog.controller.signal, ...(body !== undefined ? { body: body as unknown as RequestInit['body'], duplex: 'half' } : {}) } as RequestInit);
        dog.touch();
        watchdogs.set(res, dog);
        if (!res.body) dog.stop();
      } catch (err) {
        dog.stop();
        if (dog.fired) throw dog.fired;
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        const hint = this.base.startsWith('https:') ? connectHint(cause?.code) : '';
        throw new StratumError('IO', `cannot reach registry ${this.host}: ${cause?.code ?? cause?.message ?? (err as Error).message}${hint}`, { cause: err });
      }
      if (res.status === 401 && attempt === 0) {
        await res.body?.cancel();
        await this.authenticate(res);
        continue;
      }
      if (o.ok.includes(res.status)) return res;
      const text = await readBounded(res, 4096, 'an error reply').catch(() => Buffer.alloc(0));
      const detail = errorDetail(text);
      if (res.status === 404 && o.notFound) throw new StratumError('NOT_FOUND', o.notFound);
      if (res.status === 401 || res.status === 403) {
        throw new StratumError('PERMISSION', `registry ${this.host} refused ${method} ${path.slice(0, 120)} (${res.status}${detail}); log in with podman login or docker login`);
      }
      throw new StratumError('IO', `registry ${this.host} answered ${res.status} to ${method} ${shortPath(path)}${detail}`);
    }
  }

  /** Answers a 401's challenge: Basic with the stored credentials, Bearer with a token from the realm. */
  private async authenticate(res: Response): Promise<void> {
    const challenge = parseChallenge(res.headers.get('www-authenticate'));
    if (!challenge) throw new StratumError('PERMISSION', `registry ${this.host} wants authentication it does not describe`);
    const basic = this.credentials ? `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}` : undefined;
    if (challenge.scheme === 'basic') {
      if (!basic) throw new StratumError('PERMISSION', `registry ${this.host} wants a login; run podman login ${this.host} (or docker login), or set REGISTRY_AUTH_FILE`);
      this.authorization = basic;
      return;
    }
    const realm = challenge.params.realm;
    if (!realm) throw new StratumError('PERMISSION', `registry ${this.host} asked for a token without saying where to get one`);
    for (const s of (challenge.params.scope ?? '').split(' ')) if (s) this.scopes.add(s);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new StratumError('PERMISSION', `registry ${this.host} sent an unusable token realm ${JSON.stringify(realm.slice(0, 200))}`);
    }
    // the stored password goes to the realm: never in clear text when the registry itself is https
    if (url.protocol !== 'https:' && (url.protocol !== 'http:' || this.base.startsWith('https:'))) {
      throw new StratumError('PERMISSION', `registry ${this.host} sent token realm ${url.origin}, which is not https; refusing to send credentials there`);
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    for (const s of this.scopes) url.searchParams.append('scope', s);
    let tokenRes: Response;
    try {
      tokenRes = await fetch(url, { headers: basic ? { authorization: basic } : {}, signal: AbortSignal.timeout(idleMs()) });
    } catch (err) {
      throw new StratumError('IO', `cannot reach the token service ${url.host} of registry ${this.host}`, { cause: err });
    }
    const body = await readBounded(tokenRes, 1 << 20, 'a token reply');
    if (tokenRes.status !== 200) throw new StratumError('PERMISSION', `the token service of registry ${this.host} refused (${tokenRes.status})${basic ? '' : '; log in with podman login or docker login'}`);
    let token: unknown;
    try {
      const doc = JSON.parse(body.toString('utf8')) as { token?: unknown; access_token?: unknown };
      token = doc.token ?? doc.access_token;
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string' || !token) throw new StratumError('PERMISSION', `the token service of registry ${this.host} sent no token`);
    this.authorization = `Bearer ${token}`;
  }
}

/** The body, at most `max` bytes; a longer (or endless) one is cut off and refused. */
export async function readBounded(res: Response, max: number, what: string): Promise<Buffer> {
  if (!res.body) return Buffer.alloc(0);
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await res.body.cancel();
    throw corrupt(`${what} is ${declared} bytes, more than the ${max} expected`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const value of chunksOf(res)) {
    total += value.length;
    if (total > max) throw corrupt(`${what} is longer than the ${max} bytes expected`);
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}

function checkDigest(bytes: Uint8Array, digest: string, what: string): void {
  if (sha256Digest(bytes) !== digest) throw corrupt(`the ${what} sent as ${digest} does not match its digest`);
}

function corrupt(why: string): StratumError {
  return new StratumError('CORRUPT_FRAME', `bad reply from the registry: ${why}`);
}

function errorDetail(body: Buffer): string {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }> };
    const e = doc.errors?.[0];
    if (e) return `: ${e.code ?? ''} ${e.message ?? ''}`.trimEnd();
  } catch {
    // not the spec's error JSON
  }
  return '';
}

function shortPath(path: string): string {
  return path.replace(/^https?:\/\/[^/]+/, '').replace(/_state=[^&]*/, '_state=…').slice(0, 160);
}

/** An upload body that feeds the request's watchdog as it is sent. */
async function* fed(body: AsyncIterable<Uint8Array>, dog: Watchdog): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    dog.touch();
    yield chunk;
  }
}

/** What to add when an https request failed, by the cause: a certificate, or a registry that speaks plain HTTP. */
function connectHint(code: string | undefined): string {
  if (code === undefined) return '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) return ' (for a registry with a certificate you do not verify, add --tls-verify=false)';
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'EPROTO' || /SSL|TLS/.test(code)) return ' (for a registry that speaks plain HTTP, add --plain-http)';
  return '';
}
