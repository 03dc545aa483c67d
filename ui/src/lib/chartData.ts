// Shapes an overview chart for uPlot: one shared x axis (seconds) and one y array per series,
// with null where a series has no value for that minute (drawn as a gap, not as zero).

import type { Series } from './types/Series';

export type Aligned = [number[], ...(number | null)[][]];

export function align(series: Series[]): Aligned {
  const xs = new Set<number>();
  for (const s of series) for (const p of s.points) xs.add(p.t_ms);
  const times = [...xs].sort((a, b) => a - b);
  const ys = series.map((s) => {
    const byT = new Map(s.points.map((p) => [p.t_ms, p.v] as const));
    return times.map((t) => byT.get(t) ?? null);
  });
  return [times.map((t) => t / 1000), ...ys];
}

export function hasPoints(series: Series[]): boolean {
  return series.some((s) => s.points.length > 0);
}

/** The shortest span shown, so a young engine's first minutes are readable. */
const MIN_SPAN_S = 15 * 60;

/**
 * The x range shown, in seconds: the last hour, or less while there is less history
 * (never under 15 minutes), ending at the current minute's end.
 */
export function xWindow(nowMs: number, firstPointMs: number | null): [number, number] {
  const end = Math.ceil(nowMs / 60_000) * 60;
  const hour = end - 3600;
  if (firstPointMs === null) return [end - MIN_SPAN_S, end];
  const start = Math.min(firstPointMs / 1000 - 60, end - MIN_SPAN_S);
  return [Math.max(hour, start), end];
}

export function firstPoint(series: Series[]): number | null {
  let first: number | null = null;
  for (const s of series) for (const p of s.points) if (first === null || p.t_ms < first) first = p.t_ms;
  return first;
}

export const PALETTE = ['#2563eb', '#d97706', '#7c3aed', '#0d9488'];

/** The x range (seconds) covering every point, padded by 2% (at least a minute) each side. */
export function fitWindow(series: Series[]): [number, number] {
  let lo: number | null = null;
  let hi: number | null = null;
  for (const s of series)
    for (const p of s.points) {
      if (lo === null || p.t_ms < lo) lo = p.t_ms;
      if (hi === null || p.t_ms > hi) hi = p.t_ms;
    }
  if (lo === null || hi === null) {
    const now = Math.ceil(Date.now() / 60_000) * 60;
    return [now - 3600, now];
  }
  const pad = Math.max(60, (hi - lo) / 1000 / 50);
  return [lo / 1000 - pad, hi / 1000 + pad];
}
