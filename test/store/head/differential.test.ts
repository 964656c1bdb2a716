import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baseTree, commitHead, ensureUpper, headPaths } from '../../../src/store/commands/commit.js';
import { importDirectory } from '../../../src/store/commands/import.js';
import { commitByReadBack } from '../../helpers/readback.js';
import { writeImage } from '../../../src/store/image/write.js';
import { verify } from '../../../src/store/commands/verify.js';
import { Store } from '../../../src/store/store.js';
import { diffViews } from '../image/view.js';
import { commitView, dirView, kernelUnsupported, mountHead, unionView } from './kernel.js';
import { Random, makeBase, randomEdits, randomOps } from './ops.js';

// The kernel is the oracle. For each seed: a random base is imported, mounted with kernel
// overlayfs the way Stratum mounts a HEAD, changed by random operations and snapshotted through
// the mount. Unmounted, UnionView must show exactly that snapshot, and so must the committed
// image; the new HEAD (fresh upper) mounted again must too. Two rounds per seed, so the second
// works on a committed base. Seeds: STRATUM_SEEDS (default 40; `npm run test:long` uses many
// more), or STRATUM_SEED=<n> to replay one.

const seeds = process.env.STRATUM_SEED ? [Number(process.env.STRATUM_SEED)] : Array.from({ length: Number(process.env.STRATUM_SEEDS ?? 40) }, (_, i) => i + Number(process.env.STRATUM_SEED_FROM ?? 1));
const OPS = Number(process.env.STRATUM_OPS ?? 40);

const kernelTest = kernelUnsupported === undefined ? test : test.skip;
if (kernelUnsupported !== undefined) console.log(`differential HEAD test skipped: ${kernelUnsupported}`);

