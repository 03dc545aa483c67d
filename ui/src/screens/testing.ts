// Shared by the screens' tests: a fake backend, a router over a fake window, a live overview.

import { Router } from '../lib/router.svelte';
import type { Backend } from '../lib/backend';
import { LiveOverview } from '../lib/live.svelte';
import { stubRuns } from '../lib/testing/fixtures';

export function fakeBackend(runs = stubRuns()) {
  return { kind: 'http', where: 'http://h', ...runs } as unknown as Backend & ReturnType<typeof stubRuns>;
}

export function fakeRouter(hash: string) {
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
  return { router: new Router(w as unknown as Window), win: w };
}

export function props(b: Backend, hash: string) {
  const { router, win } = fakeRouter(hash);
  return { backend: b, live: new LiveOverview(b), router, win };
}

export function key(k: string, target: EventTarget = window): void {
  target.dispatchEvent(new KeyboardEvent('keydown', { key: k, bubbles: true, cancelable: true }));
}
