/** Parses `qbhealth <command> [options]`, runs the command and turns every outcome into an exit code. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DatabaseUnreachableError } from '../db/pool.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import { writeLine, type CliIO, type Command } from './command.js';
import { checkSchemaCommand, migrateCommand } from './db-commands.js';
import { connectCommand, disconnectCommand } from './connect-commands.js';
import { rotateKeyCommand } from './key-commands.js';
import { importTokensCommand, probeCommand } from './qbo-commands.js';
import { fleetCommand } from './fleet-commands.js';
import { pruneCommand, statusCommand } from './status-commands.js';
import { simulatorCommand } from './simulator-command.js';
import { schemaCommand } from './schema-commands.js';
import { silenceCommand } from './silence-commands.js';
import { rollupCommand } from './rollup-command.js';

export const COMMANDS: readonly Command[] = [
  statusCommand,
  probeCommand,
  connectCommand,
  importTokensCommand,
  disconnectCommand,
  migrateCommand,
  checkSchemaCommand,
  pruneCommand,
  rollupCommand,
  rotateKeyCommand,
  simulatorCommand,
  schemaCommand,
  fleetCommand,
  silenceCommand,
];

export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'qbhealth: operate the QuickBooks Online health monitor',
    '',
    'usage: qbhealth <command> [options]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run `qbhealth <command> --help` for a command\'s options and exit codes.',
    'Configuration comes from the environment and from a .env file in the working directory.',
  ].join('\n');
}

export function commandHelp(command: Command): string {
  const options = Object.entries(command.options).map(([name, spec]) => {
    const flag = spec.type === 'string' ? `--${name} ${spec.valueName ?? 'VALUE'}` : `--${name}`;
    return [flag, spec.description] as const;
  });
  options.push(['--help', 'show this help']);
  const args = command.arguments ?? [];
  const subs = command.subcommands ?? [];
  const width = Math.max(...[...options.map(([flag]) => flag), ...args.map((a) => a.name), ...subs.map((c) => c.name)].map((t) => t.length));
  const usage = `qbhealth ${command.name}${args.map((a) => ` ${a.name}`).join('')}${Object.keys(command.options).length > 0 ? ' [options]' : ''}`;
  return [
    `usage: ${usage}`,
    ...(subs.length > 0 ? [`       qbhealth ${command.name} <subcommand> [options]`] : []),
    '',
    command.description,
    ...(args.length > 0 ? ['', 'arguments:', ...args.map((a) => `  ${a.name.padEnd(width)}  ${a.description}`)] : []),
    '',
    'options:',
    ...options.map(([flag, text]) => `  ${flag.padEnd(width)}  ${text}`),
    ...(subs.length > 0
      ? ['', 'subcommands:', ...subs.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`), `  (\`qbhealth ${command.name} <subcommand> --help\` for a subcommand's options and exit codes)`]
      : []),
    '',
    'exit codes:',
    ...command.exitCodes.map(([code, text]) => `  ${String(code).padStart(2)}  ${text}`),
  ].join('\n');
}

/** Edit distance, for "did you mean": a typo of one or two letters still finds its command. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}

function closest(name: string, names: readonly string[]): string | undefined {
  const ranked = names.map((n) => [n, distance(name, n)] as const).sort((x, y) => x[1] - y[1]);
  const best = ranked[0];
  return best && best[1] <= 2 ? best[0] : undefined;
}

function usageError(io: CliIO, message: string, help: string): number {
  writeLine(io.stderr, io.secrets, `qbhealth: ${message}`);
  writeLine(io.stderr, io.secrets);
  writeLine(io.stderr, io.secrets, help);
  return ExitCode.usage;
}

export async function runCli(argv: readonly string[], io: CliIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) return usageError(io, 'no command given', mainHelp());
  if (name === '--help' || name === '-h' || name === 'help') {
    writeLine(io.stdout, io.secrets, mainHelp());
    return ExitCode.ok;
  }
  const found = COMMANDS.find((c) => c.name === name);
  if (!found) {
    const near = closest(name, COMMANDS.map((c) => c.name));
    return usageError(io, `unknown command "${name}"${near ? ` (did you mean \`qbhealth ${near}\`?)` : ''}`, mainHelp());
  }
  const resolved = found.subcommands ? resolveSubcommand(io, found, rest) : { command: found, rest };
  if (typeof resolved === 'number') return resolved;
  return runCommand(io, resolved.command, resolved.rest);
}

/** Help for a command made of subcommands (`qbhealth schema`). */
export function groupHelp(group: Command): string {
  const subs = group.subcommands ?? [];
  const width = Math.max(...subs.map((c) => c.name.length));
  return [
    `usage: qbhealth ${group.name} <subcommand> [options]`,
    '',
    group.description,
    '',
    'subcommands:',
    ...subs.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    `Run \`qbhealth ${group.name} <subcommand> --help\` for a subcommand's options and exit codes.`,
  ].join('\n');
}

