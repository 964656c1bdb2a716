import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { linkSync, lstatSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mknod, S_IFCHR } from '../../../src/native/files.js';
import { commitHead, ensureUpper, headPaths, recoverHead } from '../../../src/store/commands/commit.js';
import { importDirectory } from '../../../src/store/commands/import.js';
import { verify } from '../../../src/store/commands/verify.js';
import { Store } from '../../../src/store/store.js';
import { pseudoRandomBytes } from '../../helpers/bytes.js';
import { runNode, withTempDir } from '../../helpers/dirs.js';
import { diffViews } from '../image/view.js';
import { commitView, isRoot, unionView } from './kernel.js';

// A commit killed with SIGKILL at every step leaves either the old HEAD with its upper intact or
// the new HEAD with an empty upper, never a mix: the view of HEAD after recovery is the view
// before the commit, `verify` is clean before and after recovery, and nothing is lost.

const worker = new URL('./commit-worker.js', import.meta.url).pathname;
const STEPS = ['merged', 'staged', 'journal', 'objects', 'image', 'tagged', 'head', 'swapped', 'done'] as const;

async function prepare(dir: string, path: 'full' | 'splice' | 'edits'): Promise<{ store: Store; base: string }> {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'keep'), { recursive: true });
  mkdirSync(join(src, 'gone'), { recursive: true });
  writeFileSync(join(src, 'keep', 'old.bin'), pseudoRandomBytes(9000, 1));
  writeFileSync(join(src, 'keep', 'other.bin'), pseudoRandomBytes(3000, 4));
  writeFileSync(join(src, 'gone', 'x'), 'x');
  writeFileSync(join(src, 'small'), 'small');
  // distinct mtimes: no inode is stored compact, so edits can be patched in place
  let t = 1_700_000_000;
  for (const p of ['small', 'gone/x', 'keep/old.bin', 'keep/other.bin', 'gone', 'keep', '.']) utimesSync(join(src, p), t, t++);
  const store = await Store.open(join(dir, 'store'), { create: true });
  let { id } = await importDirectory(store, src, { label: 'app' });
  await ensureUpper(store, (await store.heads.read('app'))!);
  const upper = headPaths(store, 'app').upper;
  if (path === 'edits') {
    // a first commit leaves the Merkle cache the edits-only path needs; then only edits
    id = (await commitHead(store, { label: 'app' })).id;
    mkdirSync(join(upper, 'keep'));
    utimesSync(join(upper, 'keep'), 1_800_000_000, 1_800_000_000);
    // as a copy-up leaves it: the root keeps its times (a changed root mtime is not an edit in place)
    utimesSync(upper, 1_700_000_006, 1_700_000_006);
    writeFileSync(join(upper, 'keep', 'old.bin'), pseudoRandomBytes(12_000, 5));
    writeFileSync(join(upper, 'keep', 'other.bin'), pseudoRandomBytes(3000, 6));
    return { store, base: id };
  }
  // Changes written straight into the upper, in the kernel's format.
  writeFileSync(join(upper, 'new.bin'), pseudoRandomBytes(200_000, 2));
  // (a hardlink keeps the commit off the splice path)
  if (path === 'full') linkSync(join(upper, 'new.bin'), join(upper, 'new-link.bin'));
  writeFileSync(join(upper, 'tiny'), 'tiny');
  mkdirSync(join(upper, 'keep'));
  writeFileSync(join(upper, 'keep', 'added.bin'), pseudoRandomBytes(5000, 3));
  if (isRoot) mknod(join(upper, 'gone'), S_IFCHR, 0, 0);
  return { store, base: id };
}

for (const path of ['full', 'splice', 'edits'] as const)
for (const step of STEPS) {
  test(`kill -9 at step '${step}' (${path} path) leaves the old HEAD or the new one, verify clean, nothing lost`, () =>
    withTempDir(async (dir) => {
      const { store, base } = await prepare(dir, path);
      const before = unionView(store, 'app', base);
      const exit = await runNode(worker, [store.root, 'app', step, 'v1']);
      assert.match(exit.stdout, `path ${path}`);
      if (step === 'done') assert.ok(exit.signal === 'SIGKILL' || exit.code === 0, exit.stderr);
      else assert.is(exit.signal, 'SIGKILL', `killed at ${step}: ${exit.stderr}`);

      const reopened = await Store.open(store.root);
      assert.equal((await verify(reopened, undefined)).problems, [], 'verify before recovery');
      const recovered = await reopened.lock.with('exclusive', () => recoverHead(reopened, 'app'));
      assert.equal((await verify(reopened, undefined)).problems, [], 'verify after recovery');
      const head = (await reopened.heads.read('app'))!;
      const upper = headPaths(reopened, 'app').upper;
      const after = unionView(reopened, 'app', head.base);
      assert.equal(diffViews(before, after, 5), [], `HEAD's view after recovery (${recovered}) is the view before the commit`);
      const tag = await reopened.tags.read('app', 'v1');
      if (head.base === base) {
        assert.ok(readdirSync(upper).length > 0, 'old HEAD keeps its upper');
        assert.is(tag, undefined, 'no tag without the commit');
        // the upper's files are no longer shared with any object (tmp/ debris may still link them until cleaned)
        const ino = lstatSync(join(upper, path === 'edits' ? 'keep/old.bin' : 'new.bin')).ino;
        for (const name of readdirSync(reopened.objects.root)) {
          for (const obj of readdirSync(join(reopened.objects.root, name))) assert.is.not(lstatSync(join(reopened.objects.root, name, obj)).ino, ino, 'object shares an inode with the upper');
        }
        // and the commit can simply be run again
        const again = await commitHead(reopened, { label: 'app', tag: 'v1' });
        assert.equal(diffViews(before, commitView(reopened, again.id), 5), []);
      } else {
        assert.equal(readdirSync(upper), [], 'new HEAD has an empty upper');
        assert.ok(tag && tag.kind === 'id' && tag.id === head.base, 'tag names the new commit');
        assert.equal(diffViews(before, commitView(reopened, head.base), 5), []);
        for (const name of readdirSync(reopened.objects.root)) {
          for (const obj of readdirSync(join(reopened.objects.root, name))) {
            const st = lstatSync(join(reopened.objects.root, name, obj));
            assert.is(st.nlink, 1, 'objects are no longer linked to an upper');
            assert.is(st.mode & 0o777, 0o444, 'objects are read-only');
          }
        }
      }
      assert.is(readdirSync(headPaths(reopened, 'app').labelDir).filter((n) => n.startsWith('head.') && n !== 'head.merkle' && n !== 'head.tree' && n !== 'head.tree.edits').sort().join(','), 'head.toml', 'no journal or swap dir left');
    }));
}

test.run();
