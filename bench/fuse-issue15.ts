// The figures of issue #15 (FUSE mode at kernel speed), part of bench:fuse (`--only 15` runs just
// these): the same tree served by kernel overlayfs, fuse-overlayfs and a Stratum FUSE HEAD, every
// figure timed alternately over the ways (RUNS each, median), with
//   - requests per item beside Stratum's times (the server's STRATUM_FUSE_COUNTS file, counted
//     around each run; those of the median run are printed: bench/fuse-counts.ts),
//   - 4 concurrent readers beside the single reader: 4 processes over disjoint quarters of the
//     small files, 4 readers of disjoint quarters of the 1 GiB file,
//   - copy-up latency: while one process appends a byte to the 1 GiB lower file (copying it up),
//     another stats files that the kernel has to look up; its longest single stat, its p99 and the
//     copy-up time (once per way: afterwards the file is an upper file), beside the same stats
//     with no copy-up (the machine's floor: on a busy 2-core machine it alone passes 10 ms),
//   - each #15 goal with its measured ratio, met or missed.
// Public: issue15(ways, options).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { countsDiff, perOp, settledCounts, type Counts } from './fuse-counts.js';
import { medianOf as mid } from './report.js';
import { BIG, SMALL_FILES, sh } from './data.js';

/** readOnly: a tag mount; it skips the figures that write (untar, copy-up). */
export interface Way { name: string; root: string; countsFile?: string; readOnly?: boolean }

interface Figure {
  key: string; what: string; unit: string; amount: number; per: string; items: number;
  run: string; cold?: boolean;
  /** each run writes into a dir of its own, `${fresh}-<n>` in place of {dir} in `run`; all removed after the figure */
  fresh?: string;
}

const dropCaches = () => spawnSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `cmd` for each quarter, the 4 in parallel. */
const fourWay = (cmd: (q: number) => string): string => `${[0, 1, 2, 3].map((q) => `(${cmd(q)}) &`).join(' ')} wait`;
const quarterDirs = (q: number): string =>
  Array.from({ length: 25 }, (_, i) => `small/d${q * 25 + i}`).join(' ');
const MIB = BIG >> 20;

function figures(entries: number, tarball: string): Figure[] {
  const cat = 'find small -type f -print0 | xargs -0 cat > /dev/null';
  const cat4 = fourWay((q) => `find ${quarterDirs(q)} -type f -print0 | xargs -0 cat > /dev/null`);
  const read4 = fourWay((q) => `dd if=big of=/dev/null bs=1M skip=${q * (MIB / 4)} count=${MIB / 4} status=none`);
  const find = `find . -printf '%s %m\\n' > /dev/null`;
  const k = SMALL_FILES / 1000;
  return [
    { key: 'findCold', what: 'find+stat cold', unit: 'k entries/s', amount: entries / 1000, per: 'entry', items: entries, run: find, cold: true },
    { key: 'findWarm', what: 'find+stat warm', unit: 'k entries/s', amount: entries / 1000, per: 'entry', items: entries, run: find },
    { key: 'catCold', what: `cat ${k}k small files cold`, unit: 'k files/s', amount: k, per: 'file', items: SMALL_FILES, run: cat, cold: true },
    { key: 'catWarm', what: `cat ${k}k small files warm`, unit: 'k files/s', amount: k, per: 'file', items: SMALL_FILES, run: cat },
    { key: 'cat4Cold', what: `cat ${k}k small files cold, 4 readers`, unit: 'k files/s', amount: k, per: 'file', items: SMALL_FILES, run: cat4, cold: true },
    { key: 'cat4Warm', what: `cat ${k}k small files warm, 4 readers`, unit: 'k files/s', amount: k, per: 'file', items: SMALL_FILES, run: cat4 },
    { key: 'readCold', what: '1 GiB read cold', unit: 'MB/s', amount: BIG / 1e6, per: 'MiB', items: MIB, run: 'cat big > /dev/null', cold: true },
    { key: 'readWarm', what: '1 GiB read warm', unit: 'MB/s', amount: BIG / 1e6, per: 'MiB', items: MIB, run: 'cat big > /dev/null' },
    { key: 'read4Cold', what: '1 GiB read cold, 4 readers', unit: 'MB/s', amount: BIG / 1e6, per: 'MiB', items: MIB, run: read4, cold: true },
    { key: 'read4Warm', what: '1 GiB read warm, 4 readers', unit: 'MB/s', amount: BIG / 1e6, per: 'MiB', items: MIB, run: read4 },
    { key: 'untar', what: `untar ${k}k files`, unit: 'k entries/s', amount: (SMALL_FILES + 100) / 1000, per: 'entry', items: SMALL_FILES + 100, run: `mkdir {dir} && tar -xf ${tarball} -C {dir}`, fresh: 'untar' },
  ];
}

