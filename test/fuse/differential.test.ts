import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { commitThroughMount } from '../../src/fuse/client.js';
import { commitHead, ensureUpper } from '../../src/store/commands/commit.js';
import { importDirectory } from '../../src/store/commands/import.js';
import type { ByteString } from '../../src/store/image/tree.js';
import { Store } from '../../src/store/store.js';
import { type View, diffViews, maskRecent } from '../store/image/view.js';
import { commitView, dirView, kernelUnsupported, mountHead } from '../store/head/kernel.js';
import { Random, makeBase, mountBudget, randomOps } from '../store/head/ops.js';
import { fuseUnavailable, tempDir, withMount } from './mounts.js';

// The kernel is the oracle for the FUSE server too. Per seed, one random base is imported as two
// labels; the same random operations run on label k mounted by kernel overlayfs and on label f
// mounted by our FUSE server. The two views and the operation logs (errnos included) must match;
// then the upper FUSE wrote, mounted by the kernel, must show exactly the FUSE view; a remount
// shows it again; a live commit through /.stratum/commit leaves the view as it was; and the
// committed images of both labels show the same trees. Times set by the clock during the run
// (creations, writes) differ between the two runs and are compared as "recent".
// Budget: STRATUM_FUSE_SEEDS (default 6) x STRATUM_FUSE_OPS (default 40); STRATUM_SEED=<n> replays one.

const { seeds, ops: OPS } = mountBudget(6);
const why = fuseUnavailable() ?? kernelUnsupported;
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`FUSE differential test skipped: ${why}`);

async function runSeed(seed: number): Promise<number> {
  const work = tempDir('stratum-fdiff-');
  try {
    const storeDir = join(work, 'store');
    const store = await Store.open(storeDir, { create: true });
    makeBase(join(work, 'src'), new Random(seed));
    const base = (await importDirectory(store, join(work, 'src'), { label: 'k' })).id;
    assert.is((await importDirectory(store, join(work, 'src'), { label: 'f' })).id, base, 'one base for both labels');
    for (const label of ['k', 'f']) await ensureUpper(store, (await store.heads.read(label))!);
    const since = Math.floor(Date.now() / 1000) - 1;

    const km = mountHead(store, 'k', base, join(work, 'kmnt'));
    let kLog: string[], kView: Map<ByteString, View>;
    try {
      kLog = randomOps(km.merged, new Random(seed * 31 + 7), OPS);
      kView = dirView(km.merged);
    } finally {
      km.unmount();
    }
    const mnt = join(work, 'fmnt');
    const { fLog, fView } = await withMount(storeDir, 'f', undefined, mnt, () => {
      const fLog = randomOps(mnt, new Random(seed * 31 + 7), OPS);
      return { fLog, fView: dirView(mnt) };
    });
    const say = (what: string, problems: string[]) => `seed ${seed}: ${what}\n  ${problems.join('\n  ')}\nops:\n  ${kLog.join('\n  ')}`;
    const at = kLog.findIndex((l, i) => fLog[i] !== l);
    assert.equal(fLog, kLog, say(`operation logs (errnos) differ at op ${at}: kernel "${kLog[at]}", FUSE "${fLog[at]}"`, []));
    let problems = diffViews(maskRecent(kView, since), maskRecent(fView, since), 8);
    assert.equal(problems, [], say('kernel vs FUSE', problems));

    // the upper FUSE wrote is kernel overlayfs format: the kernel shows the same tree, times and all
    const again = mountHead(store, 'f', base, join(work, 'kf'));
    let kfView;
    try {
      kfView = dirView(again.merged);
    } finally {
      again.unmount();
    }
    problems = diffViews(fView, kfView, 8);
    assert.equal(problems, [], say('FUSE vs kernel on the FUSE-written upper', problems));

    // remount: nothing lost; live commit: the view does not change, the commit holds it
    const fCommit = await withMount(storeDir, 'f', undefined, mnt, async (e) => {
      problems = diffViews(fView, dirView(mnt), 8);
      assert.equal(problems, [], say('FUSE after remount', problems));
      const r = await commitThroughMount(e, 'live');
      problems = diffViews(fView, dirView(mnt), 8);
      assert.equal(problems, [], say('FUSE view after the live commit', problems));
      return r.id;
    });
    problems = diffViews(fView, commitView(store, fCommit), 8);
    assert.equal(problems, [], say('FUSE view vs its live commit', problems));
    const kCommit = (await commitHead(store, { label: 'k', tag: 'live' })).id;
    problems = diffViews(maskRecent(commitView(store, kCommit), since), maskRecent(commitView(store, fCommit), since), 8);
    assert.equal(problems, [], say('kernel commit vs FUSE commit', problems));
    return kView.size;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

mountTest(`FUSE HEAD agrees with kernel overlayfs on random changes (${seeds.length} seeds x ${OPS} ops)`, async () => {
  let paths = 0;
  for (const seed of seeds) {
    try {
      paths += await runSeed(seed);
    } catch (err) {
      console.log(`FAILED seed ${seed} (replay: STRATUM_SEED=${seed} node scripts/test.js fuse/differential)`);
      throw err;
    }
  }
  console.log(`fuse differential: ${seeds.length} seeds, ${paths} paths compared`);
});

test.run();
