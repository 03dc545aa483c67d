//! Nothing runs unbounded (DESIGN invariant 10, issue 19 item 4): a decision that cannot be
//! applied ends in review with its reason, a read that keeps failing ends in the dead letters
//! with its reason, and neither is retried forever.

use std::time::Duration;

use driftless::sim::FaultProfile;

use crate::support::{demo, demo_with, eventually, synced_contact};

/// Requests the billing simulator saw.
fn billing_requests(d: &crate::support::Demo) -> usize {
    d.running.sims.as_ref().expect("sims").billing.request_log().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_billing_id_naming_another_records_customer_goes_to_review_once_not_into_a_retry_loop() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let (a, cus_a) = synced_contact(&d, "a@bounded.test").await;
    // A CRM user creates B (an import, a copy of A) with A's customer id in billing_customer_id.
    let b = sims.crm.create_contact(&[
        ("email", "b@bounded.test"),
        ("lifecyclestage", "lead"),
        ("billing_customer_id", cus_a.as_str()),
    ]);
    let item = eventually(20, "B in review", || {
        let e = e.clone();
        let b = b.clone();
        async move {
            e.list_reviews()
                .await
                .ok()?
                .into_iter()
                .find(|r| r.record.ends_with(&format!(":crm:{b}")))
        }
    })
    .await;
    assert!(
        item.reason.contains(&cus_a) && item.reason.contains(&format!("contact {a}")),
        "the reason names the customer and its owner: {}",
        item.reason
    );
    // No loop: the billing API sees no more requests for B once it is in review.
    let before = billing_requests(&d);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = billing_requests(&d);
    assert!(
        after - before <= 1,
        "{} billing requests after B went to review",
        after - before
    );
    // A's customer was not taken over.
    let a_customer = sims
        .billing
        .customers()
        .into_iter()
        .find(|c| c["id"] == cus_a.as_str())
        .expect("A's customer");
    assert_eq!(
        crate::support::meta(&a_customer, "driftless_crm_contact_id"),
        Some(a.as_str())
    );
    let status = e.status().await.expect("status");
    assert_eq!(status.ledger.queue_depth, 0, "nothing left queued: {status:?}");
    assert_eq!(status.ledger.events.get("pending").copied().unwrap_or(0), 0);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_keeps_failing_is_given_up_to_the_dead_letters_after_max_attempts() {
    let mut contract = driftless::contract::default_contract();
    contract.retry.max_attempts = 3;
    contract.retry.base_backoff_ms = 20;
    contract.retry.max_backoff_ms = 100;
    let d = demo_with(contract, FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    // Billing answers every request with a 5xx.
    sims.billing.set_faults(FaultProfile::parse("5xx=1").expect("faults"));
    let id = sims
        .crm
        .create_contact(&[("email", "down@bounded.test"), ("lifecyclestage", "lead")]);
    let dl = eventually(30, "the read given up", || {
        let e = e.clone();
        async move {
            let list = e.list_dead_letters(&Default::default()).await.ok()?;
            list.items.into_iter().next()
        }
    })
    .await;
    assert_eq!(dl.error_class, "exhausted");
    assert!(dl.record.ends_with(&format!(":crm:{id}")), "{}", dl.record);
    assert!(dl.error.contains("billing"), "{}", dl.error);
    assert_eq!(dl.attempts, 3);
    // Every event is accounted for: none pending, the contact's dead-lettered.
    let status = e.status().await.expect("status");
    assert_eq!(
        status.ledger.events.get("pending").copied().unwrap_or(0),
        0,
        "{status:?}"
    );
    assert!(status.ledger.events.get("dead_lettered").copied().unwrap_or(0) >= 1);
    // And it stops: no more requests once given up.
    let before = billing_requests(&d);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        billing_requests(&d),
        before,
        "requests went on after the read was given up"
    );
    // Retrying the dead letter once billing is back syncs the contact.
    sims.billing.set_faults(FaultProfile::none());
    let filter = driftless::api::DeadLetterFilter::default();
    e.retry_dead_letters(&filter, false, "billing is back", "test")
        .await
        .expect("retry");
    eventually(30, "the contact synced after the retry", || {
        let sims = sims.clone();
        async move { (sims.billing.customers().len() == 1).then_some(()) }
    })
    .await;
    d.running.shutdown().await;
}
