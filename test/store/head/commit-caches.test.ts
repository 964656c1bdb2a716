import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lchownSync, linkSync, lstatSync, lutimesSync, readdirSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { baseTree, commitHead, ensureUpper, headPaths } from '../../../src/store/commands/commit.js';
import { importDirectory } from '../../../src/store/commands/import.js';
import { verify } from '../../../src/store/commands/verify.js';
import { buildHeadCommit } from '../../../src/store/head/build.js';
import { MERKLE_CACHE_FILE, readMerkleCache, writeMerkleCache } from '../../../src/store/head/edits.js';
import { TREE_CACHE_FILE, decodeTree, encodeTree, readTreeCache } from '../../../src/store/head/tree-cache.js';
import { walkTree } from '../../../src/store/image/tree.js';
import { Random } from './ops.js';
import { TREE_EDITS_FILE, readBaseTreeCache } from '../../../src/store/head/tree-edits.js';
import { writeImage } from '../../../src/store/image/write.js';
import { mergeUpper } from '../../../src/store/union.js';
import { S_IFCHR, mknod } from '../../../src/native/files.js';
import { lsetxattr } from '../../../src/native/xattr.js';
import { merkleLevels, summaryOf } from '../../../src/store/merkle.js';
import type { CommitMetadata } from '../../../src/store/metadata.js';
import { StratumError } from '../../../src/store/error.js';
import { Store } from '../../../src/store/store.js';
import { commitByReadBack } from '../../helpers/readback.js';
import { giveTo, shAsUser, stratumAsUser, testUser, userTestsUnavailable } from '../../helpers/user.js';

// HEAD's caches of its base: the Merkle cache (refs/<label>/head.merkle) lets a full-path commit
// (new, deleted or renamed names) take the leaves of every untouched path from the base instead
// of hashing them; the tree cache (head.tree) spares it parsing the base image. What they must
// never do: change what a commit is. Each test commits the same change with good caches, a bad
// cache or none, and holds the result to the reference (image written, read back and hashed the
// way `verify` does) and to `verify`.

function makeSource(dir: string, links = true): void {
  for (let d = 0; d < 4; d++) {
    mkdirSync(join(dir, `d${d}`, 'sub'), { recursive: true });
    for (let f = 0; f < 30; f++) {
      const p = join(dir, `d${d}`, f % 3 === 0 ? 'sub' : '', `f${f}.dat`);
      writeFileSync(p, `content ${d}/${f} `.repeat(1 + f));
      utimesSync(p, 1_600_000_000 + d * 100 + f, 1_600_000_000 + d * 100 + f);
    }
  }
  symlinkSync('d0/f1.dat', join(dir, 'link'));
  writeFileSync(join(dir, 'shared'), 'hardlinked content '.repeat(10));
  if (links) linkSync(join(dir, 'shared'), join(dir, 'd3', 'hardlink'));
}

/** Every upper entry gets the same times, so two stores given the same change commit the same tree. */
function pinTimes(dir: string): void {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (lstatSync(p).isDirectory()) pinTimes(p);
    lutimesSync(p, 1_700_000_000, 1_700_000_000);
  }
  lutimesSync(dir, 1_700_000_000, 1_700_000_000);
}

/** A store with HEAD `app` on the imported source, one commit made so the cache exists. */
async function setup(work: string, name: string): Promise<{ store: Store; upper: string; cacheFile: string; treeFile: string }> {
  const store = await Store.open(join(work, name), { create: true });
  await importDirectory(store, join(work, 'src'), { label: 'app' });
  await ensureUpper(store, (await store.heads.read('app'))!);
  const upper = headPaths(store, 'app').upper;
  writeFileSync(join(upper, 'first'), 'first commit');
  pinTimes(upper);
  await commitHead(store, { label: 'app', splice: false }); // written whole: it leaves head.tree
  const cacheFile = join(headPaths(store, 'app').labelDir, MERKLE_CACHE_FILE);
  const treeFile = join(headPaths(store, 'app').labelDir, TREE_CACHE_FILE);
  assert.ok(existsSync(cacheFile), 'a commit leaves the Merkle cache of its commit');
  const base = (await store.heads.read('app'))!.base;
  const cached = readTreeCache(treeFile, base)?.tree;
  assert.ok(cached, 'a full-path commit leaves the tree cache of its commit');
  assert.ok(Buffer.from(writeImage(cached!)).equals(readFileSync(store.commits.imagePath(base))), 'the cached tree writes the commit image');
  return { store, upper, cacheFile, treeFile };
}

