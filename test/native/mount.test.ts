import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { systemError } from '../helpers/assert.js';
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AT_FDCWD, AT_RECURSIVE, MNT_DETACH, MOUNT_ATTR_RDONLY, MOVE_MOUNT_BENEATH, MOVE_MOUNT_F_EMPTY_PATH,
  MOVE_MOUNT_T_EMPTY_PATH, MS_BIND, MS_MOVE, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SHARED, OPEN_TREE_CLONE,
  fsconfigCreate, fsconfigFlag, fsconfigString, fsmount, fsopen, moveMount, mount, openTree, umount2,
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
const OVERLAYFS_MAGIC = 0x794c7630;
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

// ---- the new mount API ----

/** Detaches everything stacked on target (a MOVE_MOUNT_BENEATH test leaves two there). */
function unmountAll(target: string): void {
  for (let i = 0; i < 8 && isMountPoint(target); i++) unmountQuietly(target);
}

function closeAll(fds: number[]): void {
  for (const fd of fds) if (fd >= 0) closeSync(fd);
}

/** An overlay over a shared lower dir with its own upper, whose file 'who' says which it is. */
function newOverlay(name: string, lower: string, attrs = 0): { upper: string; fd: number } {
  const upper = freshDir(`${name}-upper`), work = freshDir(`${name}-work`);
  writeFileSync(join(upper, 'who'), name);
  const fsfd = fsopen('overlay');
  try {
    fsconfigString(fsfd, 'lowerdir', lower);
    fsconfigString(fsfd, 'upperdir', upper);
    fsconfigString(fsfd, 'workdir', work);
    fsconfigCreate(fsfd);
    return { upper, fd: fsmount(fsfd, attrs) };
  } finally {
    closeSync(fsfd);
  }
}

const who = (path: string) => readFileSync(join(path, 'who'), 'utf8');

function lowerDir(): string {
  const lower = freshDir('lower');
  writeFileSync(join(lower, 'base'), 'from lower');
  mkdirSync(join(lower, 'sub'));
  return lower;
}

