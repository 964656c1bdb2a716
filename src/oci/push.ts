// `push`: one commit to a registry repo (docs/oci.md). Blobs first (each HEADed, mounted from
// another repo this store pushed to, or uploaded, several in flight), the manifest by tag last,
// so a registry never has a tag whose blobs are missing and a killed push is finished by a rerun.
//
// Public surface: pushCommit, PushResult, PushProgress.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp, readFileSync } from 'node:fs';
import { annotationsOf } from '../store/annotations.js';
import { StratumError } from '../store/error.js';
import { bufferSource, ImageReader } from '../store/image/read.js';
import { parseMetadata } from '../store/metadata.js';
import { parseRef } from '../store/names.js';
import { resolveRef } from '../store/resolve.js';
import type { Store } from '../store/store.js';
import { pushAnnotations, type AnnotationsPushed } from './annotations.js';
import { loadCache, packKey, saveCache } from './cache.js';
import { pool } from '../store/pool.js';
import { usedObjects } from '../store/image/read.js';
import { buildManifest, CONFIG_TYPE, IMAGE_TYPE, INDEX_TYPE, MAX_MANIFEST, OBJECT_TYPE, PACK_TYPE, sha256Digest, type CommitManifest } from './manifest.js';
import { formatIndex, writePack } from './pack.js';
import { planObjects, type PlannedObject } from './plan.js';
import type { BlobRef, Body, RegistryClient } from './registry.js';

const IN_FLIGHT = 8;
const MOUNT_CANDIDATES = 2;

export interface PushProgress {
  objects: number;
  totalObjects: number;
  bytes: number;
  totalBytes: number;
  sent: number;
}

export interface PushResult {
  id: string;
  label: string;
  repository: string;
  tag: string;
  manifest: string;
  /** True when the registry tag already held this exact manifest: nothing was sent. */
  upToDate: boolean;
  blobs: number;
  uploaded: number;
  mounted: number;
  present: number;
  uploadedBytes: number;
  objects: number;
  bytes: number;
  /** The commit's annotations, pushed as a referrer of its manifest; absent when it has none. */
  annotations?: AnnotationsPushed;
}

export async function pushCommit(
  store: Store,
  ref: string,
  client: RegistryClient,
  target: { repo: string; tag?: string },
  options: { onProgress?: (p: PushProgress) => void } = {},
): Promise<PushResult> {
  const parsed = parseRef(ref, { bareLabel: 'head' });
  return store.lock.with('shared', async () => {
    const { id } = await resolveRef(store, parsed);
    const sentBefore = client.uploaded;
    const { result, size } = await pushManifest(store, id, parsed.label, parsed.target.kind === 'name' ? parsed.target.name : undefined, ref, client, target, options);
    // after the manifest: a referrer's subject should exist when the referrer is pushed
    const annotations = await pushAnnotations(client, target.repo, { id, subject: { digest: result.manifest, size } }, await annotationsOf(store, id));
    if (!annotations) return result;
    return { ...result, upToDate: result.upToDate && annotations.upToDate, uploadedBytes: client.uploaded - sentBefore, annotations };
  });
}

