import { afterEach, describe, expect, it, vi } from 'vitest';

import { ApiFailure, CLIENT_CODES } from '../errors';
import { makeOverview } from '../testing/fixtures';
import type { ApiError } from '../types/ApiError';
import { errorFromResponse, HttpBackend, takeToken, TOKEN_KEY } from './http';

function memoryStorage(init: Record<string, string> = {}) {
  const m = new Map(Object.entries(init));
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    m,
  };
}

function fakeHistory() {
  return { state: null, replaceState: vi.fn() };
}

describe('takeToken', () => {
  it('takes ?token=, stores it and strips it from the address bar (keeping the rest)', () => {
    const storage = memoryStorage();
    const history = fakeHistory();
    const t = takeToken({ search: '?a=1&token=abc123&b=2', pathname: '/', hash: '#x' }, storage, history);
    expect(t).toBe('abc123');
    expect(storage.m.get(TOKEN_KEY)).toBe('abc123');
    expect(history.replaceState).toHaveBeenCalledWith(null, '', '/?a=1&b=2#x');
  });

  it('leaves a bare path when the token was the only parameter', () => {
    const history = fakeHistory();
    takeToken({ search: '?token=t', pathname: '/', hash: '' }, memoryStorage(), history);
    expect(history.replaceState).toHaveBeenCalledWith(null, '', '/');
  });

  it('falls back to the token stored by an earlier load (reload after stripping)', () => {
    const history = fakeHistory();
    const t = takeToken({ search: '', pathname: '/', hash: '' }, memoryStorage({ [TOKEN_KEY]: 'kept' }), history);
    expect(t).toBe('kept');
    expect(history.replaceState).not.toHaveBeenCalled();
  });

  it('prefers a new token in the address over a stored one', () => {
    const storage = memoryStorage({ [TOKEN_KEY]: 'old' });
    expect(takeToken({ search: '?token=new', pathname: '/', hash: '' }, storage, fakeHistory())).toBe('new');
    expect(storage.m.get(TOKEN_KEY)).toBe('new');
  });

  it('returns null with no token anywhere, and survives broken storage', () => {
    expect(takeToken({ search: '', pathname: '/', hash: '' }, memoryStorage(), fakeHistory())).toBeNull();
    const broken = {
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('denied');
      },
    };
    expect(takeToken({ search: '', pathname: '/', hash: '' }, broken, fakeHistory())).toBeNull();
    expect(takeToken({ search: '?token=z', pathname: '/', hash: '' }, broken, fakeHistory())).toBe('z');
  });
});

function jsonResponse(status: number, body: unknown, statusText = ''): Response {
  return new Response(typeof body === 'string' ? body : JSON.stringify(body), {
    status,
    statusText,
    headers: { 'Content-Type': 'application/json' },
  });
}

async function rejection(p: Promise<unknown>): Promise<ApiFailure> {
  try {
    await p;
  } catch (e) {
    return e as ApiFailure;
  }
  throw new Error('expected a rejection');
}

