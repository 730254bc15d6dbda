/**
 * CPU placement for the HTTP benchmarks. On this 2-core machine the load generator and the
 * server under test each need a core; left to the scheduler, the daemon could share one with
 * autocannon for a minute while the bare server had one to itself (or the reverse), and the
 * ratio then measured the placement, not the server. So when there are two CPUs and `taskset`
 * exists, the load generator is pinned to CPU 0 and both servers, the daemon and its bare
 * baseline alike, to CPU 1. Everything else (PostgreSQL, the simulator, vitest) floats.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';

export const LOAD_CPU = 0;
export const SERVER_CPU = 1;

function tasksetAvailable(): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Whether processes are pinned (two CPUs or more, and `taskset`); the bench prints which. */
export const PINNED = os.availableParallelism() >= 2 && tasksetAvailable();

/** Pins every thread of `pid` (and the threads it starts later) to `cpu`; nothing when not PINNED. */
export function pin(pid: number, cpu: number): void {
  if (!PINNED) return;
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
}

/** The command that starts `argv` pinned to `cpu` (unchanged when not PINNED). */
export function pinnedCommand(cpu: number, argv: readonly [string, ...string[]]): [string, string[]] {
  return PINNED ? ['taskset', ['-c', String(cpu), ...argv]] : [argv[0], argv.slice(1)];
}
