import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fsverityDigest } from '../../../src/store/digest.js';
import { parseDump } from '../../../src/store/image/dump.js';
import { FileSource, ImageReader } from '../../../src/store/image/read.js';
import type { ByteString } from '../../../src/store/image/tree.js';
import { writeImage } from '../../../src/store/image/write.js';
import { type Resolve, type View, diffViews, expectedView, readerView } from './view.js';
import { dirView, kernelUnsupported } from '../head/kernel.js';

// Mounts a commit image the way Stratum's kernel mode does (file-backed erofs, then overlayfs with
// the objects dir as a data-only lower layer) and checks that the kernel, our reader and the source
// tree agree on every path: type, mode, owner, mtime (ns), xattrs, symlink target and content.

const BIG = 5 * 2 ** 30; // a sparse object above 4 GiB; compared by size and its last block
const TAIL = 4096;

interface Mounter {
  mount(source: string, target: string, fstype: string, data: string | null): void;
  umount(target: string): void;
  how: string;
}

async function mounter(): Promise<Mounter> {
  try {
    const m = await import('../../../src/native/mount.js');
    return {
      mount: (source, target, fstype, data) => m.mount(source, target, fstype, m.MS_RDONLY, data),
      umount: (target) => {
        try { m.umount2(target, 0); } catch { m.umount2(target, m.MNT_DETACH); }
      },
      how: 'mount(2) via src/native/mount.ts',
    };
  } catch (e) {
    return {
      mount: (source, target, fstype, data) => { execFileSync('mount', ['-t', fstype, '-o', data ? `ro,${data}` : 'ro', source, target]); },
      umount: (target) => { execFileSync('umount', ['-l', target]); },
      how: `mount(8) (native addon unavailable: ${(e as Error).message})`,
    };
  }
}

function sourceDump(objects: string): string {
  const obj = (content: Buffer): string => {
    const d = fsverityDigest(content);
    mkdirSync(join(objects, d.slice(0, 2)), { recursive: true });
    writeFileSync(join(objects, d.slice(0, 2), d.slice(2)), content);
    return `${d.slice(0, 2)}/${d.slice(2)} - ${d}`;
  };
  const big = 'e'.repeat(64); // not its real digest: this kernel has no fs-verity to check it
  mkdirSync(join(objects, 'ee'), { recursive: true });
  writeFileSync(join(objects, 'ee', big.slice(2)), 'the start');
  execFileSync('truncate', ['-s', String(BIG), join(objects, 'ee', big.slice(2))]);
  const f1 = Buffer.alloc(100_000, 'composefs ');
  const f2 = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff));
  const o1 = obj(f1);
  const o2 = obj(f2);
  return [
    '/ 4096 40755 4 0 0 0 1700000000.0 - - - user.root=1',
    `/big ${BIG} 100644 1 0 0 0 1700000000.5 ee/${big.slice(2)} - ${big}`,
    '/blk 0 60660 1 0 6 2049 1700000000.0 - - -',
    '/chr 0 20620 1 0 5 1025 1700000000.000000001 - - - user.dev=c',
    '/d 4096 41777 3 70000 4294967294 0 1700000001.999999999 - - - user.shared=same trusted.overlay.custom=kept trusted.plain=1',
    '/d/empty 0 100000 1 0 0 0 1700000000.0 - - - user.shared=same',
    `/d/ext ${f1.length} 104755 2 1 2 0 1700000002.123456789 ${o1} user.shared=same security.label=x`,
    '/d/ext-link 0 @100644 1 0 0 0 0.0 /d/ext - -',
    '/d/fifo 0 10640 1 65536 65537 0 1700000000.0 - - -',
    '/d/inline 11 102755 2 0 0 0 1700000000.0 - hello\\x00world -',
    '/d/inline-link 0 @100644 1 0 0 0 0.0 /d/inline - -',
    '/d/sock 0 140777 1 0 0 0 1700000000.0 - - -',
    '/d/sub 4096 40000 3 0 0 0 1700000000.0 - - -',
    '/d/sub/deep 4096 40755 2 0 0 0 1700000000.0 - - -',
    `/d/sub/deep/file ${f2.length} 100600 1 0 0 0 1700000000.0 ${o2}`,
    '/d/wh 0 20000 1 0 0 0 1700000000.0 - - - user.was=whiteout',
    '/link 5 120777 1 0 0 0 1700000000.0 d/sub - -',
    `/longlink 4000 120777 1 0 0 0 1700000000.0 ${'x'.repeat(4000)} - -`,
    '/odd\\x20name\\x0a\\xff\\x3d 0 100644 1 0 0 0 1700000000.0 - - - user.k\\x3d=v\\x3d',
    `/00 ${f1.length} 100644 1 0 0 0 1700000000.0 ${o1}`,
    '/ff 4096 40700 2 0 0 0 1700000000.0 - - -',
    '',
  ].join('\n');
}

