// Benchmark of the FUSE binding: the same files served three ways (the directory itself, kernel
// overlayfs with it as lower layer, the binding's TS passthrough), measured in one run:
//   cat of 20 000 small files, find+stat of ~100 000 entries, 1 GiB sequential read and write+fsync.
// Warm figures are medians of 5 rounds (3 for writes) visiting the ways in turn, after a first pass per
// way; the passthrough's first pass is printed too, with
// the requests that reached JS and C per operation (read from the passthrough's control file).
// Needs root (mounts). Temp data (~1.1 GiB) goes to $STRATUM_BENCH_DIR or the OS temp dir and is removed.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONTROL_NAME, spawnPassthrough, type PassthroughServer } from '../examples/passthrough.js';
import { BIG, SMALL_FILES, makeReadTree, sh } from './data.js';


interface Counters { jsRequests: number; cRequests: number }
interface Way { name: string; root: string; counters?: () => Counters }
interface Figures { cat: number; find: number; read: number; write: number }



const ROUNDS = 5;

/** One pass of the read-side workloads over a way; with `tag`, logs the requests per operation. */
function readPass(way: Way, entries: number, log: (s: string) => void, tag?: string): Figures {
  const before = way.counters?.();
  const cat = SMALL_FILES / sh(`find small -type f -print0 | xargs -0 cat > /dev/null`, way.root);
  const afterCat = way.counters?.();
  const find = entries / sh(`find . -printf '%s %m\\n' > /dev/null`, way.root);
  const afterFind = way.counters?.();
  const read = BIG / 1e6 / sh('cat big > /dev/null', way.root);
  const afterRead = way.counters?.();
  if (tag && before && afterCat && afterFind && afterRead) {
    const per = (a: Counters, b: Counters, n: number, what: string) =>
      log(`    ${way.name} ${tag} ${what}: ${((b.jsRequests - a.jsRequests) / n).toFixed(2)} JS requests and ` +
        `${((b.cRequests - a.cRequests) / n).toFixed(2)} C requests per ${what === 'read' ? 'MiB' : 'entry'}`);
    per(before, afterCat, SMALL_FILES, 'cat');
    per(afterCat, afterFind, entries, 'find+stat');
    per(afterFind, afterRead, BIG / (1 << 20), 'read');
  }
  return { cat, find, read, write: 0 };
}

function writePass(way: Way, log: (s: string) => void, tag?: string): number {
  const before = way.counters?.();
  const t = sh(`dd if=/dev/zero of=written bs=1M count=${BIG >> 20} conv=fsync status=none`, way.root);
  const after = way.counters?.();
  if (tag && before && after) {
    log(`    ${way.name} ${tag} write: ${((after.jsRequests - before.jsRequests) / (BIG >> 20)).toFixed(2)} JS requests and ` +
      `${((after.cRequests - before.cRequests) / (BIG >> 20)).toFixed(2)} C requests per MiB`);
  }
  fs.rmSync(join(way.root, 'written'));
  return BIG / 1e6 / t;
}

/** First pass per way, then ROUNDS rounds that visit every way in turn (load bursts from other
 * work on the machine hit all ways alike); warm figures are the medians of the rounds. */
function measureAll(ways: Way[], entries: number, log: (s: string) => void): Map<string, { warm: Figures; first: Figures }> {
  const first = new Map<string, Figures>();
  for (const w of ways) {
    const f = readPass(w, entries, log, 'first');
    f.write = writePass(w, log, 'first');
    first.set(w.name, f);
  }
  const rounds = new Map<string, Figures[]>(ways.map((w) => [w.name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const w of ways) {
      const last = r === ROUNDS - 1 ? 'warm' : undefined;
      const f = readPass(w, entries, log, last);
      if (r < 3) f.write = writePass(w, log, last && 'warm');  // 1 GiB + fsync: three rounds are enough
      rounds.get(w.name)!.push(f);
    }
  }
  const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };
  const out = new Map<string, { warm: Figures; first: Figures }>();
  for (const w of ways) {
    const fs_ = rounds.get(w.name)!;
    out.set(w.name, { first: first.get(w.name)!, warm: {
      cat: median(fs_.map((f) => f.cat)), find: median(fs_.map((f) => f.find)), read: median(fs_.map((f) => f.read)),
      write: median(fs_.slice(0, 3).map((f) => f.write)) } });
  }
  return out;
}

