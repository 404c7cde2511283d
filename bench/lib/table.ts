// Prints rows as an aligned plain-text table (numbers right-aligned), for benchmark output.
export type Cell = string | number | boolean | null | undefined;

function fmt(v: Cell): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(4);
  }
  return String(v);
}

export function formatTable(columns: string[], rows: Cell[][]): string {
  const cells = rows.map((r) => columns.map((_, i) => fmt(r[i])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i].length)));
  const numeric = columns.map((_, i) =>
    rows.every((r) => r[i] == null || typeof r[i] === 'number'),
  );
  const line = (r: string[]): string =>
    r.map((s, i) => (numeric[i] ? s.padStart(widths[i]) : s.padEnd(widths[i]))).join('  ');
  return [line(columns), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join(
    '\n',
  );
}

export function printTable(columns: string[], rows: Cell[][]): void {
  console.log(formatTable(columns, rows));
}
