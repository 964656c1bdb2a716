import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { importDirectory } from '../../src/store/commands/import.js';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { Store } from '../../src/store/store.js';
import { lsetxattr } from '../../src/native/xattr.js';
import { NOBODY, fuseUnavailable, runAs, tempDir, withMount } from './mounts.js';

// What applications rely on, through a HEAD mount and a read-only tag mount of one base.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`FUSE POSIX tests skipped: ${why}`);

let work: string;
let storeDir: string;

async function freshStore(): Promise<void> {
  work = tempDir('stratum-posix-');
  storeDir = join(work, 'store');
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'dir/sub'), { recursive: true });
  fs.writeFileSync(join(src, 'small'), 'small file\n');
  fs.writeFileSync(join(src, 'big'), Buffer.alloc(300_000, 7));
  fs.writeFileSync(join(src, 'dir/sub/f'), 'deep\n');
  fs.writeFileSync(join(src, 'private'), 'secret\n');
  fs.chmodSync(join(src, 'private'), 0o600);
  fs.linkSync(join(src, 'big'), join(src, 'dir/big-link'));
  lsetxattr(join(src, 'small'), 'user.k', Buffer.from('v'));
  const store = await Store.open(storeDir, { create: true });
  await importDirectory(store, src, { label: 'app', tag: 'v1' });
  await ensureUpper(store, (await store.heads.read('app'))!);
}

const code = (fn: () => unknown): string | undefined => {
  try { fn(); return undefined; } catch (err) { return (err as NodeJS.ErrnoException).code; }
};

test.before.each(async () => { if (!why) await freshStore(); });
test.after.each(() => { if (!why) fs.rmSync(work, { recursive: true, force: true }); });

mountTest('O_APPEND, O_TRUNC, O_EXCL and sparse writes behave as on a local filesystem', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    const f = join(mnt, 'small');
    const fd = fs.openSync(f, 'a');
    fs.writeSync(fd, 'one\n', 0);  // position ignored with O_APPEND
    fs.writeSync(fd, 'two\n');
    fs.closeSync(fd);
    assert.is(fs.readFileSync(f, 'utf8'), 'small file\none\ntwo\n');
    fs.writeFileSync(join(mnt, 'big'), 'short');  // O_TRUNC of a lower file
    assert.is(fs.readFileSync(join(mnt, 'big'), 'utf8'), 'short');
    assert.is(fs.statSync(join(mnt, 'dir/big-link')).size, 300_000, 'the other name of a lower hardlink keeps its data (copy-up breaks the link, as in the kernel)');
    assert.is(code(() => fs.openSync(join(mnt, 'small'), 'wx')), 'EEXIST');
    assert.is(code(() => fs.openSync(join(mnt, 'dir/sub/f'), 'wx')), 'EEXIST', 'O_EXCL on a lower-only file');
    const s = fs.openSync(join(mnt, 'sparse'), 'wx');
    fs.writeSync(s, Buffer.from('end'), 0, 3, 10 * 1024 * 1024);
    fs.closeSync(s);
    const st = fs.statSync(join(mnt, 'sparse'));
    assert.is(st.size, 10 * 1024 * 1024 + 3);
    assert.ok(st.blocks * 512 < 1024 * 1024, 'sparse file stays sparse');
    const b = Buffer.alloc(4);
    const r = fs.openSync(join(mnt, 'sparse'), 'r');
    fs.readSync(r, b, 0, 4, 5000);
    fs.closeSync(r);
    assert.equal([...b], [0, 0, 0, 0]);
  });
});

