// `commit label[:tag]`: HEAD's base ⊕ its upper dir becomes a new commit, tagged, and HEAD moves
// onto it with an empty upper. Only the upper is read and hashed; the rest of the tree comes from
// the base image. Upper files become objects by hard link (then the retired upper is removed, so
// the link is in effect a rename); a copy where a link is impossible. docs/commit.md describes
// the crash protocol implemented here: a journal in refs/<label>/ is written before anything
// becomes visible, head.toml's base is the commit point, and `recoverHead` finishes (roll forward)
// or undoes (roll back) whatever a killed process left.
//
// The upper swap (`swapUpper`) is one separate step: a live mount replaces it with its own.
// A live commit in kernel mode (live-commit.ts) splits the upper first and journals that in
// head.live; `recoverHead` finishes such a commit too (`finishLiveCommit`).
//
// Public surface: commitHead, CommitOptions, CommitResult, CommitStep, recoverHead, headPaths,
// HeadPaths, baseTree, commitRoot, ensureUpper, swapUpper, writeJournal, Journal, countUpper,
// upperRootChanged, refuseMountedUpper, refuseTakenTag, commitUpper, LiveJournal, writeLiveJournal,
// readLiveJournal, finishLiveCommit.
import { constants as C, promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE_FILE } from '../commits.js';
import { fsverityDigest } from '../digest.js';
import { StratumError, isSystemError, wrapSystemError } from '../error.js';
import { type HeadState, headServedBy } from '../head.js';
import { FileSource, ImageReader, bufferSource, walkImage } from '../image/read.js';
import { type Inode, type Tree, newInode, objectPath } from '../image/tree.js';
import { checkLabel, checkTag } from '../names.js';
import { INLINE_LIMIT } from '../source.js';
import type { Store } from '../store.js';
import { syncDir, syncFilesystem, writeFileAtomic } from '../tmp.js';
import { type PendingContent, imageTree, imageTreeFromBytes, mergeUpper } from '../union.js';
import { MountState, overlayUsing } from '../mount-state.js';
import { type KeptFile, mergeKept, openWriters, snapshotKept } from '../open-writers.js';
import { makeFreshUpper, upperRootAttr } from '../upper.js';
import { lremovexattr, llistxattr } from '../../native/xattr.js';
import { anyLengthAsync, RENAME_EXCHANGE, removeAnyDepth, renameat2 } from '../../native/files.js';
import { digestFd } from '../../native/verity.js';
import { buildHeadCommit, leafHash } from './head-image.js';
import { MERKLE_CACHE_FILE, type MerkleCache, patchImage, readMerkleCache, scanEdits, writeMerkleCache } from './head-patch.js';
import { digestBuffer } from '../../native/verity.js';
import { merkleRoot } from '../merkle.js';
import type { CommitMetadata } from '../metadata.js';

/** Files hashed and linked at once. */
const CONCURRENCY = 16;

/** Points a test (or a live mount) can observe; a crash test kills the process at each. */
export type CommitStep = 'merged' | 'staged' | 'journal' | 'objects' | 'image' | 'tagged' | 'head' | 'swapped' | 'done';

