import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { systemError } from '../helpers/assert.js';
import { spawn } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFREG,
  anyLength, anyLengthAsync, lutimensNs, mknod, openForWriting, removeAnyDepth, renameat2, syncfs,
} from '../../src/native/files.js';
import { lgetxattr, lsetxattr } from '../../src/native/xattr.js';
import { MNT_DETACH, mount, umount2 } from '../../src/native/mount.js';

const dir = mkdtempSync(join(tmpdir(), 'stratum-files-'));
test.after(() => removeAnyDepth(dir));  // rmSync fails on a tree deeper than PATH_MAX

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

// A child process that sets something up, prints "ready ..." and keeps it until its stdin closes.
interface Holder {
  ready: string;
  release(): Promise<void>;
}
function hold(command: string, args: string[]): Promise<Holder> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const release = async () => {
    child.stdin!.end();
    await exited;
  };
  return new Promise((resolve, reject) => {
    let out = '';
    child.on('error', reject);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').slice(0, -1).find((l) => l.startsWith('ready')); // whole lines only
      if (line !== undefined) resolve({ ready: line, release });
    });
    exited.then(() => reject(new Error(`${command} exited before it was ready: ${out}`)));
  });
}

const nodeWriter = (path: string) =>
  hold(process.execPath, ['-e', `
    const fd = require('node:fs').openSync(process.argv[1], 'r+');
    console.log('ready');
    process.stdin.resume();`, path]);

// mmap through ctypes: Python's own mmap module keeps a dup of the fd, which would hide what the
// test is about (a mapping with no fd left). Prints how many fds it still has on the file (0).
const pythonMapper = (path: string) =>
  hold('python3', ['-c', `
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDWR)
addr = libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
if addr is None or addr == ctypes.c_void_p(-1).value:
    sys.exit('mmap failed')
os.close(fd)
ctypes.memmove(addr, b'mapped', 6)
fds = [f for f in os.listdir('/proc/self/fd') if os.path.realpath('/proc/self/fd/' + f) == os.path.realpath(sys.argv[1])]
print('ready', len(fds), flush=True)
sys.stdin.read()`, path]);

function probe(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    return openForWriting(fd);
  } finally {
    closeSync(fd);
  }
}

test('openForWriting: false while nobody writes, true while another process holds the file open for writing', async () => {
  const path = fresh('probed');
  writeFileSync(path, 'data');
  assert.is(probe(path), false);
  const writer = await nodeWriter(path);
  try {
    assert.is(probe(path), true);
    assert.is(readFileSync(path, 'utf8'), 'data', 'the probe changes nothing');
  } finally {
    await writer.release();
  }
  assert.is(probe(path), false, 'false again once the writer has exited');
});

test('openForWriting: a shared writable mapping counts after its fd is closed', async () => {
  const path = fresh('mapped');
  writeFileSync(path, Buffer.alloc(4096));
  const mapper = await pythonMapper(path);
  try {
    assert.is(mapper.ready, 'ready 0', 'the child has no fd on the file, only the mapping');
    assert.is(probe(path), true);
  } finally {
    await mapper.release();
  }
  assert.is(readFileSync(path).subarray(0, 6).toString(), 'mapped');
  assert.is(probe(path), false);
});

test("openForWriting: the caller's own write fd counts; a writable fd to probe with is refused", () => {
  const path = fresh('own');
  writeFileSync(path, 'x');
  const writeFd = openSync(path, 'r+');
  try {
    assert.is(probe(path), true);
    const err = systemError(() => openForWriting(writeFd));
    assert.instance(err, TypeError);
    assert.is(err.code, 'ERR_INVALID_ARG_VALUE');
  } finally {
    closeSync(writeFd);
  }
  assert.is(probe(path), false);
});

test('openForWriting of a directory is EINVAL; a bad fd is EBADF', () => {
  const dirFd = openSync(dir, 'r');
  try {
    const err = systemError(() => openForWriting(dirFd));
    assert.is(err.code, 'EINVAL');
    assert.is(err.syscall, 'fcntl');
  } finally {
    closeSync(dirFd);
  }
  assert.is(systemError(() => openForWriting(1_000_000)).code, 'EBADF');
  assert.instance(systemError(() => openForWriting('3' as never)), TypeError);
});

test('openForWriting: a file written through an overlayfs mount is open for writing in the upper dir', () => {
  const base = fresh('overlay');
  const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((name) => join(base, name));
  for (const d of [lower, upper, work, merged]) mkdirSync(d, { recursive: true });
  writeFileSync(join(lower, 'file'), 'from lower');
  mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
  try {
    const fd = openSync(join(merged, 'file'), 'r+');
    try {
      writeSync(fd, 'through', 0);
      assert.is(probe(join(upper, 'file')), true, 'the copied-up file is held open for writing');
    } finally {
      closeSync(fd);
    }
    assert.is(probe(join(upper, 'file')), false);
    assert.is(readFileSync(join(upper, 'file'), 'utf8'), 'throughwer');
  } finally {
    umount2(merged, MNT_DETACH);
  }
});

test('anyLength: calls on paths longer than PATH_MAX work, keep their errnos, and removeAnyDepth removes the tree', async () => {
  const root = fresh('deep');
  mkdirSync(root);
  let path = Buffer.from(root);
  for (let i = 0; path.length < 9000; i++) {
    path = Buffer.concat([path, Buffer.from(`/${String(i).padStart(3, '0')}${'d'.repeat(200)}`)]);
    const p = path;
    anyLength(p, (x) => mkdirSync(x));
  }
  assert.ok(path.length > 9000);
  assert.is(systemError(() => lstatSync(path)).code, 'ENAMETOOLONG', 'node:fs alone cannot');
  const file = Buffer.concat([path, Buffer.from('/file')]);
  anyLength(file, (x) => writeFileSync(x, 'deep\n'));
  assert.is(anyLength(file, (x) => readFileSync(x, 'utf8')), 'deep\n');
  anyLength(file, (x) => lsetxattr(x, 'user.k', Buffer.from('v')));
  assert.is(Buffer.from(anyLength(file, (x) => lgetxattr(x, 'user.k'))).toString(), 'v');
  const other = Buffer.concat([Buffer.from(root), Buffer.from('/000' + 'd'.repeat(200) + '/moved')]);
  anyLength(file, (from) => anyLength(other, (to) => renameat2(from, to)));
  assert.is(readFileSync(other, 'utf8'), 'deep\n');
  assert.is(await anyLengthAsync(other, (x) => Promise.resolve(x.equals(other))), true, 'short paths are passed unchanged');
  const tooLongName = Buffer.concat([path, Buffer.from(`/${'n'.repeat(256)}`)]);
  assert.is(systemError(() => anyLength(tooLongName, (x) => writeFileSync(x, ''))).code, 'ENAMETOOLONG', 'the filesystem\'s NAME_MAX');
  assert.is(systemError(() => anyLength(Buffer.concat([path, Buffer.from('/missing/x')]), (x) => lstatSync(x))).code, 'ENOENT');
  await removeAnyDepth(root);
  assert.is(systemError(() => lstatSync(root)).code, 'ENOENT');
});

test.run();
