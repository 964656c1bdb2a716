import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { lgetxattr, lsetxattr } from '../../src/native/xattr.js';
import { UpperWriter } from '../../src/store/union-write.js';
import { readUpperEntry } from '../../src/store/upper.js';
import { tmpdir } from 'node:os';

// UpperWriter without a mount: each change leaves exactly what kernel overlayfs would read back.
const isRoot = process.getuid?.() === 0;
const ns = isRoot ? 'trusted' : 'user';
let dir: string;
let upper: string;
let w: UpperWriter;
const B = (p: string) => Buffer.from(p);
const entry = (p: string) => readUpperEntry(B(p), fs.lstatSync(p, { bigint: true }), ns, 'overlay');

test.before.each(() => {
  dir = fs.mkdtempSync(join(tmpdir(), 'stratum-uw-'));
  upper = join(dir, 'upper');
  fs.mkdirSync(upper);
  w = new UpperWriter(ns, join(dir, 'work', 'fuse'));
});
test.after.each(() => fs.rmSync(dir, { recursive: true, force: true }));

test('copy-up keeps mode, owner, times to the nanosecond and xattrs (overlay-named ones escaped)', () => {
  const dest = B(join(upper, 'f'));
  w.copyUp(dest, { mode: 0o100640, uid: isRoot ? 1234 : process.getuid!(), gid: isRoot ? 5678 : process.getgid!(), rdev: 0, mtimeSec: 1_000_000_000, mtimeNsec: 123_456_789,
    xattrs: [{ name: 'user.a', value: B('1') }, { name: `${ns}.overlay.x`, value: B('2') }] }, { kind: 'bytes', bytes: B('content') });
  const st = fs.lstatSync(dest, { bigint: true });
  assert.is(Number(st.mode), 0o100640);
  if (isRoot) assert.equal([Number(st.uid), Number(st.gid)], [1234, 5678]);
  assert.is(st.mtimeNs, 1_000_000_000_123_456_789n);
  assert.is(fs.readFileSync(dest, 'utf8'), 'content');
  assert.is(lgetxattr(dest, 'user.a').toString(), '1');
  assert.is(lgetxattr(dest, `${ns}.overlay.overlay.x`).toString(), '2');
  assert.is(entry(join(upper, 'f')).kind, 'plain');
  assert.equal(fs.readdirSync(join(dir, 'work', 'fuse')), [], 'nothing left in the scratch dir');
});

test('a whiteout replaces a file or an upper dir holding only whiteouts', () => {
  fs.writeFileSync(join(upper, 'f'), 'x');
  w.whiteout(B(join(upper, 'f')));
  assert.is(entry(join(upper, 'f')).kind, 'whiteout');
  fs.mkdirSync(join(upper, 'd'));
  w.whiteout(B(join(upper, 'd', 'gone')));
  w.whiteout(B(join(upper, 'd')));
  assert.is(entry(join(upper, 'd')).kind, 'whiteout');
});

test('mkdir over a whiteout swaps in an opaque dir atomically; clearWhiteout only removes whiteouts', () => {
  w.whiteout(B(join(upper, 'd')));
  w.mkdir(B(join(upper, 'd')), 0o750, undefined, true);
  const e = entry(join(upper, 'd'));
  assert.is(e.kind, 'dir');
  assert.ok(e.opaque);
  assert.is(Number(e.stat.mode) & 0o7777, 0o750);
  fs.writeFileSync(join(upper, 'f'), 'x');
  assert.not.ok(w.clearWhiteout(B(join(upper, 'f'))));
  w.whiteout(B(join(upper, 'g')));
  assert.ok(w.clearWhiteout(B(join(upper, 'g'))));
  assert.not.ok(fs.existsSync(join(upper, 'g')));
});

test('rename leaves a whiteout when asked; a redirect is absolute', () => {
  fs.mkdirSync(join(upper, 'a'));
  w.setRedirect(B(join(upper, 'a')), '/orig/a');
  w.rename(B(join(upper, 'a')), B(join(upper, 'b')), true);
  assert.is(entry(join(upper, 'a')).kind, 'whiteout');
  assert.is(entry(join(upper, 'b')).redirect, '/orig/a');
});

test('fillMetacopy gives a metacopy file its data and makes it plain', () => {
  const p = join(upper, 'm');
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 5);
  lsetxattr(p, `${ns}.overlay.metacopy`, Buffer.alloc(0));
  lsetxattr(p, `${ns}.overlay.redirect`, B('/x'));
  if (ns === 'trusted') assert.is(entry(p).kind, 'metacopy');
  const src = join(dir, 'obj');
  fs.writeFileSync(src, 'hello');
  w.fillMetacopy(B(p), { kind: 'file', path: src });
  assert.is(fs.readFileSync(p, 'utf8'), 'hello');
  assert.is(entry(p).kind, 'plain');
});