test('fsopen, fsconfig, fsmount and moveMount attach an overlay that reads and writes', () => {
  const lower = lowerDir(), target = freshDir('new-api');
  const { upper, fd } = newOverlay('A', lower);
  let mountFd = fd;
  try {
    assert.not.ok(isMountPoint(target), 'fsmount alone attaches nothing');
    moveMount(fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    assert.ok(isMountPoint(target));
    assert.is(statfsSync(target).type, OVERLAYFS_MAGIC);
    assert.is(readFileSync(join(target, 'base'), 'utf8'), 'from lower');
    writeFileSync(join(target, 'written'), 'through the overlay');
    assert.is(readFileSync(join(upper, 'written'), 'utf8'), 'through the overlay');
    assert.is(systemError(() => umount2(target)).code, 'EBUSY', 'the fsmount fd keeps the mount busy');
    closeSync(fd);
    mountFd = -1;
    umount2(target);
    assert.not.ok(isMountPoint(target));
  } finally {
    closeAll([mountFd]);
    unmountAll(target);
  }
});

test('fsconfigFlag ro makes a read-only superblock; MOUNT_ATTR_RDONLY a read-only mount of a writable one', () => {
  const roTmpfs = freshDir('ro-sb'), roMount = freshDir('ro-mount');
  const fsfd = fsopen('tmpfs');
  let tmpfsFd = -1, overlay = { upper: '', fd: -1 };
  try {
    fsconfigString(fsfd, 'size', '64k');
    fsconfigFlag(fsfd, 'ro');
    fsconfigCreate(fsfd);
    tmpfsFd = fsmount(fsfd);
    moveMount(tmpfsFd, '', AT_FDCWD, roTmpfs, MOVE_MOUNT_F_EMPTY_PATH);
    assert.is(systemError(() => writeFileSync(join(roTmpfs, 'new'), 'x')).code, 'EROFS');

    overlay = newOverlay('A', lowerDir(), MOUNT_ATTR_RDONLY);
    moveMount(overlay.fd, '', AT_FDCWD, roMount, MOVE_MOUNT_F_EMPTY_PATH);
    assert.is(who(roMount), 'A');
    assert.is(systemError(() => writeFileSync(join(roMount, 'new'), 'x')).code, 'EROFS');
  } finally {
    closeAll([fsfd, tmpfsFd, overlay.fd]);
    unmountAll(roTmpfs);
    unmountAll(roMount);
  }
});

// The parent of the mount point as the kernel sees it: the tests' private tmpfs as is, or a shared
// tmpfs inside it (what systemd makes of /) with a bind of it as a peer.
const parents: [string, () => { parent: string; peer: string | null }][] = [
  ['private', () => ({ parent: freshDir('private-parent'), peer: null })],
  ['shared, with a peer', () => {
    const parent = freshDir('shared-parent'), peer = freshDir('peer');
    mount('tmpfs', parent, 'tmpfs', 0, 'size=256k');
    mount(null, parent, null, MS_SHARED);
    mount(parent, peer, null, MS_BIND);
    return { parent, peer };
  }],
];

for (const [kind, makeParent] of parents) {
  test(`MOVE_MOUNT_BENEATH under a ${kind} parent: the path shows A until A is detached, then B`, () => {
    const lower = lowerDir();
    const { parent, peer } = makeParent();
    const target = join(parent, 'mnt');
    mkdirSync(target);
    const a = newOverlay('A', lower), b = newOverlay('B', lower);
    try {
      moveMount(a.fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
      moveMount(b.fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH);
      assert.is(who(target), 'A', 'the top mount still answers');
      writeFileSync(join(target, 'late'), 'x');
      assert.ok(existsSync(join(a.upper, 'late')));
      umount2(target, MNT_DETACH);
      assert.is(who(target), 'B');
      assert.ok(isMountPoint(target), 'B stays mounted');
      writeFileSync(join(target, 'after'), 'y');
      assert.ok(existsSync(join(b.upper, 'after')));
      if (peer) assert.is(who(join(peer, 'mnt')), 'B', 'the peer follows both steps');
    } finally {
      closeAll([a.fd, b.fd]);
      unmountAll(target);
      if (peer) unmountAll(peer);
      unmountAll(parent);
    }
  });
}

test('MOVE_MOUNT_BENEATH onto a directory that is not a mount point is EINVAL', () => {
  const target = freshDir('not-mounted');
  const { fd } = newOverlay('A', lowerDir());
  try {
    const err = systemError(() => moveMount(fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH));
    assert.is(err.code, 'EINVAL');
    assert.is(err.syscall, 'move_mount');
    assert.is(err.path, '');
    assert.is(err.dest, target);
    assert.not.ok(isMountPoint(target));
  } finally {
    closeSync(fd);
    unmountAll(target);
  }
});

test('an O_PATH fd from openTree pins a place: MOVE_MOUNT_T_EMPTY_PATH attaches there', () => {
  const lower = lowerDir(), target = freshDir('pinned');
  const a = newOverlay('A', lower), b = newOverlay('B', lower);
  let place = -1;
  try {
    moveMount(a.fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    place = openTree(AT_FDCWD, target);
    moveMount(b.fd, '', place, '', MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH | MOVE_MOUNT_BENEATH);
    assert.is(who(target), 'A');
    umount2(target, MNT_DETACH);
    assert.is(who(target), 'B');
  } finally {
    closeAll([a.fd, b.fd, place]);
    unmountAll(target);
  }
});

test('a mount on a subdir of A moves into B, mounted beneath A, through an fd on the dir in B', () => {
  const lower = lowerDir(), target = freshDir('carry');
  const a = newOverlay('A', lower), b = newOverlay('B', lower);
  let subInB = -1;
  try {
    moveMount(a.fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    mount('tmpfs', join(target, 'sub'), 'tmpfs', 0, 'size=64k');
    writeFileSync(join(target, 'sub', 'scratch'), 'kept');
    moveMount(b.fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH);
    subInB = openTree(b.fd, 'sub');
    moveMount(AT_FDCWD, join(target, 'sub'), subInB, '', MOVE_MOUNT_T_EMPTY_PATH);
    assert.not.ok(existsSync(join(target, 'sub', 'scratch')), 'gone from A');
    umount2(target, MNT_DETACH);
    assert.is(who(target), 'B');
    assert.is(readFileSync(join(target, 'sub', 'scratch'), 'utf8'), 'kept', 'and there in B');
  } finally {
    closeAll([a.fd, b.fd, subInB]);
    unmountAll(join(target, 'sub'));
    unmountAll(target);
  }
});

test('openTree OPEN_TREE_CLONE copies a mount (AT_RECURSIVE: with its submounts) to attach elsewhere', () => {
  const lower = lowerDir(), source = freshDir('cloned'), copy = freshDir('copy'), deep = freshDir('deep-copy');
  const { fd } = newOverlay('A', lower);
  let clone = -1, deepClone = -1;
  try {
    moveMount(fd, '', AT_FDCWD, source, MOVE_MOUNT_F_EMPTY_PATH);
    mount('tmpfs', join(source, 'sub'), 'tmpfs', 0, 'size=64k');
    writeFileSync(join(source, 'sub', 'scratch'), 'on tmpfs');
    clone = openTree(AT_FDCWD, source, OPEN_TREE_CLONE);
    deepClone = openTree(AT_FDCWD, source, OPEN_TREE_CLONE | AT_RECURSIVE);
    moveMount(clone, '', AT_FDCWD, copy, MOVE_MOUNT_F_EMPTY_PATH);
    moveMount(deepClone, '', AT_FDCWD, deep, MOVE_MOUNT_F_EMPTY_PATH);
    assert.is(who(copy), 'A');
    assert.is(readFileSync(join(copy, 'base'), 'utf8'), 'from lower');
    assert.not.ok(existsSync(join(copy, 'sub', 'scratch')), 'a plain clone leaves submounts behind');
    assert.is(readFileSync(join(deep, 'sub', 'scratch'), 'utf8'), 'on tmpfs');
    writeFileSync(join(copy, 'via-copy'), 'same filesystem');
    assert.is(readFileSync(join(source, 'via-copy'), 'utf8'), 'same filesystem');
  } finally {
    closeAll([fd, clone, deepClone]);
    for (const mnt of [deep, copy, source]) unmountAll(mnt);
  }
});

test("fsconfig failures carry the kernel's message from the fs context", () => {
  const fsfd = fsopen('overlay');
  try {
    const unknown = systemError(() => fsconfigString(fsfd, 'no-such-option', 'x'));
    assert.is(unknown.code, 'EINVAL');
    assert.is(unknown.syscall, 'fsconfig');
    assert.is(unknown.message, "EINVAL: invalid argument, fsconfig 'no-such-option' (overlay: Unknown parameter 'no-such-option')");
    const badValue = systemError(() => fsconfigString(fsfd, 'redirect_dir', 'sideways'));
    assert.is(badValue.message, "EINVAL: invalid argument, fsconfig 'redirect_dir' (overlay: Bad value for 'redirect_dir')");
    // overlayfs (6.18) sends path lookup failures to the kernel log (dmesg), not the fs context: the
    // errno is all the caller gets
    const missing = systemError(() => fsconfigString(fsfd, 'lowerdir', '/nonexistent'));
    assert.is(missing.code, 'ENOENT');
    assert.match(missing.message, /^ENOENT: no such file or directory, fsconfig 'lowerdir'/);
    const create = systemError(() => fsconfigCreate(fsfd));
    assert.is(create.code, 'EINVAL');
    assert.match(create.message, /^EINVAL: invalid argument, fsconfig create/);
  } finally {
    closeSync(fsfd);
  }
});

test('fsopen of an unknown filesystem is ENODEV', () => {
  const err = systemError(() => fsopen('stratum-no-such-fs'));
  assert.is(err.code, 'ENODEV');
  assert.is(err.syscall, 'fsopen');
  assert.is(err.message, "ENODEV: no such device, fsopen 'stratum-no-such-fs'");
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
  assert.instance(systemError(() => fsopen(bad(null))), TypeError);
  assert.instance(systemError(() => fsconfigString(bad('3'), 'lowerdir', target)), TypeError);
  assert.instance(systemError(() => fsconfigString(3, 'lowerdir', bad(undefined))), TypeError);
  assert.instance(systemError(() => fsmount(-1)), RangeError);
  assert.instance(systemError(() => moveMount(-5, '', AT_FDCWD, target)), RangeError);
  assert.instance(systemError(() => moveMount(AT_FDCWD, bad(null), AT_FDCWD, target)), TypeError);
  assert.instance(systemError(() => openTree(AT_FDCWD, `${target}\0`)), TypeError);
  assert.not.ok(isMountPoint(target));
});

test.run();
