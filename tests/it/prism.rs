//! The HubSpot connector against Prism (`@stoplight/prism-cli` 5.16.0, pinned by
//! `tests/peers/package-lock.json`) mocking HubSpot's published OpenAPI files
//! (`tests/peers/specs/hubspot/`, copied unmodified; provenance in the README there): every
//! kind of request the CRM connector sends must pass Prism's request validation.
//!
//! One Prism per spec (contacts, companies, properties), started with `--errors`, behind a
//! small routing proxy in this test that sends each request to the Prism owning its path and
//! records what Prism answered (status, `sl-violations`). Request kinds exercised:
//! - `get_record` contact and company: `GET /crm/v3/objects/{contacts|companies}/{id}`
//!   with `properties` and `archived=false`;
//! - `list_records` contact and company (the reconciler's and backfill's pages):
//!   `GET /crm/v3/objects/{contacts|companies}` with `limit=100`, `properties`,
//!   `archived=false`, and `after` on a following page;
//! - `update_record` contact and company: `PATCH` the same path with `{"properties": {…}}`
//!   (a cleared field is sent as `""`);
//! - `ensure_properties`: `GET /crm/v3/properties/{objectType}/{name}` and, when that is 404,
//!   `POST /crm/v3/properties/{objectType}` (the proxy answers the GET with HubSpot's 404
//!   once Prism has validated it, so the connector goes on to the create).
//!
//! - `batch_read`, `batch_update`, `batch_upsert` contact and company
//!   (`every_batch_request…`): `POST /crm/v3/objects/{contacts|companies}/batch/{read|update|upsert}`.
//! - `search_modified` contact and company (`the_pollers_search_request…`):
//!   `POST /crm/v3/objects/{contacts|companies}/search`, first page and `after`.
//!
//! Not sent by the connector, so not checked here: `batch/create` and single creates (the
//! engine never creates CRM records).
//!
//! Derived spec copies (made in a temp dir by this test, never committed), as
//! `/work/shared/specs/SOURCES.md` explains: `example: null` fields dropped (else Prism answers
//! `null` bodies) and the shared `Error` response's `*/*` media type mapped to
//! `application/json` (else "Cannot find serializer for */*").
//!
//! What Prism and these specs showed (no connector change was needed):
//! - Every request the connector sends is valid against the specs: bearer token, JSON
//!   content type, `{"properties": {name: string}}`, the property create body (`name`,
//!   `label`, `type`, `fieldType`, `groupName`, `description`).
//! - `properties` is declared as an exploded form array (`?properties=a&properties=b`); the
//!   connector sends one comma-joined value, which the live API accepts and which the spec
//!   reads as an array of one string. Prism cannot tell the two apart.
//! - properties.json's own example violates its response schema (`Property` requires
//!   `description`, its schema example lacks it): Prism `--errors` turns its own example into a 500
//!   VIOLATIONS answer. The properties Prism therefore runs `--dynamic` (responses generated
//!   from the schema). A spec defect, not ours.
//! - The object operations declare only `oauth2` security (not `private_apps`); Prism checks
//!   for an `Authorization` header, which is what a private app token is sent in too.
//! - Stricter than the live API: `SimplePublicObjectInputForCreate` requires `associations`
//!   (not on our path), and `PublicObjectSearchRequest` requires every field (`after`,
//!   `filterGroups`, `limit`, `properties`, `sorts` with string items), so the pollers' search
//!   sends all of them (`after = "0"` on a first page). The search operation has no example
//!   answer, so its mocks run `--dynamic`.
//! - Batch endpoints (what the spec demands, each checked by a control request Prism refuses):
//!   `BatchReadInputSimplePublicObjectId` requires `properties` **and** `propertiesWithHistory`
//!   (the connector sends `[]`; without it Prism answers 422), and each
//!   `SimplePublicObjectBatchInput` (update) and `SimplePublicObjectBatchInputUpsert` requires
//!   `id` and `properties` (an update input without `properties` is refused). The optional
//!   `objectWriteTraceId` is accepted: the connector sends each input's index in its call and
//!   ties results and 207 `errors` back by it (else by `id` / `context.ids`). `batch/read` takes
//!   `archived` as a query parameter. The spec declares 200 and 207 answers
//!   (`BatchResponseSimplePublicObject[WithErrors]`: `status`, `results`, `startedAt`,
//!   `completedAt` required; `errors[]` are `StandardError` with `context` of string arrays),
//!   and no per-call input limit: the 100-input cap is HubSpot's documentation, not the spec.
//! - Prism answers every batch call with the spec's one example object (`id` 512) whatever the
//!   inputs, and upsert results without the unique property: inputs the answer does not name
//!   get an error of their own ("neither a result nor an error"), never a whole-call failure.
//!   So Prism proves the request shapes; the per-record mapping of 200/207/4xx answers is
//!   proven by the connector's unit tests and the CRM simulator (`crm_batch::…`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use driftless::connectors::hubspot::HubspotClient;
use driftless::connectors::{CrmApi, Fields, PropertyDef};
use driftless::contract::CrmObject;

