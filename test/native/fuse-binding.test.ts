// The FUSE binding, exercised through the passthrough example served from a child process.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CONTROL_NAME } from '../../examples/passthrough.js';
import { backing, FuseError, RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, UTIME_NOW, UTIME_OMIT } from '../../src/native/fuse.js';
import { fuseUnavailable, isMounted, NOBODY, runAs, within, withPassthrough } from './fuse-mount.js';

const E = osConstants.errno;
const B = (s: string) => Buffer.from(s);
const SEEK_DATA = 3, SEEK_HOLE = 4;

function errnoOf(fn: () => unknown): number | undefined {
  try { fn(); } catch (e) { return e instanceof FuseError ? e.errno : Math.abs((e as { errno: number }).errno); }
  return undefined;
}
function control(mnt: string): { inodes: number; jsRequests: number; cRequests: number; pending: number } {
  return JSON.parse(fs.readFileSync(join(mnt, CONTROL_NAME), 'utf8'));
}

const skip = fuseUnavailable();
if (skip) {
  console.log(`skipping FUSE binding tests: ${skip}`);
  test.skip('FUSE binding (unavailable)', () => {});
} else {
  test('utimens keeps nanoseconds, atime apart from mtime, UTIME_OMIT and UTIME_NOW', () => withPassthrough(({ mnt, back }) => {
    const f = join(mnt, 'f');
    fs.writeFileSync(f, 'x');
    backing.utimens(B(f), -1, { sec: 1_000_000_000, nsec: 123_456_789 }, { sec: 1_500_000_000, nsec: 987_654_321 });
    for (const p of [f, join(back, 'f')]) {
      const st = fs.statSync(p, { bigint: true });
      assert.is(st.atimeNs, 1_000_000_000_123_456_789n, `atime of ${p}`);
      assert.is(st.mtimeNs, 1_500_000_000_987_654_321n, `mtime of ${p}`);
    }
    backing.utimens(B(f), -1, { sec: 0, nsec: UTIME_OMIT }, { sec: 1_600_000_000, nsec: 1 });
    let st = fs.statSync(f, { bigint: true });
    assert.is(st.atimeNs, 1_000_000_000_123_456_789n, 'UTIME_OMIT leaves atime');
    assert.is(st.mtimeNs, 1_600_000_000_000_000_001n);
    const before = BigInt(Date.now() - 2000) * 1_000_000n;
    backing.utimens(B(f), -1, { sec: 0, nsec: UTIME_OMIT }, { sec: 0, nsec: UTIME_NOW });
    st = fs.statSync(f, { bigint: true });
    assert.is(st.atimeNs, 1_000_000_000_123_456_789n);
    assert.ok(st.mtimeNs > before, 'UTIME_NOW sets mtime to now');
  }));

  test('chown to other ids shows through the mount and on the backing file', () => withPassthrough(({ mnt, back }) => {
    fs.writeFileSync(join(mnt, 'f'), 'x');
    fs.chownSync(join(mnt, 'f'), 1234, 5678);
    for (const p of [join(mnt, 'f'), join(back, 'f')]) {
      const st = fs.statSync(p);
      assert.equal([st.uid, st.gid], [1234, 5678], p);
    }
    fs.symlinkSync('f', join(mnt, 'l'));
    fs.lchownSync(join(mnt, 'l'), 42, 43);
    assert.equal([fs.lstatSync(join(back, 'l')).uid, fs.statSync(join(back, 'f')).uid], [42, 1234], 'lchown does not follow');
  }));

  test('files an unprivileged caller creates belong to that caller; default_permissions applies', () =>
    withPassthrough(({ mnt, back }) => {
      fs.writeFileSync(join(mnt, 'secret'), 's', { mode: 0o600 });
      fs.writeFileSync(join(mnt, 'public'), 'p', { mode: 0o644 });
      const r = runAs(NOBODY, `
        const res = {};
        fs.writeFileSync(args.mnt + '/mine', 'm');
        fs.mkdirSync(args.mnt + '/mydir');
        fs.symlinkSync('mine', args.mnt + '/mylink');
        res.public = fs.readFileSync(args.mnt + '/public', 'utf8');
        try { fs.readFileSync(args.mnt + '/secret'); res.secret = 'read'; } catch (e) { res.secret = e.code; }
        try { fs.writeFileSync(args.mnt + '/public', 'x'); res.write = 'ok'; } catch (e) { res.write = e.code; }
        const st = fs.statSync(args.mnt + '/mine'); res.ids = [st.uid, st.gid];
        return res;`, { mnt }) as Record<string, unknown>;
      assert.equal(r, { public: 'p', secret: 'EACCES', write: 'EACCES', ids: [NOBODY.uid, NOBODY.gid] });
      for (const name of ['mine', 'mydir', 'mylink']) {
        const st = fs.lstatSync(join(back, name));
        assert.equal([st.uid, st.gid], [NOBODY.uid, NOBODY.gid], `backing ${name}`);
      }
    }, { args: ['-o', 'allow_other'], backMode: 0o777 }));

  test('names that are not UTF-8 round-trip byte for byte', () => withPassthrough(({ mnt, back }) => {
    const name = Buffer.from([0x61, 0xff, 0xfe, 0x80, 0x0a]);
    const other = Buffer.from([0xc3, 0x28, 0x01]);
    const at = (dir: string, n: Buffer) => Buffer.concat([B(dir + '/'), n]);
    fs.writeFileSync(at(mnt, name), 'bytes');
    assert.ok(fs.readdirSync(mnt, { encoding: 'buffer' }).some((n) => n.equals(name)), 'listed through the mount');
    assert.ok(fs.readdirSync(back, { encoding: 'buffer' }).some((n) => n.equals(name)), 'same bytes on the backing dir');
    fs.renameSync(at(mnt, name), at(mnt, other));
    assert.is(fs.readFileSync(at(back, other), 'utf8'), 'bytes');
    fs.mkdirSync(at(mnt, name));
    fs.writeFileSync(at(mnt, Buffer.concat([name, B('/'), other])), 'deep');
    assert.is(fs.readFileSync(Buffer.concat([at(back, name), B('/'), other]), 'utf8'), 'deep');
  }));

  test('rename NOREPLACE refuses an existing target, EXCHANGE swaps, renamed dirs keep their children', () =>
    withPassthrough(({ mnt, back }) => {
      const a = join(mnt, 'a'), b = join(mnt, 'b');
      fs.writeFileSync(a, 'A');
      fs.writeFileSync(b, 'B');
      assert.is(errnoOf(() => backing.rename(B(a), B(b), RENAME_NOREPLACE)), E.EEXIST);
      backing.rename(B(a), B(join(mnt, 'c')), RENAME_NOREPLACE);
      backing.rename(B(join(mnt, 'c')), B(b), RENAME_EXCHANGE);
      assert.equal([fs.readFileSync(join(mnt, 'c'), 'utf8'), fs.readFileSync(b, 'utf8')], ['B', 'A']);
      assert.equal([fs.readFileSync(join(back, 'c'), 'utf8'), fs.readFileSync(join(back, 'b'), 'utf8')], ['B', 'A']);
      fs.mkdirSync(join(mnt, 'd1/sub'), { recursive: true });
      fs.writeFileSync(join(mnt, 'd1/sub/f'), 'deep');
      fs.mkdirSync(join(mnt, 'd2'));
      backing.rename(B(join(mnt, 'd1')), B(join(mnt, 'd2')), RENAME_EXCHANGE);
      assert.is(fs.readFileSync(join(mnt, 'd2/sub/f'), 'utf8'), 'deep');
      fs.renameSync(join(mnt, 'd2'), join(mnt, 'd3'));
      fs.writeFileSync(join(mnt, 'd3/sub/g'), 'new');
      assert.is(fs.readFileSync(join(back, 'd3/sub/g'), 'utf8'), 'new', 'paths follow a renamed directory');
      assert.equal(fs.readdirSync(mnt).sort(), ['b', 'c', 'd1', 'd3']);
    }));

  test('mknod, RENAME_WHITEOUT, symlinks and statfs pass through', () => withPassthrough(({ mnt, back }) => {
    const S_IFCHR = 0o020000, S_IFIFO = 0o010000;
    backing.mknod(B(join(mnt, 'fifo')), S_IFIFO | 0o640, 0);
    backing.mknod(B(join(mnt, 'null')), S_IFCHR | 0o666, (1 << 8) | 3);  // makedev(1, 3)
    assert.ok(fs.statSync(join(back, 'fifo')).isFIFO());
    const nul = fs.statSync(join(mnt, 'null'));
    assert.ok(nul.isCharacterDevice());
    assert.is(nul.rdev, fs.statSync('/dev/null').rdev);
    fs.writeFileSync(join(mnt, 'a'), 'A');
    backing.rename(B(join(mnt, 'a')), B(join(mnt, 'b')), RENAME_WHITEOUT);
    const wh = fs.lstatSync(join(back, 'a'));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'a 0:0 whiteout is left at the old name');
    assert.is(fs.readFileSync(join(mnt, 'b'), 'utf8'), 'A');
    fs.symlinkSync(Buffer.from([0x2e, 0x2f, 0xff, 0x62]), join(mnt, 'link'));
    assert.ok(fs.readlinkSync(join(mnt, 'link'), { encoding: 'buffer' }).equals(Buffer.from([0x2e, 0x2f, 0xff, 0x62])));
    const sv = fs.statfsSync(mnt), sb = fs.statfsSync(back);
    assert.equal([sv.bsize, sv.blocks], [sb.bsize, sb.blocks]);
  }));

  test('an unlinked open file stays usable by its fd and leaves nothing in the backing dir', () =>
    withPassthrough(({ mnt, back }) => {
      const f = join(mnt, 'f');
      fs.writeFileSync(f, 'hello');
      const fd = fs.openSync(f, 'r+');
      try {
        fs.unlinkSync(f);
        assert.equal(fs.readdirSync(back), []);
        const buf = Buffer.alloc(5);
        fs.readSync(fd, buf, 0, 5, 0);
        assert.is(buf.toString(), 'hello');
        fs.writeSync(fd, ' world', 5);
        const st = fs.fstatSync(fd);
        assert.equal([st.size, st.nlink], [11, 0]);
      } finally { fs.closeSync(fd); }
      assert.equal(fs.readdirSync(back), [], 'no .fuse_hidden file');
      assert.equal(fs.readdirSync(mnt), []);
    }));

  test('hardlinks share st_ino and count links', () => withPassthrough(({ mnt, back }) => {
    fs.writeFileSync(join(mnt, 'a'), 'x');
    fs.mkdirSync(join(mnt, 'd'));
    fs.linkSync(join(mnt, 'a'), join(mnt, 'd/b'));
    const a = fs.statSync(join(mnt, 'a')), b = fs.statSync(join(mnt, 'd/b'));
    assert.is(a.ino, b.ino);
    assert.is(a.ino, fs.statSync(join(back, 'a')).ino, 'st_ino is the backing inode number');
    assert.equal([a.nlink, b.nlink], [2, 2]);
    fs.unlinkSync(join(mnt, 'a'));
    assert.is(fs.statSync(join(mnt, 'd/b')).nlink, 1);
    fs.writeFileSync(join(mnt, 'd/b'), 'still there');
    assert.is(fs.readFileSync(join(back, 'd/b'), 'utf8'), 'still there');
  }));

  test('O_APPEND, O_TRUNC and O_EXCL behave as on a local filesystem', () => withPassthrough(({ mnt }) => {
    const f = join(mnt, 'f');
    fs.writeFileSync(f, 'abc');
    const a1 = fs.openSync(f, 'a'), a2 = fs.openSync(f, 'a');
    fs.writeSync(a1, 'def');
    fs.writeSync(a2, 'ghi');
    fs.writeSync(a1, 'jkl', 0);  // the position is ignored with O_APPEND
    fs.closeSync(a1);
    fs.closeSync(a2);
    assert.is(fs.readFileSync(f, 'utf8'), 'abcdefghijkl');
    fs.closeSync(fs.openSync(f, 'w'));
    assert.is(fs.statSync(f).size, 0, 'O_TRUNC');
    assert.is(errnoOf(() => fs.openSync(f, 'wx')), E.EEXIST);
    const fd = fs.openSync(join(mnt, 'new'), 'wx', 0o640);
    fs.closeSync(fd);
    assert.is(fs.statSync(join(mnt, 'new')).mode & 0o777, 0o640);
  }));

  test('sparse files keep their holes; SEEK_DATA and SEEK_HOLE find them', () => withPassthrough(({ mnt, back }) => {
    const f = join(mnt, 'sparse');
    const fd = fs.openSync(f, 'w+');
    try {
      fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 0);
      fs.writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 1 << 20);
      fs.fsyncSync(fd);
      assert.is(backing.lseek(fd, 0, SEEK_HOLE), 4096);
      assert.is(backing.lseek(fd, 4096, SEEK_DATA), 1 << 20);
      assert.is(errnoOf(() => backing.lseek(fd, (1 << 20) + 4096, SEEK_DATA)), E.ENXIO);
      backing.fallocate(fd, 0, 2 << 20, 4096);
      assert.is(fs.statSync(join(back, 'sparse')).size, (2 << 20) + 4096, 'fallocate extended the backing file');
      backing.fallocate(fd, 3 /* PUNCH_HOLE | KEEP_SIZE */, 0, 4096);
      assert.is(backing.lseek(fd, 0, SEEK_DATA), 1 << 20, 'fallocate punched a hole');
      fs.ftruncateSync(fd, 8 << 20);
    } finally { fs.closeSync(fd); }
    const st = fs.statSync(join(back, 'sparse'));
    assert.is(st.size, 8 << 20);
    assert.ok(st.blocks * 512 < 1 << 20, `backing file stays sparse (${st.blocks} blocks)`);
    const mid = Buffer.alloc(16, 9);
    const rfd = fs.openSync(f, 'r');
    fs.readSync(rfd, mid, 0, 16, 2 << 20);
    fs.closeSync(rfd);
    assert.ok(mid.equals(Buffer.alloc(16)), 'holes read as zeros');
  }));

  test('copy_file_range between two backed handles is served in C', () => withPassthrough(({ mnt, back }) => {
    const data = Buffer.alloc(3 << 20);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    fs.writeFileSync(join(mnt, 'src'), data);
    fs.copyFileSync(join(mnt, 'src'), join(mnt, 'dst'));  // libuv uses copy_file_range
    assert.ok(fs.readFileSync(join(back, 'dst')).equals(data));
    assert.ok(fs.readFileSync(join(mnt, 'dst')).equals(data));
  }));

  test('xattrs carry binary values', () => withPassthrough(({ mnt, back }) => {
    const f = B(join(mnt, 'f'));
    fs.writeFileSync(f, 'x');
    const value = Buffer.from([0, 255, 1, 2, 0, 0x80]);
    backing.setxattr(f, B('user.bin'), value, 0);
    backing.setxattr(f, B('user.empty'), Buffer.alloc(0), 0);
    assert.ok(backing.getxattr(f, B('user.bin')).equals(value));
    assert.is(backing.getxattr(f, B('user.empty')).length, 0);
    assert.ok(backing.getxattr(B(join(back, 'f')), B('user.bin')).equals(value), 'stored on the backing file');
    const names = backing.listxattr(f).toString('latin1').split('\0').filter(Boolean).sort();
    assert.equal(names, ['user.bin', 'user.empty']);
    assert.is(errnoOf(() => backing.setxattr(f, B('user.bin'), value, 1 /* XATTR_CREATE */)), E.EEXIST);
    backing.removexattr(f, B('user.bin'));
    assert.is(errnoOf(() => backing.getxattr(f, B('user.bin'))), E.ENODATA);
  }));

  test('large directories list completely and forget returns every lookup', () => withPassthrough(({ mnt, back }) => {
    for (let i = 0; i < 3000; i++) fs.writeFileSync(join(back, `f${i}`), String(i));
    const names = fs.readdirSync(mnt);
    assert.is(names.length, 3000);
    for (let i = 0; i < 3000; i += 7) assert.is(fs.readFileSync(join(mnt, `f${i}`), 'utf8'), String(i));
    for (let i = 0; i < 3000; i++) fs.statSync(join(mnt, `f${i}`));
    assert.ok(control(mnt).inodes >= 3000, 'every name was looked up');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '2');  // the kernel forgets unused dentries and inodes
    const left = control(mnt).inodes;
    assert.ok(left < 10, `inodes left after the kernel forgot them: ${left}`);
  }, { args: ['--control'] }));

  test('the kernel caches until TS invalidates an inode or an entry; TS-served handles work', () =>
    withPassthrough(({ mnt, back }) => {
      fs.writeFileSync(join(back, 'f'), 'abc');
      assert.is(fs.statSync(join(mnt, 'f')).size, 3);
      fs.appendFileSync(join(back, 'f'), 'defg');  // behind the mount's back
      assert.is(fs.statSync(join(mnt, 'f')).size, 3, 'attributes cached');
      fs.writeFileSync(join(mnt, CONTROL_NAME), 'inval-inode f');
      assert.is(fs.statSync(join(mnt, 'f')).size, 7);
      assert.is(fs.readFileSync(join(mnt, 'f'), 'utf8'), 'abcdefg');
      fs.renameSync(join(back, 'f'), join(back, 'g'));
      assert.ok(fs.existsSync(join(mnt, 'f')), 'entry cached');
      fs.writeFileSync(join(mnt, CONTROL_NAME), 'inval-entry . f');
      assert.not.ok(fs.existsSync(join(mnt, 'f')));
      assert.is(fs.readFileSync(join(mnt, 'g'), 'utf8'), 'abcdefg');
      const c = control(mnt);
      assert.ok(c.jsRequests > 0 && c.cRequests > 0, JSON.stringify(c));
    }, { args: ['--control', '--timeout', '3600'] }));

  test('opens of known files are served in C without a JS round trip', () => withPassthrough(({ mnt }) => {
    for (let i = 0; i < 50; i++) fs.writeFileSync(join(mnt, `f${i}`), `content ${i}`);
    // after a write the kernel asks for fresh attributes once: a first round of reads does that
    for (let i = 0; i < 50; i++) fs.readFileSync(join(mnt, `f${i}`));
    const before = control(mnt);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 50; i++) assert.is(fs.readFileSync(join(mnt, `f${i}`), 'utf8'), `content ${i}`);
    }
    const after = control(mnt);
    // reading the control file itself costs a few JS requests (lookup, getattr, open, read, release)
    assert.ok(after.jsRequests - before.jsRequests < 15, `JS requests for 150 opens: ${after.jsRequests - before.jsRequests}`);
    assert.ok(after.cRequests - before.cRequests >= 300, `C requests: ${after.cRequests - before.cRequests}`);
    fs.renameSync(join(mnt, 'f1'), join(mnt, 'moved'));
    fs.writeFileSync(join(mnt, 'f1'), 'a new file with the old name');
    assert.is(fs.readFileSync(join(mnt, 'moved'), 'utf8'), 'content 1', 'a stale path is not opened for the old inode');
    assert.is(fs.readFileSync(join(mnt, 'f1'), 'utf8'), 'a new file with the old name');
    for (let i = 0; i < 50; i++) fs.rmSync(join(mnt, i === 1 ? 'moved' : `f${i}`));
    fs.rmSync(join(mnt, 'f1'));
    fs.writeFileSync('/proc/sys/vm/drop_caches', '2');  // forgets empty the C open table too
  }, { args: ['--control'] }));

  test('an external umount -l makes the server exit 0', () => withPassthrough(async ({ mnt, server }) => {
    fs.writeFileSync(join(mnt, 'f'), 'x');
    execFileSync('umount', ['-l', mnt]);
    assert.is(await within(server.exited, 10_000, 'server exit'), 0);
    assert.not.ok(isMounted(mnt));
  }));

  test('after kill -9 of the server, fusermount3 -uz recovers the mountpoint', () => withPassthrough(async ({ mnt, server }) => {
    fs.writeFileSync(join(mnt, 'f'), 'x');
    server.child.kill('SIGKILL');
    assert.is(await server.exited, 'SIGKILL');
    assert.is(errnoOf(() => fs.statSync(join(mnt, 'f'))), E.ENOTCONN);
    const r = spawnSync('fusermount3', ['-uz', mnt], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    assert.not.ok(isMounted(mnt));
    assert.equal(fs.readdirSync(mnt), []);
  }));

  test('an unprivileged server mounts through fusermount3 and serves its user', async () => {
    // fusermount3 opens /dev/fuse as the calling user: it must be 0666 (Debian's udev default).
    const devMode = fs.statSync('/dev/fuse').mode & 0o777;
    if ((devMode & 0o006) !== 0o006) {
      console.log(`note: /dev/fuse is ${devMode.toString(8)} here; 0666 (the distribution default) for this test`);
      fs.chmodSync('/dev/fuse', 0o666);
    }
    try {
      await withPassthrough(async ({ mnt, back, server }) => {
      const r = runAs(NOBODY, `
        fs.writeFileSync(args.mnt + '/f', 'hello');
        fs.mkdirSync(args.mnt + '/d');
        fs.renameSync(args.mnt + '/f', args.mnt + '/d/g');
        fs.utimesSync(args.mnt + '/d/g', 1000, 2000);
        const st = fs.statSync(args.mnt + '/d/g');
        return [fs.readFileSync(args.mnt + '/d/g', 'utf8'), st.uid, st.atimeMs, st.mtimeMs];`, { mnt });
      assert.equal(r, ['hello', NOBODY.uid, 1_000_000, 2_000_000]);
      assert.is(fs.statSync(join(back, 'd/g')).uid, NOBODY.uid);
      assert.is(await within(server.stop(), 10_000, 'server stop'), 0, server.output());
      assert.not.ok(isMounted(mnt));
      }, { asUser: NOBODY });
    } finally {
      fs.chmodSync('/dev/fuse', devMode);
    }
  });
}

test.run();
