// Test vectors (test/vectors/image): small dumps and the sha256 of the image mkcomposefs 1.0.8
// writes for each, so CI checks byte identity without the C tool. See the README there.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { WriteOptions } from '../../../src/store/image/layout.js';

export const VECTOR_DIR = join(new URL('.', import.meta.url).pathname, '../../../../test/vectors/image');

export interface Vector {
  file: string;
  dump: Buffer;
  options: WriteOptions;
  /** sha256 hex of mkcomposefs' image, or 'refused' when mkcomposefs rejects the tree. */
  expected: string;
}

export function loadVectors(): Vector[] {
  const out: Vector[] = [];
  for (const line of readFileSync(join(VECTOR_DIR, 'expected.txt'), 'utf8').split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const [file, flags, expected] = line.split(' ') as [string, string, string];
    const options: WriteOptions = {};
    for (const flag of flags === '-' ? [] : flags.split(',')) {
      const m = /^--(min|max)-version=(\d)$/.exec(flag);
      if (!m) throw new Error(`bad flag ${flag}`);
      // mkcomposefs: giving only one of the two makes the other 0.
      if (m[1] === 'min') options.minVersion = Number(m[2]);
      else options.maxVersion = Number(m[2]);
    }
    if (flags !== '-' && options.minVersion === undefined) options.minVersion = 0;
    if (flags !== '-' && options.maxVersion === undefined) options.maxVersion = 0;
    out.push({ file, dump: readFileSync(join(VECTOR_DIR, file)), options, expected });
  }
  return out;
}

export function vectorFiles(): string[] {
  return readdirSync(VECTOR_DIR).filter((f) => f.endsWith('.dump')).sort();
}
