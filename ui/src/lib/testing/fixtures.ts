// A plausible Overview for tests (shape from the generated types).

import { vi } from 'vitest';

import type { Alert } from '../types/Alert';
import type { Overview } from '../types/Overview';
import type { ReconciliationState } from '../types/ReconciliationState';
import type { PauseFlag } from '../types/PauseFlag';
import type { AuditList } from '../types/AuditList';
import type { ContractInfo } from '../types/ContractInfo';
import type { ReplayRun } from '../types/ReplayRun';
import type { ReconRunSummary } from '../types/ReconRunSummary';
import type { ReconcileReport } from '../types/ReconcileReport';
import type { ReconRepairAsk } from '../types/ReconRepairAsk';
import type { ReconRunRef } from '../types/ReconRunRef';
import type { ReplayRunQuery } from '../types/ReplayRunQuery';
import type { ReplayRunRef } from '../types/ReplayRunRef';
import type { RunsLimit } from '../types/RunsLimit';

export function makeOverview(
  over: { paused?: PauseFlag[]; events_total?: number; at?: number; alerts?: Alert[] } = {},
): Overview {
  const paused = over.paused ?? [];
  return {
    generated_at_ms: over.at ?? 1_700_000_000_000,
    health: paused.length
      ? { state: 'paused', reasons: ['all outbound writes paused by operator:console: maintenance'] }
      : { state: 'running', reasons: [] },
    status: {
      contract_version: 'v1',
      events: { pending: 3, applied: 120, duplicate: 7, echo: 40, superseded: 2, conflicted: 1, dead_lettered: 0 },
      events_total: over.events_total ?? 180,
      distinct_events: 173,
      writes: {
        crm: { done: 60, pending: 2, dead_lettered: 0 },
        billing: { done: 58, pending: 1, dead_lettered: 1 },
      },
      queue_depth: 3,
      dead_letter_depth: 1,
      review_depth: 1,
      lag_ms: { samples: 120, p50: 210, p95: 1480, max: 5022 },
      paused,
      observe: null,
      held_writes: { crm: 0, billing: 0 },
      pollers: [],
      crm_write_calls: { records: 0, calls: 0, mean_records: 0, max_records: 0 },
      backfill: null,
      migration: null,
      budgets: [],
      reconciliation: null,
    },
    charts: [],
    reconciliation: { last_run: null, message: 'no reconciliation run yet' },
    systems: {
      demo: true,
      crm: { kind: 'hubspot', base_url: 'http://127.0.0.1:1', reachable: true, last_error: null },
      billing: { kind: 'stripe', base_url: 'http://127.0.0.1:2', reachable: true, last_error: null },
    },
    alerts: over.alerts ?? [],
  };
}

/** A reconciliation state for tests: nothing run yet unless `over` says otherwise. */
export function makeReconciliationState(over: Partial<ReconciliationState> = {}): ReconciliationState {
  return { running: false, cancelling: false, current: null, last: null, last_error: null, schedule: 'nightly', ...over };
}

/** The backend's operations beyond the overview (runs, dead letters, replay, review, timeline) as mocks, for fake backends. */
export function stubRuns() {
  return {
    reconciliationState: vi.fn(async () => makeReconciliationState()),
    startReconcile: vi.fn(async () => makeReconciliationState({ running: true })),
    cancelReconcile: vi.fn(async () => makeReconciliationState()),
    backfillState: vi.fn(async () => ({ run: null, pages_left: null, eta_ms: null, eta_covers: null, records_to_sync: null, job_running: false, last_error: null })),
    startBackfill: vi.fn(),
    cancelBackfill: vi.fn(),
    migrationStatus: vi.fn(async () => null),
    validationReport: vi.fn(),
    listDeadLetters: vi.fn(async () => ({ total: 0, items: [] })),
    retryDeadLetters: vi.fn(),
    discardDeadLetters: vi.fn(),
    recordTimeline: vi.fn(),
    undropEvent: vi.fn(),
    replay: vi.fn(),
    listReviews: vi.fn(async () => []),
    resolveReview: vi.fn(),
    // Replay runs, the audit log and the contract.
    replayRun: vi.fn(async (_req: ReplayRunQuery): Promise<ReplayRun | null> => null),
    cancelReplay: vi.fn<(req: ReplayRunRef) => Promise<ReplayRun>>(),
    listAudit: vi.fn(async (): Promise<AuditList> => ({ total: 0, items: [], record: null })),
    auditCsv: vi.fn(async (): Promise<string> => ''),
    contractInfo: vi.fn<() => Promise<ContractInfo>>(),
    // Dead letters screen (issue 7)
    deadLetterDetail: vi.fn(),
    exportDeadLetters: vi.fn(async () => ''),
    csvUrl: vi.fn(() => null),
    // Every call goes through a named method in the fakes; `call` itself is never reached.
    call: vi.fn(),
    // The reconciliation screen.
    reconcileRuns: vi.fn(async (_req: RunsLimit): Promise<ReconRunSummary[]> => []),
    reconcileReport: vi.fn<(req: ReconRunRef) => Promise<ReconcileReport>>(),
    reconcileRepair: vi.fn<(req: ReconRepairAsk) => Promise<ReconcileReport>>(),
    reconcileCsv: vi.fn(async (_req: ReconRunRef): Promise<string> => ''),
    // Connect screen (issue 7)
    connectTest: vi.fn(),
    connectProperties: vi.fn(),
    connectSaveKey: vi.fn(),
    setWrites: vi.fn(),
  };
}
