// The OCI image manifest of one commit (docs/oci.md), built and parsed here. Deterministic: the
// same commit and the same blobs always give the same bytes, so the same manifest digest. Pure.
//
// Public surface: media types and annotation keys, Descriptor, CommitManifest, buildManifest,
// parseManifest, sha256Digest, MAX_MANIFEST.
import { createHash } from 'node:crypto';
import { isDigest } from '../store/digest.js';
import { StratumError } from '../store/error.js';

export const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';
export const ARTIFACT_TYPE = 'application/vnd.stratum.commit.v1';
export const CONFIG_TYPE = 'application/vnd.stratum.commit.metadata.v1+toml';
export const IMAGE_TYPE = 'application/vnd.stratum.commit.cfs.v1';
export const PACK_TYPE = 'application/vnd.stratum.pack.v1.tar+zstd';
export const INDEX_TYPE = 'application/vnd.stratum.pack.index.v1';
export const OBJECT_TYPE = 'application/vnd.stratum.object.v1';

/** The key composefs-rs gives an image's fs-verity digest; for us that is the commit id. */
export const IMAGE_DIGEST_KEY = 'composefs.merged.erofs.v1.fsverity-sha256-12';
export const OBJECT_DIGEST_KEY = 'org.stratum.object.fsverity-sha256-12';
export const COMMIT_KEY = 'org.stratum.commit';
/** On a pack layer: the smallest object digest in it (packs follow the sorted digests), so a pull skips packs it needs nothing from. */
export const PACK_FIRST_KEY = 'org.stratum.pack.first';
export const PARENT_KEY = 'org.stratum.commit.parent';
export const CREATED_KEY = 'org.opencontainers.image.created';
/** distribution and most registries refuse larger manifests. */
export const MAX_MANIFEST = 4 << 20;

export interface Descriptor {
  mediaType: string;
  digest: string; // sha256:<hex>
  size: number;
  annotations?: Record<string, string>;
}

export interface PackBlobs {
  pack: Descriptor;
  index: Descriptor;
  /** The pack's smallest object digest (hex); manifests before it was added lack it. */
  first?: string;
}

export interface CommitManifest {
  id: string;
  parent?: string;
  created: string;
  config: Descriptor;
  image: Descriptor;
  packs: PackBlobs[];
  /** Large objects, each with its fs-verity digest. */
  objects: Array<Descriptor & { object: string }>;
}

export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Manifest JSON bytes; keys in a fixed order, no whitespace. */
export function buildManifest(m: CommitManifest): Buffer {
  const layers: Descriptor[] = [
    { mediaType: IMAGE_TYPE, digest: m.image.digest, size: m.image.size, annotations: { [IMAGE_DIGEST_KEY]: m.id } },
  ];
  for (const p of m.packs) {
    layers.push({ mediaType: PACK_TYPE, digest: p.pack.digest, size: p.pack.size, ...(p.first ? { annotations: { [PACK_FIRST_KEY]: p.first } } : {}) });
    layers.push({ mediaType: INDEX_TYPE, digest: p.index.digest, size: p.index.size });
  }
  for (const o of m.objects) layers.push({ mediaType: OBJECT_TYPE, digest: o.digest, size: o.size, annotations: { [OBJECT_DIGEST_KEY]: o.object } });
  const annotations: Record<string, string> = { [COMMIT_KEY]: m.id };
  if (m.parent) annotations[PARENT_KEY] = m.parent;
  annotations[CREATED_KEY] = m.created;
  const doc = {
    schemaVersion: 2,
    mediaType: MANIFEST_TYPE,
    artifactType: ARTIFACT_TYPE,
    config: { mediaType: CONFIG_TYPE, digest: m.config.digest, size: m.config.size },
    layers,
    annotations,
  };
  return Buffer.from(JSON.stringify(doc));
}

