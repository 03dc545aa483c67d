//! The first two-way flow, over real HTTP against the simulators.

use std::time::Duration;

use driftless::api::PauseRequest;
use driftless::drill::wait_quiescent;
use driftless::sim::FaultProfile;

use crate::support::{demo, eventually, meta, prop, synced_contact};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_contact_creates_one_customer_writes_the_id_back_and_the_echo_causes_nothing() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let id = sims
        .crm
        .create_contact(&[("email", "ada@example.test"), ("lifecyclestage", "lead")]);

    let contact = eventually(20, "billing_customer_id written back", || {
        let sims = sims.clone();
        let id = id.clone();
        async move {
            sims.crm
                .contacts()
                .into_iter()
                .find(|c| c["id"] == id.as_str() && prop(c, "billing_customer_id").is_some())
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);

    let customers = sims.billing.customers();
    assert_eq!(customers.len(), 1, "exactly one billing customer");
    let cus = &customers[0];
    assert_eq!(prop(&contact, "billing_customer_id"), cus["id"].as_str());
    assert_eq!(cus["email"], "ada@example.test");
    assert_eq!(meta(cus, "lifecycle_stage"), Some("lead"));
    assert_eq!(meta(cus, "driftless_crm_contact_id"), Some(id.as_str()));

    // Created with the contract's idempotency key.
    let creates: Vec<_> = sims
        .billing
        .request_log()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers")
        .collect();
    assert_eq!(creates.len(), 1);
    let key = creates[0].idempotency_key.clone().unwrap_or_default();
    assert!(key.starts_with(&format!("billing:create:{id}:")), "key {key}");
    // One look for a customer an earlier create made (by the contact's email) before the
    // create: the create, planned right after it in the same turn, does not look again.
    let lookups = sims
        .billing
        .request_log()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/customers")
        .count();
    assert_eq!(lookups, 1, "one lookup by origin before the first create");

    // The write-back's webhook (and the create's) came back as echoes and caused no write:
    // one write per destination in total.
    assert_eq!(crate::support::applied_writes(&sims), (1, 1));
    let st = d.running.engine.status().await.unwrap();
    assert!(st.ledger.events["echo"] >= 2, "echoes counted: {:?}", st.ledger.events);
    assert_eq!(st.ledger.events["pending"], 0);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_stage_edited_in_crm_follows_into_billing_metadata() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let (id, cus) = synced_contact(&d, "grace@example.test").await;
    sims.crm
        .edit_contact(&id, &[("lifecyclestage", "customer")])
        .expect("edit");
    eventually(20, "lifecycle stage in billing metadata", || {
        let sims = sims.clone();
        let cus = cus.clone();
        async move {
            sims.billing
                .customers()
                .into_iter()
                .find(|c| c["id"] == cus.as_str() && meta(c, "lifecycle_stage") == Some("customer"))
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    let billing_updates = sims
        .billing
        .request_log()
        .iter()
        .filter(|r| r.mutating && r.applied && r.path == format!("/v1/customers/{cus}"))
        .count();
    assert_eq!(billing_updates, 1, "one edit costs one billing write");
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_edited_in_billing_is_reverted_to_the_crm_owner_and_audited() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let (id, cus) = synced_contact(&d, "linus@example.test").await;
    sims.billing
        .edit_customer(&cus, Some("finance-typo@example.test"), &[])
        .expect("edit");
    eventually(20, "billing email reverted", || {
        let sims = sims.clone();
        let cus = cus.clone();
        async move {
            sims.billing
                .customers()
                .into_iter()
                .find(|c| c["id"] == cus.as_str() && c["email"] == "linus@example.test")
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    let audit = d
        .running
        .engine
        .ledger()
        .audit_for(&format!("customer:crm:{id}"))
        .await
        .unwrap();
    let revert = audit
        .iter()
        .find(|a| a.rule.as_deref() == Some("non_owner_edit:revert"))
        .expect("the revert decision is audited");
    assert_eq!(
        revert.contract_version.as_deref(),
        Some(d.running.engine.contract().version.as_str())
    );
    assert!(revert
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("finance-typo@example.test"));
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_webhooks_are_counted_drops() {
    let faults = FaultProfile::parse("dup=1.0").expect("profile");
    let d = demo(faults).await;
    let sims = d.running.sims.clone().expect("sims");
    synced_contact(&d, "dup@example.test").await;
    let st = d.running.engine.status().await.unwrap();
    assert!(st.ledger.events["duplicate"] >= 2, "{:?}", st.ledger.events);
    assert_eq!(sims.billing.customers().len(), 1);
    // Every delivery is in exactly one state: the per-state counters the status reports
    // against the inbox's own rows (quiescent, so the two reads see the same ledger).
    let census = d.running.engine.ledger().event_census().await.unwrap();
    assert_eq!(
        census.mismatches(),
        Vec::<String>::new(),
        "counters vs rows: {census:?}"
    );
    assert_eq!(st.ledger.events, census.counted, "the status's counts are the rows'");
    assert_eq!(st.ledger.events_total, census.total());
    assert_eq!(st.ledger.distinct_events, census.distinct_events());
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_times_out_after_commit_is_retried_with_the_same_key_and_yields_one_customer() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    sims.set_faults(FaultProfile::parse("timeout=1.0,hang_ms=1500").expect("profile"));
    let id = sims.crm.create_contact(&[("email", "hopper@example.test")]);
    // Wait until the create was applied but its response withheld.
    eventually(20, "a create applied with its response withheld", || {
        let sims = sims.clone();
        async move {
            sims.billing.request_log().into_iter().find(|r| {
                r.path == "/v1/customers" && r.method == "POST" && r.fault.as_deref() == Some("timeout_after_commit")
            })
        }
    })
    .await;
    sims.set_faults(FaultProfile::none());
    eventually(30, "billing id written back", || {
        let sims = sims.clone();
        let id = id.clone();
        async move {
            sims.crm
                .contacts()
                .into_iter()
                .find(|c| c["id"] == id.as_str() && prop(c, "billing_customer_id").is_some())
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);
    assert_eq!(
        sims.billing.customers().len(),
        1,
        "one customer despite the lost response"
    );
    let keys: std::collections::HashSet<_> = sims
        .billing
        .request_log()
        .into_iter()
        .filter(|r| r.path == "/v1/customers" && r.method == "POST")
        .filter_map(|r| r.idempotency_key)
        .collect();
    assert!(
        keys.len() <= 1,
        "every create attempt used the same idempotency key: {keys:?}"
    );
    // The attempt after the lost one first looked for the customer it may have made.
    let log = sims.billing.request_log();
    let lost = log
        .iter()
        .position(|r| {
            r.method == "POST" && r.path == "/v1/customers" && r.fault.as_deref() == Some("timeout_after_commit")
        })
        .expect("the lost create is logged");
    assert!(
        log[lost..]
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v1/customers"),
        "the retry looked the customer up by origin before creating again"
    );
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_paused_no_write_reaches_a_destination_ingestion_continues_and_resume_drains() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let (id, cus) = synced_contact(&d, "pause@example.test").await;
    let writes = |sims: &driftless::sim::Simulators| {
        sims.billing.request_log().iter().filter(|r| r.mutating).count()
            + sims
                .crm
                .request_log()
                .iter()
                .filter(|r| r.mutating && !r.path.contains("/properties/"))
                .count()
    };
    let before = writes(&sims);
    d.running
        .engine
        .pause_outbound(
            &PauseRequest {
                scope: None,
                reason: Some("incident drill".into()),
            },
            "test",
        )
        .await
        .expect("pause");
    // Edits on both sides and new contacts while paused.
    sims.crm
        .edit_contact(&id, &[("lifecyclestage", "opportunity")])
        .expect("edit");
    sims.crm
        .edit_contact(&id, &[("lifecyclestage", "customer")])
        .expect("edit");
    let new_id = sims.crm.create_contact(&[("email", "paused-new@example.test")]);
    // Waited for, not slept on: every delivery acknowledged (so every event is in the
    // ledger), the two writes they need planned (the customer's update, the new contact's
    // create) and every queued record parked by the write gate — none the engine can work
    // on, so none with a write on its way. Only then is "no write" a finding.
    let ledger = d.running.engine.ledger().clone();
    eventually(
        20,
        "every event ingested, its writes planned and held by the pause",
        || {
            let (sims, ledger) = (sims.clone(), ledger.clone());
            async move {
                let st = ledger.status().await.ok()?;
                let workable = ledger.workable_queue_depth().await.ok()?;
                (sims.pending_webhooks() == 0 && workable == 0 && st.queue_depth >= 2 && st.held_writes["billing"] >= 2)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(writes(&sims), before, "no write reached a destination while paused");
    let st = d.running.engine.status().await.unwrap();
    assert!(
        st.ledger.events["pending"] >= 2,
        "backlog visible: {:?}",
        st.ledger.events
    );
    assert_eq!(st.ledger.paused[0].scope, "global");

    d.running
        .engine
        .resume_outbound(&PauseRequest::default(), "test")
        .await
        .expect("resume");
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);
    let customer = sims
        .billing
        .customers()
        .into_iter()
        .find(|c| c["id"] == cus.as_str())
        .expect("customer");
    assert_eq!(
        meta(&customer, "lifecycle_stage"),
        Some("customer"),
        "the latest edit wins after the drain"
    );
    assert!(
        sims.billing
            .customers()
            .iter()
            .any(|c| meta(c, "driftless_crm_contact_id") == Some(new_id.as_str())),
        "the contact created during the pause got its customer"
    );
    d.running.shutdown().await;
}

/// Invariant 6's first half: a webhook is answered 2xx only once its event is durable. Another
/// connection holds the ledger's write lock; the delivery must stay unacknowledged (the
/// simulator still counts it pending, so it would retry after a crash) until the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_acknowledged_only_after_its_event_is_durable() {
    use sqlx::Connection;
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let (id, _) = synced_contact(&d, "durable@example.test").await;
    let e = d.running.engine.clone();
    let before = e.status().await.expect("status").ledger.distinct_events;

    let path = d._dir.path().join("ledger.db");
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .expect("write lock");
    sims.crm
        .edit_contact(&id, &[("lifecyclestage", "customer")])
        .expect("edit");
    // The engine has the delivery in hand — verified, its batch handed to the ledger and
    // waiting for the write lock — and the simulator still counts it open: not acknowledged.
    let ledger = e.ledger().clone();
    eventually(20, "the delivery in the engine, waiting for the ledger", || {
        let ledger = ledger.clone();
        async move { (ledger.ingests_waiting() > 0).then_some(()) }
    })
    .await;
    assert!(
        sims.pending_webhooks() > 0,
        "the webhook was acknowledged while its event could not be written"
    );
    assert_eq!(ledger.ingests_waiting(), 1, "still waiting: nothing was written");
    sqlx::query("ROLLBACK").execute(&mut lock).await.expect("release");
    drop(lock);
    eventually(20, "acknowledged once durable", || {
        let sims = sims.clone();
        let e = e.clone();
        async move {
            let n = e.status().await.ok()?.ledger.distinct_events;
            (sims.pending_webhooks() == 0 && n > before).then_some(())
        }
    })
    .await;
    d.running.shutdown().await;
}
