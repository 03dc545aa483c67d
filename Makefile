# driftless — the two commands a user needs:
#   make run    start the console on the embedded demo (simulated CRM + billing with faults)
#   make test   run every test
# Both install what they need first (scripts/setup.sh).

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test setup lint unit drill bench clean

run: setup
	$(CARGO) run --release --locked --bin driftless -- serve --demo

setup:
	@bash scripts/setup.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Every test: formatting and lints, unit + property tests, integration tests over real HTTP
# (flows, SIGKILL crash/restart, CLI, the drill at CI size).
test: setup lint
	$(CARGO) test --locked -- --test-threads=2

# A bigger drill, for the closing numbers (not part of `make test`).
drill:
	$(CARGO) run --release --locked --bin driftless -- drill --seed 1 --records 500 --edits 5000 --json

clean:
	$(CARGO) clean
