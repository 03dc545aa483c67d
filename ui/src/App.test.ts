// The whole console in jsdom against a fake backend: the DOM contract the browser tests
// rely on, the empty / error / reconnecting states, the title and the pause flow.

import { describe, expect, it, vi } from 'vitest';

vi.hoisted(() => {
  // uPlot asks for the pixel ratio when it loads; jsdom has no matchMedia.
  window.matchMedia ??= ((q: string) => ({
    matches: false,
    media: q,
    addEventListener() {},
    removeEventListener() {},
  })) as unknown as typeof window.matchMedia;
});

import App from './App.svelte';
import type { Backend, LiveHandlers } from './lib/backend';
import { makeOverview, stubRuns } from './lib/testing/fixtures';
import { byTestId, render, settle, type } from './lib/testing/render';
import type { Overview } from './lib/types/Overview';

function fakeBackend(first?: Overview) {
  let h: LiveHandlers | null = null;
  const b = {
    kind: 'http' as const,
    where: 'http://127.0.0.1:4567',
    overview: vi.fn(async () => first ?? makeOverview()),
    status: vi.fn(),
    pauseOutbound: vi.fn(async () => ({ scope: 'global', paused: true, changed: true })),
    resumeOutbound: vi.fn(async () => ({ scope: 'global', paused: false, changed: true })),
    ...stubRuns(),
    subscribe: (handlers: LiveHandlers) => {
      h = handlers;
      return () => (h = null);
    },
    push: (o: Overview) => {
      h!.overview(o);
    },
    handlers: () => h!,
  };
  return b satisfies Backend;
}

const STATES = ['pending', 'applied', 'duplicate', 'echo', 'superseded', 'conflicted', 'dead_lettered'];

describe('App', () => {
  it('renders every counter as the bare integer from status', async () => {
    const b = fakeBackend();
    const root = render(App, { backend: b });
    const ov = makeOverview();
    b.push(ov);
    await settle();
    const s = ov.status;
    const text = (id: string) => byTestId(root, `counter-${id}`)?.textContent;
    for (const st of STATES) expect(text(`events-${st}`)).toBe(String(s.events[st]));
    expect(text('events_total')).toBe(String(s.events_total));
    expect(text('queue_depth')).toBe(String(s.queue_depth));
    expect(text('dead_letter_depth')).toBe(String(s.dead_letter_depth));
    expect(text('review_depth')).toBe(String(s.review_depth));
    for (const d of ['crm', 'billing']) {
      expect(text(`writes-${d}-done`)).toBe(String(s.writes[d].done));
      expect(text(`writes-${d}-pending`)).toBe(String(s.writes[d].pending));
    }
    expect(text('lag-p50')).toBe('210');
    expect(text('lag-p95')).toBe('1480');
    expect(text('lag-max')).toBe('5022');
    expect(byTestId(root, 'health')!.dataset.state).toBe('running');
    expect(byTestId(root, 'updated-at')).not.toBeNull();
    expect(byTestId(root, 'reconciliation')!.textContent!.trim()).toBe('no reconciliation run yet');
    expect(byTestId(root, 'empty-state')).toBeNull();
    expect(document.title).toBe('driftless');
  });

  it('shows the empty state before the first webhook', async () => {
    const b = fakeBackend();
    const root = render(App, { backend: b });
    b.push(makeOverview({ events_total: 0 }));
    await settle();
    expect(byTestId(root, 'empty-state')!.textContent).toContain('waiting for the first webhook…');
  });

  it('shows the pause banner and the PAUSED title while paused', async () => {
    const b = fakeBackend();
    const root = render(App, { backend: b });
    b.push(
      makeOverview({
        paused: [{ scope: 'global', reason: 'deploy', set_by: 'operator:console', set_at_ms: Date.now() }],
      }),
    );
    await settle();
    expect(byTestId(root, 'pause-banner')!.textContent).toContain('deploy');
    expect(byTestId(root, 'health')!.dataset.state).toBe('paused');
    expect(document.title).toBe('driftless — PAUSED');
    expect((byTestId(root, 'pause-global') as HTMLButtonElement).disabled).toBe(true);
    b.push(makeOverview({ at: 1_700_000_001_000 }));
    await settle();
    expect(byTestId(root, 'pause-banner')).toBeNull();
    expect(document.title).toBe('driftless');
  });

  it('pauses through the dialog', async () => {
    const b = fakeBackend();
    const root = render(App, { backend: b });
    b.push(makeOverview());
    await settle();
    (byTestId(root, 'pause-billing') as HTMLButtonElement).click();
    await settle();
    type(byTestId(root, 'pause-reason') as HTMLInputElement, 'stripe incident');
    (byTestId(root, 'pause-confirm') as HTMLButtonElement).click();
    await settle();
    expect(b.pauseOutbound).toHaveBeenCalledWith({ scope: 'billing', reason: 'stripe incident' });
    expect(b.overview).toHaveBeenCalled();
    expect(byTestId(root, 'pause-dialog')).toBeNull();
  });

  it('explains an unreachable engine instead of a blank page', async () => {
    const b = fakeBackend();
    const root = render(App, { backend: b });
    b.handlers().error({ code: 'engine_unreachable', message: 'Failed to fetch' });
    await settle();
    const el = byTestId(root, 'error-state')!;
    expect(el.textContent).toContain(
      'The driftless engine is not answering at http://127.0.0.1:4567; is `driftless serve` running?',
    );
  });

  it('explains a wrong token', async () => {
    const b = fakeBackend();
    const root = render(App, { backend: b });
    b.handlers().error({ code: 'unauthorized', message: 'missing or wrong token' });
    await settle();
    expect(byTestId(root, 'error-state')!.textContent).toContain("This link's token is wrong or expired");
  });

  it('keeps the last figures, marked stale, while reconnecting', async () => {
    const b = fakeBackend();
    const root = render(App, { backend: b });
    b.push(makeOverview());
    await settle();
    b.handlers().disconnected();
    b.handlers().error({ code: 'engine_unreachable', message: 'Failed to fetch' });
    await settle();
    expect(byTestId(root, 'reconnecting')!.textContent).toContain('reconnecting…');
    expect(byTestId(root, 'counter-events-applied')!.textContent).toBe('120');
    expect(root.querySelector('.overview')!.classList.contains('stale')).toBe(true);
    expect(byTestId(root, 'error-state')).toBeNull();
  });
});