const TOKEN: &str = "pat-na1-driftless-prism-test";
const SPECS: [&str; 3] = ["contacts", "companies", "properties"];

/// The directory holding `hubspot/{contacts,companies,properties}.json`:
/// `$DRIFTLESS_SPECS_DIR`, else the copies in `tests/peers/specs`, else `<repo>/../shared/specs`,
/// else `/work/shared/specs`.
pub(crate) fn specs_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tried: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("DRIFTLESS_SPECS_DIR") {
        tried.push(PathBuf::from(d));
    } else {
        tried.push(repo.join("tests/peers/specs"));
        tried.push(repo.join("../shared/specs"));
        tried.push(PathBuf::from("/work/shared/specs"));
    }
    for d in &tried {
        if SPECS
            .iter()
            .all(|s| d.join("hubspot").join(format!("{s}.json")).is_file())
        {
            return d.clone();
        }
    }
    panic!(
        "HubSpot's OpenAPI files (hubspot/contacts.json, companies.json, properties.json) are in none of {tried:?}: \
         restore tests/peers/specs/hubspot or set DRIFTLESS_SPECS_DIR"
    );
}

/// Prism's launcher: `$DRIFTLESS_PRISM`, else the one `scripts/setup.sh test` installs.
pub(crate) fn prism_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DRIFTLESS_PRISM") {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("DRIFTLESS_PEERS_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("DRIFTLESS_PEERS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/driftless/peers")
                })
                .join("node")
        });
    dir.join("node_modules/.bin/prism")
}

/// Drop `example: null` everywhere (Prism would answer `null`).
fn drop_null_examples(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, val| !(k == "example" && val.is_null()));
            m.values_mut().for_each(drop_null_examples);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_null_examples),
        _ => {}
    }
}

