/** Runs the built `qbhealth` (dist/cli.js) as an operator would: a clean environment, a scratch cwd. */
import { spawn } from 'node:child_process';
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
