// The README's Use section and docs/getting-started.md work typed literally in a new shell of a
// new user: each ```sh block is run line by line by `sh -e` as a useradd'ed user, with `stratum`
// found on PATH (issue 13: "Done when").
import * as fs from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lazyUnmount, stratumMountsAt } from '../../src/fuse/server.js';
import { MountState } from '../../src/store/mount-state.js';
import { STRATUM_BIN, giveTo, makeRuntimeDir, shAsUser, testUser, userTestsUnavailable } from '../helpers/user.js';

const why = userTestsUnavailable() ?? (fs.existsSync('/dev/fuse') ? undefined : 'no /dev/fuse');
const userTest = why === undefined ? test : test.skip;
if (why) console.log(`README tests skipped: ${why}`);

const root = new URL('../../../', import.meta.url).pathname;

/** The ```sh blocks of a markdown file between two headings. */
function shBlocks(file: string, from: string, to: string | undefined): string {
  const text = fs.readFileSync(join(root, file), 'utf8');
  const start = text.indexOf(from);
  const end = to === undefined ? text.length : text.indexOf(to, start);
  assert.ok(start >= 0 && end > start, `${file}: ${from}`);
  return [...text.slice(start, end).matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]).join('');
}

async function runAsNewUser(script: string): Promise<void> {
  const user = testUser();
  const dir = fs.mkdtempSync('/tmp/stratum-readme-');
  fs.chmodSync(dir, 0o755);
  const runtime = makeRuntimeDir(user, dir);
  fs.mkdirSync(join(dir, 'cwd'));
  fs.mkdirSync(join(dir, 'bin'));
  // `stratum` on PATH: the installed link when it is this checkout's, else the same link here
  const installed = fs.existsSync('/usr/local/bin/stratum') && fs.realpathSync('/usr/local/bin/stratum') === fs.realpathSync(STRATUM_BIN);
  if (!installed) fs.symlinkSync(STRATUM_BIN, join(dir, 'bin', 'stratum'));
  giveTo(user, dir);
  try {
    const r = shAsUser(user, `set -e\n${script}`, {
      cwd: join(dir, 'cwd'), runtimeDir: runtime,
      // the user's default store and mktemp, moved into the test's dir
      env: { PATH: `${join(dir, 'bin')}:/usr/local/bin:/usr/bin:/bin`, XDG_DATA_HOME: join(dir, 'data'), TMPDIR: dir },
    });
    assert.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.not.match(r.stderr, /internal error|command not found/);
  } finally {
    for (const e of await new MountState(join(runtime, 'stratum', 'state')).list().catch(() => [])) {
      try { process.kill(e.pid, 'SIGKILL'); } catch { /* gone */ }
      if (stratumMountsAt(e.mountpoint)) lazyUnmount(e.mountpoint);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

userTest('the README\'s Use section, typed literally by a new user', () => runAsNewUser(shBlocks('README.md', '## Use', '## Layout')));

userTest('docs/getting-started.md from step 1 to the end, typed literally by a new user', () =>
  runAsNewUser(shBlocks('docs/getting-started.md', '## 1.', undefined)));

test.run();
