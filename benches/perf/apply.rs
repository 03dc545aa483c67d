//! End-to-end apply and lag under load, against the simulators over real HTTP on loopback.
//!
//! `apply`: events/s from the inbox to applied writes. The CRM simulator (no latency, no
//! faults) makes `PERF_APPLY_RECORDS` new contacts (default 2,000; each a creation and its
//! property changes, as HubSpot sends them) and `PERF_APPLY_EDITS` edits of them (default
//! 2 per contact); its webhooks are collected, then put in the inbox through
//! `Engine::ingest` before any worker runs. Then the workers start (`PERF_APPLY_WORKERS`,
//! default 32 = `serve`'s default) and the clock runs until every event is decided and every
//! planned write is done: a billing customer per contact and its id written back to the CRM.
//! Budgets are lifted (the measure is the engine, not a quota). Checked afterwards: one
//! customer per contact, every event accounted.
//!
//! `lag`: the demo (default fault profile, webhooks live both ways, budgets lifted — the
//! simulators enforce no quota here; the `quota` section measures that), a steady
//! `PERF_LAG_RATE` CRM edits/s (default 100) for `PERF_LAG_SECS` (default 60) over 200
//! synced contacts; per event, receipt → its writes done (or its decision, when it needs no
//! write), p50 / p95 / max. `PERF_LAG_FAULTS` (default `default`) takes any `--faults`
//! profile, e.g. `default,429=0` to see the pipeline without the random 429s (each carries
//! `Retry-After: 1`, which the budget holds for every caller).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use driftless::connectors::hubspot::HubspotClient;
use driftless::connectors::stripe::StripeClient;
use driftless::engine::{Engine, EngineConfig, SystemClock, WebhookSecrets};
use driftless::ingest::{hubspot, Routes};
use driftless::ledger::LedgerTable;
use driftless::runtime::{self, DemoOptions, EngineSecrets, ServeOptions};
use driftless::sim::{FaultProfile, SimConfig, Simulators};

use crate::report::{knob, percentile, Figure, Report};

/// Every event decided and every planned write done: a record leaves the work queue only
/// then (`Ledger::release`), so an empty queue is the cheap test; the full status confirms.
async fn settled(engine: &Engine) -> bool {
    if engine.ledger().count(LedgerTable::WorkQueue).await.ok() != Some(0) {
        return false;
    }
    match engine.ledger().status().await {
        Ok(st) => {
            st.queue_depth == 0
                && st.events.get("pending").copied().unwrap_or(0) == 0
                && st.writes.values().all(|w| w.pending == 0)
        }
        Err(_) => false,
    }
}

/// A loopback server that keeps every webhook body POSTed to it.
async fn collector() -> Result<(String, Arc<Mutex<Vec<Vec<u8>>>>), String> {
    let kept: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let k = kept.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let k = k.clone();
            async move {
                if let Ok(mut v) = k.lock() {
                    v.push(body.to_vec());
                }
                "ok"
            }
        }),
    );
    let listener = driftless::http::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(driftless::http::serve(listener, app, std::future::pending()));
    Ok((format!("http://{addr}/hook"), kept))
}

fn lifted(contract: &mut driftless::contract::Contract) {
    for rl in [&mut contract.rate_limits.crm, &mut contract.rate_limits.billing] {
        rl.requests_per_second = 1_000_000.0;
        rl.burst = 1_000_000;
        rl.daily_cap = None;
    }
}

