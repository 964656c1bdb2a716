// A commit's annotations as an OCI 1.1 referrer of its manifest (docs/oci.md, "Annotations"):
// the annotations as a canonical JSON config blob, an artifact manifest whose `subject` is the
// commit manifest, and the image index that lists referrers (the referrers API's answer, or the
// `sha256-<hex>` fallback tag a registry without that API holds). Built and parsed here. Pure.
//
// Public surface: ANNOTATIONS_ARTIFACT, ANNOTATIONS_CONFIG, INDEX_MEDIA_TYPE, EMPTY_BLOB,
// MAX_ANNOTATIONS, Referrer, annotationsBlob, buildReferrer, parseReferrer, parseAnnotationsBlob,
// fallbackTag, parseReferrers, currentReferrer, withReferrer.
import { StratumError } from '../store/error.js';
import { parseAnnotations, type Annotations } from '../store/annotations.js';
import { COMMIT_KEY, CREATED_KEY, MANIFEST_TYPE, sha256Digest, type Descriptor } from './manifest.js';

export const ANNOTATIONS_ARTIFACT = 'application/vnd.stratum.annotations.v1';
export const ANNOTATIONS_CONFIG = 'application/vnd.stratum.annotations.v1+json';
export const INDEX_MEDIA_TYPE = 'application/vnd.oci.image.index.v1+json';
/** The image spec's empty descriptor: `{}`, for the one layer portable manifests carry. */
export const EMPTY_BLOB = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2, bytes: Buffer.from('{}') };
/** An annotations blob larger than this is refused (64 KiB values, a few of them). */
export const MAX_ANNOTATIONS = 1 << 20;
/** A referrer manifest is a few hundred bytes; anything much larger is not ours. */
const MAX_REFERRER = 64 << 10;
/** Keys in one annotations blob; `stratum annotate` has no limit, a registry's blob gets one. */
const MAX_KEYS = 4096;

/** One entry of a referrers index: a manifest that names our commit manifest as its subject. */
export interface Referrer extends Descriptor {
  artifactType?: string;
}

/** Canonical JSON of the annotations: keys sorted, no whitespace, so the same set is the same blob. */
export function annotationsBlob(annotations: Annotations): Buffer {
  const sorted = Object.keys(annotations).sort().map((k) => [k, annotations[k]!] as const);
  return Buffer.from(JSON.stringify(Object.fromEntries(sorted)));
}

/** The artifact manifest: config = the annotations blob, one empty layer, subject = the commit manifest. */
export function buildReferrer(o: { id: string; subject: { digest: string; size: number }; config: Buffer; created: string }): Buffer {
  const doc = {
    schemaVersion: 2,
    mediaType: MANIFEST_TYPE,
    artifactType: ANNOTATIONS_ARTIFACT,
    config: { mediaType: ANNOTATIONS_CONFIG, digest: sha256Digest(o.config), size: o.config.length },
    layers: [{ mediaType: EMPTY_BLOB.mediaType, digest: EMPTY_BLOB.digest, size: EMPTY_BLOB.size }],
    subject: { mediaType: MANIFEST_TYPE, digest: o.subject.digest, size: o.subject.size },
    annotations: { [COMMIT_KEY]: o.id, [CREATED_KEY]: o.created },
  };
  return Buffer.from(JSON.stringify(doc));
}

/** The config descriptor of an annotations manifest, checked: ours, about `subject`, bounded. */
export function parseReferrer(bytes: Uint8Array, subject: string): Descriptor {
  if (bytes.length > MAX_REFERRER) throw bad(`its manifest is ${bytes.length} bytes, more than ${MAX_REFERRER}`);
  const d = json(bytes, 'its manifest') as { artifactType?: unknown; config?: Partial<Descriptor>; subject?: { digest?: unknown } };
  if (d.artifactType !== ANNOTATIONS_ARTIFACT) throw bad(`its manifest has artifactType ${JSON.stringify(d.artifactType ?? null)}`);
  if (d.subject?.digest !== subject) throw bad(`its manifest's subject is not the commit manifest ${subject}`);
  const c = d.config;
  if (!c || c.mediaType !== ANNOTATIONS_CONFIG || typeof c.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(c.digest)) throw bad('its config is not an annotations blob');
  if (typeof c.size !== 'number' || !Number.isSafeInteger(c.size) || c.size < 0) throw bad('its config has no size');
  if (c.size > MAX_ANNOTATIONS) throw bad(`its annotations are ${c.size} bytes, more than ${MAX_ANNOTATIONS}`);
  return { mediaType: c.mediaType, digest: c.digest, size: c.size };
}

