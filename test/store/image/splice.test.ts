import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG } from '../../../src/store/image/erofs.js';
import { lazyImageTree } from '../../../src/store/image/image-tree.js';
import { ImageReader } from '../../../src/store/image/read.js';
import { indexBase, spliceImage } from '../../../src/store/image/splice.js';
import { type Inode, type Tree, newInode, objectPath } from '../../../src/store/image/tree.js';
import { writeImage } from '../../../src/store/image/write.js';
import { Random } from '../head/ops.js';

// The splice writer against the writer: random base trees, written; each read back lazily,
// changed the way a commit's merge changes it (copy on write along the changed paths: an inode
// left in place is the base's, with all below it), and written both ways. Wherever the splice
// does not refuse, its image must be writeImage's, byte for byte.

const random = new Random(Number(process.env.STRATUM_SEED ?? 0x2545f491));
const ri = (n: number): number => random.int(n);
const hex = (n: number): string => Array.from({ length: n }, () => '0123456789abcdef'[ri(16)]).join('');
const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => ri(256)));
// names that sort around '.' and '..' (strcmp), short and long ones (dirents spill into blocks)
const NAMES = ['a', 'b', 'c', '-x', '!y', '.h', '..z', 'zz', 'Zeta', '00', 'ff', 'a.b'];
function fail(why: string): never {
  assert.unreachable(why);
  throw new Error(why);
}
const name = (): string => (ri(4) === 0 ? NAMES[ri(NAMES.length)]! : `${hex(1 + ri(3))}${ri(8) === 0 ? 'x'.repeat(100 + ri(150)) : ''}`);

function randomInode(min: number): Inode {
  const mtimeSec = min + ri(3); // several inodes at the minimum: losing one of them is not losing the minimum
  const uid = ri(6) === 0 ? 70000 + ri(5) : ri(3);
  const xattrs = [];
  if (ri(3) === 0) xattrs.push({ name: 'user.tag', value: Buffer.from(['x', 'y', 'z'][ri(3)]!) }); // shared, mostly
  if (ri(8) === 0) xattrs.push({ name: `user.u${hex(6)}`, value: bytes(1 + ri(20)) }); // on one inode
  if (ri(6) === 0) xattrs.push({ name: 'security.selinux', value: Buffer.from('system_u:object_r:etc_t:s0') });
  const common = { uid, gid: uid, mtimeSec, mtimeNsec: ri(2) * 500, xattrs };
  switch (ri(10)) {
    case 0: case 1: return newInode({ mode: S_IFDIR | 0o755, ...common });
    case 2: case 3: case 4: {
      const digest = hex(64);
      return newInode({ mode: S_IFREG | 0o644, ...common, size: 65 + ri(1 << 20), digest, payload: objectPath(digest) });
    }
    case 5: return newInode({ mode: S_IFREG | 0o600, ...common, content: bytes(1 + (ri(4) === 0 ? ri(5000) : ri(64))) });
    case 6: return newInode({ mode: S_IFLNK | 0o777, ...common, symlinkTarget: 't'.repeat(1 + (ri(5) === 0 ? ri(4000) : ri(40))) });
    case 7: return newInode({ mode: (ri(2) ? S_IFCHR : S_IFBLK) | 0o600, ...common, rdev: 1 + ri(1000) });
    case 8: return newInode({ mode: S_IFIFO | 0o644, ...common });
    default: return newInode({ mode: S_IFREG | 0o644, ...common });
  }
}

function randomTree(): Tree {
  const min = 1_000_000;
  const root = newInode({ mode: S_IFDIR | 0o755, mtimeSec: min });
  const dirs: Inode[] = [root];
  const n = 5 + ri(ri(6) === 0 ? 1500 : 200);
  for (let i = 0; i < n; i++) {
    const dir = ri(10) === 0 ? dirs[0]! : dirs[ri(dirs.length)]!;
    const nm = name();
    if (dir.children!.has(nm)) continue;
    const inode = randomInode(min);
    dir.children!.set(nm, { inode, hardlink: false });
    if ((inode.mode & S_IFMT) === S_IFDIR) dirs.push(inode);
  }
  return { root };
}

/** A copy of an inode: same fields, its own children map (the original's entries). */
function clone(n: Inode): Inode {
  const c = newInode({ mode: n.mode, uid: n.uid, gid: n.gid, nlink: n.nlink, mtimeSec: n.mtimeSec, mtimeNsec: n.mtimeNsec, size: n.size, rdev: n.rdev, xattrs: [...n.xattrs] });
  if (n.symlinkTarget !== undefined) c.symlinkTarget = n.symlinkTarget;
  if (n.content !== undefined) c.content = n.content;
  if (n.digest !== undefined) { c.digest = n.digest; c.payload = n.payload!; }
  if (n.children) c.children = new Map(n.children);
  return c;
}

/** Random directories by path from the root (read lazily as they are walked). */
function randomDirPath(tree: Tree): string[] {
  const path: string[] = [];
  let dir = tree.root;
  while (ri(3) !== 0) {
    const subdirs = [...dir.children!].filter(([, e]) => (e.inode.mode & S_IFMT) === S_IFDIR);
    if (subdirs.length === 0) break;
    const [nm, e] = subdirs[ri(subdirs.length)]!;
    path.push(nm);
    dir = e.inode;
  }
  return path;
}

