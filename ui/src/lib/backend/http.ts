// `driftless serve`: JSON over fetch, the live overview over Server-Sent Events.
//
// The launch token arrives once in the address (`/?token=T`). It is kept in sessionStorage
// (this tab only) and removed from the address bar, so it does not end up in bookmarks,
// screenshots or the history. fetch sends it as `Authorization: Bearer`; EventSource cannot
// send headers, so the stream gets it as `?token=`.

import { ApiFailure, CLIENT_CODES, isApiError, toApiError } from '../errors';
import type { ConnectKey } from '../types/ConnectKey';
import type { ConnectProperties } from '../types/ConnectProperties';
import type { ConnectSaved } from '../types/ConnectSaved';
import type { ConnectStep } from '../types/ConnectStep';
import type { WritesAnswer } from '../types/WritesAnswer';
import type { WritesRequest } from '../types/WritesRequest';
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
import type { Backend, LiveHandlers } from './backend';

export const TOKEN_KEY = 'driftless.token';

type LocationLike = Pick<Location, 'search' | 'pathname' | 'hash'>;
type HistoryLike = Pick<History, 'replaceState' | 'state'>;
type StorageLike = Pick<Storage, 'getItem' | 'setItem'>;

/**
 * Take `?token=` from the address (store it, then strip it from the address bar), or fall
 * back to the token stored by an earlier load of this tab. Null when there is none.
 */
export function takeToken(loc: LocationLike, storage: StorageLike | null, history: HistoryLike): string | null {
  const params = new URLSearchParams(loc.search);
  const fromUrl = params.get('token');
  if (fromUrl) {
    try {
      storage?.setItem(TOKEN_KEY, fromUrl);
    } catch {
      // Storage disabled: the token still works for this page load.
    }
    params.delete('token');
    const rest = params.toString();
    history.replaceState(history.state, '', `${loc.pathname}${rest ? `?${rest}` : ''}${loc.hash}`);
    return fromUrl;
  }
  try {
    return storage?.getItem(TOKEN_KEY) ?? null;
  } catch {
    return null;
  }
}

