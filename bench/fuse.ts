// Benchmark of Stratum's FUSE mount against the same tree served by kernel overlayfs (the way
// Stratum mounts a HEAD with the kernel: erofs image + objects as data-only lower) and by
// fuse-overlayfs from Debian (the source dir as its lower: it cannot read composefs images).
// One run, every way measured in the same run:
//   find+stat of ~100 000 entries, cat of 20 000 small files, 1 GiB sequential read (each: first
//   pass after drop_caches, then warm), 1 GiB sequential write+fsync into HEAD, untar of 20 000
//   files into HEAD, rm -rf of them.
// Goals (issue #7): metadata walk <= 2x kernel time; small-file cat >= 0.5x kernel; 1 GiB read
// >= 0.5x kernel; untar >= fuse-overlayfs.
// Then Stratum's kernel mode (kernelMount, docs/kernel.md) against that hand-made overlay, the two
// timed alternately (compareRuns(), bench/report.ts) on the same tree; goal (issue #8): equal
// within noise. Last, switch times on the 100k-entry HEAD with a few changed files: live commits
// (with new names, and edits only) and live applies (src/fuse/client.ts) in FUSE mode and in
// kernel mode (goal < 0.5 s each); where a mode cannot do them live (BUSY), "not available".
// Then the cost of FUSE mode's object check (docs/fuse.md: each object hashed the first time a
// mount opens it): a cold cat of the 20 000 small files and a cold 1 GiB read on a fresh tag mount
// each run, without the check (--no-verify-objects) and with it, alternately; the ratio is
// with / without. `npm run bench:fuse -- --only verify` runs just this part (import + these).
// Last, the figures of issue #15 (bench/fuse-issue15.ts): kernel overlayfs, fuse-overlayfs and the
// Stratum HEAD alternating, requests per operation beside the times (the server writes its request
// counts to STRATUM_FUSE_COUNTS), 4 concurrent readers, the stat latency during a 1 GiB copy-up,
// and each #15 goal met or missed. `npm run bench:fuse -- --only 15` runs just this part.
// Needs root. ~2.3 GiB of temp data in $STRATUM_BENCH_DIR or the OS temp dir, removed at the end;
// --runs N or STRATUM_BENCH_RUNS (default 5): alternations per compared figure.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyThroughMount, commitThroughMount, startMount, stopMount } from '../src/fuse/client.js';
import { lazyUnmount, stratumMountsAt } from '../src/fuse/server.js';
import { kernelMount, kernelUnmount } from '../src/kernel/mount.js';
import { MNT_DETACH, MS_RDONLY, mount, umount2 } from '../src/native/mount.js';
import { ensureUpper, headPaths } from '../src/store/head/index.js';
import { importDirectory } from '../src/store/commands/import.js';
import { StratumError } from '../src/store/error.js';
import { MountState, type MountEntry } from '../src/store/mount-state.js';
import { Store } from '../src/store/store.js';
import { compareRuns, medianOf as mid } from './report.js';
import { issue15 } from './fuse-issue15.js';
import { BIG, SMALL_FILES, makeReadTree, sh } from './data.js';

// `--runs N` or STRATUM_BENCH_RUNS: alternations per compared figure
const runsArg = process.argv.indexOf('--runs');
const RUNS = Number(runsArg >= 0 ? process.argv[runsArg + 1] : process.env.STRATUM_BENCH_RUNS ?? 5);
if (!(Number.isInteger(RUNS) && RUNS > 0)) throw new Error(`--runs takes a whole number above 0 (not ${String(RUNS)})`);

const dropCaches = () => spawnSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);


interface Row { way: string; findCold: number; findWarm: number; catCold: number; catWarm: number; readCold: number; readWarm: number; write: number; untar: number; rm: number }

