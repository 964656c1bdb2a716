import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StratumError } from '../../../src/store/error.js';
import { parseDump } from '../../../src/store/image/dump.js';
import { ImageReader, bufferSource, walkImage } from '../../../src/store/image/read.js';
import { writeImage } from '../../../src/store/image/write.js';
import { newInode } from '../../../src/store/image/tree.js';
import { diffImages } from '../../../src/store/commands/diff.js';
import { merkleOfImage } from '../../../src/store/merkle.js';
import { imageTreeFromBytes } from '../../../src/store/union.js';
import { lazyImageTree } from '../../../src/store/image/image-tree.js';
import { indexBase, spliceImage } from '../../../src/store/image/splice.js';
import { cyclicImage } from './cyclic.js';
import { loadVectors } from './vectors.js';

// Mutates valid images (bit flips, byte stomps, truncation, swapped and duplicated blocks) and
// drives every image parser of the project over them: the reader in both its modes (lazy, and
// whole-buffer) over every reachable entry, the whole-image tree, the commit base tree, the Merkle
// root and diff; each independently, so a parser is exercised even on images another refuses. A mutated image may read fine or fail with
// CORRUPT_IMAGE; anything else (RangeError, TypeError, a hang) is a bug. Deterministic seed;
// STRATUM_FUZZ_ROUNDS raises the round count for a longer local run.
const ROUNDS = Number(process.env.STRATUM_FUZZ_ROUNDS ?? 10_000);
const BUDGET_MS = 40_000;

let seed = 0x9e3779b9;
const rnd = (): number => {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 2 ** 32;
};
const ri = (n: number): number => Math.floor(rnd() * n);

function mutate(src: Uint8Array): Uint8Array {
  let img = Buffer.from(src);
  const blocks = Math.floor(img.length / 4096);
  const kind = ri(6);
  if (kind === 0) {
    for (let i = 1 + ri(8); i > 0; i--) { const at = ri(img.length); img[at]! ^= 1 << ri(8); }
  } else if (kind === 1) {
    // Stomp bytes in the metadata area, where the structures are.
    const limit = Math.min(img.length, 1152 + 4096 * 2);
    for (let i = 1 + ri(4); i > 0; i--) img[1024 + ri(limit - 1024)] = ri(256);
  } else if (kind === 2) {
    img = img.subarray(0, ri(img.length));
  } else if (kind === 3 && blocks >= 2) {
    const a = ri(blocks); const b = ri(blocks);
    const tmp = Buffer.from(img.subarray(a * 4096, a * 4096 + 4096));
    img.copy(img, a * 4096, b * 4096, b * 4096 + 4096);
    tmp.copy(img, b * 4096);
  } else if (kind === 4) {
    // Set a random u16/u32/u64-sized field to an extreme value.
    const at = 1024 + ri(Math.max(1, img.length - 1032));
    const v = [0, 0xff, 0x7f, 0x80][ri(4)]!;
    img.fill(v, at, at + [2, 4, 8][ri(3)]!);
  } else {
    // Retarget a dirent-like u64 at a random slot.
    const at = 1152 + ri(Math.max(1, img.length - 1160));
    img.writeUInt32LE(ri(img.length / 32), at);
  }
  return img;
}

/** The reader over every reachable entry, as mount, export and verify drive it (lazy) or a commit (whole). */
function exercise(img: Uint8Array, mode: 'lazy' | 'whole' = 'lazy'): void {
  const reader = mode === 'lazy' ? ImageReader.open(bufferSource(img)) : ImageReader.whole(img);
  let visited = 0;
  walkImage(reader, (_path, attr, nid) => {
    if (++visited > 200_000) throw new Error('walk does not terminate');
    reader.xattrs(nid);
    reader.lookup(reader.rootNid, 'x');
    const type = attr.mode & 0o170000;
    if (type === 0o120000) reader.readlink(nid);
    if (type === 0o100000) { reader.readContent(nid, 0, 1 << 16); reader.external(nid); }
    if (type === 0o040000) { reader.readdir(nid, 0, 3); reader.lookup(nid, 'a'); }
  });
}

/**
 * Every other parser of images: the whole-image tree (what commit builds on), the Merkle root
 * verify recomputes, and diff against the unmutated image.
 */
