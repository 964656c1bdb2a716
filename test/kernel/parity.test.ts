import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { lutimensNs } from '../../src/native/files.js';
import { importDirectory } from '../../src/store/commands/import.js';
import type { ByteString } from '../../src/store/image/tree.js';
import { Store } from '../../src/store/store.js';
import { diffViews, maskRecent } from '../store/image/view.js';
import { commitView, dirView, kernelUnsupported } from '../store/head/kernel.js';
import { Random, makeBase, mountBudget, randomOps } from '../store/head/ops.js';
import { fuseUnavailable, tempDir } from '../fuse/mounts.js';
import { S, kernelView, ok, withCliMount } from './mounts.js';

// Kernel mode and FUSE mode give the same HEAD (issue #8). Per seed, one random base
// (test/store/head/ops.ts) is imported as labels k and f of one store; `stratum mount k --mode
// kernel` and `stratum mount f --mode fuse` get the same random operations. Every operation's
// outcome (errnos included) and the final views must match: names, types, modes, owners, sizes,
// contents, xattrs and link counts, and times wherever the operations set them. Times the clock
// set (creations, writes, a dir's mtime when an entry comes or goes) differ between the two runs:
// they are compared as "recent", then pinned to one value through both mounts, so the pinned views
// must match exactly, each HEAD mounted the other way shows that same view, and `stratum commit
// k:t` and `stratum commit f:t` give the same commit id (an id covers every mtime).
// Budget: STRATUM_FUSE_SEEDS (default 3) x STRATUM_FUSE_OPS (default 40), as for
// test/fuse/differential; STRATUM_SEED=<n> replays one.

const { seeds, ops: OPS } = mountBudget(3);
const why = kernelUnsupported ?? fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`kernel/FUSE parity test skipped: ${why}`);

const PINNED = { sec: 1_500_000_000, nsec: 123_456_789 };

/** Every path (latin1, as the views key them) -> its link count, and the paths deepest first. */
function walk(root: string): { links: Map<ByteString, number>; deepestFirst: Buffer[] } {
  const links = new Map<ByteString, number>();
  const deepestFirst: Buffer[] = [];
  const visit = (abs: Buffer, path: ByteString): void => {
    if (path === '/.stratum') return; // kernel mode's control dir (see kernelView)
    const st = lstatSync(abs);
    links.set(path, st.nlink);
    if (st.isDirectory()) {
      for (const name of readdirSync(abs, { encoding: 'buffer' }) as Buffer[]) {
        visit(Buffer.concat([abs, Buffer.from('/'), name]), `${path === '/' ? '' : path}/${name.toString('latin1')}`);
      }
    }
    deepestFirst.push(abs);
  };
  visit(Buffer.from(root), '/');
  return { links, deepestFirst };
}

/**
 * Sets every time the clock set (mtime at or after `since`) to PINNED, children before their
 * directory: pinning a child may copy its directory up, and a copy-up keeps the directory's
 * times, so the directory is pinned after it and stays pinned.
 */
function pinClockTimes(root: string, since: number): number {
  let pinned = 0;
  for (const abs of walk(root).deepestFirst) {
    if (lstatSync(abs).mtimeMs / 1000 < since) continue;
    lutimensNs(abs, PINNED, PINNED);
    pinned++;
  }
  return pinned;
}

/** Gives every path of the source tree its own old mtime, so only what the clock sets later is recent. */
function ageTree(root: string): void {
  walk(root).deepestFirst.forEach((abs, i) => lutimensNs(abs, { sec: 1_400_000_000 + i * 1000, nsec: i * 7919 }));
}

/** Path by path (paths are latin1 byte strings, shown as UTF-8). */
function same<V>(a: Map<ByteString, V>, b: Map<ByteString, V>, what: string): void {
  const problems = [...new Set([...a.keys(), ...b.keys()])].filter((k) => JSON.stringify(a.get(k)) !== JSON.stringify(b.get(k)))
    .slice(0, 8).map((k) => `${JSON.stringify(Buffer.from(k, 'latin1').toString())}: ${JSON.stringify(a.get(k))} != ${JSON.stringify(b.get(k))}`);
  assert.equal(problems, [], `${what}:\n  ${problems.join('\n  ')}`);
}

