// Screens live in the address's hash (`#/dead-letters?destination=crm`), so a filtered view
// can be bookmarked, shared and reloaded, and the same routes work in the desktop window
// (whose asset server knows nothing of client paths) and behind `driftless serve`.
// Navigating between screens adds a history entry (Back works); changing a screen's filters
// replaces the current one (no history spam while typing).

export type Where = { screen: string; params: URLSearchParams };

/** `#/dead-letters?x=1` → { screen: 'dead-letters', params: x=1 }; anything else → the overview. */
export function parseHash(hash: string): Where {
  const body = hash.replace(/^#\/?/, '');
  const q = body.indexOf('?');
  const path = (q < 0 ? body : body.slice(0, q)).replace(/\/+$/, '');
  const params = new URLSearchParams(q < 0 ? '' : body.slice(q + 1));
  return { screen: path || 'overview', params };
}

/** The hash for a screen with parameters (empty values left out). */
export function hashFor(screen: string, params: Record<string, string | number | null | undefined> | URLSearchParams = {}): string {
  const p = new URLSearchParams();
  const entries = params instanceof URLSearchParams ? [...params.entries()] : Object.entries(params);
  for (const [k, v] of entries) if (v !== null && v !== undefined && `${v}` !== '') p.set(k, `${v}`);
  const qs = p.toString();
  return `#/${screen}${qs ? `?${qs}` : ''}`;
}

type WindowLike = Pick<Window, 'addEventListener' | 'removeEventListener'> & {
  location: Pick<Location, 'hash'>;
  history: Pick<History, 'replaceState' | 'state'>;
};

export class Router {
  screen = $state('overview');
  params = $state(new URLSearchParams());
  private readonly win: WindowLike;
  private readonly onHash = () => this.read();

  constructor(win: WindowLike = window) {
    this.win = win;
    this.read();
    win.addEventListener('hashchange', this.onHash);
  }

  stop(): void {
    this.win.removeEventListener('hashchange', this.onHash);
  }

  private read(): void {
    const w = parseHash(this.win.location.hash);
    this.screen = w.screen;
    this.params = w.params;
  }

  /** Open a screen (a new history entry). */
  go(screen: string, params: Record<string, string | number | null | undefined> = {}): void {
    this.win.location.hash = hashFor(screen, params);
    this.read();
  }

  /** Change this screen's parameters in place (filters), without a history entry. */
  setParams(params: Record<string, string | number | null | undefined>): void {
    const h = hashFor(this.screen, params);
    this.win.history.replaceState(this.win.history.state, '', h);
    this.readFrom(h);
  }

  private readFrom(hash: string): void {
    const w = parseHash(hash);
    this.screen = w.screen;
    this.params = w.params;
  }
}
