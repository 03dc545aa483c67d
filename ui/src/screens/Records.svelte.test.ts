import { flushSync } from 'svelte';
import { describe, expect, it } from 'vitest';

import { ApiFailure } from '../lib/errors';
import { byTestId, render, settle, type } from '../lib/testing/render';
import type { Timeline } from '../lib/types/Timeline';
import type { TimelineEntry } from '../lib/types/TimelineEntry';
import Records from './Records.svelte';
import { fakeBackend, props } from './testing';

const entry = (over: Partial<TimelineEntry>): TimelineEntry => ({
  at_ms: 1_700_000_000_000,
  kind: 'event',
  id: 1,
  side: 'crm',
  summary: 'crm contact.propertyChange 17 via webhook',
  state: 'applied',
  rule: null,
  contract_version: null,
  idempotency_key: null,
  correlation_id: null,
  detail: '{"a":1}',
  ...over,
});

const timeline = (entries: TimelineEntry[]): Timeline => ({
  record: 'customer:crm:1001',
  crm_id: '1001',
  billing_id: 'cus_X',
  entries,
});

const ENTRIES = [
  entry({ id: 5 }),
  entry({ kind: 'decision', id: 1, side: null, state: null, rule: 'owner:crm', contract_version: 'abc123', summary: 'engine: decide — write email' }),
  entry({ kind: 'write', id: 6, side: 'billing', state: 'done', idempotency_key: 'billing:create:1001:crm:5', correlation_id: 'c-1' }),
  entry({ id: 6, side: 'billing', state: 'echo', summary: 'billing customer.created evt_1 via webhook' }),
  entry({ kind: 'duplicate', id: 2, state: 'duplicate', rule: 'dedupe', detail: '{"original_inbox_id":5,"event_id":"17"}' }),
  entry({ kind: 'duplicate', id: 3, state: 'duplicate', rule: 'dedupe', detail: null }),
];

function setup(hash: string, t: Timeline = timeline(ENTRIES)) {
  const b = fakeBackend();
  b.recordTimeline.mockImplementation(async () => t);
  const p = props(b, hash);
  const root = render(Records, { backend: p.backend, live: p.live, router: p.router });
  return { b, root, ...p };
}

const shown = (root: HTMLElement) =>
  [...root.querySelectorAll<HTMLElement>('[data-testid=timeline-entry]')].map((x) => `${x.dataset.kind}:${x.dataset.id}`);

