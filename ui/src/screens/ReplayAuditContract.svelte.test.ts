// The Replay, Audit log and Contract screens against a fake backend: what they ask the engine
// for (selection, filters from the address), what they show, and the paused → resume → run flow.

import { describe, expect, it, vi } from 'vitest';

import type { Backend } from '../lib/backend';
import { ApiFailure } from '../lib/errors';
import type { LiveOverview } from '../lib/live.svelte';
import { Router } from '../lib/router.svelte';
import { stubRuns } from '../lib/testing/fixtures';
import { byTestId, render, settle, type } from '../lib/testing/render';
import type { ContractInfo } from '../lib/types/ContractInfo';
import type { ReplayPreview } from '../lib/types/ReplayPreview';
import type { ReplayRun } from '../lib/types/ReplayRun';
import Audit from './Audit.svelte';
import Contract from './Contract.svelte';
import Replay from './Replay.svelte';

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

function backend() {
  return {
    kind: 'http' as const,
    where: 'http://127.0.0.1:4567',
    overview: vi.fn(),
    status: vi.fn(),
    pauseOutbound: vi.fn(),
    resumeOutbound: vi.fn(async () => ({ scope: 'global', paused: false, changed: true })),
    ...stubRuns(),
    subscribe: () => () => {},
  } satisfies Backend;
}

const preview = (over: Partial<ReplayPreview> = {}): ReplayPreview => ({
  records: 1,
  previewed: 1,
  creates: 0,
  updates: 2,
  noops: 0,
  conflicts: 1,
  keys_already_used: 0,
  unreadable: 0,
  samples: [
    {
      record: 'customer:crm:7',
      kind: 'update',
      destination: 'billing',
      values: '{"email":"a@b"}',
      rules: ['owner_wins'],
      idempotency_key: 'k1',
      key_used_by: null,
    },
  ],
  queued: false,
  run_id: null,
  selector: null,
  ...over,
});

const run = (over: Partial<ReplayRun> = {}): ReplayRun => ({
  id: 4,
  started_by: 'operator:console',
  reason: 'replay',
  selector: null,
  started_at_ms: 1_700_000_000_000,
  state: 'running',
  finished_at_ms: null,
  cancelled_by: null,
  records: 1,
  pending: 1,
  done: 0,
  cancelled: 0,
  joined: 0,
  ...over,
});

