// <store>/cache/oci.json: what push learned and need not learn again. Per pack content (the sha256
// of its digest list) the blob digests it made; per large object its sha256; per registry the repo
// each label was last pushed to (the candidates for cross-repository mounts); per commit the digest
// of its manifest (so a re-push is one HEAD request). Machine-local, safe
// to delete; written whole through the store's tmp/ (writeFileAtomic), last writer wins.
//
// Public surface: OciCache, loadCache, saveCache, packKey.
import { createHash } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../store/store.js';
import { writeFileAtomic } from '../store/tmp.js';
import type { BlobRef } from './registry.js';

export interface OciCache {
  packs: Record<string, { pack: BlobRef; index: BlobRef }>;
  objects: Record<string, string>;
  remotes: Record<string, Record<string, string>>;
  /** commit id -> the digest of the manifest push wrote for it (the same everywhere: it is deterministic). */
  commits: Record<string, string>;
}

const MAX_PACKS = 200_000;

export function packKey(digests: readonly string[]): string {
  return createHash('sha256').update(`stratum-pack 1\n${digests.join('\n')}`).digest('hex');
}

export function loadCache(store: Store): OciCache {
  try {
    const doc = JSON.parse(readFileSync(join(store.cacheDir, 'oci.json'), 'utf8')) as Partial<OciCache>;
    return { packs: doc.packs ?? {}, objects: doc.objects ?? {}, remotes: doc.remotes ?? {}, commits: doc.commits ?? {} };
  } catch {
    return { packs: {}, objects: {}, remotes: {}, commits: {} };
  }
}

export async function saveCache(store: Store, cache: OciCache): Promise<void> {
  // a crude bound: start over rather than grow without limit
  if (Object.keys(cache.packs).length > MAX_PACKS) cache.packs = {};
  if (Object.keys(cache.objects).length > MAX_PACKS) cache.objects = {};
  if (Object.keys(cache.commits).length > MAX_PACKS) cache.commits = {};
  try {
    await fsp.mkdir(store.cacheDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(store.tmp, join(store.cacheDir, 'oci.json'), JSON.stringify(cache));
  } catch {
    // a cache that cannot be written only costs time next push
  }
}