export interface CommitOptions {
  label: string;
  /** The tag to create; default: the commit id. An existing tag is TAG_EXISTS and nothing changes. */
  tag?: string | undefined;
  /** `fastPath` is known from 'merged' on. */
  onStep?: (step: CommitStep, info: { fastPath: boolean | undefined }) => void | Promise<void>;
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

export interface HeadPaths {
  labelDir: string;
  upper: string;
  work: string;
  /** The next upper while a swap is prepared; the retired upper after it. */
  swap: string;
  journal: string;
  /** The journal of a live commit in kernel mode (live-commit.ts) while its upper is split in two. */
  live: string;
}

export function headPaths(store: Store, label: string): HeadPaths {
  const labelDir = store.tags.labelDir(label);
  return { labelDir, upper: join(labelDir, 'head'), work: join(labelDir, 'work'), swap: join(labelDir, 'head.swap'), journal: join(labelDir, 'head.journal'), live: join(labelDir, 'head.live') };
}


/** What a killed operation left to finish or undo. Paths are upper-relative, hex bytes. */
export interface Journal {
  op: 'commit' | 'apply';
  label: string;
  from: string;
  to: string;
  /** Tag to create (the id itself when none was asked for). */
  tag: string;
  /** Whether the tag must be new (an explicit tag) or may already point at `to` (the id tag). */
  explicitTag: boolean;
  /** Inode number of the fresh upper prepared in head.swap; 0 when the upper is not swapped. */
  freshIno: string;
  /** Objects that share an inode with an upper file until the retired upper is removed. */
  linked: Array<[digest: string, upperPath: string]>;
}

export async function writeJournal(store: Store, paths: HeadPaths, journal: Journal): Promise<void> {
  await writeFileAtomic(store.tmp, paths.journal, JSON.stringify(journal, null, 1) + '\n');
}

async function readJournal(paths: HeadPaths): Promise<Journal | undefined> {
  return readJournalFile<Journal>(paths.journal, 'move it away and run the command again');
}

/** A journal file, or undefined when there is none; written atomically, so a garbled one is not ours to interpret. */
async function readJournalFile<T>(path: string, whatToDo: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return undefined;
    throw wrapSystemError(err, `reading ${path}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new StratumError('CORRUPT_STORE', `${path} is unreadable; ${whatToDo}`);
  }
}

/** A commit's root attributes and xattrs, read alone (a fresh upper over it must carry them). */
export function commitRoot(store: Store, id: string): Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'> {
  const source = new FileSource(store.commits.imagePath(id));
  try {
    const reader = ImageReader.open(source);
    const a = reader.getattr(reader.rootNid);
    return { mode: a.mode, uid: a.uid, gid: a.gid, mtimeSec: a.mtimeSec, mtimeNsec: a.mtimeNsec, xattrs: reader.xattrs(reader.rootNid) };
  } finally {
    source.close();
  }
}

/** The base commit as a tree. */
export function baseTree(store: Store, id: string): Tree {
  let bytes: Buffer;
  try {
    bytes = readFileSync(store.commits.imagePath(id));
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) throw new StratumError('NOT_FOUND', `commit ${id} has no image (${IMAGE_FILE} is missing); restore it from where the store was synced, or \`stratum verify\``);
    throw wrapSystemError(err, `reading commit ${id}`);
  }
  return treeOfImage(bytes);
}

/** An image as a tree: the fast one-sweep parse, or the careful reader when that fails. */
export function treeOfImage(bytes: Buffer): Tree {
  try {
    return imageTreeFromBytes(bytes);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
  }
  const reader = ImageReader.open(bufferSource(bytes));
  walkImage(reader, () => {}); // refuses directory cycles, which imageTree would follow forever
  return imageTree(reader);
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return false;
    throw err;
  }
}

