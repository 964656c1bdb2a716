// The trees benchmarks make, and how they time a shell command. The FUSE benchmarks
// (bench/fuse.ts, bench/fuse-binding.ts) read one generator's tree, so both measure the same shapes:
//   small/  100 dirs x 200 files of 1-4 KiB (SMALL_FILES)
//   tree/   empty files, 500 a dir, filling the whole tree up to TREE_ENTRIES
//   big     one 1 GiB file (BIG)
// The import and OCI benchmarks store `incompressibleFiles`: random files of mixed small sizes.
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';

export const SMALL_FILES = 20_000;
export const TREE_ENTRIES = 100_000;
export const BIG = 1 << 30;

/** Seconds `cmd` took in `cwd`; throws with its stderr when it fails. */
export function sh(cmd: string, cwd: string): number {
  const t = process.hrtime.bigint();
  const r = spawnSync('sh', ['-c', cmd], { cwd, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} in ${cwd}: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/**
 * Writes the tree into `data`; returns its entry count (the root included). `distinct`: every
 * small file and every 4 MiB of the big one has its own bytes (for a store: each its own object).
 */
export function makeReadTree(data: string, options: { distinct: boolean }): number {
  let entries = 0;
  const content = Buffer.alloc(4096, 'stratum ');
  for (let d = 0; d < 100; d++) {
    const dir = join(data, 'small', `d${d}`);
    fs.mkdirSync(dir, { recursive: true });
    entries++;
    for (let f = 0; f < SMALL_FILES / 100; f++) {
      const b = Buffer.from(content.subarray(0, 1024 + ((d * 7 + f * 13) % 3072)));
      if (options.distinct) b.write(`${d}/${f}`);
      fs.writeFileSync(join(dir, `f${f}`), b);
      entries++;
    }
  }
  for (let d = 0; entries < TREE_ENTRIES; d++) {
    const dir = join(data, 'tree', `t${d}`);
    fs.mkdirSync(dir, { recursive: true });
    entries++;
    for (let f = 0; f < 500 && entries < TREE_ENTRIES; f++, entries++) fs.closeSync(fs.openSync(join(dir, `e${f}`), 'w'));
  }
  const fd = fs.openSync(join(data, 'big'), 'w');
  const chunk = Buffer.alloc(1 << 22, 7);
  for (let off = 0; off < BIG; off += chunk.length) {
    if (options.distinct) chunk.fill(off / chunk.length);
    fs.writeSync(fd, chunk, 0, chunk.length, off);
  }
  fs.closeSync(fd);
  return entries + 1;
}

/** `count` files of random bytes in 200 dirs, sizes cycling through `sizes`; returns the bytes written. */
export function incompressibleFiles(dir: string, count: number, sizes = [100, 700, 2000, 5000, 12_000, 30_000]): number {
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const sub = join(dir, `d${i % 200}`);
    if (i < 200) fs.mkdirSync(sub, { recursive: true });
    const size = sizes[i % sizes.length]!;
    fs.writeFileSync(join(sub, `f${i}`), crypto.randomFillSync(Buffer.alloc(size)));
    bytes += size;
  }
  return bytes;
}
