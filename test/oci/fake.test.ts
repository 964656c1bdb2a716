import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compress, decompress } from 'zstd-napi';
import { verify } from '../../src/store/commands/verify.js';
import { StratumError } from '../../src/store/error.js';
import { Store } from '../../src/store/store.js';
import { parseManifest } from '../../src/oci/manifest.js';
import { formatIndex, parseIndex } from '../../src/oci/pack.js';
import { pullCommit } from '../../src/oci/pull.js';
import { pushCommit } from '../../src/oci/push.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { LARGE_OBJECT } from '../../src/oci/plan.js';
import { FakeRegistry, fakeClient, sha256, withFake, type FakeOptions } from './fake-registry.js';
import { objectsIn, storeWith, writeTree } from './fixtures.js';

// Registry behaviour a real distribution will not show, from an in-process server.

const client = fakeClient;

async function roundTrip(fake: FakeRegistry, dir: string): Promise<{ id: string; pulled: Store }> {
  const { store, id } = await storeWith(join(dir, 'a'), writeTree(join(dir, 'tree'), 60), 'app', 'v1');
  await pushCommit(store, 'app:v1', client(fake), { repo: 'team/app' });
  const pulled = await Store.open(join(dir, 'b'), { create: true });
  const r = await pullCommit(pulled, client(fake), { repo: 'team/app', tag: 'v1' });
  assert.is(r.id, id);
  const report = await verify(pulled, undefined);
  assert.is(report.problems.length, 0, JSON.stringify(report.problems));
  return { id, pulled };
}

async function refused(promise: Promise<unknown>, pattern: RegExp): Promise<StratumError> {
  try {
    await promise;
  } catch (err) {
    assert.instance(err, StratumError, String(err));
    assert.match((err as Error).message, pattern, (err as Error).message);
    return err as StratumError;
  }
  throw new Error('expected the pull to be refused');
}

async function assertEmpty(store: Store): Promise<void> {
  assert.equal(await objectsIn(store), []);
  assert.equal(await store.commits.list(), []);
  assert.equal(await store.tags.labels(), []);
}

test('a registry that answers 202 to a monolithic POST gets the bytes by PUT', () =>
  withFake({ monolithic202: true }, async (fake, dir) => {
    await roundTrip(fake, dir);
    assert.ok(fake.log.some((l) => l.startsWith('PUT /v2/team/app/blobs/uploads/')), 'the upload finished with a PUT');
  }));

test('a registry that ignores Range: pull reads whole packs and still takes only the missing objects', () =>
  withFake({ ignoreRange: true }, async (fake, dir) => {
    const tree = writeTree(join(dir, 'tree'), 300);
    const { store } = await storeWith(join(dir, 'a'), tree, 'app', 'v1');
    await pushCommit(store, 'app:v1', client(fake), { repo: 'team/app' });
    const other = await Store.open(join(dir, 'b'), { create: true });
    await pullCommit(other, client(fake), { repo: 'team/app', tag: 'v1' });
    writeFileSync(join(tree, 'sub/f0'), 'changed content, long enough to be an object\n'.repeat(20));
    const v2 = await storeWith(join(dir, 'a'), tree, 'app', 'v2');
    await pushCommit(v2.store, 'app:v2', client(fake), { repo: 'team/app' });
    const c = client(fake);
    const r = await pullCommit(other, c, { repo: 'team/app', tag: 'v2' });
    assert.is(r.id, v2.id);
    assert.is(r.missing, 1);
    assert.ok(c.rangeIgnored, 'the client saw the whole body come back');
    assert.is((await verify(other, undefined)).problems.length, 0);
  }));

test('a registry that refuses mounts gets the blobs uploaded', () =>
  withFake({ refuseMount: true }, async (fake, dir) => {
    const tree = writeTree(join(dir, 'tree'), 40);
    const { store } = await storeWith(join(dir, 'a'), tree, 'app', 'v1');
    await pushCommit(store, 'app:v1', client(fake), { repo: 'team/app' });
    await storeWith(join(dir, 'a'), tree, 'other', 'v1');
    const r = await pushCommit(store, 'other:v1', client(fake), { repo: 'team/other' });
    assert.is(r.mounted, 0);
    assert.is(r.uploaded, r.blobs);
    assert.ok(fake.log.some((l) => l.includes('mount=')), 'a mount was asked for');
  }));

test('token auth: the WWW-Authenticate flow with credentials from $REGISTRY_AUTH_FILE; none is a clear PERMISSION error', () =>
  withFake({ token: { username: 'ann', password: 's3cret' } }, async (fake, dir) => {
    mkdirSync(join(dir, 'auth'));
    const authFile = join(dir, 'auth', 'auth.json');
    writeFileSync(authFile, JSON.stringify({ auths: { [fake.host]: { auth: Buffer.from('ann:s3cret').toString('base64') } } }));
    const saved = process.env.REGISTRY_AUTH_FILE;
    process.env.REGISTRY_AUTH_FILE = authFile;
    try {
      await roundTrip(fake, dir);
      assert.ok(fake.log.includes('GET /token?service=fake&scope=repository%3Ateam%2Fapp%3Apull%2Cpush'), fake.log.filter((l) => l.startsWith('GET /token')).join());
      process.env.REGISTRY_AUTH_FILE = join(dir, 'auth', 'none.json');
      const empty = await Store.open(join(dir, 'c'), { create: true });
      const err = await refused(pullCommit(empty, new RegistryClient(fake.host, { plainHttp: true, credentials: undefined }), { repo: 'team/app', tag: 'v1' }), /token service .* refused|log in/);
      assert.is(err.code, 'PERMISSION');
    } finally {
      if (saved === undefined) delete process.env.REGISTRY_AUTH_FILE;
      else process.env.REGISTRY_AUTH_FILE = saved;
    }
  }));

