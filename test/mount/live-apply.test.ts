// A live apply as both servers run it (src/mount/live-apply.ts), with a mount that only records
// what it is asked: the request read, a damaged target refused before HEAD moves, the store's
// apply run inside the mount's hold and the switch told the upper, the mount state updated.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyLive, parseApplyRequest, type LiveApplyMount } from '../../src/mount/live-apply.js';
import { applyHead } from '../../src/store/commands/apply.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { headPaths } from '../../src/store/head/index.js';
import { MountState } from '../../src/store/mount-state.js';
import { Store } from '../../src/store/store.js';
import { expectError } from '../helpers/assert.js';
import { withTempDir } from '../helpers/dirs.js';

test('an apply request: a tag of this label, a ref, one of --discard/--keep; anything else is USAGE', () => {
  assert.equal(parseApplyRequest('v1\n', 'app'), { ref: 'app:v1', discard: false, keep: false });
  assert.equal(parseApplyRequest('app:v2 --keep', 'app'), { ref: 'app:v2', discard: false, keep: true });
  assert.equal(parseApplyRequest(`app@${'a'.repeat(64)} --discard`, 'app'), { ref: `app@${'a'.repeat(64)}`, discard: true, keep: false });
  for (const bad of ['', 'v1 --force', 'other:v1']) {
    try { parseApplyRequest(bad, 'app'); assert.unreachable(`"${bad}" was accepted`); } catch (err) { assert.is((err as { code?: string }).code, 'USAGE', bad); }
  }
});

/** A label with tags v1 and v2, HEAD on v2, and this process recorded as its mount's server. */
async function labelWithTwoTags(dir: string): Promise<{ store: Store; state: MountState; v1: string; v2: string }> {
  const src = join(dir, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'f'), 'one\n');
  const store = await Store.open(join(dir, 'store'), { create: true });
  const v1 = (await importDirectory(store, src, { label: 'app', tag: 'v1' })).id;
  writeFileSync(join(src, 'f'), 'two\n');
  const v2 = (await importDirectory(store, src, { label: 'app', tag: 'v2' })).id;
  await applyHead(store, 'app:v2');
  const state = new MountState(join(dir, 'mounts.json'));
  await state.claim({ store: store.root, label: 'app', ref: 'HEAD', commit: v2, mountpoint: join(dir, 'mnt'), pid: process.pid, mode: 'fuse', started: new Date().toISOString() });
  return { store, state, v1, v2 };
}

test('applyLive runs the store apply inside the mount hold, switches to the new commit over the upper, records it', () => withTempDir(async (dir) => {
  const { store, state, v1 } = await labelWithTwoTags(dir);
  const steps: string[] = [];
  const mount: LiveApplyMount = {
    switchAround: async (apply, upper) => {
      steps.push('hold');
      const applied = await apply();
      steps.push(`switch ${applied.to} ${upper}`);
      return { applied, note: 'switched' };
    },
  };
  const text = await applyLive({ store, label: 'app', request: 'v1', upper: headPaths(store, 'app').upper, mountpoint: join(dir, 'mnt'), state, mount });
  assert.is(text, `app ${v1} none\n`);
  assert.equal(steps, ['hold', `switch ${v1} ${headPaths(store, 'app').upper}`]);
  assert.is((await store.heads.read('app'))?.base, v1, 'HEAD moved');
  assert.is((await state.list()).find((e) => e.pid === process.pid)?.commit, v1, 'the mount state names the new commit');
}));

test('a damaged target image is refused before the mount is asked to hold anything, and HEAD stays', () => withTempDir(async (dir) => {
  const { store, state, v1, v2 } = await labelWithTwoTags(dir);
  const image = store.commits.imagePath(v1);
  const bytes = readFileSync(image);
  bytes[bytes.length - 1] ^= 0xff;
  writeFileSync(image, bytes);
  let asked = false;
  const mount: LiveApplyMount = { switchAround: async (apply) => { asked = true; return { applied: await apply() }; } };
  await expectError(applyLive({ store, label: 'app', request: 'v1', upper: headPaths(store, 'app').upper, mountpoint: join(dir, 'mnt'), state, mount }), 'CORRUPT_IMAGE');
  assert.not.ok(asked, 'the mount was never held');
  assert.is((await store.heads.read('app'))?.base, v2, 'HEAD did not move');
}));

test.run();
