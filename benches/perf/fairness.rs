//! Claim fairness (issue #8): 50,000 records in flight in the per-record queue, claimed by K
//! concurrent claimers the way the engine's workers do (`claim_lane(owner, 1, now, lease,
//! bulk_first every 10th)`, then the record's unplanned events marked decided with
//! `Ledger::apply` and `release`), while a feeder adds events to a hot subset of records at a
//! bounded rate. No connectors: this measures the queue, not the providers.
//!
//! Knobs: `PERF_FAIRNESS_RECORDS` (default 50,000), `PERF_FAIRNESS_CLAIMERS` (default 8, the
//! engine's default worker count), `PERF_FAIRNESS_HOT` (hot records, default 100),
//! `PERF_FAIRNESS_FEED` (hot events per second, default 200), `PERF_FAIRNESS_SECS` (bound,
//! default 120). Stops when every record has been claimed and the queue is empty, or at the bound.
//!
//! Figures: `claim throughput` (claims/s, no target) and `claim fairness: max wait` (the
//! longest time from a record's enqueue to its first claim; target: every record claimed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftless::contract::Side;
use driftless::ledger::{ChangeSet, Ledger, NewEvent};
use serde_json::json;

use crate::report::{knob, percentile, Figure, Report};

const LEASE_MS: i64 = 30_000;
const BULK_CLAIM_EVERY: u64 = 10;

fn key(i: usize) -> String {
    format!("customer:crm:fair-{i:06}")
}

