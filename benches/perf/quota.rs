//! Rate-quota efficiency: a backfill of `PERF_QUOTA_RECORDS` CRM contacts (default 20,000)
//! into billing, against simulators that enforce provider-style quotas server-side: billing
//! (Stripe-style one-second bucket) at Q = `PERF_QUOTA_Q` requests/s (default 50), the CRM
//! (HubSpot-style 10-second window) at `PERF_QUOTA_CRM` requests/s (default 10: HubSpot's
//! 100 per 10 s). The engine's budgets are configured at the same quotas (as the contract
//! would be for these accounts). The contacts exist before the engine hears of them (webhooks
//! suppressed while they are made): only the backfill finds them.
//!
//! Measured over the backfill, from its start until every contact has its customer and id
//! written back, or `PERF_QUOTA_SECS` (default 300) — bounded so the suite ends: accepted
//! billing requests/s against Q (from the backfill's first billing request), the 429 share per destination, and the records each CRM
//! write call carried (batch updates), plus what the CRM reads cost.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use driftless::engine::backfill::BackfillOptions;
use driftless::runtime::{self, DemoOptions, ServeOptions};
use driftless::sim::{FaultProfile, LoggedRequest};

use crate::report::{knob, Figure, Report};

struct Window<'a> {
    log: Vec<&'a LoggedRequest>,
    secs: f64,
}

impl Window<'_> {
    fn accepted_per_sec(&self) -> f64 {
        self.log.iter().filter(|r| r.status != 429).count() as f64 / self.secs
    }
    fn share_429(&self) -> f64 {
        let n = self.log.len().max(1);
        self.log.iter().filter(|r| r.status == 429).count() as f64 / n as f64
    }
}

fn window(log: &[LoggedRequest], from_ms: i64, to_ms: i64) -> Window<'_> {
    Window {
        log: log.iter().filter(|r| r.at_ms >= from_ms && r.at_ms < to_ms).collect(),
        secs: ((to_ms - from_ms) as f64 / 1000.0).max(0.001),
    }
}