describe('Replay screen', () => {
  it('while the console knows writes are paused, offers resume-then-run instead of a run that would be refused', async () => {
    const b = backend();
    b.replay = vi.fn().mockResolvedValueOnce(preview()).mockResolvedValueOnce(preview({ queued: true, run_id: 5 }));
    b.replayRun = vi.fn(async ({ id }: { id: number | null }) => (id == null ? null : run({ id: 5 })));
    const router = new Router(fakeWindow('#/replay?record=a%40b.test') as unknown as Window);
    const live = {
      paused: [{ scope: 'global', reason: 'incident', set_by: 'operator:console', set_at_ms: 1 }],
      refresh: vi.fn(async () => {}),
    } as unknown as LiveOverview;
    const root = render(Replay, { backend: b, live, router, pollMs: 60_000 });
    await settle();
    expect(byTestId(root, 'replay-run')).toBeNull();
    byTestId(root, 'replay-resume-run')!.click();
    await settle();
    expect(b.resumeOutbound).toHaveBeenCalledWith({ scope: 'global', reason: expect.stringContaining('replay') });
    expect(b.replay).toHaveBeenNthCalledWith(2, expect.objectContaining({ dry_run: false }));
    expect(b.replayRun).toHaveBeenCalledWith({ id: 5 });
  });

  it('previews the selection from the address, is refused while paused, resumes then runs and follows the run', async () => {
    const b = backend();
    b.replay = vi
      .fn()
      .mockResolvedValueOnce(preview())
      .mockRejectedValueOnce(new ApiFailure({ code: 'paused', message: 'outbound writes are paused (global); resume first, then replay' }))
      .mockResolvedValueOnce(preview({ queued: true, run_id: 4 }));
    let engineRun = run();
    b.replayRun = vi.fn(async ({ id }: { id: number | null }) => (id == null ? null : engineRun));
    b.cancelReplay = vi.fn(async () => (engineRun = run({ state: 'cancelled', pending: 0, cancelled: 1 })));
    const win = fakeWindow('#/replay?record=a%40b.test');
    const router = new Router(win as unknown as Window);
    // The live overview has not seen the pause yet: the engine's refusal is what says so.
    const live = { paused: [], refresh: vi.fn(async () => {}) } as unknown as LiveOverview;
    const root = render(Replay, { backend: b, live, router, pollMs: 60_000 });
    await settle();
    expect(b.replay).toHaveBeenNthCalledWith(1, {
      selector: { record: 'a@b.test', dead_letter_ids: [], from_ms: null, to_ms: null },
      dry_run: true,
    });
    expect(byTestId(root, 'replay-count-update')!.textContent).toBe('2');
    expect(byTestId(root, 'replay-count-conflict')!.textContent).toBe('1');
    expect(root.querySelectorAll('[data-testid="replay-sample"]').length).toBe(1);

    byTestId(root, 'replay-run')!.click();
    await settle();
    expect(b.replay).toHaveBeenNthCalledWith(2, expect.objectContaining({ dry_run: false }));
    expect(byTestId(root, 'replay-paused')!.textContent).toContain('outbound writes are paused (global)');
    expect(b.replayRun).not.toHaveBeenCalledWith({ id: 4 });

    byTestId(root, 'replay-resume-run')!.click();
    await settle();
    expect(b.resumeOutbound).toHaveBeenCalledWith({ scope: 'global', reason: expect.stringContaining('replay') });
    expect(b.replay).toHaveBeenCalledTimes(3);
    expect(b.replayRun).toHaveBeenCalledWith({ id: 4 });
    expect(win.location.hash).toContain('run=4');
    expect(byTestId(root, 'replay-paused')).toBeNull();
    expect(byTestId(root, 'replay-run-status')!.dataset.state).toBe('running');
    expect(byTestId(root, 'replay-progress')!.textContent).toContain('0 of 1 record done');

    byTestId(root, 'replay-cancel')!.click();
    await settle();
    expect(b.cancelReplay).toHaveBeenCalledWith({ id: 4 });
    expect(byTestId(root, 'replay-run-status')!.dataset.state).toBe('cancelled');
  });

  it('runs the selection the engine previewed: an open-ended time range stays closed where the preview closed it', async () => {
    const b = backend();
    const from = new Date(2026, 10, 28, 4, 0).getTime();
    const pinned = { record: null, dead_letter_ids: [], from_ms: from, to_ms: from + 3_600_000 };
    b.replay = vi
      .fn()
      .mockResolvedValueOnce(preview({ records: 4, selector: pinned }))
      .mockResolvedValueOnce(preview({ records: 4, selector: pinned, queued: true, run_id: 6 }));
    b.replayRun = vi.fn(async ({ id }: { id: number | null }) => (id == null ? null : run({ id: 6, records: 4, pending: 4 })));
    const router = new Router(fakeWindow('#/replay?from=2026-11-28T04%3A00') as unknown as Window);
    const live = { paused: [], refresh: vi.fn(async () => {}) } as unknown as LiveOverview;
    const root = render(Replay, { backend: b, live, router, pollMs: 60_000 });
    await settle();
    expect(b.replay).toHaveBeenNthCalledWith(1, {
      selector: { record: null, dead_letter_ids: [], from_ms: from, to_ms: null },
      dry_run: true,
    });
    expect(byTestId(root, 'replay-pinned-to')!.textContent).toContain('2026-11-28 05:00');
    byTestId(root, 'replay-run')!.click();
    await settle();
    expect(b.replay).toHaveBeenNthCalledWith(2, { selector: pinned, dry_run: false });
  });

  it('takes dead letters from the address and asks for a new preview once the selection changes', async () => {
    const b = backend();
    b.replay = vi.fn(async () => preview());
    const router = new Router(fakeWindow('#/replay?dead_letters=3,5') as unknown as Window);
    const live = { paused: [], refresh: vi.fn() } as unknown as LiveOverview;
    const root = render(Replay, { backend: b, live, router });
    await settle();
    expect(b.replay).toHaveBeenCalledWith({
      selector: { record: null, dead_letter_ids: [3, 5], from_ms: null, to_ms: null },
      dry_run: true,
    });
    expect(byTestId(root, 'replay-run')).not.toBeNull();
    type(byTestId(root, 'replay-dead-letters') as HTMLInputElement, '3');
    await settle();
    expect(byTestId(root, 'replay-run')).toBeNull();
  });
});

describe('Replay screen on arrival', () => {
  it('shows a replay run still going on', async () => {
    const b = backend();
    b.replayRun = vi.fn(async ({ id }: { id: number | null }) => run({ id: id ?? 9, records: 3, pending: 2, done: 1 }));
    const router = new Router(fakeWindow('#/replay') as unknown as Window);
    const root = render(Replay, { backend: b, live: { paused: [] } as unknown as LiveOverview, router, pollMs: 60_000 });
    await settle();
    expect(b.replayRun).toHaveBeenCalledWith({ id: null });
    expect(b.replayRun).toHaveBeenCalledWith({ id: 9 });
    expect(byTestId(root, 'replay-progress')!.textContent).toContain('1 of 3 records done, 2 with queued');
    expect(b.replay).not.toHaveBeenCalled();
  });
});

