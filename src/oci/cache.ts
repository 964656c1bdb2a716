// <store>/cache/oci.json: what push learned and need not learn again. Per pack content (the sha256
// of its digest list) the blob digests it made; per large object its sha256; per registry the repo
// each label was last pushed to (the candidates for cross-repository mounts); per commit the digest
// of its manifest (so a re-push is one HEAD request). Machine-local, safe
// to delete; written whole (temp file, rename), last writer wins.
//
// Public surface: OciCache, loadCache, saveCache, packKey.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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

export function loadCache(storeRoot: string): OciCache {
  try {
    const doc = JSON.parse(readFileSync(join(storeRoot, 'cache', 'oci.json'), 'utf8')) as Partial<OciCache>;
    return { packs: doc.packs ?? {}, objects: doc.objects ?? {}, remotes: doc.remotes ?? {}, commits: doc.commits ?? {} };
  } catch {
    return { packs: {}, objects: {}, remotes: {}, commits: {} };
  }
}

export function saveCache(storeRoot: string, cache: OciCache): void {
  // a crude bound: start over rather than grow without limit
  if (Object.keys(cache.packs).length > MAX_PACKS) cache.packs = {};
  if (Object.keys(cache.objects).length > MAX_PACKS) cache.objects = {};
  if (Object.keys(cache.commits).length > MAX_PACKS) cache.commits = {};
  const dir = join(storeRoot, 'cache');
  try {
    mkdirSync(dir, { recursive: true });
    const temp = join(dir, `.oci.json.${process.pid}`);
    writeFileSync(temp, JSON.stringify(cache));
    renameSync(temp, join(dir, 'oci.json'));
  } catch {
    // a cache that cannot be written only costs time next push
  }
}
