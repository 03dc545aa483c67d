import { describe, expect, it, vi } from 'vitest';

import type { Backend } from '../lib/backend';
import type { LiveOverview } from '../lib/live.svelte';
import { Router } from '../lib/router.svelte';
import { stubRuns } from '../lib/testing/fixtures';
import { byTestId, render, settle, type } from '../lib/testing/render';
import type { DeadLetter } from '../lib/types/DeadLetter';
import type { DeadLetterFilter } from '../lib/types/DeadLetterFilter';
import DeadLetters from './DeadLetters.svelte';

// jsdom has no layout: `bind:clientHeight` needs a ResizeObserver, which never fires here (the
// screen keeps its default viewport height).
vi.stubGlobal(
  'ResizeObserver',
  class {
    observe() {}
    unobserve() {}
    disconnect() {}
  },
);

const dl = (id: number, over: Partial<DeadLetter> = {}): DeadLetter => ({
  id,
  record: `customer:crm:${id}`,
  object: 'customer',
  destination: 'billing',
  op: 'update_customer',
  error_class: 'validation',
  error: `rejected ${id}`,
  attempts: 2,
  idempotency_key: `billing:update:${id}`,
  created_at_ms: 1_700_000_000_000,
  resolved_at_ms: null,
  resolution: null,
  amount_cents: id % 5 === 0 ? 1250 : null,
  ...over,
});

function fakeWindow(hash: string) {
  const w = {
    location: { hash },
    history: {
      state: null,
      replaceState: (_s: unknown, _t: string, url: string) => {
        w.location.hash = url;
      },
    },
    addEventListener: () => {},
    removeEventListener: () => {},
  };
  return w;
}

function setup(hash = '#/dead-letters', total = 100_000) {
  const runs = stubRuns();
  const listDeadLetters = vi.fn(async (f: DeadLetterFilter) => {
    const offset = f.offset ?? 0;
    const n = Math.max(0, Math.min(f.limit ?? 100, total - offset));
    return { total, items: Array.from({ length: n }, (_, i) => dl(total - offset - i)) };
  });
  const radius = { dead_letters: 3, records: 2, amount_cents: 4200, by_destination: { billing: 3 } };
  runs.discardDeadLetters.mockImplementation(async (req: { dry_run: boolean }) => ({ radius, applied: !req.dry_run }));
  runs.retryDeadLetters.mockImplementation(async (req: { dry_run: boolean }) => ({
    radius: { dead_letters: 1, records: 1, amount_cents: 0, by_destination: { billing: 1 } },
    applied: !req.dry_run,
  }));
  runs.deadLetterDetail.mockImplementation(async ({ id }: { id: number }) => ({
    dead_letter: dl(id),
    request: '{"op":"update_customer","fields":{"email":"a@b.c"}}',
    response: '{"error":{"message":"nope"}}',
    response_status: 400,
    write_id: 77,
    write_state: 'dead_lettered',
    correlation_id: 'c-1',
    history: [{ at_ms: 1, kind: 'decision', id: 9, side: null, summary: 'engine: dead_letter', state: null, rule: 'retry:validation', contract_version: 'v1', idempotency_key: null, correlation_id: null, detail: null }],
    events: [{ at_ms: 1, kind: 'event', id: 5, side: 'crm', summary: 'crm contact.propertyChange e1 via webhook', state: 'dead_lettered', rule: null, contract_version: null, idempotency_key: null, correlation_id: null, detail: '{}' }],
  }));
  const backend = { kind: 'http', where: 'http://h', ...runs, listDeadLetters } as unknown as Backend &
    Omit<ReturnType<typeof stubRuns>, 'listDeadLetters'> & { listDeadLetters: typeof listDeadLetters };
  const win = fakeWindow(hash);
  const router = new Router(win);
  const live = { now: 1_700_000_060_000, refresh: vi.fn(async () => {}) } as unknown as LiveOverview;
  const root = render(DeadLetters, { backend, live, router });
  return { root, backend, router, win, live };
}

const rows = (root: HTMLElement) => [...root.querySelectorAll<HTMLElement>('[data-testid="dl-row"]')];

