/**
 * Benchmark results: each benchmark appends rows to var/bench/results.json as it finishes, and
 * the run ends with a table on stdout (report.ts).
 *
 * Every judged figure is the median of several rounds, and the row carries the spread (min–max)
 * of the per-round figures beside it: a verdict that one noisy round could flip shows up as a
 * spread straddling the target. A row compared with a baseline measured in the same run judges
 * the median of the per-round ratios (each round's ratio from its own, adjacent, baseline round),
 * so a neighbour that slows the machine for a while slows both sides of that round alike. A row
 * without a target is `reported`: printed, but neither met nor failed.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_FILE = fileURLToPath(new URL('../../var/bench/results.json', import.meta.url));

export type Verdict = 'pass' | 'fail' | 'reported';

export interface BenchResult {
  readonly name: string;
  /** The median of the per-round values. */
  readonly value: number;
  readonly unit: string;
  /** The median of the per-round baseline values, when there is a baseline. */
  readonly baseline: number | null;
  /** The median of the per-round ratios value / baseline (for probe_cycle: ideal / actual). */
  readonly ratio: number | null;
  /**
   * What the target judges: the ratio, the value itself, or the excess (each round's value minus
   * the baseline measured next to it).
   */
  readonly judged: 'ratio' | 'value' | 'excess';
  /** For an excess row: the median of the per-round excesses, which the target judges. */
  readonly excess?: number;
  /** Min and max of the per-round figures the judged one is the median of. */
  readonly spread: readonly [number, number];
  readonly rounds: number;
  /** Human-readable target, e.g. "ratio >= 0.85" or "<= 5 ms"; null when the row is only reported. */
  readonly target: string | null;
  readonly verdict: Verdict;
  readonly command: string;
}

export const COMMAND = 'npm run bench';

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError('median of no values');
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

const minMax = (xs: readonly number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];

function ratios(values: readonly number[], baselines: readonly number[]): number[] {
  if (values.length !== baselines.length) throw new RangeError(`${values.length} rounds but ${baselines.length} baseline rounds`);
  return values.map((v, i) => v / (baselines[i] as number));
}

/**
 * The per-round figures of one row: `values[i]` and, when there is a baseline, `baselines[i]`
 * measured next to it in the same round.
 */
export interface Rounds {
  readonly values: readonly number[];
  readonly baselines?: readonly number[];
}

function summarize(name: string, unit: string, r: Rounds): Omit<BenchResult, 'judged' | 'spread' | 'target' | 'verdict'> & { perRoundRatios: number[] | null } {
  const perRoundRatios = r.baselines ? ratios(r.values, r.baselines) : null;
  return {
    name,
    value: median(r.values),
    unit,
    baseline: r.baselines ? median(r.baselines) : null,
    ratio: perRoundRatios ? median(perRoundRatios) : null,
    rounds: r.values.length,
    command: COMMAND,
    perRoundRatios,
  };
}

const passOrFail = (ok: boolean): Verdict => (ok ? 'pass' : 'fail');

/** A row whose target is a minimum of the median per-round ratio value / baseline (higher is better). */
export function ratioAtLeast(name: string, unit: string, r: Required<Rounds>, min: number): BenchResult {
  const { perRoundRatios, ...s } = summarize(name, unit, r);
  const ratio = s.ratio as number;
  return { ...s, judged: 'ratio', spread: minMax(perRoundRatios as number[]), target: `ratio >= ${min}`, verdict: passOrFail(ratio >= min) };
}

/** A row whose target is a maximum of the median per-round ratio value / baseline (lower is better: a cost). */
export function ratioAtMost(name: string, unit: string, r: Required<Rounds>, max: number): BenchResult {
  const { perRoundRatios, ...s } = summarize(name, unit, r);
  const ratio = s.ratio as number;
  return { ...s, judged: 'ratio', spread: minMax(perRoundRatios as number[]), target: `ratio <= ${max}`, verdict: passOrFail(ratio <= max) };
}

