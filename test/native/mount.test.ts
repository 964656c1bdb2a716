import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { systemError } from '../helpers/assert.js';
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  MNT_DETACH, MS_BIND, MS_MOVE, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, mount, umount2,
} from '../../src/native/mount.js';

// Every test works under its own private tmpfs, so nothing propagates to other mount namespaces
// and MS_MOVE is allowed (the kernel refuses to move a mount whose parent is shared).
const dir = mkdtempSync(join(tmpdir(), 'stratum-mount-'));
chmodSync(dir, 0o755);
mount('tmpfs', dir, 'tmpfs', 0, 'size=1m,mode=0755');
mount(null, dir, null, MS_PRIVATE | MS_REC);
test.after(() => {
  umount2(dir, MNT_DETACH);
  rmSync(dir, { recursive: true, force: true });
});

const TMPFS_MAGIC = 0x01021994;
let serial = 0;
function freshDir(label: string): string {
  const path = join(dir, `${label}${serial++}`);
  mkdirSync(path);
  return path;
}

function mountPoints(): string[] {
  // Field 5 of each line is the mount point (octal escapes for spaces; our paths have none).
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((line) => line.split(' ')[4]!);
}
const isMountPoint = (path: string) => mountPoints().includes(path);

function unmountQuietly(target: string): void {
  try {
    umount2(target, MNT_DETACH);
  } catch {
    // already gone: the test unmounted it itself
  }
}

test('a tmpfs mounts with its options and umount2 takes it away', () => {
  const target = freshDir('tmpfs');
  writeFileSync(join(target, 'underneath'), '');
  mount('tmpfs', target, 'tmpfs', 0, 'size=64k,mode=0700');
  try {
    assert.ok(isMountPoint(target));
    assert.is(statfsSync(target).type, TMPFS_MAGIC);
    assert.is(statfsSync(target).blocks * statfsSync(target).bsize, 64 * 1024);
    assert.not.ok(existsSync(join(target, 'underneath')), 'the mount hides what was below');
    writeFileSync(join(target, 'on-tmpfs'), 'x');
    umount2(target);
    assert.not.ok(isMountPoint(target));
    assert.ok(existsSync(join(target, 'underneath')));
    assert.not.ok(existsSync(join(target, 'on-tmpfs')));
  } finally {
    unmountQuietly(target);
  }
});

test('MS_BIND, then MS_REMOUNT | MS_BIND | MS_RDONLY makes a read-only view', () => {
  const source = freshDir('src');
  const target = freshDir('view');
  writeFileSync(join(source, 'file'), 'shared');
  mount(source, target, null, MS_BIND);
  try {
    assert.is(readFileSync(join(target, 'file'), 'utf8'), 'shared');
    mount(null, target, null, MS_REMOUNT | MS_BIND | MS_RDONLY);
    assert.is(systemError(() => writeFileSync(join(target, 'new'), 'x')).code, 'EROFS');
    writeFileSync(join(source, 'new'), 'still writable here');
  } finally {
    unmountQuietly(target);
  }
});

test('umount2 of a busy mount is EBUSY; MNT_DETACH detaches it anyway', () => {
  const target = freshDir('busy');
  mount('tmpfs', target, 'tmpfs', 0, 'size=64k');
  let fd = -1;
  try {
    writeFileSync(join(target, 'open'), 'kept open');
    fd = openSync(join(target, 'open'), 'r');
    const err = systemError(() => umount2(target));
    assert.is(err.code, 'EBUSY');
    assert.is(err.syscall, 'umount2');
    assert.is(err.path, target);
    assert.is(err.message, `EBUSY: resource busy or locked, umount2 '${target}'`);
    assert.ok(isMountPoint(target));
    umount2(target, MNT_DETACH);
    assert.not.ok(isMountPoint(target), 'gone from the tree');
    const buf = Buffer.alloc(9);
    assert.is(readSync(fd, buf, 0, 9, 0), 9);
    assert.is(buf.toString(), 'kept open', 'but the open file still works');
  } finally {
    if (fd >= 0) closeSync(fd);
    unmountQuietly(target);
  }
});

test('MS_MOVE moves a mounted filesystem from one directory to another', () => {
  const from = freshDir('from');
  const to = freshDir('to');
  mount('tmpfs', from, 'tmpfs', 0, 'size=64k');
  try {
    writeFileSync(join(from, 'marker'), 'moved with it');
    mount(from, to, null, MS_MOVE);
    assert.not.ok(isMountPoint(from));
    assert.ok(isMountPoint(to));
    assert.is(readFileSync(join(to, 'marker'), 'utf8'), 'moved with it');
    assert.not.ok(existsSync(join(from, 'marker')));
  } finally {
    unmountQuietly(to);
    unmountQuietly(from);
  }
});

test('an unknown filesystem type is ENODEV, naming the target', () => {
  const target = freshDir('nodev');
  const err = systemError(() => mount('none', target, 'stratum-no-such-fs', 0, null));
  assert.is(err.code, 'ENODEV');
  assert.is(err.errno, -19);
  assert.is(err.syscall, 'mount');
  assert.is(err.path, target);
  assert.is(err.message, `ENODEV: no such device, mount '${target}'`);
  assert.not.ok(isMountPoint(target));
});

test('umount2 of a directory that is not a mount point is EINVAL', () => {
  const target = freshDir('plain');
  assert.is(systemError(() => umount2(target)).code, 'EINVAL');
  assert.is(systemError(() => umount2(join(target, 'missing'))).code, 'ENOENT');
});

test('without CAP_SYS_ADMIN mount and umount2 are EPERM', () => {
  const target = freshDir('eperm');
  const mountModule = new URL('../../src/native/mount.js', import.meta.url).href;
  const script = `
    import { mount, umount2 } from ${JSON.stringify(mountModule)};
    const codes = [];
    try { mount('tmpfs', ${JSON.stringify(target)}, 'tmpfs', 0, null); codes.push('mounted'); } catch (e) { codes.push(e.code); }
    try { umount2(${JSON.stringify(dir)}); codes.push('unmounted'); } catch (e) { codes.push(e.code); }
    console.log(codes.join(' '));
  `;
  const run = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
  try {
    assert.is(run.status, 0, run.stderr);
    assert.is(run.stdout.trim(), 'EPERM EPERM');
  } finally {
    unmountQuietly(target);
  }
});

test('bad arguments throw TypeError or RangeError, not a crash', () => {
  const bad = (v: unknown) => v as never;
  const target = freshDir('args');
  assert.instance(systemError(() => mount('tmpfs', bad(null), 'tmpfs')), TypeError);
  assert.instance(systemError(() => mount(bad(5), target, 'tmpfs')), TypeError);
  assert.instance(systemError(() => mount('tmpfs', target, bad({ type: 'tmpfs' }))), TypeError);
  assert.instance(systemError(() => mount('tmpfs', target, 'tmpfs', bad('ro'))), TypeError);
  assert.instance(systemError(() => mount('tmpfs', target, 'tmpfs', 2 ** 40)), RangeError);
  assert.instance(systemError(() => mount('tmpfs', target, 'tmpfs', 0, bad(7))), TypeError);
  assert.instance(systemError(() => mount('tmpfs', `${target}\0`, 'tmpfs')), TypeError);
  assert.instance(systemError(() => umount2(bad(undefined))), TypeError);
  assert.instance(systemError(() => umount2(target, bad(true))), TypeError);
  assert.not.ok(isMountPoint(target));
});

test.run();
