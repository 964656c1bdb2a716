// The base tree cache across edits-only commits (refs/<label>/head.tree.edits). An edits-only
// commit patches the base image in place and builds no tree, so it cannot write head.tree for
// its commit; re-encoding the whole tree there would cost more than the commit itself. It
// records instead what it changed: new attributes of existing paths, and for a file with new
// content its size and object. The file names the commit head.tree belongs to (`from`) and the
// commit the edits lead to (`to`); each further edits-only commit extends it. A full-path commit
// whose base is `to` decodes head.tree, applies the edits to the decoded inodes (the directories
// on their paths lose their copyable records: tree-cache.ts), and so starts from its base's tree
// without parsing the image; it then writes head.tree for its own commit, and this file is stale.
// Checked like the caches: both ids, a sha256 of the body, a bounds-checked decode, each path
// present with the type it had; anything else is a miss and the image is parsed. docs/commit.md.
//
// Public surface: TREE_EDITS_FILE, TreeEdit, readBaseTreeCache, recordTreeEdits.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { S_IFDIR, S_IFMT } from '../image/erofs.js';
import type { InodePatch } from '../image/patch.js';
import { type Inode, objectPath } from '../image/tree.js';
import { type TmpArea, writeFileAtomic } from '../tmp.js';
import { type CachedTree, TREE_CACHE_FILE, decodeTreeCache } from './tree-cache.js';

export const TREE_EDITS_FILE = 'head.tree.edits';

/** What an edits-only commit changed of one existing path ('/' is the root): the image patch's fields, by path. */
export interface TreeEdit extends Omit<InodePatch, 'nid'> {
  path: string;
}

const MAGIC = 0x31455453; // "STE1"
/** magic u32, from (32 bytes), to (32 bytes), sha256 of the rest (32 bytes). */
const HEADER = 100;

function encodeEdits(from: string, to: string, edits: TreeEdit[]): Buffer {
  const parts: Buffer[] = [Buffer.alloc(HEADER)];
  const count = Buffer.alloc(4);
  count.writeUInt32LE(edits.length);
  parts.push(count);
  for (const e of edits) {
    const path = Buffer.from(e.path, 'latin1');
    const b = Buffer.alloc(4 + path.length + 4 * 3 + 8 + 4 + 1 + (e.content ? 8 + 32 : 0));
    let at = b.writeUInt32LE(path.length, 0);
    at += path.copy(b, at);
    at = b.writeUInt32LE(e.mode, at);
    at = b.writeUInt32LE(e.uid, at);
    at = b.writeUInt32LE(e.gid, at);
    at = b.writeDoubleLE(e.mtimeSec, at);
    at = b.writeUInt32LE(e.mtimeNsec, at);
    at = b.writeUInt8(e.content ? 1 : 0, at);
    if (e.content) {
      at = b.writeDoubleLE(e.content.size, at);
      b.write(e.content.digest, at, 'hex');
    }
    parts.push(b);
  }
  const file = Buffer.concat(parts);
  file.writeUInt32LE(MAGIC, 0);
  file.write(from, 4, 'hex');
  file.write(to, 36, 'hex');
  createHash('sha256').update(file.subarray(HEADER)).digest().copy(file, 68);
  return file;
}

function decodeEdits(buf: Buffer): { from: string; to: string; edits: TreeEdit[] } | undefined {
  if (buf.length < HEADER + 4 || buf.readUInt32LE(0) !== MAGIC) return undefined;
  if (!createHash('sha256').update(buf.subarray(HEADER)).digest().equals(buf.subarray(68, HEADER))) return undefined;
  try {
    let pos = HEADER;
    const n = buf.readUInt32LE(pos);
    pos += 4;
    const edits: TreeEdit[] = [];
    for (let i = 0; i < n; i++) {
      const len = buf.readUInt32LE(pos);
      if (pos + 4 + len > buf.length) return undefined;
      const path = buf.toString('latin1', pos + 4, pos + 4 + len);
      pos += 4 + len;
      const e: TreeEdit = { path, mode: buf.readUInt32LE(pos), uid: buf.readUInt32LE(pos + 4), gid: buf.readUInt32LE(pos + 8), mtimeSec: buf.readDoubleLE(pos + 12), mtimeNsec: buf.readUInt32LE(pos + 20) };
      const hasContent = buf.readUInt8(pos + 24);
      pos += 25;
      if (hasContent === 1) {
        if (pos + 40 > buf.length) return undefined;
        e.content = { size: buf.readDoubleLE(pos), digest: buf.toString('hex', pos + 8, pos + 40) };
        pos += 40;
      } else if (hasContent !== 0) return undefined;
      edits.push(e);
    }
    if (pos !== buf.length) return undefined;
    return { from: buf.toString('hex', 4, 36), to: buf.toString('hex', 36, 68), edits };
  } catch {
    return undefined; // RangeError: truncated
  }
}

