#!/usr/bin/env bash
# Open the driftless desktop console (used by `make run` when a display exists): builds the
# console UI if ui/dist is missing, then builds and runs the Tauri shell. With no contract
# (DRIFTLESS_CONTRACT, or contract.toml in the app data directory) it runs the embedded demo
# on a fresh ledger. Extra arguments go to cargo, e.g. `scripts/desktop-run.sh --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  echo "desktop-run: no display (DISPLAY/WAYLAND_DISPLAY unset); use \`driftless serve --demo\` and a browser instead" >&2
  exit 1
fi

if [ ! -f ui/dist/index.html ]; then
  echo "desktop-run: building the console UI (ui/dist)" >&2
  (cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build)
fi

exec cargo run --locked -p driftless-desktop --bin driftless-desktop "$@"
