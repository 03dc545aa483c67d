//! Reconciliation throughput benchmark (`cargo bench --bench reconcile`): the real engine
//! (demo assembly) against both simulators, each with a server-side quota Q and the engine's
//! budget configured at Q. `RECON_BENCH_RECORDS` contacts (default 300) are synced first
//! (quota lifted), then one full reconciliation runs with the quota on, in the bulk lane,
//! with nothing else going on. Prints records compared per second, pages, the share of each
//! destination's read quota the run used ("reconciliation used X of the CRM read quota and Y
//! of the billing read quota"), reads per record compared per destination, 429s, and the
//! records/s the busier destination's quota allows. Fails unless every record is compared
//! with no mismatch (everything was synced first).
//!
//! Knobs: `RECON_BENCH_RECORDS` (default 300), `RECON_BENCH_QUOTA` (requests/s per
//! destination, default 50).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use driftless::drill::wait_quiescent;
use driftless::reconcile::ReconcileRequest;
use driftless::runtime::{self, DemoOptions, ServeOptions};
use driftless::sim::FaultProfile;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn bench() -> Result<(), String> {
    let records: usize = knob("RECON_BENCH_RECORDS", 300);
    let quota: f64 = knob("RECON_BENCH_QUOTA", 50.0);
    let mut contract = driftless::contract::default_contract();
    for rl in [&mut contract.rate_limits.crm, &mut contract.rate_limits.billing] {
        rl.requests_per_second = quota;
        rl.burst = (quota as u32).max(1);
    }
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let running = runtime::start_demo(DemoOptions {
        seed: 13,
        faults: FaultProfile::none(),
        contract,
        serve: ServeOptions {
            ledger: dir.path().join("ledger.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 8,
            public_url: None,
            token: None,
            allow_non_loopback: false,
        },
        request_timeout_ms: 5_000,
    })
    .await
    .map_err(|e| format!("the demo did not start: {e}"))?;
    let sims = running.sims.clone().ok_or("no simulators")?;
    eprintln!("reconcile bench: syncing {records} contacts (simulators without quota, engine budget {quota}/s) …");
    let sync = Instant::now();
    for i in 0..records {
        sims.crm
            .create_contact(&[("email", &format!("rb{i}@example.test")), ("lifecyclestage", "lead")]);
    }
    if !wait_quiescent(&running, Duration::from_secs(600)).await {
        return Err("the contacts did not sync within 10 minutes".into());
    }
    let sync_secs = sync.elapsed().as_secs_f64();
    let profile = FaultProfile::parse(&format!("quota={quota}")).map_err(|e| e.to_string())?;
    sims.crm.set_faults(profile.clone());
    sims.billing.set_faults(profile);
    let (crm0, bill0) = (sims.crm.request_log().len(), sims.billing.request_log().len());
    let t = Instant::now();
    let r = running
        .engine
        .reconcile(
            &ReconcileRequest {
                trigger: "bench".into(),
                ..Default::default()
            },
            "bench",
        )
        .await
        .map_err(|e| format!("reconciliation failed: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    let crm = &sims.crm.request_log()[crm0..];
    let bill = &sims.billing.request_log()[bill0..];
    let compared = r.compared.max(1) as f64;
    // (requests, share of the quota, reads per record compared, 429s)
    let side = |log: &[driftless::sim::LoggedRequest]| {
        let n = log.len() as f64;
        let limited = log.iter().filter(|x| x.status == 429).count();
        (n, n / secs / quota, n / compared, limited)
    };
    let (crm_n, crm_q, crm_per, crm_429) = side(crm);
    let (bill_n, bill_q, bill_per, bill_429) = side(bill);
    println!(
        "reconcile bench: {records} records, quota {quota}/s per destination (engine budget = quota, simulators enforce it)"
    );
    println!(
        "  sync before measuring: {sync_secs:.1}s; reconciliation: {} records compared in {secs:.2}s = {:.1} records/s, \
         {} pages, {} mismatched",
        r.compared,
        r.compared as f64 / secs,
        r.run.pages_read,
        r.mismatched_records
    );
    println!("  reconciliation used {crm_q:.2} of the CRM read quota and {bill_q:.2} of the billing read quota");
    println!(
        "  reads per record compared: CRM {crm_per:.3} ({crm_n} requests, {crm_429} answered 429), \
         billing {bill_per:.3} ({bill_n} requests, {bill_429} answered 429)"
    );
    let bound = quota / crm_per.max(bill_per);
    println!("  bound by the busier destination: quota / its reads per record = {bound:.1} records/s");
    if r.compared != records as i64 || r.mismatched_records != 0 || !r.complete {
        return Err(format!(
            "expected {records} records compared with no mismatch, got {} compared, {} mismatched (complete: {})",
            r.compared, r.mismatched_records, r.complete
        ));
    }
    running.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reconcile bench: {e}");
            ExitCode::FAILURE
        }
    }
}
