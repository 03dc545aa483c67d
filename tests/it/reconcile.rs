//! The reconciler (issue 6) against the simulators over HTTP: drift injected behind the
//! engine's back (edits with webhooks suppressed, a deleted customer, a duplicated origin
//! marker, every subscription canceled while the CRM says customer, a contact no webhook
//! announced) is found by kind with the right counts and rate; the dry run writes nothing;
//! the repair goes through the pipeline without duplicate customers; a cancelled run resumes
//! from its checkpoint without re-reading finished pages.

use std::collections::BTreeMap;
use std::time::Duration;

use driftless::drill::wait_quiescent;
use driftless::reconcile::{rules, ReconcileReport, ReconcileRequest, Repair};
use driftless::sim::{FaultProfile, Simulators};

use crate::support::{demo, eventually, prop, synced_contact};

fn mutating(sims: &Simulators) -> usize {
    sims.crm.request_log().iter().filter(|r| r.mutating).count()
        + sims.billing.request_log().iter().filter(|r| r.mutating).count()
}

fn kinds(r: &ReconcileReport) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &r.mismatches {
        out.entry(format!("{}:{}", m.m.kind, m.m.name))
            .or_default()
            .push(m.m.entity_key.clone());
    }
    out
}

fn req() -> ReconcileRequest {
    ReconcileRequest {
        trigger: "test".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_finds_each_kind_of_drift_previews_and_repairs_it() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let mut pairs = Vec::new();
    for i in 0..5 {
        pairs.push(synced_contact(&d, &format!("recon{i}@example.test")).await);
    }
    // A paying customer.
    let sub_id = sims
        .crm
        .create_contact(&[("email", "paying@example.test"), ("lifecyclestage", "customer")]);
    let sub_cus = eventually(20, "paying contact synced", || {
        let c = sims.crm.contacts().into_iter().find(|c| c["id"] == sub_id.as_str());
        async move { c.and_then(|c| prop(&c, "billing_customer_id").map(str::to_string)) }
    })
    .await;
    let sub = sims.billing.start_subscription(&sub_cus, "pro").expect("subscription");
    eventually(20, "subscription mirrored", || {
        let c = sims.crm.contacts().into_iter().find(|c| c["id"] == sub_id.as_str());
        async move {
            c.filter(|c| prop(c, "subscription_status") == Some("active"))
                .map(|_| ())
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);

    let clean = e.reconcile(&req(), "test").await.expect("baseline run");
    assert!(clean.complete);
    assert_eq!(clean.compared, 6, "{clean:#?}");
    assert_eq!(kinds(&clean), BTreeMap::new(), "a synced pair set has no drift");
    assert_eq!(clean.mismatch_rate, 0.0);

    // Drift behind the engine's back: no webhook reaches the engine.
    sims.crm.suppress_webhooks(true);
    sims.billing.suppress_webhooks(true);
    let key = |crm: &str| format!("customer:crm:{crm}");
    // (a) a CRM-owned field edited in the CRM, never delivered.
    sims.crm
        .edit_contact(&pairs[0].0, &[("lifecyclestage", "opportunity")])
        .expect("edit");
    // (b) a CRM-owned field edited in billing.
    sims.billing
        .edit_customer(&pairs[1].1, Some("changed-in-billing@example.test"), &[])
        .expect("edit");
    // (c) a billing customer deleted.
    sims.billing.remove_customer_silently(&pairs[2].1).expect("remove");
    // (d) a second billing customer carrying pair 3's origin marker.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/customers", sims.billing.base_url()))
        .bearer_auth(sims.billing.api_key())
        .form(&[
            ("email", "dup@example.test"),
            ("metadata[driftless_crm_contact_id]", pairs[3].0.as_str()),
        ])
        .send()
        .await
        .expect("billing answers");
    assert!(r.status().is_success());
    // (e) every subscription canceled while the CRM says customer.
    sims.billing.cancel_subscription(&sub, false).expect("cancel");
    // (f) a contact no webhook announced: no billing customer yet.
    let unseen = sims
        .crm
        .create_contact(&[("email", "unseen@example.test"), ("lifecyclestage", "lead")]);
    let writes_before = mutating(&sims);

    let dry = e
        .reconcile(&ReconcileRequest { dry_run: true, ..req() }, "test")
        .await
        .expect("dry run");
    let k = kinds(&dry);
    eprintln!("{k:#?}");
    assert_eq!(dry.compared, 7);
    assert_eq!(k.get("field:lifecycle_stage"), Some(&vec![key(&pairs[0].0)]));
    assert_eq!(k.get("field:email"), Some(&vec![key(&pairs[1].0)]));
    assert_eq!(
        k.get(&format!("rule:{}", rules::BILLING_ID_MISSING)),
        Some(&vec![key(&pairs[2].0)])
    );
    assert_eq!(
        k.get(&format!("rule:{}", rules::DUPLICATE_ORIGIN)),
        Some(&vec![key(&pairs[3].0)])
    );
    assert_eq!(
        k.get(&format!("rule:{}", rules::CUSTOMER_WITHOUT_SUBSCRIPTION)),
        Some(&vec![key(&sub_id)])
    );
    assert_eq!(k.get("field:subscription_status"), Some(&vec![key(&sub_id)]));
    assert_eq!(
        k.get(&format!("rule:{}", rules::MISSING_COUNTERPART)),
        Some(&vec![key(&unseen)])
    );
    // Missed events: the CRM edit and the cancellation changed their owner's value since the
    // last sync and nothing was delivered.
    assert_eq!(k.get("missed_event:lifecycle_stage"), Some(&vec![key(&pairs[0].0)]));
    assert!(k
        .get("missed_event:subscription_status")
        .is_some_and(|v| v == &vec![key(&sub_id)]));
    // A whole record no event ever delivered.
    assert_eq!(k.get("missed_event:record"), Some(&vec![key(&unseen)]));
    let detail = dry
        .mismatches
        .iter()
        .find(|m| m.m.name == "record")
        .and_then(|m| m.m.detail.clone());
    assert!(
        detail.is_some_and(|d| d.contains("crm webhooks")),
        "names what should have delivered it"
    );
    let missed: Vec<&String> = k.keys().filter(|n| n.starts_with("missed_event:")).collect();
    assert_eq!(
        missed,
        vec![
            "missed_event:lifecycle_stage",
            "missed_event:mrr",
            "missed_event:next_invoice_date",
            "missed_event:record",
            "missed_event:subscription_status",
        ],
        "the cancellation changed three billing-owned fields"
    );
    assert_eq!(dry.missed_events, 5);
    assert_eq!(dry.mismatched_records, 6);
    assert!((dry.mismatch_rate - 6.0 / 7.0).abs() < 1e-9, "{}", dry.mismatch_rate);
    assert!(dry.over_threshold);
    let preview = dry.repair.as_ref().expect("dry run previews the repairs");
    assert!(!preview.queued);
    assert_eq!(preview.records, 6);
    assert_eq!(mutating(&sims), writes_before, "the dry run wrote nothing");
    // The never-seen contact's planned create carries the key the repair will use.
    let unseen_key = preview
        .samples
        .iter()
        .find(|w| w.record == key(&unseen) && w.kind == "create")
        .and_then(|w| w.idempotency_key.clone())
        .expect("the unseen contact's create is previewed");
    assert!(!unseen_key.ends_with(":none"), "{unseen_key}");
    // The overview shows it.
    let o = e.overview().await.expect("overview");
    assert_eq!(o.reconciliation.last_run.as_ref().map(|r| r.mismatched), Some(6));
    assert!(
        o.health.reasons.iter().any(|r| r.contains("mismatch rate")),
        "{:?}",
        o.health.reasons
    );
    let alert = o
        .alerts
        .iter()
        .find(|a| a.id == "mismatch_rate")
        .expect("a mismatch alert");
    assert_eq!(
        alert.screen, "reconciliation",
        "the alert links to the screen that explains it"
    );
    let st = e.status().await.expect("status");
    assert_eq!(st.reconciliation.map(|r| r.compared), Some(7));

    // Repair: the drifted pairs through the pipeline; the cases a person decides to review.
    sims.crm.suppress_webhooks(false);
    sims.billing.suppress_webhooks(false);
    let fixed = e
        .reconcile(
            &ReconcileRequest {
                repair: Repair::Records(vec![
                    pairs[0].0.clone(),
                    pairs[1].0.clone(),
                    sub_id.clone(),
                    unseen.clone(),
                ]),
                review: vec![pairs[2].0.clone(), pairs[3].0.clone()],
                ..req()
            },
            "test",
        )
        .await
        .expect("repair run");
    assert_eq!(fixed.mismatched_records, 6, "the repair run sees the same drift");
    assert!(fixed.repair.as_ref().is_some_and(|p| p.queued && p.records == 4));
    assert_eq!(fixed.sent_to_review, 2);
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);

    let after = e.reconcile(&req(), "test").await.expect("run after repair");
    let k = kinds(&after);
    eprintln!("{k:#?}");
    // What the pipeline repairs is gone; what a person decides stays (and stays in review).
    let left: Vec<&String> = k.keys().collect();
    assert_eq!(
        left,
        vec![
            &format!("rule:{}", rules::BILLING_ID_MISSING),
            &format!("rule:{}", rules::CUSTOMER_WITHOUT_SUBSCRIPTION),
            &format!("rule:{}", rules::DUPLICATE_ORIGIN),
        ]
    );
    // No duplicate customer: the unseen contact got exactly one.
    let with_marker = |crm: &str| {
        sims.billing
            .customers()
            .iter()
            .filter(|c| c["metadata"]["driftless_crm_contact_id"] == crm)
            .count()
    };
    assert_eq!(with_marker(&unseen), 1);
    let used = e
        .ledger()
        .writes_by_key(std::slice::from_ref(&unseen_key))
        .await
        .expect("outbox");
    assert!(
        used.contains_key(&unseen_key),
        "the repair wrote with the previewed key {unseen_key}"
    );
    assert_eq!(with_marker(&pairs[0].0), 1);
    let reviews = e.list_reviews().await.expect("reviews");
    assert!(reviews.iter().any(|r| r.record == key(&pairs[3].0)));
    assert!(reviews.iter().any(|r| r.record == key(&pairs[2].0)));
    // A mismatch still there keeps its first-seen time.
    let first = |r: &ReconcileReport| {
        r.mismatches
            .iter()
            .find(|m| m.m.name == rules::DUPLICATE_ORIGIN)
            .map(|m| m.first_seen_ms)
    };
    assert_eq!(first(&after), first(&dry));

    // The person settles the rest in the systems themselves; the next run finds nothing.
    sims.crm
        .edit_contact(&sub_id, &[("lifecyclestage", "other")])
        .expect("edit");
    let dup = sims
        .billing
        .customers()
        .iter()
        .find(|c| c["email"] == "dup@example.test")
        .and_then(|c| c["id"].as_str().map(str::to_string))
        .expect("dup");
    sims.billing.remove_customer_silently(&dup).expect("remove dup");
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);
    let last = e.reconcile(&req(), "test").await.expect("last run");
    let k = kinds(&last);
    assert_eq!(
        k.keys().collect::<Vec<_>>(),
        vec![&format!("rule:{}", rules::BILLING_ID_MISSING)],
        "only the deleted customer (waiting in review) is left"
    );
    d.running.shutdown().await;
}

/// List requests (pages) read from each simulator so far.
fn pages_read(sims: &Simulators) -> (usize, usize) {
    let billing = sims
        .billing
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/customers")
        .count();
    let crm = sims
        .crm
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/crm/v3/objects/contacts")
        .count();
    (billing, crm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_killed_run_resumes_from_its_checkpoint_without_rereading_pages() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    // 230 records a side (3 pages each), made behind the engine's back.
    sims.crm.suppress_webhooks(true);
    sims.billing.suppress_webhooks(true);
    let http = reqwest::Client::new();
    for i in 0..230 {
        let r = http
            .post(format!("{}/v1/customers", sims.billing.base_url()))
            .bearer_auth(sims.billing.api_key())
            .form(&[("email", format!("bulk{i}@example.test"))])
            .send()
            .await
            .expect("billing answers");
        assert!(r.status().is_success());
        sims.crm.create_contact(&[("email", &format!("bulk{i}@example.test"))]);
    }
    assert_eq!(pages_read(&sims), (0, 0));

    // Cancelled after 2 pages, then after 2 more: the checkpoint carries the cursor.
    let cancel = |n| ReconcileRequest {
        max_pages: Some(n),
        ..req()
    };
    let first = e.reconcile(&cancel(2), "test").await.expect("first slice");
    assert!(!first.complete);
    assert_eq!(first.run.pages_read, 2);
    assert_eq!((first.run.phase.as_str(), pages_read(&sims)), ("billing", (2, 0)));
    let second = e.reconcile(&cancel(2), "test").await.expect("second slice");
    assert!(second.resumed && !second.complete);
    assert_eq!(second.run.id, first.run.id, "the same run continues");
    assert_eq!(pages_read(&sims), (3, 1), "billing page 3, then the first CRM page");

    // A crash: the task dies between or inside requests (aborted once a page is durable).
    let task = {
        let e = e.clone();
        tokio::spawn(async move { e.reconcile(&req(), "test").await })
    };
    let run_id = first.run.id;
    for _ in 0..400 {
        let pages = e
            .ledger()
            .recon_run(run_id)
            .await
            .expect("run")
            .map_or(0, |r| r.pages_read);
        if pages >= 5 || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    let last = e.reconcile(&req(), "test").await.expect("resumed to the end");
    assert!(last.resumed && last.complete);
    assert_eq!(last.run.id, run_id);
    assert_eq!(last.run.state, "finished");
    assert_eq!(last.run.pages_read, 6, "every page checkpointed exactly once");
    assert_eq!(last.compared, 230);
    let (b, c) = pages_read(&sims);
    assert_eq!(b, 3, "no billing page read twice");
    // A page in flight when the task died is read again; nothing checkpointed is.
    assert!((3..=4).contains(&c), "CRM pages read: {c}");
    assert_eq!(last.by_rule.get(rules::MISSING_COUNTERPART), Some(&230));
    d.running.shutdown().await;
}

/// `driftless reconcile --window 7d --dry-run --json` against the simulators: JSON report,
/// exit code 3 over the alert threshold, nothing written; a bad window is an error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_json_and_exits_3_over_the_threshold() {
    let sims = Simulators::start(driftless::sim::SimConfig::default())
        .await
        .expect("simulators");
    let dir = tempfile::tempdir().expect("tempdir");
    let contract = dir.path().join("driftless.toml");
    let text = driftless::contract::DEFAULT_CONTRACT
        .replace("https://api.hubapi.com", &sims.crm.base_url())
        .replace("https://api.stripe.com", &sims.billing.base_url());
    std::fs::write(&contract, text).expect("contract");
    let ledger = dir.path().join("ledger.db");
    sims.crm.create_contact(&[("email", "cli@example.test")]);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_driftless"))
            .arg("reconcile")
            .args(args)
            .arg("--contract")
            .arg(&contract)
            .arg("--ledger")
            .arg(&ledger)
            .env("DRIFTLESS_CRM_TOKEN", sims.crm.token())
            .env("DRIFTLESS_BILLING_KEY", sims.billing.api_key())
            .output()
            .expect("driftless runs")
    };
    let out = tokio::task::block_in_place(|| run(&["--window", "7d", "--dry-run", "--json"]));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["compared"], 1);
    assert_eq!(v["by_rule"][rules::MISSING_COUNTERPART], 1);
    assert_eq!(v["run"]["window_days"], 7);
    assert_eq!(v["repair"]["creates"], 1);
    assert_eq!(v["repair"]["queued"], false);
    assert_eq!(mutating(&sims), 0, "the dry run wrote nothing");
    let bad = tokio::task::block_in_place(|| run(&["--window", "7h"]));
    assert_eq!(bad.status.code(), Some(2), "errors exit 2");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("7d"));
    sims.shutdown().await;
}

