// `pull`: one commit from a registry repo into the store (docs/oci.md), in the order bundle
// import uses: everything fetched is checked (blob sha256, the image's fs-verity digest against
// the commit id, the metadata against the image, every object against its name and its size in
// the image) and staged in one object batch; only when all of it is present does the batch
// commit, then the commit dir, then the tags. A failed or killed pull leaves the store as it was.
//
// Public surface: pullCommit, packsToRead, PullResult, PullProgress.
import { Readable } from 'node:stream';
import { setAnnotations } from '../store/annotations.js';
import { fsverityDigest } from '../store/digest.js';
import { StratumError } from '../store/error.js';
import { bufferSource, ImageReader } from '../store/image/read.js';
import { merkleOfImage } from '../store/merkle.js';
import { parseMetadata } from '../store/metadata.js';
import { checkLabel, checkTag } from '../store/names.js';
import type { Store } from '../store/store.js';
import { fetchAnnotations } from './annotations.js';
import { pool } from '../store/pool.js';
import { usedObjects } from '../store/image/read.js';
import { parseManifest, sha256Digest, type Descriptor, type PackBlobs } from './manifest.js';
import { MAX_INDEX_BYTES, maxPackBytes, parseIndex, readEntry, type PackIndexEntry } from './pack.js';
import { LARGE_OBJECT, PACK_MAX_BYTES, PACK_MAX_OBJECTS } from './plan.js';
import type { RegistryClient } from './registry.js';

const IN_FLIGHT = 8;
const MAX_METADATA = 1 << 20;
const MAX_IMAGE = 1 << 30;
/** Ranges closer than this are read as one. */
const MERGE_GAP = 64 << 10;
// a pack is held in memory while its entries are read: a registry cannot make it larger than a writer would
const MAX_PACK = maxPackBytes(PACK_MAX_BYTES, PACK_MAX_OBJECTS, LARGE_OBJECT);
/** A pack with more than this share of its bytes wanted is fetched whole. */
const WHOLE_SHARE = 0.5;

export interface PullProgress {
  objects: number;
  totalObjects: number;
  bytes: number;
  totalBytes: number;
  received: number;
}

export interface PullResult {
  id: string;
  label: string;
  tags: string[];
  newCommit: boolean;
  newObjects: number;
  /** Objects the commit uses, and how many of them the store lacked. */
  objects: number;
  missing: number;
  receivedBytes: number;
  /** Annotations the registry carried onto the commit (merged as bundle import merges them). */
  annotations: number;
  /** What went wrong with the annotations, when they were refused; the commit is pulled anyway. */
  warnings: string[];
}