/** A row whose target is an absolute ceiling on the median value (lower is better). */
export function atMost(name: string, unit: string, r: Rounds, max: number): BenchResult {
  const { perRoundRatios: _, ...s } = summarize(name, unit, r);
  return { ...s, judged: 'value', spread: minMax(r.values), target: `<= ${max} ${unit}`, verdict: passOrFail(s.value <= max) };
}

/**
 * A row whose target is a ceiling on how far the value exceeds its baseline, judged on the median
 * of the per-round excesses (each round's value minus the baseline measured next to it). For
 * latency under a saturating load, which measures the machine as much as the server: when a
 * neighbour slows the machine, the bare server's p99 rises with ours.
 */
export function excessAtMost(name: string, unit: string, r: Required<Rounds>, max: number): BenchResult {
  const { perRoundRatios, ...s } = summarize(name, unit, r);
  const perRound = r.values.map((v, i) => v - (r.baselines[i] as number));
  const excess = median(perRound);
  return { ...s, ratio: perRoundRatios ? median(perRoundRatios) : null, judged: 'excess', excess, spread: minMax(perRound), target: `<= baseline + ${max} ${unit}`, verdict: passOrFail(excess <= max) };
}

/** A row whose target is an absolute floor on the median value (higher is better). */
export function atLeast(name: string, unit: string, r: Rounds, min: number): BenchResult {
  const { perRoundRatios: _, ...s } = summarize(name, unit, r);
  return { ...s, judged: 'value', spread: minMax(r.values), target: `>= ${min} ${unit}`, verdict: passOrFail(s.value >= min) };
}

/** A row with no target: printed and kept, never counted as met or failed. Its spread is of the ratio when there is a baseline. */
export function reported(name: string, unit: string, r: Rounds): BenchResult {
  const { perRoundRatios, ...s } = summarize(name, unit, r);
  return perRoundRatios
    ? { ...s, judged: 'ratio', spread: minMax(perRoundRatios), target: null, verdict: 'reported' }
    : { ...s, judged: 'value', spread: minMax(r.values), target: null, verdict: 'reported' };
}

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

/** Rows whose target failed, for the benchmark's own assertion (its message names the rounds). */
export function failed(rows: readonly BenchResult[]): string[] {
  return rows.filter((r) => r.verdict === 'fail').map((r) => `${r.name}: ${judgedText(r)} (spread ${spreadText(r)}) against ${String(r.target)}`);
}

/** The median the verdict is on. */
function judgedText(r: BenchResult): string {
  if (r.judged === 'ratio') return `ratio ${show(r.ratio)}`;
  if (r.judged === 'excess') return `${signed(r.excess ?? Number.NaN)} ${r.unit} over the baseline`;
  return `${show(r.value)} ${r.unit}`;
}

const show = (n: number | null): string =>
  n === null ? '-' : Number.isInteger(n) ? String(n) : Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(3);

function spreadText(r: BenchResult): string {
  const [lo, hi] = r.spread;
  if (r.judged === 'excess') return `${signed(lo)}–${signed(hi)} ${r.unit}`;
  return `${show(lo)}–${show(hi)}${r.judged === 'value' ? ` ${r.unit}` : ''}`;
}

function signed(n: number): string {
  return n >= 0 ? `+${show(n)}` : show(n);
}

const COLUMNS = [46, 18, 18, 7, 24, 7, 22] as const;

function line(cells: readonly string[]): string {
  return cells.map((c, i) => (i < COLUMNS.length ? c.padEnd(COLUMNS[i] as number) : c)).join(' ');
}

export function formatRow(r: BenchResult): string {
  return line([
    r.name,
    `${show(r.value)} ${r.unit}`,
    r.baseline === null ? '-' : show(r.baseline),
    show(r.ratio),
    spreadText(r),
    String(r.rounds),
    r.target ?? '-',
    r.verdict.toUpperCase(),
  ]);
}

export function table(rows: readonly BenchResult[]): string {
  const header = line(['name', 'value (median)', 'baseline (median)', 'ratio', 'spread (judged, min–max)', 'rounds', 'target', 'verdict']);
  return [header, '-'.repeat(header.length), ...rows.map(formatRow)].join('\n');
}