/// Under a provider quota far below the budget, pages answered 429 are read again after the
/// budget holds (no run stops, no page skipped); the gaps the pollers recorded before the run
/// are resolved by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_under_a_tight_quota_retries_429s_and_resolves_recorded_gaps() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    sims.crm.suppress_webhooks(true);
    sims.billing.suppress_webhooks(true);
    let http = reqwest::Client::new();
    for i in 0..250 {
        let r = http
            .post(format!("{}/v1/customers", sims.billing.base_url()))
            .bearer_auth(sims.billing.api_key())
            .form(&[("email", format!("q{i}@example.test"))])
            .send()
            .await
            .expect("billing answers");
        assert!(r.status().is_success());
    }
    for i in 0..120 {
        sims.crm.create_contact(&[("email", &format!("q{i}@example.test"))]);
    }
    e.ledger()
        .record_gap(
            &driftless::ledger::Gap {
                cursor: "poll:crm:contacts",
                source: driftless::contract::Side::Crm,
                from_ms: 1_000,
                to_ms: 2_000,
                reason: "test gap",
            },
            driftless::ledger::GapKind::Unreadable,
            3_000,
        )
        .await
        .expect("gap");
    assert_eq!(e.ledger().reconciliation_gaps(true).await.expect("gaps").len(), 1);
    sims.billing
        .set_faults(FaultProfile::parse("quota=1").expect("profile"));
    let r = e.reconcile(&req(), "test").await.expect("the run completes");
    assert!(r.complete);
    assert_eq!((r.compared, r.run.pages_read), (120, 5), "3 billing pages, 2 CRM pages");
    let log = sims.billing.request_log();
    let lists: Vec<_> = log
        .iter()
        .filter(|x| x.method == "GET" && x.path == "/v1/customers")
        .collect();
    assert!(
        lists.iter().any(|x| x.status == 429),
        "the quota answered 429 at least once"
    );
    assert_eq!(
        lists.iter().filter(|x| x.status == 200).count(),
        3,
        "each page read once"
    );
    assert_eq!(r.gaps_resolved.len(), 1);
    assert!(e.ledger().reconciliation_gaps(true).await.expect("gaps").is_empty());
    assert!(r.run.log.iter().any(|l| l.contains("resolved reconciliation gaps")));
    d.running.shutdown().await;
}

