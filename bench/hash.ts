// Why bulk hashing uses node:crypto and not @noble/hashes: sha256 throughput on the same buffers,
// and the fs-verity digest built on it. `npm run bench:hash`.
import { createHash, hash, randomFillSync } from 'node:crypto';
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { fsverityDigest } from '../src/store/digest.js';
import { mbps, median, ratio, row } from './report.js';

const data = randomFillSync(Buffer.alloc(256 << 20));
const MiB = 1 << 20;
const block = 4096;

console.log(`hashing ${data.length / MiB} MiB, median of 3 runs`);
row('', 'throughput', 'vs noble');
const noble = await median(3, () => {
  for (let i = 0; i < data.length; i += MiB) nobleSha256(data.subarray(i, i + MiB));
});
const crypto1m = await median(3, () => {
  for (let i = 0; i < data.length; i += MiB) createHash('sha256').update(data.subarray(i, i + MiB)).digest();
});
const crypto4k = await median(3, () => {
  for (let i = 0; i < data.length; i += block) hash('sha256', data.subarray(i, i + block), 'buffer');
});
const noble4k = await median(1, () => {
  for (let i = 0; i < data.length; i += block) nobleSha256(data.subarray(i, i + block));
});
const verity = await median(3, () => {
  fsverityDigest(data);
});
row('@noble/hashes sha256, 1 MiB', mbps(data.length, noble), ratio(1));
row('node:crypto sha256, 1 MiB', mbps(data.length, crypto1m), ratio(noble / crypto1m));
row('@noble/hashes sha256, 4 KiB blocks', mbps(data.length, noble4k), ratio(noble / noble4k));
row('node:crypto hash(), 4 KiB blocks', mbps(data.length, crypto4k), ratio(noble / crypto4k));
row('fsverityDigest (node:crypto)', mbps(data.length, verity), ratio(noble / verity));
