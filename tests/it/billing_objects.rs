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

fn subscription_plan(sims: &driftless::sim::Simulators, sub: &str) -> Option<String> {
    sims.billing
        .subscriptions()
        .into_iter()
        .find(|s| s["id"] == sub)
        .and_then(|s| {
            s["items"]["data"][0]["price"]["lookup_key"]
                .as_str()
                .map(str::to_string)
        })
}

/// The seed's two-way case: a plan requested in the CRM moves the billing subscription and
/// the result flows back; finance's own change updates the request; both at once go to review,
/// where the operator's choice is written; an unknown plan is refused into the dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_requested_in_the_crm_changes_the_subscription_and_the_result_flows_back() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let (id, cus) = crate::support::synced_contact(&d, "plans@example.test").await;
    let sub = sims.billing.start_subscription(&cus, "basic").expect("subscription");
    // First sync of the shared field: the only value (billing's) becomes the request.
    contact_where(&sims, &id, "plan mirrored, request initialised", |c| {
        prop(c, "plan") == Some("basic") && prop(c, "requested_plan") == Some("basic")
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    let sub_writes = |sims: &driftless::sim::Simulators| {
        sims.billing
            .request_log()
            .iter()
            .filter(|r| r.mutating && r.applied && r.path.starts_with("/v1/subscriptions/"))
            .count()
    };
    assert_eq!(sub_writes(&sims), 0);

    // Sales asks for pro in the CRM: one subscription write, and the result comes back.
    sims.crm
        .edit_contact(&id, &[("requested_plan", "pro")])
        .expect("request");
    let c = contact_where(&sims, &id, "the new plan flows back", |c| {
        prop(c, "plan") == Some("pro") && prop(c, "mrr") == Some("50.00")
    })
    .await;
    assert_eq!(prop(&c, "requested_plan"), Some("pro"));
    assert_eq!(subscription_plan(&sims, &sub).as_deref(), Some("pro"));
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(sub_writes(&sims), 1, "one user edit, one billing write");
    let key = sims
        .billing
        .request_log()
        .into_iter()
        .find(|r| r.mutating && r.path.starts_with("/v1/subscriptions/"))
        .and_then(|r| r.idempotency_key)
        .unwrap_or_default();
    assert!(key.starts_with(&format!("billing:plan:{cus}:crm:")), "{key}");
    let t = e.record_timeline(&id).await.expect("timeline");
    assert!(
        t.entries
            .iter()
            .any(|x| x.rule.as_deref() == Some("shared:one_side_changed")
                && x.summary.contains("plan := Some(\"pro\") on billing")),
        "the decision names its rule: {:?}",
        t.entries.iter().map(|x| (&x.summary, &x.rule)).collect::<Vec<_>>()
    );

    // Finance changes the plan in billing: the request follows (one side changed).
    sims.billing.change_plan(&sub, "enterprise").expect("plan change");
    contact_where(&sims, &id, "billing's plan change updates the request", |c| {
        prop(c, "plan") == Some("enterprise") && prop(c, "requested_plan") == Some("enterprise")
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(
        sub_writes(&sims),
        1,
        "finance's change (made inside billing) costs no API write back"
    );

    // Both sides change before driftless hears of the CRM edit: a conflict, sent to review.
    sims.crm.suppress_webhooks(true);
    sims.crm
        .edit_contact(&id, &[("requested_plan", "basic")])
        .expect("request");
    sims.crm.suppress_webhooks(false);
    sims.billing.change_plan(&sub, "pro").expect("plan change");
    let item = eventually(20, "a review item", || {
        let e = e.clone();
        async move { e.list_reviews().await.ok()?.into_iter().next() }
    })
    .await;
    let f = item
        .fields
        .iter()
        .find(|f| f.field == "requested_plan")
        .expect("requested_plan in review");
    assert_eq!(
        (f.crm.as_deref(), f.billing.as_deref(), f.owner.as_str()),
        (Some("basic"), Some("pro"), "shared (review)")
    );
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(
        subscription_plan(&sims, &sub).as_deref(),
        Some("pro"),
        "nothing written"
    );
    // The operator takes the CRM's request: the subscription moves to basic.
    let res = driftless::api::ReviewResolution {
        choices: vec![driftless::api::FieldChoice {
            field: "requested_plan".into(),
            take: "crm".into(),
            value: None,
        }],
        reason: "customer asked for the downgrade in writing".into(),
    };
    e.resolve_review(item.id, &res, "ops:ana").await.expect("resolve");
    contact_where(&sims, &id, "the operator's choice is applied and flows back", |c| {
        prop(c, "plan") == Some("basic") && prop(c, "requested_plan") == Some("basic")
    })
    .await;
    assert_eq!(subscription_plan(&sims, &sub).as_deref(), Some("basic"));
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(e.status().await.expect("status").ledger.review_depth, 0);

    // A plan billing does not sell: refused with the reason, in the dead letters.
    sims.crm
        .edit_contact(&id, &[("requested_plan", "platinum")])
        .expect("request");
    let dl = eventually(20, "the unknown plan is dead-lettered", || {
        let e = e.clone();
        async move {
            let list = e.list_dead_letters(&Default::default()).await.ok()?;
            list.items.into_iter().next()
        }
    })
    .await;
    assert_eq!(dl.error_class, "validation");
    assert!(dl.error.contains("platinum"), "{}", dl.error);
    assert_eq!(subscription_plan(&sims, &sub).as_deref(), Some("basic"));
    assert_eq!(sims.billing.customers().len(), 1);
    d.running.shutdown().await;
}
