/**
 * Benchmark results: each benchmark appends rows to var/bench/results.json as it finishes, and
 * the run ends with a table on stdout (report.ts). A row compares a value with a baseline
 * measured in the same run; `ratio` is what the target is checked against.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_FILE = fileURLToPath(new URL('../../var/bench/results.json', import.meta.url));

export interface BenchResult {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly baseline: number | null;
  readonly ratio: number | null;
  /** Human-readable target, e.g. ">= 0.85" or "<= 5 ms". */
  readonly target: string;
  readonly pass: boolean;
  readonly command: string;
}

export const COMMAND = 'npm run bench';

export function readResults(): BenchResult[] {
  try {
    return JSON.parse(readFileSync(RESULTS_FILE, 'utf8')) as BenchResult[];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export function resetResults(): void {
  mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  writeFileSync(RESULTS_FILE, '[]\n');
}

/** Benchmarks run one file at a time (fileParallelism: false), so read-modify-write is safe. */
export function record(...rows: BenchResult[]): void {
  mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  const all = readResults().filter((r) => !rows.some((n) => n.name === r.name));
  writeFileSync(RESULTS_FILE, `${JSON.stringify([...all, ...rows], null, 2)}\n`);
  for (const r of rows) process.stdout.write(`bench ${formatRow(r)}\n`);
}

const round = (n: number | null): string => (n === null ? '-' : Number.isInteger(n) ? String(n) : n >= 100 ? n.toFixed(0) : n.toFixed(3));

export function formatRow(r: BenchResult): string {
  return `${r.name.padEnd(34)} ${`${round(r.value)} ${r.unit}`.padEnd(18)} ${`baseline ${round(r.baseline)}`.padEnd(20)} ${`ratio ${round(r.ratio)}`.padEnd(14)} ${r.target.padEnd(22)} ${r.pass ? 'PASS' : 'FAIL'}`;
}

export function table(rows: readonly BenchResult[]): string {
  const header = `${'name'.padEnd(34)} ${'value'.padEnd(18)} ${'baseline'.padEnd(20)} ${'ratio'.padEnd(14)} ${'target'.padEnd(22)} result`;
  return [header, '-'.repeat(header.length), ...rows.map(formatRow)].join('\n');
}

/** A row whose target is a minimum ratio of value to baseline (higher is better). */
export function ratioAtLeast(name: string, value: number, unit: string, baseline: number, min: number): BenchResult {
  const ratio = value / baseline;
  return { name, value, unit, baseline, ratio, target: `ratio >= ${min}`, pass: ratio >= min, command: COMMAND };
}

/** A row whose target is an absolute ceiling (lower is better); the ratio is value / baseline when there is one. */
export function atMost(name: string, value: number, unit: string, max: number, baseline: number | null = null): BenchResult {
  return { name, value, unit, baseline, ratio: baseline ? value / baseline : null, target: `<= ${max} ${unit}`, pass: value <= max, command: COMMAND };
}

/** A row whose target is an absolute floor (higher is better). */
export function atLeast(name: string, value: number, unit: string, min: number, baseline: number | null = null): BenchResult {
  return { name, value, unit, baseline, ratio: baseline ? value / baseline : null, target: `>= ${min} ${unit}`, pass: value >= min, command: COMMAND };
}
