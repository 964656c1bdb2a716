// A FUSE live commit runs in a child process (docs/fuse.md "Live commit"): the commit engine's
// CPU work (merge, image, Merkle tree) would otherwise hold the server's event loop, and with it
// every request, for most of the commit. The child runs commitLive; its LiveMount steps (layer,
// rebase) come back to the server over the IPC channel, which switches its view and answers.
// If the server dies, the child exits at once (the journal lets the next mount recover); if the
// child dies, the commit's journal stays and the next commit request finishes it.
//
//   node dist/src/fuse/commit-process.js --store DIR --label L --server-pid PID --state FILE [--tag T]
//
// Public surface: commitInChild.
import { fork } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { commitLive, type LiveCommitResult, type LiveMount } from '../store/commands/live-commit.js';
import { type ErrorCode, StratumError } from '../store/error.js';
import { COMMIT_V8_FLAGS } from '../store/head/engine.js';
import { MountState } from '../store/mount-state.js';
import { Store } from '../store/store.js';

type Ask = { ask: number; op: 'layer'; args: [string, string, string] } | { ask: number; op: 'rebase'; args: [string, string] };
type Answer = { ask: number; ok: true; value: unknown } | { ask: number; ok: false; code: ErrorCode; message: string };
type Done = { done: LiveCommitResult } | { failed: { code: ErrorCode; message: string } };

const errorOf = (err: unknown): { code: ErrorCode; message: string } =>
  err instanceof StratumError ? { code: err.code, message: err.message } : { code: 'IO', message: (err as Error)?.message ?? String(err) };

/** Runs commitLive for `label` in a child process; `mount`'s steps run here, in the server. */
export function commitInChild(o: { store: string; label: string; tag?: string | undefined; state: MountState; mount: LiveMount }): Promise<LiveCommitResult> {
  const args = ['--store', o.store, '--label', o.label, '--server-pid', String(process.pid), '--state', o.state.path];
  if (o.tag !== undefined) args.push('--tag', o.tag);
  const child = fork(fileURLToPath(import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [...process.execArgv, COMMIT_V8_FLAGS] });
  return new Promise((resolve, reject) => {
    let settled = false;
    child.on('message', (m: Ask | Done) => {
      if ('done' in m) { settled = true; resolve(m.done); return; }
      if ('failed' in m) { settled = true; reject(new StratumError(m.failed.code, m.failed.message)); return; }
      const step = m.op === 'layer' ? o.mount.layer(...m.args) : o.mount.rebase(...m.args);
      step.then((value) => child.send({ ask: m.ask, ok: true, value } satisfies Answer),
        (err: unknown) => child.send({ ask: m.ask, ok: false, ...errorOf(err) } satisfies Answer));
    });
    child.on('exit', (code, signal) => {
      if (!settled) reject(new StratumError('IO', `the commit process ended (${signal ?? `status ${code}`}) before the commit was done; the next commit finishes it`));
    });
  });
}

async function childMain(argv: string[]): Promise<void> {
  const get = (flag: string): string | undefined => { const i = argv.indexOf(flag); return i >= 0 ? argv[i + 1] : undefined; };
  // the server is gone: stop here (a crash the journal is made for), holding nothing
  process.on('disconnect', () => process.exit(1));
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  let next = 1;
  process.on('message', (m: Answer) => {
    const p = pending.get(m.ask);
    if (!p) return;
    pending.delete(m.ask);
    if (m.ok) p.resolve(m.value);
    else p.reject(new StratumError(m.code, m.message));
  });
  const ask = <T>(op: Ask['op'], args: Ask['args']): Promise<T> => new Promise<T>((resolve, reject) => {
    const id = next++;
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    process.send!({ ask: id, op, args });
  });
  try {
    const store = await Store.open(get('--store')!);
    const done = await commitLive(store, {
      label: get('--label')!, tag: get('--tag'),
      server: { pid: Number(get('--server-pid')), state: new MountState(get('--state')!) },
      mount: {
        layer: (base, upper, nextUpper) => ask<{ sealed: boolean }>('layer', [base, upper, nextUpper]),
        rebase: (commit, upper) => ask<void>('rebase', [commit, upper]),
      },
    });
    process.send!({ done } satisfies Done, () => process.exit(0));
  } catch (err) {
    process.send!({ failed: errorOf(err) } satisfies Done, () => process.exit(1));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void childMain(process.argv.slice(2));
