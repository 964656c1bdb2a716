import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { commitThroughMount } from '../../src/fuse/client.js';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { Store } from '../../src/store/store.js';
import { countsDiff, settledCounts } from '../../bench/fuse-counts.js';
import { shAsUser, stratumAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';
import { endUserMounts, fuseUnavailable, tempDir, withMount, withCountsFile, fusermountUnavailable, userWork } from './mounts.js';

// Zero-message open on a HEAD (docs/fuse.md "Zero-message open"): no open or release reaches
// the server for files; reads and writes come by node, copy-up happens at the first write,
// truncate, fallocate or shared-mmap write, and a live commit's write barrier keeps the committed
// content what was written before the split while a writer holding its file open goes on in HEAD.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`HEAD zero-open tests skipped: ${why}`);

const N = 60;
const body = (i: number): string => `file ${i} `.repeat(20) + '\n';  // over 64 bytes: an object, not inline
const PY = '/usr/bin/python3';

/** A store whose label `app` (tag v1) has many/f<i>, and lower files to change by each way. */
async function headStore(work: string): Promise<string> {
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'many'), { recursive: true });
  for (let i = 0; i < N; i++) fs.writeFileSync(join(src, 'many', `f${i}`), body(i));
  for (const name of ['trunc', 'ftrunc', 'falloc', 'mapped', 'held']) fs.writeFileSync(join(src, name), `${name} `.repeat(1000));
  const store = await Store.open(join(work, 'store'), { create: true });
  await importDirectory(store, src, { label: 'app', tag: 'v1' });
  await ensureUpper(store, (await store.heads.read('app'))!);
  return store.root;
}

const run = (cmd: string, args: string[]): string => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};

