import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { MountState, kernelMountedAt } from '../../src/store/mount-state.js';
import { Store } from '../../src/store/store.js';
import { commitView, kernelUnsupported } from '../store/head/kernel.js';
import { contentId } from '../store/image/view.js';
import { fuseUnavailable, tempDir, withMount } from '../fuse/mounts.js';
import { S, alive, cleanupKernel, kernelView, ok, waitFor, withKernel } from './mounts.js';

// Kernel mode's control files, live commit and live apply (docs/kernel.md), through the CLI and
// the control files as a user would: `.stratum` never reaches an upper or a commit, a process
// appending through the mount across commits loses nothing and each commit holds a prefix of what
// it wrote, apply switches the tree under a live mount, and a server killed in the middle of a
// commit leaves a HEAD that the next mount recovers with nothing lost.
const why = kernelUnsupported ?? fuseUnavailable();
const kernelTest = why === undefined ? test : test.skip;
if (why) console.log(`kernel mode tests skipped: ${why}`);

async function makeStore(work: string, files = 3): Promise<{ storeDir: string; store: Store }> {
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'd'), { recursive: true });
  for (let i = 0; i < files; i++) fs.writeFileSync(join(src, 'd', `f${i}`), `file ${i}\n`.repeat(i % 7 === 0 ? 2000 : 1));
  const storeDir = join(work, 'store');
  const store = await Store.open(storeDir, { create: true });
  await importDirectory(store, src, { label: 'app', tag: 'v0' });
  return { storeDir, store };
}

/** Overlay and control mounts at or under `mnt` in our mount table. */
function mountsUnder(mnt: string): string[] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[4] === mnt || f[4]?.startsWith(`${mnt}/`)).map((f) => `${f[4]} ${f[f.indexOf('-') + 1]}`);
}

