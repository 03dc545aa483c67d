import { describe, expect, it, vi } from 'vitest';

import { byTestId, render, settle } from '../testing/render';
import AlertBanner from './AlertBanner.svelte';
import IncidentRunbook from './IncidentRunbook.svelte';

const dl = { id: 'dead_letters', message: '7 dead letters waiting (threshold 0)', screen: 'dead-letters', params: 'destination=crm' };

describe('AlertBanner', () => {
  it('is absent without alerts', () => {
    expect(byTestId(render(AlertBanner, { alerts: [] }), 'alert-banner')).toBeNull();
  });

  it('names each alert and links to the screen that explains it, with its filters', () => {
    const root = render(AlertBanner, { alerts: [dl, { id: 'mismatch_rate', message: 'mismatch 5%', screen: 'reconciliation', params: '' }] });
    expect(byTestId(root, 'alert-dead_letters')!.textContent).toContain('7 dead letters waiting');
    expect(byTestId(root, 'alert-link-dead_letters')!.getAttribute('href')).toBe('#/dead-letters?destination=crm');
    expect(byTestId(root, 'alert-link-mismatch_rate')!.getAttribute('href')).toBe('#/reconciliation');
  });
});

describe('IncidentRunbook', () => {
  it('is absent while nothing is red', () => {
    const root = render(IncidentRunbook, { alerts: [], paused: false, sinceMs: 0, onPause: async () => {} });
    expect(byTestId(root, 'runbook')).toBeNull();
  });

  it('contains in one click, with the alert as the audited reason', async () => {
    const onPause = vi.fn(async () => {});
    const root = render(IncidentRunbook, { alerts: [dl], paused: false, sinceMs: 1000, onPause });
    (byTestId(root, 'runbook-contain') as HTMLButtonElement).click();
    await settle();
    expect(onPause).toHaveBeenCalledWith('global', 'incident runbook: 7 dead letters waiting (threshold 0)');
  });

  it('links each step into the screen that does it', () => {
    const root = render(IncidentRunbook, { alerts: [dl], paused: true, sinceMs: 1000, onPause: async () => {} });
    expect(byTestId(root, 'runbook-contain')).toBeNull();
    expect(root.textContent).toContain('Outbound writes are paused');
    expect(byTestId(root, 'runbook-records')!.getAttribute('href')).toBe('#/dead-letters?destination=crm');
    expect(byTestId(root, 'runbook-changes')!.getAttribute('href')).toBe('#/audit?from=1000');
    expect(byTestId(root, 'runbook-replay')!.getAttribute('href')).toBe('#/replay?from=1000');
  });
});
