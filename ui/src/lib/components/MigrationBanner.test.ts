import { describe, expect, it } from 'vitest';

import { byTestId, render } from '../testing/render';
import MigrationBanner from './MigrationBanner.svelte';

const at = 1_700_000_000_000;

describe('MigrationBanner', () => {
  it('renders nothing outside migration mode', () => {
    const root = render(MigrationBanner, { migration: null, now: at });
    expect(byTestId(root, 'migration-banner')).toBeNull();
  });

  it('names the authority, the object, who, why, since when and the phases', () => {
    const root = render(MigrationBanner, {
      migration: {
        id: 1,
        authority: 'billing',
        object: 'customer',
        reason: 'moving to the new billing account',
        started_by: 'cli',
        started_at_ms: at,
        finished_by: null,
        finished_at_ms: null,
        phases: [],
      },
      now: at + 10 * 60_000,
    });
    const text = byTestId(root, 'migration-banner')!.textContent!.replace(/\s+/g, ' ');
    expect(text).toContain('billing is authoritative for customer; writes into it are frozen');
    expect(text).toContain('Started by cli 10 min ago');
    expect(text).toContain('moving to the new billing account');
    expect(text).toContain('0 phases run');
  });
});