describe('Dead letters screen', () => {
  it('shows the total and only a window of rows from one page, asked with the address filters', async () => {
    const { root, backend } = setup('#/dead-letters?destination=billing&age=gt1d&q=acme');
    await settle();
    expect(byTestId(root, 'dl-total')!.dataset.total).toBe('100000');
    expect(rows(root).length).toBeGreaterThan(0);
    expect(rows(root).length).toBeLessThan(100);
    expect(rows(root)[0].dataset.id).toBe('100000');
    expect(backend.listDeadLetters).toHaveBeenCalledTimes(1);
    expect(backend.listDeadLetters.mock.calls[0][0]).toMatchObject({
      destination: 'billing',
      text: 'acme',
      min_age_ms: 86_400_000,
      offset: 0,
      limit: 100,
    });
    expect((byTestId(root, 'dl-f-destination') as HTMLSelectElement).value).toBe('billing');
  });

  it('puts a chosen filter into the address and asks again', async () => {
    const { root, backend, win } = setup();
    await settle();
    const sel = byTestId(root, 'dl-f-error_class') as HTMLSelectElement;
    sel.value = 'auth';
    sel.dispatchEvent(new Event('change', { bubbles: true }));
    await settle();
    expect(win.location.hash).toBe('#/dead-letters?error_class=auth');
    expect(backend.listDeadLetters).toHaveBeenLastCalledWith(expect.objectContaining({ error_class: 'auth', offset: 0 }));
  });

  it('debounces the text filter into the address', async () => {
    vi.useFakeTimers();
    try {
      const { root, win } = setup();
      type(byTestId(root, 'dl-f-text') as HTMLInputElement, 'seed-1');
      expect(win.location.hash).toBe('#/dead-letters');
      vi.advanceTimersByTime(400);
      expect(win.location.hash).toBe('#/dead-letters?q=seed-1');
    } finally {
      vi.useRealTimers();
    }
  });

  it('bulk discard: blast radius first, a reason required, then the engine call and a fresh list', async () => {
    const { root, backend, live } = setup('#/dead-letters?destination=billing');
    await settle();
    (byTestId(root, 'dl-bulk-discard') as HTMLButtonElement).click();
    await settle();
    expect(backend.discardDeadLetters).toHaveBeenCalledWith(expect.objectContaining({ dry_run: true, filter: expect.objectContaining({ destination: 'billing' }) }));
    expect(byTestId(root, 'dl-radius-dead_letters')!.textContent).toBe('3');
    expect(byTestId(root, 'dl-radius-records')!.textContent).toBe('2');
    expect(byTestId(root, 'dl-radius-amount')!.textContent).toBe('42.00');
    const go = byTestId(root, 'dl-confirm-go') as HTMLButtonElement;
    expect(go.disabled).toBe(true);
    const reason = byTestId(root, 'dl-reason') as HTMLTextAreaElement;
    reason.value = 'not real customers';
    reason.dispatchEvent(new Event('input', { bubbles: true }));
    await settle();
    expect(go.disabled).toBe(false);
    const listed = backend.listDeadLetters.mock.calls.length;
    go.click();
    await settle();
    expect(backend.discardDeadLetters).toHaveBeenLastCalledWith(expect.objectContaining({ dry_run: false, reason: 'not real customers' }));
    expect(byTestId(root, 'dl-confirm')).toBeNull();
    expect(byTestId(root, 'dl-done')!.textContent).toContain('Discarded 3 dead letters');
    expect(backend.listDeadLetters.mock.calls.length).toBeGreaterThan(listed);
    expect(live.refresh).toHaveBeenCalled();
  });

  it('opens the drawer from a row (id in the address) and retries just that one', async () => {
    const { root, backend, win } = setup();
    await settle();
    rows(root)[1].click();
    await settle();
    expect(win.location.hash).toBe('#/dead-letters?dl=99999');
    expect(backend.deadLetterDetail).toHaveBeenCalledWith({ id: 99_999 });
    expect(byTestId(root, 'dl-d-record')!.textContent).toBe('customer:crm:99999');
    expect(byTestId(root, 'dl-d-timeline')!.getAttribute('href')).toBe('#/records?q=customer%3Acrm%3A99999');
    expect(byTestId(root, 'dl-d-replay')!.getAttribute('href')).toMatch(/^#\/replay\?dead_letters=\d+$/);
    expect(byTestId(root, 'dl-d-request')!.textContent).toContain('"email": "a@b.c"');
    expect(byTestId(root, 'dl-d-history')!.textContent).toContain('retry:validation');
    expect(byTestId(root, 'dl-d-events')!.textContent).toContain('contact.propertyChange');
    (byTestId(root, 'dl-d-retry') as HTMLButtonElement).click();
    await settle();
    expect(backend.retryDeadLetters).toHaveBeenCalledWith(expect.objectContaining({ dry_run: true, filter: expect.objectContaining({ ids: [99_999], destination: null }) }));
    expect(byTestId(root, 'dl-confirm')!.dataset.kind).toBe('retry');
  });

  it('says in words when the engine cannot list', async () => {
    const runs = setup('#/dead-letters', 0);
    await settle();
    expect(byTestId(runs.root, 'dl-empty')).not.toBeNull();
    runs.backend.listDeadLetters.mockRejectedValue({ code: 'ledger', message: 'database is locked' });
    const sel = byTestId(runs.root, 'dl-f-destination') as HTMLSelectElement;
    sel.value = 'crm';
    sel.dispatchEvent(new Event('change', { bubbles: true }));
    await settle();
    expect(byTestId(runs.root, 'dl-error')!.textContent).toContain('database is locked');
  });
});
