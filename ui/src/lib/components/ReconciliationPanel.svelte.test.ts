import { describe, expect, it, vi } from 'vitest';

import type { Backend } from '../backend';
import { makeReconciliationState, stubRuns } from '../testing/fixtures';
import { byTestId, render, settle } from '../testing/render';
import type { ReconcileReport } from '../types/ReconcileReport';
import type { ReconRunRow } from '../types/ReconRunRow';
import ReconciliationPanel from './ReconciliationPanel.svelte';

const run = (over: Partial<ReconRunRow> = {}): ReconRunRow => ({
  id: 3,
  started_at_ms: 1_700_000_000_000,
  finished_at_ms: 1_700_000_060_000,
  window_days: 7,
  trigger: 'console',
  state: 'finished',
  phase: 'done',
  cursor: null,
  pages_read: 4,
  compared: 200,
  duration_ms: 60_000,
  mismatched_records: 9,
  log: [],
  error: null,
  ...over,
});

const report = (over: Partial<ReconcileReport> = {}): ReconcileReport => ({
  run: run(),
  resumed: false,
  complete: true,
  compared: 200,
  mismatched_records: 9,
  mismatch_rate: 0.045,
  alert_threshold: 0.01,
  over_threshold: true,
  by_field: { email: 2, lifecycle_stage: 6 },
  by_rule: { duplicate_origin_marker: 1 },
  missed_events: 3,
  mismatches: [],
  gaps_resolved: [],
  repair: null,
  sent_to_review: 0,
  ...over,
});

function backend(runs = stubRuns()) {
  return { kind: 'http', where: 'http://h', ...runs } as unknown as Backend & ReturnType<typeof stubRuns>;
}

const none = { last_run: null, message: 'no reconciliation run yet' };

describe('ReconciliationPanel', () => {
  it('says nothing ran yet, names the schedule and offers Run now', async () => {
    const b = backend();
    const root = render(ReconciliationPanel, { backend: b, summary: none });
    await settle();
    expect(byTestId(root, 'reconciliation')!.textContent!.trim()).toBe('no reconciliation run yet');
    expect(root.textContent).toContain('Schedule: nightly');
    expect((byTestId(root, 'reconcile-run') as HTMLButtonElement).disabled).toBe(false);
  });

  it('starts a run, shows its progress and offers Cancel while it goes on', async () => {
    const runs = stubRuns();
    const going = makeReconciliationState({ running: true, current: run({ state: 'running', phase: 'crm:customer', finished_at_ms: null, pages_read: 2, compared: 100 }) });
    runs.startReconcile.mockResolvedValue(going);
    runs.reconciliationState.mockResolvedValueOnce(makeReconciliationState()).mockResolvedValue(going);
    const stopping = { ...going, cancelling: true };
    runs.cancelReconcile.mockResolvedValue(stopping);
    const b = backend(runs);
    const root = render(ReconciliationPanel, { backend: b, summary: none, pollMs: 10_000 });
    await settle();
    (byTestId(root, 'reconcile-run') as HTMLButtonElement).click();
    await settle();
    expect(runs.startReconcile).toHaveBeenCalledWith({ window_days: null, dry_run: false, repair: [], review: [], max_pages: null });
    expect(byTestId(root, 'reconcile-current')!.textContent).toMatch(/Running: run 3, phase crm:customer, 2 pages,\s+100 records compared so far/);
    runs.reconciliationState.mockResolvedValue(stopping);
    (byTestId(root, 'reconcile-cancel') as HTMLButtonElement).click();
    await settle();
    expect(runs.cancelReconcile).toHaveBeenCalledOnce();
    expect(byTestId(root, 'reconcile-cancel')!.textContent!.trim()).toBe('Stopping…');
  });

  it('shows the last run: over the threshold, what disagreed by field and by rule', async () => {
    const runs = stubRuns();
    runs.reconciliationState.mockResolvedValue(makeReconciliationState({ last: report() }));
    const root = render(ReconciliationPanel, {
      backend: backend(runs),
      summary: { last_run: { finished_at_ms: 1_700_000_060_000, compared: 200, mismatched: 9, mismatch_rate: 0.045 }, message: '' },
    });
    await settle();
    expect(byTestId(root, 'reconciliation')!.textContent).toContain('200 records compared');
    const last = byTestId(root, 'reconcile-last')!;
    expect(last.textContent).toContain('Over the alert threshold of 1');
    expect(last.textContent).toContain('3 missed events');
    const br = byTestId(root, 'reconcile-breakdown')!.textContent!.replace(/\s+/g, ' ');
    expect(br).toContain('lifecycle_stage 6');
    expect(br).toContain('email 2');
    expect(br).toContain('duplicate_origin_marker 1');
  });

  it('says why a start was refused and keeps the last error of a run', async () => {
    const runs = stubRuns();
    runs.reconciliationState.mockResolvedValue(makeReconciliationState({ last_error: 'billing unreachable' }));
    runs.startReconcile.mockRejectedValue({ code: 'busy', message: 'a reconciliation is already running' });
    const root = render(ReconciliationPanel, { backend: backend(runs), summary: none });
    await settle();
    expect(byTestId(root, 'reconcile-error')!.textContent).toContain('billing unreachable');
    (byTestId(root, 'reconcile-run') as HTMLButtonElement).click();
    await settle();
    expect(root.querySelector('[role="alert"]')!.textContent).toContain('a reconciliation is already running');
  });

  it('fetches the new report when the live overview says a run finished', async () => {
    const runs = stubRuns();
    const props = $state({ backend: backend(runs), summary: none as typeof none | { last_run: { finished_at_ms: number; compared: number; mismatched: number; mismatch_rate: number }; message: string } });
    render(ReconciliationPanel, props);
    await settle();
    const calls = runs.reconciliationState.mock.calls.length;
    props.summary = { last_run: { finished_at_ms: 5, compared: 1, mismatched: 0, mismatch_rate: 0 }, message: '' };
    await settle();
    expect(runs.reconciliationState.mock.calls.length).toBeGreaterThan(calls);
    vi.clearAllMocks();
  });
});
