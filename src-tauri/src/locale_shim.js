// Runs before the console's own scripts (a Tauri initialization script, so the page's CSP
// does not apply to it). WebKitGTK turns LANG=C.UTF-8 — the default in containers and CI —
// into navigator.language "c", which is not a language tag: every `Intl.*(navigator.language)`
// then throws (uPlot does so when its module loads, leaving a blank window). WebKit maps plain
// "C" and "POSIX" to "en-US" but not "C.UTF-8"; do the same here.
(() => {
  try {
    Intl.getCanonicalLocales(navigator.language);
  } catch (_) {
    const fallback = 'en-US';
    Object.defineProperty(Navigator.prototype, 'language', { get: () => fallback, configurable: true });
    Object.defineProperty(Navigator.prototype, 'languages', { get: () => [fallback], configurable: true });
  }
})();