function sessionStorageOrNull(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

export type HttpOptions = {
  /** Origin of the engine, e.g. "http://127.0.0.1:4000" (no trailing slash). */
  base: string;
  token: string | null;
  fetch?: typeof fetch;
  EventSource?: typeof EventSource;
  /** First retry delay after the stream drops; doubles up to `maxRetryMs`. */
  retryMs?: number;
  maxRetryMs?: number;
};

/** `{code, message}` from a JSON text, or null when it is not one. */
export function parseApiError(text: string): ApiError | null {
  try {
    const parsed: unknown = JSON.parse(text);
    if (isApiError(parsed)) return { code: parsed.code, message: parsed.message };
  } catch {
    // not JSON
  }
  return null;
}

/** Turn a non-2xx answer into an ApiError, whatever its body looks like. */
export function errorFromResponse(status: number, statusText: string, body: string): ApiError {
  const parsed = parseApiError(body);
  if (parsed) return parsed;
  if (status === 401) return { code: 'unauthorized', message: 'missing or wrong token' };
  return { code: `http_${status}`, message: `HTTP ${status}${statusText ? ` ${statusText}` : ''}` };
}

export class HttpBackend implements Backend {
  readonly kind = 'http' as const;
  readonly where: string;
  private readonly base: string;
  private readonly token: string | null;
  private readonly fetchFn: typeof fetch;
  private readonly ES: typeof EventSource | undefined;
  private readonly retryMs: number;
  private readonly maxRetryMs: number;

  constructor(o: HttpOptions) {
    this.base = o.base.replace(/\/+$/, '');
    this.where = this.base;
    this.token = o.token;
    this.fetchFn = o.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.ES = o.EventSource ?? globalThis.EventSource;
    this.retryMs = o.retryMs ?? 1000;
    this.maxRetryMs = o.maxRetryMs ?? 10_000;
  }

  static fromLocation(): HttpBackend {
    const token = takeToken(window.location, sessionStorageOrNull(), window.history);
    return new HttpBackend({ base: window.location.origin, token });
  }

  hasToken(): boolean {
    return !!this.token;
  }

  private async request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    let text: string;
    try {
      res = await this.fetchFn(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
      text = await res.text();
    } catch (e) {
      throw new ApiFailure({ code: CLIENT_CODES.unreachable, message: toApiError(e).message });
    }
    if (!res.ok) throw new ApiFailure(errorFromResponse(res.status, res.statusText, text));
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiFailure({ code: CLIENT_CODES.badResponse, message: `not JSON: ${text.slice(0, 80)}` });
    }
  }

  overview(): Promise<Overview> {
    return this.request('GET', '/api/overview');
  }

  status(): Promise<Status> {
    return this.request('GET', '/api/status');
  }

  pauseOutbound(req: PauseRequest): Promise<PauseResult> {
    return this.request('POST', '/api/pause_outbound', req);
  }

  resumeOutbound(req: PauseRequest): Promise<PauseResult> {
    return this.request('POST', '/api/resume_outbound', req);
  }

  reconciliationState(): Promise<ReconciliationState> {
    return this.request('GET', '/api/reconciliation_state');
  }

  startReconcile(req: ReconcileAsk): Promise<ReconciliationState> {
    return this.request('POST', '/api/start_reconcile', req);
  }

  cancelReconcile(): Promise<ReconciliationState> {
    return this.request('POST', '/api/cancel_reconcile', {});
  }

  backfillState(): Promise<BackfillProgress> {
    return this.request('GET', '/api/backfill_state');
  }

  startBackfill(req: BackfillAsk): Promise<BackfillProgress> {
    return this.request('POST', '/api/start_backfill', req);
  }

  cancelBackfill(): Promise<BackfillProgress> {
    return this.request('POST', '/api/cancel_backfill', {});
  }

  migrationStatus(): Promise<MigrationMode | null> {
    return this.request('GET', '/api/migration_status');
  }

  validationReport(object: string): Promise<ValidationReport> {
    return this.request('GET', `/api/validation_report?object=${encodeURIComponent(object)}`);
  }

  listDeadLetters(f: DeadLetterFilter): Promise<DeadLetterList> {
    return this.request('POST', '/api/list_dead_letters', f);
  }

  retryDeadLetters(req: DeadLetterAction): Promise<BulkResult> {
    return this.request('POST', '/api/retry_dead_letters', req);
  }

  discardDeadLetters(req: DeadLetterAction): Promise<BulkResult> {
    return this.request('POST', '/api/discard_dead_letters', req);
  }

  recordTimeline(query: string): Promise<Timeline> {
    return this.request('GET', `/api/record_timeline?query=${encodeURIComponent(query)}`);
  }

  undropEvent(req: UndropRequest): Promise<RecordRef> {
    return this.request('POST', '/api/undrop_event', req);
  }

  replay(req: ReplayRequest): Promise<ReplayPreview> {
    return this.request('POST', '/api/replay', req);
  }

  listReviews(): Promise<ReviewItem[]> {
    return this.request('GET', '/api/list_reviews');
  }

  resolveReview(req: ReviewDecision): Promise<RecordRef> {
    return this.request('POST', '/api/resolve_review', req);
  }

  // -- Replay runs, the audit log and the contract.
  replayRun(id: number | null): Promise<ReplayRun | null> {
    return this.request('GET', `/api/replay_run${id == null ? '' : `?id=${id}`}`);
  }

  cancelReplay(id: number): Promise<ReplayRun> {
    return this.request('POST', '/api/cancel_replay', { id });
  }

  listAudit(f: AuditFilter): Promise<AuditList> {
    return this.request('POST', '/api/list_audit', f);
  }

  /** `/api/audit.csv` with the filter as query parameters (no paging: every matching row). */
  auditCsvPath(f: AuditFilter): string {
    const p = new URLSearchParams();
    for (const k of ['actor', 'action', 'record', 'text', 'from_ms', 'to_ms'] as const) {
      const v = f[k];
      if (v !== null && v !== undefined && `${v}` !== '') p.set(k, `${v}`);
    }
    const qs = p.toString();
    return `/api/audit.csv${qs ? `?${qs}` : ''}`;
  }

  auditCsv(f: AuditFilter): Promise<string> {
    return this.getText(this.auditCsvPath(f));
  }

  /** A text answer (CSV) of a GET, with the token as a header; errors as for JSON calls. */
  private async getText(path: string): Promise<string> {
    const headers: Record<string, string> = { Accept: 'text/csv' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let res: Response;
    let text: string;
    try {
      res = await this.fetchFn(`${this.base}${path}`, { method: 'GET', headers, cache: 'no-store', credentials: 'omit' });
      text = await res.text();
    } catch (e) {
      throw new ApiFailure({ code: CLIENT_CODES.unreachable, message: toApiError(e).message });
    }
    if (!res.ok) throw new ApiFailure(errorFromResponse(res.status, res.statusText, text));
    return text;
  }

  contractInfo(): Promise<ContractInfo> {
    return this.request('GET', '/api/contract_info');
  }

  // ---- Dead letters screen (issue 7) ----
  deadLetterDetail(id: number): Promise<DeadLetterDetail> {
    return this.request('GET', `/api/dead_letter_detail?id=${encodeURIComponent(String(id))}`);
  }

  exportDeadLetters(f: DeadLetterFilter): Promise<string> {
    return this.getText(exportPath(f));
  }

  exportDeadLettersUrl(f: DeadLetterFilter): string {
    const p = exportPath(f);
    return `${this.base}${p}${p.includes('?') ? '&' : '?'}token=${encodeURIComponent(this.token ?? '')}`;
  }

  // -- The reconciliation screen.
  reconcileRuns(limit: number | null): Promise<ReconRunSummary[]> {
    return this.request('GET', `/api/reconcile_runs${limit === null ? '' : `?limit=${limit}`}`);
  }

  reconcileReport(id: number): Promise<ReconcileReport> {
    return this.request('GET', `/api/reconcile_report?id=${id}`);
  }

  reconcileRepair(req: ReconRepairAsk): Promise<ReconcileReport> {
    return this.request('POST', '/api/reconcile_repair', req);
  }

  reconcileCsv(id: number): Promise<string> {
    return this.getText(`/api/reconcile.csv?id=${id}`);
  }

  streamUrl(): string {
    return `${this.base}/api/stream?token=${encodeURIComponent(this.token ?? '')}`;
  }

  /**
   * Follow `/api/stream`. When it drops, close it, ask `/api/overview` why (so a wrong token
   * or a stopped engine becomes a proper error), and reopen once the engine answers again,
   * retrying with a doubling delay.
   */
  // ---- Connect screen (issue 7) ----
  connectTest(req: ConnectKey): Promise<ConnectStep> {
    return this.request('POST', '/api/connect_test', req);
  }

  connectProperties(key: string, create: boolean): Promise<ConnectProperties> {
    return this.request('POST', '/api/connect_properties', { key, create });
  }

  connectSaveKey(req: ConnectKey): Promise<ConnectSaved> {
    return this.request('POST', '/api/connect_save_key', req);
  }

  setWrites(req: WritesRequest): Promise<WritesAnswer> {
    return this.request('POST', '/api/set_writes', req);
  }

  subscribe(h: LiveHandlers): () => void {
    const ES = this.ES;
    let es: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let stopped = false;
    let delay = this.retryMs;

    const open = () => {
      if (stopped) return;
      if (!ES) {
        // No EventSource (very old webview): poll instead.
        poll();
        return;
      }
      es = new ES(this.streamUrl());
      es.addEventListener('overview', (ev) => {
        delay = this.retryMs;
        try {
          h.overview(JSON.parse((ev as MessageEvent<string>).data) as Overview);
        } catch {
          h.error({ code: CLIENT_CODES.badResponse, message: 'the live stream sent something unreadable' });
        }
      });
      es.addEventListener('error', (ev) => {
        // Both the engine's own `error` events (with data) and connection failures
        // (without) arrive here.
        const data = (ev as MessageEvent).data;
        if (typeof data === 'string' && data.length > 0) {
          h.error(parseApiError(data) ?? { code: 'unknown', message: data });
          return;
        }
        es?.close();
        es = null;
        if (stopped) return;
        h.disconnected();
        probe();
      });
    };

    const probe = () => {
      if (stopped) return;
      this.overview().then(
        (o) => {
          if (stopped) return;
          h.overview(o);
          delay = this.retryMs;
          open();
        },
        (e) => {
          if (stopped) return;
          h.error(toApiError(e));
          timer = setTimeout(probe, delay);
          delay = Math.min(delay * 2, this.maxRetryMs);
        },
      );
    };

    const poll = () => {
      if (stopped) return;
      this.overview().then(
        (o) => !stopped && h.overview(o),
        (e) => !stopped && h.error(toApiError(e)),
      ).finally(() => {
        if (!stopped) timer = setTimeout(poll, 1000);
      });
    };

    open();
    return () => {
      stopped = true;
      es?.close();
      es = null;
      if (timer) clearTimeout(timer);
    };
  }
}

/** `/api/export_dead_letters?…`: the filter's set fields as query parameters (paging left out). */
export function exportPath(f: DeadLetterFilter): string {
  const p = new URLSearchParams();
  const put = (k: string, v: string | number | boolean | null | undefined) => {
    if (v !== null && v !== undefined && v !== '' && v !== false) p.set(k, String(v));
  };
  put('destination', f.destination);
  put('error_class', f.error_class);
  put('object', f.object);
  put('min_age_ms', f.min_age_ms);
  put('max_age_ms', f.max_age_ms);
  put('text', f.text);
  put('include_resolved', f.include_resolved);
  const qs = p.toString();
  return `/api/export_dead_letters${qs ? `?${qs}` : ''}`;
}
