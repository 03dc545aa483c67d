import { describe, expect, it } from 'vitest';

import { localToMs, msToLocal, parseIds } from './timeInput';

describe('time inputs', () => {
  it('round-trips a local minute', () => {
    const ms = localToMs('2026-11-27T16:05');
    expect(ms).not.toBeNull();
    expect(msToLocal(ms!)).toBe('2026-11-27T16:05');
  });
  it('treats empty and garbage as no bound', () => {
    expect(localToMs('')).toBeNull();
    expect(localToMs(null)).toBeNull();
    expect(localToMs('yesterday-ish')).toBeNull();
  });
  it('parses dead-letter id lists', () => {
    expect(parseIds('1,2, 3')).toEqual([1, 2, 3]);
    expect(parseIds('4,x,4,0,-2,5')).toEqual([4, 5]);
    expect(parseIds(null)).toEqual([]);
  });
});
