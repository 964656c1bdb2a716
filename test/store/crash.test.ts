// What survives a kill -9 or a concurrent command: the store is never half-written.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collectGarbage } from '../../src/store/commands/gc.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { Store } from '../../src/store/store.js';
import { helperScript, runNode, withTempDir } from '../helpers/dirs.js';
import { makeTree } from '../helpers/trees.js';

/** Starts a worker command, kills it with SIGKILL after `ms`, resolves when it is gone. */
function killAfter(args: string[], ms: number): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [helperScript('store-worker'), ...args], { stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function bigTree(dir: string, seed: number): string {
  const spec: Record<string, number | string> = {};
  for (let i = 0; i < 300; i++) spec[`d${i % 7}/f${i}`] = 2000 + ((i * seed) % 5000);
  for (let i = 0; i < 3; i++) spec[`large${i}`] = (8 << 20) + seed;
  return makeTree(dir, spec);
}

test('kill -9 during import, at many points: verify stays clean and every tag resolves', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    const store = await Store.open(root, { create: true });
    const tree = bigTree(join(dir, 'tree'), 1);
    for (const ms of [30, 80, 150, 250, 400, 600, 900]) {
      await killAfter([root, 'import', tree, `app${ms}`], ms);
      const report = await verify(store, undefined);
      assert.equal(report.problems, [], `after a kill at ${ms} ms`);
    }
    // whatever the kills left, a normal import completes and the store is consistent
    const { id } = await importDirectory(store, tree, { label: 'final' });
    assert.ok(await store.commits.has(id));
    assert.equal((await verify(store, undefined)).problems, []);
    await collectGarbage(store);
    assert.equal((await verify(store, undefined)).problems, []);
  }));

test('kill -9 during gc and export leaves every live commit whole', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    const store = await Store.open(root, { create: true });
    const keep = await importDirectory(store, bigTree(join(dir, 'keep'), 2), { label: 'keep', tag: 'v1' });
    for (const [i, ms] of [20, 60, 120, 250].entries()) {
      await importDirectory(store, bigTree(join(dir, `doomed${i}`), 10 + i), { label: `doomed${i}` });
      const label = store.tags.labelDir(`doomed${i}`);
      await (await import('node:fs/promises')).rm(label, { recursive: true });
      await killAfter([root, 'gc'], ms);
      await killAfter([root, 'export', 'keep:v1', join(dir, `b${i}.bundle`)], ms);
      const report = await verify(store, undefined);
      assert.equal(report.problems, [], `after kills at ${ms} ms`);
      assert.is((await store.tags.resolve('keep', 'v1')).id, keep.id);
    }
    await collectGarbage(store);
    assert.equal(await store.commits.list(), [keep.id], 'an interrupted gc is finished by the next one');
    assert.equal((await verify(store, undefined)).problems, []);
  }));

test('gc running while another process imports never deletes anything live', () =>
  withTempDir(async (dir) => {
    const root = join(dir, 's');
    const store = await Store.open(root, { create: true });
    const n = 6;
    for (let i = 0; i < n; i++) makeTree(join(dir, 'trees', String(i)), { shared: 9000, [`own${i}`]: 20_000 + i, [`sub/x${i}`]: 300 + i });
    const importer = runNode(helperScript('store-worker'), [root, 'import-many', join(dir, 'trees'), String(n)]);
    let gcs = 0;
    let done = false;
    void importer.then(() => (done = true));
    while (!done) {
      await collectGarbage(store);
      gcs++;
    }
    const result = await importer;
    assert.is(result.code, 0, result.stderr);
    assert.ok(gcs > 1, 'gc really ran alongside');
    const ids = result.stdout.trim().split('\n');
    assert.is(ids.length, n);
    for (let i = 0; i < n; i++) assert.is((await store.tags.resolve(`l${i}`, ids[i]!)).id, ids[i]);
    assert.equal((await verify(store, undefined)).problems, []);
  }));

test.run();
