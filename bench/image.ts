// npm run bench:image — writes and reads commit images of 10k and 100k entries.
// Prints, per size: write entries/s (best of 3), bytes per entry, open time, full walk entries/s (FileSource),
// and random lookups/s.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource, ImageReader, walkImage } from '../src/store/image/read.js';
import { type Inode, type Tree, addEntry, newInode } from '../src/store/image/tree.js';
import { writeImage } from '../src/store/image/write.js';

function makeTree(entries: number): { tree: Tree; paths: string[][] } {
  const root = newInode({ mode: 0o40755, mtimeSec: 1_700_000_000 });
  const paths: string[][] = [];
  let made = 0;
  let dirNo = 0;
  const digest = (i: number): string => (i.toString(16).padStart(8, '0')).repeat(8);
  while (made < entries) {
    const top = newInode({ mode: 0o40755, mtimeSec: 1_700_000_000 });
    addEntry(root, `dir-${dirNo}`, top);
    made++;
    for (let sub = 0; sub < 10 && made < entries; sub++) {
      const dir: Inode = newInode({ mode: 0o40755, mtimeSec: 1_700_000_000 + sub, xattrs: [{ name: 'security.selinux', value: Buffer.from('system_u:object_r:usr_t:s0\0') }] });
      addEntry(top, `sub-${sub}`, dir);
      made++;
      for (let f = 0; f < 100 && made < entries; f++, made++) {
        const name = `file-${f}.dat`;
        const kind = f % 10;
        let inode: Inode;
        if (kind < 6) {
          const d = digest(made);
          inode = newInode({ mode: 0o100644, size: 1000 + made, payload: `${d.slice(0, 2)}/${d.slice(2)}`, digest: d, mtimeSec: 1_700_000_000 + (made % 1000), mtimeNsec: made % 1_000_000_000 });
        } else if (kind < 9) inode = newInode({ mode: 0o100644, content: Buffer.from(`small file ${made}\n`), mtimeSec: 1_700_000_000 });
        else inode = newInode({ mode: 0o120777, symlinkTarget: `../sub-0/file-${f}.dat`, mtimeSec: 1_700_000_000 });
        addEntry(dir, name, inode);
        paths.push([`dir-${dirNo}`, `sub-${sub}`, name]);
      }
    }
    dirNo++;
  }
  return { tree: { root }, paths };
}

const work = mkdtempSync(join(tmpdir(), 'stratum-bench-image-'));
try {
  for (const n of [10_000, 100_000]) {
    const { tree, paths } = makeTree(n);
    // Best of three: the machine is shared, and the first run includes JIT warm-up.
    let img = writeImage(tree);
    let writeMs = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      img = writeImage(tree);
      writeMs = Math.min(writeMs, performance.now() - t0);
    }
    const file = join(work, `bench-${n}.cfs`);
    writeFileSync(file, img);

    const t1 = performance.now();
    const source = new FileSource(file, { cacheBlocks: 2048 });
    const reader = ImageReader.open(source);
    const openMs = performance.now() - t1;

    const t2 = performance.now();
    let walked = 0;
    walkImage(reader, (_p, attr, nid) => {
      walked++;
      if ((attr.mode & 0o170000) === 0o100000) reader.external(nid);
    });
    const walkMs = performance.now() - t2;

    const t3 = performance.now();
    const lookups = 20_000;
    for (let i = 0; i < lookups; i++) {
      const p = paths[(i * 7919) % paths.length]!;
      let nid = reader.rootNid;
      for (const part of p) nid = reader.lookup(nid, part)!;
      reader.getattr(nid);
    }
    const lookupMs = performance.now() - t3;
    source.close();

    const rate = (count: number, ms: number): string => `${Math.round(count / (ms / 1000)).toLocaleString('en-US')}/s`;
    console.log(`${n.toLocaleString('en-US')} entries: write ${writeMs.toFixed(0)} ms (${rate(n, writeMs)}), image ${img.length.toLocaleString('en-US')} bytes (${(img.length / n).toFixed(1)} bytes/entry); open ${openMs.toFixed(2)} ms; walk ${walked.toLocaleString('en-US')} entries in ${walkMs.toFixed(0)} ms (${rate(walked, walkMs)}); path lookups ${rate(lookups, lookupMs)}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
