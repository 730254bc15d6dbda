/**
 * Vitest global setup for `npm run bench`: a fresh results file, and the table at the end. Only
 * rows with a target count as met or failed; `reported` rows are shown and counted apart. The
 * exit code comes from the benchmarks themselves: each fails its test when a target of its own
 * fails, so `npm run bench` exits non-zero.
 */
import { readResults, resetResults, RESULTS_FILE, table } from './results.js';

export default function setup(): () => void {
  resetResults();
  return () => {
    const rows = readResults();
    const judged = rows.filter((r) => r.verdict !== 'reported');
    const met = judged.filter((r) => r.verdict === 'pass').length;
    const failedNames = judged.filter((r) => r.verdict === 'fail').map((r) => r.name);
    process.stdout.write(
      `\n${table(rows)}\n\n${met} of ${judged.length} targets met${failedNames.length > 0 ? ` (failed: ${failedNames.join(', ')})` : ''}; ` +
        `${rows.length - judged.length} reported without a target; results in ${RESULTS_FILE}\n`,
    );
  };
}
