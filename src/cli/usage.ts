// A mistake in the command line (a bad flag value, a missing flag): src/cli/main.ts prints
// its message on one line and exits 2, without the stack trace a bug would get.
export class UsageError extends Error {
  readonly code = 'ERR_RECSERVE_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
