import { createReadStream, promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import { exportBundle, importBundle } from '../../store/commands/bundle.js';
import { importDirectory } from '../../store/commands/import.js';
import { importBareCommand } from './head-commands.js';
import { StratumError, isSystemError, wrapSystemError } from '../../store/error.js';
import { checkLabel, checkTag, parseRef } from '../../store/names.js';
import { STDIO, type Context } from '../context.js';
import { Progress } from '../progress.js';

/** `import <dir> --label L` imports a directory; `import <bundle|->` a bundle made by export. */
export async function importCommand(ctx: Context, source: string, target: string | undefined, options: { label?: string; tag?: string; bare?: boolean; create?: boolean }): Promise<void> {
  if (options.bare) return importBareCommand(ctx, source, target, options.create);
  if (target !== undefined) throw new StratumError('USAGE', `a label[:tag] argument goes with --bare (stratum import --bare <dir> <label[:tag]>); a full import takes --label`);
  if (source === STDIO || (await isFile(source))) return importBundleCommand(ctx, source, options);
  await fsp.access(source).catch(() => {
    throw new StratumError('NOT_FOUND', `${source} does not exist`);
  });
  if (!options.label) throw new StratumError('USAGE', 'import needs --label <label>: stratum import <dir> --label <label> [--tag <tag>]');
  checkNames(options);
  const store = await ctx.openForWriting();
  const progress = new Progress(ctx.quiet);
  let result;
  try {
    result = await importDirectory(store, source, { label: options.label, tag: options.tag, onProgress: (p) => progress.update(p) });
  } finally {
    progress.done();
  }
  ctx.result(result, () => [`${result.label}:${result.id}`]);
  if (!result.newCommit) ctx.note(`(this tree was already commit ${result.id.slice(0, 12)}; nothing new was written)`);
  else ctx.note(`${result.files} paths, ${result.bytes} bytes, ${result.newObjects} new objects${result.head ? `; HEAD of ${result.label} starts here` : ''}`);
}

async function importBundleCommand(ctx: Context, source: string, options: { label?: string; tag?: string }): Promise<void> {
  checkNames(options);
  const store = await ctx.openForWriting();
  const input = source === STDIO ? process.stdin : createReadStream(source, { highWaterMark: 1 << 20 });
  const result = await importBundle(store, input, { ...(options.label ? { label: options.label } : {}), ...(options.tag ? { tag: options.tag } : {}) });
  ctx.result(result, () => result.tags.filter((t) => t !== result.id).map((t) => `${result.label}:${t}`).concat(result.tags.length === 1 ? [`${result.label}:${result.id}`] : []));
  ctx.note(`${result.newObjects} new objects${result.newCommit ? '' : '; the commit was already in the store'}`);
}

/** `export <label:tag> <file|->`: a file is written whole or not at all (temp file, rename). */
export async function exportCommand(ctx: Context, ref: string, file: string): Promise<void> {
  parseRef(ref, { bareLabel: 'error' });
  const store = await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `no store at ${ctx.storePath}`);
  if (file === STDIO) {
    if (process.stdout.isTTY) throw new StratumError('USAGE', 'refusing to write a bundle to a terminal; redirect it (> file, | stratum import -) or give a file name');
    const result = await exportBundle(store, ref, process.stdout);
    ctx.note(`exported ${result.id.slice(0, 12)}: ${result.objects} objects, ${result.bytes} bytes`);
    return;
  }
  const partial = join(dirname(file), `.${Date.now()}-${process.pid}.stratum-export`);
  const handle = await fsp.open(partial, 'wx', 0o644).catch((err: unknown) => {
    if (isSystemError(err, 'ENOENT') || isSystemError(err, 'ENOTDIR')) throw new StratumError('NOT_FOUND', `${dirname(file)} is not a directory; export into an existing one`);
    throw wrapSystemError(err, `exporting to ${file}`);
  });
  const out = handle.createWriteStream();
  try {
    if ((await fsp.stat(file).catch(() => undefined))?.isDirectory()) throw new StratumError('BAD_PATH', `${file} is a directory; give the bundle a file name (e.g. ${join(file, 'bundle')})`);
    const result = await exportBundle(store, ref, out);
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    await fsp.rename(partial, file);
    ctx.result(result, () => [`${file}: ${result.objects} objects, ${result.bytes} bytes`]);
  } catch (err) {
    out.destroy();
    await fsp.rm(partial, { force: true });
    throw wrapSystemError(err, `exporting to ${file}`);
  }
}

/** Names are checked before a store is opened for writing, so a typo never creates one. */
function checkNames(options: { label?: string; tag?: string }): void {
  if (options.label !== undefined) checkLabel(options.label);
  if (options.tag !== undefined) checkTag(options.tag);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await fsp.stat(path)).isFile();
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return false;
    throw wrapSystemError(err, `reading ${path}`);
  }
}
