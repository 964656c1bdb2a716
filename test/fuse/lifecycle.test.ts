import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { applyThroughMount, commitThroughMount, findMounts } from '../../src/fuse/client.js';
import { stratumMountsAt } from '../../src/fuse/server.js';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { Store } from '../../src/store/store.js';
import { stratum } from '../helpers/cli.js';
import { forceEnd, fuseUnavailable, tempDir, withMount } from './mounts.js';

// The life of a mount: the mount command, one HEAD per label, unmount, SIGTERM, kill -9 and
// recovery, open files across unmount, and the live commit through /.stratum/commit.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`FUSE lifecycle tests skipped: ${why}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let work: string;
let storeDir: string;

test.before.each(async () => {
  if (why) return;
  work = tempDir('stratum-life-');
  storeDir = join(work, 'store');
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'etc'), { recursive: true });
  fs.writeFileSync(join(src, 'etc/conf'), 'base\n');
  fs.writeFileSync(join(src, 'data'), Buffer.alloc(100_000, 1));
  const store = await Store.open(storeDir, { create: true });
  await importDirectory(store, src, { label: 'app', tag: 'v1' });
  await ensureUpper(store, (await store.heads.read('app'))!);
});
test.after.each(() => { if (!why) fs.rmSync(work, { recursive: true, force: true }); });

const cli = (...args: string[]) => stratum(['--store', storeDir, ...args]);

mountTest('mount prints the mountpoint and exits 0 once the mount answers; one writable HEAD per label; unmount ends it', async () => {
  const mnt = join(work, 'mnt'), other = join(work, 'other'), ro = join(work, 'ro');
  try {
    const r = cli('mount', 'app', mnt, '--mode', 'fuse');
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stdout.trim(), mnt);
    assert.ok(stratumMountsAt(mnt));
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'base\n');
    const again = cli('mount', 'app', other, '--mode', 'fuse');
    assert.is(again.status, 1);
    assert.match(again.stderr, mnt, 'the error names the existing mountpoint');
    const tag = cli('mount', 'app:v1', ro, '--mode', 'fuse');
    assert.is(tag.status, 0, tag.stderr);
    const entries = await findMounts(storeDir, 'app');
    assert.is(entries.length, 1);
    assert.ok(entries[0]!.log && fs.readFileSync(entries[0]!.log, 'utf8').includes('serving app:HEAD'));
    assert.is(cli('unmount', 'app:v1').status, 0);
    assert.is(cli('unmount', mnt).status, 0);
    assert.not.ok(stratumMountsAt(mnt));
    assert.not.ok(stratumMountsAt(ro));
    assert.equal(await findMounts(storeDir, 'app'), []);
  } finally {
    for (const m of [mnt, other, ro]) await forceEnd((await findMounts(storeDir, m))[0], m);
  }
});

mountTest('SIGTERM to the server unmounts; kill -9 leaves a stale entry, the upper intact, and mount recovers', async () => {
  const mnt = join(work, 'mnt');
  try {
    assert.is(cli('mount', 'app', mnt, '--mode', 'fuse').status, 0);
    fs.writeFileSync(join(mnt, 'etc/conf'), 'changed\n');
    fs.writeFileSync(join(mnt, 'new'), 'new file\n');
    let [e] = await findMounts(storeDir, 'app');
    process.kill(e!.pid, 'SIGKILL');
    for (let i = 0; i < 250 && !e!.stale; i++) {
      await sleep(20);
      [e] = await findMounts(storeDir, 'app');
    }
    assert.ok(e!.stale, 'the state file shows the dead server as stale');
    const st = cli('status', 'app');
    assert.is(st.status, 0, st.stderr);
    const r = cli('mount', 'app', mnt, '--mode', 'fuse');
    assert.is(r.status, 0, r.stderr);
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'changed\n');
    assert.is(fs.readFileSync(join(mnt, 'new'), 'utf8'), 'new file\n');
    [e] = await findMounts(storeDir, 'app');
    assert.not.ok(e!.stale);
    process.kill(e!.pid, 'SIGTERM');
    for (let i = 0; i < 200 && stratumMountsAt(mnt); i++) await sleep(20);
    assert.not.ok(stratumMountsAt(mnt), 'SIGTERM unmounted');
    for (let i = 0; i < 100 && (await findMounts(storeDir, 'app')).length > 0; i++) await sleep(20);
    assert.equal(await findMounts(storeDir, 'app'), [], 'the server removed its entry');
  } finally {
    await forceEnd((await findMounts(storeDir, mnt))[0], mnt);
  }
});

