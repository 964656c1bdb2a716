// The composefs dump format (composefs-dump(5)): one line per path,
//   PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [NAME=VALUE]...
// with `\xHH`, `\\`, `\n`, `\r`, `\t` escapes, `-` for absent optional fields and `@MODE` hardlink
// lines whose PAYLOAD is the target path. It is our debugging view of a commit and the input
// mkcomposefs --from-file takes, so parsing follows mkcomposefs' rules and serializing follows
// `composefs-info dump`'s escaping byte for byte.
//
// Public surface: parseDump, serializeDump.
import { StratumError } from '../error.js';
import { LCFS_INLINE_CONTENT_MAX, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './erofs.js';
import { type ByteString, type Entry, type Inode, type Tree, byteString, sortedNames } from './tree.js';

const NAME_MAX = 255;
const PATH_MAX = 4096;
const XATTR_NAME_MAX = 255;
/** mkcomposefs' budget for one inode's xattrs read from a dump (LCFS_INODE_EXTERNAL_XATTR_MAX). */
const XATTR_BUDGET = 0xffff >> 1;

function fail(line: number, why: string): never {
  throw new StratumError('CORRUPT_IMAGE', `dump line ${line}: ${why}`);
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** Undoes the dump escapes; `s` and the result are byte strings. */
function unescape(s: string, line: number): ByteString {
  if (s.indexOf('\\') < 0) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '\\') { out += c; continue; }
    if (++i >= s.length) fail(line, 'no character after escape');
    const e = s[i]!;
    if (e === '\\') out += '\\';
    else if (e === 'n') out += '\n';
    else if (e === 'r') out += '\r';
    else if (e === 't') out += '\t';
    else if (e === 'x') {
      if (i + 2 >= s.length) fail(line, 'no hex characters after hex escape');
      const hi = hexValue(s.charCodeAt(i + 1));
      const lo = hexValue(s.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) fail(line, 'invalid hex escape');
      out += String.fromCharCode((hi << 4) | lo);
      i += 2;
    } else fail(line, `unsupported escape \\${e}`);
  }
  return out;
}

function optional(s: string, line: number): ByteString | undefined {
  return s === '-' ? undefined : unescape(s, line);
}

function parseUint(s: string, line: number, what: string, radix: 8 | 10 = 10, max = Number.MAX_SAFE_INTEGER): number {
  const ok = radix === 8 ? /^[0-7]+$/.test(s) : /^[0-9]+$/.test(s);
  const n = ok ? parseInt(s, radix) : NaN;
  if (!ok || !(n <= max)) fail(line, `invalid ${what} ${JSON.stringify(s)}`);
  return n;
}

function validMode(mode: number): boolean {
  switch (mode & S_IFMT) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFBLK: case S_IFCHR: case S_IFSOCK: case S_IFIFO:
      return mode <= 0xffff;
    default:
      return false;
  }
}

