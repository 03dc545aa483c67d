import { describe, expect, it, vi } from 'vitest';

import { byTestId, render, settle } from '../testing/render';
import PauseBanner from './PauseBanner.svelte';

const setAt = new Date(2024, 4, 1, 9, 30, 0).getTime();

describe('PauseBanner', () => {
  it('renders nothing when nothing is paused', () => {
    const root = render(PauseBanner, { paused: [], now: setAt, onResume: async () => {} });
    expect(byTestId(root, 'pause-banner')).toBeNull();
  });

  it('says what is paused, by whom, why and since when', () => {
    const root = render(PauseBanner, {
      paused: [{ scope: 'global', reason: 'billing migration', set_by: 'operator:console', set_at_ms: setAt }],
      now: setAt + 5 * 60_000,
      onResume: async () => {},
    });
    const text = byTestId(root, 'pause-banner')!.textContent!.replace(/\s+/g, ' ');
    expect(text).toContain('All outbound writes paused');
    expect(text).toContain('operator:console');
    expect(text).toContain('billing migration');
    expect(text).toContain('since 09:30:00 (5 min ago)');
    expect(byTestId(root, 'resume-global')).not.toBeNull();
  });

  it('has one Resume per paused scope and calls it with that scope', async () => {
    const onResume = vi.fn(async () => {});
    const root = render(PauseBanner, {
      paused: [
        { scope: 'crm', reason: null, set_by: 'cli', set_at_ms: setAt },
        { scope: 'billing', reason: 'stripe incident', set_by: 'operator:console', set_at_ms: setAt },
      ],
      now: setAt,
      onResume,
    });
    expect(root.textContent).toContain('no reason given');
    (byTestId(root, 'resume-billing') as HTMLButtonElement).click();
    await settle();
    expect(onResume).toHaveBeenCalledWith('billing');
    expect(byTestId(root, 'resume-crm')).not.toBeNull();
    expect(byTestId(root, 'resume-global')).toBeNull();
  });

  it('shows a failed resume in words', async () => {
    const root = render(PauseBanner, {
      paused: [{ scope: 'global', reason: 'r', set_by: 'x', set_at_ms: setAt }],
      now: setAt,
      where: 'http://127.0.0.1:9',
      onResume: async () => {
        throw { code: 'engine_unreachable', message: 'Failed to fetch' };
      },
    });
    (byTestId(root, 'resume-global') as HTMLButtonElement).click();
    await settle();
    expect(root.querySelector('[role="alert"]')!.textContent).toContain(
      'The driftless engine is not answering at http://127.0.0.1:9',
    );
  });
});
