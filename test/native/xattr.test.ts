import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { systemError } from '../helpers/assert.js';
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  XATTR_CREATE, XATTR_REPLACE, fgetxattr, flistxattr, fremovexattr, fsetxattr,
  lgetxattr, llistxattr, lremovexattr, lsetxattr,
} from '../../src/native/xattr.js';
import { MNT_DETACH, mount, umount2 } from '../../src/native/mount.js';

const dir = mkdtempSync(join(tmpdir(), 'stratum-xattr-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

let serial = 0;
function newFile(content = ''): string {
  const path = join(dir, `f${serial++}`);
  writeFileSync(path, content);
  return path;
}

test('binary values round-trip byte for byte, NUL bytes and empty values included', () => {
  const path = newFile();
  const value = Buffer.from([0, 1, 0, 0, 255, 0x80, 0, 10, 0]);
  lsetxattr(path, 'user.stratum.bin', value);
  assert.equal(lgetxattr(path, 'user.stratum.bin'), value);
  lsetxattr(path, 'user.stratum.empty', Buffer.alloc(0));
  assert.equal(lgetxattr(path, 'user.stratum.empty'), Buffer.alloc(0));
  lsetxattr(path, 'user.stratum.u8', new Uint8Array([7, 0, 7]));
  assert.equal(lgetxattr(path, 'user.stratum.u8'), Buffer.from([7, 0, 7]));
});

test('a 64 KiB value (the kernel maximum) round-trips', () => {
  // ext4 without ea_inode caps values at one block, so this runs on a tmpfs of its own.
  const mnt = join(dir, 'big');
  mkdirSync(mnt);
  mount('tmpfs', mnt, 'tmpfs', 0, 'size=4m');
  try {
    const path = join(mnt, 'f');
    writeFileSync(path, '');
    const value = Buffer.alloc(64 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 7919) & 0xff;
    lsetxattr(path, 'user.stratum.big', value);
    assert.equal(lgetxattr(path, 'user.stratum.big'), value);
    assert.is(systemError(() => lsetxattr(path, 'user.stratum.bigger', Buffer.alloc(64 * 1024 + 1))).code, 'E2BIG');
  } finally {
    umount2(mnt, MNT_DETACH);
  }
});

test('a missing attribute is ENODATA, shaped like a Node fs error', () => {
  const path = newFile();
  const err = systemError(() => lgetxattr(path, 'user.stratum.missing'));
  assert.instance(err, Error);
  assert.is(err.code, 'ENODATA');
  assert.is(err.errno, -61);
  assert.is(err.syscall, 'lgetxattr');
  assert.is(err.path, path);
  assert.is(err.message, `ENODATA: no data available, lgetxattr '${path}'`);
});

test('XATTR_CREATE refuses to overwrite (EEXIST), XATTR_REPLACE refuses to create (ENODATA)', () => {
  const path = newFile();
  const replace = systemError(() => lsetxattr(path, 'user.stratum.flag', Buffer.from('b'), XATTR_REPLACE));
  assert.is(replace.code, 'ENODATA');
  assert.is(replace.syscall, 'lsetxattr');
  lsetxattr(path, 'user.stratum.flag', Buffer.from('a'), XATTR_CREATE);
  const create = systemError(() => lsetxattr(path, 'user.stratum.flag', Buffer.from('b'), XATTR_CREATE));
  assert.is(create.code, 'EEXIST');
  assert.is(create.message, `EEXIST: file already exists, lsetxattr '${path}'`);
  assert.equal(lgetxattr(path, 'user.stratum.flag'), Buffer.from('a'));
  lsetxattr(path, 'user.stratum.flag', Buffer.from('c'), XATTR_REPLACE);
  assert.equal(lgetxattr(path, 'user.stratum.flag'), Buffer.from('c'));
});

test('llistxattr lists every name and lremovexattr removes one', () => {
  const path = newFile();
  assert.equal(llistxattr(path), []);
  lsetxattr(path, 'user.stratum.a', Buffer.from('1'));
  lsetxattr(path, 'user.stratum.b', Buffer.from('2'));
  lsetxattr(path, 'trusted.stratum.c', Buffer.from('3'));
  assert.equal(llistxattr(path).sort(), ['trusted.stratum.c', 'user.stratum.a', 'user.stratum.b']);
  lremovexattr(path, 'user.stratum.a');
  assert.equal(llistxattr(path).sort(), ['trusted.stratum.c', 'user.stratum.b']);
  assert.is(systemError(() => lgetxattr(path, 'user.stratum.a')).code, 'ENODATA');
  const again = systemError(() => lremovexattr(path, 'user.stratum.a'));
  assert.is(again.code, 'ENODATA');
  assert.is(again.syscall, 'lremovexattr');
});

test('the l* calls act on a symlink itself: trusted.* works, user.* is EPERM', () => {
  const target = newFile();
  const link = join(dir, `link${serial++}`);
  symlinkSync(target, link);
  lsetxattr(link, 'trusted.stratum.link', Buffer.from('on the link'));
  assert.equal(lgetxattr(link, 'trusted.stratum.link'), Buffer.from('on the link'));
  assert.equal(llistxattr(link), ['trusted.stratum.link']);
  assert.equal(llistxattr(target), [], 'the target was not touched');
  const err = systemError(() => lsetxattr(link, 'user.stratum.link', Buffer.from('x')));
  assert.is(err.code, 'EPERM');
  assert.is(err.path, link);
  lremovexattr(link, 'trusted.stratum.link');
  assert.equal(llistxattr(link), []);
});

test('the f* calls work on an open fd', () => {
  const path = newFile();
  const fd = openSync(path, 'r');
  try {
    fsetxattr(fd, 'user.stratum.fd', Buffer.from([0, 42]));
    assert.equal(fgetxattr(fd, 'user.stratum.fd'), Buffer.from([0, 42]));
    assert.equal(lgetxattr(path, 'user.stratum.fd'), Buffer.from([0, 42]));
    assert.equal(flistxattr(fd), ['user.stratum.fd']);
    assert.equal(flistxattr(fd, { encoding: 'buffer' }), [Buffer.from('user.stratum.fd')]);
    fremovexattr(fd, 'user.stratum.fd');
    const err = systemError(() => fgetxattr(fd, 'user.stratum.fd'));
    assert.is(err.code, 'ENODATA');
    assert.is(err.syscall, 'fgetxattr');
    assert.is(err.path, undefined);
    assert.is(err.message, 'ENODATA: no data available, fgetxattr');
  } finally {
    closeSync(fd);
  }
});

test('paths and names that are not UTF-8 pass through as Buffers', () => {
  const path = Buffer.concat([Buffer.from(join(dir, 'latin1-')), Buffer.from([0xe9, 0xff])]);
  writeFileSync(path, '');
  const name = Buffer.concat([Buffer.from('user.stratum.'), Buffer.from([0xff, 0xfe])]);
  lsetxattr(path, name, Buffer.from('v'));
  assert.equal(lgetxattr(path, name), Buffer.from('v'));
  assert.equal(llistxattr(path, { encoding: 'buffer' }), [name]);
  const err = systemError(() => lgetxattr(path, 'user.stratum.none'));
  assert.is(err.code, 'ENODATA');
  assert.equal(err.path as unknown, path, 'err.path is the Buffer the caller passed');
});

test('values and name lists that change size between the size probe and the read are read whole', async () => {
  // A child flips a value between 1 and 3000 bytes and adds and removes a long name as fast as it
  // can; a reader that probes the size and then reads would hit ERANGE in that window unless it
  // retries, and a reader that only re-probes can lose to the writer many times in a row.
  const path = newFile();
  const small = Buffer.from('s');
  const large = Buffer.alloc(3000, 'L');
  const longName = `user.stratum.${'n'.repeat(240)}`;
  lsetxattr(path, 'user.stratum.race', small);
  const xattrModule = new URL('../../src/native/xattr.js', import.meta.url).href;
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import { lsetxattr, lremovexattr } from ${JSON.stringify(xattrModule)};
    const path = ${JSON.stringify(path)}, longName = ${JSON.stringify(longName)};
    const small = Buffer.from('s'), large = Buffer.alloc(3000, 'L');
    console.log('ready');
    for (;;) {
      lsetxattr(path, 'user.stratum.race', large);
      lsetxattr(path, longName, small);
      lsetxattr(path, 'user.stratum.race', small);
      lremovexattr(path, longName);
    }
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`writer exited early (${code})`)));
    });
    let sawSmall = 0, sawLarge = 0, sawShortList = 0, sawLongList = 0;
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      const value = lgetxattr(path, 'user.stratum.race');
      if (value.equals(small)) sawSmall++;
      else if (value.equals(large)) sawLarge++;
      else assert.unreachable(`read a torn value of ${value.length} bytes`);
      const names = llistxattr(path).sort().join(' ');
      if (names === 'user.stratum.race') sawShortList++;
      else if (names === [longName, 'user.stratum.race'].sort().join(' ')) sawLongList++;
      else assert.unreachable(`read a torn list: ${names}`);
    }
    assert.ok(sawSmall > 0 && sawLarge > 0, `both sizes were seen (${sawSmall} small, ${sawLarge} large)`);
    assert.ok(sawShortList > 0 && sawLongList > 0, `both lists were seen (${sawShortList} short, ${sawLongList} long)`);
  } finally {
    child.kill('SIGKILL');
  }
});

