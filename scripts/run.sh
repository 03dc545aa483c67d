#!/usr/bin/env bash
# `make run`: the desktop window where there is a display, the headless console otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -f src-tauri/Cargo.toml ]; then
  exec bash scripts/desktop-run.sh
fi
echo "No display found (DISPLAY and WAYLAND_DISPLAY are unset): starting the headless console instead."
echo "Open the URL below in a browser on this machine."
exec cargo run --release --locked --bin driftless -- serve --demo
