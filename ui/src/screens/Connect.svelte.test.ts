import { describe, expect, it, vi } from 'vitest';

import type { Backend } from '../lib/backend';
import type { LiveOverview } from '../lib/live.svelte';
import { Router } from '../lib/router.svelte';
import { makeOverview, stubRuns } from '../lib/testing/fixtures';
import { byTestId, render, settle, type } from '../lib/testing/render';
import Connect from './Connect.svelte';

function fakeWindow(hash: string) {
  const w = {
    location: { hash },
    history: {
      state: null,
      replaceState: (_s: unknown, _t: string, url: string) => {
        w.location.hash = url;
      },
    },
    addEventListener: () => {},
    removeEventListener: () => {},
  };
  return w;
}

const KEY = 'pat-secret-123';

function setup(hash = '#/connect', observing = true) {
  const runs = stubRuns();
  const overview = makeOverview();
  overview.status.observe = observing ? { scope: 'global', reason: 'connected crm', set_by: 'operator:console', set_at_ms: 1_700_000_000_000 } : null;
  overview.status.held_writes = { crm: 1, billing: 3 };
  runs.connectTest.mockImplementation(async ({ key }: { key: string }) =>
    key === KEY
      ? { step: 'test', ok: true, detail: 'HubSpot CRM key reads the account', code: null }
      : { step: 'error', ok: false, detail: 'crm: the key was refused (401 from http://x)', code: 'key_refused' },
  );
  const props = (created: string[]) => ({
    properties: [
      { object: 'contact', name: 'driftless_origin', label: 'Driftless origin', type: 'string', field_type: 'text', exists: created.length > 0 },
      { object: 'contact', name: 'plan', label: 'Plan', type: 'string', field_type: 'text', exists: true },
    ],
    created,
  });
  runs.connectProperties.mockImplementation(async ({ create }: { key: string; create: boolean }) => props(create ? ['driftless_origin'] : []));
  runs.connectSaveKey.mockImplementation(async () => ({
    steps: [
      { step: 'test', ok: true, detail: 'ok', code: null },
      { step: 'store', ok: true, detail: 'no usable OS keychain here: set DRIFTLESS_SECRET_DRIFTLESS_CRM', code: null },
      { step: 'contract', ok: true, detail: 'does not apply', code: null },
      { step: 'observe', ok: true, detail: 'observe mode', code: null },
    ],
    keychain: 'driftless/crm',
    env_fallback: 'DRIFTLESS_SECRET_DRIFTLESS_CRM',
    contract_path: null,
    contract_changed: false,
    observe: true,
  }));
  runs.setWrites.mockImplementation(async (req: { on: boolean; confirm: boolean }) => ({
    observe: !req.on || !req.confirm,
    held_writes: { crm: 1, billing: 3 },
    sent: req.on && req.confirm,
    changed: true,
  }));
  const backend = { kind: 'http', where: 'http://h', ...runs } as unknown as Backend & ReturnType<typeof stubRuns>;
  const router = new Router(fakeWindow(hash));
  const live = { overview, refresh: vi.fn(async () => {}) } as unknown as LiveOverview;
  const root = render(Connect, { backend, live, router });
  return { root, backend, router, live };
}

const click = async (root: HTMLElement, id: string) => {
  (byTestId(root, id) as HTMLButtonElement).click();
  await settle();
};

