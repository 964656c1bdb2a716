// The mount policy both servers use (src/mount/options.ts): setuid and devices inert unless
// allowed, a tag read-only, other users let in (with kernel permission checks) by a root server.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MS_NODEV, MS_NOSUID } from '../../src/native/mount.js';
import { fuseMountOptions, mountAttrFlags, msFlags } from '../../src/mount/options.js';

const other = process.getuid?.() === 0 ? ['allow_other'] : [];

test('a FUSE tag mount: kernel permission checks, nosuid, nodev, read-only; allow_other only for a root server', () => {
  assert.equal(fuseMountOptions('stratum:app:v1', { readOnly: true, noatime: true }),
    ['default_permissions', 'noatime', 'nosuid', 'nodev', 'fsname=stratum:app:v1', 'subtype=stratum', ...other, 'ro']);
});

test('a FUSE HEAD mount is writable; suid and dev only when allowed', () => {
  const o = fuseMountOptions('stratum:app', { allowSuid: true, allowDev: true });
  assert.ok(o.includes('suid') && o.includes('dev'));
  assert.not.ok(o.includes('nosuid') || o.includes('nodev') || o.includes('ro') || o.includes('noatime'));
  assert.equal(fuseMountOptions('stratum-control:app', {}), ['default_permissions', 'nosuid', 'nodev', 'fsname=stratum-control:app', 'subtype=stratum', ...other]);
});

test('the same policy as mount flags: nosuid and nodev unless allowed', () => {
  assert.is(mountAttrFlags({}), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
  assert.is(mountAttrFlags({ allowSuid: true }), MOUNT_ATTR_NODEV);
  assert.is(mountAttrFlags({ allowSuid: true, allowDev: true }), 0);
  assert.is(msFlags({}), MS_NOSUID | MS_NODEV);
  assert.is(msFlags({ allowDev: true }), MS_NOSUID);
  assert.ok(MS_NOSUID !== 0 && MS_NODEV !== 0 && MOUNT_ATTR_NOSUID !== 0 && MOUNT_ATTR_NODEV !== 0);
});

test.run();