pub async fn backfill(report: &mut Report) -> Result<(), String> {
    let records: usize = knob("PERF_QUOTA_RECORDS", 20_000);
    let q: f64 = knob("PERF_QUOTA_Q", 50.0);
    let q_crm: f64 = knob("PERF_QUOTA_CRM", 10.0);
    let limit = Duration::from_secs(knob("PERF_QUOTA_SECS", 300));
    let workers: usize = knob("PERF_QUOTA_WORKERS", 32);
    let mut contract = driftless::contract::default_contract();
    for (rl, quota) in [
        (&mut contract.rate_limits.crm, q_crm),
        (&mut contract.rate_limits.billing, q),
    ] {
        rl.requests_per_second = quota;
        rl.burst = (quota as u32).max(1);
        rl.daily_cap = None;
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let running = runtime::start_demo(DemoOptions {
        seed: 17,
        faults: FaultProfile::none(),
        contract,
        serve: ServeOptions {
            ledger: dir.path().join("ledger.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers,
            public_url: None,
            token: None,
            allow_non_loopback: false,
        },
        request_timeout_ms: 10_000,
    })
    .await
    .map_err(|e| format!("the demo did not start: {e}"))?;
    let sims = running.sims.clone().ok_or("no simulators")?;
    eprintln!("perf: [quota] {records} contacts made in the CRM simulator (webhooks suppressed) …");
    sims.crm.suppress_webhooks(true);
    for i in 0..records {
        sims.crm
            .create_contact(&[("email", &format!("bf{i}@example.test")), ("lifecyclestage", "lead")]);
    }
    sims.crm.suppress_webhooks(false);
    let quota = |n: f64| FaultProfile::parse(&format!("quota={n}")).map_err(|e| e.to_string());
    sims.crm.set_faults(quota(q_crm)?);
    sims.billing.set_faults(quota(q)?);

    eprintln!(
        "perf: [quota] backfill under quotas: billing {q}/s, CRM {q_crm}/s (at most {} s) …",
        limit.as_secs()
    );
    let engine = running.engine.clone();
    let from_ms = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    let listing = tokio::spawn(async move { engine.backfill("crm", "perf", BackfillOptions::default()).await });
    let mut complete = false;
    let mut listed_s = None;
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if listed_s.is_none() && listing.is_finished() {
            listed_s = Some(start.elapsed().as_secs_f64());
        }
        if listed_s.is_some()
            && running
                .engine
                .ledger()
                .count(driftless::ledger::LedgerTable::WorkQueue)
                .await
                .ok()
                == Some(0)
        {
            complete = true;
            break;
        }
    }
    let to_ms = chrono::Utc::now().timestamp_millis();
    let secs = start.elapsed().as_secs_f64();
    let st = running.engine.status().await.map_err(|e| e.to_string())?;
    let (crm_log, billing_log) = (sims.crm.request_log(), sims.billing.request_log());
    let customers = sims.billing.customers().len();
    running.shutdown().await;
    let _ = listing.await;

    // From the first billing request the backfill caused (the listing's first page and the
    // first records' CRM reads come before it) to the end.
    let busy_from = billing_log
        .iter()
        .map(|r| r.at_ms)
        .filter(|t| *t >= from_ms)
        .min()
        .unwrap_or(from_ms);
    let billing = window(&billing_log, busy_from, to_ms);
    let crm = window(&crm_log, from_ms, to_ms);
    let achieved = billing.accepted_per_sec();
    let batch = &st.ledger.crm_write_calls;
    let crm_reads = crm.log.iter().filter(|r| r.method == "GET").count();
    let crm_batch_reads = crm.log.iter().filter(|r| r.path.ends_with("/batch/read")).count();
    let detail = json!({
        "records": records, "complete": complete, "seconds": secs, "listing_seconds": listed_s,
        "billing_busy_from_s": (busy_from - from_ms) as f64 / 1000.0,
        "customers_created": customers, "records_per_sec": customers as f64 / secs,
        "billing": {"quota_per_sec": q, "requests": billing.log.len(), "accepted_per_sec": achieved,
                    "achieved_over_quota": achieved / q, "rate_limited_share": billing.share_429(),
                    "requests_per_record": billing.log.len() as f64 / customers.max(1) as f64},
        "crm": {"quota_per_sec": q_crm, "requests": crm.log.len(), "accepted_per_sec": crm.accepted_per_sec(),
                "achieved_over_quota": crm.accepted_per_sec() / q_crm, "rate_limited_share": crm.share_429(),
                "single_reads": crm_reads, "batch_reads": crm_batch_reads},
        "crm_write_calls": batch, "workers": workers,
    });
    report.add(Figure {
        name: "quota efficiency: billing accepted / Q".into(),
        value: achieved / q,
        unit: "x Q".into(),
        baseline: None,
        target: ">= 0.95".into(),
        met: Some(achieved / q >= 0.95),
        detail: detail.clone(),
    });
    let worst_429 = billing.share_429().max(crm.share_429());
    report.add(Figure {
        name: "quota efficiency: 429 share (worst side)".into(),
        value: 100.0 * worst_429,
        unit: "%".into(),
        baseline: None,
        target: "< 1 %".into(),
        met: Some(worst_429 < 0.01),
        detail: json!({"billing": billing.share_429(), "crm": crm.share_429()}),
    });
    report.add(Figure {
        name: "quota efficiency: HubSpot records per write call".into(),
        value: batch.mean_records,
        unit: "records".into(),
        baseline: None,
        target: ">= 90".into(),
        met: Some(batch.mean_records >= 90.0),
        detail: json!({"calls": batch.calls, "records": batch.records, "max": batch.max_records}),
    });
    Ok(())
}