/** Parses dump text (a Buffer or a byte string); throws CORRUPT_IMAGE naming the line. */
export function parseDump(input: Uint8Array | ByteString): Tree {
  const text = typeof input === 'string' ? input : byteString(input);
  let root: Inode | undefined;
  const links: Array<{ dir: Inode; name: ByteString; target: ByteString; line: number }> = [];
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, index) => {
    const line = index + 1;
    if (raw.indexOf('\0') >= 0) fail(line, 'embedded NUL');
    const fields = raw.split(' ');
    if (fields.length < 11) fail(line, 'fewer than 11 fields');
    const path = unescape(fields[0]!, line);
    if (path === '') fail(line, 'empty path');
    let modeField = fields[2]!;
    const isLink = modeField.startsWith('@');
    if (isLink) modeField = modeField.slice(1);
    const mode = parseUint(modeField, line, 'mode', 8);
    if (!validMode(mode)) fail(line, `invalid mode ${modeField}`);
    const type = mode & S_IFMT;

    let parent: Inode | undefined;
    let name = '';
    if (path === '/') {
      if (type !== S_IFDIR) fail(line, 'root must be a directory');
      if (root) fail(line, 'more than one root');
      if (isLink) fail(line, 'root cannot be a hardlink');
    } else {
      if (!root) fail(line, 'root must come first');
      const parts = path.split('/');
      while (parts.length > 0 && parts[0] === '') parts.shift();
      name = parts.pop() ?? '';
      if (name === '') fail(line, `empty name in ${JSON.stringify(path)}`);
      if (name === '.' || name === '..') fail(line, `invalid . or .. in ${JSON.stringify(path)}`);
      if (name.length > NAME_MAX) fail(line, 'name longer than 255 bytes');
      parent = root;
      for (const part of parts) {
        if (part === '') continue;
        parent = parent.children?.get(part)?.inode;
        if (!parent) break;
      }
      if (!parent) fail(line, `parent directory missing for ${JSON.stringify(path)}`);
      if (!parent.children) fail(line, `parent of ${JSON.stringify(path)} is not a directory`);
      if (parent.children.has(name)) fail(line, `path ${JSON.stringify(path)} already exists`);
    }

    if (isLink) {
      if (type === S_IFDIR) fail(line, 'directories cannot be hardlinked');
      const target = optional(fields[8]!, line);
      if (target === undefined) fail(line, 'hardlink without target path');
      // Placeholder until all lines are read; the target may come later in the file.
      const placeholder: Inode = { mode, uid: 0, gid: 0, nlink: 1, mtimeSec: 0, mtimeNsec: 0, size: 0, rdev: 0, xattrs: [] };
      parent!.children!.set(name, { inode: placeholder, hardlink: true });
      links.push({ dir: parent!, name, target, line });
      return;
    }

    const size = parseUint(fields[1]!, line, 'size');
    const nlink = parseUint(fields[3]!, line, 'nlink', 10, 0xffffffff);
    const uid = parseUint(fields[4]!, line, 'uid', 10, 0xffffffff);
    const gid = parseUint(fields[5]!, line, 'gid', 10, 0xffffffff);
    const rdev = parseUint(fields[6]!, line, 'rdev');
    const dot = fields[7]!.indexOf('.');
    if (dot < 0) fail(line, 'mtime without nanoseconds');
    const secText = fields[7]!.slice(0, dot);
    const mtimeSec = secText.startsWith('-') ? -parseUint(secText.slice(1), line, 'mtime') : parseUint(secText, line, 'mtime'); // before 1970: signed
    const mtimeNsec = parseUint(fields[7]!.slice(dot + 1), line, 'mtime nanoseconds', 10, 999_999_999);
    const payload = optional(fields[8]!, line);
    const content = optional(fields[9]!, line);
    const digest = optional(fields[10]!, line);
    if (content !== undefined && content.length !== size) fail(line, `content size ${content.length} does not match size ${size}`);
    if (payload !== undefined && payload.length >= PATH_MAX) fail(line, 'payload too long');
    if (digest !== undefined && !/^[0-9a-fA-F]{64}$/.test(digest)) fail(line, 'digest is not 64 hex digits');

    const inode: Inode = { mode, uid, gid, nlink, mtimeSec, mtimeNsec, size, rdev: type === S_IFCHR || type === S_IFBLK ? rdev : 0, xattrs: [] };
    if (type === S_IFDIR) inode.children = new Map();
    if (type === S_IFLNK) {
      if (!payload) fail(line, 'symlink without target');
      inode.symlinkTarget = payload;
      inode.size = payload.length;
    } else if (type === S_IFREG) {
      if (content !== undefined && content.length > 0) {
        if (content.length > LCFS_INLINE_CONTENT_MAX) fail(line, `inline content larger than ${LCFS_INLINE_CONTENT_MAX} bytes`);
        inode.content = Buffer.from(content, 'latin1');
      }
      if (payload !== undefined) inode.payload = payload;
      if (digest !== undefined) inode.digest = digest.toLowerCase();
    }
    for (let i = 11; i < fields.length; i++) {
      const field = fields[i]!;
      if (i === fields.length - 1 && field === '') break; // one trailing space
      const eq = field.indexOf('=');
      if (eq < 0) fail(line, 'missing = in xattr');
      const xname = unescape(field.slice(0, eq), line);
      const value = unescape(field.slice(eq + 1), line);
      if (xname.length === 0 || xname.length > XATTR_NAME_MAX || xname.indexOf('\0') >= 0) fail(line, 'invalid xattr name');
      if (value.length > 0xffff) fail(line, 'xattr value too long');
      const existing = inode.xattrs.findIndex((x) => x.name === xname);
      if (existing >= 0) inode.xattrs.splice(existing, 1);
      inode.xattrs.push({ name: xname, value: Buffer.from(value, 'latin1') });
    }
    // mkcomposefs' worst-case estimate of the on-disk size; it refuses larger sets.
    let budget = inode.xattrs.length > 0 ? 12 : 0;
    for (const x of inode.xattrs) budget += 2 * 4 - 1 + x.name.length + x.value.length;
    if (budget > XATTR_BUDGET) fail(line, 'xattrs too large');
    if (path === '/') root = inode;
    else parent!.children!.set(name, { inode, hardlink: false });
  });
  if (!root) throw new StratumError('CORRUPT_IMAGE', 'dump: no root directory');
  const tree: Tree = { root };
  // Resolve hardlinks last: a target may be another hardlink line, so follow chains (bounded).
  const pending = new Map<Entry, ByteString>();
  for (const l of links) pending.set(l.dir.children!.get(l.name)!, l.target);
  for (const l of links) {
    const entry = l.dir.children!.get(l.name)!;
    let targetPath = l.target;
    for (let hops = 0; ; hops++) {
      if (hops > links.length) fail(l.line, 'hardlink cycle');
      const target = lookupEntry(tree, targetPath);
      if (!target) fail(l.line, `no target at ${JSON.stringify(targetPath)} for hardlink`);
      if (target === entry) fail(l.line, 'self-referential hardlink');
      const next = pending.get(target);
      if (next !== undefined) { targetPath = next; continue; }
      if ((target.inode.mode & S_IFMT) === S_IFDIR) fail(l.line, 'hardlink to a directory');
      entry.inode = target.inode;
      break;
    }
  }
  return tree;
}

