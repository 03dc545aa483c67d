//! Fuzzing on stable Rust: a seeded, time-bounded mutational fuzzer (`harness.rs`) over the
//! parsers and verifiers that take outside input. Each target is a `#[test]`, so `make test`
//! runs every target for a short while (`DRIFTLESS_FUZZ_SECS`, default 12 s each) and
//! `make fuzz` runs each for ten minutes in an optimised build with overflow checks on.
//!
//! A crash (a panic, or a property the target checks) fails the test, prints the seed and
//! writes the input to `$CARGO_TARGET_TMPDIR/fuzz-crashes/`, from where
//! `DRIFTLESS_FUZZ_REPLAY=<file>` runs that one input again.

mod connectors;
mod contract;
mod harness;
mod webhooks;