/** The commit's blobs and manifest; `size` is the manifest's, for the annotations' subject. */
async function pushManifest(
  store: Store,
  id: string,
  label: string,
  name: string | undefined,
  ref: string,
  client: RegistryClient,
  target: { repo: string; tag?: string },
  options: { onProgress?: (p: PushProgress) => void },
): Promise<{ result: PushResult; size: number }> {
  const parsed = { label };
  const tag = target.tag ?? name;
  if (!tag) throw new StratumError('USAGE', `say which registry tag to push ${ref} as: <registry>/<repo>:<tag>`);
  const cache = loadCache(store);
  const repo = target.repo;
  // pushed before: if the tag holds that manifest, there is nothing to do (one request, no image walk)
  const known = cache.commits[id];
  const held = known ? await client.manifestHead(repo, tag) : undefined;
  if (known && held?.digest === known) {
    const size = held.size >= 0 ? held.size : (await client.getManifest(repo, known)).length;
    return { result: upToDate(id, parsed.label, `${client.host}/${repo}`, tag, known), size };
  }
  const metadata = await fsp.readFile(`${store.commits.path(id)}/metadata.toml`);
  const meta = parseMetadata(metadata.toString('utf8'), id);
  const image = await fsp.readFile(store.commits.imagePath(id));
  const used = usedObjects(ImageReader.open(bufferSource(image)));
  const plan = planObjects([...used].map(([digest, size]) => ({ digest, size })));

  const totalObjects = used.size;
  let totalBytes = 0;
  for (const size of used.values()) totalBytes += size;
  const progress = { objects: 0, totalObjects, bytes: 0, totalBytes, sent: 0 };
  const report = (objects: number, bytes: number): void => {
    progress.objects += objects;
    progress.bytes += bytes;
    progress.sent = client.uploaded;
    options.onProgress?.({ ...progress });
  };

  const counts = { blobs: 0, uploaded: 0, mounted: 0, present: 0 };
  const sentBefore = client.uploaded;
  // the repos this store pushed other labels to on this registry, most recent first
  const mountFrom = Object.values(cache.remotes[client.host] ?? {})
    .reverse()
    .filter((r, i, all) => r !== repo && all.indexOf(r) === i)
    .slice(0, MOUNT_CANDIDATES);

  /** HEAD, else mount, else upload. */
  const sendBlob = async (blob: BlobRef, body: () => Body | Promise<Body>): Promise<void> => {
    counts.blobs++;
    if (await client.hasBlob(repo, blob.digest)) {
      counts.present++;
      return;
    }
    let session: string | undefined;
    for (const [i, from] of mountFrom.entries()) {
      const mount = await client.mountBlob(repo, blob.digest, from, i === mountFrom.length - 1);
      if (mount.mounted) {
        counts.mounted++;
        return;
      }
      session = mount.location;
    }
    await client.uploadBlob(repo, blob, await body(), session);
    counts.uploaded++;
  };

  const configRef = { digest: sha256Digest(metadata), size: metadata.length };
  const imageRef = { digest: sha256Digest(image), size: image.length };
  const manifestOf = (packs: CommitManifest['packs'], objects: CommitManifest['objects']): Buffer =>
    buildManifest({
      id,
      ...(meta.parentCommit ? { parent: meta.parentCommit } : {}),
      created: meta.timestamp,
      config: { mediaType: CONFIG_TYPE, ...configRef },
      image: { mediaType: IMAGE_TYPE, ...imageRef },
      packs,
      objects,
    });
  const result = (manifest: Buffer, upToDate: boolean): PushResult => ({
    id,
    label: parsed.label,
    repository: `${client.host}/${repo}`,
    tag,
    manifest: sha256Digest(manifest),
    upToDate,
    ...counts,
    uploadedBytes: client.uploaded - sentBefore,
    objects: totalObjects,
    bytes: totalBytes,
  });

  // Everything known from the cache: one HEAD of the tag tells whether the push is done already.
  const cachedPacks = plan.packs.map((p) => cache.packs[packKey(p.map((o) => o.digest))]);
  const cachedObjects = plan.large.map((o) => cache.objects[o.digest]);
  if (cachedPacks.every(Boolean) && cachedObjects.every(Boolean)) {
    const manifest = manifestOf(
      cachedPacks.map((c, i) => ({ pack: { mediaType: PACK_TYPE, ...c!.pack }, index: { mediaType: INDEX_TYPE, ...c!.index }, first: plan.packs[i]![0]!.digest })),
      plan.large.map((o, i) => ({ mediaType: OBJECT_TYPE, digest: cachedObjects[i]!, size: o.size, object: o.digest })),
    );
    if ((await client.manifestDigest(repo, tag)) === sha256Digest(manifest)) {
      report(totalObjects, totalBytes);
      cache.commits[id] = sha256Digest(manifest);
      await saveCache(store, cache);
      return { result: result(manifest, true), size: manifest.length };
    }
  }

  await sendBlob(configRef, () => metadata);
  await sendBlob(imageRef, () => image);

  const packs: CommitManifest['packs'] = new Array(plan.packs.length);
  const buildPack = (objects: PlannedObject[]) => {
    const { pack, index } = writePack(objects.map((o) => ({ digest: o.digest, data: readObject(store, o) })));
    const indexBytes = formatIndex(index);
    return { pack, indexBytes };
  };
  await pool(plan.packs, IN_FLIGHT, async (objects, i) => {
    const key = packKey(objects.map((o) => o.digest));
    let built = cache.packs[key] ? undefined : buildPack(objects);
    const refs = cache.packs[key] ?? {
      pack: { digest: sha256Digest(built!.pack), size: built!.pack.length },
      index: { digest: sha256Digest(built!.indexBytes), size: built!.indexBytes.length },
    };
    const bytes = () => {
      if (built) return built;
      built = buildPack(objects);
      if (sha256Digest(built.pack) !== refs.pack.digest || sha256Digest(built.indexBytes) !== refs.index.digest) {
        delete cache.packs[key];
        void saveCache(store, cache); // never fails; the push fails here anyway
        throw new StratumError('IO', `the push cache ${store.root}/cache/oci.json disagreed with a freshly built pack (another zstd version?); it was corrected, push again`);
      }
      return built;
    };
    await sendBlob(refs.pack, () => bytes().pack);
    await sendBlob(refs.index, () => bytes().indexBytes);
    cache.packs[key] = refs;
    packs[i] = { pack: { mediaType: PACK_TYPE, ...refs.pack }, index: { mediaType: INDEX_TYPE, ...refs.index }, first: objects[0]!.digest };
    built = undefined;
    report(objects.length, objects.reduce((n, o) => n + o.size, 0));
  });

  const objects: CommitManifest['objects'] = new Array(plan.large.length);
  await pool(plan.large, IN_FLIGHT, async (o, i) => {
    const path = store.objects.path(o.digest);
    const sha = cache.objects[o.digest] ?? (await sha256File(path));
    cache.objects[o.digest] = sha;
    await sendBlob({ digest: sha, size: o.size }, () => () => createReadStream(path, { highWaterMark: 1 << 20 }));
    objects[i] = { mediaType: OBJECT_TYPE, digest: sha, size: o.size, object: o.digest };
    report(1, o.size);
  });

  const manifest = manifestOf(packs, objects);
  if (manifest.length > MAX_MANIFEST) {
    throw new StratumError('USAGE', `commit ${id} needs a manifest of ${manifest.length} bytes, more than registries take (${MAX_MANIFEST}); it has too many files of 1 MiB or more`);
  }
  await client.putManifest(repo, tag, manifest);
  const remotes = (cache.remotes[client.host] ??= {});
  delete remotes[parsed.label]; // re-added last: most recent
  remotes[parsed.label] = repo;
  cache.commits[id] = sha256Digest(manifest);
  await saveCache(store, cache);
  return { result: result(manifest, false), size: manifest.length };
}

function readObject(store: Store, o: PlannedObject): Buffer {
  const data = readFileSync(store.objects.path(o.digest));
  if (data.length !== o.size) throw new StratumError('CORRUPT_OBJECT', `object ${o.digest} has ${data.length} bytes; the commit says ${o.size} (run stratum verify)`);
  return data;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

function upToDate(id: string, label: string, repository: string, tag: string, manifest: string): PushResult {
  return { id, label, repository, tag, manifest, upToDate: true, blobs: 0, uploaded: 0, mounted: 0, present: 0, uploadedBytes: 0, objects: 0, bytes: 0 };
}
