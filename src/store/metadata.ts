// metadata.toml of a commit (DESIGN.md "Commit metadata"): format and parse, no I/O.
//
// Public surface: CommitMetadata, formatMetadata, parseMetadata.
import { parse, stringify } from 'smol-toml';
import { isDigest } from './digest.js';
import { StratumError } from './error.js';

export interface CommitMetadata {
  /** Merkle root over the commit's paths (src/store/merkle.ts). */
  merkleRoot: string;
  /** fs-verity digest of commit.cfs: the commit id. */
  metadataHash: string;
  /** ISO 8601 UTC, when the commit was made. */
  timestamp: string;
  parentCommit?: string;
  files: { count: number; totalSize: number };
  merkle: { leafCount: number; treeDepth: number };
}

export function formatMetadata(m: CommitMetadata): string {
  const commit: Record<string, string> = { merkle_root: m.merkleRoot, metadata_hash: m.metadataHash, timestamp: m.timestamp };
  if (m.parentCommit) commit.parent_commit = m.parentCommit;
  return stringify({
    commit,
    files: { count: m.files.count, total_size: m.files.totalSize },
    merkle: { leaf_count: m.merkle.leafCount, tree_depth: m.merkle.treeDepth },
  }) + '\n';
}

export function parseMetadata(text: string, where: string): CommitMetadata {
  const bad = (why: string): never => {
    throw new StratumError('CORRUPT_STORE', `metadata of commit ${where} is unreadable: ${why}`);
  };
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    return bad((err as Error).message.split('\n')[0]!);
  }
  const table = (name: string): Record<string, unknown> => {
    const t = doc[name];
    return t && typeof t === 'object' && !Array.isArray(t) ? (t as Record<string, unknown>) : bad(`no [${name}] table`);
  };
  const digest = (t: Record<string, unknown>, key: string): string => {
    const v = t[key];
    return typeof v === 'string' && isDigest(v) ? v : bad(`${key} is not a sha256 digest`);
  };
  const count = (t: Record<string, unknown>, key: string): number => {
    const v = t[key];
    const n = typeof v === 'bigint' ? Number(v) : v;
    return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : bad(`${key} is not a count`);
  };
  const commit = table('commit');
  const files = table('files');
  const merkle = table('merkle');
  const timestamp = commit.timestamp;
  if (typeof timestamp !== 'string' || Number.isNaN(Date.parse(timestamp))) bad('timestamp is not a date');
  const result: CommitMetadata = {
    merkleRoot: digest(commit, 'merkle_root'),
    metadataHash: digest(commit, 'metadata_hash'),
    timestamp: timestamp as string,
    files: { count: count(files, 'count'), totalSize: count(files, 'total_size') },
    merkle: { leafCount: count(merkle, 'leaf_count'), treeDepth: count(merkle, 'tree_depth') },
  };
  if (commit.parent_commit !== undefined) result.parentCommit = digest(commit, 'parent_commit');
  return result;
}
