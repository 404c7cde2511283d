// One pino logger per process. JSON lines on stdout (what log shippers expect); the level
// comes from the config. Modules take child loggers so every line says where it came from.
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger | undefined;

export function createLogger(level = 'info'): Logger {
  root = pino({ level, base: { service: 'recserve' } });
  return root;
}

/** The process logger; a silent one until createLogger runs (tests, library use). */
export function logger(): Logger {
  if (!root) root = pino({ level: 'silent' });
  return root;
}
