/**
 * A front end could not listen (port in use, an address this host does not have): a user's
 * setting, which `recserve serve` reports in one line and exit code 1, not with a stack.
 */
export class ListenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ListenError';
  }
}
