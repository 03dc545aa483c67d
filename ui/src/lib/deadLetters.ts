// The Dead letters screen's logic without the DOM: the filters ⇄ the address, the window of
// rows a scroll position shows, and a page cache that asks the engine (limit/offset) only for
// the pages on screen — so 100,000 dead letters cost a few requests and a few dozen rows.

import type { DeadLetter } from './types/DeadLetter';
import type { DeadLetterFilter } from './types/DeadLetterFilter';
import type { DeadLetterList } from './types/DeadLetterList';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;

/** Age choices: the address keeps the key, the engine gets min/max age. */
export const AGES: { key: string; label: string; min: number | null; max: number | null }[] = [
  { key: '', label: 'any age', min: null, max: null },
  { key: 'lt1h', label: 'newer than 1 hour', min: null, max: HOUR_MS },
  { key: 'lt1d', label: 'newer than 1 day', min: null, max: DAY_MS },
  { key: 'gt1d', label: 'older than 1 day', min: DAY_MS, max: null },
  { key: 'gt7d', label: 'older than 7 days', min: 7 * DAY_MS, max: null },
];

export const ERROR_CLASSES = ['validation', 'exhausted', 'auth', 'not_found'];

/** The screen's filters as the address holds them (empty = not set). */
export type DlParams = { destination: string; error_class: string; object: string; age: string; q: string };

export function readParams(p: URLSearchParams): DlParams {
  return {
    destination: p.get('destination') ?? '',
    error_class: p.get('error_class') ?? '',
    object: p.get('object') ?? '',
    age: p.get('age') ?? '',
    q: p.get('q') ?? '',
  };
}

/** The engine's filter for the address's filters (open dead letters only). */
export function toFilter(x: DlParams): DeadLetterFilter {
  const age = AGES.find((a) => a.key === x.age) ?? AGES[0];
  const s = (v: string) => (v.trim() === '' ? null : v.trim());
  return {
    destination: s(x.destination),
    error_class: s(x.error_class),
    object: s(x.object),
    min_age_ms: age.min,
    max_age_ms: age.max,
    text: s(x.q),
    ids: [],
    include_resolved: false,
    limit: null,
    offset: null,
  };
}

/** Rows to render for a scroll position: the visible ones plus `overscan` on each side. */
export function visibleRange(
  scrollTop: number,
  viewport: number,
  rowHeight: number,
  total: number,
  overscan = 8,
): { start: number; end: number } {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const count = Math.ceil(Math.max(0, viewport) / rowHeight) + 1;
  const start = Math.max(0, first - overscan);
  const end = Math.min(total, first + count + overscan);
  return { start, end: Math.max(start, end) };
}

/**
 * Rows are keyed by their slot (`index % ROW_SLOTS`), not their index: when the window moves,
 * the row elements that leave at one end are reused at the other with new text instead of
 * being destroyed and built again. A window never holds more than ROW_SLOTS rows, so slots
 * stay unique.
 */
export const ROW_SLOTS = 256;

/** Page numbers covering rows [start, end). */
export function pagesFor(start: number, end: number, pageSize: number): number[] {
  if (end <= start) return [];
  const out = [];
  for (let p = Math.floor(start / pageSize); p <= Math.floor((end - 1) / pageSize); p++) out.push(p);
  return out;
}

/**
 * Pages of one filter's result, fetched on demand. A new filter means a new cache (answers
 * for an old one are dropped by the screen's generation check). Kept pages are bounded:
 * the farthest from the last request go first.
 */
export class PageCache {
  readonly pageSize: number;
  private readonly maxPages: number;
  private readonly fetchPage: (offset: number, limit: number) => Promise<DeadLetterList>;
  private readonly pages = new Map<number, DeadLetter[]>();
  private readonly inflight = new Map<number, Promise<void>>();
  total: number | null = null;

  constructor(fetchPage: (offset: number, limit: number) => Promise<DeadLetterList>, pageSize = 100, maxPages = 50) {
    this.fetchPage = fetchPage;
    this.pageSize = pageSize;
    this.maxPages = maxPages;
  }

  row(i: number): DeadLetter | undefined {
    return this.pages.get(Math.floor(i / this.pageSize))?.[i % this.pageSize];
  }

  has(page: number): boolean {
    return this.pages.has(page);
  }

  /** Fetch the pages covering [start, end) that are neither held nor on their way. */
  async ensure(start: number, end: number): Promise<boolean> {
    const want = pagesFor(start, end, this.pageSize).filter((p) => !this.pages.has(p));
    if (want.length === 0) return false;
    await Promise.all(want.map((p) => this.load(p)));
    this.evict(Math.floor(start / this.pageSize));
    return true;
  }

  private load(p: number): Promise<void> {
    let f = this.inflight.get(p);
    if (!f) {
      f = this.fetchPage(p * this.pageSize, this.pageSize)
        .then((l) => {
          this.pages.set(p, l.items);
          this.total = l.total;
        })
        .finally(() => this.inflight.delete(p));
      this.inflight.set(p, f);
    }
    return f;
  }

  private evict(near: number): void {
    if (this.pages.size <= this.maxPages) return;
    const far = [...this.pages.keys()].sort((a, b) => Math.abs(b - near) - Math.abs(a - near));
    for (const p of far.slice(0, this.pages.size - this.maxPages)) this.pages.delete(p);
  }
}

/** Cents as money ("€1,234.50" style without a currency we do not know). */
const MONEY = new Intl.NumberFormat('en', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
export function money(cents: number): string {
  // One formatter for every row: building one per call costs more than drawing the row.
  return MONEY.format(cents / 100);
}

/** Pretty-print a JSON text for the drawer; anything else as it is. */
export function pretty(text: string | null | undefined): string {
  if (text == null || text === '') return '—';
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
