// A file written to while it is imported: the import either stores one consistent state of it or
// refuses with SOURCE_CHANGED naming the path; never a commit whose object is not what it names.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { S_IFMT, S_IFREG } from '../../src/store/image/erofs.js';
import { FileSource, ImageReader, walkImage } from '../../src/store/image/read.js';
import { Store } from '../../src/store/store.js';
import { expectError } from '../helpers/assert.js';
import { stratum } from '../helpers/cli.js';
import { withTempDir } from '../helpers/dirs.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';

const MB = 1 << 20;

/**
 * Appends to `file` without pause (a shell builtin, no process per write) until killed, or about
 * `lines` lines; at a raised priority where we may, so a loaded machine does not pause it.
 */
function appender(file: string, lines = 1e9): ChildProcess {
  const script = `i=0; while [ $i -lt ${lines} ]; do echo ${'x'.repeat(200)}; i=$((i+1)); done >> "$1"`;
  const raised = process.getuid?.() === 0;
  return spawn(raised ? 'nice' : 'sh', [...(raised ? ['-n', '-10', 'sh'] : []), '-c', script, 'sh', file], { stdio: 'ignore' });
}

/** Returns once the writer has visibly grown the file. */
async function growing(file: string): Promise<void> {
  const start = statSync(file).size;
  while (statSync(file).size === start) await new Promise((resolve) => setTimeout(resolve, 10));
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const done = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await done;
}

/** Every regular file of a commit: the image's size equals the size of the object it names. */
function sizesAgree(store: Store, id: string): void {
  const source = new FileSource(store.commits.imagePath(id));
  try {
    const reader = ImageReader.open(source);
    walkImage(reader, (path, attr, nid) => {
      if ((attr.mode & S_IFMT) !== S_IFREG) return;
      const digest = reader.objectOf(nid);
      if (digest) assert.is(statSync(store.objects.path(digest)).size, attr.size, path);
    });
  } finally {
    source.close();
  }
}

test('stratum import of an 80 MB file appended to all the while fails with one line naming it, and commits nothing', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'other'), pseudoRandomBytes(300_000, 1));
    writeFileSync(join(src, 'growing.log'), pseudoRandomBytes(80 * MB, 2));
    const store = join(dir, 'store');
    const writer = appender(join(src, 'growing.log'));
    let r;
    try {
      await growing(join(src, 'growing.log'));
      r = stratum(['import', src, '--label', 'app', '--store', store]);
    } finally {
      await stop(writer);
    }
    assert.is(r.status, 1, r.stderr);
    assert.match(r.stderr, /growing\.log changed while it was being stored/);
    assert.not.match(r.stderr, /internal error|\n\s+at /);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    const s = await Store.open(store);
    assert.equal(await s.commits.list(), []);
    assert.equal(await s.tags.labels(), []);
    const objects = [];
    for await (const d of s.objects.list()) objects.push(d);
    assert.equal(objects, [], 'nothing of the failed import was published');
    assert.equal((await verify(s, undefined)).problems, []);
  }));

test('importDirectory gives SOURCE_CHANGED for a file that keeps changing', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'growing.log'), pseudoRandomBytes(80 * MB, 3));
    const store = await Store.open(join(dir, 'store'), { create: true });
    const writer = appender(join(src, 'growing.log'));
    try {
      await growing(join(src, 'growing.log'));
      const err = await expectError(importDirectory(store, src, { label: 'app' }), 'SOURCE_CHANGED');
      assert.ok(err.message.includes(join(src, 'growing.log')), err.message);
    } finally {
      await stop(writer);
    }
    assert.equal(await store.commits.list(), []);
  }));

test('a file written to for a while: whatever import stores is consistent, verify is clean', () =>
  withTempDir(async (dir) => {
    // small (read whole) and large (copied) files, written to while the import starts
    const src = join(dir, 'src');
    mkdirSync(src);
    const store = await Store.open(join(dir, 'store'), { create: true });
    for (let round = 0; round < 4; round++) {
      writeFileSync(join(src, 'big.bin'), pseudoRandomBytes(20 * MB + round, 10 + round));
      writeFileSync(join(src, 'small.log'), pseudoRandomBytes(200_000, 20 + round));
      const writers = [appender(join(src, 'big.bin'), 20_000), appender(join(src, 'small.log'), 20_000)];
      try {
        await new Promise((resolve) => setTimeout(resolve, 50 * round));
        try {
          const { id } = await importDirectory(store, src, { label: `r${round}` });
          sizesAgree(store, id);
        } catch (err) {
          assert.is((err as { code?: string }).code, 'SOURCE_CHANGED', String(err));
        }
      } finally {
        await Promise.all(writers.map(stop));
      }
    }
    assert.equal((await verify(store, undefined)).problems, []);
    // once nothing writes, the import succeeds and stores the file as it is now
    const { id } = await importDirectory(store, src, { label: 'still' });
    sizesAgree(store, id);
    assert.equal((await verify(store, undefined)).problems, []);
  }));

test.run();