mountTest('unmount with open files: the mount goes away, the open file keeps working and its writes reach HEAD', async () => {
  const mnt = join(work, 'mnt');
  try {
    assert.is(cli('mount', 'app', mnt, '--mode', 'fuse').status, 0);
    const fd = fs.openSync(join(mnt, 'held'), 'w');
    fs.writeSync(fd, 'before ');
    const r = cli('unmount', 'app');
    assert.is(r.status, 0, r.stderr);
    assert.not.ok(stratumMountsAt(mnt));
    fs.writeSync(fd, 'after');
    fs.closeSync(fd);
    await sleep(300);
    assert.is(fs.readFileSync(join(storeDir, 'refs/app/head/held'), 'utf8'), 'before after');
  } finally {
    await forceEnd((await findMounts(storeDir, mnt))[0], mnt);
  }
});

mountTest('commit through /.stratum/commit: tag, id, errors as errnos, result readable, mount stays up', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, async (e) => {
    fs.writeFileSync(join(mnt, 'etc/conf'), 'v2\n');
    fs.unlinkSync(join(mnt, 'data'));
    assert.match(fs.readFileSync(join(mnt, '.stratum/status'), 'utf8'), /\nmode fuse read-write\nchanged 3\ndeleted 1\nmountpoint /);
    fs.writeFileSync(join(mnt, '.stratum/commit'), 'v2\n');
    assert.match(fs.readFileSync(join(mnt, '.stratum/commit'), 'utf8'), /^app:v2 [0-9a-f]{64}\n$/);
    const code = (fn: () => void) => { try { fn(); return 'ok'; } catch (err) { return (err as NodeJS.ErrnoException).code; } };
    assert.is(code(() => fs.writeFileSync(join(mnt, '.stratum/commit'), 'v2')), 'EEXIST');
    assert.match(fs.readFileSync(join(mnt, '.stratum/commit'), 'utf8'), /^error: tag app:v2 exists/);
    assert.is(code(() => fs.writeFileSync(join(mnt, '.stratum/commit'), 'bad name!')), 'EINVAL');
    fs.writeFileSync(join(mnt, 'more'), 'x');
    const r = await commitThroughMount(e, undefined);
    assert.is(r.tag, r.id, 'an empty write tags the commit by its id');
    assert.equal(fs.readdirSync(join(storeDir, 'refs/app/head')), [], 'the upper is empty after the commit');
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'v2\n', 'the view did not change');
    assert.match(fs.readFileSync(join(mnt, '.stratum/status'), 'utf8'), new RegExp(`base ${r.id}\\ntags .*${r.id}`));
    const list = cli('list', 'app');
    assert.match(list.stdout, /v2/);
    fs.writeFileSync(join(mnt, 'etc/conf'), 'v3\n');  // HEAD keeps working after the commit
    assert.is(fs.readFileSync(join(storeDir, 'refs/app/head/etc/conf'), 'utf8'), 'v3\n');
  });
  await withMount(storeDir, 'app', 'v2', join(work, 'ro'), () => {
    assert.is(fs.readFileSync(join(work, 'ro/etc/conf'), 'utf8'), 'v2\n');
    assert.not.ok(fs.existsSync(join(work, 'ro/more')));
  });
});