/** Content marker: the bytes, or for the sparse giant its last block (the rest is zeros). */
function resolver(objects: string): Resolve {
  return (path) => {
    if (!path) return undefined;
    const file = join(objects, path);
    const size = lstatSync(file).size;
    if (size <= 64 * 2 ** 20) return readFileSync(file);
    return readTail(file, size);
  };
}

function readTail(file: string | Buffer, size: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(TAIL);
    readSync(fd, b, 0, TAIL, size - TAIL);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** The view through the kernel mount (a giant sparse file by its last block, as `resolver` does). */
function kernelView(root: string): Map<ByteString, View> {
  return dirView(root, undefined, (abs, size) => (size <= 64 * 2 ** 20 ? readFileSync(abs) : readTail(abs, size)));
}

const supported = kernelUnsupported;
const kernelTest = supported === undefined ? test : test.skip;
if (supported !== undefined) console.log(`kernel mount test skipped: ${supported}`);

kernelTest('kernel mount and our reader both show the source tree (every type, hardlinks, xattrs, odd modes, big ids, ns mtimes)', async () => {
  const work = mkdtempSync(join(tmpdir(), 'stratum-kernel-'));
  const objects = join(work, 'objects');
  const erofsDir = join(work, 'erofs');
  const mnt = join(work, 'mnt');
  mkdirSync(objects);
  mkdirSync(erofsDir);
  mkdirSync(mnt);
  const m = await mounter();
  const mounted: string[] = [];
  try {
    const tree = parseDump(sourceDump(objects));
    const img = writeImage(tree);
    const imagePath = join(work, 'commit.cfs');
    writeFileSync(imagePath, img);
    const version = Buffer.from(img).readUInt32LE(12);
    const resolve = resolver(objects);
    const expected = expectedView(tree, version, resolve);
    assert.ok(expected.size >= 20);

    m.mount(imagePath, erofsDir, 'erofs', null);
    mounted.push(erofsDir);
    m.mount('overlay', mnt, 'overlay', `lowerdir=${erofsDir}::${objects},metacopy=on,redirect_dir=on`);
    mounted.push(mnt);

    const kernel = kernelView(mnt);
    console.log(`kernel view: ${kernel.size} paths compared (${m.how})`);
    assert.equal(diffViews(expected, kernel, 10), [], `kernel (${m.how}) vs source tree`);

    const source = new FileSource(imagePath);
    try {
      const reader = ImageReader.open(source);
      assert.equal(diffViews(kernel, readerView(reader, resolve), 10), [], 'kernel vs our reader');
    } finally {
      source.close();
    }
    // Spot checks that the comparison really covered what it should.
    const wh = kernel.get('/d/wh')!;
    assert.is(wh.mode, '100000');
    assert.ok(kernel.get('/d')!.xattrs.some((x) => x.startsWith(Buffer.from('trusted.overlay.custom').toString('hex'))));
    assert.is(kernel.get('/big')!.size, BIG);
    assert.is(kernel.has('/01'), false, 'stubs are invisible');
  } finally {
    for (const dir of mounted.reverse()) {
      try { m.umount(dir); } catch (e) { console.log(`umount ${dir}: ${(e as Error).message}`); }
    }
    rmSync(work, { recursive: true, force: true });
  }
});


test.run();
