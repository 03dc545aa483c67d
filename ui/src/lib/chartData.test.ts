import { describe, expect, it } from 'vitest';

import { align, firstPoint, hasPoints, xWindow } from './chartData';

describe('align', () => {
  it('shares one x axis in seconds and leaves gaps as null', () => {
    const data = align([
      { label: 'crm', points: [{ t_ms: 60_000, v: 1 }, { t_ms: 180_000, v: 3 }] },
      { label: 'billing', points: [{ t_ms: 120_000, v: 2 }] },
    ]);
    expect(data).toEqual([
      [60, 120, 180],
      [1, null, 3],
      [null, 2, null],
    ]);
  });
  it('copes with no points', () => {
    expect(align([{ label: 'p50', points: [] }])).toEqual([[], []]);
    expect(hasPoints([{ label: 'p50', points: [] }])).toBe(false);
  });
});

describe('xWindow', () => {
  const now = 10 * 3600_000 + 30_000; // 10:00:30 (epoch-relative)
  const end = 10 * 3600 + 60;
  it('shows the last hour once there is an hour of history', () => {
    expect(xWindow(now, now - 5 * 3600_000)).toEqual([end - 3600, end]);
  });
  it('shows 15 minutes for a young engine, and when there is no data', () => {
    expect(xWindow(now, now - 60_000)).toEqual([end - 900, end]);
    expect(xWindow(now, null)).toEqual([end - 900, end]);
  });
  it('shows from the first point in between', () => {
    const first = 10 * 3600_000 - 30 * 60_000; // 09:30
    expect(xWindow(now, first)).toEqual([first / 1000 - 60, end]);
  });
  it('finds the first point over all series', () => {
    expect(firstPoint([{ label: 'a', points: [{ t_ms: 5, v: 1 }] }, { label: 'b', points: [{ t_ms: 2, v: 1 }] }])).toBe(2);
    expect(firstPoint([{ label: 'a', points: [] }])).toBeNull();
  });
});