describe('Records screen', () => {
  it('asks for a search when the address has none', async () => {
    const { root, b } = setup('#/records');
    await settle();
    expect(byTestId(root, 'records-hint')).not.toBeNull();
    expect(b.recordTimeline).not.toHaveBeenCalled();
  });

  it('loads the timeline named by ?q= with ids, rules, contract versions and idempotency keys', async () => {
    const { root, b } = setup('#/records?q=a%40b.test');
    await settle();
    expect(b.recordTimeline).toHaveBeenCalledWith({ query: 'a@b.test' });
    expect(byTestId(root, 'records-key')!.textContent).toBe('customer:crm:1001');
    expect(byTestId(root, 'records-billing-id')!.textContent).toBe('cus_X');
    // Newest first, oldest first on request.
    expect(shown(root)).toEqual(['duplicate:3', 'duplicate:2', 'event:6', 'write:6', 'decision:1', 'event:5']);
    (byTestId(root, 'records-newest-first') as HTMLInputElement).click();
    flushSync();
    expect(shown(root)).toEqual(['event:5', 'decision:1', 'write:6', 'event:6', 'duplicate:2', 'duplicate:3']);
    const text = byTestId(root, 'timeline')!.textContent!;
    expect(text).toContain('owner:crm');
    expect(text).toContain('abc123');
    expect(byTestId(root, 'timeline-key')!.textContent).toBe('billing:create:1001:crm:5');
    expect((byTestId(root, 'records-q') as HTMLInputElement).value).toBe('a@b.test');
  });

  it('puts a search in the address and loads it', async () => {
    const { root, b, win } = setup('#/records');
    await settle();
    type(byTestId(root, 'records-q') as HTMLInputElement, 'cus_X');
    (byTestId(root, 'records-search') as HTMLButtonElement).click();
    await settle();
    expect(win.location.hash).toBe('#/records?q=cus_X');
    expect(b.recordTimeline).toHaveBeenCalledWith({ query: 'cus_X' });
    expect(shown(root)).toHaveLength(6);
  });

  it('filters by kind', async () => {
    const { root } = setup('#/records?q=x');
    await settle();
    const boxes = [...root.querySelectorAll<HTMLInputElement>('.kinds input')];
    boxes[0].click(); // events
    flushSync();
    expect(shown(root)).toEqual(['duplicate:3', 'duplicate:2', 'write:6', 'decision:1']);
  });

  it('says plainly when no record matches', async () => {
    const b = fakeBackend();
    b.recordTimeline.mockImplementation(async () => {
      throw new ApiFailure({ code: 'not_found', message: 'no record matches "nobody"' });
    });
    const p = props(b, '#/records?q=nobody');
    const root = render(Records, { backend: p.backend, live: p.live, router: p.router });
    await settle();
    expect(byTestId(root, 'records-error')!.textContent).toContain('No record matches “nobody”');
    expect(byTestId(root, 'timeline')).toBeNull();
  });

  it('un-drops a dropped event with a reason, then shows the timeline again', async () => {
    const { root, b } = setup('#/records?q=x');
    b.undropEvent.mockImplementation(async () => ({ record: 'customer:crm:1001' }));
    await settle();
    const offers = () =>
      [...root.querySelectorAll<HTMLElement>('[data-testid=undrop]')].map((x) => {
        const e = x.closest<HTMLElement>('[data-testid=timeline-entry]')!;
        return `${e.dataset.kind}:${e.dataset.id}`;
      });
    // The echo and the duplicate that names its original: not applied events, decisions, writes.
    expect(offers()).toEqual(['duplicate:2', 'event:6']);
    (root.querySelectorAll<HTMLButtonElement>('[data-testid=undrop]')[1]).click();
    flushSync();
    // One form, on the event (the write has the same id in its own table).
    expect(root.querySelectorAll('[data-testid=undrop-form]')).toHaveLength(1);
    expect(byTestId(root, 'undrop-form')!.closest<HTMLElement>('[data-testid=timeline-entry]')!.dataset.kind).toBe('event');
    const confirm = byTestId(root, 'undrop-confirm') as HTMLButtonElement;
    expect(confirm.disabled).toBe(true);
    type(byTestId(root, 'undrop-reason') as HTMLInputElement, 'suspected missed change');
    expect(confirm.disabled).toBe(false);
    const calls = b.recordTimeline.mock.calls.length;
    confirm.click();
    await settle();
    expect(b.undropEvent).toHaveBeenCalledWith({ inbox_id: 6, reason: 'suspected missed change' });
    expect(b.recordTimeline.mock.calls.length).toBe(calls + 1);
    expect(byTestId(root, 'records-notice')!.textContent).toContain('Event 6 requeued');
    expect(byTestId(root, 'undrop-form')).toBeNull();
  });

  it("un-drops a duplicate's original event", async () => {
    const { root, b } = setup('#/records?q=x');
    b.undropEvent.mockImplementation(async () => ({ record: 'customer:crm:1001' }));
    await settle();
    const dup = root.querySelector<HTMLElement>('[data-testid=timeline-entry][data-kind=duplicate][data-id="2"]')!;
    (dup.querySelector('[data-testid=undrop]') as HTMLButtonElement).click();
    flushSync();
    expect(dup.querySelector('[data-testid=undrop-form]')!.textContent).toContain('event 5, the original of this duplicate');
    type(byTestId(root, 'undrop-reason') as HTMLInputElement, 'the first delivery was mis-read');
    (byTestId(root, 'undrop-confirm') as HTMLButtonElement).click();
    await settle();
    expect(b.undropEvent).toHaveBeenCalledWith({ inbox_id: 5, reason: 'the first delivery was mis-read' });
  });

  it('shows an un-drop refusal in words and keeps the form', async () => {
    const { root, b } = setup('#/records?q=x');
    b.undropEvent.mockImplementation(async () => {
      throw new ApiFailure({ code: 'bad_request', message: 'a reason is required' });
    });
    await settle();
    (byTestId(root, 'undrop') as HTMLButtonElement).click();
    flushSync();
    type(byTestId(root, 'undrop-reason') as HTMLInputElement, 'why not');
    (byTestId(root, 'undrop-confirm') as HTMLButtonElement).click();
    await settle();
    expect(byTestId(root, 'undrop-error')!.textContent).toContain('The engine refused this request: a reason is required');
    expect(byTestId(root, 'undrop-form')).not.toBeNull();
  });
});
