import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { commitThroughMount } from '../../src/fuse/client.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { ensureUpper } from '../../src/store/commands/commit.js';
import { remove } from '../../src/store/commands/remove.js';
import { verify } from '../../src/store/commands/verify.js';
import { Store } from '../../src/store/store.js';
import { shAsUser, stratumAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';
import { endUserMounts, fuseUnavailable, tempDir, withMount, fusermountUnavailable, userWork } from './mounts.js';

// Names and paths at the kernel's limits through a FUSE HEAD: a name over NAME_MAX is
// ENAMETOOLONG (never EIO), and a path inside the mount that the kernel accepts works even though
// the same path in the upper dir (store path + head/ + it) is longer than PATH_MAX.
const why = fuseUnavailable();
const mountTest = why === undefined ? test : test.skip;
if (why) console.log(`FUSE long path tests skipped: ${why}`);

let work: string;
let storeDir: string;

test.before.each(async () => {
  if (why) return;
  work = tempDir('stratum-long-');
  storeDir = join(work, 'store');
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'lower/sub'), { recursive: true });
  fs.writeFileSync(join(src, 'lower/sub/f'), 'deep\n');
  fs.writeFileSync(join(src, 'top'), 'top\n');
  const store = await Store.open(storeDir, { create: true });
  await importDirectory(store, src, { label: 'app', tag: 'v1' });
  await ensureUpper(store, (await store.heads.read('app'))!);
});
// rm(1) walks by dir fds: node's rmSync joins whole paths and fails on a tree deeper than PATH_MAX
test.after.each(() => { if (!why) spawnSync('rm', ['-rf', work]); });

const code = (fn: () => unknown): string | undefined => {
  try { fn(); return undefined; } catch (err) { return (err as NodeJS.ErrnoException).code; }
};

/** Runs fn with the process's cwd at dir (relative paths through a mount can be as long as the kernel allows). */
function inDir<T>(dir: string, fn: () => T): T {
  const before = process.cwd();
  process.chdir(dir);
  try {
    return fn();
  } finally {
    process.chdir(before);
  }
}

/** Errors about these paths carry them whole (4 KiB each): the test report shows their start. */
async function shortErrors(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof Error && (err.stack ?? '').length > 2000) {
      const short = (s: string): string => (s.length > 600 ? `${s.slice(0, 300)} ... ${s.slice(-200)}` : s);
      throw new Error(`${short(err.message)} (${err.constructor.name}, ${(err as NodeJS.ErrnoException).code ?? 'no code'})`);
    }
    throw err;
  }
}

const NAME_256 = 'n'.repeat(256);
const NAME_255 = 'm'.repeat(255);

mountTest('a name of 256 bytes is ENAMETOOLONG on create, lookup, rename, mkdir, symlink and link; 255 works', async () => {
  const mnt = join(work, 'mnt');
  await withMount(storeDir, 'app', undefined, mnt, () => {
    for (const dir of ['', 'lower/sub']) {  // the upper root, and a dir only the lower has
      const at = (name: string): string => join(mnt, dir, name);
      assert.is(code(() => fs.lstatSync(at(NAME_256))), 'ENAMETOOLONG', `lookup in /${dir}`);
      assert.is(code(() => fs.openSync(at(NAME_256), 'wx')), 'ENAMETOOLONG', `create in /${dir}`);
      assert.is(code(() => fs.mkdirSync(at(NAME_256))), 'ENAMETOOLONG', `mkdir in /${dir}`);
      assert.is(code(() => fs.symlinkSync('top', at(NAME_256))), 'ENAMETOOLONG', `symlink in /${dir}`);
      assert.is(code(() => fs.linkSync(join(mnt, 'top'), at(NAME_256))), 'ENAMETOOLONG', `link in /${dir}`);
      assert.is(code(() => fs.renameSync(join(mnt, 'top'), at(NAME_256))), 'ENAMETOOLONG', `rename into /${dir}`);
      fs.writeFileSync(at(NAME_255), 'fits\n');
      assert.is(fs.readFileSync(at(NAME_255), 'utf8'), 'fits\n');
      fs.unlinkSync(at(NAME_255));
    }
    assert.is(fs.readFileSync(join(mnt, 'top'), 'utf8'), 'top\n', 'the failed rename moved nothing');
    assert.is(code(() => fs.statSync(join(mnt, 'lower/sub/f'))), undefined);
  });
});

/** A relative path of `total` bytes: dirs of 200-byte names, then a file name filling the rest. */
function longPath(total: number): { dirs: string; file: string } {
  const parts: string[] = [];
  let length = 0;
  for (let i = 0; length + 201 + 100 < total; i++) {
    parts.push(`${String(i).padStart(3, '0')}${'d'.repeat(197)}`);
    length += 201;
  }
  const file = 'f'.repeat(total - length);
  return { dirs: parts.join('/'), file: `${parts.join('/')}/${file}` };
}

