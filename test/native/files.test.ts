import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { systemError } from '../helpers/assert.js';
import { closeSync, lstatSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFREG,
  lutimensNs, mknod, renameat2, syncfs,
} from '../../src/native/files.js';

const dir = mkdtempSync(join(tmpdir(), 'stratum-files-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

let serial = 0;
const fresh = (label: string) => join(dir, `${label}${serial++}`);

// Linux's new_encode_dev for small numbers, which is what stat reports as rdev.
const rdev = (major: number, minor: number) => (major << 8) | minor;

test('mknod S_IFCHR 0:0 makes an overlayfs whiteout', () => {
  const path = fresh('whiteout');
  mknod(path, S_IFCHR, 0, 0);
  const st = lstatSync(path);
  assert.ok(st.isCharacterDevice());
  assert.is(st.rdev, 0);
  assert.is(st.mode & 0o7777, 0);
});

test('mknod makes fifos, regular files and real devices, with the permission bits asked for', () => {
  const fifo = fresh('fifo');
  mknod(fifo, S_IFIFO | 0o640);
  assert.ok(lstatSync(fifo).isFIFO());
  assert.is(lstatSync(fifo).mode & 0o777, 0o640 & ~process.umask());

  const plain = fresh('plain');
  mknod(plain, S_IFREG | 0o600);
  assert.ok(lstatSync(plain).isFile());

  const nullDevice = fresh('null');
  mknod(nullDevice, S_IFCHR | 0o666, 1, 3); // the same device as /dev/null
  assert.is(lstatSync(nullDevice).rdev, rdev(1, 3));
  assert.is(lstatSync(nullDevice).rdev, lstatSync('/dev/null').rdev);
  writeFileSync(nullDevice, 'swallowed');
  assert.is(readFileSync(nullDevice).length, 0);

  const loop = fresh('loop');
  mknod(loop, S_IFBLK | 0o600, 7, 200);
  const st = lstatSync(loop);
  assert.ok(st.isBlockDevice());
  assert.is(st.mode & S_IFMT, S_IFBLK);
  assert.is(st.rdev, rdev(7, 200));
});

test('mknod over an existing name is EEXIST, naming the path', () => {
  const path = fresh('taken');
  writeFileSync(path, 'x');
  const err = systemError(() => mknod(path, S_IFIFO | 0o600));
  assert.is(err.code, 'EEXIST');
  assert.is(err.errno, -17);
  assert.is(err.syscall, 'mknod');
  assert.is(err.path, path);
  assert.is(err.message, `EEXIST: file already exists, mknod '${path}'`);
});

test('mknod takes a Buffer path that is not UTF-8', () => {
  const path = Buffer.concat([Buffer.from(fresh('raw-')), Buffer.from([0xff, 0x80])]);
  mknod(path, S_IFIFO | 0o600);
  assert.ok(lstatSync(path).isFIFO());
});

test('renameat2 without flags replaces, RENAME_NOREPLACE refuses with EEXIST', () => {
  const a = fresh('a'), b = fresh('b');
  writeFileSync(a, 'A');
  writeFileSync(b, 'B');
  const err = systemError(() => renameat2(a, b, RENAME_NOREPLACE));
  assert.is(err.code, 'EEXIST');
  assert.is(err.syscall, 'renameat2');
  assert.is(err.path, a);
  assert.is(err.dest, b);
  assert.is(err.message, `EEXIST: file already exists, renameat2 '${a}' -> '${b}'`);
  assert.is(readFileSync(a, 'utf8'), 'A');
  assert.is(readFileSync(b, 'utf8'), 'B');

  const c = fresh('c');
  renameat2(a, c, RENAME_NOREPLACE);
  assert.is(readFileSync(c, 'utf8'), 'A');
  renameat2(c, b);
  assert.is(readFileSync(b, 'utf8'), 'A');
  assert.is(systemError(() => lstatSync(c)).code, 'ENOENT');
});

test('renameat2 RENAME_EXCHANGE swaps two names atomically', () => {
  const a = fresh('a'), b = fresh('b');
  writeFileSync(a, 'first');
  writeFileSync(b, 'second');
  renameat2(a, b, RENAME_EXCHANGE);
  assert.is(readFileSync(a, 'utf8'), 'second');
  assert.is(readFileSync(b, 'utf8'), 'first');
  const missing = fresh('missing');
  assert.is(systemError(() => renameat2(a, missing, RENAME_EXCHANGE)).code, 'ENOENT');
  assert.is(systemError(() => renameat2(a, b, RENAME_EXCHANGE | RENAME_NOREPLACE)).code, 'EINVAL');
});

test('renameat2 RENAME_WHITEOUT leaves a char 0:0 whiteout where the source was', () => {
  const a = fresh('a'), b = fresh('b');
  writeFileSync(a, 'moved');
  renameat2(a, b, RENAME_WHITEOUT);
  assert.is(readFileSync(b, 'utf8'), 'moved');
  const st = lstatSync(a);
  assert.ok(st.isCharacterDevice());
  assert.is(st.rdev, 0);
});

test('syncfs flushes the filesystem of an open fd; a closed fd is EBADF', () => {
  const path = fresh('sync');
  writeFileSync(path, 'data');
  const fd = openSync(path, 'r');
  try {
    syncfs(fd);
  } finally {
    closeSync(fd);
  }
  // An fd number far above anything this process opens.
  const err = systemError(() => syncfs(1_000_000));
  assert.is(err.code, 'EBADF');
  assert.is(err.syscall, 'syncfs');
  assert.is(err.message, 'EBADF: bad file descriptor, syncfs');
});

test('bad arguments throw TypeError or RangeError, not a crash', () => {
  const bad = (v: unknown) => v as never;
  const thrown = (fn: () => unknown) => systemError(fn);
  assert.instance(thrown(() => mknod(bad(1), S_IFIFO)), TypeError);
  assert.instance(thrown(() => mknod(fresh('x'), bad('fifo'))), TypeError);
  assert.instance(thrown(() => mknod(fresh('x'), S_IFCHR, -1, 0)), RangeError);
  assert.instance(thrown(() => mknod(fresh('x'), S_IFCHR, 0, 2 ** 32)), RangeError);
  assert.instance(thrown(() => mknod(`${fresh('x')}\0`, S_IFIFO)), TypeError);
  assert.instance(thrown(() => renameat2(fresh('x'), bad(null))), TypeError);
  assert.instance(thrown(() => renameat2(fresh('x'), fresh('y'), bad('noreplace'))), TypeError);
  assert.instance(thrown(() => renameat2(fresh('x'), fresh('y'), NaN)), RangeError);
  assert.instance(thrown(() => syncfs(bad('3'))), TypeError);
  assert.instance(thrown(() => syncfs(-1)), RangeError);
  assert.instance(thrown(() => syncfs(bad(undefined))), TypeError);
});

test('lutimensNs sets mtime to the nanosecond on the link itself and leaves atime alone', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stratum-utimens-'));
  try {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    symlinkSync('f', join(dir, 'l'));
    const atimeBefore = lstatSync(file, { bigint: true }).atimeNs;
    lutimensNs(file, { sec: 1_600_000_000, nsec: 123_456_789 });
    lutimensNs(join(dir, 'l'), { sec: 5, nsec: 1 });
    assert.is(lstatSync(file, { bigint: true }).mtimeNs, 1_600_000_000_123_456_789n);
    assert.is(lstatSync(file, { bigint: true }).atimeNs, atimeBefore);
    assert.is(lstatSync(join(dir, 'l'), { bigint: true }).mtimeNs, 5_000_000_001n, 'the symlink, not its target');
    const err = systemError(() => lutimensNs(join(dir, 'missing'), { sec: 0, nsec: 0 }));
    assert.is(err.code, 'ENOENT');
    assert.is(err.syscall, 'utimensat');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
