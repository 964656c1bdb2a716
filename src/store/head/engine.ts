// The commit engine, with the store lock held and HEAD recovered: HEAD's upper over its base
// becomes a commit, tagged, and HEAD moves onto it with an empty upper. Only the upper is read
// and hashed; the rest of the tree comes from the base image, by the edits-only path (edits.ts:
// the base image patched in place) or the full one (base tree ⊕ upper, written whole by
// build.ts). Upper files become objects by hard link (the retired upper is then removed, so the
// link is in effect a rename), a copy where a link is impossible. A journal is written before
// anything becomes visible; head.toml's base is the commit point (journal.ts).
//
// Public surface: commitUpper, refuseTakenTag, CommitOptions, CommitResult, COMMIT_V8_FLAGS.
import { constants as C, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { fsverityDigest } from '../digest.js';
import { StratumError, isSystemError, wrapSystemError } from '../error.js';
import type { HeadState } from '../head.js';
import { imageTreeFromBytes, lazyImageTree } from '../image/image-tree.js';
import { FileSource, ImageReader, bufferSource } from '../image/read.js';
import { indexBase } from '../image/splice.js';
import { type Inode, type Tree, newInode, objectPath } from '../image/tree.js';
import { summaryOf } from '../merkle.js';
import type { CommitMetadata } from '../metadata.js';
import { openWriters } from '../open-writers.js';
import { INLINE_LIMIT } from '../source.js';
import type { Store } from '../store.js';
import { type PendingContent, mergeUpper } from '../union.js';
import { makeFreshUpper, upperRootAttr } from '../upper.js';
import { anyLengthAsync } from '../../native/files.js';
import { digestBuffer, digestFd } from '../../native/verity.js';
import { commitRoot, readBaseImage, requireImage } from './base.js';
import { spliceHeadCommit } from './splice.js';
import { buildHeadCommit } from './build.js';
import { MERKLE_CACHE_FILE, type MerkleCache, patchImage, readMerkleCache, scanEdits, writeMerkleCache } from './edits.js';
import { type CommitStep, readJournal, rollForward, writeJournal } from './journal.js';
import type { HeadPaths } from './paths.js';
import { type CachedTree, TREE_CACHE_FILE, writeTreeCache } from './tree-cache.js';
import { type TreeEdit, readBaseTreeCache, recordTreeEdits } from './tree-edits.js';
import { ensureUpper, removeTree } from './upper-dir.js';
import { pool } from '../pool.js';

/** Files hashed and linked at once. */
const CONCURRENCY = 16;

// A full-path commit of a large tree makes ~100 MB of objects (base tree, plan, Merkle leaves)
// that live for the whole commit. With V8's default young generation (16 MB semi-spaces) most of
// them are copied twice and promoted, and old-generation collections then cost about a quarter
// of the commit's CPU (100k files: ~1.45 s -> ~1.1 s with 64 MB). The young generation only
// grows to this when a process allocates that much. A library does not set its host's V8 flags:
// the processes that commit (the CLI, a mount's commit child, the commit bench) pass this
// to `setFlagsFromString` or `execArgv` themselves.
export const COMMIT_V8_FLAGS = '--max-semi-space-size=64';


export type CommitPath = 'edits' | 'splice' | 'full';

export interface CommitOptions {
  label: string;
  /** The tag to create; default: the commit id. An existing tag is TAG_EXISTS and nothing changes. */
  tag?: string | undefined;
  /** false: never splice (the tests hold the ways to one another). */
  splice?: boolean | undefined;
  /** `fastPath` and `path` are known from 'merged' on. */
  onStep?: (step: CommitStep, info: { fastPath: boolean | undefined; path?: CommitPath | undefined }) => void | Promise<void>;
}

export interface CommitResult {
  id: string;
  label: string;
  tag: string;
  parent: string;
  /** True when the merged tree is the base tree: the tag points at the base. */
  unchanged: boolean;
  /** Whether the base image was patched in place (edits only) rather than rewritten. */
  fastPath: boolean;
  /** How the image was made: the base patched in place (edits only), spliced, or written whole. */
  path: CommitPath;
  newCommit: boolean;
  /** Entries in the upper (whiteouts included), deletions among them. */
  changedPaths: number;
  deletions: number;
  /** Upper files stored: as new objects (linked or copied), inline, or already in the store. */
  storedFiles: number;
  newObjects: number;
  linkedObjects: number;
  copiedObjects: number;
  /** Bytes of upper file content read and hashed. */
  bytes: number;
  /** The new commit's paths and content bytes. */
  files: number;
  totalBytes: number;
}

/**
 * The engine, with the store lock held and HEAD recovered: HEAD's upper over its base becomes a
 * commit, tagged, and HEAD moves onto it. `nextUpper`: 'fresh' makes the empty upper that
 * replaces the committed one; 'prepared' takes the one already in head.swap (a live kernel-mode
 * commit put one there, with the writes made since).
 */
export async function commitUpper(store: Store, head: HeadState, paths: HeadPaths, options: { tag?: string | undefined; onStep?: CommitOptions['onStep']; nextUpper: 'fresh' | 'prepared'; linkObjects?: boolean; splice?: boolean | undefined }): Promise<CommitResult> {
  const label = head.label;
  const explicitTag = options.tag !== undefined;
  let fastPath: boolean | undefined;
  let path: CommitPath | undefined;
  const step = async (s: CommitStep): Promise<void> => {
    await options.onStep?.(s, { fastPath, path });
  };
  // An upper file someone still writes (through a mount being detached, say) must not become an
  // object: its later writes would change the object.
  const writers = openWriters(paths.upper);
  if (writers.length > 0) {
    const first = Buffer.from(writers[0]!.names[0]!, 'hex').toString();
    throw new StratumError('BUSY', `${writers.length} file${writers.length === 1 ? '' : 's'} of HEAD's upper ${writers.length === 1 ? 'is' : 'are'} open for writing outside a stratum mount (e.g. /${first}, through a mount that was detached while busy); close ${writers.length === 1 ? 'it' : 'them'} and commit again`);
  }
  requireImage(store, head.base);
  // The base's Merkle cache, read once: both paths start from it, and a missing one costs time only.
  const baseMeta = await store.commits.metadata(head.base);
  const cached = readMerkleCache(join(paths.labelDir, MERKLE_CACHE_FILE), head.base, baseMeta);
  if (!cached && process.env.STRATUM_DEBUG_FASTPATH) process.stderr.write('no usable Merkle cache for the base: the full path hashes every leaf\n');
  // Three ways to the same image, cheapest first; each refuses (undefined) what it cannot do. What
  // one way read (the base image, checked; the upper's files, hashed) the next takes as it is.
  const hashed: HashMemo = new Map();
  let baseBytes: Buffer | undefined;
  const baseImage = (): Buffer => (baseBytes ??= readBaseImage(store, head.base));
  let prepared = (cached && (await prepareFast(store, head, paths, baseMeta, cached, hashed, baseImage))) ?? (cached && options.splice !== false ? await prepareSplice(head, paths, cached, hashed, baseImage) : undefined) ?? (await prepareFull(head, paths, cached, hashed, baseImage));
  if (prepared.upperEntries === 0 && rootOwnerOnly(store, head, prepared.root)) prepared = await unchangedBase(store, head.base, paths, prepared);
  fastPath = prepared.path === 'edits';
  path = prepared.path;
  await step('merged');
  const { id, meta, image, contents } = prepared;
  const tag = options.tag ?? id;
  const result: CommitResult = {
    id, label, tag, parent: head.base, unchanged: id === head.base, newCommit: false, fastPath: prepared.path === 'edits', path: prepared.path,
    changedPaths: prepared.upperEntries, deletions: prepared.whiteouts, storedFiles: prepared.pending.length,
    newObjects: 0, linkedObjects: 0, copiedObjects: 0, bytes: contents.bytes,
    files: meta.files.count, totalBytes: meta.files.totalSize,
  };
  if (!explicitTag) {
    const existing = await store.tags.read(label, tag);
    if (existing && !(existing.kind === 'id' && existing.id === id)) throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists and points elsewhere`);
  }

  // Stage new objects as links to the upper files (in tmp/: a crash leaves only debris).
  const staging = await store.tmp.makeDir('commit');
  try {
    const linked: Array<[string, string]> = [];
    const staged: string[] = [];
    await pool([...contents.objects], CONCURRENCY, async ([digest, path]) => {
      if (await store.objects.has(digest)) return;
      const dest = join(staging.path, digest);
      try {
        if (options.linkObjects === false) throw Object.assign(new Error('a copy is asked for'), { code: 'EPERM' });
        await anyLengthAsync(path, (p) => fsp.link(p, dest));
        linked.push([digest, path.subarray(Buffer.byteLength(paths.upper) + 1).toString('hex')]);
      } catch (err) {
        if (!['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP'].some((c) => isSystemError(err, c))) throw wrapSystemError(err, `linking ${path.toString()}`);
        await anyLengthAsync(path, (p) => fsp.copyFile(p, dest, C.COPYFILE_EXCL));
        await fsp.chmod(dest, 0o444);
        result.copiedObjects++;
      }
      staged.push(digest);
    });
    result.linkedObjects = linked.length;
    result.newObjects = staged.length;
    await step('staged');

    // The fresh upper the swap will put in place, carrying the new root's attributes.
    if (options.nextUpper === 'fresh') {
      await removeTree(store, paths.swap);
      await makeFreshUpper(paths.swap, prepared.root, head.xattrNamespace);
    }
    const freshIno = String((await fsp.lstat(paths.swap, { bigint: true })).ino);
    await writeJournal(store, paths, { op: 'commit', label, from: head.base, to: id, tag, explicitTag, freshIno, linked });
    await step('journal');

    await store.objects.publish(staging, staged, 'link');
  } finally {
    await staging.dispose();
  }
  await step('objects');
  result.newCommit = await store.commits.add(image, meta);
  await step('image');
  await rollForward(store, paths, (await readJournal(paths))!, step);
  await ensureUpper(store, { ...head, base: id });
  // the next commit starts from this cache (checked when read; a failure here costs only time)
  await writeMerkleCache(store.tmp, join(paths.labelDir, MERKLE_CACHE_FILE), prepared.cache).catch(() => undefined);
  if (prepared.tree && !result.unchanged) await writeTreeCache(store.tmp, join(paths.labelDir, TREE_CACHE_FILE), id, prepared.tree, prepared.treeBase).catch(() => undefined);
  if (prepared.edits && !result.unchanged) await recordTreeEdits(store.tmp, paths.labelDir, head.base, id, prepared.edits).catch(() => undefined);
  return result;
}

/** What a commit writes, however it was computed. */
interface Prepared {
  id: string;
  meta: CommitMetadata;
  image: Uint8Array;
  cache: MerkleCache;
  /** The new commit's tree, when the full path built one (the next commit's base tree cache). */
  tree?: Tree;
  /** The base's tree cache it was merged from: its untouched directories' records are copied. */
  treeBase?: CachedTree | undefined;
  /** What the edits-only path changed, for the tree cache's edits file (tree-edits.ts). */
  edits?: TreeEdit[];
  /** Attributes of the new root, for the fresh upper. */
  root: Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'>;
  pending: PendingContent[];
  contents: { objects: Map<string, Buffer>; bytes: number };
  upperEntries: number;
  whiteouts: number;
  path: CommitPath;
}

/**
 * An unprivileged HEAD's upper root is always owned by its user (only root may chown), so a root
 * that differs from the base in owner alone, with nothing else in the upper, is no change.
 */
function rootOwnerOnly(store: Store, head: HeadState, root: Prepared['root']): boolean {
  if (head.xattrNamespace !== 'user') return false;
  const base = commitRoot(store, head.base);
  const sameXattrs = base.xattrs.length === root.xattrs.length && base.xattrs.every((x, i) => x.name === root.xattrs[i]!.name && Buffer.compare(Buffer.from(x.value), Buffer.from(root.xattrs[i]!.value)) === 0);
  return (base.uid !== root.uid || base.gid !== root.gid) && root.uid === process.geteuid?.() && base.mode === root.mode && base.mtimeSec === root.mtimeSec && base.mtimeNsec === root.mtimeNsec && sameXattrs;
}

/** The base commit itself as what a commit prepared: nothing new is written. */
async function unchangedBase(store: Store, base: string, paths: HeadPaths, prepared: Prepared): Promise<Prepared> {
  const image = new Uint8Array(await fsp.readFile(store.commits.imagePath(base)));
  const meta = await store.commits.metadata(base);
  const cache = readMerkleCache(join(paths.labelDir, MERKLE_CACHE_FILE), base, meta) ?? prepared.cache;
  return { ...prepared, id: base, meta, image, cache, root: commitRoot(store, base), pending: [], contents: { objects: new Map(), bytes: 0 } };
}

/** Why a path was refused, for STRATUM_DEBUG_FASTPATH=1. */
function refused(path: string, why: string): undefined {
  if (process.env.STRATUM_DEBUG_FASTPATH) process.stderr.write(`${path} refused: ${why}\n`);
  return undefined;
}

/**
 * The splice path (head/splice.ts): the base read lazily, the upper merged in, the new image
 * spliced from the base's; undefined when the splice refuses the change (the full path runs).
 */
async function prepareSplice(head: HeadState, paths: HeadPaths, cached: MerkleCache, hashed: HashMemo, baseImage: () => Buffer): Promise<Prepared | undefined> {
  const index = indexBase(baseImage());
  if (typeof index === 'string') return refused('splice', index);
  const reader = ImageReader.whole(baseImage());
  const { tree: base, origin } = lazyImageTree(reader);
  // (indexBase refuses a base with hardlinks, so the merge need not look for them in it)
  const merged = mergeUpper(base, paths.upper, { ns: head.xattrNamespace, style: 'overlay', baseLinkFree: true });
  const contents = await hashContents(merged.pending, hashed);
  const built = spliceHeadCommit(reader, index, merged.tree, origin, cached, head.base);
  if (typeof built === 'string') return refused('splice', built);
  return { ...built, root: merged.tree.root, pending: merged.pending, contents, upperEntries: merged.upperEntries, whiteouts: merged.whiteouts, path: 'splice' };
}

/** The general path: base tree ⊕ upper, laid out and written whole. */
async function prepareFull(head: HeadState, paths: HeadPaths, cached: MerkleCache | undefined, hashed: HashMemo, baseImage: () => Buffer): Promise<Prepared> {
  const cachedTree = readBaseTreeCache(paths.labelDir, head.base);
  const base = cachedTree?.tree ?? imageTreeFromBytes(baseImage()); // the reader's whole mode: bounds- and cycle-checked
  const merged = mergeUpper(base, paths.upper, { ns: head.xattrNamespace, style: 'overlay', baseLinkFree: cachedTree?.linkFree });
  const contents = await hashContents(merged.pending, hashed);
  const { id, meta, image, cache } = buildHeadCommit(merged.tree, head.base, cached && { base, cache: cached });
  return { id, meta, image, cache, tree: merged.tree, treeBase: cachedTree, root: merged.tree.root, pending: merged.pending, contents, upperEntries: merged.upperEntries, whiteouts: merged.whiteouts, path: 'full' };
}

/** The edits-only path (head-patch.ts), or undefined when it does not apply. */
async function prepareFast(store: Store, head: HeadState, paths: HeadPaths, baseMeta: CommitMetadata, cache: MerkleCache, hashed: HashMemo, baseImage: () => Buffer): Promise<Prepared | undefined> {
  // The scan looks up only the upper's paths: through the file, so a commit that takes the full
  // path (a new name, found by the scan) does not read the whole base image for nothing.
  const imagePath = store.commits.imagePath(head.base);
  const source = new FileSource(imagePath);
  let scan: ReturnType<typeof scanEdits>;
  try {
    scan = scanEdits(ImageReader.open(source), paths.upper, head.xattrNamespace);
  } finally {
    source.close();
  }
  if (!scan) return undefined;
  // the same image in memory (nids are image positions: the scan's stay valid), to patch
  const reader = ImageReader.open(bufferSource(baseImage()));
  const pending: PendingContent[] = scan.edits.filter((e) => e.kind === 'content').map((e) => ({ path: e.upperPath, inode: newInode({ mode: Number(e.stat.mode), size: Number(e.stat.size) }) }));
  const contents = await hashContents(pending, hashed);
  for (let i = 0, k = 0; i < scan.edits.length; i++) {
    const edit = scan.edits[i]!;
    if (edit.kind !== 'content') continue;
    const inode = pending[k++]!.inode;
    // a new object cannot be shared with another inode of the tree (which would move it to the shared xattr table)
    if (!inode.digest || inode.size !== Number(edit.stat.size) || (await store.objects.has(inode.digest))) {
      if (process.env.STRATUM_DEBUG_FASTPATH) process.stderr.write(`fast path refused: ${edit.path}: content already in the store\n`);
      return undefined;
    }
    edit.digest = inode.digest;
  }
  const image = Buffer.from(baseImage()); // a copy to patch: the base bytes stay as read for a way that follows
  const patched = patchImage(image, reader, scan.edits, cache);
  if (!patched) return undefined;
  const id = digestBuffer(image);
  const meta: CommitMetadata = {
    merkleRoot: summaryOf(patched.levels).root,
    metadataHash: id,
    timestamp: new Date().toISOString(),
    parentCommit: head.base,
    files: { count: baseMeta.files.count, totalSize: baseMeta.files.totalSize + patched.sizeDelta },
    merkle: baseMeta.merkle,
  };
  const rootStat = await fsp.lstat(paths.upper, { bigint: true }).catch(() => undefined);
  const baseRoot = reader.getattr(reader.rootNid);
  const root = rootStat ? { ...upperRootAttr(rootStat), xattrs: reader.xattrs(reader.rootNid) } : { mode: baseRoot.mode, uid: baseRoot.uid, gid: baseRoot.gid, mtimeSec: baseRoot.mtimeSec, mtimeNsec: baseRoot.mtimeNsec, xattrs: reader.xattrs(reader.rootNid) };
  const edits = scan.edits.map((e): TreeEdit => ({ path: e.path, ...upperRootAttr(e.stat), ...(e.kind === 'content' ? { content: { size: Number(e.stat.size), digest: e.digest! } } : {}) }));
  return { id, meta, image, cache: { id, paths: cache.paths, levels: patched.levels }, root, pending, contents, upperEntries: scan.upperEntries, whiteouts: 0, path: 'edits', edits };
}

/** What hashing an upper file gave, by its path: a path refused by one way is not read again by the next. */
type HashMemo = Map<string, Pick<Inode, 'size' | 'content' | 'digest' | 'payload'>>;

/** Reads every pending upper file once: small ones inline, others hashed to a digest. */
async function hashContents(pending: PendingContent[], hashed: HashMemo): Promise<{ objects: Map<string, Buffer>; bytes: number }> {
  const objects = new Map<string, Buffer>();
  let bytes = 0;
  await pool(pending, CONCURRENCY, async ({ path, inode }) => {
    const key = path.toString('latin1');
    const known = hashed.get(key);
    if (known) Object.assign(inode, known);
    else {
      await hashOne(path, inode);
      const { size, content, digest, payload } = inode;
      hashed.set(key, { size, ...(content && { content }), ...(digest && { digest }), ...(payload && { payload }) });
    }
    bytes += inode.size;
    if (inode.digest !== undefined && !objects.has(inode.digest)) objects.set(inode.digest, path);
  });
  return { objects, bytes };
}

/** Hashes one upper file into its inode: its size, then inline content or digest and payload. */
async function hashOne(path: Buffer, inode: Inode): Promise<void> {
  const handle = await anyLengthAsync(path, (p) => fsp.open(p, C.O_RDONLY | C.O_NOFOLLOW)).catch((err: unknown) => {
    throw wrapSystemError(err, `reading ${path.toString()}`);
  });
  try {
    const size = (await handle.stat()).size;
    inode.size = size;
    if (size === 0) return;
    if (size <= INLINE_LIMIT) {
      const buf = Buffer.alloc(size);
      const { bytesRead } = await handle.read(buf, 0, size, 0);
      inode.content = buf.subarray(0, bytesRead);
      inode.size = bytesRead;
      return;
    }
    const digest = size <= 1 << 20 ? fsverityDigest(await handle.readFile()) : await digestFd(handle.fd);
    inode.digest = digest;
    inode.payload = objectPath(digest);
  } finally {
    await handle.close();
  }
}

/** An explicit tag that exists already: TAG_EXISTS before anything is done. */
export async function refuseTakenTag(store: Store, label: string, tag: string | undefined): Promise<void> {
  if (tag !== undefined && (await store.tags.read(label, tag))) {
    throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists; choose another tag (nothing was committed)`);
  }
}