function lookupEntry(tree: Tree, path: ByteString): Entry | undefined {
  let entry: Entry = { inode: tree.root, hardlink: false };
  for (const part of path.split('/')) {
    if (part === '') continue;
    const next = entry.inode.children?.get(part);
    if (!next) return undefined;
    entry = next;
  }
  return entry;
}

const ESCAPE_SPACE = 1;
const ESCAPE_EQUAL = 2;
const ESCAPE_LONE_DASH = 4;

const SPECIAL: Record<number, string> = { 0x5c: '\\\\', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t' };

/** composefs-info's print_escaped: hex-escape what is not graphic (C locale), with options. */
function escape(s: ByteString, flags: number): string {
  if (flags & ESCAPE_LONE_DASH && s === '-') return '\\x2d';
  let out = '';
  let plainFrom = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let rep: string | undefined = SPECIAL[c];
    if (rep === undefined) {
      const hex = c === 0x3d ? (flags & ESCAPE_EQUAL) !== 0 : c < 0x20 || c > 0x7e || (c === 0x20 && (flags & ESCAPE_SPACE) !== 0);
      if (hex) rep = `\\x${c.toString(16).padStart(2, '0')}`;
    }
    if (rep !== undefined) {
      out += s.slice(plainFrom, i) + rep;
      plainFrom = i + 1;
    }
  }
  return plainFrom === 0 ? s : out + s.slice(plainFrom);
}

/**
 * Serializes a tree the way `composefs-info dump` prints an image: depth first, children in byte
 * order, hardlinks as `@` lines naming their primary path. Returns a byte string.
 */
export function serializeDump(tree: Tree): ByteString {
  const out: string[] = [];
  const primaryPath = new Map<Inode, ByteString>();
  const walk = (dir: Inode, prefix: string): void => {
    for (const name of sortedNames(dir)) {
      const entry = dir.children!.get(name)!;
      if (!entry.hardlink) primaryPath.set(entry.inode, `${prefix}/${name}`);
      if (!entry.hardlink && entry.inode.children) walk(entry.inode, `${prefix}/${name}`);
    }
  };
  walk(tree.root, '');
  const emit = (path: ByteString, entry: Entry): void => {
    const n = entry.inode;
    const linkPath = entry.hardlink ? primaryPath.get(n) : undefined;
    const type = n.mode & S_IFMT;
    const payload = linkPath ?? (type === S_IFLNK ? n.symlinkTarget : n.payload);
    const fields = [
      escape(path, ESCAPE_SPACE),
      String(n.size),
      `${entry.hardlink ? '@' : ''}${n.mode.toString(8)}`,
      String(n.nlink),
      String(n.uid),
      String(n.gid),
      String(n.rdev),
      `${n.mtimeSec}.${n.mtimeNsec}`,
      payload === undefined ? '-' : escape(payload, ESCAPE_SPACE | ESCAPE_LONE_DASH),
      n.content === undefined ? '-' : escape(byteString(n.content), ESCAPE_SPACE | ESCAPE_LONE_DASH),
      n.digest ?? '-',
    ];
    for (const x of [...n.xattrs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) as number)) {
      fields.push(`${escape(x.name, ESCAPE_SPACE | ESCAPE_EQUAL)}=${escape(byteString(x.value), ESCAPE_SPACE | ESCAPE_EQUAL)}`);
    }
    out.push(fields.join(' '));
    if (!entry.hardlink && n.children) {
      for (const name of sortedNames(n)) emit(`${path === '/' ? '' : path}/${name}`, n.children.get(name)!);
    }
  };
  emit('/', { inode: tree.root, hardlink: false });
  return out.join('\n') + '\n';
}

