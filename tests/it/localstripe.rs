//! The Stripe connector against localstripe (1.15.10), a Stripe fake nobody here wrote, with
//! `driftless sim proxy`'s faults in front of it: lost create responses must still yield
//! exactly one customer per contact (invariant 1), judged from localstripe's own API.
//!
//! localstripe gaps (checked by hand against 1.15.10 and by this test; none needed a
//! connector change for the customer flow):
//! - `Idempotency-Key` is ignored: two creates with one key make two customers. A create
//!   whose response was lost is therefore only safe because the engine looks the customer up
//!   by its origin marker before creating again (`find_by_origin`: customers listed by email,
//!   then filtered on `metadata.driftless_crm_contact_id`).
//! - `GET /v1/customers?email=` does filter (exact match); `limit`/`starting_after` work.
//! - No customer search: `GET /v1/customers/search` falls into `GET /v1/customers/{id}` and
//!   answers 404 with Stripe's error JSON. The origin lookup of a contact without an email
//!   (and of a company, always looked up by metadata search) fails there, so such a create
//!   cannot go through against localstripe (the connector reports the 404 as rejected).
//! - No `/v1/prices` (plans only): a plain-text `404: Not Found`, not Stripe's error JSON (the
//!   connector reports it as garbage). Subscription items carry `plan` and no `price`, so
//!   `plan`/`mrr` read from a localstripe subscription come out empty/zero and `change_plan`
//!   cannot work there. A subscription needs a payment source first.
//! - Subscription metadata sent with an update is dropped (`metadata[b]=2` on update leaves
//!   the metadata as created).
//! - No `/v1/webhook_endpoints`: webhooks are registered with localstripe's own
//!   `POST /_config/webhooks/{id}` (url, secret). Events are signed `t=,v1=` like Stripe's,
//!   sent once about 1 s after the change, and never retried (a non-2xx answer is only
//!   logged). This test registers the engine's `/webhooks/stripe`: billing webhooks are on.
//! - Events carry `api_version` 2017-08-15 and localstripe's own export of the object.
//! - `GET /v1/events` exists (`created[gt|gte|lt|lte]`, `type`, `limit`, `starting_after`) but
//!   lists oldest first (Stripe: newest first), keeps events forever (Stripe: 30 days, so the
//!   expired-cursor path cannot be shown against it; the simulator's retention covers it) and
//!   has no `types[]`, `ending_before` or `delivery_success`. The events poller depends on
//!   neither order nor retention: `the_events_poller_reads_every_localstripe_event_once…`.
//! - Customers are listed oldest first (Stripe: newest first), and a `starting_after` naming a
//!   customer that does not exist (e.g. deleted between two pages) silently restarts at the
//!   first page instead of Stripe's 400/404: a run whose cursor customer is deleted mid-run
//!   would read the first pages again (the reconciler's per-run customer set is keyed by id,
//!   so a re-read changes no count). A deleted customer vanishes from the list and
//!   `GET /v1/customers/{id}` answers 404 (Stripe answers `{"deleted": true}`); the reconciler
//!   only lists, so it reports `billing_id_missing` either way:
//!   `reconciliation_against_localstripe_reports_drift…`.
//! - It binds all interfaces (IPv6 `::`) and has no host option, and it pickles its whole
//!   store to the fixed path `/tmp/localstripe.pickle` on every write (shared by every
//!   instance on the machine) and reloads it at start unless `--from-scratch`. The test
//!   starts it through a few lines of Python that bind 127.0.0.1 on a free port, load nothing
//!   and turn the pickling off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use driftless::contract::{self, Side};
use driftless::drill::wait_quiet;
use driftless::runtime::{self, EngineSecrets, ServeOptions};
use driftless::sim::{FaultProfile, FaultProxy, ProxyConfig, SimConfig, Simulators};

use crate::support::{eventually, meta, prop};

pub(crate) const API_KEY: &str = "sk_test_localstripe";
const WEBHOOK_SECRET: &str = "whsec_localstripe_test";
const CONTACTS: usize = 15;

/// Binds 127.0.0.1 on a free port, prints the port, serves localstripe without its pickle.
const LAUNCHER: &str = r#"
import socket
from aiohttp import web
from localstripe import server
from localstripe.resources import Store
Store.dump_to_disk = lambda self: None
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
web.run_app(server.app, sock=sock, print=None, access_log=None)
"#;

