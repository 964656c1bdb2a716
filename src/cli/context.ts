// What every command gets: the resolved store location and how to talk to the user.
import { resolveStorePath } from '../store/location.js';
import { Store } from '../store/store.js';

/** What a lone `-` on the command line becomes: stdin or stdout, where a command takes a file. */
export const STDIO = '\u0000stdio';

export interface GlobalOptions {
  store?: string;
  json?: boolean;
  quiet?: boolean;
}

export class Context {
  readonly storePath: string;
  readonly json: boolean;
  readonly quiet: boolean;

  constructor(options: GlobalOptions) {
    this.storePath = resolveStorePath({ flag: options.store });
    this.json = Boolean(options.json);
    this.quiet = Boolean(options.quiet);
  }

  /** Readers see an absent store as empty rather than an error. */
  async openForReading(): Promise<Store | undefined> {
    try {
      return await Store.open(this.storePath);
    } catch (err) {
      if (err instanceof Error && (err as { code?: string }).code === 'NOT_FOUND') return undefined;
      throw err;
    }
  }

  openForWriting(): Promise<Store> {
    return Store.open(this.storePath, { create: true });
  }

  /** The command's result: JSON with --json, else the given lines. */
  result(value: unknown, lines: () => string[]): void {
    if (this.json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    else for (const line of lines()) process.stdout.write(`${line}\n`);
  }

  /** Progress and notes for people: stderr, silenced by --quiet. */
  note(message: string): void {
    if (!this.quiet) process.stderr.write(`${message}\n`);
  }
}