describe('Audit screen', () => {
  it('lists with the filters in the address, writes new ones back, pages and exports the filtered set', async () => {
    const b = backend();
    b.listAudit = vi.fn(async () => ({
      total: 120,
      record: null,
      items: [
        {
          id: 9,
          at_ms: 1_700_000_000_000,
          record: 'customer:crm:7',
          inbox_id: null,
          outbox_id: null,
          actor: 'operator:console',
          action: 'replay',
          rule: 'operator',
          contract_version: null,
          detail: '{"reason":"replay","run":4}',
        },
      ],
    }));
    b.auditCsv = vi.fn(async () => 'id\n9\n');
    const win = fakeWindow('#/audit?actor=operator%3A');
    const router = new Router(win as unknown as Window);
    const live = { paused: [] } as unknown as LiveOverview;
    URL.createObjectURL = vi.fn(() => 'blob:x');
    URL.revokeObjectURL = vi.fn();
    const clicked = vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(() => {});
    const root = render(Audit, { backend: b, live, router, pageSize: 50 });
    await settle();
    expect(b.listAudit).toHaveBeenLastCalledWith(expect.objectContaining({ actor: 'operator:', action: null, limit: 50, offset: 0 }));
    expect((byTestId(root, 'audit-actor') as HTMLInputElement).value).toBe('operator:');
    expect(byTestId(root, 'audit-total')!.dataset.total).toBe('120');
    expect(root.querySelectorAll('[data-testid="audit-row"]').length).toBe(1);

    type(byTestId(root, 'audit-action') as HTMLInputElement, 'replay');
    byTestId(root, 'audit-apply')!.click();
    await settle();
    expect(win.location.hash).toBe('#/audit?actor=operator%3A&action=replay');
    expect(b.listAudit).toHaveBeenLastCalledWith(expect.objectContaining({ actor: 'operator:', action: 'replay' }));

    byTestId(root, 'audit-next')!.click();
    await settle();
    expect(win.location.hash).toContain('page=2');
    expect(b.listAudit).toHaveBeenLastCalledWith(expect.objectContaining({ offset: 50 }));

    byTestId(root, 'audit-export')!.click();
    await settle();
    expect(b.auditCsv).toHaveBeenCalledWith(expect.objectContaining({ actor: 'operator:', action: 'replay', limit: null, offset: null }));
    expect(clicked).toHaveBeenCalledTimes(1);
    clicked.mockRestore();
  });
});

describe('Contract screen', () => {
  const objects: ContractInfo['objects'] = [
    {
      name: 'customer',
      crm: 'contact',
      billing: 'customer',
      create_in: 'billing',
      fields: [
        { name: 'email', crm: 'email', billing: 'email', owner: 'crm', conflict_rule: null, on_non_owner_edit: 'revert' },
        { name: 'phone', crm: 'phone', billing: 'phone', owner: 'shared', conflict_rule: 'review', on_non_owner_edit: null },
      ],
    },
  ];

  it('says the demo runs on the embedded default and shows every mapped field', async () => {
    const b = backend();
    b.contractInfo = vi.fn(async () => ({
      name: 'default',
      version: 'abc123',
      path: null,
      embedded: true,
      file_version: null,
      read_error: null,
      issues: [],
      objects,
    }));
    const router = new Router(fakeWindow('#/contract') as unknown as Window);
    const root = render(Contract, { backend: b, live: {} as LiveOverview, router });
    await settle();
    expect(byTestId(root, 'contract-version')!.textContent).toBe('abc123');
    expect(byTestId(root, 'contract-source')!.textContent).toContain('embedded default contract');
    const rows = [...root.querySelectorAll<HTMLElement>('[data-testid="contract-field"]')];
    expect(rows.map((r) => r.dataset.field)).toEqual(['email', 'phone']);
    expect(rows[1].textContent).toContain('review');
  });

  it('lists the file problems at file:line:column', async () => {
    const b = backend();
    b.contractInfo = vi.fn(async () => ({
      name: 'mine',
      version: 'v1',
      path: '/etc/driftless.toml',
      embedded: false,
      file_version: 'v2',
      read_error: null,
      issues: [{ file: '/etc/driftless.toml', line: 12, column: 9, field: 'objects.customer.fields[1].owner', message: 'one of crm, billing, shared' }],
      objects,
    }));
    const router = new Router(fakeWindow('#/contract') as unknown as Window);
    const root = render(Contract, { backend: b, live: {} as LiveOverview, router });
    await settle();
    expect(byTestId(root, 'contract-validation')!.dataset.valid).toBe('false');
    expect(byTestId(root, 'contract-issue')!.textContent).toContain('/etc/driftless.toml:12:9');
  });
});
