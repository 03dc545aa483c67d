import { describe, expect, it } from 'vitest';

import { hashFor, parseHash, Router } from './router.svelte';

function fakeWindow(hash = '') {
  const listeners: Record<string, () => void> = {};
  const w = {
    location: { hash },
    history: {
      state: null,
      replaceState: (_s: unknown, _t: string, url: string) => {
        w.location.hash = url;
        w.replaced++;
      },
    },
    replaced: 0,
    addEventListener: (t: string, f: () => void) => (listeners[t] = f),
    removeEventListener: (t: string) => delete listeners[t],
    fire: () => listeners.hashchange?.(),
  };
  return w;
}

describe('router', () => {
  it('parses screens and parameters from the hash', () => {
    expect(parseHash('').screen).toBe('overview');
    expect(parseHash('#/').screen).toBe('overview');
    const w = parseHash('#/dead-letters?destination=crm&text=a%20b');
    expect(w.screen).toBe('dead-letters');
    expect(w.params.get('destination')).toBe('crm');
    expect(w.params.get('text')).toBe('a b');
  });

  it('leaves empty parameters out of the hash', () => {
    expect(hashFor('records', { q: 'a@b.c', empty: '', none: null })).toBe('#/records?q=a%40b.c');
    expect(hashFor('overview')).toBe('#/overview');
  });

  it('follows hash changes, opens screens and replaces filters in place', () => {
    const w = fakeWindow('#/review');
    const r = new Router(w as unknown as Window);
    expect(r.screen).toBe('review');
    w.location.hash = '#/records?q=x';
    w.fire();
    expect(r.screen).toBe('records');
    expect(r.params.get('q')).toBe('x');
    r.go('dead-letters', { destination: 'billing' });
    expect(w.location.hash).toBe('#/dead-letters?destination=billing');
    expect(r.screen).toBe('dead-letters');
    r.setParams({ destination: 'crm', text: 'timeout' });
    expect(w.replaced).toBe(1);
    expect(r.params.get('text')).toBe('timeout');
    r.stop();
  });
});
