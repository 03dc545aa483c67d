//! Operator operations against the simulators: dead letters (blast radius, retry, discard),
//! the record timeline, replay with its dry-run preview, un-drop.

use std::time::Duration;

use driftless::api::{DeadLetterFilter, ReplaySelector};
use driftless::contract::{self, DEFAULT_CONTRACT};
use driftless::drill::wait_quiescent;
use driftless::sim::FaultProfile;

use crate::support::{demo, demo_with, eventually, synced_contact};

/// The default contract plus a field the billing system refuses (an unknown parameter), so
/// every create for a contact with a first name is a validation error.
fn contract_with_a_rejected_field() -> contract::Contract {
    let extra = "\n[[objects.customer.fields]]\nname = \"nickname\"\ncrm = \"firstname\"\nbilling = \"nickname\"\nowner = \"crm\"\n";
    let text = DEFAULT_CONTRACT.replacen(
        "\n[objects.subscription]",
        &format!("{extra}\n[objects.subscription]"),
        1,
    );
    contract::compile("test", &text).expect("contract valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_dead_letter_with_context_and_can_be_retried_or_discarded() {
    let d = demo_with(contract_with_a_rejected_field(), FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let id = sims
        .crm
        .create_contact(&[("email", "dl@example.test"), ("firstname", "Dee")]);
    // A create in the CRM's UI arrives as three webhooks (creation, then one property change
    // each). The record is planned as soon as an event is in, so the create is tried once to
    // three times (a later event plans it again), and every failed write is a dead letter.
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);
    let list = e.list_dead_letters(&DeadLetterFilter::default()).await.unwrap();
    assert!(
        (1..=3).contains(&list.total),
        "one dead letter per failed write: {list:?}"
    );
    for dl in &list.items {
        assert_eq!(dl.error_class, "validation");
        assert_eq!(dl.destination, "billing");
        assert_eq!(dl.record, format!("customer:crm:{id}"));
        assert!(dl.error.contains("nickname"), "{}", dl.error);
    }
    let dl = &list.items[0];
    assert_eq!(sims.billing.customers().len(), 0, "nothing was created");
    let st = e.status().await.unwrap();
    assert_eq!(st.ledger.events["dead_lettered"], list.total);

    // Filters narrow; the timeline shows the event's fate and the write's key.
    let none = e
        .list_dead_letters(&DeadLetterFilter {
            destination: Some("crm".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(none.total, 0);
    let t = e.record_timeline("dl@example.test").await.expect("timeline by email");
    assert_eq!(t.record, dl.record);
    assert!(t
        .entries
        .iter()
        .any(|x| x.kind == "event" && x.state.as_deref() == Some("dead_lettered")));
    assert!(t.entries.iter().any(|x| x.kind == "write"
        && x.idempotency_key
            .as_deref()
            .is_some_and(|k| k.starts_with("billing:create:"))));
    assert!(t.entries.iter().any(|x| x.rule.as_deref() == Some("retry:validation")));

    // Retry: blast radius first, then the record is planned again (and fails again here).
    let preview = e
        .retry_dead_letters(&DeadLetterFilter::default(), true, "", "test")
        .await
        .unwrap();
    assert_eq!(
        (preview.applied, preview.radius.dead_letters, preview.radius.records),
        (false, list.total, 1)
    );
    e.retry_dead_letters(&DeadLetterFilter::default(), false, "fixed upstream", "test")
        .await
        .unwrap();
    // The record is planned once more: one write, failing again, one new dead letter.
    eventually(20, "the retried write dead-letters again", || {
        let e = e.clone();
        let newest = dl.id;
        async move {
            let l = e.list_dead_letters(&DeadLetterFilter::default()).await.ok()?;
            (l.total == 1 && l.items[0].id > newest).then_some(())
        }
    })
    .await;
    // Discard needs a reason and is audited.
    assert!(e
        .discard_dead_letters(&DeadLetterFilter::default(), false, " ", "test")
        .await
        .is_err());
    let r = e
        .discard_dead_letters(&DeadLetterFilter::default(), false, "not a real customer", "ops:ana")
        .await
        .unwrap();
    assert!(r.applied);
    assert_eq!(
        e.list_dead_letters(&DeadLetterFilter::default()).await.unwrap().total,
        0
    );
    let t = e.record_timeline(&id).await.unwrap();
    assert!(t
        .entries
        .iter()
        .any(|x| x.kind == "operator" && x.summary.contains("dead_letter_discard")));
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_previews_then_repairs_drift_made_behind_the_engines_back() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let (id, cus) = synced_contact(&d, "replay@example.test").await;
    // Drift: an edit in billing whose webhook never arrives.
    sims.billing.suppress_webhooks(true);
    sims.billing
        .edit_customer(&cus, Some("drifted@example.test"), &[])
        .expect("edit");
    sims.billing.suppress_webhooks(false);

    let sel = ReplaySelector {
        record: Some(id.clone()),
        ..Default::default()
    };
    let p = e.replay(&sel, true, "test").await.expect("preview");
    assert_eq!((p.records, p.updates, p.creates, p.conflicts), (1, 1, 0, 0), "{p:?}");
    assert!(p.samples[0]
        .values
        .as_deref()
        .unwrap_or("")
        .contains("replay@example.test"));
    assert!(!p.queued);
    // Checked against the keys already used: this one is fresh, and it is the key the run
    // will send.
    assert_eq!(p.keys_already_used, 0);
    assert_eq!(p.samples[0].key_used_by, None);
    let previewed_key = p.samples[0].idempotency_key.clone().expect("a key");
    let writes_before = sims.billing.request_log().iter().filter(|r| r.mutating).count();
    assert_eq!(writes_before, 1, "the dry run wrote nothing");

    // Replay is refused while paused, with a clear error.
    let pause = driftless::api::PauseRequest {
        scope: None,
        reason: Some("replay refusal test".into()),
    };
    e.pause_outbound(&pause, "test").await.unwrap();
    let err = e.replay(&sel, false, "test").await.unwrap_err();
    assert_eq!(err.code(), "paused");
    e.resume_outbound(&Default::default(), "test").await.unwrap();

    let p = e.replay(&sel, false, "test").await.expect("run");
    assert!(p.queued);
    eventually(20, "billing email repaired", || {
        let sims = sims.clone();
        let cus = cus.clone();
        async move {
            sims.billing
                .customers()
                .into_iter()
                .find(|c| c["id"] == cus.as_str() && c["email"] == "replay@example.test")
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    let sent_key = sims
        .billing
        .request_log()
        .into_iter()
        .rev()
        .find(|r| r.mutating)
        .and_then(|r| r.idempotency_key);
    assert_eq!(
        sent_key.as_deref(),
        Some(previewed_key.as_str()),
        "the preview shows the run's key"
    );
    // Replaying again changes nothing: a no-op.
    let p = e.replay(&sel, true, "test").await.unwrap();
    assert_eq!((p.noops, p.updates), (1, 0));
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_ended_time_range_is_pinned_at_the_preview_so_the_run_replays_what_was_previewed() {
    let d = demo(FaultProfile::none()).await;
    let e = d.running.engine.clone();
    let (first, _) = synced_contact(&d, "early@example.test").await;
    let open = ReplaySelector {
        from_ms: Some(0),
        ..Default::default()
    };
    let p = e.replay(&open, true, "test").await.expect("preview");
    assert_eq!(p.records, 1, "{p:?}");
    let pinned = p.selector.clone().expect("the resolved selection");
    assert_eq!(pinned.from_ms, Some(0));
    assert!(
        pinned.to_ms.is_some(),
        "the open end is closed at the preview: {pinned:?}"
    );

    // A record whose events arrive after the preview is not part of it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (late, _) = synced_contact(&d, "late@example.test").await;
    assert_ne!(first, late);
    let run = e.replay(&pinned, false, "test").await.expect("run");
    assert_eq!(run.records, p.records, "the run holds the previewed records");
    let r = e.replay_run(run.run_id).await.expect("read").expect("the run");
    assert_eq!(r.records, 1);
    // The same open range asked again now reaches the new record too.
    let again = e.replay(&open, true, "test").await.expect("preview");
    assert_eq!(again.records, 2, "{again:?}");
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_can_be_undropped_and_is_decided_again() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let id = sims.crm.create_contact(&[("email", "undrop@example.test")]);
    let t = eventually(20, "an echo in the timeline", || {
        let e = e.clone();
        let id = id.clone();
        async move {
            let t = e.record_timeline(&id).await.ok()?;
            t.entries
                .iter()
                .any(|x| x.state.as_deref() == Some("echo"))
                .then_some(t)
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    let echo = t
        .entries
        .iter()
        .find(|x| x.state.as_deref() == Some("echo"))
        .expect("echo")
        .id;
    let writes = sims.billing.request_log().iter().filter(|r| r.mutating).count();
    assert!(e.undrop_event(echo, "", "test").await.is_err(), "a reason is required");
    e.undrop_event(echo, "checking a suspected missed change", "ops:ana")
        .await
        .expect("undrop");
    eventually(20, "the event decided again", || {
        let e = e.clone();
        let id = id.clone();
        async move {
            let t = e.record_timeline(&id).await.ok()?;
            t.entries
                .iter()
                .find(|x| x.id == echo && x.kind == "event")
                .filter(|x| x.state.as_deref() != Some("pending"))
                .map(|_| ())
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(
        sims.billing.request_log().iter().filter(|r| r.mutating).count(),
        writes,
        "re-deciding an echo writes nothing"
    );
    let t = e.record_timeline(&id).await.unwrap();
    assert!(t
        .entries
        .iter()
        .any(|x| x.kind == "operator" && x.summary.contains("undrop")));
    let st = e.status().await.unwrap();
    let by_state: i64 = st
        .ledger
        .events
        .iter()
        .filter(|(k, _)| k.as_str() != "duplicate")
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(by_state, st.ledger.distinct_events);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_field_changed_on_both_sides_goes_to_review_and_the_operators_choice_is_written() {
    let text = DEFAULT_CONTRACT.replacen(
        "billing = \"metadata.lifecycle_stage\"\nowner = \"crm\"",
        "billing = \"metadata.lifecycle_stage\"\nowner = \"shared\"\nconflict = \"review\"",
        1,
    );
    assert_ne!(text, DEFAULT_CONTRACT, "the test contract differs from the default");
    let d = demo_with(contract::compile("test", &text).expect("valid"), FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let (id, cus) = synced_contact(&d, "shared@example.test").await;
    // Both sides change the shared field before driftless hears of either.
    sims.crm.suppress_webhooks(true);
    sims.billing.suppress_webhooks(true);
    sims.crm
        .edit_contact(&id, &[("lifecyclestage", "customer")])
        .expect("crm edit");
    sims.billing
        .edit_customer(&cus, None, &[("lifecycle_stage", "opportunity")])
        .expect("billing edit");
    sims.crm.suppress_webhooks(false);
    sims.billing.suppress_webhooks(false);
    let sel = ReplaySelector {
        record: Some(id.clone()),
        ..Default::default()
    };
    let p = e.replay(&sel, true, "test").await.unwrap();
    assert_eq!(p.conflicts, 1, "{p:?}");
    e.replay(&sel, false, "test").await.unwrap();
    let item = eventually(20, "a review item", || {
        let e = e.clone();
        async move { e.list_reviews().await.ok()?.into_iter().next() }
    })
    .await;
    let f = item
        .fields
        .iter()
        .find(|f| f.field == "lifecycle_stage")
        .expect("field in review");
    assert_eq!(
        (f.crm.as_deref(), f.billing.as_deref(), f.last_synced.as_deref()),
        (Some("customer"), Some("opportunity"), Some("lead"))
    );
    assert_eq!(f.owner, "shared (review)");
    let writes = sims.billing.request_log().iter().filter(|r| r.mutating).count();
    assert_eq!(e.status().await.unwrap().ledger.review_depth, 1);

    let res = driftless::api::ReviewResolution {
        choices: vec![driftless::api::FieldChoice {
            field: "lifecycle_stage".into(),
            take: "crm".into(),
            value: None,
        }],
        reason: "sales confirmed the deal closed".into(),
    };
    assert!(e
        .resolve_review(
            item.id,
            &driftless::api::ReviewResolution {
                reason: String::new(),
                ..res.clone()
            },
            "ops:ana"
        )
        .await
        .is_err());
    e.resolve_review(item.id, &res, "ops:ana").await.expect("resolve");
    eventually(20, "billing takes the CRM value", || {
        let sims = sims.clone();
        let cus = cus.clone();
        async move {
            sims.billing
                .customers()
                .into_iter()
                .find(|c| c["id"] == cus.as_str() && c["metadata"]["lifecycle_stage"] == "customer")
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(
        sims.billing.request_log().iter().filter(|r| r.mutating).count(),
        writes + 1,
        "one write"
    );
    assert_eq!(e.status().await.unwrap().ledger.review_depth, 0);
    let key = sims
        .billing
        .request_log()
        .into_iter()
        .rev()
        .find(|r| r.mutating)
        .and_then(|r| r.idempotency_key)
        .unwrap_or_default();
    assert_eq!(key, format!("review:{}:billing", item.id));
    let t = e.record_timeline(&id).await.unwrap();
    assert!(t.entries.iter().any(|x| x.summary.contains("review_resolved")));
    d.running.shutdown().await;
}
