// The console talks to the engine through this one interface. Two implementations: `tauri.ts`
// (the desktop window: invoke + events) and `http.ts` (`driftless serve`: fetch + SSE). Every
// method rejects with an `ApiFailure` ({code, message}); see ../errors.ts for the words.

import type { ApiError } from '../types/ApiError';
import type { AuditFilter } from '../types/AuditFilter';
import type { AuditList } from '../types/AuditList';
import type { ContractInfo } from '../types/ContractInfo';
import type { ReplayRun } from '../types/ReplayRun';
import type { BulkResult } from '../types/BulkResult';
import type { DeadLetterAction } from '../types/DeadLetterAction';
import type { DeadLetterFilter } from '../types/DeadLetterFilter';
import type { DeadLetterList } from '../types/DeadLetterList';
import type { RecordRef } from '../types/RecordRef';
import type { ReplayPreview } from '../types/ReplayPreview';
import type { ReplayRequest } from '../types/ReplayRequest';
import type { ReviewDecision } from '../types/ReviewDecision';
import type { ReviewItem } from '../types/ReviewItem';
import type { Timeline } from '../types/Timeline';
import type { UndropRequest } from '../types/UndropRequest';
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
import type { DeadLetterDetail } from '../types/DeadLetterDetail';
import type { ReconRepairAsk } from '../types/ReconRepairAsk';
import type { ReconRunSummary } from '../types/ReconRunSummary';
import type { ReconcileReport } from '../types/ReconcileReport';
import type { ConnectKey } from '../types/ConnectKey';
import type { ConnectProperties } from '../types/ConnectProperties';
import type { ConnectSaved } from '../types/ConnectSaved';
import type { ConnectStep } from '../types/ConnectStep';
import type { WritesAnswer } from '../types/WritesAnswer';
import type { WritesRequest } from '../types/WritesRequest';

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
  /** Dead letters matching a filter (newest first), with the total. */
  listDeadLetters(f: DeadLetterFilter): Promise<DeadLetterList>;
  /** Retry the filtered dead letters, or (dry run) measure the blast radius. */
  retryDeadLetters(req: DeadLetterAction): Promise<BulkResult>;
  /** Discard the filtered dead letters with a reason, or (dry run) measure the blast radius. */
  discardDeadLetters(req: DeadLetterAction): Promise<BulkResult>;
  /** A record's causal timeline by email, CRM id, billing id or record key. */
  recordTimeline(query: string): Promise<Timeline>;
  undropEvent(req: UndropRequest): Promise<RecordRef>;
  /** The replay preview (dry run) or the run; rejects with `paused` while paused. */
  replay(req: ReplayRequest): Promise<ReplayPreview>;
  listReviews(): Promise<ReviewItem[]>;
  resolveReview(req: ReviewDecision): Promise<RecordRef>;
  // -- Replay runs, the audit log and the contract (Replay, Audit log, Contract screens).
  /** A replay run with its progress (null id: the latest; null when none ever ran). */
  replayRun(id: number | null): Promise<ReplayRun | null>;
  /** Cancel a replay run: records no worker has claimed yet leave the queue. */
  cancelReplay(id: number): Promise<ReplayRun>;
  /** Audit rows matching a filter (newest first, one page), with the total. */
  listAudit(f: AuditFilter): Promise<AuditList>;
  /** The whole filtered audit log as CSV text. */
  auditCsv(f: AuditFilter): Promise<string>;
  /** The contract in force, its ownership matrix and the file re-validated now. */
  contractInfo(): Promise<ContractInfo>;
  // ---- Dead letters screen (issue 7) ----
  /** One dead letter with its request, response, history and the events behind it. */
  deadLetterDetail(id: number): Promise<DeadLetterDetail>;
  /** The filtered dead letters as CSV text (the whole set; limit/offset ignored). */
  exportDeadLetters(f: DeadLetterFilter): Promise<string>;
  /** A download address that streams the filtered set as CSV, when the backend has one (HTTP). */
  exportDeadLettersUrl(f: DeadLetterFilter): string | null;
  // -- The reconciliation screen.
  /** Finished reconciliation runs with their rates, newest first (limit 1 to 500; 100). */
  reconcileRuns(limit: number | null): Promise<ReconRunSummary[]>;
  /** One run's report: mismatches with both values, by field and by rule. */
  reconcileReport(id: number): Promise<ReconcileReport>;
  /** Preview (dry run) or queue the repair of the latest finished run's records, or send them to review. */
  reconcileRepair(req: ReconRepairAsk): Promise<ReconcileReport>;
  /** A run's mismatches as CSV text. */
  reconcileCsv(id: number): Promise<string>;
  // ---- Connect screen (issue 7). A key travels only in the request, never comes back. ----
  /** Test a key read-only against the system the contract configures (`ok: false` + the reason). */
  connectTest(req: ConnectKey): Promise<ConnectStep>;
  /** The CRM properties the contract needs (which exist); `create`: make the missing ones first. */
  connectProperties(key: string, create: boolean): Promise<ConnectProperties>;
  /** Test, store in the keychain (or name the env var), point the contract file at it, observe mode on. */
  connectSaveKey(req: ConnectKey): Promise<ConnectSaved>;
  /** Observe mode: writes off, or the held writes previewed (`confirm: false`) / sent. */
  setWrites(req: WritesRequest): Promise<WritesAnswer>;
  /** Start receiving live overviews; returns a function that stops. */
  subscribe(handlers: LiveHandlers): () => void;
}
