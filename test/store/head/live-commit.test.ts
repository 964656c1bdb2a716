import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, existsSync, fstatSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { commitHead, headPaths, ensureUpper, recoverHead } from '../../../src/store/commands/commit.js';
import { commitLive, type LiveMount } from '../../../src/store/commands/live-commit.js';
import { importDirectory } from '../../../src/store/commands/import.js';
import { verify } from '../../../src/store/commands/verify.js';
import { Store } from '../../../src/store/store.js';
import { pseudoRandomBytes } from '../../helpers/bytes.js';
import { runNode, withTempDir } from '../../helpers/dirs.js';
import { commitView } from './kernel.js';
import { contentId } from '../image/view.js';

// The store side of a live commit in kernel mode (src/store/commands/live-commit.ts), with a mount
// that only records what it is asked (test/kernel/live.test.ts does it with the real kernel). A file
// open for writing when the commit starts goes on into the new HEAD as the same inode; the commit
// stores it as it was; a commit whose server died after the split is finished by recoverHead.

async function prepare(dir: string): Promise<{ store: Store; upper: string; base: string }> {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'd'), { recursive: true });
  writeFileSync(join(src, 'd', 'old'), 'old\n');
  const store = await Store.open(join(dir, 'store'), { create: true });
  const { id } = await importDirectory(store, src, { label: 'app' });
  await ensureUpper(store, (await store.heads.read('app'))!);
  const upper = headPaths(store, 'app').upper;
  mkdirSync(join(upper, 'd'));
  writeFileSync(join(upper, 'd', 'log'), pseudoRandomBytes(10_000, 1));
  linkSync(join(upper, 'd', 'log'), join(upper, 'log-too'));
  writeFileSync(join(upper, 'plain'), 'plain\n');
  return { store, upper, base: id };
}

/** A mount that records calls; `failAt` makes one of them throw (the server dying there). */
function fakeMount(calls: string[], failAt?: 'layer' | 'rebase'): LiveMount {
  return {
    layer: async (_base, upper, next) => {
      calls.push(`layer ${upper.split('/').pop()} under ${next.split('/').pop()}`);
      if (failAt === 'layer') throw new Error('layer failed');
      return { sealed: true };
    },
    rebase: async (commit, upper) => {
      calls.push(`rebase ${commit.slice(0, 8)} with ${upper.split('/').pop()}`);
      if (failAt === 'rebase') throw new Error('server died');
    },
  };
}

test('a file open for writing goes on into the new HEAD as the same inode; the commit has it as it was', () =>
  withTempDir(async (dir) => {
    const { store, upper } = await prepare(dir);
    const fd = openSync(join(upper, 'd', 'log'), 'r+');
    try {
      const before = readFileSync(join(upper, 'd', 'log'));
      const calls: string[] = [];
      const r = await commitLive(store, { label: 'app', tag: 'v1', mount: fakeMount(calls) });
      assert.equal(calls, ['layer head under head.swap', `rebase ${r.id.slice(0, 8)} with head.swap`]);
      assert.is(r.keptWriters, 1);
      // the new upper has the open inode under both its names; nothing else
      const fdIno = fstatSync(fd).ino;
      assert.is(lstatSync(join(upper, 'd', 'log')).ino, fdIno);
      assert.is(lstatSync(join(upper, 'log-too')).ino, fdIno);
      assert.not.ok(existsSync(join(upper, 'plain')), 'committed files left the upper');
      // later writes land in HEAD, never in the commit's object
      writeSync(fd, Buffer.from('AFTER'), 0, 5, 10_000);
      assert.ok(readFileSync(join(upper, 'log-too')).subarray(10_000).equals(Buffer.from('AFTER')));
      const view = commitView(store, r.id);
      assert.is(view.get('/d/log')?.content, contentId(before), 'the commit has the file as it was');
      assert.is(view.get('/log-too')?.content, contentId(before));
      assert.is(view.get('/plain')?.content, contentId(Buffer.from('plain\n')));
      assert.is((await store.heads.read('app'))!.base, r.id);
      assert.is((await verify(store, undefined)).problems.length, 0, 'verify clean');
      assert.not.ok(existsSync(headPaths(store, 'app').live), 'no journal left');
    } finally {
      closeSync(fd);
    }
  }));

test('a layer that fails leaves HEAD as it was', () =>
  withTempDir(async (dir) => {
    const { store, upper, base } = await prepare(dir);
    const calls: string[] = [];
    await commitLive(store, { label: 'app', tag: 'v1', mount: fakeMount(calls, 'layer') }).then(
      () => assert.unreachable('should fail'), (err: Error) => assert.match(err.message, 'layer failed'));
    assert.is((await store.heads.read('app'))!.base, base);
    assert.ok(existsSync(join(upper, 'plain')));
    assert.not.ok(existsSync(headPaths(store, 'app').swap));
    assert.not.ok(existsSync(headPaths(store, 'app').live));
    assert.is(await store.tags.read('app', 'v1'), undefined);
  }));