mountTest('rename over an existing file, and of a lower directory with open files under it', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    fs.writeFileSync(join(mnt, 'new'), 'replacement');
    fs.renameSync(join(mnt, 'new'), join(mnt, 'small'));
    assert.is(fs.readFileSync(join(mnt, 'small'), 'utf8'), 'replacement');
    assert.not.ok(fs.existsSync(join(mnt, 'new')));
    const rfd = fs.openSync(join(mnt, 'dir/sub/f'), 'r');
    const wfd = fs.openSync(join(mnt, 'dir/w'), 'w');
    fs.renameSync(join(mnt, 'dir'), join(mnt, 'moved'));
    fs.writeSync(wfd, 'written after the rename');
    fs.closeSync(wfd);
    const b = Buffer.alloc(5);
    fs.readSync(rfd, b, 0, 5, 0);
    fs.closeSync(rfd);
    assert.is(b.toString(), 'deep\n');
    assert.is(fs.readFileSync(join(mnt, 'moved/w'), 'utf8'), 'written after the rename');
    assert.is(fs.readFileSync(join(mnt, 'moved/sub/f'), 'utf8'), 'deep\n');
    assert.not.ok(fs.existsSync(join(mnt, 'dir')));
    // the upper records it the kernel's way: a redirect on the moved dir, a whiteout at the old name
    const upper = join(storeDir, 'refs/app/head');
    assert.ok(fs.lstatSync(join(upper, 'dir')).isCharacterDevice());
  });
});

mountTest('an unlinked open file stays readable and writable through its fd', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    const lower = fs.openSync(join(mnt, 'big'), 'r');
    fs.writeFileSync(join(mnt, 'tmp'), 'temporary');
    const upper = fs.openSync(join(mnt, 'tmp'), 'r+');
    fs.unlinkSync(join(mnt, 'big'));
    fs.unlinkSync(join(mnt, 'tmp'));
    assert.not.ok(fs.existsSync(join(mnt, 'big')));
    const b = Buffer.alloc(10);
    assert.is(fs.readSync(lower, b, 0, 10, 1000), 10);
    assert.equal([...b], Array(10).fill(7));
    fs.writeSync(upper, Buffer.from('T'), 0, 1, 0);
    assert.is(fs.readSync(upper, b, 0, 9, 0), 9);
    assert.is(b.subarray(0, 9).toString(), 'Temporary');
    assert.is(fs.fstatSync(upper).size, 9);
    fs.closeSync(lower);
    fs.closeSync(upper);
  });
});

mountTest('mmap reads lower files (python mmap)', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    const r = spawnSync('python3', ['-c', 'import mmap,sys\nf=open(sys.argv[1],"rb")\nm=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ)\nprint(len(m), m[299999], m[:11].decode() if m[0]!=7 else "")', join(mnt, 'big')], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stdout.trim(), '300000 7');
  });
});

mountTest('permissions are checked by the kernel (default_permissions): a non-root user gets EACCES where the mode says so', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    fs.mkdirSync(join(mnt, 'open'), { mode: 0o777 });
    fs.chmodSync(join(mnt, 'open'), 0o777);
    const out = runAs(NOBODY, `
      const r = {};
      const t = (k, f) => { try { f(); r[k] = 'ok'; } catch (e) { r[k] = e.code; } };
      t('readPrivate', () => fs.readFileSync(args.mnt + '/private'));
      t('readSmall', () => fs.readFileSync(args.mnt + '/small'));
      t('writeSmall', () => fs.writeFileSync(args.mnt + '/small', 'x'));
      t('createInRoot', () => fs.writeFileSync(args.mnt + '/mine', 'x'));
      t('createInOpen', () => fs.writeFileSync(args.mnt + '/open/mine', 'x'));
      t('owner', () => { r.uid = fs.statSync(args.mnt + '/open/mine').uid; });
      t('chmodOther', () => fs.chmodSync(args.mnt + '/small', 0o777));
      t('commitByUser', () => fs.writeFileSync(args.mnt + '/.stratum/commit', 'x'));
      return r;`, { mnt }) as Record<string, unknown>;
    assert.equal(out, { readPrivate: 'EACCES', readSmall: 'ok', writeSmall: 'EACCES', createInRoot: 'EACCES', createInOpen: 'ok', owner: 'ok', uid: 65534, chmodOther: 'EPERM', commitByUser: 'EACCES' });
  });
});