describe('HttpBackend requests', () => {
  it('sends the token as a Bearer header and parses JSON', async () => {
    const ov = makeOverview();
    const fetch = vi.fn(async () => jsonResponse(200, ov));
    const b = new HttpBackend({ base: 'http://127.0.0.1:4000/', token: 'tok', fetch });
    await expect(b.overview()).resolves.toEqual(ov);
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('http://127.0.0.1:4000/api/overview');
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer tok');
    expect(init.method).toBe('GET');
  });

  it('posts pause requests as JSON', async () => {
    const fetch = vi.fn(async () => jsonResponse(200, { scope: 'crm', paused: true, changed: true }));
    const b = new HttpBackend({ base: 'http://h', token: 't', fetch });
    await expect(b.pauseOutbound({ scope: 'crm', reason: 'maintenance' })).resolves.toEqual({
      scope: 'crm',
      paused: true,
      changed: true,
    });
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('http://h/api/pause_outbound');
    expect(init.method).toBe('POST');
    expect(JSON.parse(init.body as string)).toEqual({ scope: 'crm', reason: 'maintenance' });
    expect((init.headers as Record<string, string>)['Content-Type']).toBe('application/json');
  });

  it('sends no Authorization header without a token', async () => {
    const fetch = vi.fn(async () => jsonResponse(401, { code: 'unauthorized', message: 'missing or wrong token' }));
    const b = new HttpBackend({ base: 'http://h', token: null, fetch });
    const e = await rejection(b.status());
    expect(e).toBeInstanceOf(ApiFailure);
    expect(e.code).toBe('unauthorized');
    const [, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect((init.headers as Record<string, string>).Authorization).toBeUndefined();
  });

  it('asks for reconciliation runs, a report, a repair and the CSV at their routes', async () => {
    const fetch = vi.fn(async (url: string, _init?: RequestInit) =>
      url.includes('_csv') ? new Response('run,record\n', { status: 200, headers: { 'Content-Type': 'text/csv' } }) : jsonResponse(200, []),
    );
    const b = new HttpBackend({ base: 'http://h', token: 't', fetch: fetch as unknown as typeof globalThis.fetch });
    await b.reconcileRuns({ limit: 20 });
    await b.reconcileRuns({ limit: null });
    await b.reconcileReport({ id: 7 });
    await b.reconcileRepair({ run_id: 7, records: ['all'], review: [], dry_run: true });
    await expect(b.reconcileCsv({ id: 7 })).resolves.toBe('run,record\n');
    const calls = fetch.mock.calls.map((c) => [c[0], c[1]?.method]);
    expect(calls).toEqual([
      ['http://h/api/reconcile_runs?limit=20', 'GET'],
      ['http://h/api/reconcile_runs', 'GET'],
      ['http://h/api/reconcile_report?id=7', 'GET'],
      ['http://h/api/reconcile_repair', 'POST'],
      ['http://h/api/reconcile_csv?id=7', 'GET'],
    ]);
  });

  it('turns a refused CSV export into the engine error', async () => {
    const fetch = vi.fn(async () => jsonResponse(404, { code: 'not_found', message: 'not found: reconciliation run 9' }));
    const b = new HttpBackend({ base: 'http://h', token: 't', fetch });
    const e = await rejection(b.reconcileCsv({ id: 9 }));
    expect(e.code).toBe('not_found');
  });

  it('passes the engine error {code, message} through', async () => {
    const fetch = vi.fn(async () => jsonResponse(503, { code: 'ledger_locked', message: 'database is locked' }));
    const b = new HttpBackend({ base: 'http://h', token: 't', fetch });
    const e = await rejection(b.overview());
    expect({ code: e.code, message: e.message }).toEqual({ code: 'ledger_locked', message: 'database is locked' });
  });

  it('turns a refused connection into engine_unreachable', async () => {
    const fetch = vi.fn(async () => {
      throw new TypeError('Failed to fetch');
    });
    const b = new HttpBackend({ base: 'http://h', token: 't', fetch });
    const e = await rejection(b.overview());
    expect(e.code).toBe(CLIENT_CODES.unreachable);
  });

  it('reports a 200 that is not JSON as bad_response', async () => {
    const fetch = vi.fn(async () => jsonResponse(200, '<html>console not built</html>'));
    const b = new HttpBackend({ base: 'http://h', token: 't', fetch });
    expect((await rejection(b.overview())).code).toBe(CLIENT_CODES.badResponse);
  });
});

describe('errorFromResponse', () => {
  it('uses the body when it is an ApiError', () => {
    expect(errorFromResponse(400, 'Bad Request', '{"code":"bad_request","message":"scope?"}')).toEqual({
      code: 'bad_request',
      message: 'scope?',
    });
  });
  it('names 401 unauthorized even without a body', () => {
    expect(errorFromResponse(401, 'Unauthorized', '').code).toBe('unauthorized');
  });
  it('falls back to the HTTP status', () => {
    expect(errorFromResponse(502, 'Bad Gateway', 'oops')).toEqual({ code: 'http_502', message: 'HTTP 502 Bad Gateway' });
  });
});

class FakeEventSource {
  static all: FakeEventSource[] = [];
  url: string;
  closed = false;
  listeners = new Map<string, ((ev: Event) => void)[]>();
  constructor(url: string) {
    this.url = url;
    FakeEventSource.all.push(this);
  }
  addEventListener(name: string, fn: (ev: Event) => void) {
    this.listeners.set(name, [...(this.listeners.get(name) ?? []), fn]);
  }
  close() {
    this.closed = true;
  }
  emit(name: string, data?: string) {
    const ev = data === undefined ? new Event(name) : new MessageEvent(name, { data });
    for (const fn of this.listeners.get(name) ?? []) fn(ev);
  }
}

describe('HttpBackend live stream', () => {
  afterEach(() => {
    FakeEventSource.all = [];
    vi.useRealTimers();
  });

  function setup(fetch: ReturnType<typeof vi.fn>) {
    const b = new HttpBackend({
      base: 'http://h',
      token: 'a b',
      fetch: fetch as unknown as typeof globalThis.fetch,
      EventSource: FakeEventSource as unknown as typeof EventSource,
      retryMs: 100,
      maxRetryMs: 400,
    });
    const got = { overviews: [] as number[], errors: [] as ApiError[], drops: 0 };
    const stop = b.subscribe({
      overview: (o) => got.overviews.push(o.generated_at_ms),
      error: (e) => got.errors.push(e),
      disconnected: () => got.drops++,
    });
    return { b, got, stop };
  }

  it('opens the stream with the token in the query and delivers overviews', () => {
    const { got, stop } = setup(vi.fn());
    const es = FakeEventSource.all[0];
    expect(es.url).toBe('http://h/api/stream?token=a%20b');
    es.emit('overview', JSON.stringify(makeOverview({ at: 5 })));
    expect(got.overviews).toEqual([5]);
    stop();
    expect(es.closed).toBe(true);
  });

  it("reports the engine's own error events without dropping the stream", () => {
    const { got } = setup(vi.fn());
    const es = FakeEventSource.all[0];
    es.emit('error', JSON.stringify({ code: 'ledger_error', message: 'disk I/O error' }));
    expect(got.errors).toEqual([{ code: 'ledger_error', message: 'disk I/O error' }]);
    expect(got.drops).toBe(0);
    expect(es.closed).toBe(false);
  });

  it('on a drop, asks the engine why, retries with backoff and reopens when it answers', async () => {
    vi.useFakeTimers();
    const fetch = vi
      .fn()
      .mockRejectedValueOnce(new TypeError('Failed to fetch'))
      .mockResolvedValueOnce(jsonResponse(401, { code: 'unauthorized', message: 'no' }))
      .mockResolvedValue(jsonResponse(200, makeOverview({ at: 9 })));
    const { got, stop } = setup(fetch);
    FakeEventSource.all[0].emit('error');
    expect(FakeEventSource.all[0].closed).toBe(true);
    expect(got.drops).toBe(1);
    await vi.advanceTimersByTimeAsync(0);
    expect(got.errors.map((e) => e.code)).toEqual([CLIENT_CODES.unreachable]);
    await vi.advanceTimersByTimeAsync(100);
    expect(got.errors.map((e) => e.code)).toEqual([CLIENT_CODES.unreachable, 'unauthorized']);
    await vi.advanceTimersByTimeAsync(199);
    expect(fetch).toHaveBeenCalledTimes(2); // the second retry waits 200 ms
    await vi.advanceTimersByTimeAsync(1);
    expect(got.overviews).toEqual([9]);
    expect(FakeEventSource.all).toHaveLength(2);
    expect(FakeEventSource.all[1].closed).toBe(false);
    stop();
  });

  it('stops retrying once unsubscribed', async () => {
    vi.useFakeTimers();
    const fetch = vi.fn().mockRejectedValue(new TypeError('Failed to fetch'));
    const { stop } = setup(fetch);
    FakeEventSource.all[0].emit('error');
    await vi.advanceTimersByTimeAsync(0);
    stop();
    await vi.advanceTimersByTimeAsync(5000);
    expect(fetch).toHaveBeenCalledTimes(1);
  });
});