test('files a live commit set aside survive a restart: the scratch dir moves instead of going away', () => {
  const scratch = join(dir, 'work', 'fuse');
  fs.writeFileSync(join(scratch, 'kept.1.0'), 'late writes');
  const again = new UpperWriter(ns, scratch);
  assert.ok(again.preserved);
  assert.is(fs.readFileSync(join(again.preserved!, 'kept.1.0'), 'utf8'), 'late writes');
  assert.equal(fs.readdirSync(scratch), []);
});

test('removeName: a name that exists below becomes a whiteout; an upper-only file or dir (with its whiteouts) just goes', () => {
  fs.writeFileSync(join(upper, 'below'), 'x');
  w.removeName(B(join(upper, 'below')), { below: true, inUpper: true, isDir: false });
  if (isRoot) assert.is(entry(join(upper, 'below')).kind, 'whiteout');
  w.removeName(B(join(upper, 'lower-only')), { below: true, inUpper: false, isDir: false });
  if (isRoot) assert.is(entry(join(upper, 'lower-only')).kind, 'whiteout', 'a lower-only name gets a whiteout too');
  fs.writeFileSync(join(upper, 'mine'), 'x');
  w.removeName(B(join(upper, 'mine')), { below: false, inUpper: true, isDir: false });
  assert.not.ok(fs.existsSync(join(upper, 'mine')), 'an upper-only file leaves no trace');
  fs.mkdirSync(join(upper, 'd'));
  if (isRoot) w.whiteout(B(join(upper, 'd', 'gone')));
  w.removeName(B(join(upper, 'd')), { below: false, inUpper: true, isDir: true });
  assert.not.ok(fs.existsSync(join(upper, 'd')), 'an upper-only dir goes with the whiteouts it held');
});

test('moveName: a merged dir gets an absolute redirect, a pure upper dir over a lower name gets opaque, the source name a whiteout when it exists below', () => {
  fs.mkdirSync(join(upper, 'merged'));
  fs.mkdirSync(join(upper, 'fresh'));
  w.moveName(B(join(upper, 'merged')), B(join(upper, 'merged2')), { srcDir: true, lowerPath: '/merged', hasBelow: true, destBelow: false, srcBelow: true });
  assert.is(entry(join(upper, 'merged2')).redirect, '/merged');
  assert.not.ok(entry(join(upper, 'merged2')).opaque);
  if (isRoot) assert.is(entry(join(upper, 'merged')).kind, 'whiteout', 'the old name stays deleted below');
  w.moveName(B(join(upper, 'fresh')), B(join(upper, 'over')), { srcDir: true, lowerPath: undefined, hasBelow: false, destBelow: true, srcBelow: false });
  assert.ok(entry(join(upper, 'over')).opaque, 'a new dir landing on a lower name hides it');
  assert.is(entry(join(upper, 'over')).redirect, undefined);
  assert.not.ok(fs.existsSync(join(upper, 'fresh')), 'no whiteout for an upper-only source');
  // a file over a file the upper has: replaced; over a dir the view shows empty (whiteouts only): cleared
  fs.writeFileSync(join(upper, 'a'), 'a');
  fs.writeFileSync(join(upper, 'b'), 'b');
  w.moveName(B(join(upper, 'a')), B(join(upper, 'b')), { srcDir: false, lowerPath: undefined, hasBelow: false, destBelow: false, srcBelow: false });
  assert.is(fs.readFileSync(join(upper, 'b'), 'utf8'), 'a');
  if (isRoot) {
    fs.mkdirSync(join(upper, 'src'));
    fs.mkdirSync(join(upper, 'emptied'));
    w.whiteout(B(join(upper, 'emptied', 'x')));
    w.moveName(B(join(upper, 'src')), B(join(upper, 'emptied')), { srcDir: true, lowerPath: undefined, hasBelow: false, destBelow: true, srcBelow: false });
    assert.equal(fs.readdirSync(join(upper, 'emptied')), [], 'the whiteouts of the dir it replaced are gone');
    assert.ok(entry(join(upper, 'emptied')).opaque);
  }
});

test('exchangeNames: both names stay occupied (no whiteout); each merged dir gets its redirect', () => {
  fs.mkdirSync(join(upper, 'x'));
  fs.writeFileSync(join(upper, 'x', 'in-x'), '');
  fs.mkdirSync(join(upper, 'y'));
  w.exchangeNames({ path: B(join(upper, 'x')), dir: true, lowerPath: '/x', hasBelow: true, landsBelow: true },
    { path: B(join(upper, 'y')), dir: true, lowerPath: undefined, hasBelow: false, landsBelow: true });
  assert.ok(fs.existsSync(join(upper, 'y', 'in-x')), 'x is at y now');
  assert.is(entry(join(upper, 'y')).redirect, '/x', 'and still merges the lower /x');
  assert.ok(entry(join(upper, 'x')).opaque, 'the pure upper dir landing on x (a lower name) hides it');
});

test.run();
