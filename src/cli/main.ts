#!/usr/bin/env node
// The `stratum` command line: parse with cac, hand each command to its file in commands/, and
// turn errors into one line on stderr and an exit status (0 ok, 1 failed, 2 usage).
import { createRequire } from 'node:module';
import { cac } from 'cac';
import { StratumError, exitStatus } from '../store/error.js';
import { list } from './commands/list.js';
import { Context, type GlobalOptions } from './context.js';

const { version } = createRequire(import.meta.url)('../../../package.json') as { version: string };

type Action = (ctx: Context, ...args: never[]) => Promise<void>;

function run(action: Action) {
  return async (...args: unknown[]): Promise<void> => {
    const options = args[args.length - 1] as GlobalOptions;
    await (action as (ctx: Context, ...rest: unknown[]) => Promise<void>)(new Context(options), ...args.slice(0, -1));
  };
}

export function buildCli(): ReturnType<typeof cac> {
  const cli = cac('stratum');
  cli.option('--store <dir>', 'Store directory (default: $STRATUM_STORE, /var/lib/stratum as root, else ~/.local/share/stratum)');
  cli.option('--json', 'Print results as JSON');
  cli.option('--quiet', 'Print only results and errors');

  cli.command('list [label]', 'List labels, or the tags of a label').action(run(list));

  cli.help();
  cli.version(version);
  return cli;
}

async function main(argv: string[]): Promise<number> {
  const cli = buildCli();
  try {
    cli.parse(argv, { run: false });
    if (cli.options.help || cli.options.version) return 0;
    if (!cli.matchedCommand) {
      if (cli.args.length > 0) throw new StratumError('USAGE', `unknown command '${cli.args[0]}'; see \`stratum --help\``);
      cli.outputHelp();
      return 2;
    }
    await cli.runMatchedCommand();
    return 0;
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
