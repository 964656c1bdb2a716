// Writes the Merkle cache of a fake commit over and over until killed:
// `merkle-cache-worker <store> <dest> <id> <leaves>` (the leaves are sha256 of their index).
import { createHash } from 'node:crypto';
import { writeMerkleCache } from '../../../src/store/head/edits.js';
import { merkleLevels } from '../../../src/store/merkle.js';
import { Store } from '../../../src/store/store.js';

const [root, dest, id, count] = process.argv.slice(2);
const store = await Store.open(root!);
const n = Number(count);
const paths = Array.from({ length: n }, (_, i) => `/dir/file-${String(i).padStart(8, '0')}`);
const levels = merkleLevels(paths.map((p) => createHash('sha256').update(p).digest()));
process.stdout.write('ready\n');
for (;;) await writeMerkleCache(store.tmp, dest!, { id: id!, paths, levels });
