import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { lgetxattr, lsetxattr } from '../../src/native/xattr.js';
import { UpperWriter } from '../../src/store/union-write.js';
import { readUpperEntry } from '../../src/store/upper.js';
import { tempDir } from './mounts.js';

// UpperWriter without a mount: each change leaves exactly what kernel overlayfs would read back.
const isRoot = process.getuid?.() === 0;
const ns = isRoot ? 'trusted' : 'user';
let dir: string;
let upper: string;
let w: UpperWriter;
const B = (p: string) => Buffer.from(p);
const entry = (p: string) => readUpperEntry(B(p), fs.lstatSync(p, { bigint: true }), ns, 'overlay');

test.before.each(() => {
  dir = tempDir('stratum-uw-');
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

test.run();
