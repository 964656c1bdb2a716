#!/usr/bin/env node
// The `stratum` command line: parse with cac, hand each command to its file in commands/, and
// turn errors into one line on stderr and an exit status (0 ok, 1 failed, 2 usage).
import { setFlagsFromString } from 'node:v8';
import { StratumError, codeOfErrno, exitStatus, isSystemError } from '../store/error.js';
import { COMMIT_V8_FLAGS } from '../store/head/engine.js';
import { STDIO } from './context.js';
import { completeWord } from './manual.js';
import { buildCli } from './program.js';

// this process may commit a large tree (src/store/head/engine.ts)
setFlagsFromString(COMMIT_V8_FLAGS);

async function main(argv: string[]): Promise<number> {
  const cli = buildCli();
  // a reader that stops early (`stratum export x - | head`) ends us as SIGPIPE ends git: quietly, 141
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EPIPE_STATUS);
    throw err;
  });
  try {
    // the shell completion asks for words: `stratum __complete <word being typed> [--store dir]`
    if (argv[2] === '__complete') return await completeWord(cli, argv.slice(3));
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
    return report(err, argv.includes('--json'));
  }
}

/** What a shell reports for a process ended by SIGPIPE (128 + 13), as git's `git log | head` ends. */
const EPIPE_STATUS = 141;

/** System errors that are the machine's answer to what the user asked, not our bug. */
const USER_SYSTEM_ERRORS: Readonly<Record<string, string>> = {
  EACCES: 'permission denied', EPERM: 'operation not permitted', EROFS: 'read-only file system', ENOSPC: 'no space left', EDQUOT: 'disk quota exceeded',
};

/**
 * One line on stderr for the user; with --json also `{"error": {code, message}}` on stdout, so a
 * script reads the stable code rather than parsing the message.
 */
function report(err: unknown, json: boolean): number {
  const status = reportLine(err);
  if (json && status !== EPIPE_STATUS) {
    const code = err instanceof StratumError ? err.code
      : isSystemError(err) ? codeOfErrno(err.code)
      : err instanceof Error && err.name === 'CACError' ? 'USAGE' : 'INTERNAL';
    const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
    process.stdout.write(`${JSON.stringify({ error: { code, message } })}\n`);
  }
  return status;
}

function reportLine(err: unknown): number {
  if (isSystemError(err, 'EPIPE')) return EPIPE_STATUS;
  // e.g. another user's store: its lock file is not ours to open
  if (isSystemError(err) && USER_SYSTEM_ERRORS[err.code]) {
    process.stderr.write(`stratum: ${err.path ?? err.syscall ?? 'a file'}: ${USER_SYSTEM_ERRORS[err.code]} (${err.code})\n`);
    return 1;
  }
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
