// Tags: small ref files under refs/<label>/tags/<tag>. The first line is a commit id or an alias
// `refs/<label>/tags/<tag>`; later lines are free text (who, when). Like git refs, they are the
// only mutable files besides HEAD, and each is replaced atomically.
//
// Public surface: TagTarget, RefFile, parseRefFile, formatRefFile, TagStore, ResolvedTag, MAX_ALIAS_DEPTH.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { isDigest } from './digest.js';
import { StratumError, isSystemError, wrapSystemError } from './error.js';
import { NAME_PATTERN, checkLabel, checkTag } from './names.js';
import { writeFileAtomic, type TmpArea } from './tmp.js';

/** Longest alias chain we follow; a longer one is refused, as is any loop. */
export const MAX_ALIAS_DEPTH = 32;

/** What a tag points at: a commit, or another tag. */
export type TagTarget = { kind: 'id'; id: string } | { kind: 'alias'; label: string; tag: string };
export type RefFile = TagTarget & { note: string };

export function parseRefFile(text: string, where: string): RefFile {
  const newline = text.indexOf('\n');
  const first = (newline < 0 ? text : text.slice(0, newline)).trim();
  const note = newline < 0 ? '' : text.slice(newline + 1);
  if (isDigest(first)) return { kind: 'id', id: first, note };
  const alias = /^refs\/([^/]+)\/tags\/([^/]+)$/.exec(first);
  if (alias && NAME_PATTERN.test(alias[1]!) && NAME_PATTERN.test(alias[2]!)) return { kind: 'alias', label: alias[1]!, tag: alias[2]!, note };
  throw new StratumError('CORRUPT_STORE', `ref ${where} is unreadable: its first line must be a commit id or refs/<label>/tags/<tag>`);
}

export function formatRefFile(ref: RefFile): string {
  const first = ref.kind === 'id' ? ref.id : `refs/${ref.label}/tags/${ref.tag}`;
  return `${first}\n${ref.note}`;
}

export interface ResolvedTag {
  id: string;
  /** The tags followed, starting with the one asked for. */
  chain: string[];
}

export class TagStore {
  constructor(
    private readonly refsDir: string,
    private readonly tmp: TmpArea,
    private readonly commitExists: (id: string) => Promise<boolean>,
  ) {}

  labelDir(label: string): string {
    return join(this.refsDir, checkLabel(label));
  }

  tagPath(label: string, tag: string): string {
    return join(this.labelDir(label), 'tags', checkTag(tag));
  }

  /** The ref file as written, or undefined when the tag does not exist. */
  async read(label: string, tag: string): Promise<RefFile | undefined> {
    const path = this.tagPath(label, tag);
    let text: string;
    try {
      text = await fsp.readFile(path, 'utf8');
    } catch (err) {
      if (isSystemError(err, 'ENOENT') || isSystemError(err, 'ENOTDIR')) return undefined;
      throw wrapSystemError(err, `reading tag ${label}:${tag}`);
    }
    return parseRefFile(text, `${label}:${tag}`);
  }

  /**
   * Follows aliases to a commit id. Loops, chains longer than MAX_ALIAS_DEPTH and refs to commits
   * not in the store are errors with their own codes, so callers can report rather than fail.
   */
  async resolve(label: string, tag: string): Promise<ResolvedTag> {
    const chain: string[] = [];
    const seen = new Set<string>();
    let current = { label, tag };
    for (;;) {
      const name = `${current.label}:${current.tag}`;
      if (seen.has(name)) throw new StratumError('REF_CYCLE', `tag ${label}:${tag} is an alias loop (${[...chain, name].join(' -> ')})`);
      if (chain.length > MAX_ALIAS_DEPTH) throw new StratumError('REF_TOO_DEEP', `tag ${label}:${tag} is an alias chain longer than ${MAX_ALIAS_DEPTH}`);
      seen.add(name);
      chain.push(name);
      const ref = await this.read(current.label, current.tag);
      if (!ref) {
        const why = chain.length === 1 ? `tag ${name} does not exist` : `tag ${label}:${tag} is an alias of ${name}, which does not exist`;
        throw new StratumError(chain.length === 1 ? 'NOT_FOUND' : 'DANGLING_REF', why);
      }
      if (ref.kind === 'alias') {
        current = { label: ref.label, tag: ref.tag };
        continue;
      }
      if (!(await this.commitExists(ref.id))) throw new StratumError('DANGLING_REF', `tag ${label}:${tag} points at commit ${ref.id}, which is not in the store`);
      return { id: ref.id, chain };
    }
  }

  /** Creates or (with `force`) replaces a tag; without it an existing tag is TAG_EXISTS. */
  async write(label: string, tag: string, target: TagTarget, options: { force?: boolean; note?: string } = {}): Promise<void> {
    const path = this.tagPath(label, tag);
    const text = formatRefFile({ ...target, note: options.note ?? '' });
    await fsp.mkdir(join(this.labelDir(label), 'tags'), { recursive: true });
    try {
      await writeFileAtomic(this.tmp, path, text, { noReplace: !options.force });
    } catch (err) {
      if (isSystemError(err, 'EEXIST')) throw new StratumError('TAG_EXISTS', `tag ${label}:${tag} exists; use --force to move it`);
      throw err;
    }
  }

  async remove(label: string, tag: string): Promise<void> {
    try {
      await fsp.unlink(this.tagPath(label, tag));
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw new StratumError('NOT_FOUND', `tag ${label}:${tag} does not exist`);
      throw wrapSystemError(err, `removing tag ${label}:${tag}`);
    }
  }

  async labels(): Promise<string[]> {
    return listNames(this.refsDir);
  }

  async tags(label: string): Promise<string[]> {
    return listNames(join(this.labelDir(label), 'tags'));
  }
}

/** Directory entries that are valid names, sorted; anything else there is not ours and is skipped. */
async function listNames(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir)).filter((n) => NAME_PATTERN.test(n)).sort();
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return [];
    throw wrapSystemError(err, `listing ${dir}`);
  }
}