test('a server dying after the split: recovery finishes the commit, writes made since stay in HEAD', () =>
  withTempDir(async (dir) => {
    const { store, upper } = await prepare(dir);
    const paths = headPaths(store, 'app');
    const calls: string[] = [];
    const mount = fakeMount(calls, 'rebase');
    // writes through the new overlay go to head.swap: one made "while" the commit runs
    const layer = mount.layer;
    mount.layer = async (base, u, next) => {
      const r = await layer(base, u, next);
      writeFileSync(join(next, 'written-since'), 'new\n');
      return r;
    };
    await commitLive(store, { label: 'app', tag: 'v1', mount }).then(
      () => assert.unreachable('should fail'), (err: Error) => assert.match(err.message, 'server died'));
    // the commit point was passed before the rebase: the tag is there; the journal finishes the rest
    assert.is(await recoverHead(store, 'app'), 'rolled-forward');
    const tag = await store.tags.read('app', 'v1');
    assert.ok(tag && tag.kind === 'id');
    const id = tag.kind === 'id' ? tag.id : '';
    assert.is((await store.heads.read('app'))!.base, id);
    assert.is(readFileSync(join(upper, 'written-since'), 'utf8'), 'new\n');
    assert.not.ok(existsSync(join(upper, 'plain')));
    assert.is(commitView(store, id).get('/plain')?.content, contentId(Buffer.from('plain\n')));
    assert.not.ok(existsSync(paths.live));
    assert.not.ok(existsSync(paths.swap));
    assert.is((await verify(store, undefined)).problems.length, 0);
  }));

const worker = new URL('./live-worker.js', import.meta.url).pathname;

test('killed before the switch: recovery rolls the split back; what the old mount wrote meanwhile stays', () =>
  withTempDir(async (dir) => {
    const { store, upper, base } = await prepare(dir);
    const paths = headPaths(store, 'app');
    const fd = openSync(join(upper, 'd', 'log'), 'r+');  // a writer: its inode is linked into head.swap
    try {
      const exit = await runNode(worker, [store.root, 'app', 'layer', 'v1']);
      assert.is(exit.signal, 'SIGKILL');
      assert.ok(existsSync(paths.live) && existsSync(join(paths.swap, 'd', 'log')), 'split prepared, not switched');
    } finally {
      closeSync(fd);
    }
    // the old overlay went on: the user saved the file by rename and removed another
    writeFileSync(join(upper, 'd', 'log.tmp'), 'saved\n');
    renameSync(join(upper, 'd', 'log.tmp'), join(upper, 'd', 'log'));
    unlinkSync(join(upper, 'plain'));
    assert.is(await recoverHead(store, 'app'), 'rolled-back');
    assert.not.ok(existsSync(paths.live) || existsSync(paths.swap));
    assert.is(readFileSync(join(upper, 'd', 'log'), 'utf8'), 'saved\n');
    assert.not.ok(existsSync(join(upper, 'plain')));
    assert.is((await store.heads.read('app'))!.base, base);
    assert.is(await store.tags.read('app', 'v1'), undefined);
  }));

test('killed at the commit point: recovery finishes it; verify clean', () =>
  withTempDir(async (dir) => {
    const { store, upper } = await prepare(dir);
    const exit = await runNode(worker, [store.root, 'app', 'rebase', 'v1']);
    assert.is(exit.signal, 'SIGKILL');
    assert.is(await recoverHead(store, 'app'), 'rolled-forward');
    const tag = await store.tags.read('app', 'v1');
    assert.ok(tag && tag.kind === 'id' && (await store.heads.read('app'))!.base === tag.id);
    assert.not.ok(existsSync(join(upper, 'plain')), 'committed');
    assert.is((await verify(store, undefined)).problems.length, 0);
  }));

test('an upper file open for writing outside any mount: commit refuses (BUSY) rather than make it an object', () =>
  withTempDir(async (dir) => {
    const { store, upper, base } = await prepare(dir);
    const fd = openSync(join(upper, 'plain'), 'a');
    try {
      await commitHead(store, { label: 'app', tag: 'v1' }).then(() => assert.unreachable('should refuse'), (err: Error) => {
        assert.match(err.message, 'open for writing');
        assert.match(err.message, '/plain');
      });
      assert.is((await store.heads.read('app'))!.base, base);
    } finally {
      closeSync(fd);
    }
    assert.ok((await commitHead(store, { label: 'app', tag: 'v1' })).id);
  }));

test.run();
