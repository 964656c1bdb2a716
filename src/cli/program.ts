// The command table: every command, its options and examples, for cac to parse and for help,
// the man page and shell completion (manual.ts) to describe. main.ts runs it.
//
// Public surface: buildCli, version.
import { createRequire } from 'node:module';
import { cac } from 'cac';
import { exportCommand, importCommand } from './commands/import.js';
import { annotateCommand } from './commands/annotate.js';
import { applyCommand, commitCommand, initCommand } from './commands/head-commands.js';
import { list } from './commands/list.js';
import { mountCommand, unmountCommand } from './commands/mount.js';
import { pullCommand, pushCommand } from './commands/push-pull.js';
import { diffCommand, gcCommand, logCommand, removeCommand, statusCommand, tagCommand, verifyCommand } from './commands/store-commands.js';
import { Context, type GlobalOptions } from './context.js';
import { completionScript, manPage } from './manual.js';

export const { version } = createRequire(import.meta.url)('../../../package.json') as { version: string };

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
  cli.option('-q, --quiet', 'Print only results and errors');

  cli
    .command('import <source> [target]', 'Import a directory (with --label) or a bundle file (- for stdin) as a commit; prints label:<id>')
    .option('--label <label>', 'The label to import into (required for a directory; renames a bundle\'s label)')
    .option('--tag <tag>', 'Also tag the commit label:<tag> (renames a bundle\'s tag); refused before anything is read if taken')
    .option('--bare', 'A delta dir (overlay or OCI whiteouts) on the HEAD base of target label[:tag]; HEAD stays')
    .option('--create', 'With --bare: the target label may be new')
    .example('stratum import ./myapp --label myapp --tag v1.0')
    .example('stratum import myapp.bundle')
    .example('stratum import --bare ./patch myapp:modded')
    .action(run(importCommand));
  cli
    .command('export <ref> <file>', 'Write a commit with all its objects as one bundle (- for stdout, never a terminal)')
    .example('stratum export myapp:v1.0 myapp.bundle')
    .example('stratum export myapp:v1.0 - | ssh host stratum import -')
    .action(run(exportCommand));
  cli
    .command('list [label]', "List labels, or a label's commits: tags, id, created, size, * on HEAD's base")
    .option('--all', "Also show each commit's id tag (label:<64 hex>)")
    .example('stratum list')
    .example('stratum list myapp')
    .example('stratum list myapp --all --json')
    .action(run(list));
  cli
    .command('tag <ref> <tag>', 'Tag the commit ref names (label:tag, label:<id prefix>, label@sha256:<id>); tag is a name or label:name')
    .option('--move', 'Rename: remove the source tag')
    .option('--force', 'Replace an existing tag')
    .option('--create', 'The label of label:name may be new')
    .example('stratum tag myapp:v1.0 latest')
    .example('stratum tag myapp:v1.0 v1 --move')
    .example('stratum tag myapp:v1.0 other:base --create')
    .action(run(tagCommand));
  cli
    .command('remove <ref>', 'Remove a tag (label:tag), a commit\'s tags (label:<id prefix>) or a whole label, then collect garbage')
    .option('--force', "Discard HEAD's uncommitted changes (removing a label)")
    .option('--dry-run', 'Only say what would be removed and freed')
    .example('stratum remove myapp:v1.0')
    .example('stratum remove myapp:0123abcd --dry-run')
    .example('stratum remove myapp --force')
    .action(run(removeCommand));
  cli
    .command('gc', 'Delete commits and objects nothing refers to')
    .option('--dry-run', 'Only say what would be freed')
    .example('stratum gc --dry-run')
    .example('stratum gc')
    .action(run(gcCommand));
  cli
    .command('verify [ref]', 'Re-hash objects and images; exit 1 on any problem')
    .option('--repair', 'Remove corrupt objects so a re-import restores them')
    .example('stratum verify')
    .example('stratum verify myapp:v1.0 --repair')
    .action(run(verifyCommand));
  cli.command('log <ref>', 'A commit and its ancestors').example('stratum log myapp:latest').example('stratum log myapp --json').action(run(logCommand));
  cli
    .command('diff <from> <to>', 'Paths added (A), removed (D) and changed (M) between two commits')
    .example('stratum diff myapp:v1.0 myapp:v1.1')
    .example('stratum diff myapp:v1.0 myapp --json')
    .action(run(diffCommand));
  cli
    .command('annotate <ref> [...changes]', 'Set (key=value) or remove (key-) annotations of the commit label:tag names, or of a bare label; prints them')
    .example('stratum annotate myapp:v1.0 owner=ana')
    .example('stratum annotate myapp:v1.0 org.opencontainers.image.source=https://example.org/myapp old-')
    .example('stratum annotate myapp')
    .action(run(annotateCommand));
  cli
    .command('status [ref]', 'The store, or one label: HEAD, tags, changes, mounts (dead ones marked STALE)')
    .example('stratum status')
    .example('stratum status myapp')
    .example('stratum status myapp:v1.0')
    .action(run(statusCommand));
  cli
    .command('commit <target>', "Commit HEAD's changes as label:tag (label alone: tagged by the commit id); no change, no new commit")
    .example('stratum commit myapp:v1.1')
    .example('stratum commit myapp')
    .action(run(commitCommand));
  cli
    .command('apply <ref> [mountpoint]', "Move HEAD's base to ref (live on a mounted HEAD); with a mountpoint: on the mount there, or mount there")
    .option('--discard', 'Drop uncommitted changes')
    .option('--keep', 'Keep uncommitted changes on top of the new base')
    .option('--mode <mode>', 'auto|fuse|kernel, when it mounts')
    .example('stratum apply myapp:v1.0')
    .example('stratum apply myapp:v1.0 --keep')
    .example('stratum apply myapp:v1.0 /srv/myapp')
    .action(run(applyCommand));
  cli
    .command('init <label> [mountpoint]', 'Create a label with an empty HEAD; with a mountpoint, mount it there')
    .option('--migrate', 'Import the directory at mountpoint as the first commit')
    .option('--mode <mode>', 'auto|fuse|kernel, as for mount')
    .example('stratum init newapp')
    .example('stratum init newapp /srv/newapp')
    .example('stratum init oldapp /srv/oldapp --migrate')
    .action(run(initCommand));
  cli
    .command('mount <ref> [mountpoint]', 'Mount label (HEAD, read-write) or label:tag (read-only); prints the mountpoint (default: in the runtime dir)')
    .option('--foreground', 'Serve in this process, logging to stderr')
    .option('--mode <mode>', 'auto|fuse|kernel (auto: kernel when root and the kernel can, else fuse)')
    .option('--allow-suid', 'Honour setuid/setgid bits (root only; mounts are nosuid otherwise)')
    .option('--allow-dev', 'Honour device files (root only; mounts are nodev otherwise)')
    .example('stratum mount myapp')
    .example('stratum mount myapp /srv/myapp')
    .example('stratum mount myapp:v1.0 --mode fuse')
    .action(run(mountCommand));
  cli
    .command('unmount <what>', 'Unmount label[:tag] or a mountpoint (flushes and ends the server; detaches a dead mount)')
    .example('stratum unmount myapp')
    .example('stratum unmount /srv/myapp')
    .action(run(unmountCommand));
  cli
    .command('push <ref> <destination>', 'Push a commit to an OCI registry: <registry>/<repo>[:<tag>] (tag defaults to the Stratum tag)')
    .option('--plain-http', 'Talk HTTP, not HTTPS (a local registry)')
    .option('--tls-verify <bool>', 'false: accept any TLS certificate')
    .option('--insecure', 'The same as --tls-verify=false')
    .example('stratum push myapp:v1.0 registry.example:5000/team/myapp')
    .example('stratum push myapp:v1.0 127.0.0.1:5000/team/myapp:latest --plain-http')
    .action(run(pushCommand));
  cli
    .command('pull <source> [target]', "Pull <registry>/<repo>:<tag> into label[:tag] (default: the repo's last path element and its tag)")
    .option('--plain-http', 'Talk HTTP, not HTTPS (a local registry)')
    .option('--tls-verify <bool>', 'false: accept any TLS certificate')
    .option('--insecure', 'The same as --tls-verify=false')
    .option('--force', 'Move an existing tag that names another commit')
    .example('stratum pull registry.example:5000/team/myapp:v1.0')
    .example('stratum pull 127.0.0.1:5000/team/myapp:v1.0 other:v1 --plain-http')
    .action(run(pullCommand));
  cli
    .command('completion <shell>', 'Print shell completion for bash or zsh (commands, options, labels, label:tag)')
    .example('source <(stratum completion bash)')
    .example('stratum completion zsh > ~/.zfunc/_stratum')
    .action((shell: string) => process.stdout.write(completionScript(shell, cli)));
  cli
    .command('man', 'Print the manual page (roff), made from this same command table')
    .example('stratum man | man -l -')
    .example('stratum man > /usr/local/share/man/man1/stratum.1')
    .action(() => process.stdout.write(manPage(cli, version)));

  // a command's help starts with what it does; examples are indented like the rest
  cli.help((sections) => {
    const command = cli.matchedCommand;
    if (command && command.name !== '') sections.splice(1, 0, { body: command.description });
    for (const section of sections) if (section.title === 'Examples') section.body = section.body.split('\n').map((l) => `  ${l}`).join('\n');
    return sections;
  });
  cli.version(version);
  return cli;
}

