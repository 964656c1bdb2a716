// `push <label:tag> <registry>/<repo>[:<tag>]` and `pull <registry>/<repo>:<tag> [label[:tag]]`
// (docs/oci.md): the CLI side only; src/oci does the work.
import { StratumError } from '../../store/error.js';
import { pullCommit, type PullProgress } from '../../oci/pull.js';
import { pushCommit, type PushProgress } from '../../oci/push.js';
import { parseRemote, RegistryClient } from '../../oci/registry.js';
import type { Context } from '../context.js';
import { plural, shortId, size } from '../format.js';

interface TransportOptions {
  plainHttp?: boolean;
  tlsVerify?: string | boolean;
  insecure?: boolean;
}

function clientFor(host: string, o: TransportOptions): RegistryClient {
  const tlsVerify = !(o.insecure || o.tlsVerify === false || o.tlsVerify === 'false');
  return new RegistryClient(host, { plainHttp: Boolean(o.plainHttp), tlsVerify });
}

export async function pushCommand(ctx: Context, ref: string, destination: string, options: TransportOptions): Promise<void> {
  const remote = parseRemote(destination);
  const store = await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `no store at ${ctx.storePath}`);
  const client = clientFor(remote.host, options);
  const line = new ProgressLine(ctx.quiet);
  let result;
  try {
    result = await pushCommit(store, ref, client, { repo: remote.repo, ...(remote.tag ? { tag: remote.tag } : {}) }, { onProgress: (p: PushProgress) => line.update(p.objects, p.totalObjects, p.bytes, p.totalBytes, p.sent, 'sent') });
  } finally {
    line.done();
  }
  ctx.result(result, () => [`${result.repository}:${result.tag}@${result.manifest}`]);
  // blobs 0: the tag held the manifest already (annotations may still have been sent)
  if (result.upToDate || result.blobs === 0) ctx.note(`${result.repository}:${result.tag} already holds commit ${shortId(result.id)}${result.upToDate ? '; nothing sent' : ''}`);
  else ctx.note(`commit ${shortId(result.id)}: ${plural(result.blobs, 'blob')}: ${result.uploaded} uploaded (${size(result.uploadedBytes)}), ${result.mounted} mounted, ${result.present} already there`);
  if (result.annotations) ctx.note(`${plural(result.annotations.count, 'annotation')}: ${result.annotations.upToDate ? 'already there' : `pushed as ${result.annotations.manifest}`}`);
}

export async function pullCommand(ctx: Context, source: string, target: string | undefined, options: TransportOptions & { force?: boolean }): Promise<void> {
  const remote = parseRemote(source);
  if (!remote.tag) throw new StratumError('USAGE', `say which tag to pull: ${source}:<tag>`);
  let label: string | undefined;
  let tag: string | undefined;
  if (target !== undefined) {
    const colon = target.indexOf(':');
    label = colon < 0 ? target : target.slice(0, colon);
    if (colon >= 0) tag = target.slice(colon + 1);
  }
  const store = await ctx.openForWriting();
  const client = clientFor(remote.host, options);
  const line = new ProgressLine(ctx.quiet);
  let result;
  try {
    result = await pullCommit(store, client, { repo: remote.repo, tag: remote.tag }, {
      ...(label !== undefined ? { label } : {}),
      ...(tag !== undefined ? { tag } : {}),
      force: Boolean(options.force),
      onProgress: (p: PullProgress) => line.update(p.objects, p.totalObjects, p.bytes, p.totalBytes, p.received, 'received'),
    });
  } finally {
    line.done();
  }
  const named = result.tags.filter((t) => t !== result.id);
  ctx.result(result, () => (named.length ? named : [result.id]).map((t) => `${result.label}:${t}`));
  if (!result.newCommit) ctx.note(`commit ${shortId(result.id)} was already in the store`);
  else ctx.note(`commit ${shortId(result.id)}: ${result.missing} of ${plural(result.objects, 'object')} fetched, ${size(result.receivedBytes)} received`);
  if (result.annotations > 0) ctx.note(`${plural(result.annotations, 'annotation')} set on the commit`);
  // not silenced by --quiet: something the registry holds was refused
  for (const w of result.warnings) process.stderr.write(`stratum: warning: ${w}\n`);
}

/** objects, bytes, rate and ETA on stderr, only on a terminal and without --quiet. */
class ProgressLine {
  private readonly started = Date.now();
  private last = 0;
  private readonly enabled: boolean;

  constructor(quiet: boolean) {
    this.enabled = !quiet && process.stderr.isTTY === true;
  }

  update(objects: number, totalObjects: number, bytes: number, totalBytes: number, wire: number, verb: string): void {
    const now = Date.now();
    if (!this.enabled || (now - this.last < 100 && objects < totalObjects)) return;
    this.last = now;
    const seconds = Math.max((now - this.started) / 1000, 0.001);
    const rate = bytes / seconds;
    const eta = rate > 0 ? Math.ceil((totalBytes - bytes) / rate) : 0;
    process.stderr.write(`\r\x1b[K${objects}/${totalObjects} objects  ${size(bytes)}/${size(totalBytes)}  ${size(wire)} ${verb}  ${size(rate)}/s  ETA ${eta}s`);
  }

  done(): void {
    if (this.enabled) process.stderr.write('\r\x1b[K');
  }
}