async function runSeed(seed: number): Promise<number> {
  const work = tempDir('stratum-parity-');
  const m1 = join(work, 'm1');
  const m2 = join(work, 'm2');
  try {
    const storeDir = join(work, 'store');
    const store = await Store.open(storeDir, { create: true });
    makeBase(join(work, 'src'), new Random(seed));
    ageTree(join(work, 'src'));
    const base = (await importDirectory(store, join(work, 'src'), { label: 'k' })).id;
    assert.is((await importDirectory(store, join(work, 'src'), { label: 'f' })).id, base, 'one base for both labels');

    // one mount of each kind at once, as a user would have them
    const r = await withCliMount(storeDir, 'k', m1, 'kernel', () => withCliMount(storeDir, 'f', m2, 'fuse', () => {
      const since = Math.floor(Date.now() / 1000) - 1; // file times come from the coarse clock
      const kLog = randomOps(m1, new Random(seed * 31 + 7), OPS);
      const fLog = randomOps(m2, new Random(seed * 31 + 7), OPS);
      const say = (what: string, problems: string[] = []): string => `seed ${seed}: ${what}\n  ${problems.join('\n  ')}\nops:\n  ${kLog.join('\n  ')}`;
      const at = kLog.findIndex((l, i) => fLog[i] !== l);
      assert.equal(fLog, kLog, say(`operation outcomes differ at op ${at}: kernel "${kLog[at]}", FUSE "${fLog[at]}"`));
      const problems = diffViews(maskRecent(kernelView(m1), since), maskRecent(dirView(m2), since), 8);
      assert.equal(problems, [], say('kernel mode vs FUSE mode', problems));
      same(walk(m1).links, walk(m2).links, say('link counts, kernel mode vs FUSE mode'));

      const kPinned = pinClockTimes(m1, since);
      assert.is(pinClockTimes(m2, since), kPinned, say('as many clock times on both sides'));
      const kView = kernelView(m1);
      const pinnedProblems = diffViews(kView, dirView(m2), 8);
      assert.equal(pinnedProblems, [], say('kernel mode vs FUSE mode, times pinned', pinnedProblems));
      const links = walk(m1).links;
      same(links, walk(m2).links, say('link counts, kernel mode vs FUSE mode, times pinned'));
      return { view: kView, links, say };
    }));

    // each HEAD mounted the other way: the upper each mode wrote is what the other mode reads
    await withCliMount(storeDir, 'f', m1, 'kernel', () => {
      same(kernelView(m1), r.view, r.say('FUSE-written HEAD in kernel mode'));
      same(walk(m1).links, r.links, r.say('link counts of the FUSE-written HEAD in kernel mode'));
    });
    await withCliMount(storeDir, 'k', m2, 'fuse', () => {
      same(dirView(m2), r.view, r.say('kernel-written HEAD in FUSE mode'));
      same(walk(m2).links, r.links, r.say('link counts of the kernel-written HEAD in FUSE mode'));
    });

    const kId = JSON.parse(ok(S(storeDir, '--json', 'commit', 'k:t'), 'commit k:t')).id as string;
    const fId = JSON.parse(ok(S(storeDir, '--json', 'commit', 'f:t'), 'commit f:t')).id as string;
    assert.is(fId, kId, r.say('commit ids of the two HEADs'));
    assert.is.not(kId, base, r.say('the operations changed something'));
    same(commitView(store, kId), r.view, r.say('the commit shows the view'));
    return r.view.size;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

mountTest(`kernel mode and FUSE mode agree on random changes: outcomes, views, commit ids (${seeds.length} seeds x ${OPS} ops)`, async () => {
  let paths = 0;
  for (const seed of seeds) {
    try {
      paths += await runSeed(seed);
    } catch (err) {
      console.log(`FAILED seed ${seed} (replay: STRATUM_SEED=${seed} node scripts/test.js kernel/parity)`);
      throw err;
    }
  }
  console.log(`kernel/FUSE parity: ${seeds.length} seeds, ${paths} paths compared`);
});

test.run();
