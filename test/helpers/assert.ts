// Assertions shared by tests.
import * as assert from 'uvu/assert';
import { StratumError } from '../../src/store/error.js';

/** Awaits `promise` and checks it fails with a StratumError of `code`; returns the error. */
export async function expectError(promise: Promise<unknown>, code: string): Promise<StratumError> {
  try {
    await promise;
  } catch (err) {
    assert.instance(err, StratumError, String(err));
    assert.is((err as StratumError).code, code, (err as Error).message);
    return err as StratumError;
  }
  return assert.unreachable(`expected ${code}`) as never;
}

/** What the native calls throw: Node's fs error shape, with dest for two-path calls. */
export type SystemError = NodeJS.ErrnoException & { dest?: string | Buffer };

/** Runs `fn`, which must throw; returns what it threw. */
export function systemError(fn: () => unknown): SystemError {
  try {
    fn();
  } catch (err) {
    return err as SystemError;
  }
  throw new Error('expected a system error, but the call succeeded');
}