/** A child that appends numbered lines to `file` through one fd until `stop` exists; prints the count. */
function appender(file: string, stop: string): { child: ChildProcess; done: Promise<number> } {
  const body = `const fs = require('fs'); const fd = fs.openSync(${JSON.stringify(file)}, 'a'); let n = 0;
    const tick = () => { for (let i = 0; i < 20; i++) fs.writeSync(fd, 'line ' + (n++) + '\\n');
      if (fs.existsSync(${JSON.stringify(stop)})) { fs.fsyncSync(fd); fs.closeSync(fd); console.log(n); } else setTimeout(tick, 1); };
    tick();`;
  const child = spawn(process.execPath, ['-e', body], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const done = new Promise<number>((resolve) => child.on('exit', () => resolve(Number(out.trim()))));
  return { child, done };
}

const lines = (n: number): string => Array.from({ length: n }, (_, i) => `line ${i}\n`).join('');

kernelTest('auto picks kernel as root; control files; a commit by control file; .stratum in no upper and no commit', async () => {
  const work = tempDir('stratum-klive-');
  const mnt = join(work, 'mnt');
  try {
    const { storeDir, store } = await makeStore(work);
    ok(S(storeDir, 'mount', 'app', mnt), 'mount (auto)');
    assert.ok(kernelMountedAt(mnt), 'auto chose kernel mode');
    assert.match(fs.readFileSync(join(mnt, '.stratum/status'), 'utf8'), 'mode kernel read-write');
    assert.equal(fs.readdirSync(join(mnt, '.stratum')).sort(), ['apply', 'commit', 'status']);
    fs.writeFileSync(join(mnt, 'new'), 'new\n');
    fs.writeFileSync(join(mnt, 'd/f1'), 'changed\n');
    fs.writeFileSync(join(mnt, '.stratum/commit'), 'v1\n');
    const answer = fs.readFileSync(join(mnt, '.stratum/commit'), 'utf8');
    const id = (await store.tags.resolve('app', 'v1')).id;
    assert.is(answer, `app:v1 ${id}\n`);
    // the mount goes on, on the new base: one overlay, one control mount; writes work
    assert.equal(mountsUnder(mnt).sort(), [`${mnt} overlay`, `${mnt}/.stratum fuse.stratum`]);
    assert.match(fs.readFileSync(join(mnt, '.stratum/status'), 'utf8'), `base ${id}`);
    fs.writeFileSync(join(mnt, 'after'), 'after\n');
    assert.is(fs.readFileSync(join(mnt, 'new'), 'utf8'), 'new\n');
    const view = commitView(store, id);
    assert.is(view.get('/new')?.content, contentId(Buffer.from('new\n')));
    assert.is(view.get('/d/f1')?.content, contentId(Buffer.from('changed\n')));
    assert.not.ok([...view.keys()].some((p) => p.startsWith('/.stratum')), 'no .stratum in the commit');
    assert.equal(fs.readdirSync(join(storeDir, 'refs/app/head')), ['after'], 'the new upper holds only what came after');
    // a taken tag: EEXIST, the text says why, nothing changes
    assert.throws(() => fs.writeFileSync(join(mnt, '.stratum/commit'), 'v1\n'), (e: NodeJS.ErrnoException) => e.code === 'EEXIST');
    assert.match(fs.readFileSync(join(mnt, '.stratum/commit'), 'utf8'), 'error: tag app:v1 exists');
    // the CLI commits through the mount too, and status names the mode
    ok(S(storeDir, 'commit', 'app:v2'), 'commit through the CLI');
    assert.equal(fs.readdirSync(join(storeDir, 'refs/app/head')), []);
    assert.match(ok(S(storeDir, 'status'), 'status'), '(kernel)');
    assert.is((await verify(store, undefined)).problems.length, 0);
  } finally {
    if (kernelMountedAt(mnt)) S(join(work, 'store'), 'unmount', mnt);
    cleanupKernel(mnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

kernelTest('a process appending across three live commits loses nothing; each commit holds a prefix', async () => {
  const work = tempDir('stratum-kwriter-');
  const mnt = join(work, 'mnt');
  const fmnt = join(work, 'fmnt');
  const stop = join(work, 'stop');
  let writer: ReturnType<typeof appender> | undefined;
  try {
    const { storeDir, store } = await makeStore(work);
    await withKernel(storeDir, 'app', mnt, async () => {
      writer = appender(join(mnt, 'log'), stop);
      await waitFor(() => (fs.statSync(join(mnt, 'log'), { throwIfNoEntry: false })?.size ?? 0) > 0, 'the writer started');
      for (const tag of ['c1', 'c2', 'c3']) {
        await new Promise((r) => setTimeout(r, 30));
        fs.writeFileSync(join(mnt, `${tag}-file`), tag);
        ok(S(storeDir, 'commit', `app:${tag}`), `commit ${tag}`);
      }
      fs.writeFileSync(stop, '');
      const n = await writer.done;
      assert.ok(n > 0);
      const final = fs.readFileSync(join(mnt, 'log'), 'utf8');
      assert.is(final, lines(n), 'HEAD has every line, in order');
      let previous = 0;
      for (const tag of ['c1', 'c2', 'c3']) {
        const id = (await store.tags.resolve('app', tag)).id;
        const view = commitView(store, id);
        assert.ok(view.has(`/${tag}-file`), `${tag} has the file written before it`);
        // the log as committed: some prefix of the final log, growing commit by commit
        const size = view.get('/log')!.size!;
        assert.ok(size >= previous && size <= final.length, `${tag}: ${size} bytes`);
        assert.is(view.get('/log')!.content, contentId(Buffer.from(final.slice(0, size))), `${tag} holds a prefix`);
        previous = size;
      }
    });
    assert.is((await verify(store, undefined)).problems.length, 0, 'verify clean: no object changed after it was stored');
    // the same HEAD in FUSE mode: everything written is there
    await withMount(storeDir, 'app', undefined, fmnt, () => assert.is(fs.readFileSync(join(fmnt, 'log'), 'utf8'), fs.readFileSync(join(storeDir, 'refs/app/head/log'), 'utf8')));
  } finally {
    fs.writeFileSync(stop, '');
    if (writer?.child.exitCode === null) writer.child.kill('SIGKILL');
    cleanupKernel(mnt, fmnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

kernelTest('live apply: --discard and --keep switch the tree under the mount', async () => {
  const work = tempDir('stratum-kapply-');
  const mnt = join(work, 'mnt');
  try {
    const { storeDir } = await makeStore(work);
    await withKernel(storeDir, 'app', mnt, async () => {
      fs.writeFileSync(join(mnt, 'v1-only'), 'v1');
      ok(S(storeDir, 'commit', 'app:v1'), 'commit');
      fs.writeFileSync(join(mnt, 'scratch'), 'uncommitted');
      const refused = S(storeDir, 'apply', 'app:v0');
      assert.is(refused.status, 1, 'uncommitted changes: apply refuses');
      assert.ok(fs.existsSync(join(mnt, 'scratch')));
      ok(S(storeDir, 'apply', 'app:v0', '--keep'), 'apply --keep');
      assert.not.ok(fs.existsSync(join(mnt, 'v1-only')), 'the base is v0 now');
      assert.is(fs.readFileSync(join(mnt, 'scratch'), 'utf8'), 'uncommitted', 'kept on top');
      fs.writeFileSync(join(mnt, '.stratum/apply'), 'v1 --discard\n');
      assert.match(fs.readFileSync(join(mnt, '.stratum/apply'), 'utf8'), / discarded\n$/);
      assert.is(fs.readFileSync(join(mnt, 'v1-only'), 'utf8'), 'v1');
      assert.not.ok(fs.existsSync(join(mnt, 'scratch')), 'discarded');
      assert.equal(mountsUnder(mnt).length, 2);
    });
  } finally {
    cleanupKernel(mnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

kernelTest('after a live commit nothing new is written through the old mount (a cwd inside it): EROFS; verify clean', async () => {
  const work = tempDir('stratum-kcwd-');
  const mnt = join(work, 'mnt');
  let child: ChildProcess | undefined;
  try {
    const { storeDir, store } = await makeStore(work);
    await withKernel(storeDir, 'app', mnt, async () => {
      fs.writeFileSync(join(mnt, 'd/f1'), 'edited before the commit\n');
      // a process whose cwd is inside the mount: after the commit its relative paths still reach the old overlay
      child = spawn(process.execPath, ['-e', `process.stdin.once('data', () => {
        let r = 'ok'; try { require('fs').appendFileSync('f1', 'through the old mount\\n'); } catch (e) { r = e.code; }
        let c = 'ok'; try { require('fs').writeFileSync('created-late', 'x'); } catch (e) { c = e.code; }
        console.log(r + ' ' + c); process.exit(0); });`], { cwd: join(mnt, 'd'), stdio: ['pipe', 'pipe', 'inherit'] });
      let out = '';
      child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
      const done = new Promise((r) => child!.on('exit', r));
      ok(S(storeDir, 'commit', 'app:v1'), 'commit');
      child.stdin!.end('go\n');
      await done;
      assert.is(out.trim(), 'EROFS EROFS', 'the old overlay is read-only');
      assert.is(fs.readFileSync(join(mnt, 'd/f1'), 'utf8'), 'edited before the commit\n');
    });
    const id = (await store.tags.resolve('app', 'v1')).id;
    assert.is(commitView(store, id).get('/d/f1')?.content, contentId(Buffer.from('edited before the commit\n')));
    assert.is((await verify(store, undefined)).problems.length, 0);
  } finally {
    if (child?.exitCode === null) child.kill('SIGKILL');
    cleanupKernel(mnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

kernelTest('a file still open for writing through an unmounted (draining) mount: commit says BUSY until it is closed', async () => {
  const work = tempDir('stratum-kdrain-');
  const mnt = join(work, 'mnt');
  let fd: number | undefined;
  try {
    const { storeDir, store } = await makeStore(work);
    ok(S(storeDir, 'mount', 'app', mnt, '--mode', 'kernel'), 'mount');
    fd = fs.openSync(join(mnt, 'd/f1'), 'a');
    fs.writeSync(fd, 'first\n');
    const unmounted = S(storeDir, 'unmount', 'app');
    ok(unmounted, 'unmount while a file is open');
    assert.match(unmounted.stderr, 'still open', 'detached lazily (draining)');
    const busy = S(storeDir, 'commit', 'app:t1');
    assert.is(busy.status, 1);
    assert.match(busy.stderr, 'open for writing');
    fs.writeSync(fd, 'second\n');
    fs.closeSync(fd);
    fd = undefined;
    ok(S(storeDir, 'commit', 'app:t1'), 'commit once closed');
    const id = (await store.tags.resolve('app', 't1')).id;
    assert.is(commitView(store, id).get('/d/f1')?.content, contentId(Buffer.from('file 1\nfirst\nsecond\n')));
    assert.is((await verify(store, undefined)).problems.length, 0);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
    cleanupKernel(mnt);
    fs.rmSync(work, { recursive: true, force: true });
  }
});

// on this machine: before the split, after it (head.live), inside the commit engine (head.journal too)
for (const delay of [40, 150, 400]) {
  kernelTest(`a server killed ${delay} ms into a live commit: the next mount recovers, nothing is lost, verify clean`, async () => {
    const work = tempDir('stratum-kcrash-');
    const mnt = join(work, 'mnt');
    try {
      const { storeDir, store } = await makeStore(work, 200);
      const expected = await withKernel(storeDir, 'app', mnt, async () => {
        for (let i = 0; i < 1500; i++) fs.writeFileSync(join(mnt, 'd', `n${i}`), `new ${i}\n`.repeat(i % 50 === 0 ? 3000 : 1));
        fs.rmSync(join(mnt, 'd', 'f3'));
        const before = kernelView(mnt);
        const server = (await new MountState().list())[0]!.pid;
        const committing = spawn(process.execPath, ['-e', `require('fs').writeFileSync(${JSON.stringify(join(mnt, '.stratum/commit'))}, 'crash\\n')`], { stdio: 'ignore' });
        const committed = new Promise((r) => committing.on('exit', r));
        await new Promise((r) => setTimeout(r, delay));
        process.kill(server, 'SIGKILL');
        await waitFor(() => !alive(server), 'killed');
        await committed;
        // the overlay still serves, whichever it was at the kill; a write now must survive too
        fs.writeFileSync(join(mnt, 'after-crash'), 'kept');
        const after = kernelView(mnt);
        after.delete('/after-crash');
        assert.equal([...after.keys()].sort(), [...before.keys()].sort(), 'the mount showed the same tree through the kill');
        return before;
      });
      // withKernel's unmount met a dead server: stale, detached. The next mount recovers HEAD.
      assert.not.ok(kernelMountedAt(mnt));
      await withKernel(storeDir, 'app', mnt, () => {
        const now = kernelView(mnt);
        assert.is(fs.readFileSync(join(mnt, 'after-crash'), 'utf8'), 'kept');
        now.delete('/after-crash');
        for (const [path, v] of expected) if (path !== '/') assert.is(now.get(path)?.content, v.content, path);
        assert.equal([...now.keys()].sort(), [...expected.keys()].sort());
      });
      const tag = await store.tags.read('app', 'crash');
      if (tag && tag.kind === 'id') {
        const view = commitView(store, tag.id);
        for (const [path, v] of expected) if (path !== '/') assert.is(view.get(path)?.content, v.content, `commit: ${path}`);
      }
      assert.not.ok(fs.existsSync(join(storeDir, 'refs/app/head.live')), 'no live journal left');
      assert.is((await verify(store, undefined)).problems.length, 0);
    } finally {
      cleanupKernel(mnt);
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
}

test.run();