/** The commit id in head.tree's header, unchecked (the body is checked when decoded). */
function cacheIdOf(labelDir: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(join(labelDir, TREE_CACHE_FILE), 'r');
  } catch {
    return undefined;
  }
  try {
    const head = Buffer.alloc(36);
    return readSync(fd, head, 0, 36, 0) === 36 ? head.toString('hex', 4, 36) : undefined;
  } finally {
    closeSync(fd);
  }
}

function readEdits(labelDir: string): ReturnType<typeof decodeEdits> {
  try {
    return decodeEdits(readFileSync(join(labelDir, TREE_EDITS_FILE)));
  } catch {
    return undefined;
  }
}

/**
 * The tree of commit `id` from the label's caches: head.tree itself, or head.tree with the
 * edits that lead from its commit to `id`. Undefined on any doubt (the caller parses the image).
 */
export function readBaseTreeCache(labelDir: string, id: string): CachedTree | undefined {
  let buf: Buffer;
  try {
    buf = readFileSync(join(labelDir, TREE_CACHE_FILE));
  } catch {
    return undefined;
  }
  const direct = decodeTreeCache(buf, id);
  if (direct) return direct;
  const recorded = readEdits(labelDir);
  if (!recorded || recorded.to !== id) return undefined;
  const cached = decodeTreeCache(buf, recorded.from);
  if (!cached) return undefined;
  for (const e of recorded.edits) if (!applyEdit(cached, e)) return undefined;
  return cached;
}

/** Applies one edit to the decoded tree: false if its path is not there with the same type. */
function applyEdit(cached: CachedTree, e: TreeEdit): boolean {
  let node: Inode = cached.tree.root;
  cached.spans.delete(node);
  for (const name of e.path.split('/')) {
    if (name === '') continue;
    const next = node.children?.get(name);
    if (!next || next.hardlink) return false;
    node = next.inode;
    cached.spans.delete(node);
  }
  if ((node.mode & S_IFMT) !== (e.mode & S_IFMT)) return false;
  if (e.content && ((node.mode & S_IFMT) === S_IFDIR || node.digest === undefined || node.content !== undefined || node.nlink !== 1)) return false;
  node.mode = e.mode;
  node.uid = e.uid;
  node.gid = e.gid;
  node.mtimeSec = e.mtimeSec;
  node.mtimeNsec = e.mtimeNsec;
  if (e.content) {
    node.size = e.content.size;
    node.digest = e.content.digest;
    node.payload = objectPath(e.content.digest);
  }
  return true;
}

/**
 * After an edits-only commit `from` -> `to`: records its edits, after those already recorded
 * since head.tree's commit, so the next full-path commit can start from head.tree. Nothing is
 * written when head.tree belongs to neither `from` nor the start of the recorded chain.
 */
export async function recordTreeEdits(tmp: TmpArea, labelDir: string, from: string, to: string, edits: TreeEdit[]): Promise<void> {
  const cacheId = cacheIdOf(labelDir);
  if (cacheId === undefined) return;
  let start = from;
  let all = edits;
  if (cacheId !== from) {
    const recorded = readEdits(labelDir);
    if (!recorded || recorded.from !== cacheId || recorded.to !== from) return;
    start = recorded.from;
    all = [...recorded.edits, ...edits];
  }
  await writeFileAtomic(tmp, join(labelDir, TREE_EDITS_FILE), encodeEdits(start, to, all), { mode: 0o600 });
}
