//! The drill at CI size: all faults on, invariants checked from the simulators' APIs.

use std::time::Duration;

use driftless::drill::{run, DrillOptions};
use driftless::sim::FaultProfile;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_200_records_1000_edits_under_every_fault_holds_the_invariants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run(DrillOptions {
        seed: 11,
        records: 200,
        edits: 1000,
        faults: FaultProfile::chaos(),
        contract: driftless::contract::default_contract(),
        ledger: dir.path().join("drill.db"),
        workers: 8,
        settle_timeout: Duration::from_secs(240),
        edits_per_sec: 60.0,
        billing_cycles: 2,
        crashes: 0,
        engine_exe: None,
    })
    .await
    .expect("drill runs");
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    assert!(report.ok, "drill failed:\n{json}");
    // Every contact has its customer, except creates that exhausted their retries under the
    // chaos profile and sit in the dead letters (the check above tells them apart).
    assert!(report.billing_customers as i64 >= 200 - report.dead_letters, "{json}");
    assert!(
        report.dead_letters <= 5,
        "chaos should rarely exhaust 8 attempts:\n{json}"
    );
    // The faults really happened.
    for kind in ["rate_limit", "timeout_after_commit"] {
        assert!(
            report.faults_injected.keys().any(|k| k.contains(kind)),
            "no {kind} fault injected:\n{json}"
        );
    }
    assert!(report.events["duplicate"] > 0, "{json}");
}
