import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { open } from 'node:fs/promises';
import { digestBuffer, digestFd } from '../../src/native/verity.js';
import { FsverityHasher, fsverityDigest } from '../../src/store/digest.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';

interface Vector { size: number; seed: number; digest: string }
const vectors: Vector[] = JSON.parse(readFileSync(new URL('../../../test/vectors/fsverity.json', import.meta.url), 'utf8')).cases;

function hasFsverity(): boolean {
  try {
    execFileSync('fsverity', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('all three implementations match the committed fsverity vectors at every tree-level boundary', async () => {
  assert.ok(vectors.length >= 10);
  const dir = mkdtempSync(join(tmpdir(), 'stratum-digest-'));
  try {
    for (const v of vectors) {
      const data = pseudoRandomBytes(v.size, v.seed);
      assert.is(new FsverityHasher().update(data).digest(), v.digest, `TypeScript, size ${v.size}`);
      assert.is(digestBuffer(data), v.digest, `C buffer, size ${v.size}`);
      writeFileSync(join(dir, 'f'), data);
      const handle = await open(join(dir, 'f'), 'r');
      try {
        assert.is(await digestFd(handle.fd), v.digest, `C file, size ${v.size}`);
      } finally {
        await handle.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('digestFd reports a bad fd as a system error, not a wrong digest', async () => {
  try {
    await digestFd(987_654);
    assert.unreachable('expected EBADF');
  } catch (err) {
    assert.is((err as { code?: string }).code, 'EBADF');
  }
});

test('feeding the data in odd-sized pieces gives the same digest as one call', () => {
  const data = pseudoRandomBytes(600_000, 7);
  const hasher = new FsverityHasher();
  for (let i = 0; i < data.length; ) {
    const n = [1, 4095, 4097, 13, 65536][i % 5]!;
    hasher.update(data.subarray(i, i + n));
    i += n;
  }
  assert.is(hasher.digest(), fsverityDigest(data));
});

const live = hasFsverity();
if (!live) console.log('skip: `fsverity` is not installed; the committed vectors above still check the digest');
(live ? test : test.skip)('digests match `fsverity digest` on fresh random files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stratum-digest-'));
  try {
    for (const size of [0, 5, 4096, 12_345, 1_048_577, 70_000_003]) {
      const data = pseudoRandomBytes(size, Date.now() & 0xffff);
      const file = join(dir, `f${size}`);
      writeFileSync(file, data);
      const out = execFileSync('fsverity', ['digest', file], { encoding: 'utf8' });
      assert.is(`sha256:${fsverityDigest(data)}`, out.split(' ')[0]);
      const handle = await open(file, 'r');
      try {
        assert.is(`sha256:${await digestFd(handle.fd)}`, out.split(' ')[0], `file of ${size} (two hashing threads above 64 MiB)`);
      } finally {
        await handle.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
