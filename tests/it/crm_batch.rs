//! CRM writes in bulk go through HubSpot's batch endpoints: a burst of billing-owned changes to
//! several hundred contacts lands in `batch/update` calls of ~100 records, every contact ends
//! with its value, one record HubSpot refuses dead-letters alone, and no write is made twice or
//! lost — all read from the CRM simulator's own request log and state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use driftless::api::{DeadLetterFilter, PauseRequest};
use driftless::contract::{self, DEFAULT_CONTRACT};
use driftless::drill::wait_quiescent;
use driftless::runtime::{self, DemoOptions, ServeOptions};
use driftless::sim::{FaultProfile, LoggedRequest};

use crate::support::{eventually, meta, prop, Demo};

const CONTACTS: usize = 400;

/// The default contract with the lifecycle stage owned by billing (so billing edits flow to
/// the CRM, where `lifecyclestage` is an enumeration HubSpot validates) and budgets wide
/// enough that the setup is quick.
fn bulk_contract() -> contract::Contract {
    let mut text = DEFAULT_CONTRACT.to_string();
    for (from, to) in [
        (
            "billing = \"metadata.lifecycle_stage\"\nowner = \"crm\"",
            "billing = \"metadata.lifecycle_stage\"\nowner = \"billing\"",
        ),
        ("# requests_per_second = 10.0 ", "requests_per_second = 1000.0 "),
        ("# burst = 10 ", "burst = 200 "),
        ("# requests_per_second = 25.0 ", "requests_per_second = 1000.0 "),
        ("# burst = 25 ", "burst = 200 "),
    ] {
        assert!(text.contains(from), "default contract changed: {from:?} not found");
        text = text.replacen(from, to, 1);
    }
    contract::compile("bulk", &text).expect("contract valid")
}

