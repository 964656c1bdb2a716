// Writes a cache of a fake commit over and over until killed:
// `cache-worker <store> merkle|tree <dest> <id> <leaves>` (leaf i: sha256 of its path; the tree:
// one directory of that many small files).
import { createHash } from 'node:crypto';
import { writeMerkleCache } from '../../../src/store/head/edits.js';
import { writeTreeCache } from '../../../src/store/head/tree-cache.js';
import { S_IFDIR, S_IFREG } from '../../../src/store/image/erofs.js';
import { newInode } from '../../../src/store/image/tree.js';
import { merkleLevels } from '../../../src/store/merkle.js';
import { Store } from '../../../src/store/store.js';

const [root, kind, dest, id, count] = process.argv.slice(2);
const store = await Store.open(root!);
const n = Number(count);
const paths = Array.from({ length: n }, (_, i) => `/dir/file-${String(i).padStart(8, '0')}`);
const levels = merkleLevels(Buffer.concat(paths.map((p) => createHash('sha256').update(p).digest())));
const tree = { root: newInode({ mode: S_IFDIR | 0o755 }) };
for (const p of paths) tree.root.children!.set(p.slice(5), { inode: newInode({ mode: S_IFREG | 0o644, content: Buffer.from(p) }), hardlink: false });
const write = (): Promise<void> => (kind === 'merkle' ? writeMerkleCache(store.tmp, dest!, { id: id!, paths, levels }) : writeTreeCache(store.tmp, dest!, id!, tree));
await write(); // one whole file in place: what follows are replacements, killed somewhere in them
process.stdout.write('ready\n');
for (;;) await write();
