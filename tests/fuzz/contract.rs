//! The contract compiler on mutated contract files: `compile_bytes`, what `contract::load`
//! runs on a file's bytes after its capped read.
//!
//! Properties: never panics; an error is either a whole-file one (only `TooLarge`, for more
//! than `MAX_CONTRACT_BYTES`: no line to point at) or a non-empty list of problems, each with
//! the label as its file, a line and a column inside the input (line >= 1 and at most the
//! input's line count, column >= 1 and at most one past the line's last character), a field
//! and a non-empty message; a success compiles again to the same version, the hash of the
//! bytes.

use driftless::contract::{compile_bytes, contract_version, ContractError, ContractProblem, MAX_CONTRACT_BYTES};

use crate::harness;

const LABEL: &str = "fuzz.toml";

/// Contract and TOML tokens: section headers, keys, values the vocabulary accepts, and the
/// syntax that trips parsers (multi-line strings, dotted keys, inline tables).
const DICT: &[&str] = &[
    "[systems.crm]",
    "[systems.billing]",
    "[objects.customer]",
    "[objects.subscription]",
    "[objects.x]",
    "[[objects.customer.fields]]",
    "[[objects.x.fields]]",
    "[[objects.subscription.fields]]",
    "[dedupe]",
    "[reconciliation]",
    "[retry]",
    "[rate_limits.crm]",
    "[rate_limits.billing]",
    "[alerts]",
    "name = ",
    "kind = \"hubspot\"",
    "kind = \"stripe\"",
    "base_url = \"http://127.0.0.1:1\"",
    "base_url = \"http://example.com\"",
    "base_url = \"https://[::1]:8/\"",
    "allow_insecure_http = true",
    "secret = { env = \"X\" }",
    "secret = { keychain = \"a/b\" }",
    "webhook_secret = ",
    "ingest = \"both\"",
    "crm = \"contact\"",
    "crm = \"company\"",
    "billing = \"customer\"",
    "billing = \"subscription\"",
    "billing = \"invoice\"",
    "billing = \"credit_note\"",
    "crm = \"email\"",
    "billing = \"email\"",
    "billing = \"id\"",
    "billing = \"plan\"",
    "billing = \"metadata.k\"",
    "owner = \"crm\"",
    "owner = \"billing\"",
    "owner = \"shared\"",
    "= \"shared\"",
    "conflict = \"review\"",
    "conflict = \"latest_sync_timestamp\"",
    "on_non_owner_edit = \"flag\"",
    "match = [\"stored_id\", \"email\"]",
    "create_in = \"billing\"",
    "idempotency_key = \"{crm_contact_id}:{event_id}\"",
    "{event_id}",
    "{",
    "}",
    "schedule = \"*/5 * * * *\"",
    "retention_days = ",
    "window_days = ",
    "max_attempts = ",
    "base_backoff_ms = ",
    "max_backoff_ms = ",
    "requests_per_second = ",
    "burst = ",
    "daily_cap = ",
    "lag_p95_ms = ",
    "error_rate = ",
    "tier = \"enterprise\"",
    "mode = \"live\"",
    "\"\"\"",
    "'''",
    "\\",
    "\\u",
    "\\U0010FFFF",
    "fields = [{ name = \"a\", crm = \"a\", billing = \"a\", owner = \"crm\" }]",
    "a.b.c = 1",
    "inf",
    "nan",
    "1e308",
    "0x7fffffffffffffff",
    "1979-05-27T07:32:00Z",
    "#",
    "\r\n",
    "\n",
    "\t",
];

fn corpus() -> Vec<Vec<u8>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut corpus = vec![std::fs::read(format!("{root}/contracts/default.toml")).expect("the default contract")];
    let dir = format!("{root}/tests/contracts");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/contracts")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    fixtures.sort();
    for p in fixtures {
        corpus.push(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    }
    corpus
}

/// Line count of the input (a final line without a newline counts; an empty file has one).
fn line_count(input: &[u8]) -> usize {
    input.iter().filter(|b| **b == b'\n').count() + 1
}

/// Characters on 1-based line `n` (invalid UTF-8 counted as the replacement characters a
/// lossy decode gives: never fewer than a located column needs).
fn line_chars(input: &[u8], n: usize) -> usize {
    input
        .split(|b| *b == b'\n')
        .nth(n.saturating_sub(1))
        .map_or(0, |l| String::from_utf8_lossy(l).chars().count())
}

fn check_problem(input: &[u8], p: &ContractProblem) -> Result<(), String> {
    let lines = line_count(input);
    if p.file != LABEL {
        return Err(format!("problem names file {:?}, not the label: {p}", p.file));
    }
    if p.line < 1 || p.line > lines {
        return Err(format!("line {} outside 1..={lines}: {p}", p.line));
    }
    let max_column = line_chars(input, p.line) + 1;
    if p.column < 1 || p.column > max_column {
        return Err(format!("column {} outside 1..={max_column}: {p}", p.column));
    }
    if p.field.trim().is_empty() {
        return Err(format!("empty field: {p}"));
    }
    let message = p.expected.strip_prefix("invalid TOML:").unwrap_or(&p.expected);
    if message.trim().is_empty() {
        return Err(format!("empty message: {p}"));
    }
    Ok(())
}

fn check(input: &[u8]) -> Result<(), String> {
    match compile_bytes(LABEL, input) {
        Ok(c) => {
            let again = compile_bytes(LABEL, input).map_err(|e| format!("compiled once, then failed: {e}"))?;
            if again.version != c.version {
                return Err(format!("version {} then {}", c.version, again.version));
            }
            if c.version != contract_version(input) {
                return Err(format!("version {} is not the hash of the bytes", c.version));
            }
            for w in &c.warnings {
                check_problem(input, w).map_err(|e| format!("warning: {e}"))?;
            }
            Ok(())
        }
        Err(ContractError::Invalid(problems)) => {
            if problems.is_empty() {
                return Err("invalid with no problem".into());
            }
            problems.iter().try_for_each(|p| check_problem(input, p))
        }
        Err(ContractError::TooLarge { .. }) if input.len() > MAX_CONTRACT_BYTES => Ok(()),
        Err(e) => Err(format!("unexpected whole-file error for {} bytes: {e}", input.len())),
    }
}

#[test]
fn contract_compiler() {
    let corpus = corpus();
    assert!(corpus.len() >= 5, "the default and the fixtures");
    let report = harness::run("contract_compiler", &corpus, DICT, 64 * 1024, check);
    // Replaying another target's saved input runs nothing here.
    if std::env::var_os("DRIFTLESS_FUZZ_REPLAY").is_none() {
        assert!(
            report.cases >= corpus.len() as u64 && report.secs > 0.0,
            "the corpus at least: {report:?}"
        );
    }
}
