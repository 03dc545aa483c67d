// The desktop window: commands via `invoke`, the live overview via the `overview` event.

import { invoke } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';

import { ApiFailure, toApiError } from '../errors';
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
