//! Pollers (the laptop case: no webhook reaches the engine). Stripe `/v1/events` and HubSpot
//! search feed the same inbox as the webhook receivers; these tests run with webhooks not
//! registered at all, against the simulators over real HTTP on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use driftless::connectors::hubspot::HubspotClient;
use driftless::connectors::stripe::StripeClient;
use driftless::connectors::BillingApi;
use driftless::contract::{self, Contract, IngestMode, Side};
use driftless::drill::wait_quiescent;
use driftless::engine::poll::{crm_cursor, BILLING_CURSOR};
use driftless::engine::{Clock, Engine, EngineConfig, WebhookSecrets};
use driftless::sim::{FaultProfile, SimClock, SimConfig, Simulators};

use crate::support::{applied_writes, demo_with, eventually, meta, prop};

/// The default contract with the given systems polled only (200 ms passes, 3 s overlap).
fn polled(crm: bool, billing: bool) -> Contract {
    let mut c = contract::default_contract();
    for (on, sys) in [(crm, &mut c.systems.crm), (billing, &mut c.systems.billing)] {
        if on {
            sys.ingest = IngestMode::Poll;
            sys.poll_interval_ms = 200;
            sys.poll_overlap_ms = 3_000;
        }
    }
    c
}

/// The engine reads the simulators' clock (so a test can move time past Stripe's retention).
struct SimTime(Arc<SimClock>);

