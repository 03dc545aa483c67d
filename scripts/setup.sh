#!/usr/bin/env bash
# Install what driftless needs to build, run and test. Idempotent; safe to run every time.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "driftless needs a Rust toolchain (cargo). Install it with rustup: https://rustup.rs" >&2
  exit 1
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if need rustup; then rustup component add "$c"; else echo "missing cargo $c" >&2; exit 1; fi
  fi
done
# The engine is pure Rust (SQLite is bundled, TLS is rustls): no system packages needed yet.
# The desktop shell (src-tauri) and the browser tests add their packages here.
exit 0
