import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StratumError, exitStatus, wrapSystemError } from '../../src/store/error.js';

test('usage mistakes exit 2, failed operations exit 1', () => {
  assert.is(exitStatus(new StratumError('BAD_NAME', 'x')), 2);
  assert.is(exitStatus(new StratumError('USAGE', 'x')), 2);
  assert.is(exitStatus(new StratumError('TAG_EXISTS', 'x')), 1);
  assert.is(exitStatus(new StratumError('CORRUPT_OBJECT', 'x')), 1);
});

test('a full disk becomes NO_SPACE, naming what we were doing', () => {
  const sys = Object.assign(new Error('nope'), { code: 'ENOSPC' });
  const err = wrapSystemError(sys, 'writing object ab/cd');
  assert.is(err.code, 'NO_SPACE');
  assert.match(err.message, /writing object ab\/cd/);
});

test.run();
