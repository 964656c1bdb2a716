import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StratumError } from '../../../src/store/error.js';
import { parseDump, serializeDump } from '../../../src/store/image/dump.js';
import { lookupPath } from '../../../src/store/image/tree.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VECTOR_DIR, loadVectors } from './vectors.js';

const isCorrupt = (e: unknown): boolean => e instanceof StratumError && e.code === 'CORRUPT_IMAGE';

test('parse then serialize gives back the dump (hand-written vectors use canonical form)', () => {
  for (const file of ['types.dump', 'xattrs-many.dump', 'minimal.dump', 'compact.dump']) {
    const v = loadVectors().find((x) => x.file === file)!;
    const text = v.dump.toString('latin1');
    const again = serializeDump(parseDump(text));
    // Same set of lines (serialization orders depth-first by name; the file may not).
    assert.equal(again.split('\n').sort(), text.split('\n').sort(), file);
  }
});

test('serialize is a fixed point after one round for every vector', () => {
  for (const v of loadVectors()) {
    if (v.options.minVersion !== undefined) continue;
    const once = serializeDump(parseDump(v.dump));
    assert.is(serializeDump(parseDump(once)), once, v.file);
  }
});

test('reading and re-printing composefs-info output gives the same text (its escaping rules)', () => {
  for (const name of ['names', 'types', 'inline', 'hardlinks']) {
    const text = readFileSync(join(VECTOR_DIR, `${name}.composefs-info.txt`), 'latin1');
    assert.is(serializeDump(parseDump(text)), text, name);
  }
});

test('escapes: \\x, \\\\, \\n, lone dash, = in xattr names, spaces', () => {
  const tree = parseDump('/ 4096 40755 2 0 0 0 0.0 - - -\n/a\\x20b\\x3d\\n\\\\ 1 100644 1 0 0 0 5.7 - \\x2d - user.k\\x3d=v\\x3d\\x00\n');
  const name = [...tree.root.children!.keys()][0]!;
  assert.is(name, 'a b=\n\\');
  const f = tree.root.children!.get(name)!.inode;
  assert.is(Buffer.from(f.content!).toString('latin1'), '-');
  assert.is(f.xattrs[0]!.name, 'user.k=');
  assert.equal([...f.xattrs[0]!.value], [0x76, 0x3d, 0]);
  assert.is(f.mtimeSec, 5);
  assert.is(f.mtimeNsec, 7);
  const line = serializeDump(tree).split('\n')[1]!;
  assert.is(line, '/a\\x20b=\\n\\\\ 1 100644 1 0 0 0 5.7 - \\x2d - user.k\\x3d=v\\x3d\\x00');
});

test('hardlinks share one inode, also through chains and forward references', () => {
  const tree = parseDump(loadVectors().find((x) => x.file === 'hardlinks.dump')!.dump);
  const z = lookupPath(tree, '/z')!;
  assert.ok(lookupPath(tree, '/a') === z);
  assert.ok(lookupPath(tree, '/d/b') === z);
  assert.ok(lookupPath(tree, '/d/chain') === z);
  assert.is(z.nlink, 4);
  assert.is(tree.root.children!.get('z')!.hardlink, false);
  assert.is(tree.root.children!.get('a')!.hardlink, true);
});

test('bad dumps fail with CORRUPT_IMAGE naming the line', () => {
  const root = '/ 4096 40755 2 0 0 0 0.0 - - -\n';
  const bad = [
    '/a 0 100644 1 0 0 0 0.0 - - -\n', // no root yet
    root + '/a/b 0 100644 1 0 0 0 0.0 - - -\n', // parent missing
    root + '/a 0 170644 1 0 0 0 0.0 - - -\n', // bad type
    root + '/a 0 100644 1 0 0 0 0 - - -\n', // mtime without nsec
    root + '/a 3 100644 1 0 0 0 0.0 - ab -\n', // content size mismatch
    root + '/a 0 100644 1 0 0 0 0.0 - - - user.x\n', // xattr without =
    root + '/a 0 100644 1 0 0 0 0.0 - - - user.x=\\q\n', // bad escape
    root + '/a 0 100644 1 0 0 0 0.0 - - - user.x=\\x4\n', // short hex escape
    root + '/a 0 @100644 1 0 0 0 0.0 /nope - -\n', // hardlink target missing
    root + '/a 0 @100644 1 0 0 0 0.0 /a - -\n', // self link
    root + '/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n', // cycle
    root + '/. 0 100644 1 0 0 0 0.0 - - -\n',
    root + '/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n', // duplicate
    root + '/l 0 120777 1 0 0 0 0.0 - - -\n', // symlink without target
    root + '/a 0 100644 1 0 0 0 0.0 - -\n', // too few fields
    root + root, // two roots
    root + '/a 0 100644 1 0 0 0 0.0 - - 12\n', // bad digest
  ];
  for (const text of bad) assert.throws(() => parseDump(text), isCorrupt, JSON.stringify(text));
  try {
    parseDump(root + '/a 0 100644 1 0 0 0 x.0 - - -\n');
  } catch (e) {
    assert.match((e as Error).message, /line 2/);
  }
});

test.run();