fn event(i: usize, n: u64, now: i64) -> NewEvent {
    NewEvent {
        source: Side::Crm,
        event_id: format!("fair-{i}-{n}"),
        via: "webhook",
        event_type: "contact.propertyChange".into(),
        object_type: "contact".into(),
        object_id: format!("fair-{i:06}"),
        identity_object: "customer".into(),
        entity_key: key(i),
        billing_id: None,
        payload: format!(r#"{{"eventId":{n},"objectId":"fair-{i:06}","propertyName":"email"}}"#),
        received_at_ms: now,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Default)]
struct Seen {
    /// record -> (claim position, time of its first claim)
    first: HashMap<String, (u64, Instant)>,
}

pub async fn claims(report: &mut Report) -> Result<(), String> {
    let records: usize = knob("PERF_FAIRNESS_RECORDS", 50_000);
    let claimers: usize = knob("PERF_FAIRNESS_CLAIMERS", 8);
    let hot: usize = knob("PERF_FAIRNESS_HOT", 100).min(records);
    let feed_per_s: u64 = knob("PERF_FAIRNESS_FEED", 200);
    let bound = Duration::from_secs(knob("PERF_FAIRNESS_SECS", 120));
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let ledger = Ledger::open(&dir.path().join("fair.db"))
        .await
        .map_err(|e| format!("open: {e}"))?;

    // Fill the queue: one event per record, a second and third for every fifth record.
    // Arrival order is record order; enqueue time is the commit of its batch.
    let t_fill = Instant::now();
    let mut enqueued: Vec<Instant> = vec![Instant::now(); records];
    let mut events_in = 0usize;
    for lo in (0..records).step_by(500) {
        let hi = (lo + 500).min(records);
        let now = now_ms();
        let mut batch = Vec::with_capacity((hi - lo) * 2);
        for i in lo..hi {
            batch.push(event(i, 0, now));
            if i % 5 == 0 {
                batch.push(event(i, 1, now));
                batch.push(event(i, 2, now));
            }
        }
        events_in += batch.len();
        ledger.ingest(batch.clone()).await.map_err(|e| format!("ingest: {e}"))?;
        let t = Instant::now();
        enqueued[lo..hi].iter_mut().for_each(|e| *e = t);
    }
    let fill_s = t_fill.elapsed().as_secs_f64();
    eprintln!("perf: [fairness] {records} records ({events_in} events) queued in {fill_s:.1} s");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let position = Arc::new(AtomicU64::new(0));
    let claims_done = Arc::new(AtomicU64::new(0));
    let fed = Arc::new(AtomicU64::new(0));
    let feeding = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let run = Instant::now();

    // The feeder: hot records get new events at a bounded rate until every record was claimed.
    let feeder = {
        let ledger = ledger.clone();
        let feeding = feeding.clone();
        let fed = fed.clone();
        tokio::spawn(async move {
            let per_tick = (feed_per_s / 100).max(1);
            let mut n = 10u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while feeding.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = now_ms();
                let batch: Vec<NewEvent> = (0..per_tick)
                    .map(|k| {
                        n += 1;
                        event(((n + k) as usize * 7919) % hot, n, now)
                    })
                    .collect();
                if ledger.ingest(batch.clone()).await.is_err() {
                    return;
                }
                fed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        })
    };

    let mut tasks = Vec::new();
    let claim_ms: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    for w in 0..claimers {
        let ledger = ledger.clone();
        let seen = seen.clone();
        let position = position.clone();
        let claims_done = claims_done.clone();
        let stop = stop.clone();
        let feeding = feeding.clone();
        let claim_ms = claim_ms.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("perf-claimer-{w}");
            let mut mine = 0u64;
            let mut timings = Vec::new();
            let result: Result<(), String> = async {
                while !stop.load(Ordering::Relaxed) {
                    mine += 1;
                    let t = Instant::now();
                    let claim = ledger
                        .claim_lane(&owner, 1, now_ms(), LEASE_MS, mine.is_multiple_of(BULK_CLAIM_EVERY))
                        .await
                        .map_err(|e| format!("claim: {e}"))?
                        .pop();
                    timings.push(t.elapsed().as_secs_f64() * 1000.0);
                    let Some(claim) = claim else {
                        if !feeding.load(Ordering::Relaxed) {
                            return Ok(()); // drained
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    };
                    let pos = position.fetch_add(1, Ordering::Relaxed);
                    seen.lock()
                        .map_err(|_| "poisoned")?
                        .first
                        .entry(claim.entity_key.clone())
                        .or_insert((pos, Instant::now()));
                    // Decide the record's new events, as a worker's plan would.
                    let events = ledger
                        .unplanned_events(&claim.entity_key)
                        .await
                        .map_err(|e| format!("unplanned_events: {e}"))?;
                    let cs = ChangeSet {
                        entity_key: claim.entity_key.clone(),
                        contract_version: "perf".into(),
                        event_states: events
                            .iter()
                            .map(|e| {
                                (
                                    e.id,
                                    driftless::ledger::EventState::Applied,
                                    "perf: decided".to_string(),
                                )
                            })
                            .collect(),
                        ..Default::default()
                    };
                    ledger.apply(&cs, now_ms()).await.map_err(|e| format!("apply: {e}"))?;
                    ledger
                        .release(&claim, &owner)
                        .await
                        .map_err(|e| format!("release: {e}"))?;
                    claims_done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            .await;
            if let Ok(mut all) = claim_ms.lock() {
                all.extend(timings);
            }
            result
        }));
    }

    // Watch: stop feeding once every record was claimed; stop everything at the bound.
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let claimed = seen.lock().map(|s| s.first.len()).unwrap_or(0);
        if claimed >= records {
            feeding.store(false, Ordering::Relaxed);
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        if run.elapsed() > bound {
            timed_out = true;
            feeding.store(false, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
        }
    }
    let elapsed = run.elapsed().as_secs_f64();
    let _ = feeder.await;
    for t in tasks {
        t.await.map_err(|e| format!("claimer panicked: {e}"))??;
    }
    let queue_left = ledger
        .count(driftless::ledger::LedgerTable::WorkQueue)
        .await
        .map_err(|e| format!("count: {e}"))?;
    ledger.close().await;

    let total_claims = claims_done.load(Ordering::Relaxed);
    let seen = seen.lock().map_err(|_| "poisoned")?;
    let claimed = seen.first.len();
    let mut waits: Vec<f64> = Vec::with_capacity(claimed);
    let mut max_displacement: i64 = 0;
    for (i, at_enqueue) in enqueued.iter().enumerate() {
        if let Some((pos, at)) = seen.first.get(&key(i)) {
            waits.push(at.saturating_duration_since(*at_enqueue).as_secs_f64() * 1000.0);
            max_displacement = max_displacement.max(*pos as i64 - i as i64);
        }
    }
    waits.sort_by(|a, b| a.total_cmp(b));
    let mut claim_ms = claim_ms.lock().map_err(|_| "poisoned")?.clone();
    claim_ms.sort_by(|a, b| a.total_cmp(b));
    let all_claimed = claimed == records;
    let rate = total_claims as f64 / elapsed.max(1e-9);
    let detail = json!({
        "records": records, "events_queued": events_in, "fill_s": fill_s, "claimers": claimers,
        "hot_records": hot, "feed_events_per_s": feed_per_s, "hot_events_fed": fed.load(Ordering::Relaxed),
        "claims": total_claims, "run_s": elapsed, "timed_out": timed_out, "queue_left": queue_left,
        "records_claimed": claimed, "all_claimed": all_claimed,
        "wait_to_first_claim_ms": {"p50": percentile(&waits, 50.0), "p99": percentile(&waits, 99.0), "max": percentile(&waits, 100.0)},
        "max_claim_position_minus_arrival": max_displacement,
        "claim_call_ms": {"p50": percentile(&claim_ms, 50.0), "p95": percentile(&claim_ms, 95.0), "p99": percentile(&claim_ms, 99.0), "max": percentile(&claim_ms, 100.0)},
        "cycle": "claim_lane(1, bulk_first every 10th) + unplanned_events + apply + release",
    });
    report.add(Figure {
        name: "claim throughput".into(),
        value: rate,
        unit: "claims/s".into(),
        baseline: None,
        target: "-".into(),
        met: None,
        detail: detail.clone(),
    });
    report.add(Figure {
        name: "claim fairness: max wait".into(),
        value: percentile(&waits, 100.0) / 1000.0,
        unit: "s".into(),
        baseline: None,
        target: "every record claimed".into(),
        met: Some(all_claimed),
        detail,
    });
    Ok(())
}
