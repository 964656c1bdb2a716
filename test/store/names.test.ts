import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StratumError } from '../../src/store/error.js';
import { checkLabel, checkTag, formatRef, parseRef } from '../../src/store/names.js';

function rejects(fn: () => unknown, code: string, message?: RegExp): void {
  try {
    fn();
  } catch (err) {
    assert.instance(err, StratumError);
    assert.is((err as StratumError).code, code);
    if (message) assert.match((err as StratumError).message, message);
    return;
  }
  assert.unreachable('expected an error');
}

test('label:tag, bare label, label:HEAD, id prefixes and @sha256 parse', () => {
  assert.equal(parseRef('myapp:v1.0'), { label: 'myapp', target: { kind: 'name', name: 'v1.0' } });
  assert.equal(parseRef('myapp'), { label: 'myapp', target: { kind: 'head' } });
  assert.equal(parseRef('myapp:HEAD'), { label: 'myapp', target: { kind: 'head' } });
  assert.equal(parseRef('my_app-2:a1b2c3d4'), { label: 'my_app-2', target: { kind: 'name', name: 'a1b2c3d4' } });
  const id = 'ab'.repeat(32);
  assert.equal(parseRef(`myapp@sha256:${id}`), { label: 'myapp', target: { kind: 'id', id } });
  assert.is(formatRef(parseRef(`myapp@sha256:${id}`)), `myapp@sha256:${id}`);
});

test('hostile and malformed names are refused with BAD_NAME', () => {
  for (const bad of ['../etc', 'a/b', '.hidden', '-x', '', 'a\0b', 'x'.repeat(129), 'sp ace', 'é']) {
    rejects(() => checkLabel(bad), 'BAD_NAME');
    rejects(() => checkTag(bad), 'BAD_NAME');
  }
  rejects(() => parseRef('app:../../x'), 'BAD_NAME');
  rejects(() => parseRef('app:'), 'BAD_NAME', /empty tag/);
  rejects(() => parseRef(':tag'), 'BAD_NAME', /empty label/);
  rejects(() => parseRef('app@sha256:abc'), 'BAD_NAME', /64 hex/);
  rejects(() => parseRef('app:a:b'), 'BAD_NAME');
  rejects(() => parseRef('app\0:x'), 'BAD_NAME', /NUL/);
});

test('HEAD is reserved as a tag and as a label; 128 characters is the longest name', () => {
  rejects(() => checkTag('HEAD'), 'BAD_NAME', /reserved/);
  rejects(() => checkLabel('HEAD'), 'BAD_NAME', /reserved/);
  assert.is(checkTag('x'.repeat(128)), 'x'.repeat(128));
  assert.is(checkTag('_private'), '_private');
});

test('a bare label can be refused where a tag is required', () => {
  rejects(() => parseRef('myapp', { bareLabel: 'error' }), 'USAGE', /needs a tag/);
});

test.run();
