//! The performance suite (`make bench`, or `cargo bench --bench perf [-- SECTION…]`): driftless
//! measured against this machine's own limits and the providers' quotas, as ratios taken in
//! the same run. Sections (all by default): `webhook`, `batch`, `apply`, `lag`, `quota`,
//! `scale`, `fairness`. Prints one table and writes the same as JSON to
//! `$CARGO_TARGET_DIR/bench/perf.json` (default `target/bench/perf.json`).
//!
//! Each section's knobs are environment variables named in its module; the defaults are the
//! sizes issue #8 names (20,000-record backfill, 1,000,000-event ledger, 50,000 records in
//! flight). A section that fails prints why and the suite goes on; the exit code is non-zero
//! when any section failed to run (a target missed is reported, not an error).

use std::process::ExitCode;

#[path = "perf/report.rs"]
mod report;

#[path = "perf/ingest.rs"]
mod ingest;

#[path = "perf/apply.rs"]
mod apply;

#[path = "perf/quota.rs"]
mod quota;

#[path = "perf/scale.rs"]
mod scale;

#[path = "perf/fairness.rs"]
mod fairness;

use report::Report;

const SECTIONS: [&str; 7] = ["webhook", "batch", "apply", "lag", "quota", "scale", "fairness"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; anything else not starting with `-` names a section.
    let mut chosen: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if chosen.is_empty() {
        chosen = SECTIONS.iter().map(|s| s.to_string()).collect();
    }
    if let Some(bad) = chosen.iter().find(|c| !SECTIONS.contains(&c.as_str())) {
        eprintln!("perf: unknown section `{bad}` (sections: {})", SECTIONS.join(", "));
        return ExitCode::FAILURE;
    }
    // Statement-level profiling: `PERF_TRACE=1 RUST_LOG=sqlx::query=debug` logs every ledger
    // statement with its elapsed time to stderr.
    if std::env::var_os("PERF_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let mut report = Report::default();
    for section in &chosen {
        eprintln!("perf: [{section}] …");
        let result = match section.as_str() {
            "webhook" => ingest::webhook(&mut report).await,
            "batch" => ingest::batch(&mut report).await,
            "apply" => apply::end_to_end(&mut report).await,
            "lag" => apply::lag(&mut report).await,
            "quota" => quota::backfill(&mut report).await,
            "scale" => scale::ledger_at_scale(&mut report).await,
            "fairness" => fairness::claims(&mut report).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            eprintln!("perf: [{section}] failed: {e}");
            report.failed(section, &e);
        }
    }
    report.print();
    report.write_json();
    if report.any_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
