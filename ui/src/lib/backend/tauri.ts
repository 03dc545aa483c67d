// The desktop window: commands via `invoke`, the live overview via the `overview` event.

import { invoke } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';

import { ApiFailure, toApiError } from '../errors';
import type { ConnectKey } from '../types/ConnectKey';
import type { ConnectProperties } from '../types/ConnectProperties';
import type { ConnectSaved } from '../types/ConnectSaved';
import type { ConnectStep } from '../types/ConnectStep';
import type { WritesAnswer } from '../types/WritesAnswer';
import type { WritesRequest } from '../types/WritesRequest';
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
import type { ReconcileAsk } from '../types/ReconcileAsk';
import type { ReconciliationState } from '../types/ReconciliationState';
import type { ValidationReport } from '../types/ValidationReport';
import type { DeadLetterDetail } from '../types/DeadLetterDetail';
import type { ReconRepairAsk } from '../types/ReconRepairAsk';
import type { ReconRunSummary } from '../types/ReconRunSummary';
import type { ReconcileReport } from '../types/ReconcileReport';
import type { Overview } from '../types/Overview';
import type { PauseRequest } from '../types/PauseRequest';
import type { PauseResult } from '../types/PauseResult';
import type { Status } from '../types/Status';
import type { AuditFilter } from '../types/AuditFilter';
import type { AuditList } from '../types/AuditList';
import type { ContractInfo } from '../types/ContractInfo';
import type { ReplayRun } from '../types/ReplayRun';
import type { Backend, LiveHandlers } from './backend';

async function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(cmd, args);
  } catch (e) {
    throw new ApiFailure(toApiError(e));
  }
}

export class TauriBackend implements Backend {
  readonly kind = 'tauri' as const;
  readonly where = 'the desktop app';

  overview(): Promise<Overview> {
    return call('overview');
  }

  status(): Promise<Status> {
    return call('status');
  }

  pauseOutbound(req: PauseRequest): Promise<PauseResult> {
    return call('pause_outbound', { req });
  }

  resumeOutbound(req: PauseRequest): Promise<PauseResult> {
    return call('resume_outbound', { req });
  }

  reconciliationState(): Promise<ReconciliationState> {
    return call('reconciliation_state');
  }

  startReconcile(req: ReconcileAsk): Promise<ReconciliationState> {
    return call('start_reconcile', { req });
  }

  cancelReconcile(): Promise<ReconciliationState> {
    return call('cancel_reconcile');
  }

  backfillState(): Promise<BackfillProgress> {
    return call('backfill_state');
  }

  startBackfill(req: BackfillAsk): Promise<BackfillProgress> {
    return call('start_backfill', { req });
  }

  cancelBackfill(): Promise<BackfillProgress> {
    return call('cancel_backfill');
  }

  migrationStatus(): Promise<MigrationMode | null> {
    return call('migration_status');
  }

  validationReport(object: string): Promise<ValidationReport> {
    return call('validation_report', { object });
  }

  listDeadLetters(f: DeadLetterFilter): Promise<DeadLetterList> {
    return call('list_dead_letters', { req: f });
  }

  retryDeadLetters(req: DeadLetterAction): Promise<BulkResult> {
    return call('retry_dead_letters', { req });
  }

  discardDeadLetters(req: DeadLetterAction): Promise<BulkResult> {
    return call('discard_dead_letters', { req });
  }

  // ---- Dead letters screen (issue 7) ----
  deadLetterDetail(id: number): Promise<DeadLetterDetail> {
    return call('dead_letter_detail', { id });
  }

  exportDeadLetters(f: DeadLetterFilter): Promise<string> {
    return call('export_dead_letters', { req: f });
  }

  /** The window has no download address: the screen saves `exportDeadLetters`' text. */
  exportDeadLettersUrl(): null {
    return null;
  }

  recordTimeline(query: string): Promise<Timeline> {
    return call('record_timeline', { query });
  }

  undropEvent(req: UndropRequest): Promise<RecordRef> {
    return call('undrop_event', { req });
  }

  replay(req: ReplayRequest): Promise<ReplayPreview> {
    return call('replay', { req });
  }

  listReviews(): Promise<ReviewItem[]> {
    return call('list_reviews');
  }

  resolveReview(req: ReviewDecision): Promise<RecordRef> {
    return call('resolve_review', { req });
  }

  // -- Replay runs, the audit log and the contract.
  replayRun(id: number | null): Promise<ReplayRun | null> {
    return call('replay_run', { id });
  }

  cancelReplay(id: number): Promise<ReplayRun> {
    return call('cancel_replay', { req: { id } });
  }

  listAudit(filter: AuditFilter): Promise<AuditList> {
    return call('list_audit', { filter });
  }

  auditCsv(filter: AuditFilter): Promise<string> {
    return call('audit_csv', { filter });
  }

  contractInfo(): Promise<ContractInfo> {
    return call('contract_info');
  }

  // -- The reconciliation screen.
  reconcileRuns(limit: number | null): Promise<ReconRunSummary[]> {
    return call('reconcile_runs', { limit });
  }

  reconcileReport(id: number): Promise<ReconcileReport> {
    return call('reconcile_report', { id });
  }

  reconcileRepair(req: ReconRepairAsk): Promise<ReconcileReport> {
    return call('reconcile_repair', { req });
  }

  reconcileCsv(id: number): Promise<string> {
    return call('reconcile_csv', { id });
  }

  // ---- Connect screen (issue 7) ----
  connectTest(req: ConnectKey): Promise<ConnectStep> {
    return call('connect_test', { req });
  }

  connectProperties(key: string, create: boolean): Promise<ConnectProperties> {
    return call('connect_properties', { req: { key, create } });
  }

  connectSaveKey(req: ConnectKey): Promise<ConnectSaved> {
    return call('connect_save_key', { req });
  }

  setWrites(req: WritesRequest): Promise<WritesAnswer> {
    return call('set_writes', { req });
  }

  subscribe(h: LiveHandlers): () => void {
    let stopped = false;
    let unlisten: (() => void) | null = null;
    listen<Overview>('overview', (ev) => {
      if (!stopped) h.overview(ev.payload);
    })
      .then((u) => {
        if (stopped) u();
        else unlisten = u;
      })
      .catch((e) => h.error(toApiError(e)));
    // The first event may be up to a second away: ask once now.
    this.overview()
      .then((o) => !stopped && h.overview(o))
      .catch((e) => !stopped && h.error(toApiError(e)));
    return () => {
      stopped = true;
      unlisten?.();
    };
  }
}