/** Parses a manifest from a registry; anything that is not a well-formed Stratum commit is refused. */
export function parseManifest(bytes: Uint8Array): CommitManifest {
  if (bytes.length > MAX_MANIFEST) throw bad(`it is ${bytes.length} bytes, more than ${MAX_MANIFEST}`);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw bad('it is not JSON');
  }
  const d = doc as { schemaVersion?: unknown; artifactType?: unknown; config?: unknown; layers?: unknown; annotations?: unknown };
  if (d.schemaVersion !== 2) throw bad('schemaVersion is not 2');
  if (d.artifactType !== ARTIFACT_TYPE) throw new StratumError('NOT_FOUND', `this registry tag is not a Stratum commit (artifactType ${JSON.stringify(d.artifactType ?? null)}, not ${ARTIFACT_TYPE})`);
  const config = descriptor(d.config, 'config');
  if (config.mediaType !== CONFIG_TYPE) throw bad(`its config has media type ${config.mediaType}`);
  if (!Array.isArray(d.layers) || d.layers.length === 0) throw bad('it has no layers');
  const layers = d.layers.map((l, i) => descriptor(l, `layer ${i}`));
  const image = layers[0]!;
  if (image.mediaType !== IMAGE_TYPE) throw bad(`layer 0 is ${image.mediaType}, not the commit image`);
  const id = image.annotations?.[IMAGE_DIGEST_KEY];
  if (!id || !isDigest(id)) throw bad(`layer 0 has no ${IMAGE_DIGEST_KEY} annotation`);
  const annotations = (d.annotations ?? {}) as Record<string, unknown>;
  if (annotations[COMMIT_KEY] !== undefined && annotations[COMMIT_KEY] !== id) throw bad('its commit annotation differs from its image digest');
  const parent = annotations[PARENT_KEY];
  const created = annotations[CREATED_KEY];
  const packs: PackBlobs[] = [];
  const objects: Array<Descriptor & { object: string }> = [];
  for (let i = 1; i < layers.length; i++) {
    const l = layers[i]!;
    if (l.mediaType === PACK_TYPE) {
      const index = layers[i + 1];
      if (!index || index.mediaType !== INDEX_TYPE) throw bad(`pack layer ${i} is not followed by its index`);
      const first = l.annotations?.[PACK_FIRST_KEY];
      if (first !== undefined && !isDigest(first)) throw bad(`pack layer ${i} has a malformed ${PACK_FIRST_KEY} annotation`);
      packs.push({ pack: l, index, ...(first ? { first } : {}) });
      i++;
    } else if (l.mediaType === OBJECT_TYPE) {
      const object = l.annotations?.[OBJECT_DIGEST_KEY];
      if (!object || !isDigest(object)) throw bad(`object layer ${i} has no ${OBJECT_DIGEST_KEY} annotation`);
      objects.push({ ...l, object });
    } else throw bad(`layer ${i} has unknown media type ${l.mediaType}`);
  }
  return {
    id,
    ...(typeof parent === 'string' && isDigest(parent) ? { parent } : {}),
    created: typeof created === 'string' ? created : '',
    config,
    image,
    packs,
    objects,
  };
}

function descriptor(value: unknown, what: string): Descriptor {
  const v = value as Partial<Descriptor> | null;
  if (!v || typeof v !== 'object') throw bad(`its ${what} is not a descriptor`);
  if (typeof v.mediaType !== 'string') throw bad(`its ${what} has no media type`);
  if (typeof v.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(v.digest)) throw bad(`its ${what} has no sha256 digest`);
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) throw bad(`its ${what} has no size`);
  const annotations = v.annotations && typeof v.annotations === 'object' ? (v.annotations as Record<string, string>) : undefined;
  return { mediaType: v.mediaType, digest: v.digest, size: v.size, ...(annotations ? { annotations } : {}) };
}

function bad(why: string): StratumError {
  return new StratumError('CORRUPT_FRAME', `bad manifest from the registry: ${why}`);
}