/** The annotations in a blob, checked as `stratum annotate` checks them. */
export function parseAnnotationsBlob(bytes: Uint8Array): Annotations {
  const doc = json(bytes, 'the annotations blob');
  if (doc && typeof doc === 'object' && Object.keys(doc).length > MAX_KEYS) throw bad(`it has more than ${MAX_KEYS} annotations`);
  try {
    return parseAnnotations(doc);
  } catch (err) {
    throw bad(`its annotations are not valid: ${(err as Error).message}`);
  }
}

/** The referrers tag schema: `<alg>-<hex>` of the subject digest, cut to 128 characters. */
export function fallbackTag(subject: string): string {
  return subject.replace(':', '-').slice(0, 128);
}

/**
 * The entries of a referrers index. Entries are other tools' too (signatures, SBOMs): those that
 * are not well-formed descriptors are skipped, not refused; only a document that is no index is.
 */
export function parseReferrers(bytes: Uint8Array): Referrer[] {
  const d = json(bytes, 'its referrers index') as { manifests?: unknown };
  if (!d || typeof d !== 'object' || !Array.isArray(d.manifests)) throw bad('its referrers index has no manifests list');
  const out: Referrer[] = [];
  for (const m of d.manifests as Array<Partial<Referrer> | null>) {
    if (!m || typeof m !== 'object' || typeof m.mediaType !== 'string' || typeof m.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(m.digest)) continue;
    if (typeof m.size !== 'number' || !Number.isSafeInteger(m.size) || m.size < 0) continue;
    const annotations = m.annotations && typeof m.annotations === 'object' ? m.annotations : undefined;
    out.push({ mediaType: m.mediaType, digest: m.digest, size: m.size, ...(typeof m.artifactType === 'string' ? { artifactType: m.artifactType } : {}), ...(annotations ? { annotations } : {}) });
  }
  return out;
}

/**
 * Our annotations referrer that is current: the latest `created` (a registry with the referrers
 * API lists every one ever pushed, in no set order); at equal times the last listed.
 */
export function currentReferrer(referrers: Referrer[]): Referrer | undefined {
  let best: Referrer | undefined;
  for (const r of referrers) {
    if (r.artifactType !== ANNOTATIONS_ARTIFACT || r.mediaType !== MANIFEST_TYPE) continue;
    if (!best || createdOf(r) >= createdOf(best)) best = r;
  }
  return best;
}

/**
 * The fallback index with `add` as our one annotations entry. Other tools' entries (signatures,
 * SBOMs) are kept byte for byte as the existing index had them; our older entry is replaced.
 */
export function withReferrer(existing: Uint8Array | undefined, add: Referrer): Buffer {
  const old = existing ? (json(existing, 'its referrers index') as { manifests?: unknown }) : undefined;
  const kept = (Array.isArray(old?.manifests) ? (old.manifests as unknown[]) : []).filter((m) => {
    const e = m as Partial<Referrer> | null;
    return !!e && typeof e === 'object' && e.artifactType !== ANNOTATIONS_ARTIFACT && e.digest !== add.digest;
  });
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests: [...kept, add] }));
}

function createdOf(r: Referrer): string {
  const c = r.annotations?.[CREATED_KEY];
  return typeof c === 'string' ? c : '';
}

function json(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw bad(`${what} is not JSON`);
  }
}

function bad(why: string): StratumError {
  return new StratumError('CORRUPT_FRAME', `bad annotations from the registry: ${why}`);
}
