// Trees and stores for the push/pull tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { importDirectory } from '../../src/store/commands/import.js';
import { Store } from '../../src/store/store.js';
import { createHash } from 'node:crypto';

/** Deterministic and incompressible (sha256 in counter mode), so packs are as big as their objects. */
export function noise(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0, off = 0; off < size; i++, off += 32) createHash('sha256').update(`${seed}/${i}`).digest().copy(out, off);
  return out;
}

/** `files` small files of varied sizes, a 2 MiB file, an empty one; the same seed gives the same tree. */
export function writeTree(root: string, files: number, seed = 1): string {
  mkdirSync(join(root, 'sub/deeper'), { recursive: true });
  for (let i = 0; i < files; i++) {
    const dir = i % 3 === 0 ? 'sub' : i % 3 === 1 ? 'sub/deeper' : '.';
    writeFileSync(join(root, dir, `f${i}`), noise(200 + ((i * 7919 + seed) % 16000), `${seed}:${i}`));
  }
  writeFileSync(join(root, 'big'), noise(2 << 20, `${seed}:big`));
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'tiny'), 'inline\n');
  return root;
}

export async function storeWith(dir: string, tree: string, label: string, tag: string): Promise<{ store: Store; id: string }> {
  const store = await Store.open(dir, { create: true });
  const r = await importDirectory(store, tree, { label, tag });
  return { store, id: r.id };
}

export async function objectsIn(store: Store): Promise<string[]> {
  const all: string[] = [];
  for await (const d of store.objects.list()) all.push(d);
  return all.sort();
}
