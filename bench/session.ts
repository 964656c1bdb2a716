// What the session library costs over the bare filesystem: N small values put (each: temp file,
// fsync, rename, fsync of the directory) against the same steps done directly with node:fs, and
// reading them back, alternating baseline and subject. `npm run bench:session`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, promises as fsp, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession } from '../src/session/index.js';
import { compareRuns, medianOf, perSec, ratio, row } from './report.js';

const N = Number(process.env.BENCH_N ?? 500);
const RUNS = 5;
const parent = mkdtempSync(join(tmpdir(), 'bench-session-'));
const value = randomBytes(200);

async function syncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, 'r');
  await h.sync();
  await h.close();
}

try {
  const rawDir = join(parent, 'raw');
  const session = await openSession(join(parent, 'bench.session'), { create: true, app: { name: 'bench', version: '1' } });
  const reset = async () => {
    await fsp.rm(rawDir, { recursive: true, force: true });
    await fsp.mkdir(join(rawDir, 'm'), { recursive: true });
    await session.delete('m');
  };
  const rawPuts = async () => {
    for (let i = 0; i < N; i++) {
      const tmp = join(rawDir, `.t${i}`);
      const h = await fsp.open(tmp, 'wx');
      await h.writeFile(value);
      await h.sync();
      await h.close();
      await fsp.rename(tmp, join(rawDir, 'm', `k${i}`));
      await syncDir(join(rawDir, 'm'));
    }
  };
  const writes = await compareRuns(RUNS, rawPuts, async () => {
    for (let i = 0; i < N; i++) await session.put(`m/k${i}`, { kind: 'data', bytes: value });
  }, reset);
  await fsp.mkdir(join(rawDir, 'm'), { recursive: true });
  await rawPuts(); // compareRuns reset the raw values before the last session run
  const reads = await compareRuns(RUNS, async () => {
    for (let i = 0; i < N; i++) await fsp.readFile(join(rawDir, 'm', `k${i}`));
  }, async () => {
    for (let i = 0; i < N; i++) await session.get(`m/k${i}`);
  }, () => {});
  console.log(`${N} values of ${value.length} bytes, median of ${RUNS} alternating runs, in ${tmpdir()}`);
  row('', 'node:fs', 'session', 'session/fs time');
  row('put (durable)', perSec(N, medianOf(writes.baseline)), perSec(N, medianOf(writes.subject)), ratio(medianOf(writes.subject) / medianOf(writes.baseline)));
  row('get', perSec(N, medianOf(reads.baseline)), perSec(N, medianOf(reads.subject)), ratio(medianOf(reads.subject) / medianOf(reads.baseline)));
} finally {
  rmSync(parent, { recursive: true, force: true });
}