/** `qbhealth schema snapshot …` runs `snapshot`, named `schema snapshot` in its help and messages. */
function resolveSubcommand(io: CliIO, group: Command, args: readonly string[]): { command: Command; rest: readonly string[] } | number {
  const [subName, ...rest] = args;
  if (group.runsWithoutSubcommand && (subName === undefined || subName.startsWith('-'))) return { command: group, rest: args };
  if (subName === '--help' || subName === '-h') {
    writeLine(io.stdout, io.secrets, groupHelp(group));
    return ExitCode.ok;
  }
  if (subName === undefined) return usageError(io, `\`qbhealth ${group.name}\` needs a subcommand`, groupHelp(group));
  // An option before any subcommand is an option this command does not have (parseArgs' wording).
  if (subName.startsWith('-')) return usageError(io, `Unknown option '${subName}'. Options go after the subcommand`, groupHelp(group));
  const sub = group.subcommands?.find((c) => c.name === subName);
  if (!sub) {
    const near = closest(subName, (group.subcommands ?? []).map((c) => c.name));
    return usageError(io, `unknown subcommand "${subName}"${near ? ` (did you mean \`qbhealth ${group.name} ${near}\`?)` : ''}`, groupHelp(group));
  }
  return { command: { ...sub, name: `${group.name} ${sub.name}` }, rest };
}

async function runCommand(io: CliIO, command: Command, rest: readonly string[]): Promise<number> {
  const options: NonNullable<ParseArgsConfig['options']> = { help: { type: 'boolean', short: 'h' } };
  for (const [optionName, spec] of Object.entries(command.options)) options[optionName] = { type: spec.type };
  const expected = command.arguments ?? [];
  let values: Record<string, string | boolean | undefined>;
  let args: string[];
  try {
    const parsed = parseArgs({ args: [...rest], options, strict: true, allowPositionals: expected.length > 0 });
    values = parsed.values as typeof values;
    args = parsed.positionals;
  } catch (err) {
    // parseArgs reports unknown or malformed options by throwing; that is a usage error (exit 2).
    return usageError(io, coerceError(err).message, commandHelp(command));
  }
  if (values.help) {
    writeLine(io.stdout, io.secrets, commandHelp(command));
    return ExitCode.ok;
  }
  if (args.length < expected.length) {
    return usageError(io, `missing ${expected.slice(args.length).map((a) => a.name).join(' ')} (\`qbhealth ${command.name}${expected.map((a) => ` ${a.name}`).join('')}\`)`, commandHelp(command));
  }
  if (args.length > expected.length) return usageError(io, `unexpected argument "${args[expected.length] ?? ''}"`, commandHelp(command));

  try {
    return await command.run(io, values, args);
  } catch (err) {
    if (err instanceof OperatorError) {
      // A command does not retry: it says so, and what to do, rather than promising a retry.
      const advice = err instanceof DatabaseUnreachableError ? `. Nothing was retried (exit 75): run \`qbhealth ${command.name}\` again once PostgreSQL is reachable` : '';
      writeLine(io.stderr, io.secrets, `qbhealth ${command.name}: ${err.message}${advice}`);
      return err.exitCode;
    }
    // Not an anticipated failure: show everything we have, scrubbed, so it can be reported.
    const error = coerceError(err);
    writeLine(io.stderr, io.secrets, `qbhealth ${command.name}: unexpected failure: ${error.stack ?? error.message}`);
    return 1;
  }
}
