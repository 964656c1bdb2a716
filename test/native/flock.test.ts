import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flock, tryFlock, type LockMode } from '../../src/native/files.js';

const dir = mkdtempSync(join(tmpdir(), 'stratum-flock-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

let serial = 0;
function lockFile(): string {
  const path = join(dir, `lock${serial++}`);
  writeFileSync(path, '');
  return path;
}

function lockError(fn: () => unknown): NodeJS.ErrnoException {
  try {
    fn();
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  throw new Error('expected the lock attempt to fail');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Another process holding a lock on `path` until release() (or 5 s, or until it is killed).
interface Holder { release(): Promise<void>; child: ChildProcessWithoutNullStreams }

async function holdInChild(path: string, mode: LockMode): Promise<Holder> {
  const filesModule = new URL('../../src/native/files.js', import.meta.url).href;
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import { openSync } from 'node:fs';
    import { tryFlock } from ${JSON.stringify(filesModule)};
    const fd = openSync(${JSON.stringify(path)}, 'r');
    tryFlock(fd, ${JSON.stringify(mode)});
    process.stdout.write('held\\n');
    const release = () => { tryFlock(fd, 'unlock'); process.stdout.write('released\\n'); process.exit(0); };
    process.stdin.once('data', release);
    setTimeout(release, 5000); // so a flock() that wrongly blocks the event loop fails instead of hanging
  `]);
  child.stderr.pipe(process.stderr);
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    lines.push(...d.split('\n').filter(Boolean));
    waiters.splice(0).forEach((w) => w());
  });
  const waitFor = (line: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => (lines.includes(line) ? resolve() : waiters.push(check));
      child.once('exit', (code) => reject(new Error(`lock holder exited (${code}) before '${line}'`)));
      check();
    });
  await waitFor('held');
  return {
    child,
    release: async () => {
      child.stdin.write('go\n');
      await waitFor('released');
    },
  };
}

test('a lock held by another process makes tryFlock fail at once with EAGAIN', async () => {
  const path = lockFile();
  const holder = await holdInChild(path, 'exclusive');
  const fd = openSync(path, 'r');
  try {
    for (const mode of ['exclusive', 'shared'] as const) {
      const err = lockError(() => tryFlock(fd, mode));
      assert.is(err.code, 'EAGAIN');
      assert.is(err.errno, -11);
      assert.is(err.syscall, 'flock');
      assert.is(err.message, 'EAGAIN: resource temporarily unavailable, flock');
    }
    await holder.release();
    tryFlock(fd, 'exclusive');
  } finally {
    closeSync(fd);
    holder.child.kill('SIGKILL');
  }
});

test('flock waits for the holder to release, while the event loop keeps running', async () => {
  const path = lockFile();
  const holder = await holdInChild(path, 'exclusive');
  const fd = openSync(path, 'r');
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  try {
    let released = false;
    let acquiredBeforeRelease: boolean | undefined;
    const acquired = flock(fd, 'exclusive').then(() => { acquiredBeforeRelease = !released; });
    await sleep(300);
    assert.is(acquiredBeforeRelease, undefined, 'still waiting while the child holds the lock');
    assert.ok(ticks >= 10, `timers kept firing while flock waited (${ticks} ticks)`);
    released = true;
    await holder.release();
    await acquired;
    assert.is(acquiredBeforeRelease, false, 'acquired only after the release');
    const other = openSync(path, 'r');
    try {
      assert.is(lockError(() => tryFlock(other, 'shared')).code, 'EAGAIN', 'and we really hold it');
    } finally {
      closeSync(other);
    }
  } finally {
    clearInterval(timer);
    closeSync(fd);
    holder.child.kill('SIGKILL');
  }
});

test('shared locks coexist; an exclusive one must wait for them', async () => {
  const path = lockFile();
  const holder = await holdInChild(path, 'shared');
  const shared = openSync(path, 'r');
  const exclusive = openSync(path, 'r');
  try {
    tryFlock(shared, 'shared');
    await flock(shared, 'shared');
    assert.is(lockError(() => tryFlock(exclusive, 'exclusive')).code, 'EAGAIN');
    await holder.release();
    assert.is(lockError(() => tryFlock(exclusive, 'exclusive')).code, 'EAGAIN', 'our own shared lock still counts');
    tryFlock(shared, 'unlock');
    tryFlock(exclusive, 'exclusive');
  } finally {
    closeSync(shared);
    closeSync(exclusive);
    holder.child.kill('SIGKILL');
  }
});

test('flock on a bad fd rejects with EBADF instead of throwing', async () => {
  const pending = flock(1_000_000, 'exclusive');
  assert.instance(pending, Promise);
  const err = await pending.then(() => undefined, (e: NodeJS.ErrnoException) => e);
  assert.ok(err, 'the promise rejected');
  assert.is(err!.code, 'EBADF');
  assert.is(err!.syscall, 'flock');
  assert.is(err!.errno, -9);
  assert.is(lockError(() => tryFlock(1_000_000, 'unlock')).code, 'EBADF');
});

test('bad arguments throw TypeError or RangeError synchronously', () => {
  const bad = (v: unknown) => v as never;
  const path = lockFile();
  const fd = openSync(path, 'r');
  try {
    assert.instance(lockError(() => tryFlock(fd, bad('EXCLUSIVE'))), TypeError);
    assert.is(lockError(() => tryFlock(fd, bad('EXCLUSIVE'))).code, 'ERR_INVALID_ARG_VALUE');
    assert.instance(lockError(() => tryFlock(fd, bad(2))), TypeError);
    assert.instance(lockError(() => tryFlock(bad('0'), 'shared')), TypeError);
    assert.instance(lockError(() => tryFlock(-1, 'shared')), RangeError);
    assert.instance(lockError(() => flock(fd, bad(undefined))), TypeError);
    assert.instance(lockError(() => flock(1.5, 'shared')), RangeError);
  } finally {
    closeSync(fd);
  }
});

test.run();
