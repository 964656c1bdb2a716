// What import records is the tree itself, not accidents of the disk it sits on: pre-1970 times
// are stored (signed, as the kernel reads them) and link counts count links inside the tree only.
import { linkSync, lstatSync, mkdirSync, symlinkSync, utimesSync, lutimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MNT_DETACH, MS_RDONLY, mount, umount2 } from '../../src/native/mount.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { verify } from '../../src/store/commands/verify.js';
import { parseDump, serializeDump } from '../../src/store/image/dump.js';
import { FileSource, ImageReader, walkImage } from '../../src/store/image/read.js';
import { Store } from '../../src/store/store.js';
import { imageTreeFromBytes } from '../../src/store/union.js';
import { readFileSync } from 'node:fs';
import { pseudoRandomBytes } from '../helpers/bytes.js';
import { withTempDir } from '../helpers/dirs.js';
import { isRoot, kernelUnsupported } from './head/kernel.js';

const Y1960 = new Date('1960-06-15T12:00:00.250Z');
const Y1960_SEC = Math.floor(Y1960.getTime() / 1000); // -237168000

function attrsOf(store: Store, id: string): Map<string, { mtimeSec: number; mtimeNsec: number; nlink: number }> {
  const source = new FileSource(store.commits.imagePath(id));
  try {
    const reader = ImageReader.open(source);
    const out = new Map<string, { mtimeSec: number; mtimeNsec: number; nlink: number }>();
    walkImage(reader, (path, attr) => void out.set(path, { mtimeSec: attr.mtimeSec, mtimeNsec: attr.mtimeNsec, nlink: attr.nlink }));
    return out;
  } finally {
    source.close();
  }
}

function oldTree(src: string): void {
  mkdirSync(join(src, 'sub'), { recursive: true });
  writeFileSync(join(src, 'sub', 'old.txt'), pseudoRandomBytes(5000, 7));
  writeFileSync(join(src, 'new.txt'), 'recent\n');
  symlinkSync('sub/old.txt', join(src, 'link'));
  utimesSync(join(src, 'sub', 'old.txt'), Y1960, Y1960);
  lutimesSync(join(src, 'link'), Y1960, Y1960);
  utimesSync(join(src, 'sub'), Y1960, Y1960);
}

test('import stores a 1960 mtime, reads it back, and the same tree gives the same id twice', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    oldTree(src);
    assert.is(Math.floor(lstatSync(join(src, 'sub', 'old.txt')).mtimeMs / 1000), Y1960_SEC, 'the source really is from 1960');
    const a = await Store.open(join(dir, 'a'), { create: true });
    const b = await Store.open(join(dir, 'b'), { create: true });
    const first = await importDirectory(a, src, { label: 'old' });
    const second = await importDirectory(b, src, { label: 'old' });
    assert.is(second.id, first.id);
    const attrs = attrsOf(a, first.id);
    assert.equal(attrs.get('/sub/old.txt')!.mtimeSec, Y1960_SEC);
    assert.equal(attrs.get('/sub/old.txt')!.mtimeNsec, 250_000_000);
    assert.equal(attrs.get('/link')!.mtimeSec, Y1960_SEC);
    assert.equal(attrs.get('/sub')!.mtimeSec, Y1960_SEC);
    // the fast whole-image parser agrees with the reader
    const tree = imageTreeFromBytes(readFileSync(a.commits.imagePath(first.id)));
    const sub = tree.root.children!.get('sub')!.inode;
    assert.is(sub.mtimeSec, Y1960_SEC);
    assert.is(sub.children!.get('old.txt')!.inode.mtimeSec, Y1960_SEC);
    // the text dump (composefs-info dump format) round-trips the signed time
    const again = parseDump(serializeDump(tree));
    assert.is(again.root.children!.get('sub')!.inode.mtimeSec, Y1960_SEC);
    const report = await verify(a, undefined);
    assert.equal(report.problems, []);
  }),
);

test('the kernel shows a 1960 mtime from a mounted commit', async () => {
  if (!isRoot || kernelUnsupported) {
    console.log(`  skipped: ${kernelUnsupported ?? 'kernel mounts need root'}`);
    return;
  }
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    oldTree(src);
    const store = await Store.open(join(dir, 'store'), { create: true });
    const { id } = await importDirectory(store, src, { label: 'old' });
    const lower = join(dir, 'lower');
    const merged = join(dir, 'merged');
    mkdirSync(lower);
    mkdirSync(merged);
    const mounted: string[] = [];
    try {
      mount(store.commits.imagePath(id), lower, 'erofs', MS_RDONLY, null);
      mounted.push(lower);
      mount('overlay', merged, 'overlay', MS_RDONLY, `lowerdir=${lower}::${store.objects.root},metacopy=on,redirect_dir=on`);
      mounted.push(merged);
      const st = lstatSync(join(merged, 'sub', 'old.txt'), { bigint: true });
      assert.is(st.mtimeNs, BigInt(Y1960.getTime()) * 1_000_000n);
      assert.is(new Date(Number(st.mtimeMs)).getUTCFullYear(), 1960);
      assert.is(lstatSync(join(merged, 'link'), { bigint: true }).mtimeNs, BigInt(Y1960.getTime()) * 1_000_000n);
      assert.equal(readFileSync(join(merged, 'sub', 'old.txt')), pseudoRandomBytes(5000, 7));
      // and the erofs layer alone (compact inodes take the image's build time, here 1960)
      assert.is(lstatSync(join(lower, 'sub'), { bigint: true }).mtimeNs, BigInt(Y1960.getTime()) * 1_000_000n);
    } finally {
      for (const m of mounted.reverse()) {
        try {
          umount2(m, 0);
        } catch {
          umount2(m, MNT_DETACH);
        }
      }
    }
  });
});

test('a second link outside the imported dir does not count: nlink and id are those of the tree alone', () =>
  withTempDir(async (dir) => {
    const plain = join(dir, 'plain');
    const linked = join(dir, 'linked');
    for (const src of [plain, linked]) {
      mkdirSync(join(src, 'd'), { recursive: true });
      writeFileSync(join(src, 'a'), pseudoRandomBytes(3000, 1));
      writeFileSync(join(src, 'tiny'), 'x');
      writeFileSync(join(src, 'pair1'), pseudoRandomBytes(2000, 2));
      linkSync(join(src, 'pair1'), join(src, 'd', 'pair2'));
      const when = new Date('2020-01-01T00:00:00Z');
      for (const p of ['a', 'tiny', 'pair1', 'd', '.']) utimesSync(join(src, p), when, when);
    }
    // outside links to a file, a tiny inline file and one of a pair inside the tree
    linkSync(join(linked, 'a'), join(dir, 'outside-a'));
    linkSync(join(linked, 'tiny'), join(dir, 'outside-tiny'));
    linkSync(join(linked, 'pair1'), join(dir, 'outside-pair'));
    assert.is(lstatSync(join(linked, 'a')).nlink, 2);
    assert.is(lstatSync(join(linked, 'pair1')).nlink, 3);
    const store = await Store.open(join(dir, 'store'), { create: true });
    const one = await importDirectory(store, plain, { label: 'plain' });
    const two = await importDirectory(store, linked, { label: 'linked' });
    const attrs = attrsOf(store, two.id);
    assert.is(attrs.get('/a')!.nlink, 1);
    assert.is(attrs.get('/tiny')!.nlink, 1);
    assert.is(attrs.get('/pair1')!.nlink, 2);
    assert.is(attrs.get('/d/pair2')!.nlink, 2);
    assert.is(two.id, one.id);
  }),
);

test.run();
