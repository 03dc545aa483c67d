// The console talks to the engine through this one interface. Two implementations: `tauri.ts`
// (the desktop window: invoke + events) and `http.ts` (`driftless serve`: fetch + SSE). Every
// method rejects with an `ApiFailure` ({code, message}); see ../errors.ts for the words.

import type { ApiError } from '../types/ApiError';
import type { BackfillAsk } from '../types/BackfillAsk';
import type { BackfillProgress } from '../types/BackfillProgress';
import type { MigrationMode } from '../types/MigrationMode';
import type { Overview } from '../types/Overview';
import type { PauseRequest } from '../types/PauseRequest';
import type { PauseResult } from '../types/PauseResult';
import type { ReconcileAsk } from '../types/ReconcileAsk';
import type { ReconciliationState } from '../types/ReconciliationState';
import type { Status } from '../types/Status';
import type { ValidationReport } from '../types/ValidationReport';

export type LiveHandlers = {
  /** A fresh overview (about once a second). */
  overview: (o: Overview) => void;
  /** The engine answered with an error, or could not be reached. */
  error: (e: ApiError) => void;
  /** The live connection dropped; it is being re-established. */
  disconnected: () => void;
};

export interface Backend {
  readonly kind: 'tauri' | 'http';
  /** Where the engine is, for messages ("http://127.0.0.1:4000", "the desktop app"). */
  readonly where: string;
  overview(): Promise<Overview>;
  status(): Promise<Status>;
  pauseOutbound(req: PauseRequest): Promise<PauseResult>;
  resumeOutbound(req: PauseRequest): Promise<PauseResult>;
  /** The reconciliation going on (if any) and the last finished run's report. */
  reconciliationState(): Promise<ReconciliationState>;
  /** Start one in the background (rejects with `busy` while one runs). */
  startReconcile(req: ReconcileAsk): Promise<ReconciliationState>;
  /** Stop the running one at its next page; it stays resumable. */
  cancelReconcile(): Promise<ReconciliationState>;
  backfillState(): Promise<BackfillProgress>;
  startBackfill(req: BackfillAsk): Promise<BackfillProgress>;
  cancelBackfill(): Promise<BackfillProgress>;
  /** Migration mode while active, else null. */
  migrationStatus(): Promise<MigrationMode | null>;
  validationReport(object: string): Promise<ValidationReport>;
  /** Start receiving live overviews; returns a function that stops. */
  subscribe(handlers: LiveHandlers): () => void;
}
