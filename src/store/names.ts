// Label and tag names, and the references users type: `label`, `label:tag`, `label:<hex prefix>`,
// `label@sha256:<id>`. Every name that reaches the disk passes through here first.
//
// Public surface: NAME_PATTERN, checkLabel, checkTag, parseRef, formatRef, Ref, RefTarget.
import { StratumError } from './error.js';

/** OCI tag rules: a word character first, then up to 127 of `[A-Za-z0-9._-]`. */
export const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
export const HEAD = 'HEAD';
const MIN_PREFIX = 8;

/** What a reference points at inside its label. */
export type RefTarget =
  | { kind: 'head' } // `label` or `label:HEAD`
  | { kind: 'name'; name: string } // a tag, or failing that an id prefix of 8+ hex digits
  | { kind: 'id'; id: string }; // `label@sha256:<64 hex>`

export interface Ref {
  label: string;
  target: RefTarget;
}

function describe(s: string): string {
  const shown = JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
  return shown;
}

function checkName(what: 'label' | 'tag', name: string): string {
  if (name.length === 0) throw new StratumError('BAD_NAME', `empty ${what} name`);
  if (name.length > 128) throw new StratumError('BAD_NAME', `${what} name ${describe(name)} is longer than 128 characters`);
  if (!NAME_PATTERN.test(name)) {
    throw new StratumError('BAD_NAME', `bad ${what} name ${describe(name)}: use letters, digits, '_', and '.' or '-' after the first character`);
  }
  return name;
}

export function checkLabel(label: string): string {
  checkName('label', label);
  if (label === HEAD) throw new StratumError('BAD_NAME', `'HEAD' is reserved and cannot be a label name`);
  return label;
}

export function checkTag(tag: string): string {
  checkName('tag', tag);
  if (tag === HEAD) throw new StratumError('BAD_NAME', `'HEAD' is reserved: it names a label's writable state, not a tag`);
  return tag;
}

export function isIdPrefix(s: string): boolean {
  return s.length >= MIN_PREFIX && s.length <= 64 && /^[0-9a-f]+$/.test(s);
}

/** Parses what a user typed; `defaultHead` decides what a bare label means (HEAD, or an error). */
export function parseRef(input: string, options: { bareLabel?: 'head' | 'error' } = {}): Ref {
  if (input.includes('\0')) throw new StratumError('BAD_NAME', `reference ${describe(input)} contains a NUL byte`);
  const at = input.indexOf('@');
  if (at >= 0) {
    const label = checkLabel(input.slice(0, at));
    const rest = input.slice(at + 1);
    const match = /^sha256:([0-9a-f]{64})$/.exec(rest);
    if (!match) throw new StratumError('BAD_NAME', `bad reference ${describe(input)}: expected ${label}@sha256:<64 hex digits>`);
    return { label, target: { kind: 'id', id: match[1]! } };
  }
  const colon = input.indexOf(':');
  if (colon < 0) {
    const label = checkLabel(input);
    if (options.bareLabel === 'error') throw new StratumError('USAGE', `reference ${describe(input)} needs a tag: ${label}:<tag>`);
    return { label, target: { kind: 'head' } };
  }
  const label = checkLabel(input.slice(0, colon));
  const name = input.slice(colon + 1);
  if (name === HEAD) return { label, target: { kind: 'head' } };
  return { label, target: { kind: 'name', name: checkTag(name) } };
}

export function formatRef(ref: Ref): string {
  switch (ref.target.kind) {
    case 'head':
      return `${ref.label}:HEAD`;
    case 'name':
      return `${ref.label}:${ref.target.name}`;
    case 'id':
      return `${ref.label}@sha256:${ref.target.id}`;
  }
}
