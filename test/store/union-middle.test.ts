// UnionView with a middle layer: a live commit's old upper, read-only between the image and the
// upper that takes the writes (docs/union.md "Middle layer"). The rules are overlayfs' for a
// lower dir layer: whiteouts, opaque dirs and redirects in the middle speak about the image; the
// upper's speak about middle and image together.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mknod, S_IFCHR } from '../../src/native/files.js';
import { lsetxattr } from '../../src/native/xattr.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { FileSource, ImageReader } from '../../src/store/image/read.js';
import { Store } from '../../src/store/store.js';
import { UnionView } from '../../src/store/union.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';
import { withTempDir } from '../helpers/dirs.js';

const isRoot = process.getuid?.() === 0;

test('a middle layer: its whiteouts, opaque dirs, redirects and metacopy files read as overlayfs reads a lower dir layer; the upper over both', () =>
  withTempDir(async (dir) => {
    const src = join(dir, 'src');
    const files: Record<string, string | Buffer> = { 'd1/a': 'a', 'd1/b': 'b', 'd2/c': 'c', 'moved/m': pseudoRandomBytes(500, 1), 'f.bin': pseudoRandomBytes(700, 2), 'keep.txt': 'k' };
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(join(src, path, '..'), { recursive: true });
      writeFileSync(join(src, path), content);
    }
    const store = await Store.open(join(dir, 'store'), { create: true });
    const { id } = await importDirectory(store, src, { label: 'app' });
    const middle = join(dir, 'middle'), upper = join(dir, 'upper');
    mkdirSync(middle);
    mkdirSync(upper);
    // the middle: what an upper looks like after a session of changes
    mkdirSync(join(middle, 'd1'));
    lsetxattr(join(middle, 'd1'), 'user.overlay.opaque', Buffer.from('y'));
    writeFileSync(join(middle, 'd1', 'only'), 'o');
    mkdirSync(join(middle, 'renamed'));
    lsetxattr(join(middle, 'renamed'), 'user.overlay.redirect', Buffer.from('/moved'));
    writeFileSync(join(middle, 'f.bin'), Buffer.alloc(0));
    lsetxattr(join(middle, 'f.bin'), 'user.overlay.metacopy', Buffer.alloc(0));
    writeFileSync(join(middle, 'new.txt'), 'mid');
    if (isRoot) mknod(join(middle, 'd2'), S_IFCHR, 0, 0);
    // the upper over it
    mkdirSync(join(upper, 'd1'));  // merges the middle's (opaque) d1
    writeFileSync(join(upper, 'd1', 'up'), 'u');
    mkdirSync(join(upper, 'renamed'));  // merges the middle's renamed, which goes on to /moved
    writeFileSync(join(upper, 'renamed', 'extra'), 'e');
    mkdirSync(join(upper, 'moved2'));
    lsetxattr(join(upper, 'moved2'), 'user.overlay.redirect', Buffer.from('/renamed'));  // a path in middle + image
    writeFileSync(join(upper, 'top.txt'), 't');
    if (isRoot) mknod(join(upper, 'new.txt'), S_IFCHR, 0, 0);

    const source = new FileSource(store.commits.imagePath(id));
    try {
      const view = new UnionView(ImageReader.open(source), upper, 'user', middle);
      assert.ok(view.layered);
      const names = (p: string) => view.readdir(view.lookup(p)!);
      assert.equal(names('/'), ['d1', ...(isRoot ? [] : ['d2']), 'f.bin', 'keep.txt', 'moved', 'moved2', ...(isRoot ? [] : ['new.txt']), 'renamed', 'top.txt']);
      assert.equal(names('/d1'), ['only', 'up'], 'the middle\'s opaque dir hides the image below it, the upper merges with it');
      assert.equal(names('/renamed'), ['extra', 'm'], 'upper dir -> middle dir -> its redirect into the image');
      assert.equal(names('/moved2'), ['m'], 'an upper redirect resolves through the middle\'s redirect');
      assert.is(view.content(view.lookup('/f.bin')!).kind, 'object', 'a middle metacopy file: data from the image');
      assert.is(view.getattr(view.lookup('/f.bin')!).mode & 0o170000, 0o100000);
      const only = view.content(view.lookup('/d1/only')!);
      assert.is(only.kind, 'upper');
      assert.is(readFileSync((only as { path: Buffer }).path, 'utf8'), 'o', 'a middle file is read from the middle');
      assert.is(view.getattr(view.lookup('/d1/only')!).size, 1);
      assert.is(view.lookup('/d1/a'), undefined, 'hidden by the opaque middle dir');
      assert.ok(view.lookup('/keep.txt')?.lower !== undefined, 'image entries the layers above leave alone');
      // what a writer must know: a name that exists below the upper needs a whiteout when removed
      const root = view.root();
      assert.ok(view.inBelow(root, 'keep.txt'), 'in the image');
      assert.ok(view.inBelow(root, 'f.bin'), 'in the middle');
      assert.not.ok(view.inBelow(root, 'top.txt'), 'upper only');
      assert.not.ok(view.inBelow(view.lookup('/d1')!, 'a'), 'hidden by the middle\'s opaque dir');
      assert.ok(view.inBelow(view.lookup('/d1')!, 'only'));
      assert.ok(view.hasBelow(view.lookup('/renamed')!));
      assert.not.ok(view.hasBelow(view.lookup('/top.txt')!));
      if (isRoot) {
        assert.is(view.lookup('/d2'), undefined, 'a middle whiteout hides the image entry');
        assert.is(view.lookup('/new.txt'), undefined, 'an upper whiteout hides the middle entry');
        assert.ok(view.inBelow(root, 'new.txt'), 'still there below the upper');
        assert.not.ok(view.inBelow(root, 'd2'), 'whited out in the middle');
      }
      // without a middle, the same upper reads as before (the middle's entries are simply absent)
      const plain = new UnionView(ImageReader.open(source), upper, 'user');
      assert.not.ok(plain.layered);
      assert.equal(plain.readdir(plain.lookup('/d1')!), ['a', 'b', 'up']);
    } finally {
      source.close();
    }
  }));

test.run();
