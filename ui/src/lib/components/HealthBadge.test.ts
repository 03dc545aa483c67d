import { describe, expect, it } from 'vitest';

import { byTestId, render } from '../testing/render';
import HealthBadge from './HealthBadge.svelte';

describe('HealthBadge', () => {
  it('shows running with its state in data-state', () => {
    const root = render(HealthBadge, { health: { state: 'running', reasons: [] } });
    const el = byTestId(root, 'health')!;
    expect(el.dataset.state).toBe('running');
    expect(el.textContent).toContain('Running');
    expect(byTestId(root, 'health-reasons')).toBeNull();
  });

  it('lists the reasons when degraded', () => {
    const reasons = ['CRM unreachable: connection refused', '12 dead letters waiting (threshold 10)'];
    const root = render(HealthBadge, { health: { state: 'degraded', reasons } });
    expect(byTestId(root, 'health')!.dataset.state).toBe('degraded');
    const items = [...root.querySelectorAll('[data-testid="health-reasons"] li')].map((li) => li.textContent);
    expect(items).toEqual(reasons);
  });

  it('shows paused', () => {
    const root = render(HealthBadge, {
      health: { state: 'paused', reasons: ['all outbound writes paused by operator:console: deploy'] },
    });
    expect(byTestId(root, 'health')!.dataset.state).toBe('paused');
    expect(root.textContent).toContain('Paused');
    expect(root.textContent).toContain('deploy');
  });
});
