//! SIGKILL the engine process mid-run, restart it on the same ledger, and check convergence
//! with no duplicate and nothing lost — the drill with crashes, judged from the simulators'
//! own state (the crash logic lives once, in `driftless::drill`).

use std::time::Duration;

use driftless::drill::{run, DrillOptions};
use driftless::sim::FaultProfile;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_converges_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run(DrillOptions {
        seed: 3,
        records: 60,
        edits: 400,
        faults: FaultProfile::parse("dup=0.05,reorder=0.05,429=0.02,5xx=0.01,timeout=0.02,hang_ms=800")
            .expect("profile"),
        contract: driftless::contract::default_contract(),
        ledger: dir.path().join("crash.db"),
        workers: 8,
        settle_timeout: Duration::from_secs(180),
        edits_per_sec: 60.0,
        billing_cycles: 1,
        crashes: 3,
        engine_exe: Some(env!("CARGO_BIN_EXE_driftless").into()),
    })
    .await
    .expect("drill runs");
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    assert!(report.ok, "drill with crashes failed:\n{json}");
    assert_eq!(report.engine, "child process", "{json}");
    assert_eq!(report.crashes, 3, "{json}");
    assert_eq!(report.kill_at_ms.len(), 3, "{json}");
    assert_eq!(report.contacts, 60, "{json}");
    assert!(report.billing_customers as i64 >= 60 - report.dead_letters, "{json}");
    assert!(
        report.checks.iter().any(|c| c.name == "crash_recovery" && c.ok),
        "{json}"
    );
}
