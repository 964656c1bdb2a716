// npm run bench:commit — commit of 1, 100 and 10 000 changed files on HEADs of 10k and 100k files,
// beside a full re-import of the merged tree (what the seed's mkcomposefs approach costs: read,
// hash and lay out every file). Full-path commits also print their CPU time (this process: the
// figure to compare on a shared, loaded machine). Commits of new, deleted or renamed names take the full path, with
// the leaves of untouched files from the base's Merkle cache. Per size: the full import, then per change count the median
// commit time (of 3, 1 for 10 000), its phases, and the ratio to the full import. The changes are
// edits of existing files (new content), so after the first commit they take the fast path
// (head-patch.ts); the first commit after the import is timed apart (full path), and so are
// commits that add new files (a new name always takes the full path), and commits of one deleted
// and one renamed file (as the kernel leaves them in the upper: a whiteout; a metacopy redirect). Every file of the source
// tree gets its own mtime, as in a tree grown over time: an inode whose mtime is the image's
// minimum is stored compact, and an edit that makes it extended cannot be patched in place (a
// tree where every mtime is equal, as in reproducible builds, always takes the full path).
import { setFlagsFromString } from 'node:v8';
import { mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CommitResult, type CommitStep, commitHead, ensureUpper, headPaths } from '../src/store/commands/commit.js';
import { importDirectory } from '../src/store/commands/import.js';
import { Store } from '../src/store/store.js';
import { COMMIT_V8_FLAGS } from '../src/store/head/engine.js';
import { S_IFCHR, lutimensNs, mknod } from '../src/native/files.js';
import { lsetxattr } from '../src/native/xattr.js';
import { FileSource, ImageReader } from '../src/store/image/read.js';

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** n files in dirs of 100 (under dirs of 10 dirs): sizes 100..2000 bytes. */
async function makeSource(root: string, n: number): Promise<string[]> {
  const paths: string[] = [];
  for (let i = 0; i < n; i++) paths.push(`d${Math.floor(i / 1000)}/s${Math.floor(i / 100) % 10}/f${i}.dat`);
  const dirs = new Set(paths.map((p) => p.slice(0, p.lastIndexOf('/'))));
  for (const d of dirs) mkdirSync(join(root, d), { recursive: true });
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const i = next++;
      await writeFile(join(root, paths[i]!), bytes(100 + (i % 1900), i + 1));
      // a tree grown over time: every file has its own mtime (see the note at the top)
      await utimes(join(root, paths[i]!), 1_600_000_000 + i, 1_600_000_000 + i);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  let d = 0;
  for (const dir of [...dirs].sort().reverse()) await utimes(join(root, dir), 1_650_000_000 + d, 1_650_000_000 + d++);
  return paths;
}

/**
 * A copy-up leaves its parent's times as they were (the kernel restores them, and so does the
 * FUSE server); the bench makes its upper dirs directly, so it puts the upper root's mtime back
 * to the base root's (ensureUpper made the root with it; a commit leaves a fresh one).
 */
function keepRootTime(upper: string): void {
  const t = rootTimes.get(upper);
  if (t) lutimensNs(upper, t);
}
const rootTimes = new Map<string, { sec: number; nsec: number }>();
/** Notes the upper root's mtime, to the nanosecond (right after a commit made it fresh). */
function noteRootTime(upper: string): void {
  const ns = statSync(upper, { bigint: true }).mtimeNs;
  rootTimes.set(upper, { sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) });
}

/** CPU time of this process since `from` (user + system): steadier than wall time on a shared machine. */
const cpuMs = (from: NodeJS.CpuUsage): number => {
  const u = process.cpuUsage(from);
  return (u.user + u.system) / 1000;
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number): string => (x < 10 ? x.toFixed(1) : x.toFixed(0)).padStart(6) + ' ms';

/** One HEAD commit of label app, timed: wall and CPU ms, and the time of each phase. */
async function timedCommit(store: Store): Promise<{ result: CommitResult; wall: number; cpu: number; phases: string }> {
  const cpu0 = process.cpuUsage();
  const marks: Array<[CommitStep | 'start', number]> = [['start', performance.now()]];
  const result = await commitHead(store, { label: 'app', onStep: (s) => void marks.push([s, performance.now()]) });
  const wall = performance.now() - marks[0]![1];
  const cpu = cpuMs(cpu0);
  noteRootTime(headPaths(store, 'app').upper);
  const at = (s: CommitStep): number => marks.find((m) => m[0] === s)?.[1] ?? NaN;
  const phases = `prepare ${ms(at('merged') - marks[0]![1]).trim()}, stage ${ms(at('staged') - at('merged')).trim()}, objects+commit ${ms(at('image') - at('staged')).trim()}, head+swap ${ms(at('done') - at('image')).trim()}`;
  return { result, wall, cpu, phases };
}

/** Size of a file in HEAD's base (earlier rounds edited some). */
async function sizeInBase(store: Store, path: string): Promise<number> {
  const source = new FileSource(store.commits.imagePath((await store.heads.read('app'))!.base));
  try {
    const reader = ImageReader.open(source);
    let nid = reader.rootNid;
    for (const part of path.split('/')) nid = reader.lookup(nid, part)!;
    return reader.getattr(nid).size;
  } finally {
    source.close();
  }
}

// as the CLI and a mount's commit child run commits (src/store/head/engine.ts)
setFlagsFromString(COMMIT_V8_FLAGS);

