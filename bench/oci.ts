// push and pull through Debian's docker-registry on 127.0.0.1, against the transport's own limit
// (the same bytes uploaded and downloaded as one blob, to the same registry, in the same run) and
// against `cp -a` of the tree: 50 000 small files (~400 MiB) and 1 GiB in 16 files; then a
// re-push of an unchanged commit and the bytes a one-file change uploads. `npm run bench:oci`;
// scale down with BENCH_SMALL_FILES and BENCH_LARGE_MB, BENCH_RUNS for the run count.
import { execFileSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pullCommit } from '../src/oci/pull.js';
import { pushCommit } from '../src/oci/push.js';
import { RegistryClient } from '../src/oci/registry.js';
import { importDirectory } from '../src/store/commands/import.js';
import { Store } from '../src/store/store.js';
import { startRegistry } from '../test/oci/registry-server.js';
import { mbps, median, medianOf, ratio, row } from './report.js';
import { incompressibleFiles } from './data.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const LARGE_MB = Number(process.env.BENCH_LARGE_MB ?? 1024);
const SMALL = Number(process.env.BENCH_SMALL_FILES ?? 50_000);

const work = mkdtempSync(join(process.env.BENCH_DIR ?? '/var/tmp', 'stratum-bench-oci-'));
const registry = await startRegistry();
const client = () => new RegistryClient(registry.host, { plainHttp: true });
let repoCounter = 0;
const freshRepo = () => `bench/r${repoCounter++}`;

function largeTree(dir: string, mb: number): number {
  mkdirSync(dir, { recursive: true });
  const each = Math.max(1, Math.round((mb << 20) / 16));
  for (let i = 0; i < 16; i++) writeFileSync(join(dir, `part-${i}.bin`), randomFillSync(Buffer.alloc(each)));
  return each * 16;
}

/** The transport's limit: `bytes` as one streamed blob up, then down. */
async function oneBlob(bytes: number): Promise<{ up: number; down: number }> {
  const file = join(work, 'blob.bin');
  const fd = Buffer.alloc(1 << 20);
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  for (let done = 0; done < bytes; done += fd.length) {
    const c = randomFillSync(Buffer.alloc(Math.min(fd.length, bytes - done)));
    hash.update(c);
    chunks.push(c);
  }
  writeFileSync(file, Buffer.concat(chunks));
  chunks.length = 0;
  const blob = { digest: `sha256:${hash.digest('hex')}`, size: bytes };
  const repo = freshRepo();
  const up = await median(1, () => client().uploadBlob(repo, blob, () => createReadStream(file, { highWaterMark: 1 << 20 })));
  const down = await median(1, async () => {
    for await (const chunk of client().streamBlob(repo, blob)) void chunk;
  });
  rmSync(file);
  return { up, down };
}

async function measure(name: string, tree: string, bytes: number, files: number): Promise<void> {
  const storeA = join(work, 'a');
  const store = await Store.open(storeA, { create: true });
  const { id } = await importDirectory(store, tree, { label: 'bench', tag: 'v1' });
  const blobUp: number[] = [], blobDown: number[] = [], push: number[] = [], pull: number[] = [], cp: number[] = [];
  let lastRepo = '';
  for (let i = 0; i < RUNS; i++) {
    const blob = await oneBlob(bytes);
    blobUp.push(blob.up);
    blobDown.push(blob.down);
    // a first push: no pack cache, no other repo to mount from
    rmSync(join(storeA, 'cache', 'oci.json'), { force: true });
    const repo = freshRepo();
    push.push(await median(1, () => pushCommit(store, 'bench:v1', client(), { repo }).then(() => undefined)));
    lastRepo = repo;
    rmSync(join(work, 'b'), { recursive: true, force: true });
    execFileSync('sync');
    pull.push(
      await median(1, async () => {
        const b = await Store.open(join(work, 'b'), { create: true });
        const r = await pullCommit(b, client(), { repo, tag: 'v1' });
        if (r.id !== id) throw new Error('pulled another commit');
      }),
    );
    rmSync(join(work, 'copy'), { recursive: true, force: true });
    execFileSync('sync');
    cp.push(
      await median(1, () => {
        execFileSync('cp', ['-a', tree, join(work, 'copy')]);
        execFileSync('sync', ['-f', work]);
      }),
    );
  }
  const [up, down, pu, pl, c] = [medianOf(blobUp), medianOf(blobDown), medianOf(push), medianOf(pull), medianOf(cp)];
  row(`${name}: ${files} files, ${(bytes / 2 ** 20).toFixed(0)} MiB`, 'one blob', 'stratum', 'ratio', 'cp -a');
  row('  push (upload)', mbps(bytes, up), mbps(bytes, pu), ratio(up / pu), mbps(bytes, c));
  row('  pull (download)', mbps(bytes, down), mbps(bytes, pl), ratio(down / pl), mbps(bytes, c));
  const again = await median(RUNS, () => pushCommit(store, 'bench:v1', client(), { repo: lastRepo }).then(() => undefined));
  row('  re-push, unchanged', '', `${again.toFixed(3)} s`, again < 1 ? 'goal met' : 'goal < 1 s');
  // one changed file
  const changed = files > 16 ? join(tree, 'd3', 'f3') : join(tree, 'part-3.bin');
  writeFileSync(changed, randomFillSync(Buffer.alloc(statSync(changed).size)));
  await importDirectory(store, tree, { label: 'bench', tag: 'v2' });
  const r = await pushCommit(store, 'bench:v2', client(), { repo: lastRepo });
  row('  push after one changed file', '', `${(r.uploadedBytes / 2 ** 20).toFixed(2)} MiB`, `${((100 * r.uploadedBytes) / bytes).toFixed(2)} %`);
  rmSync(storeA, { recursive: true, force: true });
  rmSync(join(work, 'b'), { recursive: true, force: true });
  rmSync(join(work, 'copy'), { recursive: true, force: true });
}

try {
  console.log(`push/pull vs one blob of the same bytes and cp -a (${registry.host}, storage ${registry.dir}, work ${work}); median of ${RUNS}; load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const small = join(work, 'small');
  const smallBytes = incompressibleFiles(small, SMALL);
  await measure('small', small, smallBytes, SMALL);
  rmSync(small, { recursive: true, force: true });
  const large = join(work, 'large');
  const largeBytes = largeTree(large, LARGE_MB);
  await measure('large', large, largeBytes, 16);
  console.log(`load at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log('goals: small-file pull ≥ 0.50× one-blob download; re-push < 1 s; a one-file change uploads < 1 % of the bytes');
} finally {
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}
