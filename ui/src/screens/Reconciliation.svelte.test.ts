// The Reconciliation screen against a fake backend: runs and the selected run's report, the
// field / rule filters in the address, run now → progress → cancel, the two-step repair
// (preview, then repair with the same records) and the refusal shown in words.

import { describe, expect, it, vi } from 'vitest';

vi.hoisted(() => {
  // uPlot asks for the pixel ratio when it loads; jsdom has no matchMedia nor ResizeObserver.
  window.matchMedia ??= ((q: string) => ({
    matches: false,
    media: q,
    addEventListener() {},
    removeEventListener() {},
  })) as unknown as typeof window.matchMedia;
  globalThis.ResizeObserver ??= class {
    observe() {}
    unobserve() {}
    disconnect() {}
  } as unknown as typeof ResizeObserver;
  // jsdom draws nothing: a 2D context whose every method does nothing.
  const noop = () => {};
  const ctx: object = new Proxy({}, { get: (_t, k) => (k === 'measureText' ? () => ({ width: 0 }) : noop), set: () => true });
  HTMLCanvasElement.prototype.getContext = (() => ctx) as unknown as typeof HTMLCanvasElement.prototype.getContext;
  (globalThis as { Path2D?: unknown }).Path2D ??= class {
    constructor() {
      return new Proxy(this, { get: () => noop });
    }
  };
});

import type { Backend } from '../lib/backend';
import { ApiFailure } from '../lib/errors';
import type { LiveOverview } from '../lib/live.svelte';
import { Router } from '../lib/router.svelte';
import { makeReconciliationState, stubRuns } from '../lib/testing/fixtures';
import { byTestId, render, settle } from '../lib/testing/render';
import type { ReconcileReport } from '../lib/types/ReconcileReport';
import type { ReconRunSummary } from '../lib/types/ReconRunSummary';
import type { ReplayPreview } from '../lib/types/ReplayPreview';
import Reconciliation from './Reconciliation.svelte';

function fakeWindow(hash: string) {
  const w = {
    location: { hash },
    history: {
      state: null,
      replaceState: (_s: unknown, _t: string, h: string) => {
        w.location.hash = h;
      },
    },
    addEventListener() {},
    removeEventListener() {},
  };
  return w;
}

const run = (id: number, mismatched: number): ReconRunSummary => ({
  id,
  started_at_ms: 1_700_000_000_000 + id * 60_000,
  finished_at_ms: 1_700_000_030_000 + id * 60_000,
  window_days: 7,
  trigger: 'console',
  compared: 10,
  mismatched,
  mismatch_rate: mismatched / 10,
  duration_ms: 1200,
});

function report(id: number, repair: ReplayPreview | null = null): ReconcileReport {
  const m = (entity_key: string, kind: string, name: string, crm: string | null, billing: string | null) => ({
    entity_key,
    kind,
    name,
    crm_value: crm,
    billing_value: billing,
    owner: kind === 'field' ? 'crm' : null,
    detail: null,
    first_seen_ms: 1_700_000_000_000,
  });
  return {
    run: {
      id,
      started_at_ms: 1_700_000_000_000,
      finished_at_ms: 1_700_000_030_000,
      window_days: 7,
      trigger: 'console',
      state: 'finished',
      phase: 'done',
      cursor: null,
      pages_read: 3,
      compared: 10,
      duration_ms: 1200,
      mismatched_records: 2,
      log: [],
      error: null,
    },
    resumed: false,
    complete: true,
    compared: 10,
    mismatched_records: 2,
    mismatch_rate: 0.2,
    alert_threshold: 0.01,
    over_threshold: true,
    by_field: { email: 1 },
    by_rule: { billing_id_missing: 1 },
    missed_events: 0,
    mismatches: [
      m('customer:crm:1', 'field', 'email', 'a@x.test', 'b@x.test'),
      m('customer:crm:2', 'rule', 'billing_id_missing', 'cus_9', null),
    ],
    gaps_resolved: [],
    repair,
    sent_to_review: 0,
  };
}

const preview = (queued: boolean): ReplayPreview => ({
  records: 1,
  previewed: 1,
  creates: 0,
  updates: 1,
  noops: 0,
  conflicts: 0,
  keys_already_used: 0,
  unreadable: 0,
  samples: [{ record: 'customer:crm:1', kind: 'update', destination: 'billing', values: '{"email":"a@x.test"}', rules: [], idempotency_key: 'k', key_used_by: null }],
  queued,
  run_id: queued ? 5 : null,
  selector: null,
});

function backend() {
  const b = {
    kind: 'http' as const,
    where: 'http://127.0.0.1:4567',
    overview: vi.fn(),
    status: vi.fn(),
    pauseOutbound: vi.fn(),
    resumeOutbound: vi.fn(),
    ...stubRuns(),
    subscribe: () => () => {},
  } satisfies Backend;
  b.reconcileRuns = vi.fn(async () => [run(8, 2), run(7, 0)]);
  b.reconcileReport = vi.fn(async ({ id }: { id: number }) => report(id));
  return b;
}