mountTest('live commit while another process appends: bytes before the commit are in it, later ones only in HEAD', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, async (e) => {
    const file = join(mnt, 'log'), stop = join(work, 'stop');
    const writer = spawn(process.execPath, ['-e', `
      const fs = require('node:fs');
      const fd = fs.openSync(process.argv[1], 'a');
      let n = 0, bytes = 0;
      while (!fs.existsSync(process.argv[2])) {
        const rec = Buffer.alloc(1000, String(n++ % 10));
        bytes += fs.writeSync(fd, rec);
      }
      fs.closeSync(fd);
      process.stdout.write(String(bytes));`, file, stop], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    writer.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    const done = new Promise((r) => writer.on('exit', r));
    try {
      while (!fs.existsSync(file) || fs.statSync(file).size < 200_000) await sleep(10);
      // a commit that fails (the tag exists) puts the open file back: nothing is lost
      assert.is(await commitThroughMount(e, 'v1').then(() => 'ok', (err: { code?: string }) => err.code), 'TAG_EXISTS');
      const before = fs.statSync(file).size;
      const r = await commitThroughMount(e, 'during');
      await sleep(100);
      fs.writeFileSync(stop, '');
      await done;
      const total = Number(out);
      const head = fs.readFileSync(file);
      assert.is(head.length, total, 'HEAD has every byte the writer wrote');
      await withMount(storeDir, 'app', 'during', join(work, 'ro'), () => {
        const committed = fs.readFileSync(join(work, 'ro/log'));
        assert.ok(committed.length >= before, `the commit has the ${before} bytes written before it (has ${committed.length})`);
        assert.ok(committed.length < total, 'writes after the commit are not in it');
        assert.ok(head.subarray(0, committed.length).equals(committed), 'the commit is a prefix of HEAD');
      });
      assert.ok(r.id);
    } finally {
      fs.writeFileSync(stop, '');
      await done;
    }
  });
  const store = await Store.open(storeDir);
  assert.equal((await verify(store, undefined)).problems, [], 'objects were not touched by later writes');
});

mountTest('live commit while another process creates files: creations wait for the commit, none is lost', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, async (e) => {
    const dir = join(mnt, 'many'), stop = join(work, 'stop2');
    fs.mkdirSync(dir);
    const creator = spawn(process.execPath, ['-e', `
      const fs = require('node:fs');
      let n = 0;
      while (!fs.existsSync(process.argv[2])) fs.writeFileSync(process.argv[1] + '/f' + n, String(n++));
      process.stdout.write(String(n));`, dir, stop], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    creator.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    const done = new Promise((r) => creator.on('exit', r));
    try {
      while (fs.readdirSync(dir).length < 200) await sleep(10);
      const before = fs.readdirSync(dir).length;
      await commitThroughMount(e, 'creating');
      await sleep(100);
      fs.writeFileSync(stop, '');
      await done;
      const total = Number(out);
      const names = new Set(fs.readdirSync(dir));
      assert.is(names.size, total, 'HEAD has every file');
      for (let i = 0; i < total; i++) assert.is(fs.readFileSync(join(dir, `f${i}`), 'utf8'), String(i));
      await withMount(storeDir, 'app', 'creating', join(work, 'ro'), () => {
        const committed = fs.readdirSync(join(work, 'ro/many'));
        assert.ok(committed.length >= before && committed.length < total, `${before} <= ${committed.length} < ${total}`);
        for (let i = 0; i < committed.length; i++) assert.ok(committed.includes(`f${i}`), 'the commit holds a prefix of the creations');
      });
    } finally {
      fs.writeFileSync(stop, '');
      await done;
    }
  });
});

