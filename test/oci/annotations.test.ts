import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { annotationsOf, setAnnotations } from '../../src/store/annotations.js';
import { verify } from '../../src/store/commands/verify.js';
import { Store } from '../../src/store/store.js';
import { pullCommit } from '../../src/oci/pull.js';
import { pushCommit } from '../../src/oci/push.js';
import { annotationsBlob, ANNOTATIONS_ARTIFACT, buildReferrer, currentReferrer, fallbackTag, INDEX_MEDIA_TYPE, MAX_ANNOTATIONS, parseReferrers, withReferrer } from '../../src/oci/referrers.js';
import { MANIFEST_TYPE } from '../../src/oci/manifest.js';
import { FakeRegistry, fakeClient, sha256, withFake } from './fake-registry.js';
import { storeWith, writeTree } from './fixtures.js';

// A commit's annotations as a referrer of its manifest, against an in-process registry: the
// referrers API path, and hostile annotation artifacts a real registry would not make up.

const client = fakeClient;

test('canonical annotations blob: the same set in any order is the same bytes; the fallback tag is sha256-<hex>', () => {
  assert.equal(annotationsBlob({ b: '2', a: '1' }), annotationsBlob({ a: '1', b: '2' }));
  assert.is(annotationsBlob({ b: '2', a: '1' }).toString(), '{"a":"1","b":"2"}');
  assert.is(fallbackTag(`sha256:${'ab'.repeat(32)}`), `sha256-${'ab'.repeat(32)}`);
});

test('the fallback index: our older entry is replaced, other tools\' entries are kept as they were, junk entries skipped when read', () => {
  const digest = (c: string) => `sha256:${c.repeat(64)}`;
  const sig = { mediaType: MANIFEST_TYPE, digest: digest('1'), size: 10, artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json', platform: { os: 'linux' } };
  const ours = { mediaType: MANIFEST_TYPE, digest: digest('2'), size: 20, artifactType: ANNOTATIONS_ARTIFACT, annotations: { 'org.opencontainers.image.created': '2026-01-01T00:00:00.000Z' } };
  const old = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests: [sig, ours] }));
  const next = { ...ours, digest: digest('3'), annotations: { 'org.opencontainers.image.created': '2026-02-01T00:00:00.000Z' } };
  const index = JSON.parse(withReferrer(old, next).toString()) as { manifests: unknown[] };
  assert.equal(index.manifests, [sig, next]);
  const listed = parseReferrers(Buffer.from(JSON.stringify({ manifests: [null, { digest: 'x' }, ours, next] })));
  assert.is(listed.length, 2);
  assert.is(currentReferrer(listed)?.digest, next.digest, 'the newest, whatever the order');
  assert.is(currentReferrer([next, ours])?.digest, next.digest);
});

test('a registry with the referrers API: no fallback tag is written, and pull takes the newest of several referrers', () =>
  withFake({ referrersApi: true }, async (fake, dir) => {
    const { store, id } = await storeWith(join(dir, 'a'), writeTree(join(dir, 'tree'), 10), 'app', 'v1');
    await setAnnotations(store, id, { set: { stage: 'one' } });
    const first = await pushCommit(store, 'app:v1', client(fake), { repo: 'team/app' });
    await setAnnotations(store, id, { set: { stage: 'two' } });
    const second = await pushCommit(store, 'app:v1', client(fake), { repo: 'team/app' });
    assert.is(second.manifest, first.manifest, 'annotations never change the commit manifest');
    assert.is.not(second.annotations!.manifest, first.annotations!.manifest);
    assert.not.ok([...fake.manifests.keys()].some((k) => k.includes(':sha256-')), 'no fallback tag on a registry with the API');
    const pulled = await Store.open(join(dir, 'b'), { create: true });
    const r = await pullCommit(pulled, client(fake), { repo: 'team/app', tag: 'v1' });
    assert.is(r.annotations, 1);
    assert.equal(r.warnings, []);
    assert.equal(await annotationsOf(pulled, id), { stage: 'two' });
  }));