async function removeTree(store: Store, path: string): Promise<void> {
  if (!(await exists(path))) return;
  const grave = join(store.tmp.dir, `retired-${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  await fsp.rename(path, grave);
  await removeAnyDepth(grave);
}

/** Makes the label's upper and work dirs if missing (the upper with `base`'s root attributes). */
export async function ensureUpper(store: Store, head: HeadState): Promise<void> {
  const paths = headPaths(store, head.label);
  await fsp.mkdir(paths.labelDir, { recursive: true });
  let made = false;
  if (!(await exists(paths.upper))) {
    await removeTree(store, paths.swap);
    await makeFreshUpper(paths.swap, commitRoot(store, head.base), head.xattrNamespace);
    await fsp.rename(paths.swap, paths.upper);
    made = true;
  }
  if (!(await exists(paths.work))) {
    await fsp.mkdir(paths.work, { mode: 0o700 });
    made = true;
  }
  if (made) await syncDir(paths.labelDir);
}

/**
 * Refuses to touch an upper that a mount uses, unless this process is the one serving it (a
 * server commits through here itself). Other mounts commit through their own server.
 */
export async function refuseMountedUpper(paths: HeadPaths, label: string, storeRoot: string): Promise<void> {
  const heads = (await new MountState().live(storeRoot, label)).filter((e) => e.ref === 'HEAD');
  if (heads.some((e) => e.pid === process.pid)) return;
  const served = heads[0];
  if (served) throw new StratumError('BUSY', `HEAD of ${label} is mounted at ${served.mountpoint}; commit and apply through the mount (stratum does this for you), or unmount it first`);
  const mountpoint = overlayUsing(paths.labelDir);
  if (mountpoint !== undefined) throw new StratumError('BUSY', `HEAD of ${label} is used by an overlay mounted at ${mountpoint}; unmount it first (\`stratum unmount ${label}\`)`);
  // a server this process's mount state does not know (another XDG_RUNTIME_DIR or STRATUM_STATE)
  const elsewhere = headServedBy(paths.labelDir);
  if (elsewhere !== undefined) throw new StratumError('BUSY', `HEAD of ${label} is mounted ${elsewhere}, recorded in another mount state (XDG_RUNTIME_DIR or STRATUM_STATE); commit and apply through that mount, or unmount it first`);
}

/**
 * The upper swap: head.swap (a fresh upper) and head/ trade places in one renameat2(EXCHANGE),
 * so the upper dir is always complete. Afterwards head.swap holds the retired upper. A live mount
 * hooks in here instead (freeze writes, swap its upper, resume).
 */
export async function swapUpper(paths: HeadPaths): Promise<void> {
  if (await exists(paths.upper)) renameat2(paths.swap, paths.upper, RENAME_EXCHANGE);
  else await fsp.rename(paths.swap, paths.upper);
  await syncDir(paths.labelDir);
}

/** Entries in the upper dir, recursively (0 when there is none). */
export async function countUpper(upper: string): Promise<number> {
  let count = 0;
  const stack = [Buffer.from(upper)];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let entries;
    try {
      entries = await anyLengthAsync(dir, (p) => fsp.readdir(p, { encoding: 'buffer', withFileTypes: true }));
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) continue;
      throw err;
    }
    for (const e of entries) {
      count++;
      if (e.isDirectory()) stack.push(Buffer.concat([dir, Buffer.from('/'), e.name as unknown as Buffer]));
    }
  }
  return count;
}

export async function commitHead(store: Store, options: CommitOptions): Promise<CommitResult> {
  const label = checkLabel(options.label);
  if (options.tag !== undefined) checkTag(options.tag);
  return store.lock.with('exclusive', async () => {
    await recoverHead(store, label, { orBusy: true });
    const head = await store.heads.read(label);
    if (!head) throw new StratumError('NOT_FOUND', `label ${label} has no HEAD; create one with \`stratum init ${label}\` or an import`);
    await refuseTakenTag(store, label, options.tag);
    const paths = headPaths(store, label);
    await refuseMountedUpper(paths, label, store.root);
    return commitUpper(store, head, paths, { tag: options.tag, onStep: options.onStep, nextUpper: 'fresh' });
  });
}

