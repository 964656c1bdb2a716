// The example of docs/session.md (test/session/package.test.ts checks the two are the same text
// and runs it): a session in a directory, a value, an object, and a reference chain.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { openSession } from 'stratum/session';

const dir = join(mkdtempSync(join(tmpdir(), 'example-')), 'notes.session');
const session = await openSession(dir, { create: true, app: { name: 'notes', version: '1.0.0' } });

// an object: stored once, named by the sha256 of its bytes
const hash = await session.putObject('text', Buffer.from('buy milk'));
await session.put('notes/today', { kind: 'objref', hash });
// a value that refers to another value, as a git ref refers to a branch
await session.put('notes/latest', { kind: 'valref', key: 'notes/today' });
await session.put('settings/theme', { kind: 'data', bytes: Buffer.from('dark') });

const found = await session.resolve('notes/latest');
if (found.status === 'ok' && found.value.kind === 'objref') {
  const note = await session.getObject(found.value.hash);
  console.log(`${found.chain.join(' -> ')}: ${note?.data.toString()}`);
}
console.log((await session.list()).join(' '));

await session.put('notes/broken', { kind: 'valref', key: 'notes/deleted' });
console.log((await session.resolve('notes/broken')).status);
rmSync(dirname(dir), { recursive: true });
