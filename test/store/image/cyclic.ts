// A composefs image whose directories form a cycle (/a/b is /a again), as a hostile bundle or a
// damaged synced commit.cfs could carry: written validly, then one dirent retargeted.
import { S_IFDIR, S_IFREG } from '../../../src/store/image/erofs.js';
import { ImageReader, bufferSource } from '../../../src/store/image/read.js';
import { addEntry, newInode } from '../../../src/store/image/tree.js';
import { writeImage } from '../../../src/store/image/write.js';

export function cyclicImage(): Buffer {
  const root = newInode({ mode: S_IFDIR | 0o755 });
  const a = newInode({ mode: S_IFDIR | 0o755 });
  const b = newInode({ mode: S_IFDIR | 0o755 });
  addEntry(root, 'a', a);
  addEntry(a, 'b', b);
  addEntry(a, 'f', Object.assign(newInode({ mode: S_IFREG | 0o644, size: 5 }), { content: Buffer.from('hello') }));
  addEntry(b, 'g', Object.assign(newInode({ mode: S_IFREG | 0o644, size: 5 }), { content: Buffer.from('world') }));
  const img = Buffer.from(writeImage({ root }));
  const reader = ImageReader.open(bufferSource(img));
  const aNid = reader.lookup(reader.rootNid, 'a')!;
  const bNid = reader.lookup(aNid, 'b')!;
  // a's entry "b" and b's own "." both hold bNid as a directory; retarget whichever is a's "b"
  for (let p = 0; p + 12 <= img.length; p += 4) {
    if (img.readUInt32LE(p) !== bNid || img.readUInt32LE(p + 4) !== 0 || img[p + 10] !== 2) continue;
    const candidate = Buffer.from(img);
    candidate.writeUInt32LE(aNid, p);
    const r = ImageReader.open(bufferSource(candidate));
    if (r.lookup(aNid, 'b') === aNid) return candidate;
  }
  throw new Error('cyclicImage: dirent of /a/b not found');
}
