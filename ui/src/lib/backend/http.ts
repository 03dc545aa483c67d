// `driftless serve`: JSON over fetch, the live overview over Server-Sent Events.
//
// The launch token arrives once in the address (`/?token=T`). It is kept in sessionStorage
// (this tab only) and removed from the address bar, so it does not end up in bookmarks,
// screenshots or the history. fetch sends it as `Authorization: Bearer`; EventSource cannot
// send headers, so the stream gets it as `?token=`.

import { ApiFailure, CLIENT_CODES, isApiError, toApiError } from '../errors';
import type { ApiError } from '../types/ApiError';
import {
  OPERATION_KINDS,
  OperationCalls,
  type OperationAnswer,
  type OperationName,
  type OperationRequest,
} from '../types/operations';
import type { Overview } from '../types/Overview';
import type { Backend, CsvOperation, LiveHandlers } from './backend';

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

export class HttpBackend extends OperationCalls implements Backend {
  readonly kind = 'http' as const;
  readonly where: string;
  private readonly base: string;
  private readonly token: string | null;
  private readonly fetchFn: typeof fetch;
  private readonly ES: typeof EventSource | undefined;
  private readonly retryMs: number;
  private readonly maxRetryMs: number;

  constructor(o: HttpOptions) {
    super();
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

  /**
   * One operation: a read or a CSV export is a GET with the request's fields as query
   * parameters, a write a POST with the request as its JSON body.
   */
  call<K extends OperationName>(name: K, request: OperationRequest<K>): Promise<OperationAnswer<K>> {
    const kind = OPERATION_KINDS[name];
    const path = `/api/${name}`;
    if (kind === 'write') return this.request('POST', path, request);
    const q = queryString(request as Record<string, unknown>);
    if (kind === 'csv') return this.getText(`${path}${q}`) as Promise<OperationAnswer<K>>;
    return this.request('GET', `${path}${q}`);
  }

  /** A CSV export's address for a download link: the token rides in the query (`?token=`). */
  csvUrl<K extends CsvOperation>(name: K, request: OperationRequest<K>): string {
    const q = queryString(request as Record<string, unknown>);
    return `${this.base}/api/${name}${q}${q ? '&' : '?'}token=${encodeURIComponent(this.token ?? '')}`;
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

  streamUrl(): string {
    return `${this.base}/api/stream?token=${encodeURIComponent(this.token ?? '')}`;
  }

  /**
   * Follow `/api/stream`. When it drops, close it, ask `/api/overview` why (so a wrong token
   * or a stopped engine becomes a proper error), and reopen once the engine answers again,
   * retrying with a doubling delay.
   */
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

/**
 * A request's fields as a query string (`?a=1&b=x`, or empty): fields that are null, empty,
 * `false` or lists are left out (the engine's defaults; a query string carries no lists).
 */
export function queryString(request: Record<string, unknown>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(request ?? {})) {
    if (v === null || v === undefined || v === '' || v === false || Array.isArray(v) || typeof v === 'object') continue;
    p.set(k, String(v));
  }
  const qs = p.toString();
  return qs ? `?${qs}` : '';
}
