import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { merkleLevel } from '../../src/native/verity.js';
import { commonLeaves, levelsBeside, merkleLevels, merkleRoot, summaryOf, updateLeaf } from '../../src/store/merkle.js';

// The tree is RFC 6962's (src/store/merkle.ts): leaves are given as hashes, node = sha256(0x01 ‖
// left ‖ right), the left subtree of n leaves holding the largest power of two below n. The levels
// are built bottom-up in C, one flat Buffer a level, optionally copying a base tree's nodes over
// the leaves both trees share from the start. Whatever the base and the prefix, every level must
// be the one this reference gives for the leaves alone.

const sha = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const leafOf = (s: string): Buffer => sha(Buffer.from(s));
const leavesOf = (tag: string, n: number): Buffer => Buffer.concat(Array.from({ length: n }, (_, i) => leafOf(`${tag}/${i}`)));
const at = (flat: Buffer, i: number): Buffer => flat.subarray(i * 32, i * 32 + 32);

/** RFC 6962 section 2.1 as written: MTH(D[n]) = sha256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n])), k the largest power of two < n. */
function referenceRoot(leaves: Buffer[]): Buffer {
  if (leaves.length === 0) return sha(Buffer.alloc(0));
  if (leaves.length === 1) return leaves[0]!;
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return sha(Buffer.from([1]), referenceRoot(leaves.slice(0, k)), referenceRoot(leaves.slice(k)));
}

/**
 * Every level by the same definition: node i of level j is the tree hash of the leaves
 * [i·2^j, min((i+1)·2^j, n)) (the subtrees RFC 6962's split gives at that height).
 */
function referenceLevels(flat: Buffer): Buffer[] {
  const leaves = Array.from({ length: flat.length / 32 }, (_, i) => at(flat, i));
  const levels: Buffer[] = [Buffer.from(flat)];
  for (let j = 1, size = leaves.length; size > 1; j++) {
    size = Math.ceil(size / 2);
    const nodes: Buffer[] = [];
    for (let i = 0; i < size; i++) nodes.push(referenceRoot(leaves.slice(i * 2 ** j, (i + 1) * 2 ** j)));
    levels.push(Buffer.concat(nodes));
  }
  return levels;
}

const hex = (levels: Buffer[]): string[] => levels.map((l) => l.toString('hex'));

let seed = 7;
const rnd = (n: number): number => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % n;
};

/** `base` with `same` leading leaves kept and the rest changed: leaves inserted, deleted, replaced. */
function derived(base: Buffer, same: number, tag: string): Buffer {
  const rest: Buffer[] = Array.from({ length: base.length / 32 - same }, (_, i) => Buffer.from(at(base, same + i)));
  if (rest.length > 0) rest[0] = leafOf(`${tag} changed`); // the prefix ends exactly at `same`
  for (let c = rnd(4); c >= 0; c--) {
    const where = rnd(rest.length + 1);
    const kind = rnd(3);
    if (kind === 0) rest.splice(where, 0, leafOf(`${tag} new ${c}`));
    else if (kind === 1 && rest.length > 1) rest.splice(Math.min(where, rest.length - 1), 1);
    else if (rest.length > 0) rest[Math.min(where, rest.length - 1)] = leafOf(`${tag} edit ${c}`);
  }
  for (let c = rnd(40); c > 0; c--) rest.push(leafOf(`${tag} tail ${c}`)); // a tree of another size
  return Buffer.concat([base.subarray(0, same * 32), ...rest]);
}

test('the levels from C are RFC 6962 for every leaf count from 0 to 300 and a few large ones', () => {
  for (const n of [...Array.from({ length: 301 }, (_, i) => i), 1023, 1024, 1025, 4097, 10_001]) {
    const leaves = leavesOf(`n${n}`, n);
    const levels = merkleLevels(leaves);
    const root = summaryOf(levels).root;
    const want = referenceRoot(Array.from({ length: n }, (_, i) => at(leaves, i))).toString('hex');
    assert.is(root, want, `${n} leaves: root`);
    assert.is(merkleRoot(leaves).root, want);
    if (n <= 300 || n === 1025) assert.equal(hex(levels), hex(referenceLevels(leaves)), `${n} leaves: every level`);
    assert.is(summaryOf(levels).leafCount, n);
  }
  assert.is(summaryOf(merkleLevels(Buffer.alloc(0))).root, sha(Buffer.alloc(0)).toString('hex'), 'an empty tree: sha256 of nothing');
});

test('levels built beside a base of another size, over a random common prefix, are the levels of the leaves alone', () => {
  const sizes = [...Array.from({ length: 120 }, () => 1 + rnd(300)), 1, 2, 3, 4, 1024, 1025, 5000];
  for (const [round, n] of sizes.entries()) {
    const base = leavesOf(`base${round}`, n);
    const baseLevels = merkleLevels(base);
    for (const same of [0, rnd(n + 1), rnd(n + 1), n - 1, n].filter((s) => s >= 0)) {
      const next = derived(base, same, `${round}/${same}`);
      const shared = commonLeaves(next, base);
      assert.ok(shared >= Math.min(same, next.length / 32), `round ${round}: the prefix is at least what was kept`);
      const want = hex(referenceLevels(next));
      assert.equal(hex(merkleLevels(Buffer.from(next), baseLevels, shared)), want, `round ${round}, ${n} → ${next.length / 32} leaves, same ${shared}`);
      // any shorter prefix is true as well
      assert.equal(hex(merkleLevels(Buffer.from(next), baseLevels, rnd(shared + 1))), want);
    }
  }
});

