// ControlFs: the control dir as a filesystem of its own (what a kernel-mode mount puts on
// <mnt>/.stratum), served in this process with fake hooks and used as a user would: ls, cat, sh,
// node's fs, and the client's commitThroughMount. The server answers on this process's JS thread,
// so every client here is asynchronous (a child process or fs.promises): a synchronous call would
// block the thread that has to answer it. For the same reason nothing is spawned while this process
// holds a control file open (the child's exec flushes it, and spawn waits for the exec).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { applyThroughMount, commitThroughMount } from '../../src/fuse/client.js';
import { ControlFs, controlMountOptions } from '../../src/mount/control-fs.js';
import type { ControlHooks } from '../../src/mount/control.js';
import { mount } from '../../src/native/fuse.js';
import { StratumError, wrapSystemError } from '../../src/store/error.js';
import type { MountEntry } from '../../src/store/mount-state.js';
import { NOBODY, fuseUnavailable, tempDir } from './mounts.js';

const run = promisify(execFile);
const ID = 'a'.repeat(64);

/** stdout of a command, or the error it failed with. */
async function sh(script: string, user?: { uid: number; gid: number }): Promise<string> {
  const cmd = user ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', 'sh', '-c', script] : ['sh', '-c', script];
  return (await run(cmd[0]!, cmd.slice(1))).stdout;
}

/** The errno code an fs.promises call fails with, or 'ok'. */
async function code(p: Promise<unknown>): Promise<string> {
  try { await p; return 'ok'; } catch (e) { return (e as NodeJS.ErrnoException).code ?? String(e); }
}

function mountedAt(mnt: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt);
}