mountTest('live commit of a hardlinked file open for writing: the commit keeps the link, the writer goes on in HEAD at its name', async () => {
  // zero-message open (docs/fuse.md "Live commit"): the server does not see the open; the
  // commit's write barrier leaves the old upper's inode alone, and the writer's later bytes
  // reach HEAD through a copy-up of the name it writes through (same node and st_ino to it)
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, async (e) => {
    fs.mkdirSync(join(mnt, 'hl'));
    fs.writeFileSync(join(mnt, 'hl/a'), 'one\n');
    fs.linkSync(join(mnt, 'hl/a'), join(mnt, 'hl/b'));
    fs.linkSync(join(mnt, 'hl/a'), join(mnt, 'etc/c'));
    const fd = fs.openSync(join(mnt, 'hl/a'), 'a');
    try {
      fs.writeSync(fd, 'two\n');
      const ino = fs.fstatSync(fd).ino;
      // a commit that fails changes nothing
      assert.is(await commitThroughMount(e, 'v1').then(() => 'ok', (err: { code?: string }) => err.code), 'TAG_EXISTS');
      const up = ['hl/a', 'hl/b', 'etc/c'].map((n) => fs.statSync(join(storeDir, 'refs/app/head', n)));
      assert.is(up[0]!.nlink, 3, 'the upper still has one inode with three names');
      assert.ok(up.every((x) => x.ino === up[0]!.ino));
      await commitThroughMount(e, 'linked');
      fs.writeSync(fd, 'three\n');
      assert.is(fs.fstatSync(fd).ino, ino, 'the writer still has the same file');
    } finally {
      fs.closeSync(fd);
    }
    assert.is(fs.readFileSync(join(mnt, 'hl/a'), 'utf8'), 'one\ntwo\nthree\n', 'HEAD has the later write at the writer\'s name');
    await sleep(200);  // the kernel's entries of the other names are invalidated after the write's reply
    for (const n of ['hl/b', 'etc/c']) assert.is(fs.readFileSync(join(mnt, n), 'utf8'), 'one\ntwo\n', `${n}: the copy-up broke the link, as overlayfs does`);
    assert.is(fs.statSync(join(mnt, 'hl/b')).ino, fs.statSync(join(mnt, 'etc/c')).ino, 'the other names are still one file');
    await withMount(storeDir, 'app', 'linked', join(work, 'ro'), () => {
      const ro = ['hl/a', 'hl/b', 'etc/c'].map((n) => join(work, 'ro', n));
      const rs = ro.map((n) => fs.statSync(n));
      for (const n of ro) assert.is(fs.readFileSync(n, 'utf8'), 'one\ntwo\n', `commit ${n} is the view at the commit`);
      assert.is(rs[0]!.nlink, 3, 'the commit keeps the hardlink');
      assert.is(rs[1]!.ino, rs[0]!.ino);
      assert.is(rs[2]!.ino, rs[0]!.ino);
    });
    await commitThroughMount(e, 'after');
  });
  await withMount(storeDir, 'app', 'after', join(work, 'ro'), () => {
    assert.is(fs.readFileSync(join(work, 'ro/hl/a'), 'utf8'), 'one\ntwo\nthree\n');
    assert.is(fs.readFileSync(join(work, 'ro/hl/b'), 'utf8'), 'one\ntwo\n');
  });
  await withMount(storeDir, 'app', 'linked', join(work, 'ro'), () => {
    assert.is(fs.readFileSync(join(work, 'ro/hl/a'), 'utf8'), 'one\ntwo\n', 'a later write never changed the commit');
  });
  const store = await Store.open(storeDir);
  assert.equal((await verify(store, undefined)).problems, [], 'objects were not touched by later writes');
});

mountTest('files set aside by a live commit whose server died come back at the next mount', async () => {
  // what a server killed between setting files aside and putting them back leaves: the commit
  // done (the base has the copy), the open file's inode with later writes in the scratch dir
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, async (e) => {
    fs.writeFileSync(join(mnt, 'etc/conf'), 'at commit\n');
    await commitThroughMount(e, 'v2');
  });
  const scratch = join(storeDir, 'refs/app/work/fuse');
  fs.mkdirSync(scratch, { recursive: true });
  fs.writeFileSync(join(scratch, 'kept.1.0'), 'at commit\nwritten later\n');
  fs.writeFileSync(join(scratch, 'kept.json'), JSON.stringify([{ file: join(scratch, 'kept.1.0'), path: '/etc/conf', also: ['/conf2'] }]));
  await withMount(storeDir, 'app', undefined, mnt, (e) => {
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'at commit\nwritten later\n');
    assert.is(fs.readFileSync(join(mnt, 'conf2'), 'utf8'), 'at commit\nwritten later\n', 'every name of a hardlinked file comes back');
    assert.is(fs.statSync(join(mnt, 'conf2')).ino, fs.statSync(join(mnt, 'etc/conf')).ino);
    assert.match(fs.readFileSync(e.log!, 'utf8'), /restored 1 \(\/etc\/conf\)/);
  });
  assert.equal(fs.readdirSync(join(storeDir, 'refs/app/work')).filter((n) => n.startsWith('fuse-kept')), [], 'nothing left behind');
});

