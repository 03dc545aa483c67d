// `<input type="datetime-local">` values (local time, `2026-11-27T16:05`) ⇄ Unix ms, for
// time-range filters kept in the address as the input shows them.

/** Unix ms of a datetime-local value, or null when empty or not a time. */
export function localToMs(v: string | null | undefined): number | null {
  if (!v) return null;
  const ms = new Date(v).getTime();
  return Number.isFinite(ms) ? ms : null;
}

/** The datetime-local value (minutes, local time) of Unix ms. */
export function msToLocal(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => `${n}`.padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** `1,2, 3` → [1, 2, 3] (positive integers only, no repeats). */
export function parseIds(v: string | null | undefined): number[] {
  if (!v) return [];
  const out: number[] = [];
  for (const part of v.split(/[\s,]+/)) {
    if (!/^\d+$/.test(part)) continue;
    const n = Number(part);
    if (n > 0 && !out.includes(n)) out.push(n);
  }
  return out;
}
