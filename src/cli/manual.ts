// The manual page and the shell completions, both made from cac's command table (main.ts), so
// help, `man stratum` and completion never disagree about commands and options.
//
// Public surface: manPage, completionScript, completeWord.
import type { cac } from 'cac';
import { Store } from '../store/store.js';
import { resolveStorePath } from '../store/location.js';
import { StratumError } from '../store/error.js';

type Cli = ReturnType<typeof cac>;
type Command = Cli['commands'][number];

const visible = (cli: Cli): Command[] => cli.commands.filter((c) => c.name !== '');
const example = (e: Command['examples'][number]): string => (typeof e === 'function' ? e('stratum') : e);
const optionNames = (c: { options: Array<{ rawName: string }> }): string[] =>
  c.options.flatMap((o) => o.rawName.split(/[ ,]+/).filter((w) => w.startsWith('-')));

/** roff: backslashes and dashes escaped, a leading dot or quote kept as text. */
function roff(text: string): string {
  return text.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/gm, '\\&$1');
}

export function manPage(cli: Cli, version: string): string {
  const out: string[] = [
    `.TH STRATUM 1 "" "stratum ${version}" "User Commands"`,
    '.SH NAME',
    'stratum \\- layered state management: content\\-addressed commits, label:tag names, a writable HEAD',
    '.SH SYNOPSIS',
    '.B stratum',
    '.I command',
    '[\\fIarguments\\fR] [\\fIoptions\\fR]',
    '.SH DESCRIPTION',
    roff('Stratum imports a directory as an immutable, content-addressed commit, names commits as label:tag, mounts a label with a persistent writable HEAD, and turns HEAD\'s changes into a new tagged commit. `stratum <command> --help` shows one command.'),
    '.SH COMMANDS',
  ];
  for (const c of visible(cli)) {
    out.push('.TP', `.B ${roff(`stratum ${c.rawName}`)}`, roff(c.description));
    if (c.options.length > 0) {
      out.push('.RS');
      for (const o of c.options) out.push('.TP', `.B ${roff(o.rawName)}`, roff(o.description));
      out.push('.RE');
    }
    if (c.examples.length > 0) out.push('.RS', '.PP', 'Examples:', '.nf', ...c.examples.map((e) => `  ${roff(example(e))}`), '.fi', '.RE');
  }
  out.push('.SH GLOBAL OPTIONS');
  for (const o of cli.globalCommand.options) out.push('.TP', `.B ${roff(o.rawName)}`, roff(o.description));
  out.push('.TP', '.B \\-h, \\-\\-help', 'Show help (for one command after its name)', '.TP', '.B \\-v, \\-\\-version', 'Show the version');
  out.push(
    '.SH ENVIRONMENT',
    '.TP', '.B STRATUM_STORE', roff('The store directory when --store is not given.'),
    '.TP', '.B XDG_RUNTIME_DIR', roff('Where a user\'s mount state, logs and default mountpoints go: $XDG_RUNTIME_DIR/stratum; without it a private /tmp/stratum-<uid> (mode 0700, checked to be yours and not a symlink). Root uses /run/stratum.'),
    '.TP', '.B STRATUM_STATE', roff('The mount state file, overriding the runtime dir\'s `state`.'),
    '.SH FILES',
    '.TP', '.I /var/lib/stratum', roff('root\'s store (others: ~/.local/share/stratum)'),
    '.TP', '.I <runtime dir>/mnt/<label>', roff('the default mountpoint of a HEAD (<label>:<tag> for a tag)'),
    '.TP', '.I <runtime dir>/logs/', roff('mount servers\' logs, one per store, label and tag'),
    '.SH EXIT STATUS',
    roff('0 ok, 1 the operation failed, 2 a usage mistake; 141 when the reader of stdout went away (as git).'),
    '.SH SEE ALSO',
    roff('docs/getting-started.md and docs/README.md in the source tree'),
  );
  return `${out.join('\n')}\n`;
}