mountTest('HEAD reads lower files in C; a write and O_TRUNC copy up, applies switch the base', async () => {
  const mnt = join(work, 'mnt');
  const ones = Buffer.alloc(100_000, 1);
  await withMount(storeDir, 'app', undefined, mnt, async (e) => {
    for (let i = 0; i < 3; i++) assert.ok(fs.readFileSync(join(mnt, 'data')).equals(ones), 'read-only opens (C after the first)');
    const held = fs.openSync(join(mnt, 'data'), 'r');
    const fd = fs.openSync(join(mnt, 'data'), 'r+');
    fs.writeSync(fd, 'X', 0);
    fs.closeSync(fd);
    assert.ok(fs.existsSync(join(storeDir, 'refs/app/head/data')), 'a write open copies up');
    const changed = Buffer.from(ones); changed[0] = 'X'.charCodeAt(0);
    assert.ok(fs.readFileSync(join(mnt, 'data')).equals(changed), 'later read-only opens see the upper file');
    fs.closeSync(held);
    await commitThroughMount(e, 'v2');
    assert.ok(fs.readFileSync(join(mnt, 'data')).equals(changed));
    assert.ok(fs.readFileSync(join(mnt, 'data')).equals(changed), 'served from the new base');
    const pin = fs.openSync(join(mnt, 'data'), 'r');  // the kernel keeps the inode (and its node id) across the apply
    await applyThroughMount(e, 'v1');
    await sleep(200);
    assert.ok(fs.readFileSync(join(mnt, 'data')).equals(ones), 'after an apply: the applied base, not the object registered before');
    assert.ok(fs.readFileSync(join(mnt, 'data')).equals(ones));
    fs.closeSync(pin);
    fs.writeFileSync(join(mnt, 'data'), 'short\n');  // O_WRONLY | O_TRUNC of a lower file
    assert.is(fs.readFileSync(join(mnt, 'data'), 'utf8'), 'short\n');
    await applyThroughMount(e, 'v2', { discard: true });
    await sleep(200);
    assert.ok(fs.readFileSync(join(mnt, 'data')).equals(changed), 'and back');
  });
  const store = await Store.open(storeDir);
  assert.equal((await verify(store, undefined)).problems, [], 'no object was opened for writing');
});

mountTest('apply through /.stratum/apply switches the live view; uncommitted changes refuse it unless discarded or kept', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, async (e) => {
    const held = fs.openSync(join(mnt, 'etc/conf'), 'r');
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'base\n');
    fs.writeFileSync(join(mnt, 'etc/conf'), 'second\n');
    fs.writeFileSync(join(mnt, 'added'), 'added\n');
    await commitThroughMount(e, 'v2');
    const v1 = await applyThroughMount(e, 'v1');
    assert.is(v1.changesWere, 'none');
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'base\n', 'the view switched (cached pages dropped)');
    assert.not.ok(fs.existsSync(join(mnt, 'added')));
    fs.writeFileSync(join(mnt, 'dirty'), 'x');
    const code = await applyThroughMount(e, 'v2').then(() => 'ok', (err: { code?: string }) => err.code);
    assert.is(code, 'BUSY', 'uncommitted changes refuse a plain apply');
    await applyThroughMount(e, 'v2', { keep: true });
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'second\n');
    assert.is(fs.readFileSync(join(mnt, 'dirty'), 'utf8'), 'x', 'kept on top');
    assert.ok(fs.existsSync(join(mnt, 'added')));
    await applyThroughMount(e, 'v1', { discard: true });
    assert.not.ok(fs.existsSync(join(mnt, 'dirty')));
    assert.is(fs.readFileSync(join(mnt, 'etc/conf'), 'utf8'), 'base\n');
    fs.closeSync(held);
  });
});

test.run();
