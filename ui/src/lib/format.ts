// Formatting only: the engine computes every figure; these helpers turn them into text.

/** A counter as the bare integer the engine sent (no rounding, no separators, no suffix). */
export function count(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '0';
  return String(Math.trunc(n));
}

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

/** Local wall-clock time, HH:MM:SS. */
export function clock(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Local date and time, YYYY-MM-DD HH:MM:SS. */
export function dateTime(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(ms)}`;
}

/** A moment for "since …": the clock time today, the date and time on another day. */
export function since(ms: number, nowMs: number): string {
  const a = new Date(ms);
  const b = new Date(nowMs);
  const sameDay = a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  return sameDay ? clock(ms) : dateTime(ms);
}

/** A length of time in words: "45 s", "3 min", "2 h 5 min", "3 d 4 h". */
export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

/** "just now", "12 s ago", "3 min ago". */
export function ago(thenMs: number, nowMs: number): string {
  const d = nowMs - thenMs;
  if (d < 2000) return 'just now';
  return `${duration(d)} ago`;
}

/** A pause scope in words, as the subject of a sentence. */
export function scopeLabel(scope: string): string {
  switch (scope) {
    case 'global':
      return 'All outbound writes';
    case 'crm':
      return 'Writes to the CRM';
    case 'billing':
      return 'Writes to billing';
    default:
      return `Writes to ${scope}`;
  }
}

/** A value on a chart axis or tooltip, given the chart's unit. */
export function chartValue(v: number | null | undefined, unit: string): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (unit === 'ratio') return percent(v);
  const abs = Math.abs(v);
  const text = abs >= 100 || Number.isInteger(v) ? String(Math.round(v)) : abs >= 10 ? v.toFixed(1) : v.toFixed(2);
  return unit === 'ms' ? `${text} ms` : text;
}

/** 0.0123 → "1.2%". */
export function percent(ratio: number): string {
  if (!Number.isFinite(ratio)) return '–';
  const p = ratio * 100;
  if (p === 0) return '0%';
  if (Math.abs(p) < 0.1) return '<0.1%';
  return `${p.toFixed(1)}%`;
}

/** The window title. */
export function documentTitle(paused: boolean, observing = false): string {
  if (paused) return 'driftless — PAUSED';
  return observing ? 'driftless — OBSERVING' : 'driftless';
}
