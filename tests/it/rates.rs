//! Rate budgets against the simulators' server-side quota (profile option `quota`): every
//! write lands and nothing is dead-lettered for rate limiting when the quota is tight, live
//! work is not stuck behind a bulk replay, and `status` shows each budget.

use std::time::Duration;

use driftless::api::{ReplaySelector, Status};
use driftless::drill::wait_quiescent;
use driftless::sim::{FaultProfile, LoggedRequest, Simulators};

use crate::support::{demo_with, eventually, prop};

fn quota(per_sec: u32) -> FaultProfile {
    FaultProfile::parse(&format!("quota={per_sec}")).expect("profile")
}

/// Requests the simulator refused for being over its quota.
fn over_quota(log: &[LoggedRequest]) -> usize {
    log.iter().filter(|r| r.fault.as_deref() == Some("quota")).count()
}

fn budget<'a>(st: &'a Status, dest: &str) -> &'a driftless::api::BudgetStatus {
    st.budgets
        .iter()
        .find(|b| b.destination == dest)
        .unwrap_or_else(|| panic!("no {dest} budget in status: {:?}", st.budgets))
}

/// Create `n` contacts and wait until each has its billing customer.
async fn contacts(sims: &Simulators, prefix: &str, n: usize, secs: u64) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let email = format!("{prefix}{i}@example.test");
            sims.crm
                .create_contact(&[("email", &email), ("lifecyclestage", "lead")])
        })
        .collect();
    let want = ids.clone();
    eventually(secs, "every contact linked to its billing customer", || {
        let sims = sims.clone();
        let want = want.clone();
        async move {
            let linked = sims
                .crm
                .contacts()
                .into_iter()
                .filter(|c| {
                    c["id"].as_str().is_some_and(|id| want.iter().any(|w| w == id))
                        && prop(c, "billing_customer_id").is_some()
                })
                .count();
            (linked == want.len()).then_some(())
        }
    })
    .await;
    ids
}

/// The engine is configured well above the simulators' quota: 429s come back, the budgets
/// adapt, and still every write lands once and none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tight_quota_costs_waiting_not_writes() {
    let mut c = driftless::contract::default_contract();
    for rl in [&mut c.rate_limits.crm, &mut c.rate_limits.billing] {
        rl.requests_per_second = 40.0;
        rl.burst = 40;
    }
    let d = demo_with(c, FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    // The quota starts once the demo is up (the CRM properties are created first).
    sims.set_faults(quota(6));
    let ids = contacts(&sims, "quota", 12, 90).await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(60)).await, "quiescent");

    // The quota was hit: this test exercises 429s, not a quiet run.
    let (crm_log, billing_log) = (sims.crm.request_log(), sims.billing.request_log());
    let refused = over_quota(&crm_log) + over_quota(&billing_log);
    assert!(refused > 0, "the simulators never refused a request over quota");

    // Every write landed once: one customer per contact, linked both ways.
    let customers = sims.billing.customers();
    assert_eq!(customers.len(), ids.len(), "one billing customer per contact");
    for id in &ids {
        let n = customers
            .iter()
            .filter(|cu| cu["metadata"]["driftless_crm_contact_id"] == id.as_str())
            .count();
        assert_eq!(n, 1, "contact {id} has exactly one customer");
    }
    let st = d.running.engine.status().await.expect("status");
    assert_eq!(st.ledger.dead_letter_depth, 0, "nothing dead-lettered: {:?}", st.ledger);
    for w in st.ledger.writes.values() {
        assert_eq!((w.pending, w.dead_lettered), (0, 0), "{:?}", st.ledger.writes);
    }
    // Every 429 the simulators sent was reported to a budget (and so to the overview).
    let crm = budget(&st, "crm");
    let billing = budget(&st, "billing");
    assert_eq!(
        (crm.rate_limited as usize, billing.rate_limited as usize),
        (over_quota(&crm_log), over_quota(&billing_log)),
        "{st:?}"
    );
    assert_eq!(crm.configured_per_sec, 40.0);
    assert!(crm.source.contains("hubspot free_starter tier"), "{}", crm.source);
    assert!(billing.source.contains("stripe test mode"), "{}", billing.source);
    // HubSpot's headers told the CRM budget the real quota (6/s over its 10 s window); it
    // aims a little under it.
    assert!(crm.current_per_sec < 6.0, "{crm:?}");
    assert_eq!(crm.daily_cap, Some(250_000));
    // Today's count: at least what this budget let through (the headers may say more).
    assert!(crm.daily_used >= crm.requests && crm.requests > 0, "{crm:?}");
    d.running.shutdown().await;
}

/// A replay of every record (bulk) under a tight budget while a live edit arrives: the live
/// write lands while the replay still has most of its requests to make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_work_is_not_stuck_behind_a_bulk_replay() {
    let mut c = driftless::contract::default_contract();
    for rl in [&mut c.rate_limits.crm, &mut c.rate_limits.billing] {
        rl.requests_per_second = 8.0;
        rl.burst = 1;
    }
    let d = demo_with(c, FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    sims.set_faults(quota(8));
    let ids = contacts(&sims, "lane", 16, 120).await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(60)).await, "quiescent");
    let live = ids.last().cloned().expect("contacts");
    let live_customer = sims
        .crm
        .contacts()
        .into_iter()
        .find(|c| c["id"] == live.as_str())
        .and_then(|c| prop(&c, "billing_customer_id").map(str::to_string))
        .expect("linked");

    // Queue every record for replay (bulk), then a live edit arrives behind it.
    let preview = d
        .running
        .engine
        .replay(
            &ReplaySelector {
                from_ms: Some(0),
                to_ms: Some(i64::MAX / 2),
                ..Default::default()
            },
            false,
            "test",
        )
        .await
        .expect("replay");
    assert_eq!(preview.records, ids.len() as i64);
    assert!(preview.queued);
    let start_seq = sims.billing.request_log().last().map_or(0, |r| r.seq);
    sims.crm
        .edit_contact(&live, &[("lifecyclestage", "customer")])
        .expect("edit");
    // The lanes are visible in status while the replay drains.
    eventually(30, "bulk work waiting for budget in status", || {
        let engine = d.running.engine.clone();
        async move {
            let st = engine.status().await.ok()?;
            st.budgets.iter().any(|b| b.bulk_waiting > 0).then_some(())
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(120)).await, "quiescent");

    let log = sims.billing.request_log();
    let after_start: Vec<&LoggedRequest> = log.iter().filter(|r| r.seq > start_seq).collect();
    let path = format!("/v1/customers/{live_customer}");
    let live_write = after_start
        .iter()
        .position(|r| r.method == "POST" && r.path == path && r.status == 200)
        .expect("the live edit was written to billing");
    let bulk_after = after_start.len() - live_write - 1;
    // Live work queued behind the replay would come after (nearly) all of it.
    assert!(
        bulk_after * 2 >= after_start.len(),
        "the live write was request {live_write} of {} billing requests made after the edit",
        after_start.len()
    );
    let customer = sims
        .billing
        .customers()
        .into_iter()
        .find(|c| c["id"] == live_customer.as_str())
        .expect("customer");
    assert_eq!(customer["metadata"]["lifecycle_stage"], "customer");
    let st = d.running.engine.status().await.expect("status");
    assert_eq!(st.ledger.dead_letter_depth, 0);
    for b in &st.budgets {
        assert_eq!((b.live_waiting, b.bulk_waiting), (0, 0), "{b:?}");
        assert!(b.requests > 0, "{b:?}");
    }
    d.running.shutdown().await;
}