impl Clock for SimTime {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

/// An engine on `ledger` whose workers are not started: the test drives `poll_now` itself.
async fn engine_on(ledger: &Path, contract: Contract, sims: &Simulators, billing_url: &str) -> Engine {
    let crm = HubspotClient::new(&sims.crm.base_url(), sims.crm.token().to_string(), 5_000).expect("crm client");
    let billing = StripeClient::new(billing_url, sims.billing.api_key().to_string(), 5_000).expect("billing client");
    Engine::open(EngineConfig {
        ledger: ledger.to_path_buf(),
        contract,
        crm: Arc::new(crm),
        billing: Arc::new(billing),
        webhook_secrets: WebhookSecrets::default(),
        workers: 2,
        clock: Arc::new(SimTime(sims.billing.clock())),
        demo: false,
    })
    .await
    .expect("engine opens")
}

/// Create `n` customers through the billing simulator's API (each emits `customer.created`).
async fn create_customers(sims: &Simulators, prefix: &str, n: usize) {
    let http = reqwest::Client::new();
    for i in 0..n {
        let r = http
            .post(format!("{}/v1/customers", sims.billing.base_url()))
            .bearer_auth(sims.billing.api_key())
            .form(&[("email", format!("{prefix}{i}@example.test"))])
            .send()
            .await
            .expect("billing simulator answers");
        assert!(r.status().is_success(), "customer created: {}", r.status());
    }
}

fn event_ids(sims: &Simulators) -> Vec<String> {
    sims.billing
        .events()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect()
}

/// Every contact's current version as the poller names it.
fn contact_versions(sims: &Simulators) -> Vec<String> {
    sims.crm
        .contacts()
        .iter()
        .map(|c| {
            format!(
                "poll:contact:{}:{}",
                c["id"].as_str().unwrap_or_default(),
                prop(c, "lastmodifieddate").unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_alone_converges_under_faults_with_every_event_accounted() {
    let faults = FaultProfile {
        rate_limit: 0.05,
        server_error: 0.02,
        burst_len: 2,
        timeout_after_commit: 0.1,
        hang_ms: 1_200,
        slow: 0.05,
        slow_ms: 100,
        ..FaultProfile::none()
    };
    let d = demo_with(polled(true, true), faults).await;
    let sims = d.running.sims.clone().expect("sims");
    let engine = d.running.engine.clone();
    const N: usize = 6;
    let ids: Vec<String> = (0..N)
        .map(|i| {
            sims.crm
                .create_contact(&[("email", &format!("poll{i}@example.test")), ("lifecyclestage", "lead")])
        })
        .collect();
    let linked = || {
        let sims = sims.clone();
        async move {
            let contacts = sims.crm.contacts();
            let n = contacts
                .iter()
                .filter(|c| prop(c, "billing_customer_id").is_some())
                .count();
            (n == N).then_some(())
        }
    };
    eventually(60, "every contact linked to a customer by polling alone", linked).await;
    // Edits on both sides: two CRM-owned changes, one billing edit of a CRM-owned field.
    sims.crm
        .edit_contact(&ids[0], &[("lifecyclestage", "customer")])
        .expect("edit");
    sims.crm
        .edit_contact(&ids[1], &[("lifecyclestage", "opportunity")])
        .expect("edit");
    let cus2 = sims
        .crm
        .contacts()
        .into_iter()
        .find(|c| c["id"] == ids[2].as_str())
        .and_then(|c| prop(&c, "billing_customer_id").map(str::to_string))
        .expect("linked");
    sims.billing
        .edit_customer(&cus2, Some("someone-else@example.test"), &[])
        .expect("dashboard edit");
    let agree = || {
        let sims = sims.clone();
        async move {
            let customers = sims.billing.customers();
            let ok = sims.crm.contacts().iter().all(|c| {
                let id = c["id"].as_str().unwrap_or_default();
                let mine: Vec<&Value> = customers
                    .iter()
                    .filter(|b| meta(b, "driftless_crm_contact_id") == Some(id))
                    .collect();
                mine.len() == 1
                    && mine[0]["email"].as_str() == prop(c, "email")
                    && meta(mine[0], "lifecycle_stage") == prop(c, "lifecyclestage")
            });
            (ok && customers.len() == N).then_some(())
        }
    };
    eventually(60, "owned fields equal on both sides", agree).await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await, "quiescent");
    eventually(5, "still agreeing once quiet", agree).await;

    // Every event accounted: each Stripe event and each contact's current version is in
    // the inbox, and the states add up with nothing pending.
    let missing = engine
        .ledger()
        .missing_events(Side::Billing, &event_ids(&sims))
        .await
        .expect("ledger");
    assert!(missing.is_empty(), "billing events never polled: {missing:?}");
    let missing = engine
        .ledger()
        .missing_events(Side::Crm, &contact_versions(&sims))
        .await
        .expect("ledger");
    assert!(missing.is_empty(), "contact versions never polled: {missing:?}");
    let st = engine.status().await.expect("status").ledger;
    // Every event in exactly one state: the counters checked against the inbox's rows, in one
    // snapshot (the pollers keep re-reading while this runs).
    let census = engine.ledger().event_census().await.expect("census");
    assert_eq!(census.mismatches(), Vec::<String>::new(), "{census:?}");
    assert_eq!(st.events["pending"], 0);
    assert!(
        st.events["duplicate"] > 0,
        "overlapping windows re-read events and the inbox dropped them: {:?}",
        st.events
    );
    let names: Vec<&str> = st.pollers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["poll:billing:events", "poll:crm:contacts"]);
    assert!(st.pollers.iter().all(|p| p.state == "ok"));
    let rate_limited = sims
        .crm
        .request_log()
        .iter()
        .chain(sims.billing.request_log().iter())
        .filter(|r| r.status == 429)
        .count();
    eprintln!(
        "pollers: converged by polling alone: {} events ({} duplicates dropped), {rate_limited} answers 429, \
         poll lag {:?} ms",
        st.distinct_events,
        st.events["duplicate"],
        st.pollers.iter().map(|p| p.lag_ms).collect::<Vec<_>>()
    );
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_echoes_of_our_own_writes_cause_no_further_writes() {
    let d = demo_with(polled(true, true), FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let engine = d.running.engine.clone();
    let id = sims
        .crm
        .create_contact(&[("email", "echo@example.test"), ("lifecyclestage", "lead")]);
    eventually(30, "contact linked", || {
        let sims = sims.clone();
        let id = id.clone();
        async move {
            sims.crm
                .contacts()
                .into_iter()
                .find(|c| c["id"] == id.as_str())
                .and_then(|c| prop(&c, "billing_customer_id").map(str::to_string))
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    // Our write-back changed the contact: its new version came back through the poller,
    // and our create came back as `customer.created` from /v1/events.
    let version = contact_versions(&sims).pop().expect("one contact");
    eventually(10, "the write-back's version polled", || {
        let e = engine.clone();
        let v = version.clone();
        async move {
            e.ledger()
                .missing_events(Side::Crm, &[v])
                .await
                .ok()?
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(
        applied_writes(&sims),
        (1, 1),
        "one create in billing, one write-back in the CRM"
    );
    let before = engine.status().await.expect("status").ledger;
    // Many more passes over the same windows: nothing new is written anywhere. Waited for,
    // not slept on: both pollers ask for their windows ten more times (their requests in the
    // simulators' logs) and the versions they re-read reach the inbox as duplicates.
    let passes = |sims: &Simulators| {
        let billing = sims
            .billing
            .request_log()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/v1/events")
            .count();
        let crm = sims
            .crm
            .request_log()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/crm/v3/objects/contacts/search")
            .count();
        (billing, crm)
    };
    let (billing0, crm0) = passes(&sims);
    eventually(
        30,
        "ten more passes of both pollers, re-reads dropped as duplicates",
        || {
            let (sims, engine) = (sims.clone(), engine.clone());
            let duplicates = before.events["duplicate"];
            async move {
                let (billing, crm) = passes(&sims);
                let st = engine.status().await.ok()?.ledger;
                (billing >= billing0 + 10 && crm >= crm0 + 10 && st.events["duplicate"] > duplicates).then_some(())
            }
        },
    )
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    assert_eq!(applied_writes(&sims), (1, 1), "a polled echo caused a write");
    let after = engine.status().await.expect("status").ledger;
    assert_eq!(after.writes, before.writes);
    // Our create (`customer.created`) and our write-back (the contact's new version) came
    // back through the pollers and were classified as echoes by value.
    assert!(
        after.events["echo"] >= 2,
        "both writes came back as echoes: {:?}",
        after.events
    );
    assert!(
        after.events["duplicate"] > before.events["duplicate"],
        "the later passes re-read the same versions"
    );
    d.running.shutdown().await;
}

/// Forwards to the billing simulator; the `hang_on`-th `/v1/events` request never answers
/// (the engine "crashes" while waiting for that page).
#[derive(Clone)]
struct Hang {
    upstream: String,
    http: reqwest::Client,
    events_seen: Arc<AtomicUsize>,
    hang_on: usize,
}

async fn forward(State(h): State<Hang>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if uri.path() == "/v1/events" && h.events_seen.fetch_add(1, Ordering::SeqCst) + 1 == h.hang_on {
        std::future::pending::<()>().await;
    }
    let target = format!(
        "{}{}",
        h.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = h.http.request(method, target);
    for (k, v) in headers.iter() {
        if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
            req = req.header(k, v);
        }
    }
    match req.body(body).send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_pages_re_reads_the_window_without_loss_or_double_ingest() {
    let sims = Simulators::start(SimConfig::default()).await.expect("sims");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    const EVENTS: usize = 250;
    create_customers(&sims, "page", EVENTS).await;
    let hang = Hang {
        upstream: sims.billing.base_url(),
        http: reqwest::Client::new(),
        events_seen: Arc::new(AtomicUsize::new(0)),
        hang_on: 2,
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let proxy = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(forward).with_state(hang.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut c = polled(false, true);
    c.systems.billing.poll_overlap_ms = 120_000;
    let engine = engine_on(&ledger, c.clone(), &sims, &proxy).await;
    let pass = tokio::time::timeout(Duration::from_secs(3), engine.poll_now(Side::Billing)).await;
    assert!(pass.is_err(), "the pass hung on its second page");
    let st = engine.status().await.expect("status").ledger;
    assert_eq!(
        st.distinct_events, 100,
        "the first page was durable before the second was read"
    );
    let wm_before = engine
        .ledger()
        .watermark(BILLING_CURSOR)
        .await
        .expect("ledger")
        .expect("set");
    let newest = sims
        .billing
        .events()
        .iter()
        .filter_map(|e| e["created"].as_i64())
        .max()
        .expect("events");
    assert!(
        wm_before < newest * 1000,
        "the watermark did not move past the unread pages"
    );
    engine.shutdown().await; // the crash: the pass never finished

    let engine = engine_on(&ledger, c, &sims, &sims.billing.base_url()).await;
    let t = Instant::now();
    let r = engine.poll_now(Side::Billing).await.expect("pass");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!((r.accepted, r.duplicates, r.pages), (EVENTS - 100, 100, 3), "{r:?}");
    let wm = engine
        .ledger()
        .watermark(BILLING_CURSOR)
        .await
        .expect("ledger")
        .expect("set");
    assert!(
        wm >= newest * 1000,
        "watermark advanced past the window after its last page"
    );
    let st = engine.status().await.expect("status").ledger;
    assert_eq!(st.distinct_events, EVENTS as i64, "each event once");
    let missing = engine
        .ledger()
        .missing_events(Side::Billing, &event_ids(&sims))
        .await
        .expect("ledger");
    assert!(missing.is_empty(), "{missing:?}");
    let again = engine.poll_now(Side::Billing).await.expect("pass");
    assert_eq!(again.accepted, 0, "re-reading the overlap adds nothing");
    eprintln!(
        "pollers: restart pass read {} events in {} pages ({} requests) in {secs:.2}s: {:.0} events/s made durable \
         ({} new, {} duplicates)",
        r.events,
        r.pages,
        r.requests,
        r.events as f64 / secs,
        r.accepted,
        r.duplicates
    );
    engine.shutdown().await;
    server.abort();
    sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_over_the_search_cap_is_split_and_search_429s_are_waited_out() {
    let sims = Simulators::start(SimConfig::default()).await.expect("sims");
    let dir = tempfile::tempdir().expect("tempdir");
    const CAP: usize = 10;
    const CONTACTS: usize = 35;
    sims.crm.set_search_cap(CAP);
    let ids: Vec<String> = (0..CONTACTS)
        .map(|i| sims.crm.create_contact(&[("email", &format!("split{i}@example.test"))]))
        .collect();
    let mut c = polled(true, false);
    c.systems.crm.poll_overlap_ms = 120_000;
    let engine = engine_on(&dir.path().join("ledger.db"), c, &sims, &sims.billing.base_url()).await;
    engine.set_search_cap(CAP as u64);
    let t = Instant::now();
    let r = engine.poll_now(Side::Crm).await.expect("pass");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.accepted, CONTACTS, "{r:?}");
    assert!(r.splits >= 2, "35 records under a cap of 10 need splitting: {r:?}");
    assert!(r.windows >= 4, "{r:?}");
    let searches: Vec<_> = sims
        .crm
        .request_log()
        .into_iter()
        .filter(|q| q.path == "/crm/v3/objects/contacts/search")
        .collect();
    assert_eq!(searches.len(), r.requests, "every request counted");
    assert!(
        searches.iter().all(|q| q.status == 200 || q.status == 429),
        "no paging past the cap: {:?}",
        searches.iter().map(|q| q.status).collect::<Vec<_>>()
    );
    let missing = engine
        .ledger()
        .missing_events(Side::Crm, &contact_versions(&sims))
        .await
        .expect("ledger");
    assert!(missing.is_empty(), "{missing:?}");
    eprintln!(
        "pollers: {CONTACTS} records under a search cap of {CAP}: {} windows read, {} splits, {} search requests \
         ({} answered 429) in {secs:.2}s",
        r.windows, r.splits, r.requests, r.rate_limited
    );

    // The search limit: another client has just spent this second's only search; the poller
    // waits out the 429 and still reads every new version.
    sims.crm.set_search_cap(10_000);
    engine.set_search_cap(10_000);
    sims.crm.set_search_rate_limit(Some(1));
    for id in &ids[..3] {
        sims.crm
            .edit_contact(id, &[("lifecyclestage", "customer")])
            .expect("edit");
    }
    let http = reqwest::Client::new();
    eventually(10, "another client's search answered", || {
        let req = http
            .post(format!("{}/crm/v3/objects/contacts/search", sims.crm.base_url()))
            .bearer_auth(sims.crm.token())
            .json(&serde_json::json!({"limit": 1}));
        async move { req.send().await.ok().filter(|r| r.status().as_u16() == 200) }
    })
    .await;
    let r = engine.poll_now(Side::Crm).await.expect("pass");
    assert!(r.rate_limited >= 1, "{r:?}");
    assert_eq!((r.accepted, r.duplicates), (3, CONTACTS - 3), "{r:?}");
    let st = engine.status().await.expect("status").ledger;
    assert_eq!(st.pollers.len(), 1);
    assert_eq!(st.pollers[0].name, crm_cursor(driftless::contract::CrmObject::Contact));
    engine.shutdown().await;
    sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_stripes_retention_is_reported_and_recorded_for_reconciliation() {
    let sims = Simulators::start(SimConfig::default()).await.expect("sims");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let mut c = polled(false, true);
    c.systems.billing.poll_overlap_ms = 60_000;
    create_customers(&sims, "early", 3).await;
    let engine = engine_on(&ledger, c.clone(), &sims, &sims.billing.base_url()).await;
    let r = engine.poll_now(Side::Billing).await.expect("pass");
    assert_eq!((r.accepted, r.expired), (3, None));
    let wm = engine
        .ledger()
        .watermark(BILLING_CURSOR)
        .await
        .expect("ledger")
        .expect("set");
    engine.shutdown().await;

    // The laptop stays closed for 31 days.
    sims.billing.advance_clock(31 * 86_400);
    create_customers(&sims, "late", 2).await;
    let client =
        StripeClient::new(&sims.billing.base_url(), sims.billing.api_key().to_string(), 5_000).expect("client");
    let listed = client.list_events(0, i64::MAX / 2, None).await.expect("events");
    assert_eq!(
        listed.events.len(),
        2,
        "the simulator, like Stripe, no longer lists 31-day-old events"
    );

    let engine = engine_on(&ledger, c, &sims, &sims.billing.base_url()).await;
    let r = engine.poll_now(Side::Billing).await.expect("pass");
    let (from, to) = r.expired.expect("the expired cursor is reported");
    assert_eq!(from, wm, "the gap starts at the old cursor");
    let now = sims.billing.clock().now_ms();
    let edge = now - 30 * 86_400_000;
    assert!(
        to > from && to >= edge && to <= edge + 3_600_000,
        "the gap ends at the oldest retained time (with the 1 h safety margin)"
    );
    assert_eq!(r.accepted, 2, "polling restarted at the oldest retained event: {r:?}");
    let gaps = engine.ledger().reconciliation_gaps(true).await.expect("ledger");
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        (gaps[0].source.as_str(), gaps[0].from_ms, gaps[0].to_ms),
        ("billing", from, to)
    );
    let st = engine.status().await.expect("status").ledger;
    let p = st
        .pollers
        .iter()
        .find(|p| p.name == BILLING_CURSOR)
        .expect("billing poller");
    assert_eq!(p.state, "reconciliation_needed");
    assert_eq!(p.gaps, gaps);
    let overview = engine.overview().await.expect("overview");
    assert!(
        overview.health.reasons.iter().any(|r| r.contains("reconciliation")),
        "{:?}",
        overview.health.reasons
    );
    assert!(
        overview
            .alerts
            .iter()
            .any(|a| a.id == format!("poller:{BILLING_CURSOR}") && a.screen == "reconciliation"),
        "{:?}",
        overview.alerts
    );
    let json = serde_json::to_value(&overview).expect("json");
    assert_eq!(json["status"]["pollers"][0]["state"], "reconciliation_needed");
    let metrics = driftless::engine::prometheus_text(&engine.status().await.expect("status"), &[]);
    assert!(
        metrics.contains("driftless_poll_reconciliation_gaps{cursor=\"poll:billing:events\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("driftless_poll_lag_ms{cursor=\"poll:billing:events\"}"));
    // A later pass is back to normal polling: no second gap.
    let again = engine.poll_now(Side::Billing).await.expect("pass");
    assert_eq!((again.expired, again.accepted), (None, 0));
    engine.shutdown().await;

    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", ledger.display()))
        .await
        .expect("ledger");
    let audited: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE action = 'poll_cursor_expired'")
        .fetch_one(&mut conn)
        .await
        .expect("audit");
    assert_eq!(audited, 1, "the expiry is in the audit log");
    sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companies_mapped_by_the_contract_are_polled_with_their_own_cursor() {
    const ACCOUNT: &str = r#"
[objects.account]
crm = "company"
billing = "customer"
match = ["stored_id"]
create_in = "billing"
idempotency_key = "billing:create-company:{crm_company_id}:{event_id}"

[[objects.account.fields]]
name = "company_name"
crm = "name"
billing = "name"
owner = "crm"

[[objects.account.fields]]
name = "company_billing_id"
crm = "billing_customer_id"
billing = "id"
owner = "billing"
"#;
    let text = contract::DEFAULT_CONTRACT.replacen(
        "[objects.subscription]",
        &format!("{ACCOUNT}\n[objects.subscription]"),
        1,
    );
    let mut c = contract::compile("companies", &text).expect("contract with companies is valid");
    let fresh = polled(true, true);
    c.systems = fresh.systems;
    let d = demo_with(c, FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let company = sims.crm.create_company(&[("name", "Polled Ltd")]);
    let contact = sims.crm.create_contact(&[("email", "polled-company@example.test")]);
    let linked = eventually(30, "company and contact linked by polling", || {
        let sims = sims.clone();
        let (company, contact) = (company.clone(), contact.clone());
        async move {
            let co = sims.crm.companies().into_iter().find(|c| c["id"] == company.as_str())?;
            let ct = sims.crm.contacts().into_iter().find(|c| c["id"] == contact.as_str())?;
            Some((
                prop(&co, "billing_customer_id")?.to_string(),
                prop(&ct, "billing_customer_id")?.to_string(),
            ))
        }
    })
    .await;
    assert_ne!(linked.0, linked.1, "one customer each");
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    let customers = sims.billing.customers();
    assert_eq!(customers.len(), 2);
    let cus = customers
        .iter()
        .find(|c| c["id"] == linked.0.as_str())
        .expect("company's customer");
    assert_eq!(cus["name"], "Polled Ltd");
    assert_eq!(meta(cus, "driftless_crm_company_id"), Some(company.as_str()));
    let st = d.running.engine.status().await.expect("status").ledger;
    let names: Vec<&str> = st.pollers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["poll:billing:events", "poll:crm:companies", "poll:crm:contacts"]
    );
    let searches = sims
        .crm
        .request_log()
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/companies/search")
        .count();
    assert!(searches > 0);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_webhooks_and_polling_both_on_a_stripe_event_is_held_once_and_applied_once() {
    let mut c = contract::default_contract();
    c.systems.billing.ingest = IngestMode::Both;
    c.systems.billing.poll_interval_ms = 200;
    c.systems.billing.poll_overlap_ms = 5_000;
    let d = demo_with(c, FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let engine = d.running.engine.clone();
    let (_, cus) = crate::support::synced_contact(&d, "both@example.test").await;
    // A billing-side change arrives by webhook and by the poller: one event, one decision.
    sims.billing
        .edit_customer(&cus, None, &[("lifecycle_stage", "customer")])
        .expect("dashboard edit");
    let ids = event_ids(&sims);
    eventually(20, "every Stripe event held and re-read by the poller", || {
        let e = engine.clone();
        let ids = ids.clone();
        async move {
            let missing = e.ledger().missing_events(Side::Billing, &ids).await.ok()?;
            let st = e.status().await.ok()?.ledger;
            (missing.is_empty() && st.events["duplicate"] as usize >= ids.len()).then_some(())
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    // The non-owner edit was reverted once (lifecycle stage is CRM-owned): one revert write.
    let (billing_writes, crm_writes) = applied_writes(&sims);
    assert_eq!(
        (billing_writes, crm_writes),
        (2, 1),
        "create + one revert in billing; one CRM write-back"
    );
    d.running.shutdown().await;
}
