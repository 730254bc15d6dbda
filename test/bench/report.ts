/** Vitest global setup for `npm run bench`: a fresh results file, and the table at the end. */
import { readResults, resetResults, RESULTS_FILE, table } from './results.js';

export default function setup(): () => void {
  resetResults();
  return () => {
    const rows = readResults();
    process.stdout.write(`\n${table(rows)}\n\n${rows.filter((r) => r.pass).length} of ${rows.length} targets met; results in ${RESULTS_FILE}\n`);
  };
}
