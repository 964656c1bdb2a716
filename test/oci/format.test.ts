import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compress } from 'zstd-napi';
import { fsverityDigest } from '../../src/store/digest.js';
import { StratumError } from '../../src/store/error.js';
import { buildManifest, parseManifest, sha256Digest, type CommitManifest } from '../../src/oci/manifest.js';
import { formatIndex, parseIndex, readEntry, writePack } from '../../src/oci/pack.js';
import { LARGE_OBJECT, planObjects, type PlannedObject } from '../../src/oci/plan.js';
import { packsToRead } from '../../src/oci/pull.js';
import { withTempDir } from '../helpers/dirs.js';

function objects(n: number, size: (i: number) => number): Array<{ digest: string; data: Buffer }> {
  const out = [];
  for (let i = 0; i < n; i++) {
    const data = randomBytes(size(i));
    out.push({ digest: fsverityDigest(data), data });
  }
  return out.sort((a, b) => (a.digest < b.digest ? -1 : 1));
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.instance(err, StratumError, String(err));
    return (err as StratumError).code;
  }
  throw new Error('expected an error');
}

test('a pack read by `tar --zstd -x` gives ab/cdef… files whose names are their digests', async () => {
  const entries = objects(20, (i) => i * 37);
  const { pack } = writePack(entries);
  await withTempDir(async (dir) => {
    writeFileSync(join(dir, 'p.tar.zst'), pack);
    execFileSync('tar', ['--zstd', '-xf', 'p.tar.zst'], { cwd: dir });
    const found: string[] = [];
    for (const fan of readdirSync(dir).filter((n) => n.length === 2)) {
      for (const rest of readdirSync(join(dir, fan))) {
        const digest = fan + rest;
        assert.is(fsverityDigest(readFileSync(join(dir, fan, rest))), digest);
        found.push(digest);
      }
    }
    assert.equal(found.sort(), entries.map((e) => e.digest));
  });
});

test('every index range of a pack decodes alone to its object', () => {
  const entries = objects(30, (i) => (i * 977) % 5000);
  const { pack, index } = writePack(entries);
  const parsed = parseIndex(formatIndex(index), pack.length, LARGE_OBJECT);
  assert.equal(parsed, index);
  for (const [i, e] of parsed.entries()) assert.ok(readEntry(pack.subarray(e.offset, e.offset + e.length), e).equals(entries[i]!.data));
});

test('a pack is deterministic: the same objects give the same bytes', () => {
  const entries = objects(10, (i) => i * 100);
  assert.ok(writePack(entries).pack.equals(writePack(entries).pack));
});

test('a pack entry named ../x, or with bytes that do not match its digest, is refused', () => {
  const data = Buffer.from('hello world');
  const digest = fsverityDigest(data);
  const entry = Buffer.alloc(1024);
  entry.write('../x', 0);
  entry.write('0000444\0', 100);
  entry.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
  entry.write('0', 156);
  data.copy(entry, 512);
  let sum = 0;
  entry.fill(0x20, 148, 156);
  for (let i = 0; i < 512; i++) sum += entry[i]!;
  entry.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const frame = compress(entry);
  assert.is(code(() => readEntry(frame, { digest, offset: 0, length: frame.length, size: data.length })), 'CORRUPT_FRAME');
  // right name, wrong bytes
  const { pack, index } = writePack([{ digest, data }]);
  const other = writePack([{ digest, data: Buffer.from('hello worle') }]).pack;
  assert.ok(readEntry(pack.subarray(0, index[0]!.length), index[0]!).equals(data));
  assert.is(code(() => readEntry(other.subarray(0, index[0]!.length), index[0]!)), 'CORRUPT_OBJECT');
  // a bomb: an entry that inflates past its declared size
  const bomb = compress(Buffer.alloc(64 << 20));
  assert.is(code(() => readEntry(bomb, { digest, offset: 0, length: bomb.length, size: 10 })), 'CORRUPT_FRAME');
});

test('a pack index that overlaps, leaves the pack, or is unsorted is refused', () => {
  const entries = objects(3, () => 100);
  const { pack, index } = writePack(entries);
  const text = formatIndex(index).toString();
  assert.is(code(() => parseIndex(Buffer.from(text), pack.length - 30, LARGE_OBJECT)), 'CORRUPT_FRAME');
  const lines = text.trim().split('\n');
  assert.is(code(() => parseIndex(Buffer.from(`${lines[1]}\n${lines[0]}\n`), pack.length, LARGE_OBJECT)), 'CORRUPT_FRAME');
  assert.is(code(() => parseIndex(Buffer.from(text.replace(/ (\d+) (\d+) 100\n$/, ' 0 $2 100\n')), pack.length, LARGE_OBJECT)), 'CORRUPT_FRAME');
});

