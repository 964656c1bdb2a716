// The commit's Merkle root: what `verify` recomputes after re-hashing every object. One leaf per
// path in the tree (the root included), sorted by path bytes; each leaf commits to the path, the
// metadata a user sees (type and mode, owner, mtime in ns, size, rdev, symlink target, xattrs)
// and the fs-verity digest of the content. Leaves and nodes are combined as in RFC 6962
// (Certificate Transparency): leaf = sha256(0x00 ‖ data), node = sha256(0x01 ‖ left ‖ right),
// the left subtree holding the largest power of two below n leaves. docs/commits.md has the
// exact leaf encoding.
//
// It is computed from the image as read back (the same reader the FUSE server uses), so import,
// commit and verify share one definition.
//
// Public surface: merkleOfImage, merkleRoot, leafData, MerkleSummary, TreeStats.
import { hash } from 'node:crypto';
import { fsverityDigest } from './digest.js';
import { S_IFLNK, S_IFMT, S_IFREG } from './image/erofs.js';
import { type ImageReader, type InodeAttr, walkImage } from './image/read.js';
import { type ByteString, compareBytes } from './image/tree.js';

export interface MerkleSummary {
  root: string;
  leafCount: number;
  depth: number;
}

export interface TreeStats {
  /** Paths in the tree, the root included. */
  count: number;
  /** Bytes of regular-file content, each hardlinked inode once. */
  totalSize: number;
}

const sha256 = (data: Uint8Array): Buffer => hash('sha256', data, 'buffer') as unknown as Buffer;
const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

/** The bytes a leaf commits to; `contentDigest` is '' for anything but a regular file. */
export function leafData(path: ByteString, attr: InodeAttr, symlinkTarget: ByteString, xattrs: Array<{ name: ByteString; value: Uint8Array }>, contentDigest: string): Buffer {
  const fields = `${attr.mode.toString(8)} ${attr.uid} ${attr.gid} ${attr.mtimeSec}.${attr.mtimeNsec} ${attr.size} ${attr.rdev}`;
  const parts: Buffer[] = [Buffer.from(path, 'latin1'), Buffer.from([0]), Buffer.from(fields), Buffer.from([0]), Buffer.from(symlinkTarget, 'latin1'), Buffer.from([0])];
  for (const x of [...xattrs].sort((a, b) => compareBytes(a.name, b.name))) {
    const length = Buffer.alloc(4);
    length.writeUInt32LE(x.value.length);
    parts.push(Buffer.from(x.name, 'latin1'), Buffer.from([0]), length, Buffer.from(x.value));
  }
  parts.push(Buffer.from([0]), Buffer.from(contentDigest));
  return Buffer.concat(parts);
}

/** RFC 6962 Merkle tree hash over leaf hashes already computed. */
export function merkleRoot(leafHashes: Buffer[]): MerkleSummary {
  if (leafHashes.length === 0) return { root: sha256(Buffer.alloc(0)).toString('hex'), leafCount: 0, depth: 0 };
  const node = (from: number, to: number): Buffer => {
    if (to - from === 1) return leafHashes[from]!;
    let k = 1;
    while (k * 2 < to - from) k *= 2;
    return sha256(Buffer.concat([NODE, node(from, from + k), node(from + k, to)]));
  };
  return { root: node(0, leafHashes.length).toString('hex'), leafCount: leafHashes.length, depth: Math.ceil(Math.log2(leafHashes.length)) };
}

/** Walks the image once: Merkle summary plus the counts metadata.toml records. */
export function merkleOfImage(reader: ImageReader): { merkle: MerkleSummary; stats: TreeStats } {
  const leaves: Array<{ path: ByteString; hash: Buffer }> = [];
  const countedInodes = new Set<number>();
  let totalSize = 0;
  walkImage(reader, (path, attr, nid) => {
    const type = attr.mode & S_IFMT;
    let digest = '';
    if (type === S_IFREG) {
      digest = reader.objectOf(nid) ?? fsverityDigest(reader.readContent(nid));
      if (!countedInodes.has(nid)) {
        countedInodes.add(nid);
        totalSize += attr.size;
      }
    }
    const target = type === S_IFLNK ? reader.readlink(nid) : '';
    leaves.push({ path, hash: sha256(Buffer.concat([LEAF, leafData(path, attr, target, reader.xattrs(nid), digest)])) });
  });
  leaves.sort((a, b) => compareBytes(a.path, b.path));
  return { merkle: merkleRoot(leaves.map((l) => l.hash)), stats: { count: leaves.length, totalSize } };
}
