# driftless — the two commands a user needs:
#   make run    open the console on the embedded demo (simulated CRM + billing with faults)
#   make test   run every test
# Both install what they need first (scripts/setup.sh).

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
# Where cargo puts binaries (honours CARGO_TARGET_DIR, as .ci/run sets it).
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))

.PHONY: run test setup-run setup-test ui lint unit types-fresh e2e desktop-smoke screenshots drill bench fuzz clean

# Where the browser tests and the desktop smoke test write their screenshots: a git-ignored
# build folder, so `make test` leaves the working tree as it found it. `make screenshots`
# copies them into docs/screenshots/ (the README's pictures).
export DRIFTLESS_SCREENSHOTS ?= $(abspath ui/e2e/out)
SCREENSHOTS := overview connect dead-letters review records reconciliation replay audit contract desktop

run: setup-run ui
	@bash scripts/run.sh

setup-run:
	@bash scripts/setup.sh run

setup-test:
	@bash scripts/setup.sh test

# The console build (ui/dist), embedded into the driftless binary at compile time.
ui:
	cd ui && npm run build

lint:
	python3 scripts/layers.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Rust unit, property and integration tests (flows over real HTTP, SIGKILL restart, CLI, drill).
unit:
	$(CARGO) test --locked -- --test-threads=2

# The TypeScript API types are generated from Rust by `cargo test`; committed copies must match.
types-fresh:
	@test -z "$$(git status --porcelain -- ui/src/lib/types)" || { git status --short -- ui/src/lib/types; echo "ui/src/lib/types is stale: commit the regenerated files"; exit 1; }

# Browser end-to-end against `driftless serve --demo` in headless Chromium.
e2e:
	$(CARGO) build --locked --bin driftless
	cd ui && npm run check && npm test && DRIFTLESS_BIN=$(TARGET_DIR)/debug/driftless npm run e2e

# The desktop window under Xvfb, driven through tauri-driver + WebKitWebDriver.
desktop-smoke:
	$(CARGO) build --locked -p driftless-desktop
	DESKTOP_SMOKE_NO_BUILD=1 bash scripts/desktop-smoke.sh

test: setup-test ui lint unit types-fresh e2e desktop-smoke

# Refresh docs/screenshots/ (not part of `make test`): run the browser tests and the desktop
# smoke test into an emptied screenshots folder, then copy every expected picture (one missing
# fails before anything is copied). Commit the result as its own change.
screenshots: setup-test ui
	rm -rf "$(DRIFTLESS_SCREENSHOTS)"
	$(MAKE) e2e desktop-smoke
	@for s in $(SCREENSHOTS); do test -s "$(DRIFTLESS_SCREENSHOTS)/$$s.png" || { echo "screenshots: no $$s.png in $(DRIFTLESS_SCREENSHOTS)"; exit 1; }; done
	cp $(foreach s,$(SCREENSHOTS),"$(DRIFTLESS_SCREENSHOTS)/$(s).png") docs/screenshots/
	@git status --short -- docs/screenshots

# A bigger drill, for the closing numbers (not part of `make test`).
drill:
	$(CARGO) run --release --locked --bin driftless -- drill --seed 1 --records 500 --edits 5000 --json

# The benchmarks (not part of `make test`; release builds, prints tables, writes JSON under
# $(TARGET_DIR)/bench/): the performance suite (perf.json: ingest against same-run baselines,
# end-to-end apply, lag, quota efficiency, the ledger at 1M events, claim fairness), then the
# rate budgets (rates.json) and one reconciliation under a quota. One part alone:
# `cargo bench --bench perf -- SECTION…` (webhook batch apply lag quota scale fairness).
bench:
	CARGO_TARGET_DIR=$(TARGET_DIR) $(CARGO) bench --locked --bench perf
	CARGO_TARGET_DIR=$(TARGET_DIR) $(CARGO) bench --locked --bench rates --bench reconcile

# Every fuzz target for FUZZ_SECS each (default ten minutes) in an optimised build with
# overflow checks on, with a fresh seed (printed). `make test` runs them briefly (tests/fuzz).
FUZZ_SECS ?= 600
fuzz:
	DRIFTLESS_FUZZ_SECS=$(FUZZ_SECS) DRIFTLESS_FUZZ_SEED=$${DRIFTLESS_FUZZ_SEED:-$$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')} \
		$(CARGO) test --locked --profile fuzz --test fuzz -- --test-threads=1 --nocapture

clean:
	$(CARGO) clean
