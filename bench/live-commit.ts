// How long a writer waits during a FUSE live commit of a 100k-file HEAD (issue 14: < 0.1 s).
// A writer process creates a file and appends 100 bytes to an open log in turns, timing every
// operation, while `/.stratum/commit` commits HEAD (1000 new files and 100 edits since the last
// commit). Printed per round and as medians: the longest single operation of the writer during
// the commit, the commit's wall time, and the time the server held requests (its two view
// switches, from its log).
//
// Baseline: the commit's wall time. Before the split (docs/fuse.md "Live commit"), the server
// gated every request for the whole commit, so a writer waited that long.
//
//   npm run bench:live-commit [-- --files N] [-- --rounds R]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commitThroughMount, lazyUnmount, startMount, stopMount, stratumMountsAt } from '../src/mount/client.js';
import { importDirectory } from '../src/store/commands/import.js';
import { ensureUpper } from '../src/store/head/index.js';
import { MountState } from '../src/store/mount-state.js';
import { Store } from '../src/store/store.js';
import { medianOf } from './report.js';
import { TREE_ENTRIES } from './data.js';

const arg = (flag: string, dflt: number): number => {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface WriterResult { ops: number; maxMs: number; maxDuringMs: number; p99DuringMs: number; error?: string }

/** A writer that times each op; `mark` (a file) brackets the commit: ops started while it exists count as during. */
function writer(mnt: string, stop: string, mark: string): Promise<WriterResult> {
  const child = spawn(process.execPath, ['-e', `
    const fs = require('node:fs');
    const [mnt, stop, mark] = process.argv.slice(1);
    fs.mkdirSync(mnt + '/w', { recursive: true });
    const fd = fs.openSync(mnt + '/w/log', 'a');
    let ops = 0, maxMs = 0, error;
    const during = [];
    let n = 0;
    while (!fs.existsSync(stop)) {
      const inCommit = fs.existsSync(mark);
      const t = process.hrtime.bigint();
      try {
        fs.writeFileSync(mnt + '/w/n' + n, String(n));
        fs.writeSync(fd, Buffer.alloc(100, 48 + (n % 10)));
        n++;
      } catch (err) { error = err.code; break; }
      const ms = Number(process.hrtime.bigint() - t) / 1e6;
      ops++;
      maxMs = Math.max(maxMs, ms);
      if (inCommit || fs.existsSync(mark)) during.push(ms);
    }
    during.sort((a, b) => a - b);
    process.stdout.write(JSON.stringify({ ops, maxMs, maxDuringMs: during.length ? during[during.length - 1] : 0,
      p99DuringMs: during.length ? during[Math.floor(during.length * 0.99)] : 0, error }));`, mnt, stop, mark], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  return new Promise((r) => child.on('exit', () => r(JSON.parse(out) as WriterResult)));
}

async function main(): Promise<void> {
  const files = arg('--files', TREE_ENTRIES);
  const rounds = arg('--rounds', 3);
  const work = fs.mkdtempSync(join(tmpdir(), 'stratum-bench-live-'));
  const mnt = join(work, 'mnt');
  const state = new MountState(join(work, 'mounts.json'));
  const log = (s: string) => process.stdout.write(`${s}\n`);
  try {
    const src = join(work, 'src');
    for (let d = 0; d < files / 1000; d++) {
      fs.mkdirSync(join(src, `d${d}`), { recursive: true });
      for (let i = 0; i < 1000; i++) fs.writeFileSync(join(src, `d${d}`, `f${i}`), `file ${d}/${i}\n`);
    }
    const store = await Store.open(join(work, 'store'), { create: true });
    let t = Date.now();
    await importDirectory(store, src, { label: 'b' });
    await ensureUpper(store, (await store.heads.read('b'))!);
    fs.rmSync(src, { recursive: true, force: true });
    log(`import of ${files} files: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    const entry = await startMount({ store: store.root, label: 'b', mountpoint: mnt, state });
    const rows: Array<{ commitMs: number; w: WriterResult; held: string }> = [];
    try {
      for (let round = 0; round < rounds; round++) {
        fs.mkdirSync(join(mnt, `new${round}`));
        for (let i = 0; i < 1000; i++) fs.writeFileSync(join(mnt, `new${round}`, `x${i}`), `x ${i}\n`);
        for (let d = 0; d < 100; d++) fs.writeFileSync(join(mnt, `d${d % (files / 1000)}/f${round + 1}`), `edited ${round}\n`);
        const stop = join(work, `stop${round}`), mark = join(work, `mark${round}`);
        const w = writer(mnt, stop, mark);
        await sleep(300);
        fs.writeFileSync(mark, '');
        t = Date.now();
        await commitThroughMount(entry, `r${round}`);
        const commitMs = Date.now() - t;
        fs.rmSync(mark);
        await sleep(300);
        fs.writeFileSync(stop, '');
        const result = await w;
        if (result.error) throw new Error(`the writer failed: ${result.error}`);
        const held = /requests held ([^)]*)\)\n?$/m.exec(fs.readFileSync(entry.log!, 'utf8').trim().split('\n').filter((l) => l.includes(`:r${round} `)).pop() ?? '')?.[1] ?? '?';
        rows.push({ commitMs, w: result, held });
        log(`round ${round + 1}: commit ${commitMs} ms; writer: ${result.ops} ops, longest during the commit ${result.maxDuringMs.toFixed(1)} ms (p99 ${result.p99DuringMs.toFixed(1)} ms); server held requests ${held}`);
      }
    } finally {
      await stopMount({ ...entry, stale: false }, state).catch(() => undefined);
      if (stratumMountsAt(mnt)) lazyUnmount(mnt);
    }
    const commitMs = medianOf(rows.map((r) => r.commitMs));
    const waitMs = medianOf(rows.map((r) => r.w.maxDuringMs));
    log('');
    log(`FUSE live commit of a ${files}-file HEAD (1000 new files, 100 edits), median of ${rounds}:`);
    log(`  longest writer wait during the commit   ${waitMs.toFixed(1)} ms`);
    log(`  baseline: commit wall time               ${commitMs} ms (what a writer waited when every request was gated for the commit)`);
    log(`  ratio baseline / subject                 ${(commitMs / waitMs).toFixed(1)}×`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => { console.error(err); process.exit(1); });