/** One added, one deleted and one renamed file, as the kernel leaves them in the upper. */
async function change(store: Store, upper: string): Promise<void> {
  const ns = (await store.heads.read('app'))!.xattrNamespace;
  mkdirSync(join(upper, 'd1', 'sub'), { recursive: true });
  writeFileSync(join(upper, 'd1', 'added.dat'), 'a new file, long enough to be an object '.repeat(3));
  mknod(join(upper, 'd2'), S_IFCHR | 0o644, 0, 0); // a whole directory deleted
  mknod(join(upper, 'd1', 'f1.dat'), S_IFCHR | 0o644, 0, 0);
  const to = join(upper, 'd1', 'sub', 'renamed.dat');
  writeFileSync(to, '');
  truncateSync(to, Buffer.byteLength('content 1/1 '.repeat(2)));
  lsetxattr(to, `${ns}.overlay.metacopy`, new Uint8Array(0));
  lsetxattr(to, `${ns}.overlay.redirect`, Buffer.from('/d1/f1.dat'));
  pinTimes(upper);
}

async function expectReference(store: Store, id: string, parent: string, what: string): Promise<void> {
  const meta = await store.commits.metadata(id);
  const reference = commitByReadBack(baseTree(store, id), parent);
  assert.is(id, reference.id, `${what}: the image is what the writer makes of the tree`);
  assert.equal({ ...meta, timestamp: '' }, { ...reference.meta, timestamp: '' }, `${what}: metadata (Merkle root, counts)`);
  assert.equal((await verify(store, undefined)).problems, [], `${what}: verify`);
}

/** Two stores on the same source: `a` with HEAD's caches, `b` without (what `a` must agree with). */
async function withAndWithoutCaches(work: string): Promise<{ a: Awaited<ReturnType<typeof setup>>; b: Awaited<ReturnType<typeof setup>> }> {
  const a = await setup(work, 'a');
  const b = await setup(work, 'b');
  rmSync(b.cacheFile);
  rmSync(b.treeFile);
  return { a, b };
}