/** Pushes a commit, lets `spoil` change what the registry holds, and pulls into an empty store. */
async function hostile(spoil: (fake: FakeRegistry, manifest: ReturnType<typeof parseManifest>, raw: Buffer) => void, pattern: RegExp, options: FakeOptions = {}): Promise<void> {
  await withFake(options, async (fake, dir) => {
    const { store } = await storeWith(join(dir, 'a'), writeTree(join(dir, 'tree'), 60), 'app', 'v1');
    await pushCommit(store, 'app:v1', client(fake), { repo: 'team/app' });
    const raw = fake.manifests.get('team/app:v1')!;
    spoil(fake, parseManifest(raw), raw);
    const empty = await Store.open(join(dir, 'b'), { create: true });
    await refused(pullCommit(empty, client(fake), { repo: 'team/app', tag: 'v1' }), pattern);
    await assertEmpty(empty);
  });
}

/** Stores `bytes` as a blob and repoints the manifest's descriptor `old` at it. */
function replaceBlob(fake: FakeRegistry, raw: Buffer, old: string, bytes: Buffer): void {
  const digest = sha256(bytes);
  fake.blobs.set(`team/app@${digest}`, bytes);
  const doc = JSON.parse(raw.toString()) as { layers: Array<{ digest: string; size: number }> };
  for (const l of doc.layers) if (l.digest === old) Object.assign(l, { digest, size: bytes.length });
  fake.manifests.set('team/app:v1', Buffer.from(JSON.stringify(doc)));
}

test('hostile: a pack whose bytes do not match its digest is refused, nothing enters the store', () =>
  hostile((fake, m) => {
    const pack = fake.blobs.get(m.packs[0]!.pack.digest)!;
    const bad = Buffer.from(pack);
    bad[bad.length - 5] ^= 1;
    fake.tamper(m.packs[0]!.pack.digest, bad);
  }, /does not match its digest|not zstd|bad pack/));

test('hostile: a large object whose bytes do not match its digest is refused', () =>
  hostile((fake, m) => {
    const big = fake.blobs.get(m.objects[0]!.digest)!;
    fake.tamper(m.objects[0]!.digest, Buffer.concat([big.subarray(1), Buffer.from('x')]));
  }, /does not match its digest/));

test('hostile: a manifest whose commit.cfs is not the commit id is refused', () =>
  hostile((fake, m, raw) => {
    const otherId = 'ab'.repeat(32);
    fake.manifests.set('team/app:v1', Buffer.from(raw.toString().replaceAll(m.id, otherId)));
  }, /fs-verity digest [0-9a-f]{64}, not the commit id/));

test('hostile: a pack entry named ../x is refused', () =>
  hostile((fake, m, raw) => {
    const pack = fake.blobs.get(m.packs[0]!.pack.digest)!;
    const index = parseIndex(fake.blobs.get(m.packs[0]!.index.digest)!, pack.length, LARGE_OBJECT);
    const first = index[0]!;
    const entry = Buffer.from(decompress(pack.subarray(first.offset, first.offset + first.length)));
    entry.fill(0, 0, 100);
    entry.write('../x', 0);
    entry.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += entry[i]!;
    entry.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    const frame = compress(entry);
    const newPack = Buffer.concat([frame, pack.subarray(first.offset + first.length)]);
    const shift = frame.length - first.length;
    const newIndex = formatIndex(index.map((e, i) => (i === 0 ? { ...e, length: frame.length } : { ...e, offset: e.offset + shift })));
    replaceBlob(fake, raw, m.packs[0]!.pack.digest, newPack);
    replaceBlob(fake, fake.manifests.get('team/app:v1')!, m.packs[0]!.index.digest, newIndex);
  }, /pack entry is named "\.\.\/x"/));

test('hostile: a manifest declaring a pack larger than any writer makes is refused before it is fetched', () =>
  hostile((fake, m, raw) => {
    const doc = JSON.parse(raw.toString()) as { layers: Array<{ digest: string; size: number }> };
    for (const l of doc.layers) if (l.digest === m.packs[0]!.pack.digest) l.size = 8 * 2 ** 30;
    fake.manifests.set('team/app:v1', Buffer.from(JSON.stringify(doc)));
  }, /a pack is 8589934592 bytes, more than/));

test('hostile: an endless blob body is cut off and refused', async () => {
  let target = '';
  await hostile((fake, m) => {
    target = m.image.digest;
    fake.options.endless = target;
  }, /longer than/);
  assert.ok(target);
});

test('hostile: a body that stalls is given up on after the idle time, with a clear error', async () => {
  process.env.STRATUM_REGISTRY_IDLE_MS = '700';
  try {
    await hostile((fake, m) => {
      fake.options.stall = m.packs[0]!.index.digest;
    }, /sent or took nothing for 0.7 s/);
  } finally {
    delete process.env.STRATUM_REGISTRY_IDLE_MS;
  }
});

test.run();