export async function pullCommit(
  store: Store,
  client: RegistryClient,
  source: { repo: string; tag: string },
  options: { label?: string; tag?: string; force?: boolean; onProgress?: (p: PullProgress) => void } = {},
): Promise<PullResult> {
  const label = checkLabel(options.label ?? source.repo.split('/').pop()!);
  const tag = checkTag(options.tag ?? source.tag);
  const before = client.downloaded;
  const manifestBytes = await client.getManifest(source.repo, source.tag);
  const manifest = parseManifest(manifestBytes);
  const id = manifest.id;
  const existing = await store.tags.read(label, tag);
  if (existing && !(existing.kind === 'id' && existing.id === id) && !options.force) {
    throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists and names another commit; pull into another tag (… ${label}:<tag>) or use --force to move it`);
  }

  // annotations are fetched and checked before anything is written, and set with the tags
  const warnings: string[] = [];
  const annotations = await fetchAnnotations(client, source.repo, sha256Digest(manifestBytes)).catch((err: unknown) => {
    if (!(err instanceof StratumError)) throw err;
    warnings.push(`the commit's annotations were not taken: ${err.message}`);
    return {};
  });
  const annotate = async (): Promise<number> => {
    const n = Object.keys(annotations).length;
    if (n > 0) await setAnnotations(store, id, { set: annotations }, { lockHeld: true });
    return n;
  };

  if (await store.commits.has(id)) {
    return store.lock.with('shared', async () => {
      if (!(await store.commits.has(id))) throw collected(id);
      const tags = await publishTags(store, label, tag, id, options.force);
      return { id, label, tags, newCommit: false, newObjects: 0, objects: 0, missing: 0, receivedBytes: client.downloaded - before, annotations: await annotate(), warnings };
    });
  }

  const metadataText = await client.getBlob(source.repo, bounded(manifest.config, MAX_METADATA, 'its metadata'));
  const image = await client.getBlob(source.repo, bounded(manifest.image, MAX_IMAGE, 'its image'));
  const imageDigest = fsverityDigest(image);
  if (imageDigest !== id) throw corrupt(`its commit.cfs has fs-verity digest ${imageDigest}, not the commit id ${id} it claims`);
  const meta = parseMetadata(metadataText.toString('utf8'), id);
  if (meta.metadataHash !== id) throw corrupt(`its metadata describes commit ${meta.metadataHash}, not ${id}`);
  const reader = ImageReader.open(bufferSource(image));
  const needed = usedObjects(reader);
  if (merkleOfImage(reader).merkle.root !== meta.merkleRoot) throw corrupt('the Merkle root of its image does not match its metadata');

  const missing = new Map<string, number>();
  let totalBytes = 0;
  for (const [digest, size] of needed) {
    if (!store.objects.has(digest)) {
      missing.set(digest, size);
      totalBytes += size;
    }
  }
  const progress = { objects: 0, totalObjects: missing.size, bytes: 0, totalBytes, received: 0 };
  const report = (objects: number, bytes: number): void => {
    progress.objects += objects;
    progress.bytes += bytes;
    progress.received = client.downloaded - before;
    options.onProgress?.({ ...progress });
  };

  const batch = await store.objects.batch();
  try {
    const received = new Set<string>();
    const take = (digest: string): boolean => {
      if (!missing.has(digest) || received.has(digest)) return false;
      received.add(digest);
      return true;
    };

    // Large objects: streamed into the batch, hashed on the way.
    const large = manifest.objects.filter((o) => missing.has(o.object));
    await pool(large, IN_FLIGHT, async (o) => {
      const size = missing.get(o.object)!;
      if (o.size !== size) throw corrupt(`object ${o.object} is ${o.size} bytes in the manifest, ${size} in the image`);
      if (!take(o.object)) return;
      const digest = await batch.putStream(Readable.from(client.streamBlob(source.repo, o)));
      if (digest !== o.object) throw new StratumError('CORRUPT_OBJECT', `the registry sent object ${o.object} with bytes whose digest is ${digest}`);
      report(1, size);
    });

    // Packs: their indexes first, then only the entries still missing.
    if (received.size < missing.size) {
      await pool(packsToRead(manifest.packs, [...missing.keys()].filter((d) => !received.has(d))), IN_FLIGHT, async ({ pack, index }) => {
        bounded(pack, MAX_PACK, 'a pack');
        const indexBytes = await client.getBlob(source.repo, bounded(index, MAX_INDEX_BYTES, 'a pack index'));
        const wanted = parseIndex(indexBytes, pack.size, LARGE_OBJECT).filter((e) => missing.has(e.digest) && !received.has(e.digest));
        if (wanted.length === 0) return;
        for (const e of wanted) {
          if (e.size !== missing.get(e.digest)) throw corrupt(`object ${e.digest} is ${e.size} bytes in its pack index, ${missing.get(e.digest)} in the image`);
        }
        const put = async (e: PackIndexEntry, frame: Uint8Array): Promise<void> => {
          const data = readEntry(frame, e, { checkDigest: false });
          if (!take(e.digest)) return;
          // the batch hashes what it stages; a mismatch throws before anything is committed
          const digest = await batch.putBuffer(data);
          if (digest !== e.digest) throw new StratumError('CORRUPT_OBJECT', `the registry sent object ${e.digest} with bytes whose digest is ${digest}`);
          report(1, e.size);
        };
        const wantedBytes = wanted.reduce((n, e) => n + e.length, 0);
        if (client.rangeIgnored || wantedBytes > WHOLE_SHARE * pack.size) {
          const whole = await client.getBlob(source.repo, pack);
          for (const e of wanted) await put(e, whole.subarray(e.offset, e.offset + e.length));
          return;
        }
        for (const run of mergeRanges(wanted)) {
          const start = run[0]!.offset;
          const end = run[run.length - 1]!.offset + run[run.length - 1]!.length;
          const got = await client.getRange(source.repo, pack, start, end);
          if (!Buffer.isBuffer(got)) {
            for (const e of wanted) await put(e, got.whole.subarray(e.offset, e.offset + e.length));
            return;
          }
          for (const e of run) await put(e, got.subarray(e.offset - start, e.offset - start + e.length));
        }
      });
    }
    for (const digest of missing.keys()) {
      if (!received.has(digest)) throw corrupt(`object ${digest}, used by the commit, is in none of its packs or layers`);
    }

    return await store.lock.with('shared', async () => {
      const newObjects = (await batch.commit()).length;
      // objects found present before the lock may have gone to a gc since
      for (const digest of needed.keys()) if (!store.objects.has(digest)) throw collected(id);
      const newCommit = await store.commits.add(image, meta);
      const tags = await publishTags(store, label, tag, id, options.force);
      return { id, label, tags, newCommit, newObjects, objects: needed.size, missing: missing.size, receivedBytes: client.downloaded - before, annotations: await annotate(), warnings };
    });
  } finally {
    await batch.dispose();
  }
}

