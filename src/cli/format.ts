/** Text formatting shared by the reports the commands print. */

/** How long before `now` the instant `at` was: `4 s ago`, `12 min ago`, `3 h ago`, `2 d ago`. */
export function ago(at: string, now: string): string {
  const s = Math.max(0, Math.round((Date.parse(now) - Date.parse(at)) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172_800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} d ago`;
}

/** Rows as columns padded to their widest cell, two spaces apart, with `indent` before each line. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>, indent = ''): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows].map((cells) => `${indent}${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ')}`.trimEnd());
}
