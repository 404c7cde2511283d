// Command-line flags shared by every benchmark: `--quick` (a short run for CI and
// development) and `--json` (one JSON object on stdout instead of a table).
export interface BenchArgs {
  quick: boolean;
  json: boolean;
  /** `--name=value` and `--name value` pairs other than the two above. */
  options: Map<string, string>;
  /** Arguments that are not flags. */
  positional: string[];
}

export function parseBenchArgs(argv: string[] = process.argv.slice(2)): BenchArgs {
  const out: BenchArgs = { quick: false, json: false, options: new Map(), positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') out.quick = true;
    else if (a === '--json') out.json = true;
    else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) out.options.set(a.slice(2, eq), a.slice(eq + 1));
      else if (i + 1 < argv.length && !argv[i + 1].startsWith('--'))
        out.options.set(a.slice(2), argv[++i]);
      else out.options.set(a.slice(2), 'true');
    } else out.positional.push(a);
  }
  return out;
}

/** A numeric option with a default; throws naming the flag when it is not a number. */
export function numberOption(args: BenchArgs, name: string, dflt: number): number {
  const v = args.options.get(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new RangeError(`--${name} must be a number, got '${v}'`);
  return n;
}
