// npm run bench:merkle — a commit's Merkle tree at 10k and 100k leaves: every level built the way
// the code did before (one Buffer a node, node:crypto's hash() called from JavaScript per node;
// kept here only, as the baseline) against flat levels hashed in C (src/store/merkle.ts,
// native/src/verity.c merkleLevel); the same after one leaf inserted in the middle, each reusing
// the base tree's nodes left of it; and reading and writing refs/<label>/head.merkle at 100k
// leaves (the file's bytes are the same both ways: the old reader made a Buffer per node).
// Baseline and subject alternate, medians of 7.
import { createHash, hash, randomFillSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { type MerkleCache, readMerkleCache, writeMerkleCache } from '../src/store/head/edits.js';
import { commonLeaves, merkleLevels, summaryOf } from '../src/store/merkle.js';
import type { CommitMetadata } from '../src/store/metadata.js';
import { Store } from '../src/store/store.js';
import { writeFileAtomic } from '../src/store/tmp.js';
import { compare, ratio, row } from './report.js';

const RUNS = 7;
const ms = (s: number): string => `${(s * 1000).toFixed(1)} ms`;

// ---- the former implementation (baseline only) -------------------------------------------------

const sha256 = (data: Uint8Array): Buffer => hash('sha256', data, 'buffer') as unknown as Buffer;

/** The levels as arrays of 32-byte Buffers; a node whose children are the base's is the base's node. */
function oldLevels(leaves: Buffer[], base?: Buffer[][]): Buffer[][] {
  const levels: Buffer[][] = [leaves];
  const scratch = Buffer.allocUnsafe(65);
  scratch[0] = 1;
  let level = leaves;
  for (let k = 0; level.length > 1; k++) {
    const next: Buffer[] = new Array(Math.ceil(level.length / 2));
    const was = base?.[k];
    const wasNext = base?.[k + 1];
    const reusable = was !== undefined && wasNext !== undefined ? Math.min(level.length, was.length - (was.length % 2)) : 0;
    for (let i = 0; i + 1 < level.length; i += 2) {
      if (i + 1 < reusable && (level[i] === was![i] || level[i]!.equals(was![i]!)) && (level[i + 1] === was![i + 1] || level[i + 1]!.equals(was![i + 1]!))) {
        next[i / 2] = wasNext![i / 2]!;
        continue;
      }
      level[i]!.copy(scratch, 1);
      level[i + 1]!.copy(scratch, 33);
      next[i / 2] = sha256(scratch);
    }
    if (level.length % 2 === 1) next[next.length - 1] = level[level.length - 1]!;
    levels.push(next);
    level = next;
  }
  return levels;
}

/** head.merkle's body decoded the former way: a string per path, a Buffer per node. */
function oldRead(buf: Buffer): { paths: string[]; levels: Buffer[][] } {
  const n = buf.readUInt32LE(4);
  createHash('sha256').update(buf.subarray(72)).digest();
  let pos = 72;
  const paths: string[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const len = buf.readUInt16LE(pos);
    paths[i] = buf.toString('latin1', pos + 2, pos + 2 + len);
    pos += 2 + len;
  }
  const levels: Buffer[][] = [];
  for (let len = n; ; len = Math.ceil(len / 2)) {
    const level: Buffer[] = new Array(len);
    for (let i = 0; i < len; i++, pos += 32) level[i] = buf.subarray(pos, pos + 32);
    levels.push(level);
    if (len <= 1) break;
  }
  return { paths, levels };
}

/** head.merkle encoded the former way (the same bytes), one node at a time. */
function oldEncode(id: string, paths: string[], levels: Buffer[][]): Buffer {
  let size = 72;
  for (const p of paths) size += 2 + p.length;
  for (const level of levels) size += 32 * level.length;
  const file = Buffer.alloc(size);
  file.writeUInt32LE(0x324b4d53, 0);
  file.writeUInt32LE(paths.length, 4);
  file.write(id, 8, 'hex');
  let pos = 72;
  for (const p of paths) {
    file.writeUInt16LE(p.length, pos);
    pos += 2;
    for (let i = 0; i < p.length; i++) file[pos++] = p.charCodeAt(i);
  }
  for (const level of levels) for (const node of level) { file.set(node, pos); pos += 32; }
  createHash('sha256').update(file.subarray(72)).digest().copy(file, 40);
  return file;
}

// ---- the runs -------------------------------------------------------------------------------

const gc = (globalThis as { gc?: () => void }).gc;
console.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; medians of ${RUNS}, old and new alternately${gc ? '' : ' (run with --expose-gc for steadier figures)'}`);
row('', 'old (JS, per node)', 'new (C, flat)', 'old / new');
for (const n of [10_000, 100_000]) {
  const flat = randomFillSync(Buffer.alloc(n * 32));
  const perNode = Array.from({ length: n }, (_, i) => Buffer.from(flat.subarray(i * 32, i * 32 + 32)));
  const before = (): void => gc?.();
  let oldRoot = '';
  let newRoot = '';
  const [a, b] = await compare(RUNS, () => { oldRoot = oldLevels(perNode).at(-1)![0]!.toString('hex'); }, () => { newRoot = summaryOf(merkleLevels(flat)).root; }, before);
  if (oldRoot !== newRoot) throw new Error('the two ways disagree');
  row(`${n / 1000}k leaves: all levels`, ms(a), ms(b), ratio(a / b));

  // one leaf inserted in the middle: left of it every node is the base's
  const inserted = randomFillSync(Buffer.alloc(32));
  const nextFlat = Buffer.concat([flat.subarray(0, (n / 2) * 32), inserted, flat.subarray((n / 2) * 32)]);
  const nextPerNode = [...perNode.slice(0, n / 2), inserted, ...perNode.slice(n / 2)];
  const oldBase = oldLevels(perNode);
  const newBase = merkleLevels(flat);
  const [c, d] = await compare(RUNS, () => { oldRoot = oldLevels(nextPerNode, oldBase).at(-1)![0]!.toString('hex'); }, () => { newRoot = summaryOf(merkleLevels(nextFlat, newBase, commonLeaves(nextFlat, newBase[0]!))).root; }, before);
  if (oldRoot !== newRoot) throw new Error('the two ways disagree');
  row(`${n / 1000}k: 1 inserted at n/2, base reused`, ms(c), ms(d), ratio(c / d));
}

// head.merkle at 100k leaves, paths as in bench:commit's tree
const work = mkdtempSync(join(tmpdir(), 'stratum-bench-merkle-'));
try {
  const store = await Store.open(join(work, 'store'), { create: true });
  const n = 100_000;
  const paths = ['/'];
  for (let d = 0; d < n / 1000; d++) {
    paths.push(`/d${d}`);
    for (let s = 0; s < 10; s++) {
      paths.push(`/d${d}/s${s}`);
      for (let f = 0; f < 100; f++) paths.push(`/d${d}/s${s}/f${d * 1000 + s * 100 + f}.dat`);
    }
  }
  paths.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const flat = randomFillSync(Buffer.alloc(paths.length * 32));
  const levels = merkleLevels(flat);
  const summary = summaryOf(levels);
  const id = 'ab'.repeat(32);
  const meta: CommitMetadata = { merkleRoot: summary.root, metadataHash: id, timestamp: '', files: { count: paths.length, totalSize: 0 }, merkle: { leafCount: paths.length, treeDepth: summary.depth } };
  const cache: MerkleCache = { id, paths, levels };
  const file = join(work, 'head.merkle');
  const oldLevelsOfCache = levels.map((l) => Array.from({ length: l.length / 32 }, (_, i) => l.subarray(i * 32, i * 32 + 32)));
  await writeMerkleCache(store.tmp, file, cache);
  if (!oldEncode(id, paths, oldLevelsOfCache).equals(readFileSync(file))) throw new Error('the two encodings disagree');
  console.log(`head.merkle, ${paths.length} leaves, ${(readFileSync(file).length / 1e6).toFixed(1)} MB (read: from the page cache, checksum included)`);
  const [r1, r2] = await compare(RUNS, () => { oldRead(readFileSync(file)); }, () => { if (!readMerkleCache(file, id, meta)) throw new Error('refused'); }, () => gc?.());
  row('read', ms(r1), ms(r2), ratio(r1 / r2));
  const [w1, w2] = await compare(RUNS, () => writeFileAtomic(store.tmp, file, oldEncode(id, paths, oldLevelsOfCache), { mode: 0o600 }), () => writeMerkleCache(store.tmp, file, cache), () => gc?.());
  row('write (tmp, fsync, rename)', ms(w1), ms(w2), ratio(w1 / w2));
} finally {
  rmSync(work, { recursive: true, force: true });
}
