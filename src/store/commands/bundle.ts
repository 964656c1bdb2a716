// `export <label:tag> <file|->` and `import <bundle|->`: a commit, its metadata and every object
// it uses, as one stream of typed frames (src/store/bundle.ts). Import checks everything (frame
// digests, the image against the commit id, the Merkle root, that each object is needed and has
// the size the image says) before anything becomes visible: objects are staged in a batch that is
// only committed at the end, so a bad bundle leaves the store as it was.
//
// Public surface: exportBundle, importBundle, ExportResult, BundleImportResult.
import { promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import { annotationsOf, parseAnnotations, setAnnotations, type Annotations } from '../annotations.js';
import { BUNDLE_MAGIC, END_RECORD, RecordReader, corrupt, encodeRecord, parseManifest, type Manifest } from '../bundle.js';
import { StratumError } from '../error.js';
import { decodeFrame } from '../../session/frame.js';
import { SessionError } from '../../session/error.js';
import { fsverityDigest } from '../digest.js';
import { bufferSource, ImageReader, usedObjects } from '../image/read.js';
import { merkleOfImage } from '../merkle.js';
import { parseMetadata } from '../metadata.js';
import { checkLabel, checkTag, parseRef } from '../names.js';
import { resolveRef } from '../resolve.js';
import type { Store } from '../store.js';

const SMALL_RECORD = 1 << 20;
const MAX_IMAGE = 1 << 30;

export interface ExportResult {
  id: string;
  objects: number;
  bytes: number;
}

/** Writes the bundle of `ref` to `out`; returns what it wrote. */
export async function exportBundle(store: Store, ref: string, out: Writable): Promise<ExportResult> {
  const parsed = parseRef(ref, { bareLabel: 'error' });
  return store.lock.with('shared', async () => {
    const { id } = await resolveRef(store, parsed);
    const metadata = await fsp.readFile(`${store.commits.path(id)}/metadata.toml`);
    const image = await fsp.readFile(store.commits.imagePath(id));
    const objects = [...usedObjects(ImageReader.open(bufferSource(image))).keys()].sort();
    const tag = parsed.target.kind === 'name' ? parsed.target.name : id;
    const annotations = await annotationsOf(store, id);
    // format 1 when there is nothing to annotate, so older stratum versions still read the bundle
    const format = Object.keys(annotations).length > 0 ? 2 : 1;
    const manifest: Manifest = { format, label: parsed.label, tag, id, objects: objects.length };
    let bytes = 0;
    const write = async (chunk: Uint8Array): Promise<void> => {
      bytes += chunk.length;
      if (!out.write(chunk)) await new Promise<void>((resolve, reject) => {
        out.once('drain', resolve);
        out.once('error', reject);
      });
    };
    await write(BUNDLE_MAGIC);
    await write(encodeRecord('manifest', Buffer.from(JSON.stringify(manifest))));
    await write(encodeRecord('metadata', metadata));
    await write(encodeRecord('image', image));
    if (format === 2) await write(encodeRecord('annotations', Buffer.from(JSON.stringify(annotations))));
    for (const digest of objects) await write(encodeRecord('blob', await fsp.readFile(store.objects.path(digest))));
    await write(END_RECORD);
    return { id, objects: objects.length, bytes };
  });
}

export interface BundleImportResult {
  id: string;
  label: string;
  tags: string[];
  newObjects: number;
  newCommit: boolean;
  /** How many annotations the bundle carried onto the commit. */
  annotations: number;
}

/** Reads a bundle from `input`, checks all of it, then adds it to the store. */
export async function importBundle(store: Store, input: AsyncIterable<Buffer | string>, options: { label?: string; tag?: string } = {}): Promise<BundleImportResult> {
  const reader = new RecordReader(input);
  await reader.magic();
  const manifest = parseManifest(frameOf(await reader.record(SMALL_RECORD, 'the manifest'), 'manifest', SMALL_RECORD).data);
  const label = checkLabel(options.label ?? manifest.label);
  const tag = checkTag(options.tag ?? manifest.tag);
  const existing = await store.tags.read(label, tag);
  if (existing && !(existing.kind === 'id' && existing.id === manifest.id)) {
    throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists; import with --tag <other> to name this commit differently`);
  }

  const metadataText = frameOf(await reader.record(SMALL_RECORD, 'the metadata'), 'metadata', SMALL_RECORD).data;
  const meta = parseMetadata(metadataText.toString('utf8'), manifest.id);
  if (meta.metadataHash !== manifest.id) throw corrupt(`its metadata describes commit ${meta.metadataHash}, not ${manifest.id}`);
  const image = frameOf(await reader.record(MAX_IMAGE, 'the image'), 'image', MAX_IMAGE);
  if (image.name !== manifest.id) throw corrupt(`its image is ${image.name}, not commit ${manifest.id}`);
  const imageReader = ImageReader.open(bufferSource(image.data));
  const needed = usedObjects(imageReader);
  if (merkleOfImage(imageReader).merkle.root !== meta.merkleRoot) throw corrupt(`the Merkle root of its image does not match its metadata`);
  if (needed.size !== manifest.objects) throw corrupt(`the manifest lists ${manifest.objects} objects, the image uses ${needed.size}`);
  const annotations = manifest.format === 2 ? annotationsOfRecord(await reader.record(SMALL_RECORD, 'the annotations')) : {};

  const batch = await store.objects.batch();
  try {
    const received = new Set<string>();
    for (let i = 0; ; i++) {
      const what = `object ${i + 1} of ${needed.size}`;
      const record = await reader.record(maxRecordFor(needed), what);
      if (!record) break;
      const name = record.subarray(0, Math.max(0, record.indexOf(0))).toString('latin1');
      const size = needed.get(name);
      if (size === undefined) throw corrupt(`${what} (${name.slice(0, 64)}) is not used by the commit`);
      if (received.has(name)) throw corrupt(`object ${name} comes twice`);
      const blob = frameOf(record, 'blob', size);
      if (blob.data.length !== size) throw corrupt(`object ${name} has ${blob.data.length} bytes; the image says ${size}`);
      received.add(name);
      await batch.putBuffer(blob.data);
    }
    if (!(await reader.atEnd())) throw corrupt('there are bytes after its end marker');
    for (const digest of needed.keys()) {
      if (!received.has(digest) && !(await store.objects.has(digest))) throw corrupt(`object ${digest} is neither in the bundle nor in the store`);
    }
    return await store.lock.with('shared', async () => {
      const newObjects = (await batch.commit()).length;
      // objects found in the store before the lock may have gone to a gc since
      for (const digest of needed.keys()) {
        if (!store.objects.has(digest)) throw new StratumError('BUSY', `a gc removed objects of commit ${manifest.id} during the import; import the bundle again`);
      }
      const newCommit = await store.commits.add(image.data, meta);
      const tags = [];
      for (const name of new Set([manifest.id, tag])) {
        const current = await store.tags.read(label, name);
        if (current?.kind === 'id' && current.id === manifest.id) {
          tags.push(name);
          continue;
        }
        await store.tags.write(label, name, { kind: 'id', id: manifest.id });
        tags.push(name);
      }
      await store.heads.createIfAbsent(label, manifest.id);
      // the bundle's annotations are set on the commit; annotations it already had on other keys stay
      if (Object.keys(annotations).length > 0) await setAnnotations(store, manifest.id, { set: annotations }, { lockHeld: true });
      return { id: manifest.id, label, tags, newObjects, newCommit, annotations: Object.keys(annotations).length };
    });
  } finally {
    await batch.dispose();
  }
}

function frameOf(record: Buffer | undefined, type: string, maxSize: number) {
  if (!record) throw corrupt(`its ${type} is missing`);
  let frame;
  try {
    frame = decodeFrame(record, { maxSize, digest: fsverityDigest });
  } catch (err) {
    if (err instanceof SessionError) throw new StratumError('CORRUPT_FRAME', err.message, { cause: err });
    throw err;
  }
  if (frame.type !== type) throw corrupt(`expected its ${type}, found a ${frame.type} frame`);
  return frame;
}

function annotationsOfRecord(record: Buffer | undefined): Annotations {
  const text = frameOf(record, 'annotations', SMALL_RECORD).data.toString('utf8');
  try {
    return parseAnnotations(JSON.parse(text));
  } catch (err) {
    throw corrupt(`its annotations are not valid: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** A compressed frame is at most its content plus zstd's worst-case overhead plus the header. */
function maxRecordFor(needed: Map<string, number>): number {
  let largest = 0;
  for (const size of needed.values()) largest = Math.max(largest, size);
  return Math.min(2 ** 32 - 1, largest + Math.ceil(largest / 128) + 4096);
}