export function completionScript(shell: string, cli: Cli): string {
  const commands = visible(cli).map((c) => c.name);
  const global = [...optionNames(cli.globalCommand), '--help'];
  if (shell === 'bash') {
    const cases = visible(cli).map((c) => `    ${c.name}) opts="${[...optionNames(c), ...global].join(' ')}" ;;`).join('\n');
    return `# bash completion for stratum: source <(stratum completion bash)
_stratum() {
  local line=\${COMP_LINE:0:COMP_POINT} word store=() i opts
  word=\${line##*[[:space:]]}
  for ((i = 1; i < COMP_CWORD; i++)); do [[ \${COMP_WORDS[i]} == --store ]] && store=(--store "\${COMP_WORDS[i+1]}"); done
  if ((COMP_CWORD == 1)); then
    mapfile -t COMPREPLY < <(compgen -W "${commands.join(' ')} --help --version" -- "$word")
    return
  fi
  case \${COMP_WORDS[1]} in
${cases}
    *) opts="${global.join(' ')}" ;;
  esac
  if [[ $word == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$word")
    return
  fi
  mapfile -t COMPREPLY < <(stratum __complete "$word" "\${store[@]}" 2>/dev/null)
  # bash splits words at ':'; it replaces only what follows the last one
  if [[ $word == *:* && $COMP_WORDBREAKS == *:* ]]; then
    local pre=\${word%"\${word##*:}"}
    COMPREPLY=("\${COMPREPLY[@]#"$pre"}")
  fi
}
complete -o default -F _stratum stratum
`;
  }
  if (shell === 'zsh') {
    const described = visible(cli).map((c) => `    '${c.name}:${c.description.replace(/'/g, "'\\''").replace(/:/g, '\\:')}'`).join('\n');
    const cases = visible(cli).map((c) => `    ${c.name}) opts=(${[...optionNames(c), ...global].join(' ')}) ;;`).join('\n');
    return `#compdef stratum
# zsh completion for stratum: stratum completion zsh > "\${fpath[1]}/_stratum" (or source it)
_stratum() {
  local -a cmds opts refs store
  cmds=(
${described}
  )
  if (( CURRENT == 2 )); then _describe 'command' cmds; return; fi
  local i; for (( i = 2; i < CURRENT; i++ )); do [[ $words[i] == --store ]] && store=(--store $words[i+1]); done
  case $words[2] in
${cases}
    *) opts=(${global.join(' ')}) ;;
  esac
  if [[ $PREFIX == -* ]]; then compadd -- $opts; return; fi
  refs=(\${(f)"$(stratum __complete "$PREFIX" $store 2>/dev/null)"})
  compadd -S '' -- $refs
  _files
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _stratum "$@"; else compdef _stratum stratum; fi
`;
  }
  throw new StratumError('USAGE', `completion is for bash or zsh, not ${shell}: stratum completion bash`);
}

/**
 * `stratum __complete <word> [--store dir]`: labels (as `label` and `label:`), or with a colon the
 * label's tags as `label:tag`, one a line. Never fails: a shell only gets fewer words.
 */
export async function completeWord(_cli: Cli, args: string[]): Promise<number> {
  const word = args[0] ?? '';
  const at = args.indexOf('--store');
  const root = resolveStorePath({ flag: at >= 0 ? args[at + 1] : undefined });
  try {
    const store = await Store.open(root);
    const colon = word.indexOf(':');
    const words = colon < 0
      ? (await store.tags.labels()).flatMap((l) => [l, `${l}:`])
      : (await store.tags.tags(word.slice(0, colon))).filter((t) => !/^[0-9a-f]{64}$/.test(t)).map((t) => `${word.slice(0, colon)}:${t}`);
    for (const w of words) if (w.startsWith(word)) process.stdout.write(`${w}\n`);
  } catch {
    /* no store, no label: nothing to offer */
  }
  return 0;
}