test('a base of another shape (fewer levels, one leaf, none, more), with any true prefix, changes nothing', () => {
  const leaves = leavesOf('x', 9);
  const want = hex(merkleLevels(leaves));
  for (const base of [[Buffer.alloc(0)], merkleLevels(at(leaves, 0)), merkleLevels(leaves.subarray(0, 3 * 32)), merkleLevels(Buffer.concat([leaves, leaves]))]) {
    for (let same = 0; same <= Math.min(9, base[0]!.length / 32); same++) assert.equal(hex(merkleLevels(leaves, base, same)), want);
  }
  assert.equal(hex(merkleLevels(leaves, undefined, 5)), want, 'no base: a prefix alone reuses nothing');
  assert.equal(hex(merkleLevels(leaves, merkleLevels(leaves), 1000)), want, 'a prefix longer than the trees is cut to them');
});

test("levelsBeside: a commit's levels beside its base, the root's leaf changed and names added or removed after a prefix", () => {
  for (let round = 0; round < 60; round++) {
    const n = 1 + rnd(400);
    const base = leavesOf(`beside${round}`, n);
    const baseLevels = merkleLevels(base);
    const next = derived(base, rnd(n + 1), `beside${round}`);
    if (next.length > 0 && rnd(4) > 0) leafOf(`root ${round}`).copy(next, 0); // leaf 0, the root path's, mostly changed
    const want = hex(referenceLevels(next));
    assert.equal(hex(levelsBeside(Buffer.from(next), baseLevels)), want, `round ${round}: ${n} → ${next.length / 32} leaves`);
  }
  assert.equal(hex(levelsBeside(leavesOf('e', 5), [Buffer.alloc(0)])), hex(referenceLevels(leavesOf('e', 5))), 'an empty base');
});

test('commonLeaves counts the leading equal hashes, across its chunks', () => {
  const a = leavesOf('c', 5000);
  for (const k of [0, 1, 31, 1023, 1024, 1025, 2048, 4999]) {
    const b = Buffer.from(a);
    b[k * 32 + rnd(32)] ^= 1;
    assert.is(commonLeaves(a, b), k);
  }
  assert.is(commonLeaves(a, Buffer.from(a)), 5000);
  assert.is(commonLeaves(a, a.subarray(0, 300 * 32)), 300, 'a shorter tree: all of it');
  assert.is(commonLeaves(a, Buffer.alloc(0)), 0);
});

test('updateLeaf rehashes one path: the levels of a full rebuild, for every leaf of many sizes', () => {
  for (const n of [1, 2, 3, 5, 8, 13, 64, 100, 257]) {
    const leaves = Buffer.from(leavesOf(`u${n}`, n));
    const levels = merkleLevels(Buffer.from(leaves));
    for (let i = 0; i < n; i++) {
      const leaf = leafOf(`u${n} new ${i}`);
      updateLeaf(levels, i, leaf);
      leaf.copy(leaves, i * 32);
      assert.equal(hex(levels), hex(merkleLevels(Buffer.from(leaves))), `${n} leaves, leaf ${i}`);
    }
  }
  assert.throws(() => updateLeaf(merkleLevels(leavesOf('v', 4)), 4, leafOf('x')), /no leaf 4/);
});

test('merkleLevel refuses levels that are not whole nodes and ranges outside the next level', () => {
  const level = leavesOf('r', 5);
  assert.throws(() => merkleLevel(level.subarray(1), Buffer.alloc(96), 0, 3), RangeError);
  assert.throws(() => merkleLevel(level, Buffer.alloc(64), 0, 2), RangeError);
  assert.throws(() => merkleLevel(level, Buffer.alloc(96), 2, 4), RangeError);
  assert.throws(() => merkleLevel(level, Buffer.alloc(96), 2, 1), RangeError);
  assert.throws(() => merkleLevel(level, 'x' as unknown as Uint8Array, 0, 1), TypeError);
  assert.throws(() => merkleLevel(level, Buffer.alloc(96), -1, 1), TypeError);
  const next = Buffer.alloc(96);
  merkleLevel(level, next, 1, 2);
  assert.ok(next.subarray(0, 32).equals(Buffer.alloc(32)) && next.subarray(64).equals(Buffer.alloc(32)), 'only the nodes asked for are written');
  assert.ok(next.subarray(32, 64).equals(sha(Buffer.from([1]), at(level, 2), at(level, 3))));
  merkleLevel(level, next, 2, 3);
  assert.ok(next.subarray(64).equals(at(level, 4)), 'the odd last node is carried up');
});

test.run();
