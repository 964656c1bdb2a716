import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collectGarbage } from '../../src/store/commands/gc.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { remove } from '../../src/store/commands/remove.js';
import { StratumError } from '../../src/store/error.js';
import { MountState, type MountEntry } from '../../src/store/mount-state.js';
import { Store } from '../../src/store/store.js';
import { withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';

const deadPid = (): number => spawnSync(process.execPath, ['-e', '']).pid!;

function entry(store: Store, label: string, commit: string, pid: number, mountpoint: string): MountEntry {
  return { store: store.root, label, ref: 'HEAD', commit, mountpoint, pid, mode: 'fuse', started: new Date().toISOString() };
}

test('a mounted label cannot be removed; a stale entry (dead server) does not block', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const mounts = new MountState(join(dir, 'run', 'state'));
    const { id } = await importDirectory(store, makeTree(join(dir, 't'), { f: 'x' }), { label: 'app' });
    await mounts.claim(entry(store, 'app', id, process.pid, '/mnt/app'));
    try {
      await remove(store, 'app', { mounts });
      assert.unreachable('removed a mounted label');
    } catch (err) {
      assert.instance(err, StratumError);
      assert.is((err as StratumError).code, 'BUSY');
      assert.match((err as Error).message, /mounted at \/mnt\/app; run `stratum unmount \/mnt\/app` first/);
    }
    await mounts.update(() => [entry(store, 'app', id, deadPid(), '/mnt/app')]);
    assert.ok((await mounts.list())[0]!.stale);
    await remove(store, 'app', { mounts });
    assert.equal(await store.tags.labels(), []);
  }));

test('gc keeps a mounted commit that nothing else names', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const mounts = new MountState(join(dir, 'run', 'state'));
    const { id } = await importDirectory(store, makeTree(join(dir, 't'), { big: 10_000 }), { label: 'app', tag: 'v1' });
    await importDirectory(store, makeTree(join(dir, 'u'), { other: 'y' }), { label: 'keep' });
    await mounts.claim({ ...entry(store, 'app', id, process.pid, '/mnt/app-v1'), ref: 'v1' });
    await store.tags.remove('app', 'v1');
    await store.tags.remove('app', id);
    await (await import('node:fs/promises')).rm(join(dir, 's', 'refs', 'app'), { recursive: true });
    const gc = await collectGarbage(store, { mounts });
    assert.is(gc.commits, 0, 'the mounted commit stays');
    assert.ok(await store.commits.has(id));
    await mounts.remove('/mnt/app-v1');
    assert.is((await collectGarbage(store, { mounts })).commits, 1, 'and goes once unmounted');
  }));

test('two live mounts on one mountpoint, or two HEADs of a label, are refused; stale ones are replaced', () =>
  withTempDir(async (dir) => {
    const store = await Store.open(join(dir, 's'), { create: true });
    const mounts = new MountState(join(dir, 'run', 'state'));
    await mounts.claim(entry(store, 'a', 'a'.repeat(64), process.pid, '/mnt/x'));
    try {
      await mounts.claim(entry(store, 'b', 'b'.repeat(64), process.pid, '/mnt/x'));
      assert.unreachable();
    } catch (err) {
      assert.is((err as StratumError).code, 'BUSY');
    }
    try {
      await mounts.claim(entry(store, 'a', 'a'.repeat(64), process.pid, '/mnt/y'));
      assert.unreachable('a second HEAD of label a');
    } catch (err) {
      assert.match((err as Error).message, /HEAD of a is already mounted at \/mnt\/x/);
    }
    await mounts.update(() => [entry(store, 'a', 'a'.repeat(64), deadPid(), '/mnt/x')]);
    assert.equal(await mounts.claim(entry(store, 'a', 'a'.repeat(64), process.pid, '/mnt/z')), ['/mnt/x'], 'the stale HEAD is dropped and named');
    assert.equal((await mounts.list()).map((m) => m.mountpoint), ['/mnt/z']);
  }));

test.run();
