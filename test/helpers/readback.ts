// The reference for commit metadata: write the image, read it back, and compute the Merkle root
// the way `verify` does. Production builds it from the writer's plan; tests compare the two.
import { fsverityDigest } from '../../src/store/digest.js';
import { bufferSource, ImageReader } from '../../src/store/image/read.js';
import type { Tree } from '../../src/store/image/tree.js';
import { writeImage } from '../../src/store/image/write.js';
import { merkleOfImage } from '../../src/store/merkle.js';
import type { CommitMetadata } from '../../src/store/metadata.js';

export function commitByReadBack(tree: Tree, parent?: string): { id: string; meta: CommitMetadata } {
  const image = writeImage(tree);
  const id = fsverityDigest(image);
  const { merkle, stats } = merkleOfImage(ImageReader.open(bufferSource(image)));
  const meta: CommitMetadata = {
    merkleRoot: merkle.root,
    metadataHash: id,
    timestamp: '',
    files: { count: stats.count, totalSize: stats.totalSize },
    merkle: { leafCount: merkle.leafCount, treeDepth: merkle.depth },
  };
  if (parent) meta.parentCommit = parent;
  return { id, meta };
}
