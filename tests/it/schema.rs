//! API-schema testing (issue 19): schemathesis, a tester nobody here wrote, generates requests
//! from the running server's own OpenAPI document — examples, boundary values, fuzzed and
//! schema-violating bodies and parameters, wrong methods, missing auth, call sequences — and
//! checks every answer against the document. Bounded: 20 examples per operation, 150 s at
//! most. Zero server errors and zero conformance failures.
//!
//! Checked: no 5xx (`not_a_server_error`), every status, content type, header and body as
//! documented, schema-violating input refused, wrong methods answered 405 with `Allow`, routes
//! refused without the token, and the stateful checks. Not checked: `positive_data_acceptance`
//! — the API has rules beyond its schema (a reason is required unless previewing, an object
//! must be one of the contract's, a time range must end after it starts), which answer 400 with
//! the reason; the document says so in words.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{ServeChild, SERVE_TOKEN};

/// schemathesis's command: `$DRIFTLESS_SCHEMATHESIS`, else the venv `scripts/setup.sh test`
/// makes. A missing one fails the test (never a silent skip).
fn schemathesis() -> PathBuf {
    let p = match std::env::var_os("DRIFTLESS_SCHEMATHESIS") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            let peers = std::env::var_os("DRIFTLESS_PEERS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache/driftless/peers"));
            peers.join("schema/bin/schemathesis")
        }
    };
    assert!(
        p.exists(),
        "schemathesis is not installed at {} — run `scripts/setup.sh test` (or set DRIFTLESS_SCHEMATHESIS)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_answers_as_its_openapi_document_says() {
    let st = schemathesis();
    let dir = tempfile::tempdir().expect("tempdir");
    // The demo with actors on (records, writes, audit rows to find), faults off: a simulated
    // provider's 5xx would be a 502 here, not a bug of the API.
    let server = ServeChild::start_with(
        &dir.path().join("ledger.db"),
        &dir.path().join("serve.log"),
        &["--faults", "none"],
    )
    .expect("serve starts");
    let out = tokio::task::spawn_blocking({
        let st = st.clone();
        let url = format!("{}/api/openapi.json", server.base);
        let reports = dir.path().join("report");
        move || {
            Command::new(st)
                .args(["run", &url])
                .args(["-H", &format!("Authorization: Bearer {SERVE_TOKEN}")])
                .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
                .args(["--max-examples", "20", "--seed", "1", "--workers", "2"])
                .args(["--max-time", "150", "--request-timeout", "20"])
                .arg("--report-dir")
                .arg(&reports)
                // Its cache (`.schemathesis/`) goes with the temporary directory, not the clone.
                .current_dir(reports.parent().unwrap_or(std::path::Path::new(".")))
                .env("NO_COLOR", "1")
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("schemathesis finished");
    let text = String::from_utf8_lossy(&out.stdout);
    let log = server.kill();
    assert!(!log.contains("panicked"), "the server panicked during the run:\n{log}");
    let summary = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {}):\n{}\n{}",
        out.status,
        text.chars()
            .rev()
            .take(30_000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Test cases:"), "no test cases ran:\n{text}");
}
