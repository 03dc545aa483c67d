import { flushSync } from 'svelte';
import { describe, expect, it, vi, type Mock } from 'vitest';

import { ApiFailure } from '../lib/errors';
import { byTestId, render, settle, type } from '../lib/testing/render';
import type { ReviewItem } from '../lib/types/ReviewItem';
import Review from './Review.svelte';
import { fakeBackend, key, props } from './testing';

const item = (id: number, over: Partial<ReviewItem> = {}): ReviewItem => ({
  id,
  record: `customer:crm:${1000 + id}`,
  reason: 'requested_plan: changed on both sides',
  created_at_ms: 1_700_000_000_000,
  fields: [
    { field: 'requested_plan', crm: 'basic', billing: 'pro', owner: 'shared (review)', last_synced: 'enterprise' },
    { field: 'lifecycle_stage', crm: 'lead', billing: 'customer', owner: 'shared (review)', last_synced: null },
  ],
  changes: [{ side: 'crm', at_ms: 1_700_000_000_500, event_id: `e${id}`, what: 'requested_plan = "basic"', source: 'CRM_UI' }],
  ...over,
});

function setup(queue: ReviewItem[][], hash = '#/review') {
  const b = fakeBackend();
  let n = 0;
  (b.listReviews as unknown as Mock<() => Promise<ReviewItem[]>>).mockImplementation(async () => queue[Math.min(n++, queue.length - 1)]);
  b.resolveReview.mockImplementation(async (req: { id: number }) => ({ record: `customer:crm:${1000 + req.id}` }));
  const p = props(b, hash);
  const root = render(Review, { backend: p.backend, live: p.live, router: p.router });
  return { b, root, ...p };
}

const rows = (root: HTMLElement) => [...root.querySelectorAll<HTMLElement>('[data-testid=review-field]')];

