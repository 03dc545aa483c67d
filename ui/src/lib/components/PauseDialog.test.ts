import { describe, expect, it, vi } from 'vitest';

import { ApiFailure } from '../errors';
import { byTestId, render, settle, type } from '../testing/render';
import PauseDialog from './PauseDialog.svelte';

function parts(root: HTMLElement) {
  return {
    input: byTestId(root, 'pause-reason') as HTMLInputElement,
    confirm: byTestId(root, 'pause-confirm') as HTMLButtonElement,
  };
}

describe('PauseDialog', () => {
  it('asks for a reason before it can confirm', () => {
    const onConfirm = vi.fn(async () => {});
    const root = render(PauseDialog, { scope: 'global', onConfirm, onCancel: () => {} });
    const { input, confirm } = parts(root);
    expect(root.querySelector('[role="dialog"]')?.getAttribute('aria-modal')).toBe('true');
    expect(root.textContent).toContain('Pause all outbound writes?');
    expect(document.activeElement).toBe(input);
    expect(confirm.disabled).toBe(true);
    type(input, '   ');
    expect(confirm.disabled).toBe(true);
    type(input, 'billing migration');
    expect(confirm.disabled).toBe(false);
  });

  it('confirms with the trimmed reason', async () => {
    const onConfirm = vi.fn(async () => {});
    const root = render(PauseDialog, { scope: 'crm', onConfirm, onCancel: () => {} });
    const { input, confirm } = parts(root);
    type(input, '  CRM maintenance window ');
    confirm.click();
    await settle();
    expect(onConfirm).toHaveBeenCalledWith('CRM maintenance window');
    expect(root.textContent).toContain('Pause writes to the CRM?');
  });

  it('shows a failure in words and stays open', async () => {
    const onConfirm = vi.fn(async () => {
      throw new ApiFailure({ code: 'ledger_locked', message: 'database is locked' });
    });
    const root = render(PauseDialog, { scope: 'billing', onConfirm, onCancel: () => {} });
    const { input, confirm } = parts(root);
    type(input, 'x');
    confirm.click();
    await settle();
    const err = byTestId(root, 'pause-error')!;
    expect(err.textContent).toContain('The ledger is locked by another driftless process');
    expect(byTestId(root, 'pause-dialog')).not.toBeNull();
    expect(confirm.disabled).toBe(false);
  });

  it('cancels with the button and with Escape', () => {
    const onCancel = vi.fn();
    const root = render(PauseDialog, { scope: 'global', onConfirm: async () => {}, onCancel });
    const cancel = [...root.querySelectorAll('button')].find((b) => b.textContent?.trim() === 'Cancel')!;
    cancel.click();
    window.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape' }));
    expect(onCancel).toHaveBeenCalledTimes(2);
  });
});
