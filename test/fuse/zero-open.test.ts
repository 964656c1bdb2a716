import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { importDirectory } from '../../src/store/commands/import.js';
import { Store } from '../../src/store/store.js';
import { countsDiff, settledCounts } from '../../bench/fuse-counts.js';
import { asNobody, endUserMounts, mountAsNobody, shAsNobodyIn, fuseUnavailable, tempDir, withMount, withCountsFile, fusermountUnavailable } from './mounts.js';

// Zero-message open on tag mounts (docs/fuse.md "Zero-message open"): the kernel sends no open
// or release for files once the server answered ENOSYS, reads carry no handle and C finds the
// backing object by inode. What a user checks: the bytes read back (plain read, mmap, inline and
// empty files, the control files), and the request counts file (STRATUM_FUSE_COUNTS) says a cat
// of N files cost at most one open request in all.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`zero-open tests skipped: ${why}`);

const N = 60;
const body = (i: number): string => `file ${i} `.repeat(20) + '\n';  // over 64 bytes: an object, not inline

async function tagStore(work: string): Promise<string> {
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'many'), { recursive: true });
  for (let i = 0; i < N; i++) fs.writeFileSync(join(src, 'many', `f${i}`), body(i));
  fs.writeFileSync(join(src, 'inline'), 'short\n');
  fs.writeFileSync(join(src, 'empty'), '');
  fs.writeFileSync(join(src, 'big'), Buffer.alloc(3 << 20, 7));
  const store = await Store.open(join(work, 'store'), { create: true });
  await importDirectory(store, src, { label: 'z', tag: 'v1' });
  return store.root;
}

mountTest('a tag mount: cat of N files makes at most 1 open and no release, reads come back right', async () => {
  const work = tempDir('stratum-zero-open-');
  const countsFile = join(work, 'counts.json');
  try {
    const root = await tagStore(work);
    await withCountsFile(countsFile, async () => {
      await withMount(root, 'z', 'v1', join(work, 'mnt'), async (e) => {
        fs.statSync(e.mountpoint);
        const before = await settledCounts(countsFile);
        const r = spawnSync('sh', ['-c', 'cat many/*'], { cwd: e.mountpoint, encoding: 'utf8', maxBuffer: 1 << 24 });
        assert.is(r.status, 0, r.stderr);
        let want = '';
        for (const i of [...Array(N).keys()].map((i) => `f${i}`).sort()) want += body(Number(i.slice(1)));
        assert.is(r.stdout, want);
        const first = countsDiff((await settledCounts(countsFile))!, before);
        assert.ok((first.requests.open ?? 0) <= 1, `opens: ${JSON.stringify(first)}`);
        assert.is(first.requests.release ?? 0, 0, JSON.stringify(first));
        assert.ok((first.requests.read ?? 0) >= N, `every file read once: ${JSON.stringify(first)}`);

        // a second pass: pages kept (keep_cache without open), no request at all for the files
        const mid = await settledCounts(countsFile);
        const again = spawnSync('sh', ['-c', 'cat many/*'], { cwd: e.mountpoint, encoding: 'utf8', maxBuffer: 1 << 24 });
        assert.is(again.stdout, want);
        const second = countsDiff((await settledCounts(countsFile))!, mid!);
        assert.is((second.requests.open ?? 0) + (second.requests.read ?? 0) + (second.requests.release ?? 0), 0, JSON.stringify(second));

        // inline, empty, a large object read at offsets, and mmap of it
        assert.is(fs.readFileSync(join(e.mountpoint, 'inline'), 'utf8'), 'short\n');
        assert.is(fs.readFileSync(join(e.mountpoint, 'empty'), 'utf8'), '');
        const fd = fs.openSync(join(e.mountpoint, 'big'), 'r');
        try {
          const b = Buffer.alloc(5);
          assert.is(fs.readSync(fd, b, 0, 5, (3 << 20) - 3), 3);
          assert.equal([...b.subarray(0, 3)], [7, 7, 7]);
        } finally {
          fs.closeSync(fd);
        }
        const py = spawnSync('python3', ['-c', `import mmap,sys
f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)
print(len(m), m[0], m[len(m)-1], bytes(m).count(7))`, join(e.mountpoint, 'big')], { encoding: 'utf8' });
        assert.is(py.stdout.trim(), `${3 << 20} 7 7 ${3 << 20}`, py.stderr);

        // control files without handles: status reads its text, commit is read-only
        const status = fs.readFileSync(join(e.mountpoint, '.stratum', 'status'), 'utf8');
        assert.match(status, /^label z$/m);
        assert.match(status, /^mode fuse read-only$/m);
        assert.is(fs.readFileSync(join(e.mountpoint, '.stratum', 'commit'), 'utf8'), '');
        assert.throws(() => fs.writeFileSync(join(e.mountpoint, '.stratum', 'commit'), 'v2\n'), (err: NodeJS.ErrnoException) => err.code === 'EROFS');
      });
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

const userWhy = why ?? fusermountUnavailable();
(userWhy === undefined ? test : test.skip)('an ordinary user mounts a tag (fusermount3): files and status read back without opens', async () => {
  const dir = tempDir('stratum-zero-open-user-');
  const mnt = join(dir, 'mnt');
  const state = join(dir, 'run', 'state');
  try {
    const { store, env } = mountAsNobody(dir, Object.fromEntries([0, 1, 2, 3, 4].map((i) => [`f${i}`, body(i)])), 'mine:v1');
    const sh = (cmd: string) => shAsNobodyIn(mnt, cmd);
    const want = [0, 1, 2, 3, 4].map(body).join('');
    for (let pass = 0; pass < 2; pass++) {
      const s = sh('cat f0 f1 f2 f3 f4');
      assert.is(s.status, 0, s.stderr);
      assert.is(s.stdout, want, `pass ${pass + 1}`);
    }
    const st = sh('cat .stratum/status');
    assert.match(st.stdout, /^label mine$/m);
    const r = asNobody(['--store', store, 'unmount', mnt], env);
    assert.is(r.status, 0, r.stderr);
  } finally {
    await endUserMounts(state, mnt, dir);
  }
});

test.run();
