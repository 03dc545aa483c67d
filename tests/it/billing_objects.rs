//! Subscriptions, invoices and credit notes in billing -> the contact in the CRM (billing owns
//! them), over real HTTP against the simulators.

use std::time::Duration;

use driftless::drill::wait_quiescent;
use driftless::sim::FaultProfile;

use crate::support::{demo, eventually, prop};

async fn contact_where(
    sims: &driftless::sim::Simulators,
    id: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(25, what, || {
        let c = sims.crm.contacts().into_iter().find(|c| c["id"] == id);
        let ok = c.filter(|c| f(c));
        async move { ok }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_and_invoice_state_flows_to_the_contact_and_crm_edits_of_it_are_reverted() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let id = sims
        .crm
        .create_contact(&[("email", "subs@example.test"), ("lifecyclestage", "customer")]);
    let c = contact_where(&sims, &id, "synced", |c| prop(c, "billing_customer_id").is_some()).await;
    let cus = prop(&c, "billing_customer_id").expect("id").to_string();

    let sub = sims.billing.start_subscription(&cus, "pro").expect("subscription");
    let c = contact_where(&sims, &id, "subscription mirrored", |c| {
        prop(c, "subscription_status") == Some("active")
            && prop(c, "plan") == Some("pro")
            && prop(c, "last_payment_at").is_some()
    })
    .await;
    assert_eq!(prop(&c, "mrr"), Some("50.00"));
    assert_eq!(prop(&c, "cancel_at_period_end"), Some("false"));
    assert_eq!(prop(&c, "invoice_balance"), Some("0.00"));
    assert_eq!(prop(&c, "delinquent"), Some("false"));
    let next = prop(&c, "next_invoice_date").expect("next invoice date");
    assert_eq!(next.len(), 10, "YYYY-MM-DD: {next}");

    sims.billing.change_plan(&sub, "enterprise").expect("plan change");
    contact_where(&sims, &id, "plan change mirrored", |c| {
        prop(c, "plan") == Some("enterprise") && prop(c, "mrr") == Some("200.00")
    })
    .await;

    // A failed renewal: past due, delinquent, a balance; a credit note settles it.
    sims.billing.set_payment_failure_rate(1.0);
    sims.billing.advance_clock(32 * 24 * 3600);
    assert!(sims.billing.run_billing_cycle() >= 1);
    contact_where(&sims, &id, "delinquency mirrored", |c| {
        prop(c, "delinquent") == Some("true")
            && prop(c, "subscription_status") == Some("past_due")
            && prop(c, "invoice_balance") == Some("200.00")
    })
    .await;
    let open = sims
        .billing
        .invoices()
        .into_iter()
        .find(|i| i["customer"] == cus.as_str() && i["status"] == "open")
        .expect("open invoice");
    let inv = open["id"].as_str().expect("invoice id").to_string();
    sims.billing
        .issue_credit_note(&inv, 20000, "order_change")
        .expect("credit note");
    contact_where(&sims, &id, "credit note mirrored", |c| {
        prop(c, "invoice_balance") == Some("0.00") && prop(c, "delinquent") == Some("false")
    })
    .await;

    // Sales edits a billing-owned field in the CRM: reverted to billing's value.
    sims.crm.edit_contact(&id, &[("plan", "basic")]).expect("crm edit");
    contact_where(&sims, &id, "plan reverted", |c| prop(c, "plan") == Some("enterprise")).await;
    sims.billing
        .cancel_subscription(&sub, true)
        .expect("cancel at period end");
    contact_where(&sims, &id, "cancel flag mirrored", |c| {
        prop(c, "cancel_at_period_end") == Some("true")
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);
    let st = d.running.engine.status().await.unwrap();
    assert_eq!(st.ledger.events["pending"], 0);
    assert_eq!(st.ledger.dead_letter_depth, 0);
    // Still exactly one customer.
    assert_eq!(sims.billing.customers().len(), 1);
    d.running.shutdown().await;
}
