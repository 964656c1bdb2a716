// Object put throughput against `cp -a` of the same data on the same disk, measured in the same
// run: one 1 GiB file, and 20 000 small files. Both sides end with their data durable (cp is
// followed by `sync -f`, a put batch commits with syncfs). `npm run bench:store`.
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { compare, mbps, median, perSec, ratio, row } from './report.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const LARGE = Number(process.env.BENCH_LARGE_MB ?? 1024) << 20;
const SMALL_COUNT = Number(process.env.BENCH_SMALL_FILES ?? 20_000);
const CONCURRENCY = 32;

const work = mkdtempSync(join(process.env.BENCH_DIR ?? '/var/tmp', 'stratum-bench-store-'));
const cleanTargets = () => {
  rmSync(join(work, 'store'), { recursive: true, force: true });
  rmSync(join(work, 'copy'), { recursive: true, force: true });
  execFileSync('sync');
};

function makeLarge(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const chunk = Buffer.alloc(16 << 20);
  const parts: Buffer[] = [];
  for (let done = 0; done < LARGE; done += chunk.length) parts.push(randomFillSync(Buffer.alloc(Math.min(chunk.length, LARGE - done))));
  writeFileSync(join(dir, 'large.bin'), Buffer.concat(parts));
}

/** Sizes like a source tree: mostly a few KiB, some tiny, a few larger. */
function makeSmall(dir: string): number {
  let bytes = 0;
  for (let i = 0; i < SMALL_COUNT; i++) {
    const sub = join(dir, `d${i % 100}`);
    if (i < 100) mkdirSync(sub, { recursive: true });
    const size = [40, 700, 2000, 5000, 12_000, 30_000][i % 6]!;
    const data = randomFillSync(Buffer.alloc(size));
    writeFileSync(join(sub, `f${i}.txt`), data);
    bytes += size;
  }
  return bytes;
}

async function putTree(paths: string[]): Promise<void> {
  const store = await Store.open(join(work, 'store'), { create: true });
  const batch = await store.objects.batch();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(CONCURRENCY, paths.length) }, async () => {
      while (next < paths.length) await batch.putFile(paths[next++]!);
    }),
  );
  await batch.commit();
  await batch.dispose();
}

function cpA(from: string): void {
  execFileSync('cp', ['-a', from, join(work, 'copy')]);
  execFileSync('sync', ['-f', work]);
}

try {
  console.log(`object put vs cp -a on ${work} (median of ${RUNS}, runs alternating after the same cleanup, caches warm, both made durable)`);
  row('', 'cp -a', 'stratum put', 'put / cp');

  const large = join(work, 'large');
  makeLarge(large);
  const [cpLarge, putLarge] = await compare(RUNS, () => cpA(large), () => putTree([join(large, 'large.bin')]), cleanTargets);
  row(`1 file of ${LARGE >> 20} MiB`, mbps(LARGE, cpLarge), mbps(LARGE, putLarge), ratio(cpLarge / putLarge));
  rmSync(large, { recursive: true });

  const small = join(work, 'small');
  const bytes = makeSmall(small);
  const paths = Array.from({ length: SMALL_COUNT }, (_, i) => join(small, `d${i % 100}`, `f${i}.txt`));
  const [cpSmall, putSmall] = await compare(RUNS, () => cpA(small), () => putTree(paths), cleanTargets);
  row(`${SMALL_COUNT} small files (${(bytes / 2 ** 20).toFixed(0)} MiB)`, perSec(SMALL_COUNT, cpSmall), perSec(SMALL_COUNT, putSmall), ratio(cpSmall / putSmall));

  const dedup = await median(RUNS, () => putTree(paths));
  row('  again, all deduplicated', '', perSec(SMALL_COUNT, dedup), ratio(cpSmall / dedup));
  console.log('goals: large put ≥ 0.80× cp -a, small files ≥ 0.50× cp -a');
} finally {
  rmSync(work, { recursive: true, force: true });
}
