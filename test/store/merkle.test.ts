import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { merkleLevels } from '../../src/store/merkle.js';

// merkleLevels may take the base tree's nodes where a node's two children are the base's children
// at the same place (a commit's tree beside its parent's). Whatever the base, the levels must be
// the ones built from the leaves alone.

const leafOf = (s: string): Buffer => Buffer.from(createHash('sha256').update(s).digest()) as Buffer;
const hexLevels = (levels: Buffer[][]): string[][] => levels.map((l) => l.map((b) => b.toString('hex')));

test('levels built beside a base are the levels built from the leaves alone: insertions, deletions, edits, any size', () => {
  let seed = 7;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  for (let round = 0; round < 200; round++) {
    const n = 1 + rnd(70);
    const base = Array.from({ length: n }, (_, i) => leafOf(`${round}/${i}`));
    const baseLevels = merkleLevels(base);
    const next: Buffer[] = base.map((b) => Buffer.from(b)); // equal bytes, other buffers
    for (let c = rnd(4); c >= 0; c--) {
      const at = rnd(next.length + 1);
      const kind = rnd(3);
      if (kind === 0) next.splice(at, 0, leafOf(`new ${round} ${c}`));
      else if (kind === 1 && next.length > 1) next.splice(Math.min(at, next.length - 1), 1);
      else if (next.length > 0) next[Math.min(at, next.length - 1)] = leafOf(`edit ${round} ${c}`);
    }
    assert.equal(hexLevels(merkleLevels(next, baseLevels)), hexLevels(merkleLevels(next)), `round ${round}`);
  }
});

test('a base of another shape (fewer levels, one leaf, none) changes nothing', () => {
  const leaves = Array.from({ length: 9 }, (_, i) => leafOf(`x${i}`));
  const want = hexLevels(merkleLevels(leaves));
  for (const base of [[], merkleLevels([leaves[0]!]), merkleLevels(leaves.slice(0, 3)), merkleLevels(leaves.concat(leaves))]) {
    assert.equal(hexLevels(merkleLevels(leaves, base)), want);
  }
});

test.run();