/** Mounts a ControlFs on <dir>/.stratum for fn(dir, ctl); unmounts and removes the dirs on every path. */
async function withControlFs(hooks: ControlHooks, readOnly: boolean, fn: (dir: string, ctl: string) => Promise<void>): Promise<void> {
  const dir = tempDir('stratum-control-');
  const ctl = join(dir, '.stratum');
  fs.mkdirSync(ctl);
  const session = mount(ctl, new ControlFs(hooks, { readOnly }), controlMountOptions('app'));
  try {
    await fn(dir, ctl);
  } finally {
    await session.unmount();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.not.ok(mountedAt(ctl), 'unmounted');
}

const skip = fuseUnavailable();
if (skip) {
  console.log(`skipping ControlFs tests: ${skip}`);
  test.skip('ControlFs (unavailable)', () => {});
} else {
  test('ls shows apply, commit and status; cat status gives the hook\'s text, fresh at every open', async () => {
    let status = 'label app\nchanged 0\n';
    await withControlFs({ status: () => status }, false, async (_dir, ctl) => {
      assert.is(await sh(`ls ${ctl}`), 'apply\ncommit\nstatus\n');
      assert.is(await sh(`cat ${ctl}/status`), 'label app\nchanged 0\n');
      status = 'label app\nchanged 3\n';
      assert.is(await sh(`cat ${ctl}/status`), 'label app\nchanged 3\n');
      assert.is(await sh(`cd ${ctl} && stat -c '%n %A' . apply commit status`),
        '. dr-xr-xr-x\napply -rw-r--r--\ncommit -rw-r--r--\nstatus -r--r--r--\n');
      assert.is(await sh(`cat ${ctl}/commit`), '', 'nothing committed yet');
    });
  });

  test('writing a tag into commit calls the hook with it, and commit then reads the answer', async () => {
    const calls: string[] = [];
    const hooks: ControlHooks = {
      status: () => '',
      commit: async (tag) => { calls.push(tag); return `app:${tag || ID} ${ID}\n`; },
    };
    await withControlFs(hooks, false, async (_dir, ctl) => {
      await sh(`echo v1 > ${ctl}/commit`);
      assert.equal(calls, ['v1']);
      assert.is(await sh(`cat ${ctl}/commit`), `app:v1 ${ID}\n`);
      await sh(`echo > ${ctl}/commit`);
      assert.equal(calls, ['v1', ''], 'a blank line commits tagged by the id');
      assert.is(await sh(`cat ${ctl}/commit`), `app:${ID} ${ID}\n`);
    });
  });

  test('a hook failing with TAG_EXISTS fails the write with EEXIST and its message reads back', async () => {
    const hooks: ControlHooks = {
      status: () => '',
      commit: async (tag) => { throw new StratumError('TAG_EXISTS', `tag app:${tag} exists; choose another tag`); },
    };
    await withControlFs(hooks, false, async (_dir, ctl) => {
      assert.is(await code(fs.promises.writeFile(join(ctl, 'commit'), 'v1\n')), 'EEXIST');
      assert.is(await sh(`cat ${ctl}/commit`), 'error: tag app:v1 exists; choose another tag\n');
    });
  });

  test('each kind of hook error has its errno: EINVAL, ENOENT, EBUSY, the system\'s errno underneath, else EIO', async () => {
    let failWith: Error = new Error('unset');
    const hooks: ControlHooks = { status: () => '', commit: async () => { throw failWith; }, apply: async () => { throw failWith; } };
    await withControlFs(hooks, false, async (_dir, ctl) => {
      const cases: Array<[Error, string]> = [
        [new StratumError('BAD_NAME', 'bad tag name "a b"'), 'EINVAL'],
        [new StratumError('USAGE', 'write "<tag> [--discard|--keep]" to apply'), 'EINVAL'],
        [new StratumError('AMBIGUOUS_REF', 'app@12 names several commits'), 'EINVAL'],
        [new StratumError('NOT_FOUND', 'no tag app:v9'), 'ENOENT'],
        [new StratumError('BUSY', 'HEAD has uncommitted changes'), 'EBUSY'],
        [new StratumError('NO_SPACE', 'the store is full'), 'ENOSPC'],
        [wrapSystemError(Object.assign(new Error('ENAMETOOLONG: name too long'), { code: 'ENAMETOOLONG', errno: -36 }), 'reading the upper'), 'ENAMETOOLONG'],
        [wrapSystemError(Object.assign(new Error('EROFS: read-only'), { code: 'EROFS', errno: -30 }), 'writing a ref'), 'EROFS'],
        [new StratumError('IO', 'reading an image: truncated'), 'EIO'],
        [new Error('something broke'), 'EIO'],
      ];
      for (const file of ['commit', 'apply']) {
        for (const [err, errno] of cases) {
          failWith = err;
          assert.is(await code(fs.promises.writeFile(join(ctl, file), 'v9\n')), errno, `${file}: ${err.message}`);
          assert.is(await sh(`cat ${ctl}/${file}`), `error: ${err.message}\n`);
        }
      }
    });
  });

  test('a read-only control dir has no apply, and writing commit answers EROFS', async () => {
    const calls: string[] = [];
    const hooks: ControlHooks = { status: () => 'mode kernel read-only\n', commit: async (tag) => { calls.push(tag); return ''; } };
    await withControlFs(hooks, true, async (_dir, ctl) => {
      assert.is(await sh(`ls ${ctl}`), 'commit\nstatus\n');
      assert.is(await code(fs.promises.writeFile(join(ctl, 'commit'), 'v2\n')), 'EROFS');
      assert.is(await code(fs.promises.writeFile(join(ctl, 'apply'), 'v1\n')), 'EACCES', 'no apply to write: creating it is refused');
      assert.equal(calls, []);
      assert.is(await sh(`cat ${ctl}/status`), 'mode kernel read-only\n');
      assert.is(await sh(`stat -c %A ${ctl}/commit`), '-r--r--r--\n');
    });
  });

  for (const readOnly of [false, true]) {
    test(`nothing is created, removed or renamed in the dir (${readOnly ? 'read-only' : 'read-write'}): EACCES or EPERM, as in /.stratum of a FUSE mount`, async () => {
      await withControlFs({ status: () => 'ok\n', commit: async () => '' }, readOnly, async (_dir, ctl) => {
        const p = fs.promises;
        const got = {
          create: await code(p.writeFile(join(ctl, 'other'), 'x')),
          mkdir: await code(p.mkdir(join(ctl, 'd'))),
          symlink: await code(p.symlink('status', join(ctl, 'l'))),
          link: await code(p.link(join(ctl, 'status'), join(ctl, 'l'))),
          unlink: await code(p.unlink(join(ctl, 'status'))),
          rename: await code(p.rename(join(ctl, 'status'), join(ctl, 'x'))),
          writeStatus: await code(p.writeFile(join(ctl, 'status'), 'x')),
          chmod: await code(p.chmod(join(ctl, 'commit'), 0o777)),
        };
        assert.equal(got, { create: 'EACCES', mkdir: 'EACCES', symlink: 'EACCES', link: 'EACCES', unlink: 'EPERM', rename: 'EPERM', writeStatus: 'EACCES', chmod: 'EPERM' });
        assert.is(await sh(`ls ${ctl}`), readOnly ? 'commit\nstatus\n' : 'apply\ncommit\nstatus\n');
      });
    });
  }

  test('only the owner writes commit: another user reads status but gets EACCES writing', async () => {
    const calls: string[] = [];
    await withControlFs({ status: () => 'ok\n', commit: async (tag) => { calls.push(tag); return ''; } }, false, async (_dir, ctl) => {
      assert.is(await sh(`cat ${ctl}/status`, NOBODY), 'ok\n');
      const err = await sh(`echo v1 > ${ctl}/commit`, NOBODY).then(() => '', (e: { stderr: string }) => e.stderr);
      assert.match(err, /Permission denied/);
      assert.equal(calls, []);
    });
  });

  test('status answers while a commit hook is still running: the control fs never waits on it', async () => {
    let started!: () => void;
    const hookStarted = new Promise<void>((r) => { started = r; });
    let release!: () => void;
    const released = new Promise<void>((r) => { release = r; });
    const hooks: ControlHooks = {
      status: () => 'committing\n',
      commit: async (tag) => { started(); await released; return `app:${tag} ${ID}\n`; },
    };
    await withControlFs(hooks, false, async (_dir, ctl) => {
      // the writer is another process: a child forked from here while this process held the
      // file open would flush it on exec, and that flush needs the thread spawn blocks
      const writing = sh(`echo slow > ${ctl}/commit`);
      try {
        await hookStarted;
        assert.is(await sh(`cat ${ctl}/status`), 'committing\n');
        assert.is(await sh(`ls ${ctl}`), 'apply\ncommit\nstatus\n');
        assert.is(await sh(`cat ${ctl}/commit`), '', 'no result before the hook returns');
      } finally {
        release();
        await writing;
      }
      assert.is(await sh(`cat ${ctl}/commit`), `app:slow ${ID}\n`);
    });
  });

  test('commitThroughMount and applyThroughMount work on a dir whose .stratum is a ControlFs', async () => {
    const applied: string[] = [];
    let exists = false;
    const hooks: ControlHooks = {
      status: () => '',
      commit: async (tag) => {
        if (exists) throw new StratumError('TAG_EXISTS', `tag app:${tag} exists; choose another tag (nothing was committed)`);
        return `app:${tag} ${ID}\n`;
      },
      apply: async (args) => { applied.push(args); return `app ${ID} kept\n`; },
    };
    await withControlFs(hooks, false, async (dir) => {
      const entry: MountEntry = { store: '/nonexistent', label: 'app', ref: 'HEAD', commit: '', mountpoint: dir, pid: process.pid, mode: 'fuse', started: new Date().toISOString() };
      assert.equal(await commitThroughMount(entry, 'v2'), { tag: 'v2', id: ID });
      exists = true;
      const err = await commitThroughMount(entry, 'v2').then(() => undefined, (e: unknown) => e);
      assert.instance(err, StratumError);
      assert.is((err as StratumError).code, 'TAG_EXISTS');
      assert.is((err as StratumError).message, 'tag app:v2 exists; choose another tag (nothing was committed)');
      assert.equal(await applyThroughMount(entry, 'app:v1', { keep: true }), { to: ID, changesWere: 'kept' });
      assert.equal(applied, ['app:v1 --keep']);
    });
  });
}

test.run();
