import { describe, expect, it } from 'vitest';

import { ago, chartValue, clock, count, documentTitle, duration, percent, scopeLabel, since } from './format';

describe('count', () => {
  it('renders the bare integer, with no rounding or suffix', () => {
    expect(count(0)).toBe('0');
    expect(count(1234567)).toBe('1234567');
    expect(count(999_999_999_999)).toBe('999999999999');
  });
  it('shows 0 for a missing figure', () => {
    expect(count(undefined)).toBe('0');
    expect(count(null)).toBe('0');
    expect(count(NaN)).toBe('0');
  });
});

describe('time', () => {
  it('formats a local clock time', () => {
    const ms = new Date(2024, 0, 2, 3, 4, 5).getTime();
    expect(clock(ms)).toBe('03:04:05');
  });
  it('says how long, in words', () => {
    expect(duration(0)).toBe('0 s');
    expect(duration(59_999)).toBe('59 s');
    expect(duration(60_000)).toBe('1 min');
    expect(duration(2 * 3600_000)).toBe('2 h');
    expect(duration(2 * 3600_000 + 5 * 60_000)).toBe('2 h 5 min');
    expect(duration(3 * 86400_000 + 4 * 3600_000)).toBe('3 d 4 h');
    expect(duration(-5)).toBe('0 s');
  });
  it('says since when, with the date when it was another day', () => {
    const at = new Date(2024, 0, 2, 3, 4, 5).getTime();
    expect(since(at, new Date(2024, 0, 2, 9, 0, 0).getTime())).toBe('03:04:05');
    expect(since(at, new Date(2024, 0, 3, 9, 0, 0).getTime())).toBe('2024-01-02 03:04:05');
  });
  it('says how long ago', () => {
    expect(ago(10_000, 10_500)).toBe('just now');
    expect(ago(10_000, 22_000)).toBe('12 s ago');
    expect(ago(0, 180_000)).toBe('3 min ago');
  });
});

describe('labels', () => {
  it('names pause scopes', () => {
    expect(scopeLabel('global')).toBe('All outbound writes');
    expect(scopeLabel('crm')).toBe('Writes to the CRM');
    expect(scopeLabel('billing')).toBe('Writes to billing');
  });
  it('titles the window while paused', () => {
    expect(documentTitle(true)).toBe('driftless — PAUSED');
    expect(documentTitle(false)).toBe('driftless');
    expect(documentTitle(false, true)).toBe('driftless — OBSERVING');
    expect(documentTitle(true, true)).toBe('driftless — PAUSED');
  });
});

describe('chart values', () => {
  it('formats by unit', () => {
    expect(chartValue(1200, 'ms')).toBe('1200 ms');
    expect(chartValue(3, 'per minute')).toBe('3');
    expect(chartValue(2.345, 's per minute')).toBe('2.35');
    expect(chartValue(12.34, 'writes')).toBe('12.3');
    expect(chartValue(0.25, 'ratio')).toBe('25.0%');
    expect(chartValue(null, 'ms')).toBe('–');
  });
  it('formats percentages', () => {
    expect(percent(0)).toBe('0%');
    expect(percent(0.0004)).toBe('<0.1%');
    expect(percent(0.123)).toBe('12.3%');
  });
});
