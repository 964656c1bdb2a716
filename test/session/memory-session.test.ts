// The shared suite against the in-memory session: the interface is an interface.
import { test } from 'uvu';
import { MemorySession, SESSION_FORMAT } from '../../src/session/index.js';
import { sessionSuite } from './suite.js';

/** Reaches the frames the way a damaged disk would reach files. */
class DamageableSession extends MemorySession {
  damage(hash: string, fn: (frame: Buffer) => Buffer): void {
    const frame = this.frames.get(hash);
    if (!frame) throw new Error(`no object ${hash}`);
    this.frames.set(hash, fn(frame));
  }
}

sessionSuite('memory', async () => {
  const session = new DamageableSession({ version: SESSION_FORMAT, app: 'test', appVersion: '1' });
  return {
    session,
    reopen: async () => session,
    damageObject: async (hash, fn) => session.damage(hash, fn),
    // one process: the writers' operations interleave at every await
    writeConcurrently: async (prefixes, count, bytes) => {
      await Promise.all(prefixes.map(async (prefix) => {
        for (let i = 0; i < count; i++) {
          const body = Buffer.alloc(bytes, `${prefix}-${i};`);
          await session.putObject('blob', body);
          await session.put(`shared/${prefix}-${i}`, { kind: 'data', bytes: body });
        }
      }));
    },
    dispose: async () => {},
  };
});

test.run();