mountTest('a HEAD: a cat of N files twice makes at most a handful of opens and no release; upper files too', async () => {
  const work = tempDir('stratum-head-zero-');
  const countsFile = join(work, 'counts.json');
  try {
    const root = await headStore(work);
    await withCountsFile(countsFile, async () => {
      await withMount(root, 'app', undefined, join(work, 'mnt'), async (e) => {
        fs.statSync(e.mountpoint);
        let want = '';
        for (const i of [...Array(N).keys()].map((i) => `f${i}`).sort()) want += body(Number(i.slice(1)));
        const before = await settledCounts(countsFile);
        for (let pass = 0; pass < 2; pass++) {
          const r = spawnSync('sh', ['-c', 'cat many/*'], { cwd: e.mountpoint, encoding: 'utf8', maxBuffer: 1 << 24 });
          assert.is(r.stdout, want, `pass ${pass + 1}`);
        }
        const d = countsDiff((await settledCounts(countsFile))!, before);
        assert.ok((d.requests.open ?? 0) <= 2, `opens: ${JSON.stringify(d)}`);
        assert.is(d.requests.release ?? 0, 0, JSON.stringify(d));
        assert.ok((d.requests.read ?? 0) >= N && (d.requests.read ?? 0) < 2 * N, `each file read once, the second pass from the page cache: ${JSON.stringify(d)}`);

        // files written through the mount (upper files) read back the same way, and after a change
        for (let i = 0; i < 10; i++) fs.writeFileSync(join(e.mountpoint, 'many', `u${i}`), body(i));
        const mid = await settledCounts(countsFile);
        const u = spawnSync('sh', ['-c', 'cat many/u*; cat many/u*'], { cwd: e.mountpoint, encoding: 'utf8' });
        let uwant = '';
        for (let i = 0; i < 10; i++) uwant += body(i);
        assert.is(u.stdout, uwant + uwant);
        const du = countsDiff((await settledCounts(countsFile))!, mid!);
        assert.is((du.requests.open ?? 0) + (du.requests.release ?? 0), 0, JSON.stringify(du));
        fs.appendFileSync(join(e.mountpoint, 'many', 'u3'), 'more\n');
        assert.is(fs.readFileSync(join(e.mountpoint, 'many', 'u3'), 'utf8'), body(3) + 'more\n');
      });
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

mountTest('a file held open for writing across a live commit: later writes in HEAD at its path, the commit has what came before', async () => {
  const work = tempDir('stratum-head-zero-');
  try {
    const root = await headStore(work);
    const mnt = join(work, 'mnt');
    await withMount(root, 'app', undefined, mnt, async (e) => {
      // a lower file (copy-up at the first write) and a new upper file, both held open
      const lower = fs.openSync(join(mnt, 'held'), 'r+');
      const upper = fs.openSync(join(mnt, 'fresh'), 'w');
      // created and not written before the commit: C knows its upper file but holds no fd on it
      const unwritten = fs.openSync(join(mnt, 'unwritten'), 'w');
      try {
        const inoLower = fs.fstatSync(lower).ino, inoUpper = fs.fstatSync(upper).ino;
        fs.writeSync(lower, 'BEFORE', 0);
        fs.writeSync(upper, 'before\n');
        await commitThroughMount(e, 'v2');
        fs.writeSync(lower, 'AFTER', 6);
        fs.writeSync(upper, 'after\n');
        fs.fsyncSync(upper);
        fs.writeSync(unwritten, 'after\n');
        assert.is(fs.fstatSync(lower).ino, inoLower, 'the writer still has the same file');
        assert.is(fs.fstatSync(upper).ino, inoUpper);
        await commitThroughMount(e, 'v2b');  // a second commit with the writers still open
        fs.writeSync(upper, 'last\n');
      } finally {
        fs.closeSync(lower);
        fs.closeSync(upper);
        fs.closeSync(unwritten);
      }
    });
    const held = 'held '.repeat(1000);
    await withMount(root, 'app', undefined, join(work, 'mnt'), () => {
      assert.is(fs.readFileSync(join(work, 'mnt', 'held'), 'utf8'), 'BEFOREAFTER' + held.slice(11), 'HEAD (after a remount) has the later write');
      assert.is(fs.readFileSync(join(work, 'mnt', 'fresh'), 'utf8'), 'before\nafter\nlast\n');
      assert.is(fs.readFileSync(join(work, 'mnt', 'unwritten'), 'utf8'), 'after\n');
    });
    await withMount(root, 'app', 'v2', join(work, 'ro'), () => {
      assert.is(fs.readFileSync(join(work, 'ro', 'held'), 'utf8'), 'BEFORE' + held.slice(6), 'the commit: what was written before it');
      assert.is(fs.readFileSync(join(work, 'ro', 'fresh'), 'utf8'), 'before\n');
      assert.is(fs.readFileSync(join(work, 'ro', 'unwritten'), 'utf8'), '', 'a write after the split never reaches the committed file');
    });
    await withMount(root, 'app', 'v2b', join(work, 'ro'), () => {
      assert.is(fs.readFileSync(join(work, 'ro', 'fresh'), 'utf8'), 'before\nafter\n');
    });
    const store = await Store.open(root);
    assert.equal((await verify(store, undefined)).problems, [], 'no committed object changed');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

mountTest('writes by node during a live commit (C writes to upper files): every line in HEAD, the commit a prefix, objects untouched', async () => {
  // the window the write barrier closes: between the split and the rebase, a C write by node
  // to an old upper file would change a file the commit is making an object of
  const work = tempDir('stratum-head-zero-');
  try {
    const root = await headStore(work);
    const mnt = join(work, 'mnt');
    const M = 100;
    const rounds: number[] = [];
    await withMount(root, 'app', undefined, mnt, async (e) => {
      fs.mkdirSync(join(mnt, 'w'));
      for (let i = 0; i < M; i++) fs.writeFileSync(join(mnt, 'w', `n${i}`), '');
      let done = false;
      const commit = commitThroughMount(e, 'mid').finally(() => { done = true; });
      for (let round = 0; !done || round < 3; round++) {
        for (let i = 0; i < M; i++) fs.appendFileSync(join(mnt, 'w', `n${i}`), `${round}\n`);
        rounds.push(round);
        await new Promise((r) => setImmediate(r));
      }
      await commit;
    });
    const lines = (s: string): string[] => s.split('\n').filter((x) => x !== '');
    const all = rounds.map(String);
    await withMount(root, 'app', undefined, mnt, () => {
      for (let i = 0; i < M; i++) assert.equal(lines(fs.readFileSync(join(mnt, 'w', `n${i}`), 'utf8')), all, `HEAD w/n${i}`);
    });
    await withMount(root, 'app', 'mid', join(work, 'ro'), () => {
      for (let i = 0; i < M; i++) {
        const got = lines(fs.readFileSync(join(work, 'ro', 'w', `n${i}`), 'utf8'));
        assert.equal(got, all.slice(0, got.length), `commit w/n${i}: a prefix`);
      }
    });
    const store = await Store.open(root);
    assert.equal((await verify(store, undefined)).problems, [], 'no committed object changed');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

mountTest('writes by node between the split and the rebase go to the new upper: the commit has none of them, HEAD all', async () => {
  // the window the write barrier closes: files C knows as writable upper files but holds no fd
  // on (created, never written), first written after the split while the commit still hashes
  const work = tempDir('stratum-head-zero-');
  try {
    const root = await headStore(work);
    const mnt = join(work, 'mnt');
    const M = 50;
    const journal = join(root, 'refs/app/head.live');
    await withMount(root, 'app', undefined, mnt, async (e) => {
      fs.writeFileSync(join(mnt, 'big'), randomBytes(96 << 20));  // the commit hashes it for a while
      fs.mkdirSync(join(mnt, 'w'));
      for (let i = 0; i < M; i++) fs.writeFileSync(join(mnt, 'w', `n${i}`), '');
      let done = false;
      const commit = commitThroughMount(e, 'mid').finally(() => { done = true; });
      let split = false;
      while (!done && !split) {
        try { split = /"switched": true/.test(fs.readFileSync(journal, 'utf8')); } catch { /* not written yet */ }
        if (!split) await new Promise((r) => setTimeout(r, 1));
      }
      if (split) for (let i = 0; i < M; i++) fs.appendFileSync(join(mnt, 'w', `n${i}`), 'after\n');
      await commit;
      assert.ok(split, 'the writes came between the split and the end of the commit');
    });
    await withMount(root, 'app', undefined, mnt, () => {
      for (let i = 0; i < M; i++) assert.is(fs.readFileSync(join(mnt, 'w', `n${i}`), 'utf8'), 'after\n', `HEAD w/n${i}`);
    });
    await withMount(root, 'app', 'mid', join(work, 'ro'), () => {
      for (let i = 0; i < M; i++) assert.is(fs.readFileSync(join(work, 'ro', 'w', `n${i}`), 'utf8'), '', `commit w/n${i}`);
    });
    const store = await Store.open(root);
    assert.equal((await verify(store, undefined)).problems, [], 'no committed object changed');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

mountTest('O_TRUNC, ftruncate, fallocate and a shared writable mmap of lower files copy up and read back; the tag is unchanged', async () => {
  const work = tempDir('stratum-head-zero-');
  try {
    const root = await headStore(work);
    const mnt = join(work, 'mnt');
    const orig = (name: string): string => `${name} `.repeat(1000);
    const upperOf = (name: string): string => join(root, 'refs/app/head', name);
    await withMount(root, 'app', undefined, mnt, async (e) => {
      for (const name of ['trunc', 'ftrunc', 'falloc', 'mapped']) assert.is(fs.readFileSync(join(mnt, name), 'utf8'), orig(name), 'cached first');
      fs.writeFileSync(join(mnt, 'trunc'), 'short\n');  // open(O_WRONLY|O_TRUNC): a setattr of the size, then a write
      assert.is(fs.readFileSync(join(mnt, 'trunc'), 'utf8'), 'short\n');
      run(PY, ['-c', 'import os,sys; fd=os.open(sys.argv[1], os.O_RDWR); os.ftruncate(fd, 10); os.close(fd)', join(mnt, 'ftrunc')]);
      assert.is(fs.readFileSync(join(mnt, 'ftrunc'), 'utf8'), orig('ftrunc').slice(0, 10));
      run('fallocate', ['-l', '16384', join(mnt, 'falloc')]);  // FUSE fallocate, mode 0: extends
      assert.is(fs.statSync(join(mnt, 'falloc')).size, 16384);
      const fa = fs.readFileSync(join(mnt, 'falloc'));
      assert.is(fa.subarray(0, 7000).toString(), orig('falloc').slice(0, 7000));
      assert.ok(fa.subarray(7000).every((b) => b === 0));
      run('fallocate', ['-p', '-o', '0', '-l', '4096', join(mnt, 'falloc')]);  // an upper file now: C's fallocate
      assert.ok(fs.readFileSync(join(mnt, 'falloc')).subarray(0, 4096).every((b) => b === 0), 'the hole reads as zeros');
      run(PY, ['-c', `import mmap,sys
f=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0); m[0:6]=b'MAPPED'; m.flush(); m.close(); f.close()`, join(mnt, 'mapped')]);
      assert.is(fs.readFileSync(join(mnt, 'mapped'), 'utf8'), 'MAPPED' + orig('mapped').slice(6));
      for (const name of ['trunc', 'ftrunc', 'falloc', 'mapped']) assert.ok(fs.existsSync(upperOf(name)), `${name} was copied up`);
      // a file created O_APPEND: another writer's pwrite at 0 lands at 0 (writers share C's fd)
      run(PY, ['-c', `import os,sys
a=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT|os.O_APPEND, 0o644); os.write(a, b'12345')
b=os.open(sys.argv[1], os.O_WRONLY); os.pwrite(b, b'AB', 0); os.close(b); os.write(a, b'6'); os.close(a)`, join(mnt, 'appended')]);
      assert.is(fs.readFileSync(join(mnt, 'appended'), 'utf8'), 'AB3456');
      await commitThroughMount(e, 'v2');
    });
    await withMount(root, 'app', undefined, mnt, () => {
      assert.is(fs.readFileSync(join(mnt, 'trunc'), 'utf8'), 'short\n');
      assert.is(fs.readFileSync(join(mnt, 'ftrunc'), 'utf8'), orig('ftrunc').slice(0, 10));
      assert.is(fs.statSync(join(mnt, 'falloc')).size, 16384);
      assert.is(fs.readFileSync(join(mnt, 'mapped'), 'utf8'), 'MAPPED' + orig('mapped').slice(6));
    });
    await withMount(root, 'app', 'v1', join(work, 'ro'), () => {
      for (const name of ['trunc', 'ftrunc', 'falloc', 'mapped']) assert.is(fs.readFileSync(join(work, 'ro', name), 'utf8'), orig(name), `v1 ${name} unchanged`);
    });
    await withMount(root, 'app', 'v2', join(work, 'ro'), () => {
      assert.is(fs.readFileSync(join(work, 'ro', 'mapped'), 'utf8'), 'MAPPED' + orig('mapped').slice(6));
    });
    const store = await Store.open(root);
    assert.equal((await verify(store, undefined)).problems, []);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

mountTest('a file open for writing whose last name goes (a lower file and an upper one): it still takes writes, ftruncate, fchmod and fsync; nothing is left behind', async () => {
  // the kernel overlay copies a lower file up at the writer's open; the server never sees that
  // open, so the copy is made at the first change, nameless (before: ENOENT, and EBADF for an
  // ftruncate of an unlinked upper file)
  const work = tempDir('stratum-head-zero-');
  try {
    const root = await headStore(work);
    const mnt = join(work, 'mnt');
    await withMount(root, 'app', undefined, mnt, async (e) => {
      fs.writeFileSync(join(mnt, 'upperfile'), 'hello world\n');
      const out = run(PY, ['-c', `import os,sys
for p in sys.argv[1:]:
    fd=os.open(p, os.O_RDWR); os.unlink(p)
    os.ftruncate(fd, 3); os.pwrite(fd, b'XY', 0); os.fchmod(fd, 0o600); os.fsync(fd)
    st=os.fstat(fd); print(os.path.basename(p), os.pread(fd, 100, 0).decode(), oct(st.st_mode & 0o777), st.st_size, st.st_nlink)
    os.close(fd)`, join(mnt, 'held'), join(mnt, 'upperfile')]);
      assert.is(out, 'held XYl 0o600 3 0\nupperfile XYl 0o600 3 0\n');
      assert.not.ok(fs.existsSync(join(mnt, 'held')) || fs.existsSync(join(mnt, 'upperfile')));
      assert.equal(fs.readdirSync(join(root, 'refs/app/work/fuse')), [], 'the nameless copies left nothing in the scratch dir');
      await commitThroughMount(e, 'v2');
    });
    await withMount(root, 'app', 'v1', join(work, 'ro'), () => {
      assert.is(fs.readFileSync(join(work, 'ro', 'held'), 'utf8'), 'held '.repeat(1000), 'the lower file is unchanged in v1');
    });
    await withMount(root, 'app', 'v2', join(work, 'ro'), () => {
      assert.not.ok(fs.existsSync(join(work, 'ro', 'held')), 'v2 has the deletion');
    });
    assert.equal((await verify(await Store.open(root), undefined)).problems, []);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

const userWhy = why ?? userTestsUnavailable() ?? fusermountUnavailable();
(userWhy === undefined ? test : test.skip)('an ordinary user\'s FUSE HEAD without opens: reads, O_TRUNC, truncate, fallocate, mmap, a file created read-only, a writer across a commit', async () => {
  if (userWhy) console.log(`ordinary-user HEAD zero-open test skipped: ${userWhy}`);
  const user = testUser();
  const { dir, mnt, state, options } = userWork(user, 'stratum-head-zero-user-', (d) => {
    fs.mkdirSync(join(d, 'src'));
    for (const name of ['a', 'b', 'c', 'd']) fs.writeFileSync(join(d, 'src', name), `${name} `.repeat(100));
  });
  try {
    let r = stratumAsUser(user, ['import', join(dir, 'src'), '--label', 'mine', '--tag', 'v1'], options);
    assert.is(r.status, 0, r.stderr);
    r = stratumAsUser(user, ['mount', 'mine', mnt, '--mode', 'fuse'], options);
    assert.is(r.status, 0, r.stderr);
    // a writer (python, file held open) writes, the commit runs, it writes again
    const s = shAsUser(user, `cd '${mnt}' && cat a b c d >/dev/null && cat a b c d | wc -c && echo new > a && truncate -s 5 b && ` +
      `fallocate -l 8192 c && ${PY} -c "
import mmap,os,subprocess
f=open('d','r+b'); m=mmap.mmap(f.fileno(),0); m[0:3]=b'MAP'; m.flush(); m.close(); f.close()
r=os.open('ro', os.O_WRONLY|os.O_CREAT|os.O_EXCL, 0o444); os.write(r, b'read-only\\n')
w=os.open('a', os.O_WRONLY|os.O_APPEND); os.write(w, b'before\\n')
open('.stratum/commit','w').write('v2\\n')
os.write(w, b'after\\n'); os.close(w)
os.write(r, b'still\\n'); os.close(r)
print(open('.stratum/commit').read().split()[0])
" && cat a && wc -c < b && wc -c < c && head -c 6 d && echo && cat ro && stat -c %a ro`, options);
    assert.is(s.status, 0, s.stderr.slice(0, 800));
    assert.equal(s.stdout.trim().split('\n'), ['800', 'mine:v2', 'new', 'before', 'after', '5', '8192', 'MAP d ', 'read-only', 'still', '444']);
    r = stratumAsUser(user, ['unmount', 'mine'], options);
    assert.is(r.status, 0, r.stderr);
    r = stratumAsUser(user, ['mount', 'mine:v2', mnt], options);
    assert.is(r.status, 0, r.stderr);
    const t = shAsUser(user, `cd '${mnt}' && cat a && wc -c < b && head -c 6 d && echo && cat ro`, options);
    assert.equal(t.stdout.trim().split('\n'), ['new', 'before', '5', 'MAP d ', 'read-only'], t.stderr);
    r = stratumAsUser(user, ['unmount', 'mine:v2'], options);
    assert.is(r.status, 0, r.stderr);
    r = stratumAsUser(user, ['mount', 'mine', mnt, '--mode', 'fuse'], options);
    assert.is(r.status, 0, r.stderr);
    const h = shAsUser(user, `cd '${mnt}' && cat a`, options);
    assert.equal(h.stdout.trim().split('\n'), ['new', 'before', 'after'], h.stderr);
    r = stratumAsUser(user, ['unmount', 'mine'], options);
    assert.is(r.status, 0, r.stderr);
    r = stratumAsUser(user, ['verify'], options);
    assert.is(r.status, 0, r.stdout + r.stderr);
  } finally {
    await endUserMounts(state, mnt, dir);
  }
});

test.run();