pub async fn end_to_end(report: &mut Report) -> Result<(), String> {
    let records: usize = knob("PERF_APPLY_RECORDS", 2_000);
    let edits: usize = knob("PERF_APPLY_EDITS", 2);
    let workers: usize = knob("PERF_APPLY_WORKERS", 32);
    let sims = Simulators::start(SimConfig {
        seed: 21,
        faults: FaultProfile::none(),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("the simulators did not start: {e}"))?;
    let (hook, kept) = collector().await?;
    sims.crm.set_webhook_target(&hook);

    eprintln!(
        "perf: [apply] {records} contacts and {} edits in the CRM simulator …",
        records * edits
    );
    let stages = ["marketingqualifiedlead", "salesqualifiedlead", "opportunity"];
    let mut ids = Vec::with_capacity(records);
    for i in 0..records {
        let email = format!("apply{i}@example.test");
        ids.push(sims.crm.create_contact(&[
            ("email", &email),
            ("firstname", "Ada"),
            ("lastname", &format!("Perf{i}")),
            ("lifecyclestage", "lead"),
        ]));
    }
    for e in 0..edits {
        for id in &ids {
            sims.crm
                .edit_contact(id, &[("lifecyclestage", stages[e % stages.len()])])
                .map_err(|e| e.to_string())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while sims.pending_webhooks() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies = kept.lock().map_err(|e| e.to_string())?.clone();

    let mut contract = driftless::contract::default_contract();
    lifted(&mut contract);
    contract.systems.crm.base_url = sims.crm.base_url();
    contract.systems.billing.base_url = sims.billing.base_url();
    let secrets = EngineSecrets {
        crm_token: sims.crm.token().to_string(),
        billing_key: sims.billing.api_key().to_string(),
        crm_webhook_secret: None,
        billing_webhook_secret: None,
    };
    runtime::ensure_crm_properties(&contract, &secrets)
        .await
        .map_err(|e| e.to_string())?;
    let routes = Routes::from_contract(&contract);
    let mut events = Vec::new();
    for b in &bodies {
        events.extend(
            hubspot::parse_events(b, "webhook", chrono::Utc::now().timestamp_millis(), &routes)
                .map_err(|e| e.to_string())?,
        );
    }
    let n_events = events.len();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let timeout = 10_000;
    let engine = Engine::open(EngineConfig {
        ledger: dir.path().join("ledger.db"),
        contract,
        crm: Arc::new(
            HubspotClient::new(&sims.crm.base_url(), secrets.crm_token.clone(), timeout).map_err(|e| e.to_string())?,
        ),
        billing: Arc::new(
            StripeClient::new(&sims.billing.base_url(), secrets.billing_key.clone(), timeout)
                .map_err(|e| e.to_string())?,
        ),
        webhook_secrets: WebhookSecrets::default(),
        workers,
        clock: Arc::new(SystemClock),
        demo: false,
    })
    .await
    .map_err(|e| e.to_string())?;
    for chunk in events.chunks(1000) {
        engine.ingest(chunk.to_vec()).await.map_err(|e| e.to_string())?;
    }
    let crm_before = sims.crm.request_log().len();
    let billing_before = sims.billing.request_log().len();
    eprintln!("perf: [apply] {n_events} events in the inbox; starting {workers} workers …");

    let start = Instant::now();
    engine.start();
    let limit = Duration::from_secs(knob("PERF_APPLY_MAX_SECS", 600));
    let mut done = false;
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if settled(&engine).await {
            done = true;
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let st = engine.status().await.map_err(|e| e.to_string())?;
    engine.shutdown().await;
    let crm_log = sims.crm.request_log();
    let billing_log = sims.billing.request_log();
    let (crm_requests, billing_requests) = (crm_log.len() - crm_before, billing_log.len() - billing_before);
    let by_kind = |log: &[driftless::sim::LoggedRequest]| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for r in log {
            // Ids (digits, `cus_…`) folded so requests group by kind.
            let shape: Vec<&str> = r
                .path
                .split('/')
                .map(|seg| {
                    if seg.chars().any(|c| c.is_ascii_digit() || c == '_') {
                        "{id}"
                    } else {
                        seg
                    }
                })
                .collect();
            *m.entry(format!("{} {}", r.method, shape.join("/"))).or_default() += 1;
        }
        m
    };
    let requests_by_kind =
        json!({"crm": by_kind(&crm_log[crm_before..]), "billing": by_kind(&billing_log[billing_before..])});
    let customers = sims.billing.customers().len();
    sims.shutdown().await;
    if !done {
        return Err(format!("not settled within {} s", limit.as_secs()));
    }
    if customers != records {
        return Err(format!("{customers} billing customers for {records} contacts"));
    }
    let rate = n_events as f64 / secs;
    report.add(Figure {
        name: "end-to-end apply (inbox -> applied write)".into(),
        value: rate,
        unit: "events/s".into(),
        baseline: None,
        target: ">= 5,000 events/s".into(),
        met: Some(rate >= 5_000.0),
        detail: json!({
            "events": n_events, "records": records, "edits_per_record": edits, "workers": workers,
            "seconds": secs, "records_per_sec": records as f64 / secs,
            "crm_requests": crm_requests, "billing_requests": billing_requests,
            "crm_requests_per_record": crm_requests as f64 / records as f64,
            "billing_requests_per_record": billing_requests as f64 / records as f64,
            "requests_by_kind": requests_by_kind,
            "events_by_state": st.ledger.events, "crm_write_calls": st.ledger.crm_write_calls,
        }),
    });
    Ok(())
}

pub async fn lag(report: &mut Report) -> Result<(), String> {
    let rate: f64 = knob("PERF_LAG_RATE", 100.0);
    let secs: u64 = knob("PERF_LAG_SECS", 60);
    let seeded: usize = knob("PERF_LAG_RECORDS", 200);
    // A fault profile as `--faults` takes it (`default`, or e.g. `default,429=0`).
    let faults: String = knob("PERF_LAG_FAULTS", "default".to_string());
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Budgets lifted: the simulators enforce no quota here (the quota row measures that), and
    // 100 edits/s is more than a Stripe test-mode budget (25/s) allows for any engine.
    let mut contract = driftless::contract::default_contract();
    lifted(&mut contract);
    let running = runtime::start_demo(DemoOptions {
        seed: 5,
        faults: FaultProfile::parse(&faults).map_err(|e| format!("PERF_LAG_FAULTS: {e}"))?,
        contract,
        serve: ServeOptions {
            ledger: dir.path().join("ledger.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 8,
            public_url: None,
            token: None,
            allow_non_loopback: false,
        },
        request_timeout_ms: 2_000,
    })
    .await
    .map_err(|e| format!("the demo did not start: {e}"))?;
    let sims = running.sims.clone().ok_or("no simulators")?;
    let ids: Vec<String> = (0..seeded)
        .map(|i| {
            sims.crm
                .create_contact(&[("email", &format!("lag{i}@example.test")), ("lifecyclestage", "lead")])
        })
        .collect();
    if !driftless::drill::wait_quiescent(&running, Duration::from_secs(600)).await {
        return Err("the seed contacts did not settle within 10 minutes".into());
    }
    eprintln!("perf: [lag] {rate} edits/s for {secs} s over {seeded} contacts (default fault profile) …");
    let stages = [
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
    ];
    let from_ms = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    let total = (rate * secs as f64) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for k in 0..total {
        tick.tick().await;
        let id = &ids[k % ids.len()];
        let stage = stages[(k / ids.len() + 1) % stages.len()];
        sims.crm
            .edit_contact(id, &[("lifecyclestage", stage)])
            .map_err(|e| e.to_string())?;
    }
    let sent_s = start.elapsed().as_secs_f64();
    let to_ms = chrono::Utc::now().timestamp_millis();
    if !driftless::drill::wait_quiescent(&running, Duration::from_secs(600)).await {
        return Err("the engine did not settle within 10 minutes of the load".into());
    }
    let mut lags: Vec<f64> = running
        .engine
        .ledger()
        .event_lags(from_ms, to_ms)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|l| l as f64)
        .collect();
    running.shutdown().await;
    lags.sort_by(f64::total_cmp);
    let (p50, p95, max) = (
        percentile(&lags, 50.0),
        percentile(&lags, 95.0),
        lags.last().copied().unwrap_or(0.0),
    );
    report.add(Figure {
        name: format!("lag under load, p95 (faults {faults})"),
        value: p95,
        unit: "ms".into(),
        baseline: None,
        target: "p95 < 2,000 ms".into(),
        met: Some(p95 < 2_000.0),
        detail: json!({
            "p50_ms": p50, "p95_ms": p95, "max_ms": max, "events_measured": lags.len(),
            "edits_sent": total, "send_seconds": sent_s, "rate_per_sec": rate,
            "fault_profile": faults,
        }),
    });
    Ok(())
}