function measure(way: string, root: string, entries: number, tarball: string, readOnly = false): Row {
  const r = { way } as Row;
  dropCaches();
  r.findCold = entries / sh(`find . -printf '%s %m\\n' > /dev/null`, root);
  r.findWarm = entries / sh(`find . -printf '%s %m\\n' > /dev/null`, root);
  dropCaches();
  r.catCold = SMALL_FILES / sh('find small -type f -print0 | xargs -0 cat > /dev/null', root);
  sh('find small -type f -print0 | xargs -0 cat > /dev/null', root);
  r.catWarm = SMALL_FILES / sh('find small -type f -print0 | xargs -0 cat > /dev/null', root);
  dropCaches();
  r.readCold = BIG / 1e6 / sh('cat big > /dev/null', root);
  r.readWarm = BIG / 1e6 / sh('cat big > /dev/null', root);
  if (readOnly) return { ...r, write: NaN, untar: NaN, rm: NaN };
  r.write = BIG / 1e6 / sh(`dd if=/dev/zero of=written bs=1M count=${BIG >> 20} conv=fsync status=none`, root);
  fs.mkdirSync(join(root, 'untar'));
  r.untar = (SMALL_FILES + 100) / sh(`tar -xf ${tarball} -C untar`, root);
  r.rm = (SMALL_FILES + 101) / sh('rm -rf untar', root);
  fs.rmSync(join(root, 'written'));
  return r;
}

interface Figure { what: string; unit: string; amount: number; runs: number; run: string; before?: () => void; prime?: boolean }

/** Rates (amount per second) of baseline and subject from alternating runs; prints one row each. */
async function compareMounts(baseline: string, subject: string, tarball: string, entries: number, log: (s: string) => void): Promise<void> {
  const clear = (...names: string[]) => () => {
    for (const root of [baseline, subject]) for (const n of names) fs.rmSync(join(root, n), { recursive: true, force: true });
    spawnSync('sync');
  };
  const figures: Figure[] = [
    { what: 'find+stat cold', unit: 'k entries/s', amount: entries / 1000, runs: RUNS, run: `find . -printf '%s %m\\n' > /dev/null`, before: dropCaches },
    { what: 'find+stat warm', unit: 'k entries/s', amount: entries / 1000, runs: RUNS, run: `find . -printf '%s %m\\n' > /dev/null`, prime: true },
    { what: 'cat small files cold', unit: 'k files/s', amount: SMALL_FILES / 1000, runs: RUNS, run: 'find small -type f -print0 | xargs -0 cat > /dev/null', before: dropCaches },
    { what: 'cat small files warm', unit: 'k files/s', amount: SMALL_FILES / 1000, runs: RUNS, run: 'find small -type f -print0 | xargs -0 cat > /dev/null', prime: true },
    { what: '1 GiB read cold', unit: 'MB/s', amount: BIG / 1e6, runs: RUNS, run: 'cat big > /dev/null', before: dropCaches },
    { what: '1 GiB read warm', unit: 'MB/s', amount: BIG / 1e6, runs: RUNS, run: 'cat big > /dev/null', prime: true },
    // primed too: every timed run then follows the removal of an earlier run's output, whose
    // freeing (the root fs may be mounted with discard) slows the next writes
    { what: '1 GiB write+fsync', unit: 'MB/s', amount: BIG / 1e6, runs: Math.min(RUNS, 3), run: `dd if=/dev/zero of=written bs=1M count=${BIG >> 20} conv=fsync status=none`, before: clear('written'), prime: true },
    { what: `untar ${SMALL_FILES / 1000}k files`, unit: 'k entries/s', amount: (SMALL_FILES + 100) / 1000, runs: RUNS, run: `mkdir untar && tar -xf ${tarball} -C untar`, before: clear('untar'), prime: true },
  ];
  log('');
  log(`Stratum kernel mode vs the hand-made kernel overlay, alternating; median (slowest-fastest) of ${RUNS} runs (1 GiB write: ${Math.min(RUNS, 3)}):`);
  log('| figure | hand-made overlay | stratum kernel mode | kernel mode / overlay |');
  log('|---|---|---|---|');
  for (const f of figures) {
    if (f.prime) {
      f.before?.();
      for (const root of [baseline, subject]) sh(f.run, root);
    }
    const r = await compareRuns(f.runs, () => void sh(f.run, baseline), () => void sh(f.run, subject), f.before ?? (() => undefined));
    const rate = (t: number): string => (f.amount / t).toFixed(f.unit === 'MB/s' ? 0 : 1);
    const show = (ts: number[]): string => `${rate(mid(ts))} ${f.unit} (${rate(Math.max(...ts))}-${rate(Math.min(...ts))})`;
    log(`| ${f.what} | ${show(r.baseline)} | ${show(r.subject)} | ${(mid(r.baseline) / mid(r.subject)).toFixed(2)}x |`);
  }
  clear('written', 'untar')();
}

