// The live overview the whole console reads: the last overview received, whether it is
// current, and the pause / resume actions. One instance, created by the app shell.

import type { Backend } from './backend';
import { ApiFailure, toApiError } from './errors';
import type { ApiError } from './types/ApiError';
import type { Overview } from './types/Overview';
import type { PauseFlag } from './types/PauseFlag';

/** Figures older than this (no update received) are shown as stale. */
export const STALE_AFTER_MS = 4000;
/** With no update for this long, drop the live connection and open a new one. */
export const RECONNECT_AFTER_MS = 10_000;

export type Connection = 'connecting' | 'live' | 'reconnecting';

export class LiveOverview {
  overview = $state<Overview | null>(null);
  /** The latest error, cleared by the next good overview. */
  error = $state<ApiError | null>(null);
  connection = $state<Connection>('connecting');
  /** When (this machine's clock) the last overview arrived. */
  receivedAt = $state<number | null>(null);
  /** Ticks once a second, for "… ago" texts and the staleness check. */
  now = $state(Date.now());

  readonly backend: Backend;
  private stopLive: (() => void) | null = null;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private subscribedAt = 0;

  constructor(backend: Backend) {
    this.backend = backend;
  }

  /** True when the figures on screen may no longer be current. */
  get stale(): boolean {
    if (!this.overview) return false;
    if (this.connection !== 'live' || this.error) return true;
    return this.receivedAt !== null && this.now - this.receivedAt > STALE_AFTER_MS;
  }

  get paused(): PauseFlag[] {
    return this.overview?.status.paused ?? [];
  }

  isPaused(scope: string): boolean {
    return this.paused.some((p) => p.scope === scope);
  }

  start(): void {
    if (this.stopLive) return;
    this.subscribe();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  private subscribe(): void {
    this.stopLive = this.backend.subscribe({
      overview: (o) => this.accept(o),
      error: (e) => {
        this.error = e;
        if (this.overview) this.connection = 'reconnecting';
      },
      disconnected: () => {
        this.connection = 'reconnecting';
      },
    });
    this.subscribedAt = Date.now();
  }

  /** Once a second: move the clock; if nothing has arrived for a while, reconnect. */
  private tick(): void {
    this.now = Date.now();
    const last = Math.max(this.receivedAt ?? 0, this.subscribedAt);
    if (this.stopLive && this.now - last > RECONNECT_AFTER_MS) {
      // A silent connection (a stalled proxy, a sleeping laptop): start over.
      if (this.overview) this.connection = 'reconnecting';
      this.stopLive();
      this.subscribe();
    }
  }

  stop(): void {
    this.stopLive?.();
    this.stopLive = null;
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
  }

  accept(o: Overview): void {
    // An answer from a slow request must not replace a newer one.
    if (this.overview && o.generated_at_ms < this.overview.generated_at_ms) return;
    this.overview = o;
    this.error = null;
    this.connection = 'live';
    this.receivedAt = Date.now();
    this.now = this.receivedAt;
  }

  /** Fetch an overview now (after an action), instead of waiting for the next tick. */
  async refresh(): Promise<void> {
    try {
      this.accept(await this.backend.overview());
    } catch {
      // The live stream reports errors; a failed refresh changes nothing.
    }
  }

  /** Pause outbound writes. Rejects with an ApiFailure the caller shows. */
  async pause(scope: string, reason: string): Promise<void> {
    try {
      // The engine requires a reason (audited, shown while paused); a click without one says where it came from.
      await this.backend.pauseOutbound({ scope, reason: reason.trim() || 'paused from the console (no reason typed)' });
    } catch (e) {
      throw new ApiFailure(toApiError(e));
    }
    await this.refresh();
  }

  async resume(scope: string): Promise<void> {
    try {
      await this.backend.resumeOutbound({ scope, reason: null });
    } catch (e) {
      throw new ApiFailure(toApiError(e));
    }
    await this.refresh();
  }
}