const sizes = (process.env.BENCH_SIZES ?? '10000,100000').split(',').map(Number);
const work = mkdtempSync(join(tmpdir(), 'stratum-bench-commit-'));
try {
  for (const n of sizes) {
    const src = join(work, `src-${n}`);
    const paths = await makeSource(src, n);
    const store = await Store.open(join(work, `store-${n}`), { create: true });
    const t0 = performance.now();
    await importDirectory(store, src, { label: 'app' });
    const importMs = performance.now() - t0;
    // The full re-import of a tree this size into a store that has every object already
    // (the cheapest the mkcomposefs approach can be: read, hash, lay out everything again).
    const t1 = performance.now();
    await importDirectory(store, src, { label: 'again' });
    const reimportMs = performance.now() - t1;
    console.log(`HEAD of ${n.toLocaleString('en')} files: full import ${ms(importMs)}, full re-import (objects present) ${ms(reimportMs)}`);
    await ensureUpper(store, (await store.heads.read('app'))!);
    const upper = headPaths(store, 'app').upper;
    // The first commit after an import (its new file takes the full path, from the Merkle cache the import left); timed apart.
    writeFileSync(join(upper, 'warm-up'), 'x');
    const tw = performance.now();
    const warm = await commitHead(store, { label: 'app' });
    noteRootTime(upper);
    console.log(`  first commit after the import (1 new file, ${warm.path} path): ${ms(performance.now() - tw)}`);
    if (warm.fastPath) throw new Error('a new name took the edits-only path');
    let round = 0;
    for (const changes of [1, 100, 10_000]) {
      if (changes > n) continue;
      const runs = changes >= 10_000 ? 1 : 3;
      const times: number[] = [];
      let phases = '';
      let fast = 0;
      for (let r = 0; r < runs; r++) {
        round++;
        // changed files, as the kernel leaves them in the upper after a full copy-up
        const chosen = Array.from({ length: changes }, (_, i) => paths[(i * 7919 + round) % n]!);
        for (const p of new Set(chosen.map((c) => c.slice(0, c.lastIndexOf('/'))))) mkdirSync(join(upper, p), { recursive: true });
        keepRootTime(upper);
        await Promise.all(chosen.map((p, i) => writeFile(join(upper, p), bytes(100 + (i % 1900), round * 1_000_003 + i))));
        const timed = await timedCommit(store);
        const result = timed.result;
        times.push(timed.wall);
        phases = timed.phases;
        if (result.storedFiles !== changes) throw new Error(`expected ${changes} stored files, got ${result.storedFiles}`);
        if (result.fastPath) fast++;
      }
      const t = median(times);
      console.log(`  commit of ${String(changes).padStart(6)} edited:  ${ms(t)} [${fast}/${runs} edits-only path] (${phases})  ratio to full re-import ${(t / reimportMs).toFixed(3)}, to full import ${(t / importMs).toFixed(3)}`);
    }
    for (const added of [1, 100]) {
      const taken = new Set<string>();
      const times: number[] = [];
      const cpus: number[] = [];
      let phases = '';
      for (let r = 0; r < 3; r++) {
        round++;
        for (let i = 0; i < added; i++) writeFileSync(join(upper, `new-${round}-${i}.dat`), bytes(500, round * 1000 + i)); // (contents new to the tree: one already in it would make its metacopy a shared xattr)
        const timed = await timedCommit(store);
        const result = timed.result;
        times.push(timed.wall);
        cpus.push(timed.cpu);
        phases = timed.phases;
        if (result.fastPath) throw new Error('a new name took the edits-only path');
        taken.add(result.path);
      }
      const t = median(times);
      console.log(`  commit of ${String(added).padStart(6)} added:   ${ms(t)} (cpu ${ms(median(cpus)).trim()}) [${[...taken].join('+')} path] (${phases})  ratio to full re-import ${(t / reimportMs).toFixed(3)}, to full import ${(t / importMs).toFixed(3)}`);
    }
    // One deleted and one renamed file, as the kernel leaves them in the upper: a whiteout (char
    // 0/0) for the old name; for a rename, a metacopy file at the new name redirecting to the old.
    const ns = (await store.heads.read('app'))!.xattrNamespace;
    let victim = 0;
    for (const kind of ['deleted', 'renamed'] as const) {
      const taken = new Set<string>();
      const times: number[] = [];
      const cpus: number[] = [];
      let phases = '';
      for (let r = 0; r < 3; r++) {
        round++;
        const p = paths[(victim++ * 104_729 + 17) % n]!;
        const dir = p.slice(0, p.lastIndexOf('/'));
        mkdirSync(join(upper, dir), { recursive: true });
        keepRootTime(upper);
        mknod(join(upper, p), S_IFCHR | 0o644, 0, 0);
        if (kind === 'renamed') {
          const to = join(upper, dir, `renamed-${round}.dat`);
          writeFileSync(to, '');
          truncateSync(to, await sizeInBase(store, p));
          lsetxattr(to, `${ns}.overlay.metacopy`, new Uint8Array(0));
          lsetxattr(to, `${ns}.overlay.redirect`, Buffer.from(`/${p}`));
        }
        const timed = await timedCommit(store);
        const result = timed.result;
        times.push(timed.wall);
        cpus.push(timed.cpu);
        phases = timed.phases;
        if (result.deletions !== 1 || result.unchanged) throw new Error(`expected one deletion, got ${result.deletions}`);
        taken.add(result.path);
      }
      const t = median(times);
      console.log(`  commit of      1 ${kind}: ${ms(t)} (cpu ${ms(median(cpus)).trim()}) [${[...taken].join('+')} path] (${phases})  ratio to full re-import ${(t / reimportMs).toFixed(3)}, to full import ${(t / importMs).toFixed(3)}`);
    }
    rmSync(src, { recursive: true, force: true });
    rmSync(store.root, { recursive: true, force: true });
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

