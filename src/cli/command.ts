import type { Writable } from 'node:stream';
import type { Env } from '../config.js';
import type { SecretRegistry } from '../log.js';

/** What a command may touch: injected so tests run commands in-process and read their output. */
export interface CliIO {
  readonly env: Env;
  readonly cwd: string;
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly stdin: NodeJS.ReadableStream;
  /** Secret values learned while running (config, tokens), scrubbed from every line written. */
  readonly secrets: SecretRegistry;
}

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly description: string;
  readonly valueName?: string;
}

/** A positional argument (`qbhealth fleet retire ID`): required, in the order declared. */
export interface ArgumentSpec {
  readonly name: string;
  readonly description: string;
}

export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly description: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Positional arguments; a command without them refuses any (exit 2). */
  readonly arguments?: readonly ArgumentSpec[];
  /** Exit codes this command can end with, and what each means here. */
  readonly exitCodes: ReadonlyArray<readonly [number, string]>;
  run(io: CliIO, values: Readonly<Record<string, string | boolean | undefined>>, args: readonly string[]): Promise<number>;
  /** `qbhealth <name> <subcommand> [options]`: the subcommand runs instead (this one's run is not called). */
  readonly subcommands?: readonly Command[];
  /**
   * With subcommands: when none is named (`qbhealth fleet`, `qbhealth fleet --json`) this command
   * runs itself with its own options, instead of asking for a subcommand.
   */
  readonly runsWithoutSubcommand?: boolean;
}

/**
 * Control characters other than newline and tab (an escape sequence in a company name from Intuit,
 * in a silence's reason) shown as U+FFFD: what reaches the operator's terminal is text, never a
 * command to it.
 */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

export function writeLine(stream: Writable, secrets: SecretRegistry, text = ''): void {
  stream.write(`${secrets.scrub(text).replace(CONTROL, '\ufffd')}\n`);
}