/// The test copy of one spec (SOURCES.md's jq recipe, in Rust).
pub(crate) fn derive_spec(src: &Path, dst: &Path) {
    let text = std::fs::read_to_string(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let mut spec: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", src.display()));
    drop_null_examples(&mut spec);
    let content = spec
        .pointer_mut("/components/responses/Error/content")
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{} has no components.responses.Error.content", src.display()));
    let any = content
        .remove("*/*")
        .unwrap_or_else(|| panic!("{}: Error response without */*", src.display()));
    content.clear();
    content.insert("application/json".into(), any);
    std::fs::write(dst, serde_json::to_vec(&spec).expect("serialise")).expect("write derived spec");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One Prism mock process, killed when dropped.
pub(crate) struct Prism {
    _child: tokio::process::Child,
    pub(crate) base_url: String,
    log: PathBuf,
}

impl Prism {
    pub(crate) fn spawn(bin: &Path, spec: &Path, log: PathBuf, dynamic: bool) -> Prism {
        let port = free_port();
        let out = std::fs::File::create(&log).expect("prism log file");
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("mock")
            .arg(spec)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--errors"]);
        if dynamic {
            cmd.args(["--dynamic", "--seed", "driftless"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("log handle")))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Prism {}: {e}; run `scripts/setup.sh test`", bin.display()));
        Prism {
            _child: child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Until Prism answers anything over HTTP (its 404 for `/` will do).
    pub(crate) async fn wait_ready(&self, secs: u64) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while http.get(&self.base_url).send().await.is_err() {
            if Instant::now() > deadline {
                panic!(
                    "Prism at {} did not answer within {secs}s; its log:\n{}",
                    self.base_url,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One request as Prism judged it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: String,
    prism_status: u16,
    violations: Option<String>,
    prism_body: String,
}

#[derive(Clone)]
struct Router {
    http: reqwest::Client,
    /// (path prefix, Prism base URL)
    upstreams: Arc<Vec<(String, String)>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Forward to the Prism owning the path and record its verdict. A property GET that Prism
/// accepted is answered with HubSpot's 404, so `ensure_properties` goes on to its POST.
async fn route(State(r): State<Router>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    // A prefix ends in `/`; the collection itself (the list) has none.
    let owns = |p: &str| path.starts_with(p) || path == p.trim_end_matches('/');
    let Some((_, base)) = r.upstreams.iter().find(|(p, _)| owns(p)) else {
        return (StatusCode::NOT_FOUND, format!("no Prism serves {path}")).into_response();
    };
    let target = format!("{base}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut req = r.http.request(method.clone(), target);
    for (k, v) in headers.iter() {
        if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
            req = req.header(k, v);
        }
    }
    let resp = match req.body(body.clone()).send().await {
        Ok(resp) => resp,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("Prism unreachable: {e}")).into_response(),
    };
    let status = resp.status().as_u16();
    let violations = resp
        .headers()
        .get("sl-violations")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let answer = resp.bytes().await.unwrap_or_default();
    r.seen.lock().expect("log").push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
        prism_status: status,
        violations,
        prism_body: String::from_utf8_lossy(&answer).into_owned(),
    });
    let property_get =
        method == Method::GET && path.starts_with("/crm/v3/properties/") && path.matches('/').count() == 5;
    if property_get && (200..300).contains(&status) {
        let missing = json!({"status": "error", "message": "Unable to find property", "category": "OBJECT_NOT_FOUND",
                             "correlationId": "00000000-0000-0000-0000-000000000000"});
        return (StatusCode::NOT_FOUND, axum::Json(missing)).into_response();
    }
    let mut out = Response::new(axum::body::Body::from(answer));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(ct) = content_type {
        out.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
    }
    out
}

/// Prisms on HubSpot's specs (each `(spec, dynamic)`) behind the recording router on loopback.
/// Stops the router when dropped (each `Prism` stops its process).
struct Mocks {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _prisms: Vec<Prism>,
    _dir: tempfile::TempDir,
}

impl Mocks {
    async fn start(specs: &[(&str, bool)]) -> Mocks {
        let bin = prism_bin();
        assert!(
            bin.exists(),
            "Prism ({}) is missing: run `scripts/setup.sh test` (it installs tests/peers/package-lock.json \
             with npm ci), or point DRIFTLESS_PRISM at a prism 5.16.0 launcher",
            bin.display()
        );
        let spec_dir = specs_dir().join("hubspot");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut prisms = Vec::new();
        let mut upstreams = Vec::new();
        for (name, dynamic) in specs {
            let derived = dir.path().join(format!("{name}.prism.json"));
            derive_spec(&spec_dir.join(format!("{name}.json")), &derived);
            let log = dir.path().join(format!("prism-{name}.log"));
            let prism = Prism::spawn(&bin, &derived, log, *dynamic);
            let prefix = match *name {
                "properties" => "/crm/v3/properties/".to_string(),
                object => format!("/crm/v3/objects/{object}/"),
            };
            upstreams.push((prefix, prism.base_url.clone()));
            prisms.push(prism);
        }
        for p in &prisms {
            p.wait_ready(45).await;
        }
        let router = Router {
            http: reqwest::Client::new(),
            upstreams: Arc::new(upstreams),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let seen = router.seen.clone();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind router");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().fallback(route).with_state(router);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Mocks {
            base,
            seen,
            server,
            _prisms: prisms,
            _dir: dir,
        }
    }
}

impl Drop for Mocks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_crm_connector_sends_passes_prism_validation_against_hubspots_spec() {
    let started = Instant::now();
    let mocks = Mocks::start(&[("contacts", false), ("companies", false), ("properties", true)]).await;
    let (base, seen) = (mocks.base.clone(), mocks.seen.clone());
    eprintln!("prism: 3 mocks ready in {:.1}s", started.elapsed().as_secs_f64());

    // Validation is on: a body HubSpot's spec refuses is refused with its violation.
    let bad = reqwest::Client::new()
        .patch(format!("{base}/crm/v3/objects/contacts/512"))
        .bearer_auth(TOKEN)
        .json(&json!({"props": {"email": "x@example.test"}}))
        .send()
        .await
        .expect("router answers");
    assert_eq!(bad.status().as_u16(), 422, "Prism refuses a body without `properties`");
    let control = seen.lock().expect("log").pop().expect("control request seen");
    assert!(
        control.violations.as_deref().is_some_and(|v| v.contains("properties")),
        "Prism names the violation: {control:?}"
    );

    let crm = HubspotClient::new(&base, TOKEN.to_string(), 10_000).expect("client");
    let props: Vec<String> = ["email", "lifecyclestage", "billing_customer_id", "driftless_sync_state"]
        .map(String::from)
        .to_vec();
    let mut fields = Fields::new();
    fields.insert("billing_customer_id".into(), Some("cus_Prism123".into()));
    fields.insert("lifecyclestage".into(), Some("customer".into()));
    fields.insert("driftless_sync_state".into(), None);
    let mut failures: Vec<String> = Vec::new();
    for kind in [CrmObject::Contact, CrmObject::Company] {
        match crm.get_record(kind, "512", &props).await {
            Ok(Some(r)) => assert!(!r.id.is_empty(), "a {} with an id", kind.as_str()),
            other => failures.push(format!("get_record {}: {other:?}", kind.as_str())),
        }
        if let Err(e) = crm.update_record(kind, "512", &fields).await {
            failures.push(format!("update_record {}: {e}", kind.as_str()));
        }
        // The reconciler's and backfill's list: a first page, then one `after` a cursor.
        for after in [None, Some("512")] {
            match crm.list_records(kind, &props, after).await {
                Ok(page) => assert!(!page.records.is_empty(), "the spec's example lists a record"),
                Err(e) => failures.push(format!("list_records {} after {after:?}: {e}", kind.as_str())),
            }
        }
    }
    let defs: Vec<PropertyDef> = [CrmObject::Contact, CrmObject::Company]
        .map(|object| PropertyDef {
            object,
            name: "billing_customer_id".into(),
            label: "Billing customer ID".into(),
        })
        .to_vec();
    match crm.ensure_properties(&defs).await {
        Ok(created) => assert_eq!(created.len(), 2, "both properties created: {created:?}"),
        Err(e) => failures.push(format!("ensure_properties: {e}")),
    }

    let seen = seen.lock().expect("log").clone();
    let refused: Vec<String> = seen
        .iter()
        .filter(|s| !(200..300).contains(&s.prism_status) || s.violations.is_some())
        .map(|s| {
            format!(
                "{} {} {}\n  -> Prism {} violations {}\n  {}",
                s.method,
                s.path,
                s.body,
                s.prism_status,
                s.violations.as_deref().unwrap_or("(none)"),
                s.prism_body
            )
        })
        .collect();
    assert!(
        failures.is_empty() && refused.is_empty(),
        "Prism refused requests the connector sent:\n{}\nconnector errors: {failures:#?}",
        refused.join("\n")
    );
    let kinds: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path.split('?').next().unwrap_or_default()))
        .collect();
    for expected in [
        "GET /crm/v3/objects/contacts",
        "GET /crm/v3/objects/companies",
        "GET /crm/v3/objects/contacts/512",
        "PATCH /crm/v3/objects/contacts/512",
        "GET /crm/v3/objects/companies/512",
        "PATCH /crm/v3/objects/companies/512",
        "GET /crm/v3/properties/contacts/billing_customer_id",
        "POST /crm/v3/properties/contacts",
        "GET /crm/v3/properties/companies/billing_customer_id",
        "POST /crm/v3/properties/companies",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "request kind not exercised: {expected}; seen {kinds:#?}"
        );
    }
    let lists: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "GET" && s.path.starts_with("/crm/v3/objects/contacts?"))
        .map(|s| s.path.as_str())
        .collect();
    assert!(
        lists.len() == 2
            && lists
                .iter()
                .all(|p| p.contains("limit=100") && p.contains("properties="))
            && lists.iter().filter(|p| p.contains("after=512")).count() == 1,
        "the list's first page and its `after` page reached Prism: {lists:?}"
    );
    eprintln!(
        "prism: {} connector requests accepted by Prism in {:.1}s",
        seen.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The pollers' request: `POST /crm/v3/objects/{contacts|companies}/search` with the
/// last-modified window (GTE/LTE epoch ms), ascending sort, the mapped properties, `limit`
/// and `after` — `PublicObjectSearchRequest` requires all of `after`, `filterGroups`, `limit`,
/// `properties` and `sorts` (string items), so the connector sends every one (`after = "0"`
/// on a first page). Prism validates the body; the search operation has no example answer
/// (a static mock sends a body without `total`), so these mocks run `--dynamic` and the
/// connector must read the page generated from the response schema (`total`, `results`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pollers_search_request_passes_prism_validation_against_hubspots_spec() {
    use driftless::connectors::ModifiedSearch;
    let mocks = Mocks::start(&[("contacts", true), ("companies", true)]).await;
    let (base, seen) = (mocks.base.clone(), mocks.seen.clone());

    // Validation is on for search too: a body without the required fields is refused.
    let bad = reqwest::Client::new()
        .post(format!("{base}/crm/v3/objects/contacts/search"))
        .bearer_auth(TOKEN)
        .json(&json!({"limit": 10}))
        .send()
        .await
        .expect("router answers");
    assert_eq!(bad.status().as_u16(), 422, "Prism refuses an incomplete search body");
    seen.lock().expect("log").clear();

    let crm = HubspotClient::new(&base, TOKEN.to_string(), 10_000).expect("client");
    let props: Vec<String> = ["email", "lifecyclestage", "billing_customer_id"]
        .map(String::from)
        .to_vec();
    let mut failures = Vec::new();
    for kind in [CrmObject::Contact, CrmObject::Company] {
        for after in [None, Some("100")] {
            let q = ModifiedSearch {
                kind,
                from_ms: 1_764_000_000_000,
                to_ms: 1_764_000_600_000,
                properties: &props,
                after,
                limit: 100,
            };
            match crm.search_modified(q).await {
                Ok(page) => assert!(page.results.iter().all(|r| !r.id.is_empty()), "records with ids"),
                Err(e) => failures.push(format!("search {} after {after:?}: {e}", kind.as_str())),
            }
        }
    }
    let seen = seen.lock().expect("log").clone();
    let refused: Vec<String> = seen
        .iter()
        .filter(|s| !(200..300).contains(&s.prism_status) || s.violations.is_some())
        .map(|s| {
            format!(
                "{} {} {}\n  -> Prism {} {:?}",
                s.method, s.path, s.body, s.prism_status, s.violations
            )
        })
        .collect();
    assert!(
        failures.is_empty() && refused.is_empty() && seen.len() == 4,
        "Prism refused the pollers' search:\n{}\nconnector errors: {failures:#?}",
        refused.join("\n")
    );
    let body: Value = serde_json::from_str(&seen[0].body).expect("JSON body");
    for field in ["after", "filterGroups", "limit", "properties", "sorts"] {
        assert!(body.get(field).is_some(), "{field} sent: {body}");
    }
    assert_eq!(body["sorts"], json!(["lastmodifieddate"]));
    let company: Value = serde_json::from_str(&seen[2].body).expect("JSON body");
    assert_eq!(
        company["filterGroups"][0]["filters"][0]["propertyName"],
        "hs_lastmodifieddate"
    );
    eprintln!("prism: {} search requests accepted by Prism", seen.len());
}

/// The batch requests (`batch/read`, `batch/update`, `batch/upsert`, contacts and companies)
/// against the contacts and companies Prisms: each must pass validation, and each answer must
/// read as a batch answer (no whole-call failure). Control requests show the spec is strict
/// about what the connector sends: `batch/read` without `propertiesWithHistory`, and a
/// `batch/update` input without `properties`, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_request_the_crm_connector_sends_passes_prism_validation() {
    use driftless::connectors::{BatchUpdate, BatchUpsert};

    let started = Instant::now();
    let mocks = Mocks::start(&[("contacts", false), ("companies", false)]).await;
    let (base, seen) = (mocks.base.clone(), mocks.seen.clone());

    // The spec's strictness, on requests the connector does not send.
    let raw = reqwest::Client::new();
    for (path, body, missing) in [
        (
            "/crm/v3/objects/contacts/batch/read",
            json!({"inputs": [{"id": "1"}], "properties": ["email"]}),
            "propertiesWithHistory",
        ),
        (
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [{"id": "1"}]}),
            "properties",
        ),
    ] {
        let r = raw
            .post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("router answers");
        assert_eq!(r.status().as_u16(), 422, "Prism refuses {path} without `{missing}`");
        let control = seen.lock().expect("log").pop().expect("control request seen");
        assert!(
            control.violations.as_deref().is_some_and(|v| v.contains(missing)),
            "Prism names `{missing}`: {control:?}"
        );
    }

    let crm = HubspotClient::new(&base, TOKEN.to_string(), 10_000).expect("client");
    let props: Vec<String> = ["email", "lifecyclestage", "billing_customer_id"]
        .map(String::from)
        .to_vec();
    let ids: Vec<String> = ["512", "513"].map(String::from).to_vec();
    let mut fields = Fields::new();
    fields.insert("billing_customer_id".into(), Some("cus_Prism123".into()));
    fields.insert("driftless_sync_state".into(), None);
    let updates: Vec<BatchUpdate> = ids
        .iter()
        .map(|id| BatchUpdate {
            id: id.clone(),
            fields: fields.clone(),
        })
        .collect();
    let mut failures: Vec<String> = Vec::new();
    for kind in [CrmObject::Contact, CrmObject::Company] {
        let (id_property, values) = match kind {
            CrmObject::Contact => ("email", ["a@example.test", "b@example.test"]),
            CrmObject::Company => ("domain", ["a.example.test", "b.example.test"]),
        };
        let upserts: Vec<BatchUpsert> = values
            .iter()
            .map(|v| BatchUpsert {
                id: v.to_string(),
                id_property: id_property.into(),
                fields: fields.clone(),
            })
            .collect();
        let whole = |what: &str, errs: Vec<String>| {
            errs.into_iter()
                .map(|e| format!("{what} {}: {e}", kind.as_str()))
                .collect::<Vec<_>>()
        };
        let read = crm.batch_read(kind, &ids, &props).await;
        failures.extend(whole(
            "batch_read",
            read.iter()
                .filter_map(|r| r.as_ref().err().filter(|e| e.whole_call).map(|e| e.to_string()))
                .collect(),
        ));
        let update = crm.batch_update(kind, &updates).await;
        failures.extend(whole(
            "batch_update",
            update
                .iter()
                .filter_map(|r| r.as_ref().err().filter(|e| e.whole_call).map(|e| e.to_string()))
                .collect(),
        ));
        let upsert = crm.batch_upsert(kind, &upserts).await;
        failures.extend(whole(
            "batch_upsert",
            upsert
                .iter()
                .filter_map(|r| r.as_ref().err().filter(|e| e.whole_call).map(|e| e.to_string()))
                .collect(),
        ));
        assert_eq!(
            (read.len(), update.len(), upsert.len()),
            (2, 2, 2),
            "one outcome per input"
        );
        let ok = |n: usize| format!("{n}/2 matched");
        eprintln!(
            "prism: {} batch answers: read {}, update {}, upsert {}",
            kind.as_str(),
            ok(read.iter().filter(|r| matches!(r, Ok(Some(_)))).count()),
            ok(update.iter().filter(|r| r.is_ok()).count()),
            ok(upsert.iter().filter(|r| r.is_ok()).count())
        );
    }

    let seen = seen.lock().expect("log").clone();
    let refused: Vec<String> = seen
        .iter()
        .filter(|s| !(200..300).contains(&s.prism_status) || s.violations.is_some())
        .map(|s| {
            format!(
                "{} {} {}\n  -> Prism {} violations {}\n  {}",
                s.method,
                s.path,
                s.body,
                s.prism_status,
                s.violations.as_deref().unwrap_or("(none)"),
                s.prism_body
            )
        })
        .collect();
    assert!(
        failures.is_empty() && refused.is_empty(),
        "Prism refused batch requests the connector sent:\n{}\nconnector errors: {failures:#?}",
        refused.join("\n")
    );
    let kinds: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path.split('?').next().unwrap_or_default()))
        .collect();
    for object in ["contacts", "companies"] {
        for op in ["read", "update", "upsert"] {
            let expected = format!("POST /crm/v3/objects/{object}/batch/{op}");
            assert!(
                kinds.contains(&expected),
                "request kind not exercised: {expected}; seen {kinds:#?}"
            );
        }
    }
    eprintln!(
        "prism: {} batch requests accepted by Prism in {:.1}s",
        seen.len(),
        started.elapsed().as_secs_f64()
    );
}
