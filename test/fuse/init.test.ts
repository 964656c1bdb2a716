// `stratum init <label> <mountpoint> [--migrate]` mounts the new label there, as the seed says.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { findMounts } from '../../src/fuse/client.js';
import { stratum } from '../helpers/cli.js';
import { makeTree } from '../helpers/trees.js';
import { forceEnd, fuseUnavailable, tempDir } from './mounts.js';

const why = fuseUnavailable();
if (why) console.log(`skip: ${why}`);

(why ? test.skip : test)('init mounts an empty label, and --migrate mounts the imported directory over itself', async () => {
  const dir = tempDir();
  const store = join(dir, 'store');
  const fresh = join(dir, 'fresh');
  const existing = makeTree(join(dir, 'existing'), { 'etc/conf': 'setting = 1\n', 'data.bin': 70_000 });
  mkdirSync(fresh);
  try {
    const init = stratum(['init', 'app', fresh, '--mode', 'fuse', '--store', store]);
    assert.is(init.status, 0, init.stderr);
    assert.is(init.stdout.trim(), fresh, 'prints the mountpoint');
    writeFileSync(join(fresh, 'hello'), 'world');
    assert.is(readFileSync(join(fresh, 'hello'), 'utf8'), 'world');
    assert.ok(existsSync(join(fresh, '.stratum', 'status')));

    // the default mode: kernel as root (FUSE elsewhere); commit and apply work the same
    const mig = stratum(['init', 'old', existing, '--migrate', '--json', '--store', store]);
    assert.is(mig.status, 0, mig.stderr);
    assert.is((JSON.parse(mig.stdout) as { migrated: { files: number } }).migrated.files, 4, "/, /etc, /etc/conf, /data.bin");
    assert.is(readFileSync(join(existing, 'etc', 'conf'), 'utf8'), 'setting = 1\n', 'the migrated tree, served from the store');
    writeFileSync(join(existing, 'etc', 'conf'), 'setting = 2\n');
    const commit = stratum(['commit', 'old:v2', '--store', store]);
    assert.is(commit.status, 0, commit.stderr);
    assert.match(commit.stdout, /^old:v2\t/);
    // apply on a mounted label switches the live view through the mount
    const first = (JSON.parse(mig.stdout) as { base: string }).base;
    const apply = stratum(['apply', `old:${first.slice(0, 12)}`, '--store', store]);
    assert.is(apply.status, 0, apply.stderr);
    assert.match(apply.stdout, /live at/);
    assert.is(readFileSync(join(existing, 'etc', 'conf'), 'utf8'), 'setting = 1\n', 'the live view is the applied commit');
  } finally {
    for (const [label, mnt] of [['app', fresh], ['old', existing]] as const) {
      const [entry] = await findMounts(store, label).catch(() => []);
      await forceEnd(entry, mnt!);
    }
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
