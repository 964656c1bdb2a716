// Import against `cp -a` of the same tree on the same disk, measured in the same run: a 1 GiB tree
// of large files and a 50 000-file tree of small files; then a re-import of each (everything
// deduplicated; goal ≥ 5× faster than the first import), and gc on a store of 100 000 objects.
// Both sides end durable (cp is followed by `sync -f`). `npm run bench:import`.
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { collectGarbage } from '../src/store/commands/gc.js';
import { importDirectory } from '../src/store/commands/import.js';
import { remove } from '../src/store/commands/remove.js';
import { Store } from '../src/store/store.js';
import { compare, median, mbps, perSec, ratio, row } from './report.js';
import { incompressibleFiles } from './data.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const LARGE_MB = Number(process.env.BENCH_LARGE_MB ?? 1024);
const SMALL = Number(process.env.BENCH_SMALL_FILES ?? 50_000);
const GC_OBJECTS = Number(process.env.BENCH_GC_OBJECTS ?? 100_000);

const work = mkdtempSync(join(process.env.BENCH_DIR ?? '/var/tmp', 'stratum-bench-import-'));
const fresh = (...names: string[]) => () => {
  for (const name of names) rmSync(join(work, name), { recursive: true, force: true });
  execFileSync('sync');
};

function largeTree(dir: string): number {
  mkdirSync(dir, { recursive: true });
  const each = 64 << 20;
  const count = Math.max(1, Math.round((LARGE_MB << 20) / each));
  for (let i = 0; i < count; i++) writeFileSync(join(dir, `part-${i}.bin`), randomFillSync(Buffer.alloc(each)));
  return count * each;
}

async function importInto(storeName: string, tree: string, label: string): Promise<void> {
  const store = await Store.open(join(work, storeName), { create: true });
  await importDirectory(store, tree, { label });
}

function cpA(tree: string): void {
  execFileSync('cp', ['-a', tree, join(work, 'copy')]);
  execFileSync('sync', ['-f', work]);
}

try {
  console.log(`import vs cp -a on ${work} (median of ${RUNS}, runs alternating, each after the same cleanup; both made durable)`);
  row('', 'cp -a', 'import', 'import / cp');

  const large = join(work, 'large');
  const largeBytes = largeTree(large);
  const [cpLarge, importLarge] = await compare(RUNS, () => cpA(large), () => importInto('store', large, 'large'), fresh('copy', 'store'));
  row(`${largeBytes >> 20} MiB in ${largeBytes / (64 << 20)} files`, mbps(largeBytes, cpLarge), mbps(largeBytes, importLarge), ratio(cpLarge / importLarge));
  const reLarge = await median(RUNS, () => importInto('store', large, 'large'));
  row('  re-import (all deduplicated)', '', mbps(largeBytes, reLarge), `${ratio(importLarge / reLarge)} faster`);
  rmSync(large, { recursive: true });
  fresh('store')();
  fresh('copy')();

  const small = join(work, 'small');
  const smallBytes = incompressibleFiles(small, SMALL);
  const [cpSmall, importSmall] = await compare(RUNS, () => cpA(small), () => importInto('store', small, 'small'), fresh('copy', 'store'));
  row(`${SMALL} small files (${(smallBytes / 2 ** 20).toFixed(0)} MiB)`, perSec(SMALL, cpSmall), perSec(SMALL, importSmall), ratio(cpSmall / importSmall));
  const reSmall = await median(RUNS, () => importInto('store', small, 'small'));
  row('  re-import (all deduplicated)', '', perSec(SMALL, reSmall), `${ratio(importSmall / reSmall)} faster`);
  rmSync(small, { recursive: true });
  fresh('store')();
  fresh('copy')();

  const many = join(work, 'many');
  incompressibleFiles(many, GC_OBJECTS, [65, 100, 200]);
  await importInto('gc-store', many, 'many');
  rmSync(many, { recursive: true });
  const store = await Store.open(join(work, 'gc-store'));
  let live = 0;
  const marked = await median(1, async () => {
    live = (await collectGarbage(store)).objects;
  });
  row(`gc, ${GC_OBJECTS} objects all live`, '', `${marked.toFixed(2)} s`, `${live} freed`);
  let freed = 0;
  await store.tags.remove('many', (await store.tags.tags('many'))[0]!);
  const swept = await median(1, async () => {
    freed = (await remove(store, 'many')).gc.objects;
  });
  row(`remove + gc, ${GC_OBJECTS} objects dead`, '', `${swept.toFixed(2)} s`, `${freed} freed`);
  console.log('goals: large import ≥ 0.80× cp -a, small files ≥ 0.50× cp -a, re-import ≥ 5× faster than import');
} finally {
  rmSync(work, { recursive: true, force: true });
}