/** A kernel server logs how long its overlay replacements took: the time the mount switched over. */
function switchesLogged(entry: MountEntry): string {
  if (entry.mode !== 'kernel' || !entry.log) return '';
  const last = fs.readFileSync(entry.log, 'utf8').trim().split('\n').pop() ?? '';
  const m = /overlay switch(?:es)? ([^)]*)\)$/.exec(last);
  return m ? `; the mount switched over in ${m[1]}` : '';
}

/**
 * Times a live commit of 5 edited and 5 new files (a new name takes the commit's full path:
 * docs/commit.md), live applies back to the base and forward again, then a live commit of 5
 * edits only (the fast path, which starts from the Merkle cache the first commit left).
 */
async function switchTimes(way: string, entry: MountEntry, baseId: string, log: (s: string) => void): Promise<void> {
  const root = entry.mountpoint;
  const change = (round: number, newNames: boolean): void => {
    for (let i = 0; i < 5; i++) {
      // the way in the text: content already in the store (the other mode's commit) would turn
      // the fast path down
      fs.appendFileSync(join(root, 'small', `d${i}`, 'f0'), `changed ${i} in round ${round} by ${way}\n`);
      if (newNames) fs.writeFileSync(join(root, `new-${round}-${i}`), `new ${i}\n`);
    }
  };
  const timed = async (what: string, fn: () => Promise<unknown>): Promise<boolean> => {
    const t = process.hrtime.bigint();
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof StratumError && err.code === 'BUSY')) throw err;
      log(`${way}: ${what}: not available (${err.message})`);
      return false;
    }
    log(`${way}: ${what}: ${(Number(process.hrtime.bigint() - t) / 1e9).toFixed(3)} s (goal < 0.5 s)${switchesLogged(entry)}`);
    return true;
  };
  change(1, true);
  const committed = await timed('live commit, 5 edited + 5 new files', () => commitThroughMount(entry, 'switch'));
  // without a commit the changes are still there: keep them, so apply is measured all the same
  await timed('live apply to the base', () => applyThroughMount(entry, `${entry.label}@sha256:${baseId}`, { keep: !committed }));
  if (!committed) return;
  await timed('live apply back to the commit', () => applyThroughMount(entry, `${entry.label}:switch`));
  change(2, false);
  await timed('live commit, 5 edited files only', () => commitThroughMount(entry, 'switch-2'));
}

/**
 * First reads through a fresh FUSE tag mount with and without the object check, alternately
 * (a mount remembers what it checked, so every run mounts anew); caches dropped before each.
 */
async function verifyCost(storeRoot: string, id: string, base: string, state: MountState, log: (s: string) => void): Promise<void> {
  const figures = [
    { what: `cat ${SMALL_FILES / 1000}k small files, cold, first open`, unit: 'k files/s', amount: SMALL_FILES / 1000, run: 'find small -type f -print0 | xargs -0 cat > /dev/null' },
    { what: '1 GiB read, cold, first open', unit: 'MB/s', amount: BIG / 1e6, run: 'cat big > /dev/null' },
  ];
  const mnt = join(base, 'v-mnt');
  const once = async (run: string, verifyObjects: boolean): Promise<number> => {
    const entry = await startMount({ store: storeRoot, label: 'f', tag: `@${id}`, mountpoint: mnt, state, verifyObjects });
    try {
      dropCaches();
      return sh(run, mnt);
    } finally {
      await stopMount({ ...entry, stale: false }, state);
    }
  };
  log('');
  log(`FUSE mode's object check on first open (fresh tag mount per run), alternating; median (slowest-fastest) of ${RUNS} runs:`);
  log('| figure | without the check | with the check | with / without |');
  log('|---|---|---|---|');
  for (const f of figures) {
    const without: number[] = [], withCheck: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      without.push(await once(f.run, false));
      withCheck.push(await once(f.run, true));
    }
    const rate = (t: number): string => (f.amount / t).toFixed(f.unit === 'MB/s' ? 0 : 1);
    const show = (ts: number[]): string => `${rate(mid(ts))} ${f.unit} (${rate(Math.max(...ts))}-${rate(Math.min(...ts))})`;
    log(`| ${f.what} | ${show(without)} | ${show(withCheck)} | ${(mid(without) / mid(withCheck)).toFixed(2)}x |`);
  }
}

