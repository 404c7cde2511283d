// The `recserve` command line. Each subcommand lives in its own module and is imported
// lazily, so `recserve help` starts instantly and loads neither ONNX Runtime nor the addon.
type Command = { summary: string; run: (args: string[]) => Promise<number | void> };

const commands: Record<string, Command> = {
  help: {
    summary: 'list the commands',
    run: async () => {
      printHelp();
    },
  },
  serve: {
    summary: 'serve /v1 over HTTP and gRPC (builds the addon and demo models when missing)',
    run: async (args) => (await import('./serve.js')).run(args),
  },
  'build-demo': {
    summary: 'build the demo model repository from synthetic data (--if-missing)',
    run: async (args) => (await import('./build.js')).buildDemoCommand(args),
  },
  build: {
    summary: 'train a bundle (synthetic, MovieLens or CSV/JSONL files) into a new version',
    run: async (args) => (await import('./build.js')).buildCommand(args),
  },
  'import-ranker': {
    summary: 'drop an ONNX ranker from another tool into a new model version',
    run: async (args) => (await import('./build.js')).importRankerCommand(args),
  },
  eval: {
    summary: 'offline evaluation: popularity, item-kNN, ALS, ALS + ranker (--json)',
    run: async (args) => (await import('./eval.js')).evalCommand(args),
  },
  features: {
    summary: 'list the ranker features a model config may name',
    run: async () => {
      console.log((await import('../features/catalog.js')).describeFeatures().join('\n'));
    },
  },
};

// Help asked for goes to stdout; help after a mistake goes to stderr with the error.
function printHelp(out: (text: string) => void = console.log): void {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(14)} ${c.summary}`);
  out(`usage: recserve <command> [options]\n\ncommands:\n${lines.join('\n')}`);
}

export function registerCommand(name: string, command: Command): void {
  commands[name] = command;
}

async function main(argv: string[]): Promise<number> {
  const [name = 'help', ...rest] = argv;
  const command = commands[name];
  if (!command) {
    console.error(`recserve: unknown command '${name}'`);
    printHelp(console.error);
    return 2;
  }
  try {
    const code = await command.run(rest);
    return typeof code === 'number' ? code : 0;
  } catch (err) {
    // A mistyped flag is the caller's mistake, not a bug: one line naming the command and
    // the flag, exit status 2 like other usage errors, no stack trace.
    if (isUsageError(err)) {
      console.error(`recserve ${name}: ${err.message} (see 'recserve help')`);
      return 2;
    }
    throw err;
  }
}

// node:util parseArgs reports unknown options, missing values and stray positionals with
// ERR_PARSE_ARGS_* codes; our own flag checks throw UsageError (src/cli/usage.ts).
function isUsageError(err: unknown): err is Error {
  const code = (err as { code?: unknown } | null)?.code;
  return (
    err instanceof Error &&
    typeof code === 'string' &&
    (code.startsWith('ERR_PARSE_ARGS_') || code === 'ERR_RECSERVE_USAGE')
  );
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exitCode = 1;
  },
);
