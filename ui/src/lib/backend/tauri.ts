// The desktop window: every operation through the shell's one `operation` command (invoke),
// the live overview via the `overview` event.

import { invoke } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';

import { ApiFailure, toApiError } from '../errors';
import { OperationCalls, type OperationAnswer, type OperationName, type OperationRequest } from '../types/operations';
import type { Overview } from '../types/Overview';
import type { Backend, LiveHandlers } from './backend';

export class TauriBackend extends OperationCalls implements Backend {
  readonly kind = 'tauri' as const;
  readonly where = 'the desktop app';

  /** One operation, by name, with its request as the arguments; a CSV export answers its text. */
  async call<K extends OperationName>(name: K, request: OperationRequest<K>): Promise<OperationAnswer<K>> {
    try {
      return await invoke<OperationAnswer<K>>('operation', { name, args: request ?? {} });
    } catch (e) {
      throw new ApiFailure(toApiError(e));
    }
  }

  /** The window has no download addresses: a CSV export arrives as text through `call`. */
  csvUrl(): null {
    return null;
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
