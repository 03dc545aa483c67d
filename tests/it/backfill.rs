//! Backfill: records created in the simulators before the engine ever ran (no webhook, no
//! poll) are paged through in the bulk lane, made durable page by page with their cursor, and
//! synced by the workers. Real HTTP against the simulators on 127.0.0.1; webhooks are not
//! registered at all.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use driftless::connectors::hubspot::HubspotClient;
use driftless::connectors::stripe::StripeClient;
use driftless::contract::{self, Contract};
use driftless::engine::backfill::BackfillOptions;
use driftless::engine::{Engine, EngineConfig, SystemClock, WebhookSecrets};
use driftless::sim::{SimConfig, Simulators};

use crate::support::{applied_writes, eventually, meta, prop};

pub async fn engine_on(ledger: &Path, contract: Contract, sims: &Simulators) -> Engine {
    use driftless::connectors::CrmApi;
    let crm = HubspotClient::new(&sims.crm.base_url(), sims.crm.token().to_string(), 5_000).expect("crm client");
    crm.ensure_properties(&driftless::engine::required_crm_properties(&contract))
        .await
        .expect("custom properties");
    let billing =
        StripeClient::new(&sims.billing.base_url(), sims.billing.api_key().to_string(), 5_000).expect("billing client");
    Engine::open(EngineConfig {
        ledger: ledger.to_path_buf(),
        contract,
        crm: Arc::new(crm),
        billing: Arc::new(billing),
        webhook_secrets: WebhookSecrets::default(),
        workers: 4,
        clock: Arc::new(SystemClock),
        demo: false,
    })
    .await
    .expect("engine opens")
}

pub fn create_contacts(sims: &Simulators, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            sims.crm.create_contact(&[
                ("email", &format!("{prefix}{i}@example.test")),
                ("lifecyclestage", "lead"),
            ])
        })
        .collect()
}

/// Full-listing requests (`GET /crm/v3/objects/contacts`, `GET /v1/customers`).
fn list_requests(sims: &Simulators) -> (usize, usize) {
    let crm = sims
        .crm
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/crm/v3/objects/contacts")
        .count();
    let billing = sims
        .billing
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/customers")
        .count();
    (crm, billing)
}

/// Every contact has exactly one customer carrying its id, with the same email and stage.
pub fn converged(sims: &Simulators, n: usize) -> bool {
    let customers = sims.billing.customers();
    let contacts = sims.crm.contacts();
    contacts.len() == n
        && customers.len() == n
        && contacts.iter().all(|c| {
            let id = c["id"].as_str().unwrap_or_default();
            let mine: Vec<&Value> = customers
                .iter()
                .filter(|b| meta(b, "driftless_crm_contact_id") == Some(id))
                .collect();
            mine.len() == 1
                && prop(c, "billing_customer_id") == mine[0]["id"].as_str()
                && mine[0]["email"].as_str() == prop(c, "email")
                && meta(mine[0], "lifecycle_stage") == prop(c, "lifecyclestage")
        })
}

/// Audit actions starting with `prefix`, oldest first, read straight from the ledger file.
pub async fn audit_actions(ledger: &Path, prefix: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", ledger.display()))
        .await
        .expect("ledger");
    sqlx::query_scalar("SELECT action FROM audit WHERE action LIKE ?1 || '%' ORDER BY id")
        .bind(prefix)
        .fetch_all(&mut conn)
        .await
        .expect("audit")
}

async fn eventually_bool(secs: u64, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f()
}

