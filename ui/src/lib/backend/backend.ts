// The console talks to the engine through this one interface. Two implementations: `tauri.ts`
// (the desktop window: invoke + events) and `http.ts` (`driftless serve`: fetch + SSE). Every
// method rejects with an `ApiFailure` ({code, message}); see ../errors.ts for the words.

import type { ApiError } from '../types/ApiError';
import type { OperationCalls, OperationName, OperationRequest, Operations } from '../types/operations';
import type { Overview } from '../types/Overview';


export type LiveHandlers = {
  /** A fresh overview (about once a second). */
  overview: (o: Overview) => void;
  /** The engine answered with an error, or could not be reached. */
  error: (e: ApiError) => void;
  /** The live connection dropped; it is being re-established. */
  disconnected: () => void;
};

/** The CSV exports (`csv` operations). */
export type CsvOperation = {
  [K in OperationName]: Operations[K]['kind'] extends 'csv' ? K : never;
}[OperationName];

/**
 * Every operation of the engine's operations table, as a method (generated from
 * src/operations.rs into ../types/operations.ts), plus the live stream. The implementations
 * differ only in `call` (one HTTP request, or one `operation` command in the window).
 */
export interface Backend extends OperationCalls {
  readonly kind: 'tauri' | 'http';
  /** Where the engine is, for messages ("http://127.0.0.1:4000", "the desktop app"). */
  readonly where: string;
  /** A download address that streams a CSV export, when the backend has one (HTTP). */
  csvUrl<K extends CsvOperation>(name: K, request: OperationRequest<K>): string | null;
  /** Start receiving live overviews; returns a function that stops. */
  subscribe(handlers: LiveHandlers): () => void;
}