/** An explicit tag that exists already: TAG_EXISTS before anything is done. */
export async function refuseTakenTag(store: Store, label: string, tag: string | undefined): Promise<void> {
  if (tag !== undefined && (await store.tags.read(label, tag))) {
    throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists; choose another tag (nothing was committed)`);
  }
}

/**
 * The engine, with the store lock held and HEAD recovered: HEAD's upper over its base becomes a
 * commit, tagged, and HEAD moves onto it. `nextUpper`: 'fresh' makes the empty upper that
 * replaces the committed one; 'prepared' takes the one already in head.swap (a live kernel-mode
 * commit put one there, with the writes made since).
 */
export async function commitUpper(store: Store, head: HeadState, paths: HeadPaths, options: { tag?: string | undefined; onStep?: CommitOptions['onStep']; nextUpper: 'fresh' | 'prepared'; linkObjects?: boolean }): Promise<CommitResult> {
  const label = head.label;
  const explicitTag = options.tag !== undefined;
  let fastPath: boolean | undefined;
  const step = async (s: CommitStep): Promise<void> => {
    await options.onStep?.(s, { fastPath });
  };
  // An upper file someone still writes (through a mount being detached, say) must not become an
  // object: its later writes would change the object.
  const writers = openWriters(paths.upper);
  if (writers.length > 0) {
    const first = Buffer.from(writers[0]!.names[0]!, 'hex').toString();
    throw new StratumError('BUSY', `${writers.length} file${writers.length === 1 ? '' : 's'} of HEAD's upper ${writers.length === 1 ? 'is' : 'are'} open for writing outside a stratum mount (e.g. /${first}, through a mount that was detached while busy); close ${writers.length === 1 ? 'it' : 'them'} and commit again`);
  }
  let prepared = (await prepareFast(store, head, paths)) ?? (await prepareFull(store, head, paths));
  if (prepared.upperEntries === 0 && rootOwnerOnly(store, head, prepared.root)) prepared = await unchangedBase(store, head.base, paths, prepared);
  fastPath = prepared.fast;
  await step('merged');
  const { id, meta, image, contents } = prepared;
  const tag = options.tag ?? id;
  const result: CommitResult = {
    id, label, tag, parent: head.base, unchanged: id === head.base, newCommit: false, fastPath: prepared.fast,
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
    await forEach([...contents.objects], async ([digest, path]) => {
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

    if (staged.length > 0) {
      syncFilesystem(staging.fd);
      const fans = new Set<string>();
      for (const digest of staged) {
        const fan = join(store.objects.root, digest.slice(0, 2));
        if (!fans.has(fan)) {
          await fsp.mkdir(fan, { recursive: true });
          fans.add(fan);
        }
        try {
          await fsp.link(join(staging.path, digest), store.objects.path(digest));
        } catch (err) {
          if (!isSystemError(err, 'EEXIST')) throw wrapSystemError(err, `publishing object ${digest}`);
        }
      }
      syncFilesystem(staging.fd);
    }
  } finally {
    await staging.dispose();
  }
  await step('objects');
  result.newCommit = await store.commits.add(image, meta);
  await step('image');
  await rollForward(store, paths, (await readJournal(paths))!, step);
  await ensureUpper(store, { ...head, base: id });
  // the next commit's fast path starts from this cache (a cache: no fsync, checked when read)
  await writeMerkleCache(join(paths.labelDir, MERKLE_CACHE_FILE), prepared.cache).catch(() => undefined);
  return result;
}

/** What a commit writes, however it was computed. */
interface Prepared {
  id: string;
  meta: CommitMetadata;
  image: Uint8Array;
  cache: MerkleCache;
  /** Attributes of the new root, for the fresh upper. */
  root: Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'>;
  pending: PendingContent[];
  contents: { objects: Map<string, Buffer>; bytes: number };
  upperEntries: number;
  whiteouts: number;
  fast: boolean;
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

/** The general path: base tree ⊕ upper, laid out and written whole. */
async function prepareFull(store: Store, head: HeadState, paths: HeadPaths): Promise<Prepared> {
  const merged = mergeUpper(baseTree(store, head.base), paths.upper, { ns: head.xattrNamespace, style: 'overlay' });
  const contents = await hashContents(merged.pending);
  const { id, meta, image, cache } = buildHeadCommit(merged.tree, head.base);
  return { id, meta, image, cache, root: merged.tree.root, pending: merged.pending, contents, upperEntries: merged.upperEntries, whiteouts: merged.whiteouts, fast: false };
}

/** The edits-only path (head-patch.ts), or undefined when it does not apply. */
async function prepareFast(store: Store, head: HeadState, paths: HeadPaths): Promise<Prepared | undefined> {
  const baseMeta = await store.commits.metadata(head.base);
  const cache = readMerkleCache(join(paths.labelDir, MERKLE_CACHE_FILE), head.base, baseMeta);
  if (!cache) {
    if (process.env.STRATUM_DEBUG_FASTPATH) process.stderr.write('fast path refused: no Merkle cache for the base\n');
    return undefined;
  }
  const baseImage = readFileSync(store.commits.imagePath(head.base));
  const reader = ImageReader.open(bufferSource(baseImage));
  const scan = scanEdits(reader, paths.upper, head.xattrNamespace);
  if (!scan) return undefined;
  const pending: PendingContent[] = scan.edits.filter((e) => e.kind === 'content').map((e) => ({ path: e.upperPath, inode: newInode({ mode: Number(e.stat.mode), size: Number(e.stat.size) }) }));
  const contents = await hashContents(pending);
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
  const image = Buffer.from(baseImage);
  const patched = patchImage(image, reader, scan.edits, cache, leafHash);
  if (!patched) return undefined;
  const id = digestBuffer(image);
  const top = patched.levels[patched.levels.length - 1]![0]!;
  const meta: CommitMetadata = {
    merkleRoot: cache.paths.length <= 1 ? merkleRoot(patched.levels[0]!).root : top.toString('hex'),
    metadataHash: id,
    timestamp: new Date().toISOString(),
    parentCommit: head.base,
    files: { count: baseMeta.files.count, totalSize: baseMeta.files.totalSize + patched.sizeDelta },
    merkle: baseMeta.merkle,
  };
  const rootStat = await fsp.lstat(paths.upper, { bigint: true }).catch(() => undefined);
  const baseRoot = reader.getattr(reader.rootNid);
  const root = rootStat ? { ...upperRootAttr(rootStat), xattrs: reader.xattrs(reader.rootNid) } : { mode: baseRoot.mode, uid: baseRoot.uid, gid: baseRoot.gid, mtimeSec: baseRoot.mtimeSec, mtimeNsec: baseRoot.mtimeNsec, xattrs: reader.xattrs(reader.rootNid) };
  return { id, meta, image, cache: { id, paths: cache.paths, levels: patched.levels }, root, pending, contents, upperEntries: scan.upperEntries, whiteouts: 0, fast: true };
}

/** Reads every pending upper file once: small ones inline, others hashed to a digest. */
async function hashContents(pending: PendingContent[]): Promise<{ objects: Map<string, Buffer>; bytes: number }> {
  const objects = new Map<string, Buffer>();
  let bytes = 0;
  await forEach(pending, async ({ path, inode }) => {
    const handle = await anyLengthAsync(path, (p) => fsp.open(p, C.O_RDONLY | C.O_NOFOLLOW)).catch((err: unknown) => {
      throw wrapSystemError(err, `reading ${path.toString()}`);
    });
    try {
      const size = (await handle.stat()).size;
      inode.size = size;
      bytes += size;
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
      if (!objects.has(digest)) objects.set(digest, path);
    } finally {
      await handle.close();
    }
  });
  return { objects, bytes };
}

async function forEach<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
}

/**
 * Finishes or undoes what a killed commit or apply of `label` left (see docs/commit.md). Call
 * with the store lock held, before reading the label's HEAD for anything that matters.
 * Returns what it did.
 */
export async function recoverHead(store: Store, label: string, options: { orBusy?: boolean; onStep?: CommitOptions['onStep'] } = {}): Promise<'none' | 'rolled-forward' | 'rolled-back' | 'pending'> {
  const paths = headPaths(store, label);
  const live = await readLiveJournal(paths);
  if (live && !options.onStep) {
    // a live kernel-mode commit whose server failed or died: its overlay may still use both
    // halves of the upper; only the server (onStep) or nobody may finish it
    const mountpoint = overlayUsing(paths.labelDir);
    if (mountpoint !== undefined) {
      if (options.orBusy) throw new StratumError('BUSY', `HEAD of ${label} is in the middle of a live commit, still mounted at ${mountpoint}; run \`stratum unmount ${label}\` (or commit through the mount) to finish it`);
      return 'pending';
    }
  }
  if (live && !live.switched && !(await swapWritten(paths, live))) {
    // killed before the switch: the old overlay went on using the upper, head.swap saw nothing
    await removeTree(store, paths.swap);
    await fsp.rm(paths.live, { force: true });
    await syncDir(paths.labelDir);
    return 'rolled-back';
  }
  const journal = await readJournal(paths);
  const step = options.onStep ? (s: CommitStep) => Promise.resolve(options.onStep!(s, { fastPath: undefined })) : undefined;
  let outcome: 'none' | 'rolled-forward' | 'rolled-back' = 'none';
  if (!journal) {
    if (!live) await removeTree(store, paths.swap); // a swap prepared before its journal was written
  } else if (await store.commits.has(journal.to)) {
    await rollForward(store, paths, journal, step);
    outcome = 'rolled-forward';
  } else {
    await rollBack(store, paths, journal, { keepSwap: live !== undefined });
    outcome = 'rolled-back';
  }
  if (live && (await exists(paths.live))) {
    // whoever writes the old upper now (through a detached old mount, say) is kept like the rest
    await finishLiveCommit(store, paths, { ...live, kept: mergeKept(live.kept, openWriters(paths.upper)) }, options.onStep);
    outcome = 'rolled-forward';
  }
  return outcome;
}

/**
 * Whether head.swap holds anything but what the live commit put there (a fresh root, the kept
 * files and their parent dirs): then the switch happened before the journal could say so, and
 * head.swap has writes that must not be dropped.
 */
async function swapWritten(paths: HeadPaths, live: LiveJournal): Promise<boolean> {
  const root = await fsp.lstat(paths.swap, { bigint: true }).catch(() => undefined);
  if (!root) return false;
  if (live.swapRootMtimeNs !== undefined && String(root.mtimeNs) !== live.swapRootMtimeNs) return true;
  const expected = new Map<string, string | undefined>(); // hex path -> kept inode (undefined: a parent dir)
  for (const k of live.kept) {
    for (const rel of k.names) {
      const parts = Buffer.from(rel, 'hex');
      for (let i = parts.indexOf(0x2f); i >= 0; i = parts.indexOf(0x2f, i + 1)) expected.set(parts.subarray(0, i).toString('hex'), undefined);
      expected.set(rel, k.ino);
    }
  }
  const stack: Buffer[] = [Buffer.alloc(0)];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    const dir = rel.length === 0 ? Buffer.from(paths.swap) : Buffer.concat([Buffer.from(paths.swap + '/'), rel]);
    for (const name of (await anyLengthAsync(dir, (p) => fsp.readdir(p, { encoding: 'buffer' }))) as Buffer[]) {
      const r = rel.length === 0 ? name : Buffer.concat([rel, Buffer.from('/'), name]);
      const key = r.toString('hex');
      if (!expected.has(key)) return true;
      const st = await anyLengthAsync(Buffer.concat([dir, Buffer.from('/'), name]), (p) => fsp.lstat(p, { bigint: true }));
      const ino = expected.get(key);
      if (ino === undefined ? !st.isDirectory() : String(st.ino) !== ino) return true;
      if (st.isDirectory()) stack.push(r);
    }
  }
  return false;
}

/** What a live kernel-mode commit records before it splits the upper (docs/kernel.md "Live commit"). */
export interface LiveJournal {
  op: 'live-commit';
  label: string;
  from: string;
  /** The tag asked for; absent: tagged by the commit id. */
  tag?: string;
  /** Files that were open for writing: their inode went on into the next upper (head.swap). */
  kept: KeptFile[];
  /** Whether the overlay with head.swap as its upper was put in place (before that, nothing wrote to head.swap). */
  switched: boolean;
  /** head.swap's root mtime as prepared: a different one means something was written there. */
  swapRootMtimeNs?: string;
}

export async function writeLiveJournal(store: Store, paths: HeadPaths, journal: LiveJournal): Promise<void> {
  await writeFileAtomic(store.tmp, paths.live, JSON.stringify(journal, null, 1) + '\n');
}

export async function readLiveJournal(paths: HeadPaths): Promise<LiveJournal | undefined> {
  return readJournalFile<LiveJournal>(paths.live, `move it away, then merge ${paths.swap} into ${paths.upper} by hand`);
}

/**
 * The second half of a live commit: the upper (now nobody's upper) is committed over the base and
 * head.swap, which holds everything written since, becomes HEAD's upper. `onStep` lets the
 * server put the new overlay in place at the commit point.
 */
export async function finishLiveCommit(store: Store, paths: HeadPaths, live: LiveJournal, onStep?: CommitOptions['onStep'], options: { linkObjects?: boolean } = {}): Promise<CommitResult> {
  const head = await store.heads.read(live.label);
  if (!head) throw new StratumError('CORRUPT_STORE', `HEAD of ${live.label} is gone in the middle of a live commit; ${paths.swap} holds the latest changes`);
  if (!(await exists(paths.swap))) throw new StratumError('CORRUPT_STORE', `HEAD of ${live.label}: the next upper ${paths.swap} of a live commit is gone; move ${paths.live} away`);
  // the writers of the old upper get left with their inode; the commit takes a copy
  snapshotKept(paths.upper, store.tmp.dir, live.kept);
  // linking is only safe when nothing can open the old upper's files for writing any more
  return commitUpper(store, head, paths, { tag: live.tag, onStep, nextUpper: 'prepared', linkObjects: options.linkObjects ?? false });
}

/** From a journal whose target commit is complete: tag, head.toml (the commit point), swap, cleanup. Idempotent. */
async function rollForward(store: Store, paths: HeadPaths, j: Journal, step?: (s: CommitStep) => Promise<void>): Promise<void> {
  if (j.tag !== '' && !(await store.tags.read(j.label, j.tag))) await store.tags.write(j.label, j.tag, { kind: 'id', id: j.to });
  await step?.('tagged');
  const head = await store.heads.read(j.label);
  if (head && (head.base !== j.to || (j.op === 'commit' && head.lastCommit !== j.to))) {
    const next: HeadState = { ...head, base: j.to, updated: new Date().toISOString() };
    if (j.op === 'commit') next.lastCommit = j.to;
    await store.heads.write(next);
  }
  await step?.('head');
  if (j.freshIno !== '0') {
    const upperIno = (await fsp.lstat(paths.upper, { bigint: true }).catch(() => undefined))?.ino;
    if (String(upperIno) !== j.freshIno) {
      if (!(await exists(paths.swap))) throw new StratumError('CORRUPT_STORE', `HEAD of ${j.label}: the prepared upper ${paths.swap} is gone; move ${paths.journal} away and check ${paths.upper}`);
      await swapUpper(paths);
    }
  }
  await step?.('swapped');
  // a live commit's split upper is one again (head/ is what head.swap was)
  await fsp.rm(paths.live, { force: true });
  // The linked objects now belong to the store alone: read-only, no xattrs of the old upper file.
  for (const [digest] of j.linked) {
    const object = store.objects.path(digest);
    try {
      await fsp.chmod(object, 0o444);
      for (const name of llistxattr(object, { encoding: 'buffer' })) {
        try {
          lremovexattr(object, name);
        } catch (err) {
          if (!isSystemError(err, 'ENODATA') && !isSystemError(err, 'EPERM')) throw err;
        }
      }
    } catch (err) {
      if (!isSystemError(err, 'ENOENT')) throw wrapSystemError(err, `finishing object ${digest}`);
    }
  }
  if (j.freshIno !== '0') await removeTree(store, paths.swap);
  await fsp.rm(paths.journal, { force: true });
  await syncDir(paths.labelDir);
  await step?.('done');
}

/** Before the commit point: break links between published objects and upper files, drop the prepared upper. */
async function rollBack(store: Store, paths: HeadPaths, j: Journal, options: { keepSwap: boolean }): Promise<void> {
  for (const [digest, rel] of j.linked) {
    const object = store.objects.path(digest);
    const upperFile = Buffer.concat([Buffer.from(paths.upper + '/'), Buffer.from(rel, 'hex')]);
    const [o, u] = await Promise.all([fsp.lstat(object, { bigint: true }).catch(() => undefined), fsp.lstat(upperFile, { bigint: true }).catch(() => undefined)]);
    if (!o || !u || o.ino !== u.ino || o.dev !== u.dev) continue;
    // Another commit may use this object by now: replace it with a copy rather than delete it.
    const copy = join(store.tmp.dir, `object-${process.pid}-${digest}`);
    await fsp.rm(copy, { force: true });
    await fsp.copyFile(object, copy, C.COPYFILE_EXCL);
    await fsp.chmod(copy, 0o444);
    const handle = await fsp.open(copy, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(copy, object);
  }
  if (!options.keepSwap) await removeTree(store, paths.swap);
  await fsp.rm(paths.journal, { force: true });
  await syncDir(paths.labelDir);
}

/** Whether the upper root differs from `root`'s attributes (the only change an empty upper can carry). */
export async function upperRootChanged(upper: string, root: Pick<Inode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec'>): Promise<boolean> {
  const stat = await fsp.lstat(upper, { bigint: true }).catch(() => undefined);
  if (!stat) return false;
  const a = upperRootAttr(stat);
  return a.mode !== root.mode || a.uid !== root.uid || a.gid !== root.gid || a.mtimeSec !== root.mtimeSec || a.mtimeNsec !== root.mtimeNsec;
}
