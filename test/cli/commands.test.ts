// The command line as a newcomer meets it, through the installed entry point (issue 13 items 7-9,
// issue 12 item 12): a list that reads like `podman images`, removing by id prefix and with the
// last name, per-command help, completion, the man page, and one-line messages where raw errors
// or stack traces were.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildCli } from '../../src/cli/program.js';
import { STRATUM_BIN } from '../helpers/user.js';
import { pseudoRandomBytes } from '../helpers/bytes.js';

function cli(args: string[], options: { env?: Record<string, string>; input?: string } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(STRATUM_BIN, args, { encoding: 'utf8', env: { ...process.env, ...options.env }, input: options.input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function withDir(fn: (dir: string, s: string[]) => Promise<void> | void): Promise<void> {
  const dir = fs.mkdtempSync('/tmp/stratum-commands-');
  try {
    await fn(dir, ['--store', join(dir, 'store')]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function tree(dir: string, name: string, content: string): string {
  const path = join(dir, name);
  fs.mkdirSync(path, { recursive: true });
  fs.writeFileSync(join(path, 'conf'), content);
  return path;
}

test('list <label> is one row per commit with its tags, short id, created, size and * on HEAD\'s base; --all adds id refs', () =>
  withDir((dir, s) => {
    const a = cli(['import', tree(dir, 'a', 'one'), '--label', 'app', '--tag', 'v1', ...s]).stdout.trim().split(':')[1]!;
    const b = cli(['import', tree(dir, 'b', 'two!'), '--label', 'app', '--tag', 'v2', ...s]).stdout.trim().split(':')[1]!;
    assert.is(cli(['tag', 'app:v2', 'latest', ...s]).status, 0);
    const c = cli(['import', tree(dir, 'c', 'three'), '--label', 'app', ...s]).stdout.trim().split(':')[1]!;
    const rows = cli(['list', 'app', ...s]).stdout.trimEnd().split('\n');
    assert.is(rows.length, 4, rows.join('\n'));
    assert.match(rows[0]!, /^TAGS +ID +CREATED +SIZE +HEAD$/);
    const cells = rows.slice(1).map((r) => r.split(/ {2,}/));
    const byId = new Map(cells.map((r) => [r[1], r]));
    assert.equal(byId.get(b.slice(0, 12))!.slice(0, 1), ['app:latest, app:v2']);
    assert.equal(byId.get(c.slice(0, 12))!.slice(0, 1), ['app:<none>'], 'an untagged import is one row, not a 64-hex tag');
    assert.equal(byId.get(a.slice(0, 12))!.slice(0, 1), ['app:v1']);
    assert.match(byId.get(a.slice(0, 12))![2]!, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    assert.is(byId.get(a.slice(0, 12))![3], '3 B');
    assert.is(byId.get(a.slice(0, 12))![4], '*', 'HEAD is on the first import');
    assert.is(byId.get(b.slice(0, 12))!.length, 4, 'no marker elsewhere');
    const all = cli(['list', 'app', '--all', ...s]).stdout;
    for (const id of [a, b, c]) assert.ok(all.includes(`app:${id}`), `--all shows app:${id}`);
    assert.is(cli(['list', ...s]).stdout, 'app\t3 commits, 3 tags\n', 'id tags are not counted');
  }));

test('remove label:<id prefix> (8+ hex) drops the commit\'s names; the last name takes the id tag with it; --dry-run says so and removes nothing', () =>
  withDir((dir, s) => {
    const a = cli(['import', tree(dir, 'a', 'one'), '--label', 'app', '--tag', 'v1', ...s]).stdout.trim().split(':')[1]!;
    const b = cli(['import', tree(dir, 'b', 'two'), '--label', 'app', '--tag', 'v2', ...s]).stdout.trim().split(':')[1]!;
    assert.is(cli(['tag', 'app:v2', 'other:keep', '--create', ...s]).status, 0);
    const commits = () => fs.readdirSync(join(dir, 'store', 'commits')).sort();
    // held by another label: removing v2 frees nothing
    let r = cli(['remove', 'app:v2', '--dry-run', ...s]);
    assert.is(r.stdout, `would remove app:v2, app:${b}; frees no commit (something else still holds it)\n`);
    assert.is(cli(['remove', 'other', ...s]).status, 0);
    r = cli(['remove', 'app:v2', '--dry-run', ...s]);
    assert.is(r.stdout, `would remove app:v2, app:${b}; would free 1 commit (${b.slice(0, 12)})\n`);
    assert.equal(commits(), [a, b].sort(), 'a dry run removes nothing');
    assert.match(cli(['list', 'app', ...s]).stdout, /app:v2 /);
    r = cli(['remove', 'app:v2', ...s]);
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^removed app:v2, app:${b}; freed 1 commit`));
    assert.equal(commits(), [a]);
    // by id prefix: 7 hex is no ref, 8 is
    assert.is(cli(['tag', 'app:v1', 'latest', ...s]).status, 0);
    r = cli(['remove', `app:${a.slice(0, 7)}`, ...s]);
    assert.is(r.status, 1);
    assert.match(r.stderr, /^stratum: tag app:[0-9a-f]{7} does not exist; `stratum list app` shows the tags\n$/);
    r = cli(['remove', `app:${a.slice(0, 8)}`, '--dry-run', ...s]);
    assert.is(r.stdout, `would remove app:${a}, app:latest, app:v1; frees no commit (something else still holds it)\n`, 'HEAD stands on it');
    r = cli(['remove', `app:${a.slice(0, 8)}`, ...s]);
    assert.is(r.status, 0, r.stderr);
    assert.is(cli(['list', 'app', '--all', ...s]).stdout.split('\n')[1]!.split(/ {2,}/)[0], 'app:<none>', 'only HEAD names it now');
  }));

test('every command has --help with its description, every option and at least two examples; -q is --quiet', () => {
  for (const command of buildCli().commands) {
    const r = cli([command.name, '--help']);
    assert.is(r.status, 0, command.name);
    assert.ok(r.stdout.includes(command.description), `${command.name}: description`);
    for (const o of command.options) assert.ok(r.stdout.includes(o.rawName), `${command.name}: ${o.rawName}`);
    const examples = r.stdout.split('Examples:\n')[1]?.trim().split('\n') ?? [];
    assert.ok(examples.length >= 2, `${command.name}: ${examples.length} examples`);
    assert.ok(examples.every((e) => e.trim().startsWith('stratum ') || e.includes('<(stratum')), command.name);
  }
  return withDir((dir, s) => {
    const loud = cli(['import', tree(dir, 'a', 'x'), '--label', 'app', ...s]);
    assert.match(loud.stderr, /paths/);
    const quiet = cli(['import', tree(dir, 'b', 'y'), '--label', 'app', '-q', ...s]);
    assert.is(quiet.status, 0);
    assert.is(quiet.stderr, '');
    assert.match(quiet.stdout, /^app:[0-9a-f]{64}\n$/);
  });
});

test('bash completion completes commands, options, labels and label:tag', () =>
  withDir((dir, s) => {
    if (spawnSync('bash', ['--version']).status !== 0) { console.log('bash completion test skipped: no bash'); return; }
    cli(['import', tree(dir, 'a', 'x'), '--label', 'myapp', '--tag', 'v1.0', ...s]);
    cli(['tag', 'myapp:v1.0', 'latest', ...s]);
    const script = join(dir, 'stratum.bash');
    fs.writeFileSync(script, cli(['completion', 'bash']).stdout);
    fs.mkdirSync(join(dir, 'bin'));
    fs.symlinkSync(STRATUM_BIN, join(dir, 'bin', 'stratum'));
    const complete = (line: string): string[] => {
      const words = line.split(' ');
      const r = spawnSync('bash', ['-c', `source '${script}'; COMP_LINE='${line}'; COMP_POINT=${line.length}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; COMP_WORDBREAKS=$' \\t\\n"\\'><=;|&(:'; _stratum; printf '%s\\n' "\${COMPREPLY[@]}"`],
        { encoding: 'utf8', env: { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` } });
      assert.is(r.status, 0, r.stderr);
      return r.stdout.split('\n').filter(Boolean).sort();
    };
    assert.equal(complete('stratum mo'), ['mount']);
    assert.equal(complete('stratum un'), ['unmount']);
    assert.ok(complete('stratum remove --').includes('--dry-run'));
    assert.equal(complete(`stratum mount --store ${join(dir, 'store')} my`), ['myapp', 'myapp:']);
    assert.equal(complete(`stratum mount --store ${join(dir, 'store')} myapp:`), ['latest', 'v1.0'], 'bash puts back what follows the colon');
    assert.equal(complete(`stratum mount --store ${join(dir, 'store')} myapp:l`), ['latest']);
  }));

test('zsh completion: a valid script whose _stratum offers commands, options, labels and label:tag', () =>
  withDir((dir, s) => {
    const script = cli(['completion', 'zsh']);
    assert.is(script.status, 0);
    assert.match(script.stdout, /^#compdef stratum\n/);
    for (const c of buildCli().commands) assert.ok(script.stdout.includes(`'${c.name}:`), c.name);
    if (spawnSync('zsh', ['--version']).status !== 0) { console.log('zsh completion test skipped: zsh is not installed'); return; }
    assert.is(spawnSync('zsh', ['-n'], { input: script.stdout }).status, 0, 'zsh -n');
    cli(['import', tree(dir, 'a', 'x'), '--label', 'myapp', '--tag', 'v1.0', ...s]);
    fs.writeFileSync(join(dir, '_stratum'), script.stdout);
    fs.mkdirSync(join(dir, 'bin'));
    fs.symlinkSync(STRATUM_BIN, join(dir, 'bin', 'stratum'));
    // zsh's completion builtins replaced by printers: what _stratum would offer, one a line
    const complete = (words: string[]): string[] => {
      const r = spawnSync('zsh', ['-f', '-c', `compdef() { :; }
compadd() { local a; for a in "$@"; do [[ $a == -S || -z $a || $a == -- ]] || print -r -- "$a"; done; }
_describe() { print -l -- \${(P)2%%:*}; }
_files() { :; }
source '${join(dir, '_stratum')}'
words=(${words.map((w) => `'${w}'`).join(' ')}); CURRENT=${words.length}; PREFIX='${words[words.length - 1]}'; _stratum`],
      { encoding: 'utf8', env: { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}`, STRATUM_STORE: join(dir, 'store') } });
      assert.is(r.status, 0, r.stderr);
      return r.stdout.split('\n').filter(Boolean);
    };
    assert.ok(complete(['stratum', 'mo']).includes('mount'));
    assert.ok(complete(['stratum', 'remove', '--']).includes('--dry-run'));
    assert.equal(complete(['stratum', 'mount', 'my']), ['myapp', 'myapp:']);
    assert.equal(complete(['stratum', 'mount', 'myapp:']), ['myapp:v1.0']);
  }));

test('the man page comes from the same table: every command and option; man renders it; `man stratum` after setup', () => {
  const page = cli(['man']);
  assert.is(page.status, 0);
  const rendered = spawnSync('man', ['-l', '-'], { input: page.stdout, encoding: 'utf8', env: { ...process.env, MANWIDTH: '200', MAN_KEEP_FORMATTING: '' } });
  if (rendered.status !== 0 || rendered.error) { console.log(`man rendering skipped: ${rendered.stderr || rendered.error}`); return; }
  const text = rendered.stdout.replace(/.\x08/g, '');
  for (const c of buildCli().commands) {
    assert.ok(text.includes(`stratum ${c.rawName}`), c.rawName);
    for (const o of c.options) assert.ok(text.includes(o.rawName), `${c.name} ${o.rawName}`);
  }
  assert.match(text, /XDG_RUNTIME_DIR/);
  // where scripts/setup puts it; when setup has not run from this checkout, the same in a temp man dir
  const installed = '/usr/local/share/man/man1/stratum.1';
  const dir = fs.mkdtempSync('/tmp/stratum-man-');
  try {
    let env: NodeJS.ProcessEnv = process.env;
    if (!fs.existsSync(installed) || fs.readFileSync(installed, 'utf8') !== page.stdout) {
      console.log(`${installed} is absent or not this checkout's: \`man stratum\` checked with MANPATH=${dir}`);
      fs.mkdirSync(join(dir, 'man1'));
      fs.writeFileSync(join(dir, 'man1', 'stratum.1'), page.stdout);
      env = { ...process.env, MANPATH: dir };
    }
    const man = spawnSync('man', ['stratum'], { encoding: 'utf8', env: { ...env, MANPAGER: 'cat', PAGER: 'cat' } });
    assert.is(man.status, 0, man.stderr);
    assert.match(man.stdout.replace(/.\x08/g, ''), /STRATUM\(1\)[\s\S]*stratum mount <ref> \[mountpoint\]/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('tag and import --bare into a label that does not exist need --create; init\'s commit has the time of init', () =>
  withDir((dir, s) => {
    cli(['import', tree(dir, 'a', 'x'), '--label', 'app', '--tag', 'v1', ...s]);
    let r = cli(['tag', 'app:v1', 'ap:v1', ...s]);
    assert.is(r.status, 1);
    assert.is(r.stderr, 'stratum: label ap does not exist; to make it, add --create: stratum tag app:v1 ap:v1 --create\n');
    assert.is(cli(['list', ...s]).stdout, 'app\t1 commit, 1 tag\n', 'no label made');
    assert.is(cli(['tag', 'app:v1', 'ap:v1', '--create', ...s]).status, 0);
    r = cli(['import', '--bare', tree(dir, 'patch', 'y'), 'ap2:p1', ...s]);
    assert.is(r.status, 1);
    assert.match(r.stderr, /^stratum: label ap2 does not exist; to make it, add --create: /);
    r = cli(['import', '--bare', join(dir, 'patch'), 'ap2:p1', '--create', ...s]);
    assert.is(r.status, 0, r.stderr);
    assert.is(cli(['import', '--bare', join(dir, 'patch'), 'app:p1', ...s]).status, 0, 'an existing label needs nothing');
    const before = Date.now();
    assert.is(cli(['init', 'fresh', ...s]).status, 0);
    const json = JSON.parse(cli(['list', 'fresh', '--json', ...s]).stdout) as { commits: Array<{ timestamp: string }> };
    const t = Date.parse(json.commits[0]!.timestamp);
    assert.ok(t >= before - 2000 && t <= Date.now() + 2000, `init's commit time ${json.commits[0]!.timestamp}`);
  }));

test('export to a terminal refuses; export to a reader that stops early ends quietly with 141, as git does', () =>
  withDir((dir, s) => {
    const src = join(dir, 'big');
    fs.mkdirSync(src);
    fs.writeFileSync(join(src, 'blob'), pseudoRandomBytes(2_000_000, 1));
    cli(['import', src, '--label', 'app', '--tag', 'v1', ...s]);
    const piped = spawnSync('bash', ['-c', `'${STRATUM_BIN}' export app:v1 - ${s.join(' ')} | head -c 100 >/dev/null; echo "\${PIPESTATUS[0]}"`], { encoding: 'utf8' });
    assert.is(piped.stdout, '141\n');
    assert.is(piped.stderr, '', 'no stack trace, no message');
    if (spawnSync('script', ['--version']).status !== 0) { console.log('terminal test skipped: no script(1)'); return; }
    const tty = spawnSync('script', ['-qec', `'${STRATUM_BIN}' export app:v1 - ${s.join(' ')}`, '/dev/null'], { encoding: 'utf8' });
    assert.is(tty.status, 2);
    assert.match(tty.stdout, /stratum: refusing to write a bundle to a terminal; redirect it/);
    assert.ok(tty.stdout.length < 300, 'no bundle bytes on the terminal');
  }));

test('user mistakes the CLI meets print one line, never "internal error"', () =>
  withDir((dir, s) => {
    const file = join(dir, 'file');
    fs.writeFileSync(file, 'x');
    cli(['import', tree(dir, 'a', 'x'), '--label', 'app', '--tag', 'v1', ...s]);
    const cases: string[][] = [
      ['list', '--store', file], ['status', '--store', file], ['import', join(dir, 'a'), '--label', 'x', '--store', file],
      ['export', 'app:v1', join(dir, 'no', 'such', 'dir', 'b'), ...s], ['export', 'app:v1', dir, ...s],
      ['import', file, ...s], ['import', join(dir, 'a'), '--label', 'app', '--tag', 'HEAD', ...s],
      ['mount', 'app', file, ...s], ['apply', 'app:v1', file, ...s], ['init', 'x', file, '--migrate', ...s],
      ['unmount', dir, ...s], ['unmount', 'nolabel', ...s], ['status', 'nolabel', ...s], ['log', 'app:v9', ...s],
      ['diff', 'app:v1', 'app:zz', ...s], ['init', 'app', ...s], ['completion', 'fish'], ['verify', 'nolabel', ...s],
      ['remove', 'nolabel:tag', ...s], ['remove', 'app:abcdef12', ...s], ['tag', 'app:v1', 'v1', ...s], ['list', 'nolabel', ...s],
      ['remove', 'app@sha256:' + '0'.repeat(64), ...s], ['commit', 'app:v1', ...s], ['commit', 'nolabel', ...s],
    ];
    for (const args of cases) {
      const r = cli(args);
      assert.ok(r.status === 1 || r.status === 2, `${args.join(' ')}: status ${r.status}`);
      assert.not.match(r.stderr, /internal error/, args.join(' '));
      assert.match(r.stderr, /^stratum: [^\n]+\n$/, `${args.join(' ')}: one line: ${r.stderr}`);
    }
  }));

test.run();