// Even seeds have no hardlinks, in the base or in the changes: their commits take the splice
// path (a base with hardlinks is written whole).
async function runSeed(seed: number): Promise<{ paths: number; ops: number; spliced: number }> {
  const work = mkdtempSync(join(tmpdir(), 'stratum-diff-'));
  const rnd = new Random(seed);
  const links = seed % 2 === 1;
  let paths = 0;
  let ops = 0;
  let spliced = 0;
  try {
    const store = await Store.open(join(work, 'store'), { create: true });
    makeBase(join(work, 'src'), rnd, 40, links);
    const imported = await importDirectory(store, join(work, 'src'), { label: 'app' });
    let base = imported.id;
    await ensureUpper(store, (await store.heads.read('app'))!);
    for (let round = 0; round < 2; round++) {
      const m = mountHead(store, 'app', base, join(work, `mnt${round}`));
      let snapshot;
      let log: string[];
      try {
        log = randomOps(m.merged, rnd, OPS, links);
        snapshot = dirView(m.merged);
      } finally {
        m.unmount();
      }
      ops += log.length;
      paths += snapshot.size;
      const why = (what: string, problems: string[]): string => `seed ${seed} round ${round}: ${what}\n  ${problems.join('\n  ')}\nops:\n  ${log.join('\n  ')}`;
      const union = unionView(store, 'app', base);
      let problems = diffViews(snapshot, union, 8);
      assert.equal(problems, [], why('kernel vs UnionView', problems));

      const result = await commitHead(store, { label: 'app' });
      if (result.path === 'splice') spliced++;
      const committed = commitView(store, result.id);
      problems = diffViews(snapshot, committed, 8);
      assert.equal(problems, [], why(`kernel vs committed image (${result.path} path)`, problems));
      assert.ok(Buffer.from(writeImage(baseTree(store, result.id))).equals(readFileSync(store.commits.imagePath(result.id))), why(`the image is canonical (${result.path} path)`, []));
      const head = (await store.heads.read('app'))!;
      assert.is(head.base, result.id, `seed ${seed}: HEAD moved to the commit`);
      assert.equal(readdirSync(headPaths(store, 'app').upper), [], `seed ${seed}: upper emptied`);
      base = result.id;

      // The new HEAD, fresh upper over the new base, looks the same through the kernel.
      const again = mountHead(store, 'app', base, join(work, `again${round}`));
      let remounted;
      try {
        remounted = dirView(again.merged);
      } finally {
        again.unmount();
      }
      problems = diffViews(snapshot, remounted, 8);
      assert.equal(problems, [], why('kernel before commit vs kernel on the new HEAD', problems));
    }
    assert.equal((await verify(store, undefined)).problems, [], `seed ${seed}: verify`);
    return { paths, ops, spliced };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

kernelTest(`UnionView and commit agree with kernel overlayfs on random changes (${seeds.length} seeds x 2 rounds x ${OPS} ops)`, async () => {
  const started = Date.now();
  let paths = 0;
  let ops = 0;
  let spliced = 0;
  for (const seed of seeds) {
    try {
      const r = await runSeed(seed);
      paths += r.paths;
      ops += r.ops;
      spliced += r.spliced;
    } catch (err) {
      console.log(`FAILED seed ${seed} (replay: STRATUM_SEED=${seed} node dist/test/store/head/differential.test.js)`);
      throw err;
    }
  }
  console.log(`differential: ${seeds.length} seeds, ${ops} operations, ${paths} paths compared, ${spliced} commits spliced, in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  // (many refuse for a reason: random touches set mtimes below the image minimum)
  if (seeds.length >= 10) assert.ok(spliced >= 3, `link-free seeds' commits were spliced (${spliced})`);
});

kernelTest('edits only (contents, modes, owners, times) take the fast path, and its image is exactly what the writer makes of the same tree', async () => {
  let fast = 0;
  let full = 0;
  for (const seed of seeds.slice(0, Math.max(4, Math.floor(seeds.length / 2)))) {
    const work = mkdtempSync(join(tmpdir(), 'stratum-edit-'));
    const rnd = new Random(seed + 7777);
    try {
      const store = await Store.open(join(work, 'store'), { create: true });
      makeBase(join(work, 'src'), rnd, 60);
      let base = (await importDirectory(store, join(work, 'src'), { label: 'app' })).id;
      await ensureUpper(store, (await store.heads.read('app'))!);
      for (let round = 0; round < 3; round++) {
        const m = mountHead(store, 'app', base, join(work, `mnt${round}`));
        let snapshot;
        let log: string[];
        try {
          log = randomEdits(m.merged, rnd, round === 0 ? 3 : 1 + rnd.int(6));
          snapshot = dirView(m.merged);
        } finally {
          m.unmount();
        }
        const why = (what: string, problems: string[]): string => `seed ${seed} round ${round}: ${what}\n  ${problems.join('\n  ')}\nops:\n  ${log.join('\n  ')}`;
        const r = await commitHead(store, { label: 'app' });
        if (r.fastPath) fast++;
        else full++;
        const problems = diffViews(snapshot, commitView(store, r.id), 8);
        assert.equal(problems, [], why(`kernel vs committed image (${r.fastPath ? 'fast' : 'full'} path)`, problems));
        const tree = baseTree(store, r.id);
        assert.ok(Buffer.from(writeImage(tree)).equals(readFileSync(store.commits.imagePath(r.id))), why('the image is canonical', []));
        const meta = await store.commits.metadata(r.id);
        // an unchanged commit is the base itself, with the base's own parent
        const expected = commitByReadBack(tree, r.unchanged ? meta.parentCommit : base).meta;
        assert.equal({ ...meta, timestamp: '' }, { ...expected, timestamp: '' }, why('metadata', []));
        base = r.id;
      }
      assert.equal((await verify(store, undefined)).problems, [], `seed ${seed}: verify`);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  console.log(`edit-only commits: ${fast} fast, ${full} full`);
  assert.ok(fast > 0, 'the fast path was taken');
});

test.run();