describe('Connect screen', () => {
  it('takes the key in a password field and shows the specific reason a test failed', async () => {
    const { root, backend } = setup();
    const input = byTestId(root, 'connect-key') as HTMLInputElement;
    expect(input.type).toBe('password');
    expect((byTestId(root, 'connect-test') as HTMLButtonElement).disabled).toBe(true);
    type(input, 'pat-wrong');
    await click(root, 'connect-test');
    expect(backend.connectTest).toHaveBeenCalledWith({ system: 'crm', key: 'pat-wrong' });
    const r = byTestId(root, 'connect-test-result')!;
    expect(r.dataset.ok).toBe('false');
    expect(r.dataset.code).toBe('key_refused');
    expect(r.textContent).toContain('the key was refused (401');
    type(input, KEY);
    await click(root, 'connect-test');
    expect(byTestId(root, 'connect-test-result')!.dataset.ok).toBe('true');
  });

  it('previews the CRM properties and creates the missing ones only after the confirm', async () => {
    const { root, backend } = setup();
    type(byTestId(root, 'connect-key') as HTMLInputElement, KEY);
    await click(root, 'connect-preview');
    expect(backend.connectProperties).toHaveBeenCalledWith({ key: KEY, create: false });
    const rows = [...root.querySelectorAll<HTMLElement>('[data-testid="connect-property"]')];
    expect(rows.map((r) => r.dataset.exists)).toEqual(['false', 'true']);
    await click(root, 'connect-create');
    expect(backend.connectProperties).toHaveBeenCalledTimes(1);
    expect(byTestId(root, 'connect-create-confirm')!.textContent).toContain('driftless_origin');
    await click(root, 'connect-create-yes');
    expect(backend.connectProperties).toHaveBeenLastCalledWith({ key: KEY, create: true });
    expect(byTestId(root, 'connect-created')!.textContent).toContain('driftless_origin');
    expect(byTestId(root, 'connect-create')).toBeNull();
  });

  it('saves the key, clears the field and names the variable to set without a keychain', async () => {
    const { root, backend, live } = setup('#/connect?system=billing');
    expect(byTestId(root, 'connect-preview')).toBeNull();
    const input = byTestId(root, 'connect-key') as HTMLInputElement;
    type(input, 'sk_test_x');
    await click(root, 'connect-save');
    expect(backend.connectSaveKey).toHaveBeenCalledWith({ system: 'billing', key: 'sk_test_x' });
    expect(input.value).toBe('');
    expect([...root.querySelectorAll<HTMLElement>('[data-testid="connect-step"]')].map((s) => s.dataset.step)).toEqual([
      'test',
      'store',
      'contract',
      'observe',
    ]);
    expect(byTestId(root, 'connect-env-fallback')!.textContent).toContain('DRIFTLESS_SECRET_DRIFTLESS_CRM');
    expect(root.textContent).not.toContain('sk_test_x');
    expect(live.refresh).toHaveBeenCalled();
  });

  it('puts the chosen system in the address and clears the key when it changes', async () => {
    const { root, router } = setup();
    const input = byTestId(root, 'connect-key') as HTMLInputElement;
    type(input, KEY);
    (byTestId(root, 'connect-system-billing') as HTMLInputElement).click();
    await settle();
    expect(router.params.get('system')).toBe('billing');
    expect(input.value).toBe('');
  });

  it('turns writes on only after previewing the held writes, and goes back to observe', async () => {
    const { root, backend } = setup();
    expect(byTestId(root, 'connect-observe')!.dataset.observe).toBe('true');
    expect(byTestId(root, 'connect-held-billing')!.textContent).toBe('3');
    await click(root, 'connect-writes-on');
    expect(backend.setWrites).toHaveBeenCalledWith({ on: true, confirm: false, reason: null });
    expect(byTestId(root, 'connect-writes-preview')!.textContent!.replace(/\s+/g, ' ')).toContain('4 held writes will be sent: crm 1, billing 3');
    await click(root, 'connect-writes-confirm');
    expect(backend.setWrites).toHaveBeenLastCalledWith(expect.objectContaining({ on: true, confirm: true }));
    expect(byTestId(root, 'connect-writes-result')!.textContent).toContain('4 held writes are being sent');
  });

  it('offers back to observe when writes are on', async () => {
    const { root, backend } = setup('#/connect', false);
    expect(byTestId(root, 'connect-writes-on')).toBeNull();
    await click(root, 'connect-writes-off');
    expect(backend.setWrites).toHaveBeenCalledWith(expect.objectContaining({ on: false }));
    expect(byTestId(root, 'connect-writes-result')!.textContent).toContain('Observe mode');
  });
});