function exerciseOthers(img: Uint8Array, original: Uint8Array): void {
  splice(img);
  imageTreeFromBytes(Buffer.from(img));
  merkleOfImage(ImageReader.open(bufferSource(img)));
  diffImages(ImageReader.open(bufferSource(original)), ImageReader.open(bufferSource(img)));
  diffImages(ImageReader.open(bufferSource(img)), ImageReader.open(bufferSource(original)));
}

/**
 * The splice writer over an image (its sweep, then a commit's lazy tree with one new file):
 * refused with a reason, CORRUPT_IMAGE, or an image; never a crash or a hang.
 */
function splice(img: Uint8Array): string | undefined {
  const index = indexBase(Buffer.from(img));
  if (typeof index === 'string') return index;
  const { tree, origin } = lazyImageTree(ImageReader.whole(img));
  const root = newInode({ mode: tree.root.mode, uid: tree.root.uid, gid: tree.root.gid, mtimeSec: tree.root.mtimeSec, mtimeNsec: tree.root.mtimeNsec, xattrs: tree.root.xattrs });
  for (const [name, entry] of tree.root.children!) root.children!.set(name, entry);
  root.children!.set('new-file', { inode: newInode({ mode: 0o100644, mtimeSec: tree.root.mtimeSec, content: Buffer.from('new') }), hardlink: false });
  const out = spliceImage(index, { root }, (inode) => origin.get(inode)?.nid);
  return typeof out === 'string' ? out : undefined;
}

const PARSERS: Array<[string, (img: Uint8Array) => unknown]> = [
  ['ImageReader (lazy) + walkImage', (img) => exercise(img, 'lazy')],
  ['ImageReader (whole) + walkImage', (img) => exercise(img, 'whole')],
  ['imageTreeFromBytes', (img) => imageTreeFromBytes(Buffer.from(img))],
  ['merkleOfImage (verify)', (img) => merkleOfImage(ImageReader.open(bufferSource(img)))],
  ['diffImages', (img) => diffImages(ImageReader.open(bufferSource(img)), ImageReader.open(bufferSource(writeImage({ root: newInode({ mode: 0o040755 }) }))))],
];

test('a directory cycle is CORRUPT_IMAGE in every image parser, at once (the splice refuses it)', () => {
  const img = cyclicImage();
  try {
    const refused = splice(img);
    assert.ok(refused !== undefined, 'the splice wrote a cyclic image');
  } catch (e) {
    assert.instance(e, StratumError);
    assert.is((e as StratumError).code, 'CORRUPT_IMAGE');
  }
  for (const [name, parse] of PARSERS) {
    const started = Date.now();
    try {
      parse(img);
      assert.unreachable(`${name} accepted a cyclic image`);
    } catch (e) {
      assert.instance(e, StratumError, `${name}: ${(e as Error).stack}`);
      assert.is((e as StratumError).code, 'CORRUPT_IMAGE', name);
    }
    assert.ok(Date.now() - started < 5000, `${name} took ${Date.now() - started} ms`);
  }
});

test(`${ROUNDS} mutated images give data or CORRUPT_IMAGE, never a crash or hang`, () => {
  const bases = loadVectors()
    .filter((v) => v.expected !== 'refused' && v.options.minVersion === undefined)
    .map((v) => writeImage(parseDump(v.dump)))
    .filter((img) => img.length <= 256 * 1024);
  assert.ok(bases.length >= 10);
  for (const img of bases) {
    exercise(img); // the originals read cleanly, in both modes
    exercise(img, 'whole');
    try {
      exerciseOthers(img, img);
    } catch (e) {
      // some vectors are valid composefs but not stratum commits (an external file without a digest)
      if (!(e instanceof StratumError && e.code === 'CORRUPT_IMAGE')) throw e;
    }
  }
  const started = Date.now();
  let corrupt = 0;
  let rounds = 0;
  for (; rounds < ROUNDS && Date.now() - started < BUDGET_MS; rounds++) {
    const img = mutate(bases[rounds % bases.length]!);
    for (const run of [() => exercise(img, 'lazy'), () => exercise(img, 'whole'), () => exerciseOthers(img, bases[rounds % bases.length]!)]) {
      try {
        run();
      } catch (e) {
        if (e instanceof StratumError && e.code === 'CORRUPT_IMAGE') { corrupt++; continue; }
        throw new Error(`round ${rounds}: ${(e as Error).stack}`);
      }
    }
  }
  console.log(`fuzz: ${rounds} rounds in ${Date.now() - started} ms, ${corrupt} rejected as CORRUPT_IMAGE`);
});

test.run();
