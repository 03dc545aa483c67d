#!/usr/bin/env bash
# Install what driftless needs. Idempotent and quick when everything is present.
#   scripts/setup.sh run    what `make run` needs (Rust; Node for the UI; WebKitGTK when a display exists)
#   scripts/setup.sh test   everything `make test` needs (adds Chromium, Xvfb, WebKitWebDriver, tauri-driver)
set -euo pipefail
mode="${1:-test}"
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
say() { echo "setup: $*" >&2; }

if ! need cargo; then
  say "driftless needs a Rust toolchain (cargo). Install it with rustup: https://rustup.rs"
  exit 1
fi
for c in rustfmt clippy; do
  sub="$c"; [ "$c" = rustfmt ] && sub=fmt
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    if need rustup; then rustup component add "$c"; else say "missing cargo $sub"; exit 1; fi
  fi
done

# Debian/Ubuntu packages.
pkgs=(pkg-config)
if ! need node || ! need npm; then pkgs+=(nodejs npm); fi
desktop_pkgs=(libwebkit2gtk-4.1-dev build-essential libssl-dev libayatana-appindicator3-dev librsvg2-dev)
if [ "$mode" = test ]; then
  pkgs+=("${desktop_pkgs[@]}" chromium xvfb webkit2gtk-driver x11-utils)
  need python3 || pkgs+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
elif [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  pkgs+=("${desktop_pkgs[@]}")
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! need apt-get; then
    say "please install: ${missing[*]} (this script knows apt only)"
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The console UI (Svelte + Vite): install exactly what package-lock.json pins.
if [ -f ui/package-lock.json ]; then
  if [ ! -d ui/node_modules ] || [ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]; then
    say "installing UI packages (npm ci)"
    (cd ui && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

# Python peers (official Stripe/HubSpot SDKs for signature vectors, localstripe) in a venv
# outside the clone; DRIFTLESS_PEERS_PY names its interpreter for the tests.
if [ "$mode" = test ]; then
  peers="${DRIFTLESS_PEERS_DIR:-$HOME/.cache/driftless/peers}"
  stamp="$peers/requirements.txt"
  if [ ! -x "$peers/bin/python" ] || ! cmp -s tests/peers/requirements.txt "$stamp"; then
    say "installing Python peers into $peers (pip, once)"
    python3 -m venv "$peers"
    "$peers/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt
    cp tests/peers/requirements.txt "$stamp"
  fi
fi

# schemathesis (API-schema testing of the console API, tests/it/schema.rs) in a venv of its
# own; DRIFTLESS_SCHEMATHESIS names its command for the tests.
if [ "$mode" = test ]; then
  schema="${DRIFTLESS_PEERS_DIR:-$HOME/.cache/driftless/peers}/schema"
  stamp="$schema/requirements.txt"
  if [ ! -x "$schema/bin/schemathesis" ] || ! cmp -s tests/peers/schema-requirements.txt "$stamp"; then
    say "installing schemathesis into $schema (pip, once)"
    python3 -m venv "$schema"
    "$schema/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/peers/schema-requirements.txt
    cp tests/peers/schema-requirements.txt "$stamp"
  fi
fi

# Node peers (Prism, the OpenAPI mock for tests/it/prism.rs) installed outside the clone from
# tests/peers/package-lock.json; DRIFTLESS_PEERS_NODE names the directory for the tests.
if [ "$mode" = test ]; then
  node_peers="${DRIFTLESS_PEERS_NODE:-${DRIFTLESS_PEERS_DIR:-$HOME/.cache/driftless/peers}/node}"
  if [ ! -x "$node_peers/node_modules/.bin/prism" ] || ! cmp -s tests/peers/package-lock.json "$node_peers/installed.lock"; then
    say "installing Node peers into $node_peers (npm ci, once)"
    mkdir -p "$node_peers"
    cp tests/peers/package.json tests/peers/package-lock.json "$node_peers/"
    (cd "$node_peers" && npm ci --no-audit --no-fund --loglevel=error)
    cp tests/peers/package-lock.json "$node_peers/installed.lock"
  fi
fi

# WebDriver bridge for the desktop smoke test.
if [ "$mode" = test ] && ! need tauri-driver; then
  say "installing tauri-driver (cargo install, once)"
  cargo install tauri-driver --locked --version 2.1.0 --quiet
fi
exit 0
