import { describe, expect, it, vi } from 'vitest';

import { DAY_MS, HOUR_MS, PageCache, money, pagesFor, pretty, readParams, toFilter, visibleRange } from './deadLetters';
import type { DeadLetter } from './types/DeadLetter';

const dl = (id: number): DeadLetter => ({
  id,
  record: `customer:crm:${id}`,
  object: 'customer',
  destination: 'billing',
  op: 'update_customer',
  error_class: 'validation',
  error: 'bad',
  attempts: 1,
  idempotency_key: `k${id}`,
  created_at_ms: 1,
  resolved_at_ms: null,
  resolution: null,
  amount_cents: null,
});

/** A fake engine holding `total` rows, ids total..1 (newest first). */
function engine(total: number) {
  return vi.fn(async (offset: number, limit: number) => ({
    total,
    items: Array.from({ length: Math.max(0, Math.min(limit, total - offset)) }, (_, i) => dl(total - offset - i)),
  }));
}

describe('dead letters: filters', () => {
  it('reads the address and makes the engine filter (empty = not set)', () => {
    const p = readParams(new URLSearchParams('destination=crm&error_class=auth&object=customer&age=gt7d&q=%20x%20'));
    expect(p).toEqual({ destination: 'crm', error_class: 'auth', object: 'customer', age: 'gt7d', q: ' x ' });
    const f = toFilter(p);
    expect(f).toMatchObject({ destination: 'crm', error_class: 'auth', object: 'customer', text: 'x', min_age_ms: 7 * DAY_MS, max_age_ms: null });
    expect(f.include_resolved).toBe(false);
    expect(toFilter(readParams(new URLSearchParams('age=lt1h')))).toMatchObject({ min_age_ms: null, max_age_ms: HOUR_MS, destination: null, text: null });
    expect(toFilter(readParams(new URLSearchParams('age=nonsense')))).toMatchObject({ min_age_ms: null, max_age_ms: null });
  });
});

describe('dead letters: virtual window', () => {
  it('renders the visible rows plus overscan, never past the ends', () => {
    expect(visibleRange(0, 340, 34, 100_000, 8)).toEqual({ start: 0, end: 19 });
    expect(visibleRange(34 * 5000, 340, 34, 100_000, 8)).toEqual({ start: 4992, end: 5019 });
    expect(visibleRange(34 * 99_995, 340, 34, 100_000, 8)).toEqual({ start: 99_987, end: 100_000 });
    expect(visibleRange(0, 340, 34, 0)).toEqual({ start: 0, end: 0 });
    const big = visibleRange(34 * 50_000, 800, 34, 100_000);
    expect(big.end - big.start).toBeLessThan(100);
  });

  it('names the pages a window needs', () => {
    expect(pagesFor(0, 19, 100)).toEqual([0]);
    expect(pagesFor(95, 120, 100)).toEqual([0, 1]);
    expect(pagesFor(5, 5, 100)).toEqual([]);
    expect(pagesFor(99_987, 100_000, 100)).toEqual([999]);
  });
});

describe('dead letters: page cache', () => {
  it('asks the engine only for missing pages, once each, with limit/offset', async () => {
    const f = engine(100_000);
    const c = new PageCache(f, 100);
    expect(await c.ensure(0, 19)).toBe(true);
    expect(f).toHaveBeenCalledTimes(1);
    expect(f).toHaveBeenLastCalledWith(0, 100);
    expect(c.total).toBe(100_000);
    expect(c.row(0)?.id).toBe(100_000);
    expect(c.row(99)?.id).toBe(99_901);
    expect(c.row(100)).toBeUndefined();
    expect(await c.ensure(3, 40)).toBe(false);
    // Two overlapping windows at once share the same request.
    await Promise.all([c.ensure(50_000, 50_020), c.ensure(50_010, 50_030)]);
    expect(f).toHaveBeenCalledTimes(2);
    expect(f).toHaveBeenLastCalledWith(50_000, 100);
    expect(c.row(50_000)?.id).toBe(50_000);
  });

  it('keeps a bounded number of pages, dropping the farthest', async () => {
    const f = engine(100_000);
    const c = new PageCache(f, 100, 3);
    for (const p of [0, 1, 2, 3, 500]) await c.ensure(p * 100, p * 100 + 10);
    expect(c.has(500)).toBe(true);
    expect(c.has(0)).toBe(false);
    expect([0, 1, 2, 3, 500].filter((p) => c.has(p)).length).toBe(3);
  });

  it('passes the engine error on, and tries again next time', async () => {
    const f = vi.fn().mockRejectedValueOnce(new Error('down')).mockImplementation(engine(10));
    const c = new PageCache(f, 100);
    await expect(c.ensure(0, 5)).rejects.toThrow('down');
    expect(await c.ensure(0, 5)).toBe(true);
    expect(c.row(0)?.id).toBe(10);
  });
});

describe('dead letters: formatting', () => {
  it('formats amounts and pretty-prints JSON', () => {
    expect(money(123_456)).toBe('1,234.56');
    expect(pretty('{"a":1}')).toBe('{\n  "a": 1\n}');
    expect(pretty('not json')).toBe('not json');
    expect(pretty(null)).toBe('—');
  });
});
