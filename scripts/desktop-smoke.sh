#!/usr/bin/env bash
# The desktop window smoke test: the real driftless-desktop window under Xvfb, driven through
# tauri-driver (which starts WebKitWebDriver, which starts the app). Checks the overview shows
# live numbers, screenshots it into $DRIFTLESS_SCREENSHOTS/desktop.png (default ui/e2e/out/,
# git-ignored; `make screenshots` copies it to docs/screenshots/), pauses outbound writes from
# the UI and checks the title bar says PAUSED. The WebDriver steps are tests/desktop/smoke.py.
#
#   scripts/desktop-smoke.sh            build target/debug/driftless-desktop (quick when fresh), test it
#   DESKTOP_SMOKE_NO_BUILD=1 ...        test the binary as it is (`make desktop-smoke` built it)
#   DESKTOP_SMOKE_TIMEOUT=90 ...        bound for each wait (seconds, default 60)
#
# Needs: Xvfb (xvfb), WebKitWebDriver (webkit2gtk-driver), xwininfo (x11-utils), python3,
# tauri-driver (cargo install tauri-driver --locked). Every process it starts is stopped on
# exit, also on failure or Ctrl-C; it prints `N passed, M failed` last.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
started=$(date +%s)
timeout_s="${DESKTOP_SMOKE_TIMEOUT:-60}"
screenshots="$(realpath -m "${DRIFTLESS_SCREENSHOTS:-$root/ui/e2e/out}")"

fail() { echo "desktop-smoke: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "missing $1 — $2 (scripts/setup.sh test installs it)"; }

need Xvfb "apt-get install xvfb"
need WebKitWebDriver "apt-get install webkit2gtk-driver"
need xwininfo "apt-get install x11-utils"
need python3 "apt-get install python3"
need tauri-driver "cargo install tauri-driver --locked"

# The binary under test: the workspace's shared target directory.
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
app="$target_dir/debug/driftless-desktop"
if [ -z "${DESKTOP_SMOKE_NO_BUILD:-}" ]; then
  [ -f ui/dist/index.html ] || (cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build)
  cargo build --locked -p driftless-desktop
fi
[ -x "$app" ] || fail "no $app (build it: cargo build -p driftless-desktop)"

work="$(mktemp -d -t driftless-desktop-smoke.XXXXXX)"
xvfb_pid=""
driver_pid=""

stop_group() { # pid: TERM the process group it leads, then KILL what is left after 5 s
  local pid="$1"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 -- "-$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "desktop-smoke: process group $pid ignored SIGTERM, killing it" >&2
  kill -KILL -- "-$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$driver_pid" ]; then stop_group "$driver_pid"; fi
  if [ -n "$xvfb_pid" ]; then
    kill -TERM "$xvfb_pid" 2>/dev/null || true
    wait "$xvfb_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/driver.log" ]; then
    echo "--- tauri-driver / WebKitWebDriver / app output (last 40 lines) ---" >&2
    tail -n 40 "$work/driver.log" >&2
  fi
  local summary="0 passed, 1 failed"
  if [ -s "$work/summary" ]; then summary="$(cat "$work/summary")"; fi
  rm -rf "$work"
  echo "desktop-smoke: $(( $(date +%s) - started ))s in all"
  echo "$summary"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Xvfb picks a free display itself and writes its number to fd 3 (-displayfd), so two runs
# (or a developer's own Xvfb) never collide and nothing guesses lock files. setsid gives it
# its own process group; as a background job of a non-interactive shell it is not a group
# leader, so setsid execs it in place and $! is the server's own pid.
setsid Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp 3>"$work/display" >"$work/xvfb.log" 2>&1 &
xvfb_pid=$!
for _ in $(seq 100); do
  [ -s "$work/display" ] && break
  kill -0 "$xvfb_pid" 2>/dev/null || fail "Xvfb exited: $(tail -n 5 "$work/xvfb.log")"
  sleep 0.1
done
[ -s "$work/display" ] || fail "Xvfb did not report a display within 10 s"
display=":$(tr -dc 0-9 <"$work/display")"

# The app's environment (tauri-driver -> WebKitWebDriver -> app inherit it).
export DISPLAY="$display"
unset WAYLAND_DISPLAY DRIFTLESS_CONTRACT
# Xvfb has no GPU. WebKitGTK 2.50 (Debian 12) draws here with or without these (tried both),
# but its accelerated compositing and, since 2.42, its DMA-BUF renderer go through EGL/GBM and
# are the known cause of blank or crashing web views on GPU-less X servers; the plain software
# path is also what makes screenshots deterministic.
export WEBKIT_DISABLE_COMPOSITING_MODE=1
export WEBKIT_DISABLE_DMABUF_RENDERER=1
# No session bus or accessibility bus here; don't wait for them.
export NO_AT_BRIDGE=1
# A private app-data directory: a developer's contract.toml (real systems!) or old demo
# ledger under ~/.local/share/dev.driftless.console is never touched. A garbage "stale"
# ledger is planted to prove the demo starts from a fresh ledger every launch.
export XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config" XDG_CACHE_HOME="$work/cache"
mkdir -p "$XDG_DATA_HOME/dev.driftless.console/demo"
for f in ledger.db ledger.db-wal ledger.db-shm; do
  echo "stale, not an SQLite file" >"$XDG_DATA_HOME/dev.driftless.console/demo/$f"
done

# Two free ports for tauri-driver and WebKitWebDriver, chosen below the kernel's ephemeral
# range: a port from bind(0) can be taken by another process's outgoing connection before
# tauri-driver binds it ("can not listen to address"). Starting is retried all the same.
free_ports() {
  python3 -c '
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
picked = []
while len(picked) < 2:
    port = random.randrange(10000, max(lo, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    if port not in picked:
        picked.append(port)
print(*picked)'
}

listening() { # port pid: wait up to 10 s for the port to accept, while pid lives
  python3 -c '
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(1)
        time.sleep(0.1)
sys.exit(1)' "$1" "$2"
}

# tauri-driver in its own process group, so stopping the group also stops WebKitWebDriver and
# the app it launched, whatever state the session is in.
for attempt in 1 2 3; do
  read -r driver_port native_port < <(free_ports)
  setsid tauri-driver --port "$driver_port" --native-port "$native_port" >"$work/driver.log" 2>&1 &
  driver_pid=$!
  listening "$driver_port" "$driver_pid" && break
  echo "desktop-smoke: tauri-driver did not start on port $driver_port (try $attempt): $(tail -n 3 "$work/driver.log")" >&2
  stop_group "$driver_pid"
  driver_pid=""
  [ "$attempt" -lt 3 ] || fail "tauri-driver would not start"
done

echo "desktop-smoke: $app on $display, tauri-driver on 127.0.0.1:$driver_port"
set +e
python3 tests/desktop/smoke.py \
  --app "$app" \
  --driver-port "$driver_port" \
  --display "$display" \
  --screenshot "$screenshots/desktop.png" \
  --timeout "$timeout_s" \
  --summary "$work/summary"
rc=$?
set -e

# Closing the session should have ended the app; wait for that (bounded) before stopping the
# driver's process group, which ends it in any case.
app_running() {
  local pid
  for pid in $(pgrep -g "$driver_pid" 2>/dev/null); do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$app" ] && return 0
  done
  return 1
}
for _ in $(seq 50); do
  app_running || break
  sleep 0.1
done
if app_running; then
  echo "desktop-smoke: note: the app was still running 5 s after the session closed; stopping it" >&2
fi
exit "$rc"