async function main(): Promise<void> {
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
  if (only !== undefined && only !== 'verify' && only !== '15') throw new Error(`--only takes: verify, 15 (not ${only})`);
  if (process.getuid?.() !== 0) throw new Error('bench:fuse needs root (it mounts)');
  const hasFuseOverlayfs = spawnSync('sh', ['-c', 'command -v fuse-overlayfs']).status === 0;
  const base = fs.mkdtempSync(join(process.env.STRATUM_BENCH_DIR ?? tmpdir(), 'stratum-bench-fuse-'));
  const mounted: string[] = [];
  const log = (s: string) => console.log(s);
  let fusePid: number | undefined;
  let tagPid: number | undefined;
  let kernelEntry: MountEntry | undefined;
  const state = new MountState(join(base, 'state'));
  try {
    const src = join(base, 'src');
    log(`data in ${base}; load: ${spawnSync('uptime', { encoding: 'utf8' }).stdout.trim()}`);
    const entries = makeReadTree(src, { distinct: true });
    const tarball = join(base, 'small.tar');
    sh(`tar -cf ${tarball} -C ${src} small`, base);
    const store = await Store.open(join(base, 'store'), { create: true });
    let t = Date.now();
    const id = (await importDirectory(store, src, { label: 'f' })).id;
    log(`import of ${entries} entries + 1 GiB: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    if (only === 'verify') {
      await verifyCost(store.root, id, base, state, log);
      return;
    }
    await importDirectory(store, src, { label: 'k' });
    if (only !== '15') await importDirectory(store, src, { label: 'km' });
    for (const l of only === '15' ? ['f', 'k'] : ['f', 'k', 'km']) await ensureUpper(store, (await store.heads.read(l))!);

    // kernel overlayfs, mounted the way Stratum mounts a HEAD
    const lower = join(base, 'k-lower'), kmnt = join(base, 'k-mnt');
    fs.mkdirSync(lower); fs.mkdirSync(kmnt);
    mount(store.commits.imagePath(id), lower, 'erofs', MS_RDONLY, null);
    mounted.push(lower);
    const kp = headPaths(store, 'k');
    fs.mkdirSync(kp.work, { recursive: true });
    mount('overlay', kmnt, 'overlay', 0, `lowerdir=${lower}::${store.objects.root},upperdir=${kp.upper},workdir=${kp.work},metacopy=on,redirect_dir=on`);
    mounted.push(kmnt);

    // fuse-overlayfs over the source tree
    const fo = join(base, 'fo-mnt');
    if (hasFuseOverlayfs) {
      for (const d of ['fo-upper', 'fo-work', 'fo-mnt']) fs.mkdirSync(join(base, d));
      sh(`fuse-overlayfs -o lowerdir=${src},upperdir=${join(base, 'fo-upper')},workdir=${join(base, 'fo-work')} ${fo}`, base);
      mounted.push(fo);
    } else log('fuse-overlayfs is not installed (apt-get install fuse-overlayfs): its column is skipped');

    // stratum FUSE HEAD
    const smnt = join(base, 's-mnt');
    t = Date.now();
    const countsFile = join(base, 'fuse-counts.json');
    process.env.STRATUM_FUSE_COUNTS = countsFile;  // the server inherits it: its request counts
    const e = await startMount({ store: store.root, label: 'f', mountpoint: smnt, state })
      .finally(() => { delete process.env.STRATUM_FUSE_COUNTS; });
    fusePid = e.pid;
    log(`stratum mount ready in ${Date.now() - t} ms`);
    // a tag mount of the same commit: zero-message open (docs/fuse.md), counted apart
    const tmnt = join(base, 't-mnt');
    const tagCounts = join(base, 'fuse-counts-tag.json');
    process.env.STRATUM_FUSE_COUNTS = tagCounts;
    tagPid = (await startMount({ store: store.root, label: 'f', tag: `@${id}`, mountpoint: tmnt, state })
      .finally(() => { delete process.env.STRATUM_FUSE_COUNTS; })).pid;
    const last15 = () => issue15([
      { name: 'kernel overlayfs', root: kmnt },
      ...(hasFuseOverlayfs ? [{ name: 'fuse-overlayfs', root: fo }] : []),
      { name: 'stratum FUSE HEAD', root: smnt, countsFile },
      { name: 'stratum FUSE tag', root: tmnt, countsFile: tagCounts, readOnly: true },
    ], { entries, tarball, runs: RUNS, scratch: base, log });
    if (only === '15') {
      await last15();
      return;
    }

    const rows: Row[] = [];
    rows.push(measure('kernel overlayfs', kmnt, entries, tarball));
    if (hasFuseOverlayfs) rows.push(measure('fuse-overlayfs 1.10', fo, entries, tarball));
    rows.push(measure('stratum FUSE tag (read-only)', tmnt, entries, tarball, true));
    rows.push(measure('stratum FUSE HEAD', smnt, entries, tarball));

    const k = (s: string) => `${(Number(s) / 1000).toFixed(1)}k`;
    log('');
    log(`| served by | find+stat/s cold | warm | cat files/s cold | warm | 1 GiB read MB/s cold | warm | 1 GiB write+fsync MB/s | untar entries/s | rm -rf entries/s |`);
    log('|---|---|---|---|---|---|---|---|---|---|');
    for (const r of rows) {
      const n = (v: number, f: (x: number) => string) => (Number.isNaN(v) ? '-' : f(v));
      log(`| ${r.way} | ${k(String(r.findCold))} | ${k(String(r.findWarm))} | ${k(String(r.catCold))} | ${k(String(r.catWarm))} | ${r.readCold.toFixed(0)} | ${r.readWarm.toFixed(0)} | ${n(r.write, (v) => v.toFixed(0))} | ${n(r.untar, (v) => k(String(v)))} | ${n(r.rm, (v) => k(String(v)))} |`);
    }
    const kr = rows[0]!, s = rows[rows.length - 1]!, tr = rows[rows.length - 2]!, fr = hasFuseOverlayfs ? rows[1]! : undefined;
    const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
    log('');
    log(`stratum / kernel: find+stat time cold ${x(kr.findCold, s.findCold)} warm ${x(kr.findWarm, s.findWarm)} (goal <= 2x); ` +
      `cat cold ${x(s.catCold, kr.catCold)} warm ${x(s.catWarm, kr.catWarm)} (goal >= 0.5x); read cold ${x(s.readCold, kr.readCold)} warm ${x(s.readWarm, kr.readWarm)} (goal >= 0.5x); ` +
      `write ${x(s.write, kr.write)}; untar ${x(s.untar, kr.untar)}; rm ${x(s.rm, kr.rm)}`);
    log(`stratum tag (read-only) / kernel: find+stat time warm ${x(kr.findWarm, tr.findWarm)}; cat cold ${x(tr.catCold, kr.catCold)} warm ${x(tr.catWarm, kr.catWarm)}; read warm ${x(tr.readWarm, kr.readWarm)}`);
    if (fr) log(`stratum / fuse-overlayfs: untar ${x(s.untar, fr.untar)} (goal >= 1x); rm ${x(s.rm, fr.rm)}; cat warm ${x(s.catWarm, fr.catWarm)}; find warm ${x(s.findWarm, fr.findWarm)}`);

    // Stratum's kernel mode, as `stratum mount km --mode kernel` makes it
    t = Date.now();
    kernelEntry = await kernelMount({ store: store.root, label: 'km', mountpoint: join(base, 'km-mnt'), state });
    log('');
    log(`stratum kernel-mode mount ready in ${Date.now() - t} ms`);
    await compareMounts(kmnt, kernelEntry.mountpoint, tarball, entries, log);

    log('');
    log(`switch times on a HEAD of ${entries} entries:`);
    await switchTimes('FUSE mode', e, id, log);
    await switchTimes('kernel mode', kernelEntry, id, log);
    await verifyCost(store.root, id, base, state, log);
    // last: its copy-up leaves the 1 GiB file an upper file of the HEAD
    await last15();
    log(`load at the end: ${spawnSync('uptime', { encoding: 'utf8' }).stdout.trim()}`);
  } finally {
    if (kernelEntry) await kernelUnmount(kernelEntry, state).catch((err: unknown) => console.error(`kernel-mode unmount: ${String(err)}`));
    for (const [pid, m] of [[fusePid, 's-mnt'], [tagPid, 't-mnt']] as const) {
      if (pid === undefined) continue;
      try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 250 && stratumMountsAt(join(base, m)); i++) await new Promise((r) => setTimeout(r, 20));
      if (stratumMountsAt(join(base, m))) lazyUnmount(join(base, m));
    }
    for (const m of mounted.reverse()) {
      try { umount2(m, 0); } catch { try { umount2(m, MNT_DETACH); } catch { /* gone */ } }
    }
    fs.rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
