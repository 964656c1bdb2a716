#!/usr/bin/env node
// The `stratum` command line: parse with cac, hand each command to its file in commands/, and
// turn errors into one line on stderr and an exit status (0 ok, 1 failed, 2 usage).
import { createRequire } from 'node:module';
import { cac } from 'cac';
import { StratumError, exitStatus } from '../store/error.js';
import { exportCommand, importCommand } from './commands/import.js';
import { applyCommand, commitCommand, initCommand } from './commands/head-commands.js';
import { list } from './commands/list.js';
import { mountCommand, unmountCommand } from './commands/mount.js';
import { registerPushPull } from './commands/push-pull.js';
import { diffCommand, gcCommand, logCommand, removeCommand, statusCommand, tagCommand, verifyCommand } from './commands/store-commands.js';
import { Context, STDIO, type GlobalOptions } from './context.js';

const { version } = createRequire(import.meta.url)('../../../package.json') as { version: string };

type Action = (ctx: Context, ...args: never[]) => Promise<void>;

/** cac calls an action with the positional arguments, then the options object, last. */
function run(action: Action) {
  return async (...args: unknown[]): Promise<void> => {
    const options = args[args.length - 1] as GlobalOptions;
    await (action as (ctx: Context, ...rest: unknown[]) => Promise<void>)(new Context(options), ...args);
  };
}

export function buildCli(): ReturnType<typeof cac> {
  const cli = cac('stratum');
  cli.option('--store <dir>', 'Store directory (default: $STRATUM_STORE, /var/lib/stratum as root, else ~/.local/share/stratum)');
  cli.option('--json', 'Print results as JSON');
  cli.option('--quiet', 'Print only results and errors');

  cli
    .command('import <source> [target]', 'Import a directory (with --label) or a bundle file (- for stdin) as a commit; prints label:<id>')
    .option('--label <label>', 'The label to import into (required for a directory; renames a bundle\'s label)')
    .option('--tag <tag>', 'Also tag the commit label:<tag> (renames a bundle\'s tag)')
    .option('--bare', 'A delta dir (overlay or OCI whiteouts) on the HEAD base of target label[:tag]; HEAD stays')
    .action(run(importCommand));
  cli.command('export <ref> <file>', 'Write a commit with all its objects as one bundle (- for stdout)').action(run(exportCommand));
  cli.command('list [label]', 'List labels, or the tags of a label').action(run(list));
  cli
    .command('tag <ref> <tag>', 'Tag the commit ref names (label:tag, label:<id prefix>, label@sha256:<id>)')
    .option('--move', 'Rename: remove the source tag')
    .option('--force', 'Replace an existing tag')
    .action(run(tagCommand));
  cli.command('remove <ref>', 'Remove a tag (label:tag) or a whole label, then collect garbage').option('--force', "Discard HEAD's uncommitted changes").action(run(removeCommand));
  cli.command('gc', 'Delete commits and objects nothing refers to').option('--dry-run', 'Only say what would be freed').action(run(gcCommand));
  cli.command('verify [ref]', 'Re-hash objects and images; exit 1 on any problem').option('--repair', 'Remove corrupt objects so a re-import restores them').action(run(verifyCommand));
  cli.command('log <ref>', 'A commit and its ancestors').action(run(logCommand));
  cli.command('diff <from> <to>', 'Paths added (A), removed (D) and changed (M) between two commits').action(run(diffCommand));
  cli.command('status [ref]', 'The store, or one label: HEAD, tags, changes').action(run(statusCommand));
  cli.command('commit <target>', "Commit HEAD's changes as label:tag (label alone: tagged by the commit id)").action(run(commitCommand));
  cli
    .command('apply <ref> [mountpoint]', "Move HEAD's base to ref; refuses when HEAD has uncommitted changes")
    .option('--discard', 'Drop uncommitted changes')
    .option('--keep', 'Keep uncommitted changes on top of the new base')
    .action(run(applyCommand));
  cli.command('init <label> [mountpoint]', 'Create a label with an empty HEAD').option('--migrate', 'Import the directory at mountpoint as the first commit').option('--mode <mode>', 'auto|fuse|kernel, as for mount').action(run(initCommand));

  cli.command('mount <ref> [mountpoint]', 'Mount label (HEAD, read-write) or label:tag (read-only); prints the mountpoint').option('--foreground', 'Serve in this process, logging to stderr').option('--mode <mode>', 'auto|fuse|kernel (auto: kernel when root and the kernel can, else fuse)').action(run(mountCommand));
  cli.command('unmount <what>', 'Unmount label[:tag] or a mountpoint (flushes and ends the server)').action(run(unmountCommand));

  registerPushPull(cli, run);

  cli.help();
  cli.version(version);
  return cli;
}

async function main(argv: string[]): Promise<number> {
  const cli = buildCli();
  try {
    // cac (mri) does not take a lone '-' as an argument; commands know it as STDIO
    cli.parse(argv.map((a) => (a === '-' ? STDIO : a)), { run: false });
    if (cli.options.help || cli.options.version) return 0;
    if (!cli.matchedCommand) {
      if (cli.args.length > 0) throw new StratumError('USAGE', `unknown command '${cli.args[0]}'; see \`stratum --help\``);
      cli.outputHelp();
      return 2;
    }
    await cli.runMatchedCommand();
    return typeof process.exitCode === 'number' ? process.exitCode : 0;  // a command that found problems (verify) set 1
  } catch (err) {
    return report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof StratumError) {
    process.stderr.write(`stratum: ${err.message}\n`);
    return exitStatus(err);
  }
  if (err instanceof Error && err.name === 'CACError') {
    process.stderr.write(`stratum: ${err.message}; see \`stratum --help\`\n`);
    return 2;
  }
  // A bug, not a user mistake: keep the stack for the report.
  process.stderr.write(`stratum: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return 1;
}

process.exitCode = await main(process.argv);
