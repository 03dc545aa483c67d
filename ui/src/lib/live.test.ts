import { afterEach, describe, expect, it, vi } from 'vitest';

import type { Backend, LiveHandlers } from './backend';
import { LiveOverview, RECONNECT_AFTER_MS, STALE_AFTER_MS } from './live.svelte';
import { makeOverview, stubRuns } from './testing/fixtures';

function fakeBackend() {
  let h: LiveHandlers | null = null;
  const b: Backend & { h: () => LiveHandlers; subscriptions: number } = {
    subscriptions: 0,
    kind: 'http',
    where: 'http://h',
    overview: vi.fn(async () => makeOverview({ at: 50 })),
    status: vi.fn(),
    pauseOutbound: vi.fn(async () => ({ scope: 'global', paused: true, changed: true })),
    resumeOutbound: vi.fn(async () => ({ scope: 'global', paused: false, changed: true })),
    ...stubRuns(),
    subscribe: (handlers) => {
      b.subscriptions++;
      h = handlers;
      return () => (h = null);
    },
    h: () => h!,
  };
  return b;
}

describe('LiveOverview', () => {
  afterEach(() => vi.useRealTimers());

  it('keeps the last figures and marks them stale when the stream drops', () => {
    vi.useFakeTimers();
    const b = fakeBackend();
    const live = new LiveOverview(b);
    live.start();
    expect(live.connection).toBe('connecting');
    b.h().overview(makeOverview({ at: 10 }));
    expect(live.connection).toBe('live');
    expect(live.stale).toBe(false);
    b.h().disconnected();
    expect(live.stale).toBe(true);
    expect(live.overview?.generated_at_ms).toBe(10);
    b.h().error({ code: 'engine_unreachable', message: 'x' });
    expect(live.error?.code).toBe('engine_unreachable');
    b.h().overview(makeOverview({ at: 11 }));
    expect(live.stale).toBe(false);
    expect(live.error).toBeNull();
    live.stop();
  });

  it('calls figures stale when updates stop arriving', () => {
    vi.useFakeTimers();
    const b = fakeBackend();
    const live = new LiveOverview(b);
    live.start();
    b.h().overview(makeOverview({ at: 10 }));
    vi.advanceTimersByTime(STALE_AFTER_MS + 1000);
    expect(live.stale).toBe(true);
    live.stop();
  });

  it('starts a new connection when the live one goes silent', () => {
    vi.useFakeTimers();
    const b = fakeBackend();
    const live = new LiveOverview(b);
    live.start();
    b.h().overview(makeOverview({ at: 10 }));
    vi.advanceTimersByTime(RECONNECT_AFTER_MS - 1000);
    expect(b.subscriptions).toBe(1);
    vi.advanceTimersByTime(2000);
    expect(b.subscriptions).toBe(2);
    expect(live.connection).toBe('reconnecting');
    b.h().overview(makeOverview({ at: 11 }));
    expect(live.stale).toBe(false);
    live.stop();
  });

  it('ignores an overview older than the one shown', () => {
    const live = new LiveOverview(fakeBackend());
    live.accept(makeOverview({ at: 20 }));
    live.accept(makeOverview({ at: 19 }));
    expect(live.overview?.generated_at_ms).toBe(20);
  });

  it('pauses and resumes through the backend, then refreshes', async () => {
    const b = fakeBackend();
    const live = new LiveOverview(b);
    await live.pause('crm', '  deploy ');
    expect(b.pauseOutbound).toHaveBeenCalledWith({ scope: 'crm', reason: 'deploy' });
    expect(live.overview?.generated_at_ms).toBe(50);
    await live.resume('crm');
    expect(b.resumeOutbound).toHaveBeenCalledWith({ scope: 'crm', reason: null });
  });

  it('reports which scopes are paused', () => {
    const live = new LiveOverview(fakeBackend());
    live.accept(makeOverview({ paused: [{ scope: 'billing', reason: null, set_by: 'x', set_at_ms: 1 }] }));
    expect(live.isPaused('billing')).toBe(true);
    expect(live.isPaused('global')).toBe(false);
  });
});
