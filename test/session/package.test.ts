// `stratum/session` as another program sees it: imported by the package name (Node's
// self-reference through package.json "exports"), with type declarations beside it, and the
// example in docs/session.md is the file examples/session.ts and prints what the docs say.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as byName from 'stratum/session';
import * as bySource from '../../src/session/index.js';

const root = new URL('../../../', import.meta.url).pathname;

test('"stratum/session" resolves to the built library, with declarations', async () => {
  assert.is(byName.openSession, bySource.openSession, 'the same module, not a copy');
  const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { exports: Record<string, { types: string; default: string }> };
  const entry = pkg.exports['./session']!;
  assert.ok(existsSync(`${root}${entry.default}`), entry.default);
  const types = readFileSync(`${root}${entry.types}`, 'utf8');
  assert.match(types, /export \{ openSession/);
  assert.ok(existsSync(`${root}dist/src/session/session.d.ts`));
  assert.match(readFileSync(`${root}dist/src/session/session.d.ts`, 'utf8'), /interface Session \{/);
  const session = byName.openMemorySession();
  await session.put('a', { kind: 'data', bytes: Buffer.from('b') });
  assert.equal(await session.list(), ['a']);
});

test('the example in docs/session.md is examples/session.ts and prints what the docs show', () => {
  const doc = readFileSync(`${root}docs/session.md`, 'utf8');
  const code = doc.match(/```ts\n([\s\S]*?)```/)?.[1];
  const output = doc.match(/It prints:\n\n```\n([\s\S]*?)```/)?.[1];
  assert.ok(code && output, 'docs/session.md has the example and its output');
  const source = readFileSync(`${root}examples/session.ts`, 'utf8');
  assert.is(source.slice(source.indexOf('import ')), code);
  const run = spawnSync(process.execPath, [`${root}dist/examples/session.js`], { encoding: 'utf8' });
  assert.is(run.status, 0, run.stderr);
  assert.is(run.stdout, output);
});

test.run();