/** label:<id> and label:<tag>, then HEAD if the label has none: what bundle import does. */
async function publishTags(store: Store, label: string, tag: string, id: string, force = false): Promise<string[]> {
  const tags: string[] = [];
  for (const name of new Set([id, tag])) {
    const current = await store.tags.read(label, name);
    if (!(current?.kind === 'id' && current.id === id)) await store.tags.write(label, name, { kind: 'id', id }, { force: force && name === tag });
    tags.push(name);
  }
  await store.heads.createIfAbsent(label, id);
  return tags;
}

/**
 * The packs that may hold one of `wanted`: with every pack's first digest known (and ascending, as
 * push writes them), pack i covers [first_i, first_i+1), so the others' indexes are not fetched. A
 * manifest that lies only makes the pull miss an object, which it reports; it never takes a wrong one.
 */
export function packsToRead(packs: PackBlobs[], wanted: string[]): PackBlobs[] {
  const firsts = packs.map((p) => p.first);
  if (firsts.some((f) => f === undefined) || firsts.some((f, i) => i > 0 && !(firsts[i - 1]! < f!))) return packs;
  const sorted = [...wanted].sort();
  const out: PackBlobs[] = [];
  let j = 0;
  for (let i = 0; i < packs.length; i++) {
    const end = firsts[i + 1];
    while (j < sorted.length && sorted[j]! < firsts[i]!) j++;
    if (j < sorted.length && (end === undefined || sorted[j]! < end)) out.push(packs[i]!);
  }
  return out;
}

/** Consecutive index entries whose gaps are small become one Range read. */
function mergeRanges(entries: PackIndexEntry[]): PackIndexEntry[][] {
  const runs: PackIndexEntry[][] = [];
  for (const e of entries) {
    const run = runs[runs.length - 1];
    const last = run?.[run.length - 1];
    if (run && last && e.offset - (last.offset + last.length) <= MERGE_GAP) run.push(e);
    else runs.push([e]);
  }
  return runs;
}

function bounded(d: Descriptor, max: number, what: string): Descriptor {
  if (d.size > max) throw corrupt(`${what} is ${d.size} bytes, more than ${max}`);
  return d;
}

function collected(id: string): StratumError {
  return new StratumError('BUSY', `a gc removed part of commit ${id} while it was pulled; run the pull again`);
}

function corrupt(why: string): StratumError {
  return new StratumError('CORRUPT_FRAME', `bad commit from the registry: ${why}`);
}