test('pack boundaries are content-defined: one added object changes one pack', () => {
  const list: PlannedObject[] = [];
  for (let i = 0; i < 20000; i++) list.push({ digest: fsverityDigest(Buffer.from(`f${i}`)), size: 500 + ((i * 7919) % 9000) });
  const before = planObjects(list).packs.map((p) => p.map((o) => o.digest).join());
  const extra = { digest: fsverityDigest(Buffer.from('one more')), size: 4000 };
  const after = planObjects([...list, extra]).packs.map((p) => p.map((o) => o.digest).join());
  const old = new Set(before);
  const changed = after.filter((p) => !old.has(p));
  assert.ok(before.length > 50, `${before.length} packs`);
  assert.is(changed.length, 1, `${changed.length} of ${after.length} packs changed`);
  const large = planObjects([{ digest: extra.digest, size: LARGE_OBJECT }]);
  assert.is(large.large.length, 1);
  assert.is(large.packs.length, 0);
});

test('the manifest is deterministic, round-trips, and stays well under 4 MB for 100k objects', () => {
  const d = (s: string) => sha256Digest(Buffer.from(s));
  const id = fsverityDigest(Buffer.from('image'));
  // 100k objects of 4 KiB: ~400 MiB in about 400 packs
  const list: PlannedObject[] = [];
  for (let i = 0; i < 100000; i++) list.push({ digest: fsverityDigest(Buffer.from(`o${i}`)), size: 4096 });
  const plan = planObjects(list);
  const m: CommitManifest = {
    id,
    parent: fsverityDigest(Buffer.from('parent')),
    created: '2026-12-06T00:00:00Z',
    config: { mediaType: 'x', digest: d('config'), size: 10 },
    image: { mediaType: 'x', digest: d('image'), size: 5 },
    packs: plan.packs.map((p, i) => ({ pack: { mediaType: 'x', digest: d(`p${i}`), size: 1 << 20 }, index: { mediaType: 'x', digest: d(`i${i}`), size: 20000 }, first: p[0]!.digest })),
    objects: [{ mediaType: 'x', digest: d('big'), size: LARGE_OBJECT, object: id }],
  };
  const bytes = buildManifest(m);
  assert.ok(bytes.equals(buildManifest(m)));
  assert.ok(bytes.length < 400_000, `${bytes.length} bytes for ${plan.packs.length} packs`);
  const back = parseManifest(bytes);
  assert.is(back.id, id);
  assert.is(back.parent, m.parent);
  assert.is(back.created, m.created);
  assert.is(back.packs.length, plan.packs.length);
  assert.equal(back.packs.map((p) => p.first), plan.packs.map((p) => p[0]!.digest));
  assert.is(back.objects[0]!.object, id);
  assert.is(code(() => parseManifest(Buffer.from('{"schemaVersion":2,"artifactType":"application/vnd.oci.image.config.v1+json"}'))), 'NOT_FOUND');
  assert.is(code(() => parseManifest(Buffer.from('not json'))), 'CORRUPT_FRAME');
});

test('a pull reads the indexes of just the packs whose digest range holds a wanted object; without first digests, all', () => {
  const list: PlannedObject[] = [];
  for (let i = 0; i < 5000; i++) list.push({ digest: fsverityDigest(Buffer.from(`o${i}`)), size: 4096 });
  const plan = planObjects(list);
  assert.ok(plan.packs.length >= 10, `${plan.packs.length} packs`);
  const packs = plan.packs.map((p, i) => ({ pack: { mediaType: 'x', digest: `p${i}`, size: 1 }, index: { mediaType: 'x', digest: `i${i}`, size: 1 }, first: p[0]!.digest }));
  const holding = (digest: string) => plan.packs.findIndex((p) => p.some((o) => o.digest === digest));
  // wanted: the first object of pack 3, the last of pack 7, one in the middle of pack 7
  const wanted = [plan.packs[3]![0]!.digest, plan.packs[7]!.at(-1)!.digest, plan.packs[7]![1]!.digest];
  assert.equal(packsToRead(packs, wanted).map((p) => p.pack.digest), ['p3', 'p7']);
  assert.equal(wanted.map(holding), [3, 7, 7]);
  assert.equal(packsToRead(packs, []), []);
  // every object wanted: every pack; a digest below the first pack: no pack (the pull then says it is missing)
  assert.is(packsToRead(packs, list.map((o) => o.digest)).length, packs.length);
  assert.equal(packsToRead(packs, ['0'.repeat(64)]).map((p) => p.pack.digest), plan.packs[0]![0]!.digest === '0'.repeat(64) ? ['p0'] : []);
  // an old manifest (no first digests) or one out of order: every index is read
  assert.is(packsToRead(packs.map(({ first: _f, ...p }) => p), wanted).length, packs.length);
  assert.is(packsToRead([...packs].reverse(), wanted).length, packs.length);
});

test.run();