/** The stat loop the copy-up figure runs in its own process: stats until `stop` exists, prints JSON. */
const STAT_LOOP = `
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
const [root, stop] = process.argv.slice(2);
const waits = [];
let d = 0, f = 0;
const start = performance.now();
for (;;) {
  if (waits.length % 50 === 0 && fs.existsSync(stop)) break;
  const t = performance.now();
  try { fs.statSync(root + '/tree/t' + d + '/e' + f); } catch {}
  waits.push(performance.now() - t);
  if (++f === 500) { f = 0; d = (d + 1) % 150; }
}
const seconds = (performance.now() - start) / 1000;
waits.sort((a, b) => a - b);
const n = waits.length;
process.stdout.write(JSON.stringify({ max: waits[n - 1], p99: waits[Math.floor(n * 0.99)], n, over: waits.filter((w) => w > 10).length, seconds }));
`;

interface StatWaits { maxStatMs: number; p99StatMs: number; stats: number; over10: number; seconds: number }
interface CopyUp extends StatWaits { copySeconds: number; counts?: Counts; alone?: StatWaits }

/**
 * Runs the stat loop over `way` (caches dropped first: each stat is a first lookup) around `during`,
 * which returns its own time in seconds.
 */
async function statsAround(way: Way, scratch: string, during: () => Promise<number> | number): Promise<StatWaits & { took: number }> {
  const script = join(scratch, 'stat-loop.mjs'), stop = join(scratch, 'stat-loop.stop');
  fs.writeFileSync(script, STAT_LOOP);
  fs.rmSync(stop, { force: true });
  dropCaches();
  const child = spawn(process.execPath, [script, way.root, stop], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  const exited = new Promise<void>((res) => child.on('exit', () => res()));
  await sleep(300);
  const took = await during();
  await sleep(300);
  fs.writeFileSync(stop, '');
  await exited;
  const r = JSON.parse(out) as { max: number; p99: number; n: number; over: number; seconds: number };
  return { maxStatMs: r.max, p99StatMs: r.p99, stats: r.n, over10: r.over, seconds: r.seconds, took };
}

/**
 * The same stats with nothing else going on (as long as a copy-up takes): the machine's own
 * floor, which the copy-up figure reads against (on a busy machine it is well above 10 ms).
 */
async function statsAlone(way: Way, scratch: string): Promise<StatWaits> {
  return statsAround(way, scratch, async () => { await sleep(1200); return 1.2; });
}

/** Appends one byte to the 1 GiB lower file under `way` while a second process stats files. */
async function copyUp(way: Way, scratch: string): Promise<CopyUp> {
  const before = way.countsFile ? await settledCounts(way.countsFile) : undefined;
  const r = await statsAround(way, scratch, () => sh('printf x >> big', way.root));
  const after = way.countsFile ? await settledCounts(way.countsFile) : undefined;
  return { ...r, copySeconds: r.took, counts: after ? countsDiff(after, before) : undefined };
}

/**
 * Times every figure over `ways` alternately (ways[0] is kernel overlayfs, the baseline; a way named
 * fuse-overlayfs and one with a countsFile, the Stratum HEAD, are what the goals compare), prints
 * the tables and the goals. `scratch` is a dir outside the mounts.
 */
export async function issue15(ways: Way[], o: { entries: number; tarball: string; runs: number; scratch: string; log: (s: string) => void }): Promise<void> {
  const { log, runs } = o;
  const kernel = ways[0]!, stratum = ways.find((w) => w.countsFile && !w.readOnly), fo = ways.find((w) => /fuse-overlayfs/.test(w.name));
  const times = new Map<string, Map<string, number[]>>();  // figure -> way -> seconds
  const counts = new Map<string, Map<string, Counts>>();   // figure -> way -> its requests in its median run
  const counted = ways.filter((w) => w.countsFile);
  log('');
  log(`Issue #15 figures, ways alternating; median (slowest-fastest) of ${runs} runs; requests: each Stratum way's median run`);
  log(`| figure | ${ways.map((w) => w.name).join(' | ')} | ${ways.slice(1).map((w) => `${w.name} / kernel`).join(' | ')} | requests (${counted.map((w) => w.name).join('; ')}) |`);
  log(`|---|${ways.map(() => '---|').join('')}${ways.slice(1).map(() => '---|').join('')}---|`);
  for (const f of figures(o.entries, o.tarball)) {
    // A run that writes gets a fresh dir: following the removal of an earlier run's 20k files
    // (freed, maybe discarded, in the background) made kernel overlayfs untar 3-6k entries/s
    // instead of ~25-50k, and whichever way came first paid for the others' removals.
    let n = 0;
    const cmd = (): string => (f.fresh ? f.run.replaceAll('{dir}', `${f.fresh}-${n++}`) : f.run);
    const clear = () => {
      if (!f.fresh) return;
      for (const w of ways) for (const e of fs.readdirSync(w.root)) if (e.startsWith(`${f.fresh}-`)) fs.rmSync(join(w.root, e), { recursive: true, force: true });
      spawnSync('sync');
    };
    // warm figures start from a run on every way; a writing one too (the same for every run)
    const these = ways.filter((w) => !(f.fresh && w.readOnly));
    if (!f.cold) { const c = cmd(); for (const w of these) sh(c, w.root); }
    const byWay = new Map(ways.map((w) => [w.name, [] as number[]]));
    const runCounts = new Map<string, { t: number; c: Counts }[]>(counted.map((w) => [w.name, []]));
    for (let i = 0; i < runs; i++) {
      const c = cmd();  // one dir name per round: each way has its own root
      for (const w of these) {
        if (f.cold) dropCaches();
        const before = w.countsFile ? await settledCounts(w.countsFile) : undefined;
        const t = sh(c, w.root);
        byWay.get(w.name)!.push(t);
        const after = w.countsFile ? await settledCounts(w.countsFile) : undefined;
        if (after) runCounts.get(w.name)!.push({ t, c: countsDiff(after, before) });
      }
    }
    // the requests of the run whose time is the median (a run whose caches the machine's other
    // work evicted makes more requests: a different kind of run)
    const byWayCounts = new Map<string, Counts>();
    for (const [name, rc] of runCounts) {
      const median = rc.sort((a, b) => a.t - b.t)[Math.floor(rc.length / 2)];
      if (median) byWayCounts.set(name, median.c);
    }
    counts.set(f.key, byWayCounts);
    clear();
    times.set(f.key, byWay);
    const rate = (t: number): string => (f.amount / t).toFixed(f.unit === 'MB/s' ? 0 : 1);
    const show = (ts: number[]): string => ts.length === 0 ? '-' : `${rate(mid(ts))} ${f.unit} (${rate(Math.max(...ts))}-${rate(Math.min(...ts))})`;
    const kMid = mid(byWay.get(kernel.name)!);
    const c = counts.get(f.key)!;
    const ratio = (ts: number[]): string => (ts.length === 0 ? '-' : `${(kMid / mid(ts)).toFixed(2)}x`);
    log(`| ${f.what} | ${ways.map((w) => show(byWay.get(w.name)!)).join(' | ')} | ${ways.slice(1).map((w) => ratio(byWay.get(w.name)!)).join(' | ')} | ${counted.map((w) => { const x = c.get(w.name); return x ? perOp(x, f.items, f.per) : '-'; }).join('; ')} |`);
  }

  // 4 readers against 1: does each way scale with concurrent readers?
  log('');
  log('4 concurrent readers / 1 reader (rate ratio; 2 cores here):');
  for (const [one, four] of [['catCold', 'cat4Cold'], ['catWarm', 'cat4Warm'], ['readCold', 'read4Cold'], ['readWarm', 'read4Warm']] as const) {
    const a = times.get(one)!, b = times.get(four)!;
    log(`  ${one.replace(/([A-Z])/, ' $1').toLowerCase()}: ${ways.map((w) => `${w.name} ${(mid(a.get(w.name)!) / mid(b.get(w.name)!)).toFixed(2)}x`).join(', ')}`);
  }

  // copy-up last: afterwards `big` is an upper file on every way
  log('');
  log(`Copy-up of the 1 GiB lower file (printf x >> big) while another process stats uncached names (one run per way; the same stats alone first, no copy: the machine's floor); load: ${spawnSync('uptime', { encoding: 'utf8' }).stdout.trim()}`);
  const cu = new Map<string, CopyUp>();
  const ms = (x: number): string => `${x.toFixed(1)} ms`;
  for (const w of ways.filter((x) => !x.readOnly)) {
    const alone = await statsAlone(w, o.scratch);
    const r = await copyUp(w, o.scratch);
    cu.set(w.name, { ...r, alone });
    log(`  ${w.name}: copy-up ${r.copySeconds.toFixed(2)} s; longest stat ${ms(r.maxStatMs)}, p99 ${r.p99StatMs.toFixed(2)} ms; ${r.over10} of ${r.stats} stats over 10 ms in ${r.seconds.toFixed(1)} s` +
      ` (alone: longest ${ms(alone.maxStatMs)}, p99 ${alone.p99StatMs.toFixed(2)} ms, ${alone.over10} of ${alone.stats} over 10 ms)` +
      (r.counts ? `; requests ${JSON.stringify(r.counts.requests)}` : ''));
  }

  if (!stratum) return;
  const m = (key: string, w: Way) => mid(times.get(key)!.get(w.name)!);
  const goals: [string, number, (x: number) => boolean, string][] = [
    ['cat 20k small files warm, Stratum / kernel rate', m('catWarm', kernel) / m('catWarm', stratum), (x) => x >= 0.6, '>= 0.6x'],
    ['cat 20k small files cold, Stratum / kernel rate', m('catCold', kernel) / m('catCold', stratum), (x) => x >= 0.5, '>= 0.5x'],
    ['untar 20k files, Stratum / kernel rate', m('untar', kernel) / m('untar', stratum), (x) => x >= 0.5, '>= 0.5x'],
    ['1 GiB read warm, Stratum / kernel rate', m('readWarm', kernel) / m('readWarm', stratum), (x) => x >= 0.8, '>= 0.8x'],
    ['find+stat warm, Stratum / kernel time', m('findWarm', stratum) / m('findWarm', kernel), (x) => x <= 1.2, '<= 1.2x'],
  ];
  if (fo) goals.splice(3, 0, ['untar 20k files, Stratum / fuse-overlayfs rate', m('untar', fo) / m('untar', stratum), (x) => x >= 1.5, '>= 1.5x']);
  log('');
  log('Issue #15 goals:');
  for (const [what, x, ok, goal] of goals) log(`  ${ok(x) ? 'met   ' : 'missed'} ${what}: ${x.toFixed(2)}x (goal ${goal})`);
  for (const t of ways.filter((w) => w.readOnly)) {
    for (const [key, goal] of [['catWarm', 0.6], ['catCold', 0.5]] as const) {
      const x = m(key, kernel) / m(key, t);
      log(`  ${x >= goal ? 'met   ' : 'missed'} ${key === 'catWarm' ? 'cat 20k small files warm' : 'cat 20k small files cold'}, ${t.name} / kernel rate: ${x.toFixed(2)}x (goal >= ${goal}x, zero-message open)`);
    }
  }
  const s = cu.get(stratum.name)!;
  const k = cu.get(kernel.name)!;
  log(`  ${s.maxStatMs <= 10 ? 'met   ' : 'missed'} copy-up of 1 GiB, longest stat meanwhile: ${s.maxStatMs.toFixed(1)} ms, p99 ${s.p99StatMs.toFixed(2)} ms (goal <= 10 ms; ` +
    `kernel overlayfs ${k.maxStatMs.toFixed(1)} ms, p99 ${k.p99StatMs.toFixed(2)} ms; the same stats with no copy-up: Stratum ${s.alone!.maxStatMs.toFixed(1)} ms, kernel ${k.alone!.maxStatMs.toFixed(1)} ms)`);
}
