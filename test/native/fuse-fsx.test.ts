// fsx-style exerciser: random reads, writes, truncates and mmap reads/writes on a file through the
// passthrough, checked against an in-memory model after every read and against the backing file
// at checkpoints. Seeded, fixed number of operations (FSX_OPS overrides).
import * as fs from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import { backing } from '../../src/native/fuse.js';
import { fuseUnavailable, withPassthrough } from './fuse-mount.js';

const OPS = Number(process.env.FSX_OPS ?? 4000);
const MAX_LEN = 1 << 20;
const PAGE = 4096;

/** xorshift32: the same sequence for a seed, so a failure can be replayed */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

function exercise(path: string, backingPath: string, seed: number): string[] {
  const rand = rng(seed);
  let model = Buffer.alloc(0);
  let fd = fs.openSync(path, 'w+');
  const log: string[] = [];
  const fail = (msg: string) => { throw new Error(`seed ${seed}, op ${log.length}: ${msg}\nlast ops:\n${log.slice(-12).join('\n')}`); };
  const grow = (to: number) => { if (to > model.length) model = Buffer.concat([model, Buffer.alloc(to - model.length)]); };
  const checkRange = (off: number, len: number, got: Buffer, how: string) => {
    const want = Buffer.alloc(len);
    if (off < model.length) model.copy(want, 0, off, Math.min(model.length, off + len));
    if (!got.equals(want)) {
      let i = 0;
      while (got[i] === want[i]) i++;
      fail(`${how} at ${off}+${len}: first difference at byte ${off + i} (got ${got[i]}, want ${want[i]})`);
    }
  };
  try {
    for (let op = 0; op < OPS; op++) {
      const kind = rand(100);
      if (kind < 30) {  // write
        const off = rand(MAX_LEN), len = 1 + rand(Math.min(65536, MAX_LEN - off));
        const data = Buffer.alloc(len, (op % 251) + 1);
        data.writeUInt32LE(op, 0 < len - 4 ? rand(len - 3) : 0);
        log.push(`write ${off}+${len}`);
        if (fs.writeSync(fd, data, 0, len, off) !== len) fail('short write');
        grow(off + len);
        data.copy(model, off);
      } else if (kind < 55) {  // read
        const off = rand(MAX_LEN), len = 1 + rand(65536);
        log.push(`read ${off}+${len}`);
        const got = Buffer.alloc(len);
        const n = fs.readSync(fd, got, 0, len, off);
        const expectN = Math.max(0, Math.min(len, model.length - off));
        if (n !== expectN) fail(`read returned ${n}, want ${expectN}`);
        checkRange(off, n, got.subarray(0, n), 'read');
      } else if (kind < 65) {  // truncate (down or up)
        const len = rand(MAX_LEN);
        log.push(`truncate ${len}`);
        fs.ftruncateSync(fd, len);
        if (len < model.length) model = model.subarray(0, len); else grow(len);
        model = Buffer.from(model);
      } else if (kind < 75 && model.length > 0) {  // mmap write within the file
        const off = rand(model.length), len = 1 + rand(Math.min(3 * PAGE, model.length - off));
        const data = Buffer.alloc(len, 0xa0 + (op % 64));
        log.push(`mapwrite ${off}+${len}`);
        backing.mmapCopy(fd, off, data, true);
        data.copy(model, off);
      } else if (kind < 85 && model.length > 0) {  // mmap read within the file
        const off = rand(model.length), len = 1 + rand(Math.min(3 * PAGE, model.length - off));
        log.push(`mapread ${off}+${len}`);
        const got = Buffer.alloc(len);
        backing.mmapCopy(fd, off, got, false);
        checkRange(off, len, got, 'mapread');
      } else if (kind < 90) {  // size
        log.push('fstat');
        const size = fs.fstatSync(fd).size;
        if (size !== model.length) fail(`size ${size}, want ${model.length}`);
      } else if (kind < 95) {  // reopen: release, open with keep_cache
        log.push('reopen');
        fs.closeSync(fd);
        fd = fs.openSync(path, 'r+');
      } else {  // fsync, then the backing file must match
        log.push('fsync+compare');
        fs.fsyncSync(fd);
        const onDisk = fs.readFileSync(backingPath);
        if (!onDisk.equals(model)) fail(`backing file differs (size ${onDisk.length} vs ${model.length})`);
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  const whole = fs.readFileSync(path);
  if (!whole.equals(model)) fail('final content through the mount differs');
  if (!fs.readFileSync(backingPath).equals(model)) fail('final backing content differs');
  return log;
}

const skip = fuseUnavailable();
if (skip) {
  console.log(`skipping fsx: ${skip}`);
  test.skip('fsx (unavailable)', () => {});
} else {
  test(`fsx: ${OPS} random read/write/truncate/mmap operations match the model (write-through, opens in JS)`, () =>
    withPassthrough(({ mnt, back }) => { exercise(join(mnt, 'fsx'), join(back, 'fsx'), 0x5eed); }, { args: ['--open-in-js'] }));

  test(`fsx: ${OPS} random operations match the model with the kernel writeback cache`, () =>
    withPassthrough(({ mnt, back }) => { exercise(join(mnt, 'fsx'), join(back, 'fsx'), 0xbeef); }, { args: ['--writeback'] }));

  test(`fsx: ${OPS} random operations match the model with splice`, () =>
    withPassthrough(({ mnt, back }) => { exercise(join(mnt, 'fsx'), join(back, 'fsx'), 0xfeed); }, { args: ['--splice'] }));
}

test.run();