mountTest('a path of ~4070 bytes inside the mount works for create, write, read, rename, unlink and a commit; one over PATH_MAX is ENAMETOOLONG', () => shortErrors(async () => {
  const mnt = join(work, 'mnt');
  const { dirs, file } = longPath(4070);
  const renamed = `${file.slice(0, -1)}g`;
  const upperPath = join(storeDir, 'refs/app/head', file);
  assert.ok(Buffer.byteLength(upperPath) > 4096, 'the same path in the upper is longer than PATH_MAX');
  await withMount(storeDir, 'app', undefined, mnt, async (entry) => {
    inDir(mnt, () => {
      fs.mkdirSync(dirs, { recursive: true });
      fs.writeFileSync(file, 'first\n');
      const fd = fs.openSync(file, 'a');
      fs.writeSync(fd, 'second\n');
      fs.closeSync(fd);
      assert.is(fs.readFileSync(file, 'utf8'), 'first\nsecond\n');
      fs.renameSync(file, renamed);
      assert.is(code(() => fs.statSync(file)), 'ENOENT');
      assert.is(fs.readFileSync(renamed, 'utf8'), 'first\nsecond\n');
      fs.writeFileSync(file, Buffer.alloc(100_000, 1));  // large enough to be an object
      fs.symlinkSync('x', `${dirs}/link`);
      fs.unlinkSync(`${dirs}/link`);
      // the kernel refuses a path of PATH_MAX bytes or more before the server sees it
      const over = `${dirs}/${'z'.repeat(250)}/${'z'.repeat(250)}`;
      assert.ok(Buffer.byteLength(over) >= 4096);
      assert.is(code(() => fs.mkdirSync(over, { recursive: true })), 'ENAMETOOLONG');
      assert.is(code(() => fs.writeFileSync(over, '')), 'ENAMETOOLONG');
    });
    const r = await commitThroughMount(entry, 'deep');
    assert.ok(r.id.length === 64);
    inDir(mnt, () => {
      assert.is(fs.readFileSync(renamed, 'utf8'), 'first\nsecond\n', 'HEAD after the commit');
      assert.is(fs.statSync(file).size, 100_000);
      fs.unlinkSync(renamed);
      assert.is(code(() => fs.statSync(renamed)), 'ENOENT', 'unlink of a committed (now lower) file');
    });
  });
  // the commit holds the deep files: a tag mount of it reads them back
  await withMount(storeDir, 'app', 'deep', join(work, 'tag'), () => inDir(join(work, 'tag'), () => {
    assert.is(fs.readFileSync(renamed, 'utf8'), 'first\nsecond\n');
    assert.equal(fs.readFileSync(file), Buffer.alloc(100_000, 1));
  }));
  // and HEAD, remounted, keeps the deletion made after the commit
  await withMount(storeDir, 'app', undefined, mnt, () => inDir(mnt, () => {
    assert.is(code(() => fs.statSync(renamed)), 'ENOENT');
    assert.is(fs.statSync(file).size, 100_000);
  }));
  const store = await Store.open(storeDir);
  assert.equal((await verify(store, undefined)).problems, []);
  // HEAD's upper still holds the deep whiteout: removing the label removes it all
  await remove(store, 'app', { force: true });
  assert.not.ok(fs.existsSync(join(storeDir, 'refs/app')));
  assert.equal(fs.readdirSync(join(storeDir, 'tmp')).filter((n) => n.startsWith('removed-')), []);
}));

const userWhy = why ?? userTestsUnavailable() ?? fusermountUnavailable();
(userWhy === undefined ? test : test.skip)('an ordinary user\'s FUSE HEAD: long names are ENAMETOOLONG, a deep path works and commits', async () => {
  if (userWhy) console.log(`ordinary-user long path test skipped: ${userWhy}`);
  const user = testUser();
  const { dir, mnt, state, options } = userWork(user, 'stratum-long-user-');
  const { dirs, file } = longPath(4070);
  try {
    let r = stratumAsUser(user, ['init', 'mine'], options);
    assert.is(r.status, 0, r.stderr);
    r = stratumAsUser(user, ['mount', 'mine', mnt, '--mode', 'fuse'], options);
    assert.is(r.status, 0, r.stderr);
    const s = shAsUser(user, `cd '${mnt}' && mkdir -p "$D" && echo deep > "$F" && mv "$F" "$F.2" && cat "$F.2" && ` +
      `{ touch ${NAME_256} 2>&1 || true; } && echo v2 > .stratum/commit && cat .stratum/commit && rm "$F.2" && ls "$D" | wc -l`,
      { ...options, env: { ...options.env, D: dirs, F: file } });
    assert.is(s.status, 0, s.stderr.slice(0, 500));
    const lines = s.stdout.trim().split('\n');
    assert.is(lines[0], 'deep');
    assert.match(lines[1]!, /File name too long/);
    assert.match(lines[2]!, /^mine:v2 [0-9a-f]{64}/);
    assert.is(lines[3], '0');
    assert.ok(fs.readFileSync(join(dir, 'store/refs/mine/head.toml'), 'utf8').includes('xattr_namespace = "user"'));
    r = stratumAsUser(user, ['unmount', 'mine'], options);
    assert.is(r.status, 0, r.stderr);
    r = stratumAsUser(user, ['verify'], options);
    assert.is(r.status, 0, r.stdout + r.stderr);
  } finally {
    await endUserMounts(state, mnt, dir);
  }
});

test.run();
