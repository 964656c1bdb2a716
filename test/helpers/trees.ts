// Small source trees for import tests: { 'a/b.txt': 'text' | Buffer | size } -> files on disk.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pseudoRandomBytes } from './bytes.js';

export type TreeSpec = Record<string, string | Buffer | number>;

export function makeTree(root: string, spec: TreeSpec): string {
  mkdirSync(root, { recursive: true });
  for (const [path, content] of Object.entries(spec)) {
    const full = join(root, path);
    mkdirSync(dirname(full), { recursive: true });
    writeFileSync(full, typeof content === 'number' ? pseudoRandomBytes(content, content + path.length) : content);
  }
  return root;
}
