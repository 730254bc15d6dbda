/** Runs the built `qbhealth` (dist/cli.js) as an operator would: a clean environment, a scratch cwd. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A working directory with no .env, so the developer's own configuration never leaks into a test. */
export const scratchDir = (): string => mkdtempSync(path.join(os.tmpdir(), 'qbhm-cli-'));

export function runQbhealth(args: string[], env: Record<string, string>, opts: { cwd?: string; stdin?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd ?? scratchDir(),
      env: { PATH: process.env.PATH ?? '', TZ: process.env.TZ ?? 'Asia/Kolkata', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.stdin ?? '');
  });
}

export interface RunningCli {
  readonly child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in stdout; rejects if the process ends first. */
  waitForStdout(pattern: RegExp): Promise<RegExpExecArray>;
  /** Resolves with the exit, like runQbhealth. */
  readonly exited: Promise<CliResult>;
}

/** Starts the built `qbhealth` and lets a test interact with it while it runs (connect). */
export function spawnQbhealth(args: string[], env: Record<string, string>): RunningCli {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: scratchDir(),
    env: { PATH: process.env.PATH ?? '', TZ: process.env.TZ ?? 'Asia/Kolkata', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.end();
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  const notify = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    notify();
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      resolve({ code, stdout: out, stderr: err });
      notify();
    });
  });
  const waitForStdout = (pattern: RegExp): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const match = pattern.exec(out);
        if (match) return resolve(match);
        if (child.exitCode !== null || child.signalCode !== null) {
          return reject(new Error(`qbhealth ${args.join(' ')} exited (${child.exitCode ?? child.signalCode}) before printing ${pattern}\nstdout:\n${out}\nstderr:\n${err}`));
        }
        waiters.push(check);
      };
      check();
    });
  return { child, stdout: () => out, stderr: () => err, waitForStdout, exited };
}
