// The feedback ingestion path (see ingestor.ts): what transports call after validation.
export {
  FeedbackIngestor,
  fromWire,
  NEGATIVE_ACTIONS,
  replayLog,
  type FeedbackIngestorOptions,
  type IngestResult,
  type IngestorStats,
  type NegativeAction,
  type NegativeResult,
  type ReplayResult,
} from './ingestor.js';
export {
  EventLog,
  EventLogUnavailableError,
  type EventLogOptions,
  type EventLogStats,
  type LogRecord,
} from './event-log.js';
