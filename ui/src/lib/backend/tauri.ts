// The desktop window: commands via `invoke`, the live overview via the `overview` event.

import { invoke } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';

import { ApiFailure, toApiError } from '../errors';
import type { BackfillAsk } from '../types/BackfillAsk';
import type { BackfillProgress } from '../types/BackfillProgress';
import type { MigrationMode } from '../types/MigrationMode';
import type { ReconcileAsk } from '../types/ReconcileAsk';
import type { ReconciliationState } from '../types/ReconciliationState';
import type { ValidationReport } from '../types/ValidationReport';
import type { Overview } from '../types/Overview';
import type { PauseRequest } from '../types/PauseRequest';
import type { PauseResult } from '../types/PauseResult';
import type { Status } from '../types/Status';
import type { Backend, LiveHandlers } from './backend';

async function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(cmd, args);
  } catch (e) {
    throw new ApiFailure(toApiError(e));
  }
}

export class TauriBackend implements Backend {
  readonly kind = 'tauri' as const;
  readonly where = 'the desktop app';

  overview(): Promise<Overview> {
    return call('overview');
  }

  status(): Promise<Status> {
    return call('status');
  }

  pauseOutbound(req: PauseRequest): Promise<PauseResult> {
    return call('pause_outbound', { req });
  }

  resumeOutbound(req: PauseRequest): Promise<PauseResult> {
    return call('resume_outbound', { req });
  }

  reconciliationState(): Promise<ReconciliationState> {
    return call('reconciliation_state');
  }

  startReconcile(req: ReconcileAsk): Promise<ReconciliationState> {
    return call('start_reconcile', { req });
  }

  cancelReconcile(): Promise<ReconciliationState> {
    return call('cancel_reconcile');
  }

  backfillState(): Promise<BackfillProgress> {
    return call('backfill_state');
  }

  startBackfill(req: BackfillAsk): Promise<BackfillProgress> {
    return call('start_backfill', { req });
  }

  cancelBackfill(): Promise<BackfillProgress> {
    return call('cancel_backfill');
  }

  migrationStatus(): Promise<MigrationMode | null> {
    return call('migration_status');
  }

  validationReport(object: string): Promise<ValidationReport> {
    return call('validation_report', { object });
  }

  subscribe(h: LiveHandlers): () => void {
    let stopped = false;
    let unlisten: (() => void) | null = null;
    listen<Overview>('overview', (ev) => {
      if (!stopped) h.overview(ev.payload);
    })
      .then((u) => {
        if (stopped) u();
        else unlisten = u;
      })
      .catch((e) => h.error(toApiError(e)));
    // The first event may be up to a second away: ask once now.
    this.overview()
      .then((o) => !stopped && h.overview(o))
      .catch((e) => !stopped && h.error(toApiError(e)));
    return () => {
      stopped = true;
      unlisten?.();
    };
  }
}
