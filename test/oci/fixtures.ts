// Trees and stores for the push/pull tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { importDirectory } from '../../src/store/commands/import.js';
import { Store } from '../../src/store/store.js';
import { randomBytes } from 'node:crypto';

/** `files` small files of varied sizes (random, so incompressible: packs are as big as their objects), a 2 MiB file, an empty one. */
export function writeTree(root: string, files: number, seed = 1): string {
  mkdirSync(join(root, 'sub/deeper'), { recursive: true });
  for (let i = 0; i < files; i++) {
    const dir = i % 3 === 0 ? 'sub' : i % 3 === 1 ? 'sub/deeper' : '.';
    writeFileSync(join(root, dir, `f${i}`), randomBytes(200 + ((i * 7919 + seed) % 16000)));
  }
  writeFileSync(join(root, 'big'), randomBytes(2 << 20));
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