async fn start(workers: usize) -> Demo {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = runtime::start_demo(DemoOptions {
        seed: 11,
        faults: FaultProfile::none(),
        contract: bulk_contract(),
        serve: ServeOptions {
            ledger: dir.path().join("ledger.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers,
            public_url: None,
            token: None,
            allow_non_loopback: false,
        },
        request_timeout_ms: 5_000,
    })
    .await
    .expect("demo starts");
    Demo { running, _dir: dir }
}

/// A CRM object write: a record update (`PATCH`) or a batch write.
fn is_crm_write(r: &LoggedRequest) -> bool {
    r.mutating && r.path.starts_with("/crm/v3/objects/")
}

/// The records one request carried: its correlation ids (one per outbox write).
fn carried(r: &LoggedRequest) -> Vec<String> {
    r.correlation_id
        .as_deref()
        .map(|ids| ids.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Pause CRM writes, set `stage(i)` on every customer in billing, wait until every CRM write is
/// planned and held (none sent), resume, wait until quiet. Returns the CRM requests made after resume.
async fn burst(d: &Demo, customers: &[String], stage: impl Fn(usize) -> &'static str) -> Vec<LoggedRequest> {
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let crm_scope = PauseRequest {
        scope: Some("crm".into()),
        reason: Some("bulk test: build a backlog".into()),
    };
    e.pause_outbound(&crm_scope, "test").await.expect("pause");
    let paused_at = sims.crm.request_log().len();
    for (i, cus) in customers.iter().enumerate() {
        sims.billing
            .edit_customer(cus, None, &[("lifecycle_stage", stage(i))])
            .expect("edit customer");
    }
    let n = customers.len() as i64;
    // Planned, and every record parked by the pause (none still on its way to the gate), so
    // the resume releases the whole backlog at once.
    eventually(120, "every CRM write planned and held while paused", || {
        let e = e.clone();
        async move {
            let st = e.status().await.ok()?;
            (st.ledger.writes["crm"].pending == n && st.ledger.held_writes["crm"] == n).then_some(())
        }
    })
    .await;
    let log = sims.crm.request_log();
    let leaked: Vec<&LoggedRequest> = log[paused_at..].iter().filter(|r| is_crm_write(r)).collect();
    assert!(leaked.is_empty(), "writes reached the CRM while paused: {leaked:?}");
    let resumed_at = log.len();
    e.resume_outbound(&crm_scope, "test").await.expect("resume");
    assert!(
        wait_quiescent(&d.running, Duration::from_secs(120)).await,
        "quiet after resume"
    );
    sims.crm.request_log()[resumed_at..].to_vec()
}

/// Each write carried by exactly one request the CRM applied: nothing written twice, nothing lost.
fn landed_once(writes: &[LoggedRequest]) -> BTreeMap<String, usize> {
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for r in writes.iter().filter(|r| (200..300).contains(&r.status)) {
        for id in carried(r) {
            *landed.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "writes applied more than once: {twice:?}");
    landed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_billing_changes_reaches_the_crm_in_batches_and_a_bad_record_dead_letters_alone() {
    let d = start(16).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();

    // Setup: contacts created in the CRM, each gets its billing customer (and the id written
    // back to the CRM, itself batched).
    let ids: Vec<String> = (0..CONTACTS)
        .map(|i| sims.crm.create_contact(&[("email", &format!("bulk{i}@example.test"))]))
        .collect();
    let by_id = |sims: &driftless::sim::Simulators| -> BTreeMap<String, serde_json::Value> {
        sims.crm
            .contacts()
            .into_iter()
            .filter_map(|c| Some((c["id"].as_str()?.to_string(), c)))
            .collect()
    };
    let customers: Vec<String> = eventually(180, "every contact has its billing customer", || {
        let sims = sims.clone();
        let ids = ids.clone();
        async move {
            let all = by_id(&sims);
            ids.iter()
                .map(|id| prop(all.get(id)?, "billing_customer_id").map(str::to_string))
                .collect::<Option<Vec<String>>>()
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(60)).await);
    assert_eq!(sims.billing.customers().len(), CONTACTS, "one customer per contact");
    // Each contact was re-read at least twice (its first plan, and again after its customer
    // was created); reads waiting together went out as batch/read calls.
    let log = sims.crm.request_log();
    let single_reads = log
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/crm/v3/objects/contacts/"))
        .count();
    let batch_reads = log
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/contacts/batch/read")
        .count();
    eprintln!("crm_batch: setup read {CONTACTS} contacts (twice or more) in {single_reads} GETs and {batch_reads} batch/read calls");
    assert!(batch_reads > 0, "no read was batched");
    assert!(
        single_reads + batch_reads < 2 * CONTACTS,
        "{single_reads} GETs + {batch_reads} batch reads for {CONTACTS} contacts read at least twice"
    );

    // 1. The bulk part: a billing-owned change to every contact, released at once.
    let writes: Vec<LoggedRequest> = burst(&d, &customers, |_| "customer")
        .await
        .into_iter()
        .filter(is_crm_write)
        .collect();
    let per_call: Vec<usize> = writes.iter().map(|r| carried(r).len()).collect();
    let records: usize = per_call.iter().sum();
    let mean = records as f64 / per_call.len().max(1) as f64;
    eprintln!(
        "crm_batch: {records} records in {} calls (mean {mean:.1}, max {}, sizes {per_call:?}); {} calls saved",
        per_call.len(),
        per_call.iter().max().unwrap_or(&0),
        records - per_call.len()
    );
    assert_eq!(records, CONTACTS, "every contact written once: {per_call:?}");
    assert!(mean >= 90.0, "records per call {mean:.1} < 90: {per_call:?}");
    assert!(
        writes.iter().all(|r| r.path == "/crm/v3/objects/contacts/batch/update"),
        "the bulk went through batch/update"
    );
    assert_eq!(landed_once(&writes).len(), CONTACTS);
    let all = by_id(&sims);
    let wrong: Vec<&String> = ids
        .iter()
        .filter(|id| prop(&all[*id], "lifecyclestage") != Some("customer"))
        .collect();
    assert!(wrong.is_empty(), "contacts without the billing value: {wrong:?}");

    // 2. One value HubSpot refuses (not a lifecycle stage): HubSpot fails the whole batch;
    // the batch is split until the bad record is alone, which dead-letters; the rest land.
    let bad = 137;
    let writes: Vec<LoggedRequest> = burst(&d, &customers, |i| if i == bad { "platinum" } else { "evangelist" })
        .await
        .into_iter()
        .filter(is_crm_write)
        .collect();
    let refused = writes.iter().filter(|r| r.status == 400).count();
    let landed = landed_once(&writes);
    eprintln!(
        "crm_batch: with one bad record, {} calls ({refused} refused whole) for {} records landed",
        writes.len(),
        landed.len()
    );
    assert_eq!(landed.len(), CONTACTS - 1, "every good record landed once");
    assert!(refused >= 1, "HubSpot refused a batch: {writes:?}");
    assert!(
        writes.len() <= 4 + 2 * 8,
        "isolating one bad record costs a few calls, not one per record: {}",
        writes.len()
    );
    let all = by_id(&sims);
    for (i, id) in ids.iter().enumerate() {
        let want = if i == bad { "customer" } else { "evangelist" };
        assert_eq!(prop(&all[id], "lifecyclestage"), Some(want), "contact {i} ({id})");
    }
    let dls = e
        .list_dead_letters(&DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert_eq!(dls.total, 1, "only the bad record dead-letters: {:?}", dls.items);
    let bad_keys = [
        format!("customer:crm:{}", ids[bad]),
        format!("customer:billing:{}", customers[bad]),
    ];
    assert!(
        bad_keys.contains(&dls.items[0].record),
        "{} is not {bad_keys:?}",
        dls.items[0].record
    );
    assert_eq!(
        (dls.items[0].destination.as_str(), dls.items[0].error_class.as_str()),
        ("crm", "validation")
    );
    assert!(dls.items[0].error.contains("platinum"), "{}", dls.items[0].error);
    let bad_cus = sims
        .billing
        .customers()
        .into_iter()
        .find(|c| c["id"] == customers[bad].as_str())
        .expect("bad customer");
    assert_eq!(meta(&bad_cus, "lifecycle_stage"), Some("platinum"));

    // Everything accounted, and the figures are in `status`.
    let st = e.status().await.expect("status");
    assert_eq!(st.ledger.events["pending"], 0, "{:?}", st.ledger.events);
    assert_eq!(st.ledger.writes["crm"].pending, 0);
    assert_eq!(st.ledger.writes["crm"].dead_lettered, 1);
    // The records-per-call figures reach `status` once the metrics are flushed (every 2 s),
    // and they are what the CRM received: every write call since the start (the setup's
    // live updates too, however they happened to batch), and the records they carried.
    let sent: Vec<LoggedRequest> = sims.crm.request_log().into_iter().filter(is_crm_write).collect();
    let sent_records: usize = sent.iter().map(|r| carried(r).len()).sum();
    let calls = eventually(20, "CRM write calls in status", || {
        let e = e.clone();
        async move {
            let c = e.status().await.ok()?.ledger.crm_write_calls;
            (c.records as usize >= sent_records).then_some(c)
        }
    })
    .await;
    eprintln!(
        "crm_batch: status {calls:?}; the CRM received {sent_records} records in {} calls",
        sent.len()
    );
    assert_eq!(calls.max_records, 100);
    assert_eq!(
        (calls.calls as usize, calls.records as usize),
        (sent.len(), sent_records),
        "status counts the calls the CRM received: {calls:?}"
    );
    d.running.shutdown().await;
}