/** Pushes an annotated commit, then lets `spoil` replace the annotations artifact the fallback tag lists. */
async function hostile(fake: FakeRegistry, dir: string, spoil: (subject: { digest: string; size: number }, id: string) => { config: Buffer; size?: number; subject?: { digest: string; size: number } }, warning: RegExp): Promise<void> {
  const { store, id } = await storeWith(join(dir, 'a'), writeTree(join(dir, 'tree'), 10), 'app', 'v1');
  await setAnnotations(store, id, { set: { good: 'yes' } });
  const pushed = await pushCommit(store, 'app:v1', client(fake), { repo: 'team/app' });
  const subject = { digest: pushed.manifest, size: fake.manifests.get(`team/app:${pushed.manifest}`)!.length };
  const { config, size, subject: claimed } = spoil(subject, id);
  fake.blobs.set(`team/app@${sha256(config)}`, config);
  let referrer = buildReferrer({ id, subject: claimed ?? subject, config, created: '2030-01-01T00:00:00.000Z' });
  if (size !== undefined) referrer = Buffer.from(referrer.toString().replace(`"size":${config.length}`, `"size":${size}`));
  fake.manifests.set(`team/app:${sha256(referrer)}`, referrer);
  const index = { schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests: [{ mediaType: MANIFEST_TYPE, digest: sha256(referrer), size: referrer.length, artifactType: ANNOTATIONS_ARTIFACT }] };
  fake.manifests.set(`team/app:${fallbackTag(subject.digest)}`, Buffer.from(JSON.stringify(index)));

  const pulled = await Store.open(join(dir, 'b'), { create: true });
  const r = await pullCommit(pulled, client(fake), { repo: 'team/app', tag: 'v1' });
  assert.is(r.id, id, 'the commit itself is pulled');
  assert.is(r.annotations, 0);
  assert.is(r.warnings.length, 1);
  assert.match(r.warnings[0]!, warning);
  assert.equal(await annotationsOf(pulled, id), {}, 'nothing of a refused artifact is merged');
  assert.is((await verify(pulled, undefined)).problems.length, 0);
}

test('hostile annotations: a blob larger than the limit is refused before it is fetched; the commit is pulled', () =>
  withFake({}, (fake, dir) =>
    hostile(fake, dir, () => ({ config: annotationsBlob({ big: 'x'.repeat(60_000) }), size: MAX_ANNOTATIONS + 1 }), /annotations were not taken: .*more than 1048576/),
  ));

test('hostile annotations: a blob longer than its descriptor says is cut off and refused', () =>
  withFake({}, (fake, dir) => hostile(fake, dir, () => ({ config: annotationsBlob({ a: 'x'.repeat(5000) }), size: 100 }), /annotations were not taken: .*(more|longer) than the 100 (bytes )?expected/)));

test('hostile annotations: not JSON, or a key stratum annotate would refuse, is refused', () =>
  withFake({}, async (fake, dir) => {
    await hostile(fake, join(dir, '1'), () => ({ config: Buffer.from('{"a": "1"') }), /annotations were not taken: .*not JSON/);
    await hostile(fake, join(dir, '2'), () => ({ config: Buffer.from('{"bad key!":"1"}') }), /annotations were not taken: .*bad annotation key/);
    await hostile(fake, join(dir, '3'), () => ({ config: Buffer.from('["a"]') }), /annotations were not taken: .*JSON object/);
  }));

test('an annotations artifact whose subject is another manifest is refused', () =>
  withFake({}, (fake, dir) => hostile(fake, dir, () => ({ config: annotationsBlob({ a: '1' }), subject: { digest: `sha256:${'0'.repeat(64)}`, size: 10 } }), /subject is not the commit manifest/)));

test.run();