/// Two processes never continue one checkpoint: a run leased by another (live) process is
/// refused with a clear error; a cancelled run's lease is given back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_held_by_another_process_is_refused_and_a_cancelled_one_is_free() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    sims.crm.suppress_webhooks(true);
    for i in 0..150 {
        sims.crm.create_contact(&[("email", &format!("l{i}@example.test"))]);
    }
    let cut = e
        .reconcile(
            &ReconcileRequest {
                max_pages: Some(1),
                ..req()
            },
            "test",
        )
        .await
        .expect("first page");
    assert!(!cut.complete);
    let now = chrono::Utc::now().timestamp_millis();
    // Free after the cancel: another process could take it.
    assert!(e
        .ledger()
        .recon_lease(cut.run.id, "other-process", now, now + 60_000)
        .await
        .expect("lease"));
    let err = e.reconcile(&req(), "test").await.expect_err("held elsewhere");
    assert!(err.to_string().contains("another process"), "{err}");
    assert_eq!(err.code(), "bad_request");
    // The other process gave up (its lease expired): this one continues to the end.
    assert!(e
        .ledger()
        .recon_lease(cut.run.id, "other-process", now, 0)
        .await
        .expect("expire"));
    let done = e.reconcile(&req(), "test").await.expect("continued");
    assert!(done.resumed && done.complete);
    assert_eq!(done.compared, 150);
    d.running.shutdown().await;
}

