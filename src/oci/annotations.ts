// A commit's annotations over a registry (docs/oci.md, "Annotations"): pushed as a referrer of
// the commit manifest (which stays deterministic: mutable annotations never enter it), found
// again through the referrers API or, on registries without it (distribution 2.8), the
// referrers tag schema's `sha256-<hex>` index. Format in referrers.ts; the requests here.
//
// Public surface: pushAnnotations, fetchAnnotations, AnnotationsPushed.
import type { Annotations } from '../store/annotations.js';
import { StratumError } from '../store/error.js';
import { COMMIT_KEY, CREATED_KEY, MANIFEST_TYPE, sha256Digest } from './manifest.js';
import {
  ANNOTATIONS_ARTIFACT,
  annotationsBlob,
  buildReferrer,
  currentReferrer,
  EMPTY_BLOB,
  fallbackTag,
  INDEX_MEDIA_TYPE,
  parseAnnotationsBlob,
  parseReferrer,
  parseReferrers,
  withReferrer,
  type Referrer,
} from './referrers.js';
import type { BlobRef, RegistryClient } from './registry.js';

export interface AnnotationsPushed {
  /** The digest of the annotations manifest now current for the commit. */
  manifest: string;
  /** True when the registry had these annotations already: nothing was sent. */
  upToDate: boolean;
  count: number;
}

interface Listed {
  referrers: Referrer[];
  /** Where they came from; `tag` carries the index bytes, to be extended on push. */
  via: 'api' | 'tag' | 'none';
  index?: Buffer;
}

async function listReferrers(client: RegistryClient, repo: string, subject: string): Promise<Listed> {
  const api = await client.referrers(repo, subject, INDEX_MEDIA_TYPE);
  if (api) return { referrers: parseReferrers(api), via: 'api' };
  const index = await client.findManifest(repo, fallbackTag(subject), INDEX_MEDIA_TYPE);
  if (!index) return { referrers: [], via: 'none' };
  return { referrers: parseReferrers(index), via: 'tag', index };
}

/**
 * Pushes the annotations of commit `id` as a referrer of its manifest `subject`; none when it has
 * none. When the current referrer already holds the same canonical blob nothing is sent.
 */
export async function pushAnnotations(
  client: RegistryClient,
  repo: string,
  commit: { id: string; subject: BlobRef },
  annotations: Annotations,
): Promise<AnnotationsPushed | undefined> {
  const count = Object.keys(annotations).length;
  if (count === 0) return undefined;
  const config = annotationsBlob(annotations);
  const configDigest = sha256Digest(config);
  const listed = await listReferrers(client, repo, commit.subject.digest);
  const current = currentReferrer(listed.referrers);
  if (current) {
    try {
      const held = parseReferrer(await client.getManifest(repo, current.digest), commit.subject.digest);
      if (held.digest === configDigest) return { manifest: current.digest, upToDate: true, count };
    } catch (err) {
      if (!(err instanceof StratumError) || err.code !== 'CORRUPT_FRAME') throw err; // a broken one is replaced below
    }
  }
  for (const [blob, bytes] of [[{ digest: configDigest, size: config.length }, config], [EMPTY_BLOB, EMPTY_BLOB.bytes]] as const) {
    if (!(await client.hasBlob(repo, blob.digest))) await client.uploadBlob(repo, blob, bytes);
  }
  const created = new Date().toISOString();
  const manifest = buildReferrer({ id: commit.id, subject: commit.subject, config, created });
  const digest = sha256Digest(manifest);
  const indexed = await client.putManifest(repo, digest, manifest);
  // a registry that indexes subjects itself says so (OCI-Subject); else we keep the fallback tag
  if (!indexed && listed.via !== 'api') {
    const entry: Referrer = { mediaType: MANIFEST_TYPE, digest, size: manifest.length, artifactType: ANNOTATIONS_ARTIFACT, annotations: { [COMMIT_KEY]: commit.id, [CREATED_KEY]: created } };
    await client.putManifest(repo, fallbackTag(commit.subject.digest), withReferrer(listed.index, entry), INDEX_MEDIA_TYPE);
  }
  return { manifest: digest, upToDate: false, count };
}

/** The annotations the registry holds for the commit manifest `subject`; {} when none. Checked strictly. */
export async function fetchAnnotations(client: RegistryClient, repo: string, subject: string): Promise<Annotations> {
  const current = currentReferrer((await listReferrers(client, repo, subject)).referrers);
  if (!current) return {};
  const config = parseReferrer(await client.getManifest(repo, current.digest), subject);
  return parseAnnotationsBlob(await client.getBlob(repo, config));
}
