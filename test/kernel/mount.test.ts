import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { importDirectory } from '../../src/store/commands/import.js';
import { MountState } from '../../src/store/mount-state.js';
import { Store } from '../../src/store/store.js';
import { lutimensNs } from '../../src/native/files.js';
import { MNT_DETACH, umount2 } from '../../src/native/mount.js';
import { lsetxattr } from '../../src/native/xattr.js';
import { kernelMountedAt } from '../../src/store/mount-state.js';
import { S, alive, cleanupKernel, kernelView, ok, waitFor, withKernel } from './mounts.js';
import { diffViews } from '../store/image/view.js';
import { commitView, dirView, kernelUnsupported } from '../store/head/kernel.js';
import { fuseUnavailable, tempDir, withMount } from '../fuse/mounts.js';

// `stratum mount --mode kernel` (src/kernel/): a HEAD mounted by the kernel shows the same tree as
// FUSE shows, writes made through either are seen by the other and by a commit, a tag is
// read-only, unmount copes with open files, an external umount and a killed server. Mounts go
// through the CLI as a user would. Live commit and apply: live.test.ts; without privileges:
// fallback.test.ts.
const why = kernelUnsupported ?? fuseUnavailable();
const kernelTest = why === undefined ? test : test.skip;
if (why) console.log(`kernel mode tests skipped: ${why}`);

async function makeStore(work: string): Promise<{ storeDir: string; store: Store }> {
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'd/sub'), { recursive: true });
  fs.mkdirSync(join(src, 'empty'));
  fs.mkdirSync(join(src, 'gone/deeper'), { recursive: true });
  fs.writeFileSync(join(src, 'gone/deeper/x'), 'x');
  fs.writeFileSync(join(src, 'big'), Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 13) & 0xff)));
  fs.writeFileSync(join(src, 'small'), 'small file\n');
  fs.writeFileSync(join(src, 'd/sub/f'), Buffer.alloc(20_000, 7));
  fs.writeFileSync(join(src, 'd/owned'), 'owned');
  fs.chownSync(join(src, 'd/owned'), 1234, 5678);
  fs.chmodSync(join(src, 'd/owned'), 0o4750);
  fs.writeFileSync(join(src, 'd/x'), 'xattrs');
  lsetxattr(join(src, 'd/x'), 'user.k', Buffer.from('v'));
  lsetxattr(join(src, 'd/x'), 'trusted.t', Buffer.from('tv'));
  fs.symlinkSync('d/sub/f', join(src, 'link'));
  fs.linkSync(join(src, 'small'), join(src, 'd/hard'));
  spawnSync('mkfifo', [join(src, 'd/fifo')]);
  lutimensNs(join(src, 'd/sub/f'), { sec: 1_700_000_000, nsec: 123_456_789 });
  lutimensNs(join(src, 'd'), { sec: 1_700_000_001, nsec: 999_999_999 });
  const storeDir = join(work, 'store');
  const store = await Store.open(storeDir, { create: true });
  await importDirectory(store, src, { label: 'app' });
  return { storeDir, store };
}

/** A mix of writes: new, changed, chmod/chown/xattr (copy-up), delete, rename, mkdir, symlink, ns mtime. */
function writeSome(root: string, tag: string): void {
  fs.writeFileSync(join(root, `new-${tag}`), `new through ${tag}\n`);
  const fd = fs.openSync(join(root, 'big'), 'r+');
  fs.writeSync(fd, Buffer.from(tag), 0, tag.length, 1000);
  fs.closeSync(fd);
  fs.chmodSync(join(root, 'd/owned'), tag === 'kernel' ? 0o600 : 0o2640);
  if (fs.existsSync(join(root, 'd/sub/f'))) fs.chmodSync(join(root, 'd/sub/f'), 0o640);
  fs.chownSync(join(root, 'small'), 42, 43);
  lsetxattr(join(root, 'd/x'), 'user.by', Buffer.from(tag));
  fs.rmSync(join(root, 'gone'), { recursive: true, force: true });
  if (fs.existsSync(join(root, 'd/sub'))) fs.renameSync(join(root, 'd/sub'), join(root, `moved-${tag}`));
  fs.mkdirSync(join(root, `dir-${tag}/inner`), { recursive: true });
  fs.symlinkSync(`new-${tag}`, join(root, `dir-${tag}/to-new`));
  lutimensNs(join(root, `new-${tag}`), { sec: 1_650_000_000, nsec: 1 });
}