test('bad arguments throw TypeError or RangeError, not a crash', () => {
  const path = newFile();
  const call = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return err as NodeJS.ErrnoException;
    }
    throw new Error('expected a throw');
  };
  const bad = (v: unknown) => v as never;
  assert.instance(call(() => lgetxattr(bad(42), 'user.x')), TypeError);
  assert.instance(call(() => lgetxattr(path, bad(undefined))), TypeError);
  assert.instance(call(() => lgetxattr(path, bad({}))), TypeError);
  assert.is(call(() => lgetxattr(`${path}\0evil`, 'user.x')).code, 'ERR_INVALID_ARG_VALUE');
  assert.instance(call(() => lgetxattr(`${path}\0evil`, 'user.x')), TypeError);
  assert.instance(call(() => lsetxattr(path, 'user.x', bad('a string'))), TypeError);
  assert.instance(call(() => lsetxattr(path, 'user.x', bad(null))), TypeError);
  assert.is(call(() => lsetxattr(path, 'user.x', bad(null))).code, 'ERR_INVALID_ARG_TYPE');
  assert.instance(call(() => lsetxattr(path, 'user.x', Buffer.from('v'), bad('create'))), TypeError);
  assert.instance(call(() => lsetxattr(path, 'user.x', Buffer.from('v'), 1.5)), RangeError);
  assert.instance(call(() => fgetxattr(-1, 'user.x')), RangeError);
  assert.instance(call(() => fgetxattr(bad('3'), 'user.x')), TypeError);
  assert.instance(call(() => llistxattr(bad(null))), TypeError);
  assert.instance(call(() => lremovexattr(path, bad(7))), TypeError);
  assert.equal(llistxattr(path), [], 'nothing was written by the failed calls');
});

test.run();
