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
