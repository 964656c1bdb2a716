import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { countsDiff, settledCounts } from '../../bench/fuse-counts.js';
import { S, ok, withCliMount } from '../kernel/mounts.js';
import { fuseUnavailable, tempDir, withCountsFile } from './mounts.js';

// getxattr(security.capability) answered in C (issue 15, item 2): the kernel asks before every
// write; a HEAD mount answers ENODATA in C for files known to have none (created through the
// mount, or once answered by the server), and never hides a capability that is there: one set
// through the mount reads back (and survives a remount), a write drops it as the kernel does, and a
// lower file's capability shows.
const why = fuseUnavailable() ?? (spawnSync('getcap', ['--help']).error ? 'no getcap/setcap' : undefined);
if (why) console.log(`capability tests skipped: ${why}`);

const getcap = (path: string): string => {
  const r = spawnSync('getcap', [path], { encoding: 'utf8' });
  assert.is(r.status, 0, `getcap ${path}: ${r.stderr}`);
  return r.stdout.trim();
};
const setcap = (cap: string, path: string): void => {
  const r = spawnSync('setcap', [cap, path], { encoding: 'utf8' });
  assert.is(r.status, 0, `setcap ${path}: ${r.stderr}`);
};

(why === undefined ? test : test.skip)('writes ask security.capability of C, not JS; a capability set, on the lower or through the mount, shows', async () => {
  const work = tempDir('stratum-cap-');
  const store = join(work, 'store');
  const countsFile = join(work, 'counts.json');
  try {
    const src = join(work, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(join(src, 'tool'), 'a tool with a capability\n');
    setcap('cap_net_raw+ep', join(src, 'tool'));
    fs.writeFileSync(join(src, 'plain'), 'a plain lower file\n');
    ok(S(store, 'import', src, '--label', 'app', '--tag', 'v1'), 'import');
    const imported = getcap(join(src, 'tool'));
    await withCountsFile(countsFile, async () => {
      const mnt = join(work, 'mnt');
      await withCliMount(store, 'app', mnt, 'fuse', async () => {
        const f = join(mnt, 'new');
        fs.writeFileSync(f, '');
        const before = await settledCounts(countsFile);
        const N = 30;
        const fd = fs.openSync(f, 'a');
        for (let i = 0; i < N; i++) fs.writeSync(fd, `line ${i}\n`);
        fs.closeSync(fd);
        const d = countsDiff((await settledCounts(countsFile))!, before);
        assert.ok((d.requests.getxattr ?? 0) >= N, `the kernel asked before each write: ${JSON.stringify(d)}`);
        assert.is(d.js.getxattr ?? 0, 0, `none of them reached JS: ${JSON.stringify(d)}`);
        assert.is(fs.readFileSync(f, 'utf8').split('\n').length, N + 1);

        // a lower file's capability shows, also after writes to another file were answered in C
        if (imported) assert.match(getcap(join(mnt, 'tool')), /cap_net_raw[=+]ep/, 'the lower capability shows');
        // ... and a lower file without one answers ENODATA (once from JS, then from C)
        fs.appendFileSync(join(mnt, 'plain'), 'x');
        fs.appendFileSync(join(mnt, 'plain'), 'y');
        assert.is(getcap(join(mnt, 'plain')), '');

        // set through the mount on a file C knew had none: it reads back
        setcap('cap_net_raw+ep', f);
        assert.match(getcap(f), /cap_net_raw[=+]ep/, 'a capability set through the mount shows');
        assert.match(getcap(join(store, 'refs/app/head/new')), /cap_net_raw[=+]ep/, 'and is in the upper');
        // a write drops it (the kernel asks, hears it is there, removes it)
        fs.appendFileSync(f, 'more\n');
        assert.is(getcap(f), '', 'a write dropped the capability');
        setcap('cap_net_raw+ep', f);
      });
      await withCliMount(store, 'app', mnt, 'fuse', () => {
        assert.match(getcap(join(mnt, 'new')), /cap_net_raw[=+]ep/, 'the capability survives a remount');
      });
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test.run();