/// Billing customers of a synced mapping with no CRM counterpart in the run (their contact
/// deleted in the CRM, or a marker naming a contact that does not exist) are reported as
/// `missing_crm_counterpart`, also when the run was cut between pages and resumed (the CRM
/// pages' matches are durable); customers the contract does not sync from billing are not.
/// The repair replays a record the ledger has a cause for and sends the other to review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_only_customers_are_reported_across_a_resume_and_repaired_or_reviewed() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();
    let (gone, gone_cus) = synced_contact(&d, "gone@example.test").await;
    sims.crm.suppress_webhooks(true);
    sims.billing.suppress_webhooks(true);
    let http = reqwest::Client::new();
    let customer = |email: String, marker: Option<String>| {
        let http = http.clone();
        let url = format!("{}/v1/customers", sims.billing.base_url());
        let key = sims.billing.api_key().to_string();
        async move {
            let mut form = vec![("email".to_string(), email)];
            if let Some(m) = marker {
                form.push(("metadata[driftless_crm_contact_id]".into(), m));
            }
            let r = http
                .post(url)
                .bearer_auth(key)
                .form(&form)
                .send()
                .await
                .expect("billing answers");
            assert!(r.status().is_success());
        }
    };
    // 105 contacts, each with a billing customer carrying its marker (not linked): two pages
    // a side, so the first CRM page's matches must survive the cut.
    for i in 0..105 {
        let id = sims.crm.create_contact(&[("email", &format!("m{i}@example.test"))]);
        customer(format!("m{i}@example.test"), Some(id)).await;
    }
    // Drift: the synced contact deleted in the CRM; a customer naming a contact that does not
    // exist; a plain customer (the contract creates customers from the CRM, not contacts from
    // billing: out of scope).
    sims.crm.remove_contact_silently(&gone).expect("remove");
    customer("ghost@example.test".into(), Some("999999".into())).await;
    customer("plain@example.test".into(), None).await;

    let cut = e
        .reconcile(
            &ReconcileRequest {
                max_pages: Some(3),
                ..req()
            },
            "test",
        )
        .await
        .expect("cut after the first CRM page");
    assert!(!cut.complete);
    assert_eq!(cut.run.phase, "crm:customer", "{:?}", cut.run);
    let done = e.reconcile(&req(), "test").await.expect("resumed");
    assert!(done.resumed && done.complete);
    let k = kinds(&done);
    let mut missing = k
        .get(&format!("rule:{}", rules::MISSING_CRM_COUNTERPART))
        .cloned()
        .unwrap_or_default();
    missing.sort();
    let mut expected = vec![format!("customer:crm:{gone}"), "customer:crm:999999".to_string()];
    expected.sort();
    assert_eq!(missing, expected, "{k:#?}");
    assert_eq!(
        k.get(&format!("rule:{}", rules::UNLINKED_COUNTERPART)).map(Vec::len),
        Some(105)
    );
    let ghost = done
        .mismatches
        .iter()
        .find(|m| m.m.entity_key == "customer:crm:999999")
        .expect("ghost");
    assert!(ghost.m.billing_value.as_deref().is_some_and(|b| b.starts_with("cus_")));
    assert_eq!(
        done.mismatches
            .iter()
            .find(|m| m.m.entity_key == format!("customer:crm:{gone}"))
            .and_then(|m| m.m.billing_value.clone()),
        Some(gone_cus.clone())
    );
    // Compared: 105 CRM records and the 2 billing-only customers.
    assert_eq!(done.compared, 107);

    // Repair both: the deleted contact's record has events in the ledger and is replayed;
    // the ghost has none and goes to review.
    let fixed = e
        .reconcile(
            &ReconcileRequest {
                repair: Repair::Records(vec![gone.clone(), "999999".into()]),
                ..req()
            },
            "test",
        )
        .await
        .expect("repair run");
    let p = fixed.repair.as_ref().expect("repair");
    assert!(p.queued);
    assert_eq!((p.records, p.conflicts), (2, 1), "{p:#?}");
    assert_eq!(fixed.sent_to_review, 1);
    let reviews = e.list_reviews().await.expect("reviews");
    assert!(
        reviews.iter().any(|r| r.record == "customer:crm:999999"),
        "{reviews:#?}"
    );
    assert!(!reviews.iter().any(|r| r.record == format!("customer:crm:{gone}")));
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);
    // Nothing invented: no contact created, the customer untouched.
    assert_eq!(sims.crm.contacts().len(), 105);
    d.running.shutdown().await;
}