async function withWork(fn: (work: string) => Promise<void>, links = true): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'stratum-merkle-cache-'));
  try {
    makeSource(join(work, 'src'), links);
    await fn(work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

test('added, deleted and renamed files: the commit through the cache is the commit without it, and the reference', () =>
  withWork(async (work) => {
    const { a, b } = await withAndWithoutCaches(work);
    const parent = (await a.store.heads.read('app'))!.base;
    await change(a.store, a.upper);
    await change(b.store, b.upper);
    const ra = await commitHead(a.store, { label: 'app' });
    const rb = await commitHead(b.store, { label: 'app' });
    assert.is(ra.fastPath, false);
    assert.is(ra.id, rb.id, 'same commit id with and without the cache');
    assert.equal({ ...(await a.store.commits.metadata(ra.id)), timestamp: '' }, { ...(await b.store.commits.metadata(rb.id)), timestamp: '' });
    await expectReference(a.store, ra.id, parent, 'through the cache');
    // and the cache it leaves serves the next commit just as well
    mkdirSync(join(a.upper, 'd0'));
    writeFileSync(join(a.upper, 'd0', 'another.dat'), 'x'.repeat(200));
    const again = await commitHead(a.store, { label: 'app' });
    await expectReference(a.store, again.id, ra.id, 'second commit through the cache');
    assert.ok(Buffer.from(writeImage(readTreeCache(a.treeFile, again.id)!.tree)).equals(readFileSync(a.store.commits.imagePath(again.id))), 'the tree cache follows HEAD');
  }));

/**
 * One random change in both uppers, as the kernel leaves it: a new file (inline or an object) or
 * directory, a file or directory deleted (whiteout), a file renamed (whiteout + metacopy
 * redirect), a file rewritten, or (`links`) a new file with a second name (a hardlink in the upper).
 */
function randomChange(rnd: Random, files: string[], dirs: string[], ns: string, uppers: string[], round: number, k: number, editsOnly: boolean, links: boolean): void {
  const kind = editsOnly ? 4 : rnd.int(links ? 6 : 5);
  const at = (rel: string): string[] => uppers.map((u) => join(u, rel));
  const parentOf = (rel: string): string => rel.slice(0, rel.lastIndexOf('/'));
  const dir = rnd.pick(dirs);
  const fresh = `${dir}/n${round}-${k}`;
  for (const u of uppers) mkdirSync(join(u, dir), { recursive: true });
  if (kind === 0 || files.length < 4) {
    const content = `new ${round}/${k} `.repeat(1 + rnd.int(40));
    for (const p of at(`${fresh}.dat`)) writeFileSync(p, content);
  } else if (kind === 1) {
    for (const p of at(fresh)) mkdirSync(p);
    for (const p of at(`${fresh}/inside.dat`)) writeFileSync(p, 'inside '.repeat(20));
  } else if (kind === 2 || kind === 3) {
    const victim = files.splice(rnd.int(files.length), 1)[0]!;
    for (const u of uppers) mkdirSync(join(u, parentOf(victim)), { recursive: true });
    const size = statSync(join(uppers[0]!, '..', 'base-sizes', victim), { throwIfNoEntry: false })?.size;
    for (const p of at(victim)) rmSync(p, { force: true, recursive: true });
    for (const p of at(victim)) mknod(p, S_IFCHR | 0o644, 0, 0);
    if (kind === 3 && size !== undefined) {
      for (const p of at(`${fresh}.moved`)) {
        writeFileSync(p, '');
        truncateSync(p, size);
        lsetxattr(p, `${ns}.overlay.metacopy`, new Uint8Array(0));
        lsetxattr(p, `${ns}.overlay.redirect`, Buffer.from(victim));
      }
    }
  } else if (kind === 4) {
    const victim = rnd.pick(files);
    for (const u of uppers) mkdirSync(join(u, parentOf(victim)), { recursive: true });
    const content = `rewritten ${round}/${k} `.repeat(10 + rnd.int(40));
    for (const p of at(victim)) { rmSync(p, { force: true, recursive: true }); writeFileSync(p, content); }
  } else {
    for (const u of uppers) {
      writeFileSync(join(u, `${fresh}.a`), 'linked '.repeat(30));
      linkSync(join(u, `${fresh}.a`), join(u, `${fresh}.b`));
    }
  }
}

// With a hardlink in the base, every merge looks for hardlink groups; without one, head.tree
// says the base is link-free and the merge skips that walk until an upper hardlink is committed.
for (const baseLinks of [true, false]) test(`over many random change sets (base ${baseLinks ? 'with' : 'without'} hardlinks), the incremental commit is byte for byte the commit without caches, and the copied tree cache is the fresh encoding`, () =>
  withWork(async (work) => {
    const a = await setup(work, 'a');
    const b = await setup(work, 'b');
    const ns = (await a.store.heads.read('app'))!.xattrNamespace;
    const rnd = new Random(Number(process.env.STRATUM_SEED ?? 14));
    const sizes = join(a.upper, '..', 'base-sizes');
    let fast = 0;
    let linkFree = 0;
    let spliced = 0;
    for (let round = 0; round < 24; round++) {
      // the first half writes whole what is not edits only (head.tree's rounds), the second splices where it can
      const splice = round >= 12;
      const base = (await a.store.heads.read('app'))!.base;
      if (readBaseTreeCache(dirname(a.treeFile), base)?.linkFree) linkFree++;
      // the base's files and directories, and each file's size (a rename keeps it)
      const files: string[] = [];
      const dirs: string[] = [''];
      rmSync(sizes, { recursive: true, force: true });
      for (const [path, entry] of walkTree(baseTree(a.store, base))) {
        if (path === '/') continue;
        if (entry.inode.children) dirs.push(path);
        else if ((entry.inode.mode & 0o170000) === 0o100000 && !entry.hardlink && entry.inode.nlink === 1) {
          files.push(path);
          mkdirSync(join(sizes, path.slice(0, path.lastIndexOf('/'))), { recursive: true });
          truncateSync((writeFileSync(join(sizes, path), ''), join(sizes, path)), entry.inode.size);
        }
      }
      // rounds 1 and 2 of every 4 only rewrite files: an edits-only commit, which records its edits for
      // the tree cache (tree-edits.ts), and the next round starts from head.tree plus those edits
      const editsOnly = round % 4 === 1 || round % 4 === 2;
      for (let k = 1 + rnd.int(4); k > 0; k--) randomChange(rnd, files, dirs, ns, [a.upper, b.upper], round, k, editsOnly, baseLinks);
      pinTimes(a.upper);
      pinTimes(b.upper);
      rmSync(b.cacheFile, { force: true });
      rmSync(b.treeFile, { force: true });
      const ra = await commitHead(a.store, { label: 'app', splice });
      const rb = await commitHead(b.store, { label: 'app' });
      const why = `round ${round} (replay: STRATUM_SEED=${process.env.STRATUM_SEED ?? 14})`;
      assert.is(ra.id, rb.id, `${why}: same commit through the caches as without`);
      const image = readFileSync(a.store.commits.imagePath(ra.id));
      assert.ok(Buffer.from(writeImage(baseTree(a.store, ra.id))).equals(image), `${why}: the image is what the writer makes of the tree read back`);
      if (ra.unchanged) continue;
      if (ra.fastPath) {
        fast++;
        if (splice) continue; // (a spliced commit leaves no head.tree, so the edits after it are not recorded)
        const edited = readBaseTreeCache(dirname(a.treeFile), ra.id);
        assert.ok(edited, `${why}: head.tree and the recorded edits give the tree of the edits-only commit`);
        assert.ok(Buffer.from(writeImage(edited!.tree)).equals(image), `${why}: which writes its image`);
        continue;
      }
      if (ra.path === 'splice') {
        spliced++;
        continue;
      }
      const cached = readTreeCache(a.treeFile, ra.id);
      assert.ok(cached, `${why}: the tree cache names the new commit`);
      assert.ok(encodeTree(ra.id, cached!.tree).equals(cached!.bytes), `${why}: the cache copied from the last one is the fresh encoding of its tree`);
      assert.ok(Buffer.from(writeImage(cached!.tree)).equals(image), `${why}: and writes the commit's image`);
    }
    assert.ok(fast >= 3, `edits-only commits were made (${fast})`);
    await expectReference(a.store, (await a.store.heads.read('app'))!.base, (await a.store.commits.metadata((await a.store.heads.read('app'))!.base)).parentCommit!, 'the last commit');
    if (!baseLinks) assert.ok(linkFree >= 2, `rounds started from a link-free head.tree (${linkFree})`);
    // (a base with hardlinks is never spliced)
    if (!baseLinks) assert.ok(spliced >= 3, `commits were spliced (${spliced})`);
    else assert.is(spliced, 0);
  }, baseLinks));

for (const [what, damage] of [
  ['none (the edits serve)', (_f: string): void => undefined],
  ['a flipped byte', (f: string): void => { const b = readFileSync(f); b[b.length - 5] ^= 1; writeFileSync(f, b); }],
  ['a truncated file', (f: string): void => truncateSync(f, Math.floor(statSync(f).size / 2))],
  ['an empty file', (f: string): void => truncateSync(f, 0)],
] as const) {
  test(`after an edits-only commit, a tree edits file with ${what}: the next full-path commit is the reference`, () =>
    withWork(async (work) => {
      const a = await setup(work, 'a');
      const b = await setup(work, 'b');
      const editsFile = join(dirname(a.treeFile), TREE_EDITS_FILE);
      for (const s of [a, b]) {
        mkdirSync(join(s.upper, 'd0'), { recursive: true });
        writeFileSync(join(s.upper, 'd0', 'f29.dat'), 'rewritten '.repeat(40));
        pinTimes(s.upper);
      }
      const fa = await commitHead(a.store, { label: 'app' });
      const fb = await commitHead(b.store, { label: 'app' });
      assert.ok(fa.fastPath, 'an edits-only commit');
      assert.is(fa.id, fb.id);
      assert.ok(existsSync(editsFile), 'it records its edits beside head.tree');
      assert.ok(readBaseTreeCache(dirname(a.treeFile), fa.id), 'head.tree with the edits is the new base');
      damage(editsFile);
      if (what !== 'none (the edits serve)') assert.is(readBaseTreeCache(dirname(a.treeFile), fa.id), undefined, 'refused');
      rmSync(b.treeFile);
      rmSync(b.cacheFile);
      await change(a.store, a.upper);
      await change(b.store, b.upper);
      const ra = await commitHead(a.store, { label: 'app' });
      const rb = await commitHead(b.store, { label: 'app' });
      assert.is(ra.id, rb.id, 'the same commit as without any cache');
      await expectReference(a.store, ra.id, fa.id, what);
      assert.ok(readTreeCache(a.treeFile, ra.id), 'a full-path commit writes head.tree for itself');
    }));
}

test("edits recorded for another head.tree are not used", () =>
  withWork(async (work) => {
    const { store, upper, treeFile } = await setup(work, 'store');
    const labelDir = dirname(treeFile);
    const edit = (text: string): void => {
      mkdirSync(join(upper, 'd1'), { recursive: true });
      writeFileSync(join(upper, 'd1', 'f29.dat'), text.repeat(40));
      pinTimes(upper);
    };
    edit('one ');
    const first = await commitHead(store, { label: 'app' });
    assert.ok(first.fastPath);
    const edits = readFileSync(join(labelDir, TREE_EDITS_FILE));
    // a full-path commit: head.tree is now its own, and the edits file names another head.tree
    writeFileSync(join(upper, 'new.dat'), 'x'.repeat(300));
    pinTimes(upper);
    const full = await commitHead(store, { label: 'app' });
    assert.not.ok(full.fastPath);
    edit('two ');
    const second = await commitHead(store, { label: 'app' });
    assert.ok(second.fastPath);
    writeFileSync(join(labelDir, TREE_EDITS_FILE), edits); // the old chain: from the import's commit
    assert.is(readBaseTreeCache(labelDir, second.id), undefined, 'refused: its chain does not lead to this base');
    await change(store, upper);
    const r = await commitHead(store, { label: 'app' });
    await expectReference(store, r.id, second.id, 'stale edits');
  }));

for (const [what, damage] of [
  ['a flipped byte', (f: string): void => { const b = readFileSync(f); b[b.length - 40] ^= 1; writeFileSync(f, b); }],
  ['a truncated file', (f: string): void => truncateSync(f, Math.floor(statSync(f).size / 2))],
  ['an empty file', (f: string): void => truncateSync(f, 0)],
  ['72 bytes left (a Merkle cache header)', (f: string): void => truncateSync(f, 72)],
  ['another format version in its magic', (f: string): void => { const b = readFileSync(f); b[3] += 1; writeFileSync(f, b); }],
  ['68 bytes left (a tree cache header)', (f: string): void => truncateSync(f, 68)],
] as const) {
  for (const which of ['Merkle', 'tree'] as const) {
    test(`a ${which} cache with ${what} is refused, and the commit is still the reference`, () =>
      withWork(async (work) => {
        const { store, upper, cacheFile, treeFile } = await setup(work, 'store');
        const parent = (await store.heads.read('app'))!.base;
        if (which === 'Merkle') {
          damage(cacheFile);
          assert.is(readMerkleCache(cacheFile, parent, await store.commits.metadata(parent)), undefined, 'refused');
        } else {
          damage(treeFile);
          assert.is(readTreeCache(treeFile, parent), undefined, 'refused');
        }
        await change(store, upper);
        const r = await commitHead(store, { label: 'app' });
        await expectReference(store, r.id, parent, what);
        assert.ok(readMerkleCache(cacheFile, r.id, await store.commits.metadata(r.id)), 'a good Merkle cache replaces it');
        assert.ok(readTreeCache(treeFile, r.id), 'a good tree cache replaces it');
      }));
  }
}

test('a tree cache whose body is changed and its checksum fixed up is still caught by its structure, or writes the same image', () =>
  withWork(async (work) => {
    // not a defence against a hostile cache (the checksum is for accidents), but decoding must
    // stay bounded: any byte changed gives a miss or a tree, never a hang or a crash
    const { store, treeFile } = await setup(work, 'store');
    const base = (await store.heads.read('app'))!.base;
    const good = readFileSync(treeFile);
    for (let i = 68; i < good.length; i += Math.max(1, Math.floor(good.length / 300))) {
      const bad = Buffer.from(good);
      bad[i] ^= 0xff;
      createHash('sha256').update(bad.subarray(68)).digest().copy(bad, 36);
      decodeTree(bad, base);
    }
  }));

test("another commit's caches are not used", () =>
  withWork(async (work) => {
    const { store, upper, cacheFile } = await setup(work, 'store');
    const parent = (await store.heads.read('app'))!.base;
    const stale = readFileSync(cacheFile);
    const staleTree = readFileSync(join(headPaths(store, 'app').labelDir, TREE_CACHE_FILE));
    // one more commit: the saved cache now belongs to HEAD's previous base
    writeFileSync(join(upper, 'second'), 'second commit');
    const second = await commitHead(store, { label: 'app' });
    writeFileSync(cacheFile, stale);
    writeFileSync(join(headPaths(store, 'app').labelDir, TREE_CACHE_FILE), staleTree);
    assert.is(readTreeCache(join(headPaths(store, 'app').labelDir, TREE_CACHE_FILE), second.id), undefined, 'tree cache refused: written for another commit');
    assert.is(readMerkleCache(cacheFile, second.id, await store.commits.metadata(second.id)), undefined, 'refused: written for another commit');
    assert.not.equal(second.id, parent);
    await change(store, upper);
    const r = await commitHead(store, { label: 'app' });
    await expectReference(store, r.id, second.id, 'stale cache');
  }));

test('the cache is taken for untouched files only, never for directories', () =>
  withWork(async (work) => {
    const { store, upper, cacheFile } = await setup(work, 'store');
    const base = (await store.heads.read('app'))!.base;
    const cache = readMerkleCache(cacheFile, base, await store.commits.metadata(base))!;
    const ns = (await store.heads.read('app'))!.xattrNamespace;
    const build = (c: typeof cache): string => {
      const baseT = baseTree(store, base);
      const merged = mergeUpper(baseT, upper, { ns, style: 'overlay' });
      return buildHeadCommit(merged.tree, base, { base: baseT, cache: c }).meta.merkleRoot;
    };
    mkdirSync(join(upper, 'd3'), { recursive: true });
    writeFileSync(join(upper, 'd3', 'new.dat'), 'new');
    const good = build(cache);
    // A cache whose leaf at `path` is another, its levels above built from its leaves (a commit
    // also takes from the cache the nodes above leaves it did not change).
    const tamper = (path: string): typeof cache => {
      const leaves = Buffer.from(cache.levels[0]!);
      createHash('sha256').update('not this leaf').digest().copy(leaves, 32 * cache.paths.indexOf(path));
      return { ...cache, levels: merkleLevels(leaves) };
    };
    assert.is.not(build(tamper('/d0/f1.dat')), good, 'an untouched file: its leaf comes from the cache');
    assert.is(build(tamper('/d0')), good, 'a directory: hashed again (its size moves with the layout)');
    assert.is(build(tamper('/d3')), good, 'a changed directory: hashed again');
  }));

test('head.merkle round trip: every path and level read back as written, for trees of many sizes; another root or leaf count refused', async () => {
  const work = mkdtempSync(join(tmpdir(), 'stratum-merkle-cache-trip-'));
  try {
    const store = await Store.open(join(work, 'store'), { create: true });
    const file = join(work, MERKLE_CACHE_FILE);
    for (const n of [1, 2, 3, 7, 64, 1000, 1025]) {
      const id = createHash('sha256').update(String(n)).digest('hex');
      const paths = Array.from({ length: n }, (_, i) => (i === 0 ? '/' : `/dir/\xe9t\xe9-${String(i).padStart(5, '0')}`));
      const levels = merkleLevels(Buffer.concat(paths.map((p) => createHash('sha256').update(`${n} ${p}`).digest())));
      const summary = summaryOf(levels);
      const meta: CommitMetadata = { merkleRoot: summary.root, metadataHash: id, timestamp: '', files: { count: n, totalSize: 0 }, merkle: { leafCount: n, treeDepth: summary.depth } };
      await writeMerkleCache(store.tmp, file, { id, paths, levels });
      const got = readMerkleCache(file, id, meta);
      assert.ok(got, `${n} leaves: read back`);
      assert.equal(got!.paths, paths, `${n} leaves: the paths`);
      assert.equal(got!.levels.map((l) => l.toString('hex')), levels.map((l) => l.toString('hex')), `${n} leaves: every level`);
      assert.is(readMerkleCache(file, id, { ...meta, merkleRoot: 'ff'.repeat(32) }), undefined, `${n} leaves: another root refused`);
      assert.is(readMerkleCache(file, id, { ...meta, merkle: { leafCount: n + 1, treeDepth: summary.depth } }), undefined, `${n} leaves: another leaf count refused`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

for (const kind of ['merkle', 'tree'] as const) test(`kill -9 while the ${kind} cache is written leaves no half file that is used later`, async () => {
  const work = mkdtempSync(join(tmpdir(), 'stratum-merkle-cache-kill-'));
  try {
    const store = await Store.open(join(work, 'store'), { create: true });
    const dest = join(work, kind === 'merkle' ? MERKLE_CACHE_FILE : TREE_CACHE_FILE);
    const id = 'ab'.repeat(32);
    const n = kind === 'merkle' ? 200_000 : 50_000;
    const paths = Array.from({ length: n }, (_, i) => `/dir/file-${String(i).padStart(8, '0')}`);
    const summary = summaryOf(merkleLevels(Buffer.concat(paths.map((p) => createHash('sha256').update(p).digest()))));
    const meta: CommitMetadata = { merkleRoot: summary.root, metadataHash: id, timestamp: '', files: { count: n, totalSize: 0 }, merkle: { leafCount: n, treeDepth: summary.depth } };
    const worker = join(dirname(fileURLToPath(import.meta.url)), 'cache-worker.js');
    for (let round = 0; round < 6; round++) {
      const child = spawn(process.execPath, [worker, store.root, kind, dest, id, String(n)], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        child.stdout.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`the cache worker exited (${code}) before it was ready`)));
      });
      await new Promise((r) => setTimeout(r, 50 + round * 97));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      assert.ok(existsSync(dest), `round ${round}: the file written before is still there`);
      if (kind === 'merkle') {
        const got = readMerkleCache(dest, id, meta);
        assert.ok(got, `round ${round}: the file in place is whole`);
        assert.is(got!.paths.length, n);
      } else {
        const got = readTreeCache(dest, id);
        assert.ok(got, `round ${round}: the file in place is whole`);
        assert.is(got!.tree.root.children!.size, n);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

const noUser = userTestsUnavailable();
(noUser ? test.skip : test)('as an ordinary user: the caches are the user\'s own, and commits through them verify', async () => {
  if (noUser) return console.log(`skipped: ${noUser}`);
  const user = testUser();
  const work = mkdtempSync(join(tmpdir(), 'stratum-merkle-cache-user-'));
  try {
    chmodSync(work, 0o755);
    makeSource(join(work, 'src'));
    giveTo(user, work);
    const storeDir = join(work, 'store');
    const env = { env: { STRATUM_STORE: storeDir } };
    const run = (args: string[]): string => {
      const r = stratumAsUser(user, args, env);
      assert.is(r.status, 0, `stratum ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    run(['import', join(work, 'src'), '--label', 'app']);
    const store = await Store.open(storeDir);
    const labelDir = headPaths(store, 'app').labelDir;
    for (const f of [MERKLE_CACHE_FILE, TREE_CACHE_FILE]) {
      const st = statSync(join(labelDir, f));
      assert.is(st.uid, user.uid, `${f} is the user's`);
      assert.is(st.mode & 0o777, 0o600, `${f} is private`);
    }
    await ensureUpper(store, (await store.heads.read('app'))!);
    giveTo(user, labelDir);
    for (const round of [1, 2]) {
      const made = shAsUser(user, `mkdir -p ${labelDir}/head/d${round} && echo added ${round} > ${labelDir}/head/d${round}/new-${round}.txt && head -c 300 /dev/urandom > ${labelDir}/head/big-${round}`);
      assert.is(made.status, 0, made.stderr);
      run(['commit', 'app']);
      const base = (await store.heads.read('app'))!.base;
      const tree = readTreeCache(join(labelDir, TREE_CACHE_FILE), base)?.tree;
      assert.ok(tree, `round ${round}: the tree cache names the new base`);
      assert.ok(Buffer.from(writeImage(tree!)).equals(readFileSync(store.commits.imagePath(base))), `round ${round}: and writes its image`);
      assert.ok(readMerkleCache(join(labelDir, MERKLE_CACHE_FILE), base, await store.commits.metadata(base)), `round ${round}: the Merkle cache names the new base`);
    }
    const verified = stratumAsUser(user, ['verify'], env);
    assert.is(verified.status, 0, verified.stdout + verified.stderr);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test("an edit with the root's mtime or owner changed: the root's whiteout stubs follow it (the commit is the one without caches, its image canonical)", () =>
  withWork(async (work) => {
    const { a, b } = await withAndWithoutCaches(work);
    for (const s of [a, b]) {
      mkdirSync(join(s.upper, 'd0'), { recursive: true });
      writeFileSync(join(s.upper, 'd0', 'f29.dat'), 'rewritten '.repeat(40));
      pinTimes(s.upper);
      lutimesSync(s.upper, 1_750_000_000, 1_750_000_000); // the root alone gets another mtime
    }
    const ra = await commitHead(a.store, { label: 'app' });
    const rb = await commitHead(b.store, { label: 'app' });
    assert.ok(Buffer.from(writeImage(baseTree(a.store, ra.id))).equals(readFileSync(a.store.commits.imagePath(ra.id))), 'the image is what the writer makes of its tree');
    assert.is(ra.id, rb.id);
    assert.is(ra.path, 'splice', 'not patched in place: the 256 stubs carry the root\'s mtime');
  }, false));

test('an edit that moves the only inode at the minimum mtime off it: the minimum rises (the commit is the one without caches, its image canonical)', () =>
  withWork(async (work) => {
    const { a, b } = await withAndWithoutCaches(work);
    const ns = (await a.store.heads.read('app'))!.xattrNamespace;
    // a metadata-only change as the kernel leaves it: a metacopy file of the same size
    const touch = (upper: string, sec: number): void => {
      mkdirSync(join(upper, 'd0'), { recursive: true });
      const p = join(upper, 'd0', 'f5.dat');
      writeFileSync(p, '');
      truncateSync(p, 72);
      lsetxattr(p, `${ns}.overlay.metacopy`, new Uint8Array(0));
      lchownSync(p, 70000, 70000); // an owner above 16 bits: stored extended even at the minimum
      pinTimes(upper);
      lutimesSync(p, sec, sec);
    };
    for (const sec of [1_500_000_000, 1_650_000_000]) { // below every other mtime, then off it again
      for (const s of [a, b]) touch(s.upper, sec);
      const ra = await commitHead(a.store, { label: 'app' });
      const rb = await commitHead(b.store, { label: 'app' });
      rmSync(b.cacheFile, { force: true });
      rmSync(b.treeFile, { force: true });
      assert.ok(Buffer.from(writeImage(baseTree(a.store, ra.id))).equals(readFileSync(a.store.commits.imagePath(ra.id))), `mtime ${sec}: the image is what the writer makes of its tree`);
      assert.is(ra.id, rb.id, `mtime ${sec}`);
    }
  }, false));

test('a copied file (its object xattrs then shared), then the copy deleted (shared no more): spliced, the commit is the one without caches, its image canonical', () =>
  withWork(async (work) => {
    const { a, b } = await withAndWithoutCaches(work);
    const copy = readFileSync(join(work, 'src', 'd1', 'f5.dat'));
    for (const step of ['copied', 'deleted'] as const) {
      for (const s of [a, b]) {
        if (step === 'copied') writeFileSync(join(s.upper, 'f5-copy.dat'), copy);
        else mknod(join(s.upper, 'f5-copy.dat'), S_IFCHR | 0o644, 0, 0);
        pinTimes(s.upper);
      }
      const ra = await commitHead(a.store, { label: 'app' });
      const rb = await commitHead(b.store, { label: 'app' });
      rmSync(b.cacheFile, { force: true });
      rmSync(b.treeFile, { force: true });
      assert.ok(Buffer.from(writeImage(baseTree(a.store, ra.id))).equals(readFileSync(a.store.commits.imagePath(ra.id))), `${step}: the image is what the writer makes of its tree`);
      assert.is(ra.id, rb.id, step);
      assert.is(ra.path, 'splice', step);
    }
  }, false));

for (const change of ['a new file (splice path)', 'an edited file (edits-only path)', 'a new file and no caches (full path)'] as const) {
  test(`a damaged base image under ${change}: the commit is CORRUPT_STORE, HEAD and its upper stay as they were`, () =>
    withWork(async (work) => {
      const a = await setup(work, 'a');
      const base = (await a.store.heads.read('app'))!.base;
      if (change.includes('full path')) {
        // no Merkle cache (so neither the edits-only path nor the splice) and no head.tree (a checksummed one would serve instead of the image)
        rmSync(a.cacheFile);
        rmSync(a.treeFile);
      }
      if (change.startsWith('a new')) writeFileSync(join(a.upper, 'another.dat'), 'another '.repeat(30));
      else {
        mkdirSync(join(a.upper, 'd0'), { recursive: true });
        writeFileSync(join(a.upper, 'd0', 'f29.dat'), 'rewritten '.repeat(40));
      }
      pinTimes(a.upper);
      const image = a.store.commits.imagePath(base);
      chmodSync(image, 0o644);
      const bytes = readFileSync(image);
      bytes[bytes.length - 100] ^= 0x40; // in the data blocks: the image still reads, only its digest tells
      writeFileSync(image, bytes);
      try {
        await commitHead(a.store, { label: 'app' });
        assert.unreachable('the commit went on');
      } catch (err) {
        assert.instance(err, StratumError);
        assert.is((err as StratumError).code, 'CORRUPT_STORE');
        assert.match((err as Error).message, 'stratum verify');
      }
      assert.is((await a.store.heads.read('app'))!.base, base, 'HEAD keeps its base');
      assert.ok(readdirSync(a.upper).length > 0, 'and its upper');
    }, false));
}

test.run();