function same(a: ReturnType<typeof dirView>, b: ReturnType<typeof dirView>, what: string): void {
  const problems = diffViews(a, b, 8);
  assert.equal(problems, [], `${what}:\n${problems.join('\n')}`);
}

kernelTest('a kernel-mounted HEAD shows what FUSE shows; kernel writes reach FUSE and a commit; FUSE writes reach the kernel', async () => {
  const work = tempDir('stratum-kmode-');
  const kmnt = join(work, 'kmnt');
  const fmnt = join(work, 'fmnt');
  try {
    const { storeDir, store } = await makeStore(work);

    // the same HEAD, both ways
    const k0 = await withKernel(storeDir, 'app', kmnt, () => kernelView(kmnt));
    const f0 = await withMount(storeDir, 'app', undefined, fmnt, () => dirView(fmnt));
    same(k0, f0, 'fresh HEAD: kernel vs FUSE');
    assert.ok(k0.get('/d/owned')?.uid === 1234 && k0.get('/d/owned')?.mode === '104750', 'owner and mode through the kernel');

    // writes in kernel mode; status shows the mode; one writable HEAD per label
    const k1 = await withKernel(storeDir, 'app', kmnt, () => {
      writeSome(kmnt, 'kernel');
      const st = ok(S(storeDir, 'status', 'app'), 'status');
      assert.match(st, new RegExp(`mounted at ${kmnt} by pid \\d+ \\(kernel\\)`));
      const again = S(storeDir, 'mount', 'app', join(work, 'second'), '--mode', 'kernel');
      assert.is(again.status, 1, 'one writable HEAD per label');
      assert.match(again.stderr, 'already mounted');
      return kernelView(kmnt);
    });
    assert.is((await new MountState().list()).length, 0, 'unmount removed the entry');
    assert.ok(k1.has('/new-kernel') && !k1.has('/gone') && k1.has('/moved-kernel/f'));
    const f1 = await withMount(storeDir, 'app', undefined, fmnt, () => dirView(fmnt));
    same(k1, f1, 'after kernel writes: kernel vs FUSE');
    const id = ok(S(storeDir, 'commit', 'app:k1'), 'commit').split('\t').pop()!;
    const tagId = (await store.tags.resolve('app', 'k1')).id;
    assert.ok(tagId.startsWith(id), `${tagId} vs ${id}`);
    same(k1, commitView(store, tagId), 'after kernel writes: kernel vs commit');

    // the other way round: FUSE writes, the kernel shows them
    const f2 = await withMount(storeDir, 'app', undefined, fmnt, () => {
      writeSome(fmnt, 'fuse');
      fs.rmSync(join(fmnt, 'new-kernel'));
      return dirView(fmnt);
    });
    const k2 = await withKernel(storeDir, 'app', kmnt, () => kernelView(kmnt));
    same(f2, k2, 'after FUSE writes: FUSE vs kernel');
    assert.ok(k2.has('/new-fuse') && !k2.has('/new-kernel'));
  } finally {
    cleanupKernel(kmnt, fmnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

kernelTest('a tag in kernel mode is read-only (EROFS) and shows the commit', async () => {
  const work = tempDir('stratum-ktag-');
  const kmnt = join(work, 'ktag');
  try {
    const { storeDir, store } = await makeStore(work);
    ok(S(storeDir, 'commit', 'app:t'), 'commit');
    const id = (await store.tags.resolve('app', 't')).id;
    await withKernel(storeDir, 'app:t', kmnt, () => {
      same(commitView(store, id), kernelView(kmnt), 'tag: commit vs kernel');
      assert.throws(() => fs.writeFileSync(join(kmnt, 'new'), 'x'), (e: NodeJS.ErrnoException) => e.code === 'EROFS');
      assert.throws(() => fs.writeFileSync(join(kmnt, 'small'), 'x'), (e: NodeJS.ErrnoException) => e.code === 'EROFS');
      assert.throws(() => fs.chmodSync(join(kmnt, 'small'), 0o600), (e: NodeJS.ErrnoException) => e.code === 'EROFS');
      const st = ok(S(storeDir, 'status'), 'status');
      assert.match(st, 'app:t (read-only) mounted at');
    });
  } finally {
    cleanupKernel(kmnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

kernelTest('unmount: busy mounts are detached, a stale kernel entry is reported and removed', async () => {
  const work = tempDir('stratum-kstale-');
  const kmnt = join(work, 'k');
  try {
    const { storeDir } = await makeStore(work);
    // a file held open: the unmount detaches lazily, the write still lands in the upper
    ok(S(storeDir, 'mount', 'app', kmnt, '--mode', 'kernel'), 'mount');
    const fd = fs.openSync(join(kmnt, 'held'), 'w');
    try {
      const r = S(storeDir, 'unmount', 'app');
      ok(r, 'unmount while busy');
      assert.match(r.stderr, 'still open');
      assert.not.ok(kernelMountedAt(kmnt), 'detached');
      fs.writeSync(fd, 'late write');
    } finally {
      fs.closeSync(fd);
    }
    assert.is(fs.readFileSync(join(storeDir, 'refs/app/head/held'), 'utf8'), 'late write');
    assert.is((await new MountState().list()).length, 0);

    // unmounted behind stratum's back (umount -l): the server sees it, ends and drops its entry
    ok(S(storeDir, 'mount', 'app', kmnt, '--mode', 'kernel'), 'mount');
    const server = (await new MountState().list())[0]!.pid;
    umount2(kmnt, MNT_DETACH);
    await waitFor(() => !alive(server), 'the server ends after an external umount -l');
    assert.is((await new MountState().list()).length, 0);

    // a server killed with -9: the overlay goes on, the entry is stale, `unmount` detaches it
    ok(S(storeDir, 'mount', 'app', kmnt, '--mode', 'kernel'), 'mount');
    const killed = (await new MountState().list())[0]!.pid;
    process.kill(killed, 'SIGKILL');
    await waitFor(() => !alive(killed), 'killed');
    fs.writeFileSync(join(kmnt, 'after-kill'), 'the kernel still serves');
    assert.match(ok(S(storeDir, 'status'), 'status'), 'STALE');
    assert.equal((await new MountState().live(storeDir)), []);
    assert.match(S(storeDir, 'unmount', kmnt).stderr, 'had died');
    assert.not.ok(kernelMountedAt(kmnt), 'detached');
    assert.is((await new MountState().list()).length, 0);
    await withKernel(storeDir, 'app', kmnt, () => {
      assert.is(fs.readFileSync(join(kmnt, 'held'), 'utf8'), 'late write');
      assert.is(fs.readFileSync(join(kmnt, 'after-kill'), 'utf8'), 'the kernel still serves');
    });
  } finally {
    cleanupKernel(kmnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

kernelTest('a dir copied up by a change below it shows the link count the kernel overlay shows, in FUSE mode too', async () => {
  const work = tempDir('stratum-knlink-');
  const kmnt = join(work, 'k'), fmnt = join(work, 'f');
  try {
    const { storeDir } = await makeStore(work);
    const fuse = await withMount(storeDir, 'app', undefined, fmnt, () => {
      const lower = fs.statSync(join(fmnt, 'd')).nlink;  // cached with the long lower timeout
      fs.writeFileSync(join(fmnt, 'd/sub/new'), 'x');     // copies d and d/sub up
      return { lower, merged: fs.statSync(join(fmnt, 'd')).nlink };
    });
    assert.ok(fuse.lower > 1, 'a lower dir with subdirs');
    const kernel = await withKernel(storeDir, 'app', kmnt, () => fs.statSync(join(kmnt, 'd')).nlink);
    assert.is(fuse.merged, kernel, 'right after the copy-up FUSE says what the kernel says');
  } finally {
    cleanupKernel(kmnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
