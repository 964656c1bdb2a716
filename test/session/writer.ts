// A separate process writing a session: node writer.js <session dir> <prefix> <count> <bytes>.
// Puts <prefix>-<i> under the map shared/ (so several writers share one directory) as Data of
// <bytes> bytes whose content names the key, and the same bytes as an object; prints "done".
import { openSession } from '../../src/session/index.js';

const [dir, prefix, count, bytes] = process.argv.slice(2) as [string, string, string, string];
const session = await openSession(dir, { create: true, app: { name: 'writer', version: '1' } });
for (let i = 0; i < Number(count); i++) {
  const body = Buffer.alloc(Number(bytes), `${prefix}-${i};`);
  await session.putObject('blob', body);
  await session.put(`shared/${prefix}-${i}`, { kind: 'data', bytes: body });
}
process.stdout.write('done\n');