/// localstripe's interpreter: `$DRIFTLESS_PEERS_PY`, else the venv `scripts/setup.sh test` makes.
fn peers_python() -> PathBuf {
    if let Some(p) = std::env::var_os("DRIFTLESS_PEERS_PY") {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("DRIFTLESS_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/driftless/peers"));
    dir.join("bin/python")
}

/// A localstripe child process, killed when dropped.
pub(crate) struct LocalStripe {
    _child: tokio::process::Child,
    pub(crate) base_url: String,
}

impl LocalStripe {
    pub(crate) async fn start(log: PathBuf) -> LocalStripe {
        let py = peers_python();
        assert!(
            py.exists(),
            "localstripe's Python interpreter {} is missing: run `scripts/setup.sh test` \
             (or point DRIFTLESS_PEERS_PY at a Python with localstripe 1.15.10)",
            py.display()
        );
        let stderr = std::fs::File::create(&log).expect("localstripe log file");
        let mut child = tokio::process::Command::new(&py)
            .arg("-c")
            .arg(LAUNCHER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", py.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let port: u16 = match (read, line.trim().parse()) {
            (Ok(Ok(_)), Ok(p)) => p,
            _ => panic!(
                "localstripe did not report its port (is localstripe installed for {}? run \
                 `scripts/setup.sh test`); its stderr: {}",
                py.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        let ls = LocalStripe {
            _child: child,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        eventually(20, "localstripe answers", || {
            let req = http.get(format!("{}/v1/customers", ls.base_url)).bearer_auth(API_KEY);
            async move { req.send().await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        ls
    }

    /// `GET path` on localstripe's own API, every page.
    async fn list(&self, path: &str) -> Vec<Value> {
        let http = reqwest::Client::new();
        let mut out: Vec<Value> = Vec::new();
        loop {
            let mut q = vec![("limit".to_string(), "100".to_string())];
            if let Some(last) = out.last().and_then(|v| v["id"].as_str()) {
                q.push(("starting_after".into(), last.to_string()));
            }
            let page: Value = http
                .get(format!("{}{path}", self.base_url))
                .bearer_auth(API_KEY)
                .query(&q)
                .send()
                .await
                .expect("localstripe answers")
                .json()
                .await
                .expect("localstripe lists JSON");
            out.extend(page["data"].as_array().cloned().unwrap_or_default());
            if page["has_more"] != true {
                return out;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn localstripe_behind_the_fault_proxy_gets_exactly_one_customer_per_contact() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let ls = LocalStripe::start(dir.path().join("localstripe.log")).await;
    let proxy = FaultProxy::start(ProxyConfig {
        upstream: ls.base_url.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: 11,
        faults: FaultProfile::parse("timeout=0.4,hang_ms=1500,429=0.05,5xx=0.02,burst=2").expect("profile"),
    })
    .await
    .expect("proxy starts");
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators");

    let mut contract = contract::default_contract();
    contract.systems.crm.base_url = sims.crm.base_url();
    contract.systems.crm.request_timeout_ms = 2_000;
    contract.systems.billing.base_url = proxy.base_url();
    // Shorter than the proxy's hold: a withheld answer is a client timeout.
    contract.systems.billing.request_timeout_ms = 600;
    let secrets = EngineSecrets {
        crm_token: sims.crm.token().to_string(),
        billing_key: API_KEY.to_string(),
        crm_webhook_secret: Some(sims.crm.webhook_secret().to_string()),
        billing_webhook_secret: Some(WEBHOOK_SECRET.to_string()),
    };
    runtime::ensure_crm_properties(&contract, &secrets)
        .await
        .expect("CRM properties");
    let running = runtime::serve_contract_with(
        contract,
        secrets,
        ServeOptions {
            ledger: dir.path().join("ledger.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 4,
            public_url: None,
            token: None,
            allow_non_loopback: false,
        },
    )
    .await
    .expect("engine starts");
    sims.crm
        .set_webhook_target(&format!("http://{}/webhooks/hubspot", running.addr));
    // localstripe has no /v1/webhook_endpoints; its own config route takes url + secret.
    let registered = reqwest::Client::new()
        .post(format!("{}/_config/webhooks/driftless", ls.base_url))
        .form(&[
            ("url", format!("http://{}/webhooks/stripe", running.addr)),
            ("secret", WEBHOOK_SECRET.to_string()),
        ])
        .send()
        .await
        .expect("localstripe answers");
    assert!(registered.status().is_success(), "webhook registered with localstripe");

    let contacts: Vec<(String, String)> = (0..CONTACTS)
        .map(|i| {
            let email = format!("ls{i}@example.test");
            let id = sims
                .crm
                .create_contact(&[("email", email.as_str()), ("lifecyclestage", "lead")]);
            (id, email)
        })
        .collect();

    let linked = eventually(45, "every contact carries its billing customer id", || {
        let sims = sims.clone();
        let ids: Vec<String> = contacts.iter().map(|(id, _)| id.clone()).collect();
        async move {
            let all = sims.crm.contacts();
            ids.iter()
                .map(|id| {
                    all.iter()
                        .find(|c| c["id"] == id.as_str())
                        .and_then(|c| prop(c, "billing_customer_id"))
                        .map(|b| (id.clone(), b.to_string()))
                })
                .collect::<Option<Vec<_>>>()
        }
    })
    .await;
    let ledger = running.engine.ledger();
    assert!(
        wait_quiet(ledger, &sims, Duration::from_secs(20)).await,
        "engine quiescent"
    );

    // Judged from localstripe's own API, not the engine's counters.
    let customers = ls.list("/v1/customers").await;
    for (id, email) in &contacts {
        let mine: Vec<&Value> = customers
            .iter()
            .filter(|c| meta(c, "driftless_crm_contact_id") == Some(id.as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "exactly one customer for contact {id}: {mine:?}");
        assert_eq!(mine[0]["email"].as_str(), Some(email.as_str()), "email of contact {id}");
        let billing_id = linked.iter().find(|(c, _)| c == id).map(|(_, b)| b.as_str());
        assert_eq!(
            mine[0]["id"].as_str(),
            billing_id,
            "the CRM names contact {id}'s customer"
        );
    }
    assert_eq!(
        customers.len(),
        CONTACTS,
        "no customer without a contact: {customers:#?}"
    );

    // Billing webhooks: every customer.created localstripe emitted reached the inbox (sent
    // once, never retried, so a lost one would stay lost).
    let created: Vec<String> = ls
        .list("/v1/events")
        .await
        .iter()
        .filter(|e| e["type"] == "customer.created")
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(created.len(), CONTACTS, "one customer.created per customer");
    eventually(10, "localstripe's webhooks in the inbox", || {
        let created = created.clone();
        async move {
            ledger
                .missing_events(Side::Billing, &created)
                .await
                .ok()
                .filter(|m| m.is_empty())
        }
    })
    .await;
    assert!(
        wait_quiet(ledger, &sims, Duration::from_secs(20)).await,
        "quiescent after webhooks"
    );
    let st = ledger.status().await.expect("status");
    assert_eq!(st.dead_letter_depth, 0, "no dead letters: {st:?}");
    assert_eq!(st.review_depth, 0, "nothing in review: {st:?}");

    // The faults really happened: creates applied by localstripe whose answers were lost.
    let log = proxy.request_log();
    let lost_creates = log
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers")
        .filter(|r| r.fault.as_deref() == Some("timeout_after_commit") && r.forwarded)
        .count();
    let count = |f: &str| log.iter().filter(|r| r.fault.as_deref() == Some(f)).count();
    eprintln!(
        "localstripe: {} requests through the proxy, {lost_creates} lost creates, {} timeouts, {} 429s, \
         {} 5xx, {:.1}s",
        log.len(),
        count("timeout_after_commit"),
        count("rate_limit"),
        count("server_error"),
        started.elapsed().as_secs_f64()
    );
    assert!(lost_creates > 0, "no create lost its answer; the proxy log: {log:#?}");
    // Everything the connector sent was understood by localstripe.
    let refused: Vec<_> = log
        .iter()
        .filter(|r| r.upstream_status.is_some_and(|s| !(200..300).contains(&s)))
        .collect();
    assert!(refused.is_empty(), "localstripe refused requests: {refused:#?}");

    running.shutdown().await;
    proxy.shutdown().await;
    sims.shutdown().await;
}

/// The Stripe events poller against localstripe's `/v1/events`, behind the fault proxy
/// (429s, 5xx bursts). localstripe serves the list with `created[gt|gte|lt|lte]`, `limit` and
/// `starting_after`, but oldest first (Stripe lists newest first) and with no retention
/// (events are kept forever): the poller depends on neither the order nor retention, so
/// every event is made durable once and a second pass only re-reads duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_poller_reads_every_localstripe_event_once_through_429s_and_5xx() {
    use driftless::connectors::stripe::StripeClient;
    use driftless::connectors::Offline;
    use driftless::engine::{Engine, EngineConfig, SystemClock, WebhookSecrets};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let ls = LocalStripe::start(dir.path().join("localstripe.log")).await;
    let proxy = FaultProxy::start(ProxyConfig {
        upstream: ls.base_url.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: 5,
        faults: FaultProfile::parse("429=0.4,5xx=0.1,burst=2").expect("profile"),
    })
    .await
    .expect("proxy starts");
    const CUSTOMERS: usize = 130;
    let http = reqwest::Client::new();
    for i in 0..CUSTOMERS {
        let r = http
            .post(format!("{}/v1/customers", ls.base_url))
            .bearer_auth(API_KEY)
            .form(&[("email", format!("events{i}@example.test"))])
            .send()
            .await
            .expect("localstripe answers");
        assert!(r.status().is_success());
    }
    let events = ls.list("/v1/events").await;
    assert_eq!(events.len(), CUSTOMERS, "one customer.created per customer");

    let mut contract = contract::default_contract();
    contract.systems.billing.ingest = contract::IngestMode::Poll;
    contract.systems.billing.poll_overlap_ms = 300_000;
    let billing = StripeClient::new(&proxy.base_url(), API_KEY.to_string(), 5_000).expect("client");
    let engine = Engine::open(EngineConfig {
        ledger: dir.path().join("ledger.db"),
        contract,
        crm: Arc::new(Offline {
            system: "crm",
            why: "not needed to poll billing".into(),
        }),
        billing: Arc::new(billing),
        webhook_secrets: WebhookSecrets::default(),
        workers: 1,
        clock: Arc::new(SystemClock),
        demo: false,
    })
    .await
    .expect("engine opens");
    let r = engine.poll_now(Side::Billing).await.expect("pass");
    assert_eq!((r.accepted, r.malformed), (CUSTOMERS, 0), "{r:?}");
    let ids: Vec<String> = events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let missing = engine
        .ledger()
        .missing_events(Side::Billing, &ids)
        .await
        .expect("ledger");
    assert!(missing.is_empty(), "{missing:?}");
    let again = engine.poll_now(Side::Billing).await.expect("pass");
    assert_eq!((again.accepted, again.duplicates), (0, CUSTOMERS), "{again:?}");
    // The proxy's faults are seeded and only the poller's requests pass it: deterministic.
    let faulted = proxy.request_log().iter().filter(|q| q.fault.is_some()).count();
    assert!(faulted > 0, "the proxy injected no fault into the poller's requests");
    eprintln!(
        "localstripe: events poller read {} events in {} pages with {} requests ({} answered 429, {faulted} faulted in both passes)",
        r.events, r.pages, r.requests, r.rate_limited
    );
    engine.shutdown().await;
    proxy.shutdown().await;
}

/// A form POST (or DELETE) straight at localstripe's API: drift behind the engine's back.
async fn ls_call(ls: &LocalStripe, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", ls.base_url))
        .bearer_auth(API_KEY)
        .form(form)
        .send()
        .await
        .expect("localstripe answers");
    assert!(r.status().is_success(), "localstripe refused {path}: {}", r.status());
    r.json().await.expect("localstripe answers JSON")
}

/// Mismatches of a report by `kind:name`, each list of record keys sorted.
fn recon_kinds(r: &driftless::reconcile::ReconcileReport) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for m in &r.mismatches {
        out.entry(format!("{}:{}", m.m.kind, m.m.name))
            .or_default()
            .push(m.m.entity_key.clone());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The reconciler with billing = localstripe (through the fault proxy, which counts the
/// requests) and the CRM simulator: drift made straight in localstripe (an email edited, a
/// metadata field and the unmapped name edited, a customer deleted, a second customer
/// carrying a contact's origin marker) and in the CRM with webhooks suppressed (an edit, a
/// contact never announced) is reported by field and by rule; the billing side is paged with
/// `limit=100` and `starting_after`; the repair converges with exactly one customer per
/// contact, judged from localstripe's own API. localstripe's webhooks are not registered:
/// every change made there reaches the engine only through reconciliation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciliation_against_localstripe_reports_drift_made_there_and_repairs_it_without_duplicates() {
    use driftless::reconcile::{rules, ReconcileRequest, Repair};
    use reqwest::Method;

    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let ls = LocalStripe::start(dir.path().join("localstripe.log")).await;
    let proxy = FaultProxy::start(ProxyConfig {
        upstream: ls.base_url.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: 3,
        faults: FaultProfile::none(),
    })
    .await
    .expect("proxy starts");
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators");
    let mut contract = contract::default_contract();
    contract.systems.crm.base_url = sims.crm.base_url();
    contract.systems.billing.base_url = proxy.base_url();
    contract.systems.billing.request_timeout_ms = 5_000;
    let secrets = EngineSecrets {
        crm_token: sims.crm.token().to_string(),
        billing_key: API_KEY.to_string(),
        crm_webhook_secret: Some(sims.crm.webhook_secret().to_string()),
        billing_webhook_secret: Some(WEBHOOK_SECRET.to_string()),
    };
    runtime::ensure_crm_properties(&contract, &secrets)
        .await
        .expect("CRM properties");
    let running = runtime::serve_contract_with(
        contract,
        secrets,
        ServeOptions {
            ledger: dir.path().join("ledger.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 4,
            public_url: None,
            token: None,
            allow_non_loopback: false,
        },
    )
    .await
    .expect("engine starts");
    sims.crm
        .set_webhook_target(&format!("http://{}/webhooks/hubspot", running.addr));
    let e = running.engine.clone();
    let ledger = e.ledger();

    // Six contacts synced to localstripe: (CRM id, customer id, email).
    let emails: Vec<String> = (0..6).map(|i| format!("lsr{i}@example.test")).collect();
    let ids: Vec<String> = emails
        .iter()
        .map(|email| {
            sims.crm
                .create_contact(&[("email", email.as_str()), ("lifecyclestage", "lead")])
        })
        .collect();
    let linked = eventually(45, "every contact carries its localstripe customer id", || {
        let all = sims.crm.contacts();
        let ids = ids.clone();
        async move {
            ids.iter()
                .map(|id| {
                    all.iter()
                        .find(|c| c["id"] == id.as_str())
                        .and_then(|c| prop(c, "billing_customer_id"))
                        .map(str::to_string)
                })
                .collect::<Option<Vec<_>>>()
        }
    })
    .await;
    let pairs: Vec<(String, String, String)> = ids
        .iter()
        .zip(linked)
        .zip(&emails)
        .map(|((c, b), m)| (c.clone(), b, m.clone()))
        .collect();
    assert!(
        wait_quiet(ledger, &sims, Duration::from_secs(20)).await,
        "engine quiescent"
    );
    // 110 customers nobody synced (no origin marker): the billing side is two pages.
    for i in 0..110 {
        ls_call(
            &ls,
            Method::POST,
            "/v1/customers",
            &[("email", &format!("pad{i}@example.test"))],
        )
        .await;
    }
    let listed = ls.list("/v1/customers").await;
    assert_eq!(listed.len(), 116);
    let hundredth = listed[99]["id"].as_str().expect("id").to_string();

    let req = || ReconcileRequest {
        trigger: "test".into(),
        ..Default::default()
    };
    let key = |crm: &str| format!("customer:crm:{crm}");
    let before = proxy.request_log().len();
    let clean = e.reconcile(&req(), "test").await.expect("baseline run");
    assert!(clean.complete);
    assert_eq!(clean.compared, 6, "{clean:#?}");
    assert_eq!(recon_kinds(&clean), Default::default(), "synced pairs have no drift");
    // The billing side paged through the proxy: limit=100, then starting_after the 100th.
    let log = proxy.request_log();
    let lists: Vec<&str> = log[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/customers?") && !r.path.contains("email="))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(lists.len(), 2, "two customer pages: {lists:?}");
    assert!(lists.iter().all(|p| p.contains("limit=100")), "{lists:?}");
    assert!(!lists[0].contains("starting_after"), "{lists:?}");
    assert!(
        lists[1].contains(&format!("starting_after={hundredth}")),
        "page 2 starts after the 100th customer {hundredth}: {lists:?}"
    );
    assert_eq!(clean.run.pages_read, 3, "2 billing pages + 1 CRM page");
    // Per linked record one subscription and one invoice read besides the pages.
    let reads = log[before..].len();
    assert_eq!(reads, 2 + 2 * 6, "{:#?}", &log[before..]);
    assert!(
        log[before..].iter().all(|r| !r.mutating),
        "a run without repair writes nothing"
    );

    // Drift behind the engine's back.
    sims.crm.suppress_webhooks(true);
    // (a) a CRM-owned field edited in the CRM, never delivered.
    sims.crm
        .edit_contact(&pairs[0].0, &[("lifecyclestage", "opportunity")])
        .expect("edit");
    // (b) the CRM-owned email edited in localstripe.
    let b = format!("/v1/customers/{}", pairs[1].1);
    ls_call(
        &ls,
        Method::POST,
        &b,
        &[("email", "changed-in-localstripe@example.test")],
    )
    .await;
    // (c) a CRM-owned metadata field and the unmapped name edited in localstripe.
    let c = format!("/v1/customers/{}", pairs[4].1);
    ls_call(
        &ls,
        Method::POST,
        &c,
        &[
            ("metadata[lifecycle_stage]", "evangelist"),
            ("name", "Renamed In Localstripe"),
        ],
    )
    .await;
    // (d) a customer deleted in localstripe.
    ls_call(&ls, Method::DELETE, &format!("/v1/customers/{}", pairs[2].1), &[]).await;
    // (e) a second customer carrying contact 3's origin marker.
    let dup = ls_call(
        &ls,
        Method::POST,
        "/v1/customers",
        &[
            ("email", "dup@example.test"),
            ("metadata[driftless_crm_contact_id]", pairs[3].0.as_str()),
        ],
    )
    .await;
    let dup_id = dup["id"].as_str().expect("dup id").to_string();
    // (f) a contact no webhook announced.
    let unseen = sims
        .crm
        .create_contact(&[("email", "unseen-ls@example.test"), ("lifecyclestage", "lead")]);
    let mutating = || {
        proxy.request_log().iter().filter(|r| r.mutating).count()
            + sims.crm.request_log().iter().filter(|r| r.mutating).count()
    };
    let writes_before = mutating();

    let dry = e
        .reconcile(&ReconcileRequest { dry_run: true, ..req() }, "test")
        .await
        .expect("dry run");
    let k = recon_kinds(&dry);
    eprintln!("{k:#?}");
    let mut p0_p4 = vec![key(&pairs[0].0), key(&pairs[4].0)];
    p0_p4.sort();
    let expected: std::collections::BTreeMap<String, Vec<String>> = [
        ("field:lifecycle_stage".to_string(), p0_p4),
        ("field:email".into(), vec![key(&pairs[1].0)]),
        (format!("rule:{}", rules::BILLING_ID_MISSING), vec![key(&pairs[2].0)]),
        (format!("rule:{}", rules::DUPLICATE_ORIGIN), vec![key(&pairs[3].0)]),
        (format!("rule:{}", rules::MISSING_COUNTERPART), vec![key(&unseen)]),
        ("missed_event:lifecycle_stage".into(), vec![key(&pairs[0].0)]),
        ("missed_event:record".into(), vec![key(&unseen)]),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        k, expected,
        "each drift by field / rule, and nothing else (the name is not mapped)"
    );
    assert_eq!(dry.compared, 7);
    assert_eq!(dry.mismatched_records, 6);
    assert!((dry.mismatch_rate - 6.0 / 7.0).abs() < 1e-9, "{}", dry.mismatch_rate);
    let email = dry
        .mismatches
        .iter()
        .find(|m| m.m.name == "email")
        .expect("email mismatch");
    assert_eq!(
        (email.m.crm_value.as_deref(), email.m.billing_value.as_deref()),
        (Some(pairs[1].2.as_str()), Some("changed-in-localstripe@example.test"))
    );
    let dups = dry
        .mismatches
        .iter()
        .find(|m| m.m.name == rules::DUPLICATE_ORIGIN)
        .and_then(|m| m.m.billing_value.clone())
        .unwrap_or_default();
    assert!(dups.contains(&dup_id) && dups.contains(&pairs[3].1), "{dups}");
    assert!(dry.repair.as_ref().is_some_and(|p| !p.queued && p.records == 6));
    assert_eq!(mutating(), writes_before, "the dry run wrote nothing");

    // Repair through the pipeline; the deleted and the duplicated customer go to review.
    sims.crm.suppress_webhooks(false);
    let repair_from = proxy.request_log().len();
    let fixed = e
        .reconcile(
            &ReconcileRequest {
                repair: Repair::Records(vec![
                    pairs[0].0.clone(),
                    pairs[1].0.clone(),
                    pairs[4].0.clone(),
                    unseen.clone(),
                ]),
                review: vec![pairs[2].0.clone(), pairs[3].0.clone()],
                ..req()
            },
            "test",
        )
        .await
        .expect("repair run");
    assert!(fixed.repair.as_ref().is_some_and(|p| p.queued && p.records == 4));
    assert_eq!(fixed.sent_to_review, 2);
    let unseen_bid = eventually(30, "the unseen contact linked to a customer", || {
        let c = sims.crm.contacts().into_iter().find(|c| c["id"] == unseen.as_str());
        async move { c.and_then(|c| prop(&c, "billing_customer_id").map(str::to_string)) }
    })
    .await;
    assert!(
        wait_quiet(ledger, &sims, Duration::from_secs(30)).await,
        "quiescent after the repair"
    );
    let after = e.reconcile(&req(), "test").await.expect("run after repair");
    let left: Vec<String> = recon_kinds(&after).into_keys().collect();
    assert_eq!(
        left,
        vec![
            format!("rule:{}", rules::BILLING_ID_MISSING),
            format!("rule:{}", rules::DUPLICATE_ORIGIN),
        ],
        "what the pipeline repairs is gone; what a person decides stays"
    );

    // Judged from localstripe's own API.
    let customers = ls.list("/v1/customers").await;
    let marked = |crm: &str| -> Vec<&Value> {
        customers
            .iter()
            .filter(|c| meta(c, "driftless_crm_contact_id") == Some(crm))
            .collect()
    };
    for i in [0, 1, 4] {
        assert_eq!(marked(&pairs[i].0).len(), 1, "one customer for contact {i}");
    }
    assert_eq!(marked(&pairs[3].0).len(), 2, "the duplicate waits in review");
    let new = marked(&unseen);
    assert_eq!(
        new.len(),
        1,
        "exactly one customer created for the unseen contact: {new:?}"
    );
    assert_eq!(new[0]["id"].as_str(), Some(unseen_bid.as_str()));
    assert_eq!(new[0]["email"].as_str(), Some("unseen-ls@example.test"));
    assert_eq!(
        marked(&pairs[1].0)[0]["email"].as_str(),
        Some(pairs[1].2.as_str()),
        "the CRM's email written back over the edit"
    );
    assert_eq!(
        meta(marked(&pairs[4].0)[0], "lifecycle_stage"),
        Some("lead"),
        "reverted"
    );
    assert_eq!(
        meta(marked(&pairs[0].0)[0], "lifecycle_stage"),
        Some("opportunity"),
        "the missed CRM edit reached billing"
    );
    assert_eq!(customers.len(), 6 - 1 + 110 + 1 + 1);
    let creates = proxy.request_log()[repair_from..]
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers")
        .count();
    assert_eq!(creates, 1, "the repair created one customer");
    let reviews = e.list_reviews().await.expect("reviews");
    assert!(reviews.iter().any(|r| r.record == key(&pairs[2].0)));
    assert!(reviews.iter().any(|r| r.record == key(&pairs[3].0)));

    // The person removes the duplicate in localstripe: only the deleted customer (in review) is left.
    ls_call(&ls, Method::DELETE, &format!("/v1/customers/{dup_id}"), &[]).await;
    let last = e.reconcile(&req(), "test").await.expect("last run");
    assert_eq!(
        recon_kinds(&last).into_keys().collect::<Vec<_>>(),
        vec![format!("rule:{}", rules::BILLING_ID_MISSING)]
    );
    let customers = ls.list("/v1/customers").await;
    let mut markers: Vec<&str> = customers
        .iter()
        .filter_map(|c| meta(c, "driftless_crm_contact_id"))
        .collect();
    let n = markers.len();
    markers.sort();
    markers.dedup();
    assert_eq!(markers.len(), n, "no two localstripe customers carry one origin marker");
    assert_eq!(n, 6, "five surviving contacts + the unseen one");
    eprintln!(
        "localstripe reconciliation: baseline read {reads} requests (2 customer pages), {} through the proxy in all, {:.1}s",
        proxy.request_log().len(),
        started.elapsed().as_secs_f64()
    );
    running.shutdown().await;
    proxy.shutdown().await;
    sims.shutdown().await;
}