async function main(): Promise<void> {
  if (process.geteuid?.() !== 0) { console.error('bench:fuse-binding needs root (it mounts overlayfs and FUSE)'); process.exit(2); }
  const base = fs.mkdtempSync(join(process.env.STRATUM_BENCH_DIR ?? tmpdir(), 'stratum-fuse-bench-'));
  const data = join(base, 'data'), ovl = join(base, 'ovl'), up = join(base, 'up'), work = join(base, 'work'), mnt = join(base, 'mnt');
  for (const d of [data, ovl, up, work, mnt]) fs.mkdirSync(d);
  let server: PassthroughServer | undefined;
  const lines: string[] = [];
  const log = (s: string) => { console.log(s); lines.push(s); };
  try {
    let t = Date.now();
    const entries = makeReadTree(data, { distinct: false });
    console.log(`data: ${SMALL_FILES} small files, ${entries} entries, 1 GiB file (${((Date.now() - t) / 1000).toFixed(1)} s to create)`);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${data},upperdir=${up},workdir=${work}`, ovl]);
    server = await spawnPassthrough(data, mnt, ['--timeout', '86400', '--immutable', '--control', '--no-flush']);
    const counters = () => JSON.parse(fs.readFileSync(join(mnt, CONTROL_NAME), 'utf8')) as Counters;
    const ways: Way[] = [
      { name: 'direct', root: data },
      { name: 'overlayfs', root: ovl },
      { name: 'binding', root: mnt, counters },
    ];
    t = Date.now();
    log(`load average before: ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} (2 cores; other work competes)`);
    const results = measureAll(ways, entries, log);
    console.log(`  measured in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    const row = (name: string, f: Figures) =>
      `| ${name.padEnd(22)} | ${(f.cat / 1000).toFixed(1).padStart(8)}k | ${(f.find / 1000).toFixed(1).padStart(8)}k | ${f.read.toFixed(0).padStart(8)} | ${f.write.toFixed(0).padStart(8)} |`;
    log('');
    log(`| served by (median of ${ROUNDS} rounds) | cat files/s | find+stat/s | read MB/s | write+fsync MB/s |`);
    log('|---|---|---|---|---|');
    for (const w of ways) log(row(w.name + ' (warm)', results.get(w.name)!.warm));
    log(row('binding (first pass)', results.get('binding')!.first));
    const o = results.get('overlayfs')!.warm, b = results.get('binding')!.warm;
    log('');
    log(`binding / overlayfs (warm): cat ${(b.cat / o.cat).toFixed(2)}x (goal >= 0.5), find+stat time ${(o.find / b.find).toFixed(2)}x ` +
      `(goal <= 2), 1 GiB read ${(b.read / o.read).toFixed(2)}x (goal >= 0.7), write ${(b.write / o.write).toFixed(2)}x`);
    const s = counters() as Counters & { inodes: number };
    log(`passthrough totals: ${s.jsRequests} requests to JS, ${s.cRequests} served in C, ${s.inodes} inodes known`);
    await server.stop();
    server = undefined;

    // Where the time goes: the same passthrough with opens answered in JS, and with no kernel caching
    // (every lookup and getattr a JS round trip).
    log('');
    log('breakdown (warm, third pass, single run):');
    for (const [label, args] of [
      ['opens in JS (no C open fast path)', ['--timeout', '86400', '--immutable', '--open-in-js', '--no-flush']],
      ['opens in JS, flush sent', ['--timeout', '86400', '--immutable', '--open-in-js']],
      ['no caching (timeouts 0)', ['--timeout', '0', '--control']],
    ] as const) {
      const m2 = join(base, 'mnt2');
      fs.mkdirSync(m2, { recursive: true });
      const srv = await spawnPassthrough(data, m2, [...args, '--control']);
      try {
        const c2 = () => JSON.parse(fs.readFileSync(join(m2, CONTROL_NAME), 'utf8')) as Counters;
        const catOnce = () => sh(`find small -type f -print0 | xargs -0 cat > /dev/null`, m2);
        const findOnce = () => sh(`find small -printf '%s %m\\n' > /dev/null`, m2);
        catOnce();
        catOnce();  // the first pass read through FUSE, which marks atime stale: one getattr per file next time
        let a = c2();
        const tc = catOnce();
        let b = c2();
        log(`  ${label}: cat ${(SMALL_FILES / tc / 1000).toFixed(1)}k files/s, ` +
          `${((b.jsRequests - a.jsRequests) / SMALL_FILES).toFixed(2)} JS + ${((b.cRequests - a.cRequests) / SMALL_FILES).toFixed(2)} C requests per file, ` +
          `${(tc / SMALL_FILES * 1e6).toFixed(1)} us per file`);
        findOnce();
        a = c2();
        const tf = findOnce();
        b = c2();
        const js = b.jsRequests - a.jsRequests, n = SMALL_FILES + 101;
        log(`  ${label}: find+stat ${(n / tf / 1000).toFixed(1)}k entries/s, ${(js / n).toFixed(2)} JS requests per entry` +
          (js > n / 2 ? `, ${(tf / js * 1e6).toFixed(1)} us per JS round trip (find is sequential)` : ''));
      } finally {
        await srv.stop();
      }
    }
  } finally {
    if (server) {
      await server.stop();
    }
    spawnSync('umount', ['-l', mnt]);
    spawnSync('umount', ['-l', ovl]);
    fs.rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