pub async fn quiet(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = engine.ledger().status().await.expect("status");
        if st.queue_depth == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "queue did not drain: {}", st.queue_depth);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_preexisting_contacts_converges_and_a_second_run_changes_nothing() {
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators start");
    const N: usize = 250;
    create_contacts(&sims, "bf", N);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_on(&dir.path().join("l.db"), contract::default_contract(), &sims).await;
    engine.start();

    let started = Instant::now();
    let run = engine
        .backfill("both", "test", BackfillOptions::default())
        .await
        .expect("backfill");
    let paged = started.elapsed();
    assert_eq!(run.state, "done", "{run:?}");
    // 250 contacts in 3 pages; the customers the workers created meanwhile are listed too
    // (1 to 3 pages), every record a new event.
    assert!((4..=6).contains(&run.pages), "{run:?}");
    assert!((N as i64..=2 * N as i64).contains(&run.records), "{run:?}");
    assert_eq!(run.accepted, run.records, "{run:?}");
    assert_eq!(run.total_known, Some(N as i64), "HubSpot's search total");
    assert_eq!(run.streams_done, vec!["crm:contacts", "billing:customers"]);
    let ok = eventually_bool(120, || converged(&sims, N)).await;
    if !ok {
        let st = engine.ledger().status().await.expect("status");
        let linked = sims
            .crm
            .contacts()
            .iter()
            .filter(|c| prop(c, "billing_customer_id").is_some())
            .count();
        panic!(
            "not converged: {} customers, {linked} linked contacts; status {st:?}",
            sims.billing.customers().len()
        );
    }
    quiet(&engine).await;
    let synced = started.elapsed();
    // Each contact's billing id written back is bulk work: the updates waited, parked, for
    // full HubSpot batch calls instead of going out as the workers reached them (billing's
    // 25/s paces the run to a few records a second).
    let writes: Vec<_> = sims
        .crm
        .request_log()
        .into_iter()
        .filter(|r| r.mutating && r.path.starts_with("/crm/v3/objects/"))
        .collect();
    let sizes: Vec<usize> = writes
        .iter()
        .map(|r| r.correlation_id.as_deref().map_or(0, |c| c.split(',').count()))
        .collect();
    println!("backfill: {N} write-backs reached HubSpot in calls of {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), N, "{sizes:?}");
    assert!(sizes.len() <= 6, "bulk write-backs in full calls: {sizes:?}");
    println!(
        "backfill: {N} contacts paged in {:.2} s ({:.0} records/s read), synced (customers created and linked) in {:.2} s ({:.0} records/s)",
        paged.as_secs_f64(),
        N as f64 / paged.as_secs_f64(),
        synced.as_secs_f64(),
        N as f64 / synced.as_secs_f64()
    );
    let st = engine.ledger().status().await.expect("status");
    assert_eq!(st.backfill.as_ref().map(|b| b.id), Some(run.id), "visible in status");
    assert_eq!(st.dead_letter_depth, 0);

    // A second run reads the records as they are now (the customers it created, the contacts
    // carrying their billing id): new versions, planned, nothing to write.
    let before = applied_writes(&sims);
    let second = engine
        .backfill("both", "test", BackfillOptions::default())
        .await
        .expect("second backfill");
    assert_eq!(
        (second.state.as_str(), second.records),
        ("done", 2 * N as i64),
        "{second:?}"
    );
    quiet(&engine).await;
    assert_eq!(
        applied_writes(&sims),
        before,
        "a second backfill writes nothing to either system"
    );
    // A third run over unchanged records: every event is already held.
    let third = engine
        .backfill("both", "test", BackfillOptions::default())
        .await
        .expect("third backfill");
    assert_eq!((third.accepted, third.duplicates), (0, 2 * N as i64), "{third:?}");
    quiet(&engine).await;
    assert_eq!(applied_writes(&sims), before, "nor does a third");
    assert!(converged(&sims, N));
    engine.shutdown().await;
    sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_backfill_resumes_at_its_cursor_without_reading_a_finished_page_again() {
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators start");
    const N: usize = 450; // 5 pages
    create_contacts(&sims, "crash", N);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    // No workers: only the backfill lists (worker lookups would share the listing paths).
    // Four CRM requests a second, so the run is still paging when it is killed.
    let mut slow = contract::default_contract();
    slow.rate_limits.crm.requests_per_second = 4.0;
    slow.rate_limits.crm.burst = 1;

    // 1. Stopped after 2 pages as a dying process leaves it: `running`, cursor stored.
    let engine = engine_on(&ledger, slow.clone(), &sims).await;
    let run = engine
        .backfill(
            "crm",
            "test",
            BackfillOptions {
                max_pages: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("backfill");
    assert_eq!((run.state.as_str(), run.pages, run.records), ("running", 2, 200));
    engine.shutdown().await;
    drop(engine);
    assert_eq!(list_requests(&sims).0, 2);

    // 2. Killed mid-run: the task is aborted wherever it is (maybe mid-page).
    let engine = engine_on(&ledger, slow.clone(), &sims).await;
    let task = {
        let e = engine.clone();
        tokio::spawn(async move { e.backfill("crm", "test", BackfillOptions::default()).await })
    };
    eventually(30, "a third page durable", || {
        let l = engine.ledger().clone();
        async move {
            l.latest_backfill()
                .await
                .ok()
                .flatten()
                .filter(|r| r.pages >= 3)
                .map(|_| ())
        }
    })
    .await;
    task.abort();
    let _ = task.await;
    engine.shutdown().await;
    drop(engine);
    let after_kill = engine_on(&ledger, slow, &sims).await;
    let mid = after_kill
        .ledger()
        .latest_backfill()
        .await
        .expect("ledger")
        .expect("run");
    assert_eq!(
        (mid.id, mid.state.as_str()),
        (run.id, "running"),
        "killed mid-run: {mid:?}"
    );
    let read_so_far = list_requests(&sims).0 as i64;
    assert!(
        read_so_far == mid.pages || read_so_far == mid.pages + 1,
        "read {read_so_far} pages, {} durable: at most the page in flight is lost",
        mid.pages
    );

    // 3. Restart: the same run resumes at its cursor and finishes.
    let progress = after_kill.backfill_progress().await.expect("progress");
    let resumed_at = chrono::Utc::now().timestamp_millis();
    let run2 = after_kill
        .backfill("crm", "test", BackfillOptions::default())
        .await
        .expect("resumed backfill");
    assert_eq!(run2.id, run.id, "the unfinished run resumed");
    assert_eq!(
        (run2.state.as_str(), run2.pages, run2.records),
        ("done", 5, N as i64),
        "{run2:?}"
    );
    let finished_at = chrono::Utc::now().timestamp_millis();
    if let (Some(left), Some(eta)) = (progress.pages_left, progress.eta_ms) {
        println!(
            "backfill ETA: {left} pages left at 4 requests/s, estimated {} ms, took {} ms",
            eta - resumed_at,
            finished_at - resumed_at
        );
    }
    let listed = list_requests(&sims).0 as i64;
    assert!(
        listed == 5 || (listed == 6 && read_so_far == mid.pages + 1),
        "{listed} list requests for 5 pages: a finished page was read again"
    );
    // Every contact's version is in the inbox exactly once.
    assert_eq!(run2.accepted, N as i64);
    assert_eq!(run2.duplicates, 0);
    after_kill.shutdown().await;
    sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_backfill_stops_and_start_resumes_it_with_progress_and_an_estimate() {
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators start");
    const N: usize = 320; // 4 pages
    create_contacts(&sims, "cancel", N);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_on(&dir.path().join("l.db"), contract::default_contract(), &sims).await;
    let run = engine
        .backfill(
            "crm",
            "test",
            BackfillOptions {
                max_pages: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("backfill");
    let p = engine.backfill_progress().await.expect("progress");
    assert_eq!(p.pages_left, Some(3), "{p:?}");
    let eta = p
        .eta_ms
        .expect("an estimate from the known total and the budget's rate");
    assert!(eta >= chrono::Utc::now().timestamp_millis() - 1_000);
    // The estimate covers the workers' syncing too (none run on this engine): the 100
    // records listed and not applied plus the 220 still to list, at the slower budget's
    // rate (HubSpot's 10 or 19/s) — far more than the 3 pages' listing alone.
    assert_eq!(p.records_to_sync, Some(N as i64), "{p:?}");
    assert!(
        eta >= chrono::Utc::now().timestamp_millis() + 10_000,
        "{} ms: the listing alone",
        eta - chrono::Utc::now().timestamp_millis()
    );
    assert!(p.eta_covers.as_deref().is_some_and(|c| c.contains("syncing")), "{p:?}");

    // Cancelled from another process (its own ledger handle).
    let other = driftless::ledger::Ledger::open(&dir.path().join("l.db"))
        .await
        .expect("second handle");
    assert_eq!(other.backfill_cancel("cli", 1).await.expect("cancel"), Some(run.id));
    assert_eq!(
        other.backfill_cancel("cli", 2).await.expect("cancel"),
        None,
        "nothing running"
    );
    let st = engine.ledger().status().await.expect("status");
    assert_eq!(st.backfill.as_ref().map(|b| b.state.as_str()), Some("cancelled"));
    // A run for other systems cannot start while this one is unfinished.
    let refused = engine.backfill("billing", "test", BackfillOptions::default()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("unfinished")),
        "{refused:?}"
    );
    assert_eq!(list_requests(&sims).0, 1);

    let resumed = engine
        .backfill("crm", "test", BackfillOptions::default())
        .await
        .expect("resume");
    assert_eq!(resumed.id, run.id);
    assert_eq!(
        (resumed.state.as_str(), resumed.pages, resumed.records),
        ("done", 4, N as i64)
    );
    assert_eq!(
        list_requests(&sims).0,
        4,
        "the page read before the cancel was not read again"
    );
    let audits = audit_actions(&dir.path().join("l.db"), "backfill_").await;
    assert_eq!(
        audits,
        vec!["backfill_start", "backfill_cancel", "backfill_resume", "backfill_end"],
        "audited"
    );
    engine.shutdown().await;
    sims.shutdown().await;
}