mountTest('a tag mount is read-only: every write answers EROFS', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', 'v1', mnt, () => {
    const f = join(mnt, 'small');
    assert.is(fs.readFileSync(f, 'utf8'), 'small file\n');
    const tries: Record<string, () => unknown> = {
      openWrite: () => fs.openSync(f, 'r+'),
      truncate: () => fs.truncateSync(f, 0),
      create: () => fs.writeFileSync(join(mnt, 'new'), 'x'),
      mkdir: () => fs.mkdirSync(join(mnt, 'd')),
      unlink: () => fs.unlinkSync(f),
      rmdir: () => fs.rmdirSync(join(mnt, 'dir/sub')),
      rename: () => fs.renameSync(f, join(mnt, 'x')),
      chmod: () => fs.chmodSync(f, 0o777),
      chown: () => fs.chownSync(f, 1, 1),
      utimes: () => fs.utimesSync(f, 1, 1),
      symlink: () => fs.symlinkSync('t', join(mnt, 'l')),
      link: () => fs.linkSync(f, join(mnt, 'l')),
      setxattr: () => lsetxattr(f, 'user.x', Buffer.from('1')),
      commit: () => fs.writeFileSync(join(mnt, '.stratum/commit'), 'v2'),
    };
    const got: Record<string, string | undefined> = {};
    for (const [k, fn] of Object.entries(tries)) got[k] = code(fn);
    assert.equal(got, Object.fromEntries(Object.keys(tries).map((k) => [k, 'EROFS'])));
    assert.match(fs.readFileSync(join(mnt, '.stratum/status'), 'utf8'), /mode fuse read-only/);
  });
});

mountTest('hardlinks show one inode and the right nlink; inode numbers stay stable', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    const a = fs.statSync(join(mnt, 'big')), b = fs.statSync(join(mnt, 'dir/big-link'));
    assert.is(a.ino, b.ino);
    assert.is(a.nlink, 2);
    const before = fs.statSync(join(mnt, 'dir/sub/f')).ino;
    fs.chmodSync(join(mnt, 'dir/sub/f'), 0o640);  // copy-up keeps the number
    spawnSync('sh', ['-c', 'echo 2 > /proc/sys/vm/drop_caches']);
    assert.is(fs.statSync(join(mnt, 'dir/sub/f')).ino, before);
    fs.writeFileSync(join(mnt, 'n1'), 'x');
    fs.linkSync(join(mnt, 'n1'), join(mnt, 'n2'));
    assert.is(fs.statSync(join(mnt, 'n1')).ino, fs.statSync(join(mnt, 'n2')).ino);
    assert.is(fs.statSync(join(mnt, 'n2')).nlink, 2);
  });
});

mountTest('times to the nanosecond, statfs of the store', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    const r = spawnSync('touch', ['-h', '-d', '@1000000000.123456789', join(mnt, 'dir/sub/f'), join(mnt, 'dir')]);
    assert.is(r.status, 0);
    assert.is(fs.statSync(join(mnt, 'dir/sub/f'), { bigint: true }).mtimeNs, 1000000000123456789n);
    assert.is(fs.statSync(join(mnt, 'dir'), { bigint: true }).mtimeNs, 1000000000123456789n);
    const a = fs.statfsSync(mnt), b = fs.statfsSync(storeDir);
    assert.is(a.bsize, b.bsize);
    assert.is(a.blocks, b.blocks);
  });
});

mountTest('/.stratum is virtual: not listed, not creatable, not removable, never in the upper', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    assert.not.ok(fs.readdirSync(mnt).includes('.stratum'));
    assert.equal(fs.readdirSync(join(mnt, '.stratum')).sort(), ['apply', 'commit', 'status']);
    assert.is(code(() => fs.mkdirSync(join(mnt, '.stratum'))), 'EEXIST');
    assert.is(code(() => fs.rmdirSync(join(mnt, '.stratum'))), 'EPERM');
    assert.is(code(() => fs.writeFileSync(join(mnt, '.stratum/other'), 'x')), 'EACCES');
    assert.is(code(() => fs.writeFileSync(join(mnt, '.stratum/status'), 'x')), 'EACCES');
    assert.match(fs.readFileSync(join(mnt, '.stratum/status'), 'utf8'), /^label app\nref HEAD\nbase [0-9a-f]{64}\n/);
    assert.not.ok(fs.existsSync(join(storeDir, 'refs/app/head/.stratum')));
    assert.is(spawnSync('mknod', [join(mnt, 'wh'), 'c', '0', '0']).status, 1, 'a whiteout cannot be made through the mount');
    assert.is(spawnSync('mknod', [join(mnt, 'null'), 'c', '1', '3']).status, 0);
    assert.is(fs.statSync(join(mnt, 'null')).rdev, fs.statSync('/dev/null').rdev);
  });
});

test.run();