/** The directory at `path`, every directory on the way (and it) replaced by a copy: the merge's copy on write. */
function cow(tree: Tree, path: string[]): Inode {
  let dir = tree.root; // the root is always a fresh inode (as the merge makes it)
  for (const nm of path) {
    const copy = clone(dir.children!.get(nm)!.inode);
    dir.children!.set(nm, { inode: copy, hardlink: false });
    dir = copy;
  }
  return dir;
}

function change(tree: Tree): void {
  const ops = 1 + ri(4);
  for (let i = 0; i < ops; i++) {
    const path = randomDirPath(tree);
    const dir = cow(tree, path);
    const names = [...dir.children!.keys()];
    const pick = names[ri(names.length)];
    switch (ri(7)) {
      case 0: { // a new entry (a file, a directory with a few)
        const nm = name();
        if (dir.children!.has(nm)) break;
        const inode = randomInode(1_000_000 + 1);
        if (inode.children) for (let j = ri(4); j > 0; j--) inode.children.set(`n${j}`, { inode: randomInode(1_000_001), hardlink: false });
        dir.children!.set(nm, { inode, hardlink: false });
        break;
      }
      case 1: // deleted
        if (pick !== undefined) dir.children!.delete(pick);
        break;
      case 2: { // renamed, maybe into another directory: the same inode, elsewhere
        if (pick === undefined) break;
        const entry = dir.children!.get(pick)!;
        dir.children!.delete(pick);
        const to = ri(2) === 0 ? dir : cow(tree, randomDirPath(tree));
        const nm = `${pick}.${hex(2)}`;
        if ((entry.inode.mode & S_IFMT) === S_IFDIR && to !== dir) break; // (keeps the tree a tree without looking for cycles)
        if (!to.children!.has(nm)) to.children!.set(nm, entry);
        break;
      }
      case 3: { // chmod / touch of an entry (a new inode with the old one's content)
        if (pick === undefined) break;
        const c = clone(dir.children!.get(pick)!.inode);
        c.mode = (c.mode & S_IFMT) | 0o700;
        c.mtimeSec += 7;
        dir.children!.set(pick, { inode: c, hardlink: false });
        break;
      }
      case 4: // the directory itself touched
        dir.mtimeSec += 3;
        break;
      case 5: { // copied (cp): a new inode with the same content and xattrs; an object's xattrs then become shared
        if (pick === undefined || (dir.children!.get(pick)!.inode.mode & S_IFMT) === S_IFDIR) break;
        const nm = `${pick}.copy`;
        if (!dir.children!.has(nm)) dir.children!.set(nm, { inode: clone(dir.children!.get(pick)!.inode), hardlink: false });
        break;
      }
      default: { // an xattr added to an entry
        if (pick === undefined) break;
        const c = clone(dir.children!.get(pick)!.inode);
        if (c.xattrs.some((x) => x.name === 'user.tag')) break;
        c.xattrs.push({ name: 'user.tag', value: Buffer.from('x') });
        dir.children!.set(pick, { inode: c, hardlink: false });
      }
    }
  }
}

test('the splice writes what the writer writes, or refuses', () => {
  let spliced = 0;
  const reasons = new Map<string, number>();
  const ROUNDS = Number(process.env.STRATUM_SPLICE_ROUNDS ?? 300);
  for (let round = 0; round < ROUNDS; round++) {
    const baseImage = Buffer.from(writeImage(randomTree()));
    const { tree: lazy, origin } = lazyImageTree(ImageReader.whole(baseImage));
    // the merge always makes a fresh root
    const tree: Tree = { root: clone(lazy.root) };
    change(tree);
    const index = indexBase(baseImage);
    if (typeof index === 'string') fail(`base refused: ${index}`);
    const out = spliceImage(index, tree, (inode) => origin.get(inode)?.nid);
    const expected = Buffer.from(writeImage(tree));
    if (typeof out === 'string') {
      reasons.set(out, (reasons.get(out) ?? 0) + 1);
      continue;
    }
    spliced++;
    if (!out.image.equals(expected)) {
      let at = 0;
      while (out.image[at] === expected[at]) at++;
      assert.unreachable(`round ${round}: spliced image differs from the writer's at byte ${at} (sizes ${out.image.length}, ${expected.length})`);
    }
  }
  // Refusals are the exception (a change that moves a tree-wide decision), not the rule.
  if (process.env.STRATUM_DEBUG_SPLICE) console.log(spliced, [...reasons]);
  assert.ok(spliced >= ROUNDS * 0.6, `only ${spliced} of ${ROUNDS} spliced: ${JSON.stringify([...reasons])}`);
});

test('an unchanged tree splices to the base image itself', () => {
  for (let round = 0; round < 20; round++) {
    const baseImage = Buffer.from(writeImage(randomTree()));
    const { tree: lazy, origin } = lazyImageTree(ImageReader.whole(baseImage));
    const index = indexBase(baseImage);
    if (typeof index === 'string') fail(index);
    const out = spliceImage(index, { root: clone(lazy.root) }, (inode) => origin.get(inode)?.nid);
    if (typeof out === 'string') fail(out);
    assert.ok(out.image.equals(baseImage));
  }
});

test.run();