const mount = (b: Backend, hash = '#/reconciliation') => {
  const router = new Router(fakeWindow(hash) as unknown as Window);
  const root = render(Reconciliation, { backend: b, live: {} as LiveOverview, router, idleMs: 60_000 });
  return { root, router };
};

describe('Reconciliation screen', () => {
  it('lists runs newest first and shows the latest run with its mismatches by field and rule', async () => {
    const b = backend();
    const { root } = mount(b);
    await settle();
    const rows = [...root.querySelectorAll<HTMLElement>('[data-testid="recon-run-row"]')];
    expect(rows.map((r) => r.dataset.id)).toEqual(['8', '7']);
    expect(rows[0].textContent).toContain('20.0%');
    expect(b.reconcileReport).toHaveBeenCalledWith({ id: 8 });
    expect(byTestId(root, 'recon-report')!.dataset.run).toBe('8');
    expect(byTestId(root, 'recon-by-field')!.textContent).toContain('email');
    expect(byTestId(root, 'recon-by-rule')!.textContent).toContain('billing_id_missing');
    expect(root.querySelectorAll('[data-testid="recon-mismatch"]').length).toBe(2);
    expect(byTestId(root, 'recon-preview')).not.toBeNull();
  });

  it('keeps the field filter in the address and filters the rows', async () => {
    const b = backend();
    const { root, router } = mount(b, '#/reconciliation?run=8');
    await settle();
    byTestId(root, 'recon-by-field')!.querySelector<HTMLButtonElement>('button')!.click();
    await settle();
    expect(router.params.get('field')).toBe('email');
    const shown = [...root.querySelectorAll<HTMLElement>('[data-testid="recon-mismatch"]')];
    expect(shown.map((r) => r.dataset.record)).toEqual(['customer:crm:1']);
  });

  it('offers no repair on an older run', async () => {
    const b = backend();
    const { root } = mount(b, '#/reconciliation?run=7');
    await settle();
    expect(b.reconcileReport).toHaveBeenCalledWith({ id: 7 });
    expect(byTestId(root, 'recon-stale')).not.toBeNull();
    expect(byTestId(root, 'recon-preview')).toBeNull();
    expect(root.querySelector('[data-testid="recon-mismatch"] input')).toBeNull();
  });

  it('previews the selected record first, then repairs exactly that selection', async () => {
    const b = backend();
    b.reconcileRepair = vi.fn(async (req) => report(8, preview(!req.dry_run)));
    const { root } = mount(b);
    await settle();
    root.querySelector<HTMLInputElement>('[data-record="customer:crm:1"] input')!.click();
    await settle();
    expect(byTestId(root, 'recon-repair-run')).toBeNull();
    byTestId(root, 'recon-preview')!.click();
    await settle();
    expect(b.reconcileRepair).toHaveBeenLastCalledWith({ run_id: 8, records: ['customer:crm:1'], review: [], dry_run: true });
    const p = byTestId(root, 'recon-preview-result')!;
    expect(p.dataset.updates).toBe('1');
    expect(p.textContent).toContain('a@x.test');
    byTestId(root, 'recon-repair-run')!.click();
    await settle();
    expect(b.reconcileRepair).toHaveBeenLastCalledWith({ run_id: 8, records: ['customer:crm:1'], review: [], dry_run: false });
    expect(byTestId(root, 'recon-repaired')!.dataset.run).toBe('5');
  });

  it('shows a refusal in words', async () => {
    const b = backend();
    b.reconcileRepair = vi.fn(async () => {
      throw new ApiFailure({ code: 'bad_request', message: 'run 8 is not the latest finished reconciliation' });
    });
    const { root } = mount(b);
    await settle();
    byTestId(root, 'recon-preview')!.click();
    await settle();
    expect(byTestId(root, 'recon-error')!.textContent).toContain('not the latest');
  });

  it('starts a run, shows its progress and cancels it', async () => {
    const b = backend();
    const going = makeReconciliationState({
      running: true,
      current: { ...report(9).run, state: 'running', phase: 'crm:customer', finished_at_ms: null },
    });
    b.startReconcile = vi.fn(async () => going);
    b.cancelReconcile = vi.fn(async () => ({ ...going, cancelling: true }));
    b.reconciliationState = vi.fn(async () => makeReconciliationState());
    const { root } = mount(b);
    await settle();
    b.reconciliationState = vi.fn(async () => going);
    byTestId(root, 'recon-run')!.click();
    await settle();
    expect(b.startReconcile).toHaveBeenCalledTimes(1);
    expect(byTestId(root, 'recon-progress')!.dataset.phase).toBe('crm:customer');
    byTestId(root, 'recon-cancel')!.click();
    await settle();
    expect(b.cancelReconcile).toHaveBeenCalledTimes(1);
  });
});
