// A session held in memory: the same interface and the same rules (keys, kinds, object names) as
// the filesystem session, for tests and for programs that want a scratch session.
//
// Public surface: MemorySession, openMemorySession.
import { SessionError } from './error.js';
import { checkKey, joinKey } from './key.js';
import { decodeObject, encodeObject } from './object.js';
import { resolveValue, SESSION_FORMAT, type ResolveOptions, type Resolution, type Session, type SessionInfo, type SessionObject } from './session.js';
import { checkPutValue, isHash, type Data, type ObjRef, type PutValue, type ValRef, type Value } from './value.js';

interface MapNode {
  kind: 'map';
  children: Map<string, Node>;
}
type Node = MapNode | ObjRef | ValRef | Data;

export function openMemorySession(app = { name: 'unknown', version: '0' }): MemorySession {
  return new MemorySession({ version: SESSION_FORMAT, app: app.name, appVersion: app.version });
}

export class MemorySession implements Session {
  private readonly root: MapNode = { kind: 'map', children: new Map() };
  /** Frames, as on disk, so damage is detected as it is there. */
  protected readonly frames = new Map<string, Buffer>();

  constructor(readonly info: SessionInfo) {}

  private find(segments: string[]): Node | undefined {
    let node: Node | undefined = this.root;
    for (const segment of segments) {
      if (node?.kind !== 'map') return undefined;
      node = node.children.get(segment);
    }
    return node;
  }

  async get(key: string): Promise<Value | undefined> {
    const node = this.find(checkKey(key));
    if (node === undefined) return undefined;
    if (node.kind === 'map') return { kind: 'map', keys: [...node.children.keys()].sort() };
    return node.kind === 'data' ? { kind: 'data', bytes: Buffer.from(node.bytes) } : { ...node };
  }

  async put(key: string, value: PutValue): Promise<void> {
    const segments = checkKey(key);
    const checked = checkPutValue(value);
    let parent = this.root;
    for (const [i, segment] of segments.slice(0, -1).entries()) {
      let next = parent.children.get(segment);
      if (next === undefined) parent.children.set(segment, (next = { kind: 'map', children: new Map() }));
      if (next.kind !== 'map') throw new SessionError('KIND_CONFLICT', `cannot put ${key}: ${segments.slice(0, i + 1).join('/')} holds a value, not a map`);
      parent = next;
    }
    const last = segments[segments.length - 1]!;
    const existing = parent.children.get(last);
    if (checked.kind === 'map') {
      if (existing && existing.kind !== 'map') throw new SessionError('KIND_CONFLICT', `cannot make ${key} a map: it holds a value (delete it first)`);
      if (!existing) parent.children.set(last, { kind: 'map', children: new Map() });
      return;
    }
    if (existing?.kind === 'map') throw new SessionError('KIND_CONFLICT', `cannot put a value at ${key}: it is a map (delete it first)`);
    // copy, so a caller changing its buffer later does not change what was stored
    parent.children.set(last, checked.kind === 'data' ? { kind: 'data', bytes: Buffer.from(checked.bytes) } : { ...checked });
  }

  async delete(key: string): Promise<boolean> {
    const segments = checkKey(key);
    const parent = this.find(segments.slice(0, -1));
    return parent?.kind === 'map' ? parent.children.delete(segments[segments.length - 1]!) : false;
  }

  async list(prefix = ''): Promise<string[]> {
    const node = this.find(checkKey(prefix, { allowEmpty: true }));
    const out: string[] = [];
    const walk = (n: Node, key: string): void => {
      if (n.kind !== 'map') out.push(key);
      else for (const [name, child] of n.children) walk(child, joinKey(key, name));
    };
    if (node?.kind === 'map') walk(node, prefix);
    return out.sort();
  }

  async putObject(type: string, data: Uint8Array): Promise<string> {
    const { hash, frame } = encodeObject(type, data);
    if (!this.frames.has(hash)) this.frames.set(hash, frame);
    return hash;
  }

  async getObject(hash: string): Promise<SessionObject | undefined> {
    if (!isHash(hash)) throw new SessionError('BAD_VALUE', `an object name is a sha256 (64 lowercase hex digits), not ${JSON.stringify(String(hash).slice(0, 80))}`);
    const frame = this.frames.get(hash);
    return frame && decodeObject(hash, frame);
  }

  async hasObject(hash: string): Promise<boolean> {
    return isHash(hash) && this.frames.has(hash);
  }

  async resolve(key: string, options?: ResolveOptions): Promise<Resolution> {
    checkKey(key);
    return resolveValue(this, key, options);
  }
}