describe('Review screen', () => {
  it('shows the empty state when nothing waits', async () => {
    const { root } = setup([[]]);
    await settle();
    expect(byTestId(root, 'review-empty')).not.toBeNull();
    expect(byTestId(root, 'review-left')!.dataset.count).toBe('0');
    expect(byTestId(root, 'review-item')).toBeNull();
  });

  it('shows one record side by side with who changed it, and the count left', async () => {
    const { root } = setup([[item(1), item(2)]]);
    await settle();
    expect(byTestId(root, 'review-left')!.textContent).toContain('2 items left');
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('1');
    const r = rows(root);
    expect(r.map((x) => x.dataset.field)).toEqual(['requested_plan', 'lifecycle_stage']);
    expect(r[0].textContent).toContain('basic');
    expect(r[0].textContent).toContain('pro');
    expect(r[0].textContent).toContain('shared (review)');
    expect(r[0].textContent).toContain('enterprise');
    expect(byTestId(root, 'review-changes')!.textContent).toContain('CRM_UI');
    expect(byTestId(root, 'review-record-link')!.getAttribute('href')).toBe('#/records?q=customer%3Acrm%3A1001');
    expect(byTestId(root, 'review-keys')).not.toBeNull();
  });

  it('goes through the queue with j/k and keeps the item in the address', async () => {
    const { root, win } = setup([[item(1), item(2), item(3)]]);
    await settle();
    key('j');
    flushSync();
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('2');
    expect(win.location.hash).toBe('#/review?id=2');
    key('j');
    key('j');
    flushSync();
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('3');
    key('k');
    flushSync();
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('2');
  });

  it('opens the item named in the address', async () => {
    const { root } = setup([[item(1), item(2)]], '#/review?id=2');
    await settle();
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('2');
  });

  it('takes sides with c/b on the focused field, needs a reason, applies with Enter and moves on', async () => {
    const { root, b, win } = setup([[item(1), item(2)], [item(2)]]);
    await settle();
    const apply = byTestId(root, 'review-apply') as HTMLButtonElement;
    expect(apply.disabled).toBe(true);
    key('b');
    key('ArrowDown');
    key('c');
    flushSync();
    expect(rows(root).map((x) => x.dataset.choice)).toEqual(['billing', 'crm']);
    expect(rows(root)[1].classList.contains('focused')).toBe(true);
    key('Enter');
    await settle();
    expect(b.resolveReview).not.toHaveBeenCalled();
    expect(apply.disabled).toBe(true);

    const reason = byTestId(root, 'review-reason-input') as HTMLInputElement;
    type(reason, 'sales confirmed the upgrade');
    expect(apply.disabled).toBe(false);
    key('Enter', reason);
    await settle();
    expect(b.resolveReview).toHaveBeenCalledWith({
      id: 1,
      resolution: {
        choices: [
          { field: 'requested_plan', take: 'billing', value: null },
          { field: 'lifecycle_stage', take: 'crm', value: null },
        ],
        reason: 'sales confirmed the upgrade',
      },
    });
    expect(byTestId(root, 'review-done')!.textContent).toContain('customer:crm:1001');
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('2');
    expect(win.location.hash).toBe('#/review?id=2');
    expect(byTestId(root, 'review-left')!.textContent).toContain('1 item left');
    // The next item starts with no choices and no reason.
    expect(rows(root).map((x) => x.dataset.choice)).toEqual(['', '']);
    expect((byTestId(root, 'review-reason-input') as HTMLInputElement).value).toBe('');
  });

  it('sends a typed value, and does not apply an empty one', async () => {
    const { root, b } = setup([[item(1)], []]);
    await settle();
    key('e');
    flushSync();
    await settle();
    const typed = root.querySelector<HTMLInputElement>('input.typed')!;
    expect(document.activeElement).toBe(typed);
    type(byTestId(root, 'review-reason-input') as HTMLInputElement, 'typed by hand');
    expect((byTestId(root, 'review-apply') as HTMLButtonElement).disabled).toBe(true);
    type(typed, 'pro');
    (byTestId(root, 'review-apply') as HTMLButtonElement).click();
    await settle();
    expect(b.resolveReview).toHaveBeenCalledWith({
      id: 1,
      resolution: { choices: [{ field: 'requested_plan', take: 'value', value: 'pro' }], reason: 'typed by hand' },
    });
    expect(byTestId(root, 'review-empty')).not.toBeNull();
  });

  it('says why the engine refused, in words', async () => {
    const { root, b } = setup([[item(1)]]);
    b.resolveReview.mockImplementation(async () => {
      throw new ApiFailure({ code: 'bad_request', message: 'take must be crm, billing or value' });
    });
    await settle();
    key('c');
    type(byTestId(root, 'review-reason-input') as HTMLInputElement, 'x');
    key('Enter');
    await settle();
    expect(byTestId(root, 'review-failure')!.textContent).toContain('The engine refused this request: take must be crm, billing or value');
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('1');
  });

  it('ignores shortcuts while typing in a text box', async () => {
    const { root } = setup([[item(1), item(2)]]);
    await settle();
    const reason = byTestId(root, 'review-reason-input') as HTMLInputElement;
    key('j', reason);
    key('c', reason);
    flushSync();
    expect(byTestId(root, 'review-item')!.dataset.id).toBe('1');
    expect(rows(root)[0].dataset.choice).toBe('');
  });

  it('fetches the queue again when the live count moves', async () => {
    const { b, live } = setup([[], [item(4)]]);
    await settle();
    const calls = b.listReviews.mock.calls.length;
    const { makeOverview } = await import('../lib/testing/fixtures');
    const o1 = makeOverview();
    live.accept(o1);
    await settle();
    const o2 = makeOverview();
    o2.status.review_depth = 2;
    live.accept(o2);
    await settle();
    expect(b.listReviews.mock.calls.length).toBe(calls + 1);
    vi.restoreAllMocks();
  });
});
