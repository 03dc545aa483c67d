//! HTTP-level tests of the simulators, over real sockets with reqwest. Signature checks are
//! written here independently of the simulators' signing code.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Client;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{run_billing_activity, run_plan_requests, BillingActivity, FaultProfile, SimConfig, Simulators};

#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
}

impl Hook {
    fn got(&self) -> Vec<(HeaderMap, String)> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

async fn hook_handler(State(h): State<Hook>, headers: HeaderMap, body: String) -> StatusCode {
    if h.attempts.fetch_add(1, Ordering::SeqCst) < h.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Ok(mut g) = h.got.lock() {
        g.push((headers, body));
    }
    StatusCode::OK
}

/// A webhook receiver on loopback; answers 503 to the first `fail_first` deliveries.
async fn receiver(fail_first: usize) -> (String, Hook) {
    let hook = Hook {
        fail_first,
        ..Hook::default()
    };
    let app = axum::Router::new().fallback(hook_handler).with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks/in?x=1", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hook)
}

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

async fn start(faults: FaultProfile) -> Simulators {
    Simulators::start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
    .expect("start sims")
}

fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("key");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

struct Stripe {
    http: Client,
    base: String,
}

impl Stripe {
    fn new(sims: &Simulators) -> Stripe {
        Stripe {
            http: Client::new(),
            base: sims.billing.base_url(),
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], key: Option<&str>) -> (u16, HeaderMap, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth("sk_test_sim")
            .form(form);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        let resp = r.send().await.expect("send");
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        (status, headers, resp.json().await.expect("json"))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth("sk_test_sim")
            .send()
            .await
            .expect("send");
        (resp.status().as_u16(), resp.json().await.expect("json"))
    }
}

#[tokio::test]
async fn stripe_customers_crud_list_search() {
    let sims = start(FaultProfile::none()).await;
    let s = Stripe::new(&sims);
    let mut ids = Vec::new();
    for i in 0..3 {
        let email = format!("c{i}@example.test");
        let (st, _, c) = s
            .post(
                "/v1/customers",
                &[
                    ("email", &email),
                    ("metadata[driftless_crm_contact_id]", &i.to_string()),
                ],
                None,
            )
            .await;
        assert_eq!(st, 200, "{c}");
        assert!(c["id"].as_str().is_some_and(|id| id.starts_with("cus_")));
        assert_eq!(c["object"], "customer");
        assert_eq!(c["livemode"], false);
        ids.push(c["id"].as_str().unwrap_or_default().to_string());
    }
    let (st, c) = s.get(&format!("/v1/customers/{}", ids[1])).await;
    assert_eq!((st, c["email"].as_str()), (200, Some("c1@example.test")));

    // Newest first, cursor pagination.
    let (_, page) = s.get("/v1/customers?limit=2").await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["id"], ids[2].as_str());
    let last = page["data"][1]["id"].as_str().unwrap_or_default().to_string();
    let (_, page2) = s.get(&format!("/v1/customers?limit=2&starting_after={last}")).await;
    assert_eq!(page2["has_more"], false);
    assert_eq!(page2["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["data"][0]["id"], ids[0].as_str());
    let (_, by_email) = s.get("/v1/customers?email=c2@example.test").await;
    assert_eq!(by_email["data"][0]["id"], ids[2].as_str());
    let (st, bad) = s.get("/v1/customers?limit=101").await;
    assert_eq!((st, bad["error"]["param"].as_str()), (400, Some("limit")));

    // Search.
    let q = "metadata['driftless_crm_contact_id']:'1' AND email:'c1@example.test'";
    let (st, found) = s.get(&format!("/v1/customers/search?query={}", urlencode(q))).await;
    assert_eq!(st, 200, "{found}");
    assert_eq!(found["object"], "search_result");
    assert_eq!(found["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(found["data"][0]["id"], ids[1].as_str());

    // Update: metadata delete with empty value, previous_attributes on the event.
    let (st, _, up) = s
        .post(
            &format!("/v1/customers/{}", ids[0]),
            &[
                ("email", "new@example.test"),
                ("metadata[driftless_crm_contact_id]", ""),
            ],
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(up["metadata"], json!({}));
    let (_, events) = s.get("/v1/events?limit=1&type=customer.updated").await;
    let ev = &events["data"][0];
    assert_eq!(ev["type"], "customer.updated");
    assert_eq!(ev["data"]["previous_attributes"]["email"], "c0@example.test");
    assert_eq!(
        ev["data"]["previous_attributes"]["metadata"]["driftless_crm_contact_id"],
        "0"
    );
    assert!(ev["request"]["id"].as_str().is_some_and(|r| r.starts_with("req_")));
    let (st, same) = s
        .get(&format!("/v1/events/{}", ev["id"].as_str().unwrap_or_default()))
        .await;
    assert_eq!((st, &same["id"]), (200, &ev["id"]));

    // A no-op update emits nothing.
    let n_events = sims.billing.events().len();
    s.post(
        &format!("/v1/customers/{}", ids[0]),
        &[("email", "new@example.test")],
        None,
    )
    .await;
    assert_eq!(sims.billing.events().len(), n_events);

    // Errors.
    let (st, _, e) = s.post("/v1/customers", &[("emial", "x@y.z")], None).await;
    assert_eq!(
        (st, e["error"]["type"].as_str(), e["error"]["param"].as_str()),
        (400, Some("invalid_request_error"), Some("emial"))
    );
    let (st, _, e) = s.post("/v1/customers", &[("email[a]", "x")], None).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("email")));
    let (st, e) = s.get("/v1/customers/cus_nope").await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("resource_missing")));
    let resp = s
        .http
        .get(format!("{}/v1/customers", s.base))
        .bearer_auth("sk_wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let log = sims.billing.request_log();
    assert!(log
        .iter()
        .any(|r| r.correlation_id.is_none() && r.applied && r.mutating));
    assert!(log.iter().any(|r| r.status == 401 && !r.applied));
    sims.shutdown().await;
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("q", s)])
        .unwrap_or_default()
        .trim_start_matches("q=")
        .to_string()
}

#[tokio::test]
async fn stripe_idempotency_replay_mismatch_and_expiry() {
    let sims = start(FaultProfile::none()).await;
    let s = Stripe::new(&sims);
    let form = [
        ("email", "i@example.test"),
        ("metadata[driftless_correlation_id]", "corr-1"),
    ];
    let (st, h1, c1) = s.post("/v1/customers", &form, Some("key-1")).await;
    assert_eq!(st, 200);
    assert!(h1.get("idempotent-replayed").is_none());
    let (st, h2, c2) = s.post("/v1/customers", &form, Some("key-1")).await;
    assert_eq!(st, 200);
    assert_eq!(
        h2.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(c1, c2);
    assert_eq!(sims.billing.customers().len(), 1);
    assert_eq!(sims.billing.events().len(), 1);

    let (st, _, e) = s
        .post("/v1/customers", &[("email", "other@example.test")], Some("key-1"))
        .await;
    assert_eq!((st, e["error"]["type"].as_str()), (400, Some("idempotency_error")));

    sims.billing.advance_clock(25 * 3600);
    let (st, h3, c3) = s
        .post("/v1/customers", &[("email", "other@example.test")], Some("key-1"))
        .await;
    assert_eq!(st, 200);
    assert!(h3.get("idempotent-replayed").is_none());
    assert_ne!(c3["id"], c1["id"]);
    assert_eq!(sims.billing.customers().len(), 2);

    let log = sims.billing.request_log();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].correlation_id.as_deref(), Some("corr-1"));
    assert!(log[1].replayed && !log[1].applied);
    assert_eq!(log[1].idempotency_key.as_deref(), Some("key-1"));
    assert!(!log[2].applied && log[2].status == 400);
    assert!(log[3].applied);
    let ev = &sims.billing.events()[0];
    assert_eq!(ev["request"]["idempotency_key"], "key-1");
    sims.shutdown().await;
}

#[tokio::test]
async fn stripe_webhooks_signed_retried_and_dashboard_edits() {
    let sims = start(FaultProfile::none()).await;
    let (url, hook) = receiver(2).await;
    let s = Stripe::new(&sims);
    let (st, _, ep) = s
        .post(
            "/v1/webhook_endpoints",
            &[("url", &url), ("enabled_events[]", "*")],
            None,
        )
        .await;
    assert_eq!(st, 200, "{ep}");
    let secret = ep["secret"].as_str().unwrap_or_default().to_string();
    assert!(secret.starts_with("whsec_"));
    let (_, _, c) = s
        .post(
            "/v1/customers",
            &[("email", "w@example.test"), ("metadata[driftless_crm_contact_id]", "7")],
            None,
        )
        .await;
    let id = c["id"].as_str().unwrap_or_default().to_string();
    assert!(wait_for(|| hook.got().len() == 1).await, "delivered after retries");
    assert!(hook.attempts.load(Ordering::SeqCst) >= 3);
    sims.billing
        .edit_customer(&id, Some("finance@example.test"), &[("note", "vip")])
        .expect("edit");
    assert!(sims.billing.edit_customer("cus_missing", None, &[]).is_err());
    assert!(wait_for(|| hook.got().len() == 2).await);
    assert!(wait_for(|| sims.pending_webhooks() == 0).await);

    for (headers, body) in hook.got() {
        // Independent verification of `Stripe-Signature: t=…,v1=…`.
        let sig = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (mut t, mut v1) = ("", "");
        for part in sig.split(',') {
            match part.split_once('=') {
                Some(("t", x)) => t = x,
                Some(("v1", x)) => v1 = x,
                _ => {}
            }
        }
        let expected = hex::encode(hmac256(secret.as_bytes(), format!("{t}.{body}").as_bytes()));
        assert_eq!(v1, expected);
        let now = chrono::Utc::now().timestamp();
        assert!((now - t.parse::<i64>().unwrap_or(0)).abs() < 60);
    }
    let events: Vec<Value> = hook
        .got()
        .iter()
        .map(|(_, b)| serde_json::from_str(b).expect("json"))
        .collect();
    assert_eq!(events[0]["type"], "customer.created");
    assert_eq!(events[1]["type"], "customer.updated");
    assert_eq!(events[1]["request"]["id"], Value::Null);
    assert_eq!(events[1]["data"]["object"]["metadata"]["note"], "vip");
    assert_eq!(
        events[1]["data"]["previous_attributes"]["metadata"]["note"],
        Value::Null
    );
    assert_eq!(events[1]["data"]["previous_attributes"]["email"], "w@example.test");

    // register_webhook is the same thing through the handle.
    let (url2, hook2) = receiver(0).await;
    let secret2 = sims.billing.register_webhook(&url2);
    assert!(secret2.starts_with("whsec_") && secret2 != secret);
    sims.billing.suppress_webhooks(true);
    sims.billing
        .edit_customer(&id, Some("quiet@example.test"), &[])
        .expect("edit");
    sims.billing.suppress_webhooks(false);
    sims.billing
        .edit_customer(&id, Some("loud@example.test"), &[])
        .expect("edit");
    assert!(wait_for(|| hook2.got().len() == 1).await);
    sims.shutdown().await;
}

struct Hub {
    http: Client,
    base: String,
}

impl Hub {
    fn new(sims: &Simulators) -> Hub {
        Hub {
            http: Client::new(),
            base: sims.crm.base_url(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, HeaderMap, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth("pat-sim");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let (st, h) = (resp.status().as_u16(), resp.headers().clone());
        (st, h, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, b) = self.call(reqwest::Method::POST, path, Some(body)).await;
        (s, b)
    }
}

#[tokio::test]
async fn hubspot_contacts_properties_search_batch() {
    let sims = start(FaultProfile::none()).await;
    let h = Hub::new(&sims);
    let c = "/crm/v3/objects/contacts";

    // Undefined custom property → 400 until created through the properties API.
    let (st, e) = h
        .post(
            c,
            json!({"properties": {"email": "a@example.test", "billing_customer_id": "cus_1"}}),
        )
        .await;
    assert_eq!((st, e["category"].as_str()), (400, Some("VALIDATION_ERROR")));
    assert_eq!(e["status"], "error");
    assert!(e["correlationId"].is_string());
    assert_eq!(e["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    for name in ["billing_customer_id", "driftless_correlation_id"] {
        let def = json!({"name": name, "label": name, "type": "string", "fieldType": "text", "groupName": "contactinformation"});
        assert_eq!(h.post("/crm/v3/properties/contacts", def.clone()).await.0, 201);
        assert_eq!(h.post("/crm/v3/properties/contacts", def).await.0, 409);
    }
    let (st, _, p) = h
        .call(
            reqwest::Method::GET,
            "/crm/v3/properties/contacts/billing_customer_id",
            None,
        )
        .await;
    assert_eq!((st, p["type"].as_str()), (200, Some("string")));

    let (st, a) = h
        .post(c, json!({"properties": {"email": "A@example.test", "firstname": "Ada", "billing_customer_id": "cus_1", "driftless_correlation_id": "corr-9"}, "associations": []}))
        .await;
    assert_eq!(st, 201, "{a}");
    let id = a["id"].as_str().unwrap_or_default().to_string();
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(a["properties"]["email"], "a@example.test");
    assert_eq!(a["properties"]["hs_object_id"], id.as_str());
    assert_eq!(a["archived"], false);
    assert!(sims
        .crm
        .request_log()
        .iter()
        .any(|r| r.correlation_id.as_deref() == Some("corr-9") && r.applied));

    // Duplicate email → 409.
    assert_eq!(
        h.post(c, json!({"properties": {"email": "a@example.test"}})).await.0,
        409
    );

    // Default vs requested properties; idProperty=email.
    let (_, _, got) = h.call(reqwest::Method::GET, &format!("{c}/{id}"), None).await;
    assert!(got["properties"].get("billing_customer_id").is_none());
    assert_eq!(got["properties"]["firstname"], "Ada");
    let (_, _, got) = h
        .call(
            reqwest::Method::GET,
            &format!("{c}/a@example.test?idProperty=email&properties=billing_customer_id,lifecyclestage,no_such"),
            None,
        )
        .await;
    assert_eq!(got["properties"]["billing_customer_id"], "cus_1");
    assert_eq!(got["properties"]["lifecyclestage"], Value::Null);
    assert!(got["properties"].get("no_such").is_none());
    assert!(got["properties"].get("firstname").is_none());
    assert_eq!(got["id"], id.as_str());

    // PATCH; invalid enumeration option → 400.
    let (st, _, up) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{c}/{id}"),
            Some(json!({"properties": {"lifecyclestage": "lead"}})),
        )
        .await;
    assert_eq!((st, up["properties"]["lifecyclestage"].as_str()), (200, Some("lead")));
    let (st, _, _) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{c}/{id}"),
            Some(json!({"properties": {"lifecyclestage": "boss"}})),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _, _) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{c}/999999"),
            Some(json!({"properties": {"firstname": "x"}})),
        )
        .await;
    assert_eq!(st, 404);

    // Batch upsert by email: one update, one create.
    let (st, up) = h
        .post(
            &format!("{c}/batch/upsert"),
            json!({"inputs": [
                {"idProperty": "email", "id": "a@example.test", "properties": {"lastname": "Lovelace"}},
                {"idProperty": "email", "id": "b@example.test", "properties": {"firstname": "Bob"}},
            ]}),
        )
        .await;
    assert_eq!(st, 200, "{up}");
    assert_eq!(up["status"], "COMPLETE");
    let results = up["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2);
    assert!(results.iter().any(|r| r["new"] == false && r["id"] == id.as_str()));
    assert!(results
        .iter()
        .any(|r| r["new"] == true && r["properties"]["email"] == "b@example.test"));
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": i.to_string(), "properties": {}}))
        .collect();
    assert_eq!(
        h.post(&format!("{c}/batch/update"), json!({"inputs": too_many}))
            .await
            .0,
        400
    );

    // Batch read with a missing id → 207.
    let (st, rd) = h
        .post(
            &format!("{c}/batch/read"),
            json!({"inputs": [{"id": id}, {"id": "424242"}], "properties": ["lastname"]}),
        )
        .await;
    assert_eq!(st, 207);
    assert_eq!(rd["results"][0]["properties"]["lastname"], "Lovelace");
    assert_eq!(rd["errors"][0]["context"]["ids"][0], "424242");

    // Search.
    let (st, found) = h
        .post(&format!("{c}/search"), json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "B@example.test"}]}], "properties": ["firstname"], "limit": 10, "sorts": [], "after": "0"}))
        .await;
    assert_eq!(st, 200, "{found}");
    assert_eq!(found["total"], 1);
    assert_eq!(found["results"][0]["properties"]["firstname"], "Bob");
    let (_, all) = h
        .post(&format!("{c}/search"), json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}], "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}], "limit": 1}))
        .await;
    assert_eq!(all["total"], 2);
    assert_eq!(all["paging"]["next"]["after"], "1");
    assert_eq!(h.post(&format!("{c}/search"), json!({"limit": 201})).await.0, 400);
    assert_eq!(h.post(&format!("{c}/search"), json!({"after": "10000"})).await.0, 400);

    // List paging.
    let (_, _, l1) = h.call(reqwest::Method::GET, &format!("{c}?limit=1"), None).await;
    let after = l1["paging"]["next"]["after"].as_str().unwrap_or_default().to_string();
    let (_, _, l2) = h
        .call(reqwest::Method::GET, &format!("{c}?limit=1&after={after}"), None)
        .await;
    assert_ne!(l1["results"][0]["id"], l2["results"][0]["id"]);
    assert!(l2.get("paging").is_none());

    // Auth and admin surface.
    let resp = h.http.get(format!("{}{c}", h.base)).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let state: Value = h
        .http
        .get(format!("{}/_sim/state", h.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(state["contacts"].as_array().map(Vec::len), Some(2));
    let reqs: Value = h
        .http
        .get(format!("{}/_sim/requests", h.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(reqs.as_array().map(Vec::len), Some(sims.crm.request_log().len()));
    sims.shutdown().await;
}

#[tokio::test]
async fn hubspot_webhooks_v3_signature_and_ui_edits() {
    let sims = start(FaultProfile::none()).await;
    let (url, hook) = receiver(1).await;
    let resp = Client::new()
        .post(format!("{}/_sim/webhook_target", sims.crm.base_url()))
        .json(&json!({ "url": url }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let id = sims
        .crm
        .create_contact(&[("email", "ui@example.test"), ("firstname", "Uma"), ("nope", "x")]);
    sims.crm
        .edit_contact(&id, &[("lifecyclestage", "lead"), ("firstname", "Uma")])
        .expect("edit");
    assert!(sims.crm.edit_contact("1", &[("firstname", "x")]).is_err());
    assert!(sims.crm.edit_contact(&id, &[("undefined_prop", "x")]).is_err());
    // creation + 2 initial property values + 1 change (firstname unchanged → no event).
    let events = || -> Vec<Value> {
        hook.got()
            .iter()
            .flat_map(|(_, b)| serde_json::from_str::<Vec<Value>>(b).unwrap_or_default())
            .collect()
    };
    assert!(wait_for(|| events().len() == 4).await, "got {:?}", events());
    let secret = sims.crm.webhook_secret().to_string();
    for (headers, body) in hook.got() {
        let get = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let ts = get("x-hubspot-request-timestamp");
        let expected = base64::engine::general_purpose::STANDARD
            .encode(hmac256(secret.as_bytes(), format!("POST{url}{body}{ts}").as_bytes()));
        assert_eq!(get("x-hubspot-signature-v3"), expected);
        assert_eq!(get("x-hubspot-signature-version"), "v3");
        assert!((chrono::Utc::now().timestamp_millis() - ts.parse::<i64>().unwrap_or(0)).abs() < 60_000);
    }
    let evs = events();
    assert!(evs
        .iter()
        .all(|e| e["changeSource"] == "CRM_UI" && e["objectId"].as_u64() == id.parse().ok()));
    let creation: Vec<&Value> = evs
        .iter()
        .filter(|e| e["subscriptionType"] == "contact.creation")
        .collect();
    assert_eq!(creation.len(), 1);
    assert_eq!(creation[0]["attemptNumber"], 1, "the first POST failed once");
    assert!(evs
        .iter()
        .any(|e| e["propertyName"] == "lifecyclestage" && e["propertyValue"] == "lead"));
    assert!(!evs.iter().any(|e| e["propertyName"] == "nope"));

    // API writes are INTEGRATION changes.
    let h = Hub::new(&sims);
    let (st, _, _) = h
        .call(
            reqwest::Method::PATCH,
            &format!("/crm/v3/objects/contacts/{id}"),
            Some(json!({"properties": {"phone": "555"}})),
        )
        .await;
    assert_eq!(st, 200);
    assert!(wait_for(|| events().len() == 5).await);
    assert_eq!(events()[4]["changeSource"], "INTEGRATION");
    assert_eq!(sims.crm.contacts()[0]["properties"]["phone"], "555");
    sims.shutdown().await;
}

#[tokio::test]
async fn timeout_after_commit_applies_the_write() {
    let sims = start(FaultProfile::parse("timeout=1,hang_ms=1500").expect("profile")).await;
    let client = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let r = client
        .post(format!("{}/v1/customers", sims.billing.base_url()))
        .bearer_auth("sk_test_sim")
        .header("Idempotency-Key", "k-timeout")
        .form(&[("email", "t@example.test")])
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    assert_eq!(sims.billing.customers().len(), 1);
    let log = sims.billing.request_log();
    assert_eq!(log[0].fault.as_deref(), Some("timeout_after_commit"));
    assert!(log[0].applied && log[0].mutating);

    // Reads are never withheld; a retry with the same key replays.
    sims.set_faults(FaultProfile::none());
    let s = Stripe::new(&sims);
    let (st, h, _) = s
        .post("/v1/customers", &[("email", "t@example.test")], Some("k-timeout"))
        .await;
    assert_eq!(st, 200);
    assert!(h.get("idempotent-replayed").is_some());
    assert_eq!(sims.billing.customers().len(), 1);

    sims.crm
        .set_faults(FaultProfile::parse("timeout=1,hang_ms=1500").expect("profile"));
    let r = client
        .post(format!("{}/crm/v3/objects/contacts", sims.crm.base_url()))
        .bearer_auth("pat-sim")
        .json(&json!({"properties": {"email": "t@example.test"}}))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(sims.crm.contacts().len(), 1);
    let r = client
        .post(format!("{}/crm/v3/objects/contacts/search", sims.crm.base_url()))
        .bearer_auth("pat-sim")
        .json(&json!({}))
        .send()
        .await
        .expect("search is not mutating");
    assert_eq!(r.status().as_u16(), 200);
    sims.shutdown().await;
}

#[tokio::test]
async fn duplicate_webhooks_deliver_each_event_twice() {
    let sims = start(FaultProfile::parse("dup=1,delay_ms=100").expect("profile")).await;
    let (url, hook) = receiver(0).await;
    sims.billing.register_webhook(&url);
    let s = Stripe::new(&sims);
    for i in 0..3 {
        s.post("/v1/customers", &[("email", &format!("d{i}@example.test"))], None)
            .await;
    }
    assert!(wait_for(|| hook.got().len() == 6).await);
    assert!(wait_for(|| sims.pending_webhooks() == 0).await);
    let mut ids: Vec<String> = hook
        .got()
        .iter()
        .filter_map(|(_, b)| {
            serde_json::from_str::<Value>(b).ok()?["id"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 6);
    assert!(ids.chunks(2).all(|p| p[0] == p[1]));
    sims.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_5xx_bursts_apply_nothing() {
    let sims = start(FaultProfile::parse("429=1").expect("profile")).await;
    let s = Stripe::new(&sims);
    let (st, h, e) = s.post("/v1/customers", &[("email", "r@example.test")], None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (429, Some("rate_limit")));
    assert_eq!(h.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let hub = Hub::new(&sims);
    let (st, hh, e) = hub.call(reqwest::Method::GET, "/crm/v3/objects/contacts", None).await;
    assert_eq!((st, e["policyName"].as_str()), (429, Some("SECONDLY")));
    assert!(hh.get("retry-after").is_some());
    assert!(sims.billing.customers().is_empty());
    assert_eq!(sims.billing.request_log()[0].fault.as_deref(), Some("rate_limit"));

    // Admin routes are never faulted; a bad profile is a 400.
    let admin = Client::new();
    let r = admin
        .post(format!("{}/_sim/faults", sims.billing.base_url()))
        .body("5xx=1,burst=2")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let r = admin
        .post(format!("{}/_sim/faults", sims.billing.base_url()))
        .body("bogus=1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let (st, h, _) = s.post("/v1/customers", &[("email", "r@example.test")], None).await;
    assert!(st == 500 || st == 503);
    assert_eq!(h.get("stripe-should-retry").and_then(|v| v.to_str().ok()), Some("true"));
    assert!(sims.billing.customers().is_empty());
    let r = admin
        .post(format!("{}/_sim/clock/advance", sims.billing.base_url()))
        .json(&json!({"secs": 60}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    sims.shutdown().await;
}

#[tokio::test]
async fn start_rejects_non_loopback() {
    let cfg = SimConfig {
        crm_addr: "0.0.0.0:0".parse().expect("addr"),
        ..SimConfig::default()
    };
    assert!(Simulators::start(cfg).await.is_err());
}

#[tokio::test]
async fn storms_redeliver_recent_events() {
    let sims = start(FaultProfile::none()).await;
    let (url, hook) = receiver(0).await;
    sims.crm.set_webhook_target(&url);
    sims.crm.create_contact(&[("email", "s@example.test")]);
    let count = || -> usize {
        hook.got()
            .iter()
            .map(|(_, b)| serde_json::from_str::<Vec<Value>>(b).map(|v| v.len()).unwrap_or(0))
            .sum()
    };
    assert!(wait_for(|| count() == 2).await);
    sims.crm.storm(10);
    assert!(wait_for(|| count() == 4).await);
    assert!(wait_for(|| sims.pending_webhooks() == 0).await);
    sims.shutdown().await;
}

// --- Subscriptions, invoices, credit notes, prices --------------------------------------------

impl Stripe {
    async fn delete(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth("sk_test_sim")
            .send()
            .await
            .expect("send");
        (resp.status().as_u16(), resp.json().await.expect("json"))
    }

    async fn customer(&self, email: &str, contact_id: Option<&str>) -> String {
        let mut form = vec![("email", email)];
        if let Some(c) = contact_id {
            form.push(("metadata[driftless_crm_contact_id]", c));
        }
        let (st, _, c) = self.post("/v1/customers", &form, None).await;
        assert_eq!(st, 200, "{c}");
        c["id"].as_str().unwrap_or_default().to_string()
    }

    async fn price(&self, lookup_key: &str) -> String {
        let (st, list) = self.get(&format!("/v1/prices?lookup_keys[]={lookup_key}")).await;
        assert_eq!(st, 200, "{list}");
        list["data"][0]["id"].as_str().unwrap_or_default().to_string()
    }

    async fn subscribe(&self, customer: &str, price: &str) -> Value {
        let (st, _, sub) = self
            .post(
                "/v1/subscriptions",
                &[("customer", customer), ("items[0][price]", price)],
                None,
            )
            .await;
        assert_eq!(st, 200, "{sub}");
        sub
    }

    /// The newest event of `typ`.
    async fn last_event(&self, typ: &str) -> Value {
        let (_, events) = self.get(&format!("/v1/events?limit=1&type={typ}")).await;
        events["data"][0].clone()
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn stripe_prices_listed_by_lookup_key() {
    let sims = start(FaultProfile::none()).await;
    let s = Stripe::new(&sims);
    let (st, all) = s.get("/v1/prices").await;
    assert_eq!(st, 200, "{all}");
    assert_eq!(all["object"], "list");
    let data = all["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 3);
    for (key, amount) in [("basic", 1000), ("pro", 5000), ("enterprise", 20000)] {
        let p = data.iter().find(|p| p["lookup_key"] == key).expect("seeded plan");
        assert_eq!(p["unit_amount"], amount);
        assert_eq!(p["currency"], "usd");
        assert_eq!(p["type"], "recurring");
        assert_eq!(p["recurring"]["interval"], "month");
        assert!(p["id"].as_str().is_some_and(|i| i.starts_with("price_")));
        assert!(p["product"].as_str().is_some_and(|i| i.starts_with("prod_")));
    }
    let (_, two) = s.get("/v1/prices?lookup_keys[]=basic&lookup_keys[]=enterprise").await;
    let mut keys: Vec<&str> = two["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["lookup_key"].as_str()).collect())
        .unwrap_or_default();
    keys.sort();
    assert_eq!(keys, vec!["basic", "enterprise"]);
    let (_, page) = s.get("/v1/prices?limit=2").await;
    assert_eq!(page["has_more"], true);
    let last = page["data"][1]["id"].as_str().unwrap_or_default().to_string();
    let (_, rest) = s.get(&format!("/v1/prices?limit=2&starting_after={last}")).await;
    assert_eq!(
        (rest["has_more"].as_bool(), rest["data"].as_array().map(Vec::len)),
        (Some(false), Some(1))
    );
    let pro = s.price("pro").await;
    let (st, one) = s.get(&format!("/v1/prices/{pro}?expand[]=product")).await;
    assert_eq!((st, one["lookup_key"].as_str()), (200, Some("pro")));
    assert_eq!(one["product"]["object"], "product");
    assert_eq!(one["product"]["name"], "Pro");
    let (st, e) = s.get("/v1/prices/price_nope").await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("resource_missing")));
    let (st, e) = s.get("/v1/prices?lookup_key=pro").await;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("parameter_unknown")));
    assert_eq!(sims.billing.prices().len(), 3);
    sims.shutdown().await;
}

#[tokio::test]
async fn stripe_subscription_create_change_cancel_with_events() {
    let sims = start(FaultProfile::none()).await;
    let s = Stripe::new(&sims);
    let cus = s.customer("sub@example.test", Some("11")).await;
    let (pro, enterprise) = (s.price("pro").await, s.price("enterprise").await);

    let (st, _, sub) = s
        .post(
            "/v1/subscriptions",
            &[
                ("customer", cus.as_str()),
                ("items[0][price]", pro.as_str()),
                ("metadata[driftless_correlation_id]", "corr-sub"),
                ("expand[]", "latest_invoice"),
            ],
            None,
        )
        .await;
    assert_eq!(st, 200, "{sub}");
    let sub_id = id_of(&sub);
    assert!(sub_id.starts_with("sub_"));
    assert_eq!(sub["object"], "subscription");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["customer"], cus.as_str());
    assert_eq!(sub["cancel_at_period_end"], false);
    assert_eq!(sub["canceled_at"], Value::Null);
    assert_eq!(sub["metadata"]["driftless_correlation_id"], "corr-sub");
    assert_eq!(sub["items"]["object"], "list");
    let item = &sub["items"]["data"][0];
    let si = id_of(item);
    assert!(si.starts_with("si_"));
    assert_eq!(item["price"]["id"], pro.as_str());
    assert_eq!(item["price"]["unit_amount"], 5000);
    assert_eq!(item["quantity"], 1);
    let (start_s, end_s) = (
        sub["current_period_start"].as_i64().unwrap_or(0),
        sub["current_period_end"].as_i64().unwrap_or(0),
    );
    assert!(
        (28 * 86_400..=31 * 86_400).contains(&(end_s - start_s)),
        "monthly period"
    );
    // The first invoice is created and paid at creation (expanded here).
    let inv = &sub["latest_invoice"];
    assert!(inv["id"].as_str().is_some_and(|i| i.starts_with("in_")));
    assert_eq!(inv["status"], "paid");
    assert_eq!(inv["paid"], true);
    assert_eq!(inv["amount_paid"], 5000);
    assert_eq!(inv["amount_remaining"], 0);
    assert_eq!(inv["billing_reason"], "subscription_create");
    assert_eq!(inv["subscription"], sub_id.as_str());
    assert!(inv["status_transitions"]["paid_at"].is_i64());
    let log = sims.billing.request_log();
    assert_eq!(log.last().and_then(|r| r.correlation_id.as_deref()), Some("corr-sub"));

    let created = s.last_event("customer.subscription.created").await;
    assert_eq!(created["data"]["object"]["id"], sub_id.as_str());
    assert!(created["request"]["id"].as_str().is_some_and(|r| r.starts_with("req_")));
    let types: Vec<String> = sims
        .billing
        .events()
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    for t in [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
    let (_, sub_events) = s.get("/v1/events?type=customer.subscription.*").await;
    assert_eq!(sub_events["data"].as_array().map(Vec::len), Some(1));

    // Plan change: same item, new price; previous_attributes carry the old items.
    let (st, _, changed) = s
        .post(
            &format!("/v1/subscriptions/{sub_id}"),
            &[
                ("items[0][id]", si.as_str()),
                ("items[0][price]", enterprise.as_str()),
                ("proration_behavior", "none"),
            ],
            None,
        )
        .await;
    assert_eq!(st, 200, "{changed}");
    assert_eq!(changed["items"]["data"][0]["id"], si.as_str());
    assert_eq!(changed["items"]["data"][0]["price"]["lookup_key"], "enterprise");
    assert_eq!(changed["items"]["data"].as_array().map(Vec::len), Some(1));
    let ev = s.last_event("customer.subscription.updated").await;
    assert_eq!(
        ev["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"],
        pro.as_str()
    );
    assert_eq!(
        ev["data"]["object"]["items"]["data"][0]["price"]["id"],
        enterprise.as_str()
    );

    // Cancel at period end, then now.
    let (st, _, c) = s
        .post(
            &format!("/v1/subscriptions/{sub_id}"),
            &[("cancel_at_period_end", "true"), ("metadata[reason]", "too pricey")],
            None,
        )
        .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["cancel_at_period_end"], true);
    assert_eq!(c["cancel_at"], end_s);
    assert!(c["canceled_at"].is_i64());
    let ev = s.last_event("customer.subscription.updated").await;
    let prev = &ev["data"]["previous_attributes"];
    assert_eq!(prev["cancel_at_period_end"], false);
    assert_eq!(prev["canceled_at"], Value::Null);
    assert_eq!(prev["metadata"]["reason"], Value::Null);
    let n_events = sims.billing.events().len();
    let (st, _, _) = s
        .post(
            &format!("/v1/subscriptions/{sub_id}"),
            &[("cancel_at_period_end", "true")],
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(sims.billing.events().len(), n_events, "no-op update emits nothing");

    let (st, gone) = s.delete(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(st, 200, "{gone}");
    assert_eq!(gone["status"], "canceled");
    assert!(gone["canceled_at"].is_i64() && gone["ended_at"].is_i64());
    let ev = s.last_event("customer.subscription.deleted").await;
    assert_eq!(ev["data"]["object"]["status"], "canceled");
    let (st, e) = s.delete(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("resource_missing")));
    let (st, _, e) = s
        .post(
            &format!("/v1/subscriptions/{sub_id}"),
            &[("items[0][id]", si.as_str()), ("items[0][price]", pro.as_str())],
            None,
        )
        .await;
    assert_eq!((st, e["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    let (st, _, _) = s
        .post(&format!("/v1/subscriptions/{sub_id}"), &[("metadata[k]", "v")], None)
        .await;
    assert_eq!(st, 200, "metadata stays editable after cancel");

    // Lists: canceled ones only with status=canceled|all; newest first; customer filter.
    let second = s.subscribe(&cus, &pro).await;
    let (_, live) = s.get("/v1/subscriptions").await;
    assert_eq!(live["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(live["data"][0]["id"], second["id"]);
    let (_, all) = s.get(&format!("/v1/subscriptions?status=all&customer={cus}")).await;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(all["data"][0]["id"], second["id"]);
    let (_, canceled) = s.get("/v1/subscriptions?status=canceled").await;
    assert_eq!(canceled["data"][0]["id"], sub_id.as_str());
    let (st, e) = s.get("/v1/subscriptions?status=bogus").await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("status")));

    // Errors: unknown customer / price, missing items, unknown parameter.
    let (st, _, e) = s
        .post(
            "/v1/subscriptions",
            &[("customer", "cus_nope"), ("items[0][price]", pro.as_str())],
            None,
        )
        .await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("customer")));
    let (st, _, e) = s
        .post(
            "/v1/subscriptions",
            &[("customer", cus.as_str()), ("items[0][price]", "price_nope")],
            None,
        )
        .await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("items[0][price]")));
    let (st, _, e) = s.post("/v1/subscriptions", &[("customer", cus.as_str())], None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("parameter_missing")));
    let (st, _, e) = s
        .post(
            "/v1/subscriptions",
            &[
                ("customer", cus.as_str()),
                ("items[0][price]", pro.as_str()),
                ("colour", "red"),
            ],
            None,
        )
        .await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("colour")));
    let (st, e) = s.get("/v1/subscriptions/sub_nope").await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("resource_missing")));
    assert_eq!(sims.billing.subscriptions().len(), 2);
    let delete_logged = sims
        .billing
        .request_log()
        .iter()
        .any(|r| r.method == "DELETE" && r.mutating && r.applied);
    assert!(delete_logged);
    sims.shutdown().await;
}

#[tokio::test]
async fn stripe_subscription_create_is_idempotent() {
    let sims = start(FaultProfile::parse("timeout=1,hang_ms=1500").expect("profile")).await;
    let s = Stripe::new(&sims);
    sims.set_faults(FaultProfile::none());
    let cus = s.customer("idem@example.test", Some("12")).await;
    let basic = s.price("basic").await;
    let form = [("customer", cus.as_str()), ("items[0][price]", basic.as_str())];

    // The first attempt commits but the client times out.
    sims.set_faults(FaultProfile::parse("timeout=1,hang_ms=1500").expect("profile"));
    let client = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let r = client
        .post(format!("{}/v1/subscriptions", s.base))
        .bearer_auth("sk_test_sim")
        .header("Idempotency-Key", "sub-key-1")
        .form(&form)
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    sims.set_faults(FaultProfile::none());
    assert_eq!(sims.billing.subscriptions().len(), 1);
    let (n_events, n_invoices) = (sims.billing.events().len(), sims.billing.invoices().len());

    let (st, h1, a) = s.post("/v1/subscriptions", &form, Some("sub-key-1")).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        h1.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let (_, _, b) = s.post("/v1/subscriptions", &form, Some("sub-key-1")).await;
    assert_eq!(a, b);
    assert_eq!(id_of(&a), id_of(&sims.billing.subscriptions()[0]));
    assert_eq!(sims.billing.subscriptions().len(), 1);
    assert_eq!(sims.billing.invoices().len(), n_invoices);
    assert_eq!(sims.billing.events().len(), n_events);
    let created = s.last_event("customer.subscription.created").await;
    assert_eq!(created["request"]["idempotency_key"], "sub-key-1");

    let (st, _, e) = s
        .post(
            "/v1/subscriptions",
            &[
                ("customer", cus.as_str()),
                ("items[0][price]", basic.as_str()),
                ("metadata[x]", "y"),
            ],
            Some("sub-key-1"),
        )
        .await;
    assert_eq!((st, e["error"]["type"].as_str()), (400, Some("idempotency_error")));
    let log = sims.billing.request_log();
    let replays = log.iter().filter(|r| r.replayed && !r.applied).count();
    assert_eq!(replays, 2);
    assert!(log
        .iter()
        .any(|r| r.fault.as_deref() == Some("timeout_after_commit") && r.applied));
    sims.shutdown().await;
}

#[tokio::test]
async fn stripe_billing_cycle_paid_failed_and_collected() {
    let sims = start(FaultProfile::none()).await;
    let s = Stripe::new(&sims);
    let cus = s.customer("cycle@example.test", Some("13")).await;
    let pro = s.price("pro").await;
    let sub = s.subscribe(&cus, &pro).await;
    let sub_id = id_of(&sub);
    let first_end = sub["current_period_end"].as_i64().unwrap_or(0);
    assert_eq!(sims.billing.run_billing_cycle(), 0, "nothing is due yet");

    // Every charge fails: invoice open, subscription past_due, customer delinquent.
    sims.billing.set_payment_failure_rate(1.0);
    let admin = Client::new();
    let r: Value = admin
        .post(format!("{}/_sim/billing_cycle", s.base))
        .json(&json!({ "advance_months": 1 }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (r["invoices"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let (_, s1) = s.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(s1["status"], "past_due");
    assert_eq!(s1["current_period_start"], first_end);
    assert!(s1["current_period_end"].as_i64().unwrap_or(0) > first_end);
    let inv_id = s1["latest_invoice"].as_str().unwrap_or_default().to_string();
    let (_, inv) = s.get(&format!("/v1/invoices/{inv_id}")).await;
    assert_eq!(inv["status"], "open");
    assert_eq!(inv["paid"], false);
    assert_eq!(inv["attempt_count"], 1);
    assert_eq!(
        (inv["amount_due"].as_i64(), inv["amount_remaining"].as_i64()),
        (Some(5000), Some(5000))
    );
    assert_eq!(inv["billing_reason"], "subscription_cycle");
    assert_eq!(inv["period_end"], first_end, "looks back one period");
    assert_eq!(inv["lines"]["data"][0]["period"]["start"], first_end);
    let (st, lines) = s.get(&format!("/v1/invoices/{inv_id}/lines?limit=5")).await;
    assert_eq!((st, lines["data"][0]["amount"].as_i64()), (200, Some(5000)));
    assert!(inv["status_transitions"]["finalized_at"].is_i64());
    assert!(inv["number"].is_string());
    let (_, c) = s.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(c["delinquent"], true);
    assert_eq!(c["balance"], 0);
    let failed = s.last_event("invoice.payment_failed").await;
    assert_eq!(failed["data"]["object"]["id"], inv_id.as_str());
    assert_eq!(failed["request"]["id"], Value::Null, "the cycle is not a request");
    let cu = s.last_event("customer.updated").await;
    assert_eq!(cu["data"]["previous_attributes"]["delinquent"], false);
    let su = s.last_event("customer.subscription.updated").await;
    assert_eq!(su["data"]["previous_attributes"]["status"], "active");
    let (_, open) = s.get(&format!("/v1/invoices?subscription={sub_id}&status=open")).await;
    assert_eq!(open["data"].as_array().map(Vec::len), Some(1));
    let (_, by_customer) = s.get(&format!("/v1/invoices?customer={cus}")).await;
    assert_eq!(by_customer["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(by_customer["data"][0]["id"], inv_id.as_str(), "newest first");

    // Paying clears it.
    let (st, _, paid) = s.post(&format!("/v1/invoices/{inv_id}/pay"), &[], None).await;
    assert_eq!(st, 200, "{paid}");
    assert_eq!(
        (paid["status"].as_str(), paid["amount_paid"].as_i64()),
        (Some("paid"), Some(5000))
    );
    assert_eq!(paid["amount_remaining"], 0);
    assert!(paid["status_transitions"]["paid_at"].is_i64());
    let (_, s2) = s.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(s2["status"], "active");
    let (_, c) = s.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(c["delinquent"], false);
    let cu = s.last_event("customer.updated").await;
    assert_eq!(cu["data"]["previous_attributes"]["delinquent"], true);
    assert!(cu["request"]["id"].is_string(), "caused by the pay request");
    let (st, _, e) = s.post(&format!("/v1/invoices/{inv_id}/pay"), &[], None).await;
    assert_eq!((st, e["error"]["type"].as_str()), (400, Some("invalid_request_error")));

    // A paid cycle, through the handle.
    sims.billing.set_payment_failure_rate(0.0);
    sims.billing.advance_clock(32 * 86_400);
    assert_eq!(sims.billing.run_billing_cycle(), 1);
    let (_, s3) = s.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(s3["status"], "active");
    let last = sims.billing.invoices().last().cloned().unwrap_or_default();
    assert_eq!(
        (last["status"].as_str(), last["attempt_count"].as_i64()),
        (Some("paid"), Some(1))
    );
    assert_eq!(sims.billing.invoices().len(), 3);

    // Void, and cancel-at-period-end ends the subscription at the next cycle.
    sims.billing.set_payment_failure_rate(1.0);
    sims.billing.advance_clock(32 * 86_400);
    assert_eq!(sims.billing.run_billing_cycle(), 1);
    let open_id = id_of(&sims.billing.invoices().last().cloned().unwrap_or_default());
    let (st, _, v) = s.post(&format!("/v1/invoices/{open_id}/void"), &[], None).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("void")));
    assert!(v["status_transitions"]["voided_at"].is_i64());
    assert_eq!(
        s.last_event("invoice.voided").await["data"]["object"]["id"],
        open_id.as_str()
    );
    let (_, c) = s.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(c["delinquent"], false);
    sims.billing
        .cancel_subscription(&sub_id, true)
        .expect("cancel at period end");
    sims.billing.advance_clock(32 * 86_400);
    assert_eq!(sims.billing.run_billing_cycle(), 0);
    let (_, ended) = s.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(ended["status"], "canceled");
    assert_eq!(
        s.last_event("customer.subscription.deleted").await["request"]["id"],
        Value::Null
    );
    sims.shutdown().await;
}

#[tokio::test]
async fn stripe_credit_notes_reduce_invoices_and_credit_balance() {
    let sims = start(FaultProfile::none()).await;
    let s = Stripe::new(&sims);
    let cus = s.customer("credit@example.test", Some("14")).await;
    let pro = s.price("pro").await;
    let sub = s.subscribe(&cus, &pro).await;
    let paid_inv = sub["latest_invoice"].as_str().unwrap_or_default().to_string();
    sims.billing.set_payment_failure_rate(1.0);
    sims.billing.advance_clock(32 * 86_400);
    assert_eq!(sims.billing.run_billing_cycle(), 1);
    let open_inv = id_of(&sims.billing.invoices().last().cloned().unwrap_or_default());

    // On an open invoice: amount_remaining goes down.
    let (st, _, cn) = s
        .post(
            "/v1/credit_notes",
            &[
                ("invoice", open_inv.as_str()),
                ("amount", "1000"),
                ("reason", "order_change"),
                ("memo", "goodwill"),
            ],
            Some("cn-key-1"),
        )
        .await;
    assert_eq!(st, 200, "{cn}");
    assert!(id_of(&cn).starts_with("cn_"));
    assert_eq!(cn["object"], "credit_note");
    assert_eq!(
        (cn["amount"].as_i64(), cn["status"].as_str()),
        (Some(1000), Some("issued"))
    );
    assert_eq!(
        (cn["invoice"].as_str(), cn["customer"].as_str()),
        (Some(open_inv.as_str()), Some(cus.as_str()))
    );
    assert_eq!(
        (cn["reason"].as_str(), cn["type"].as_str()),
        (Some("order_change"), Some("pre_payment"))
    );
    assert!(cn["created"].is_i64());
    let (_, inv) = s.get(&format!("/v1/invoices/{open_inv}")).await;
    assert_eq!(inv["amount_remaining"], 4000);
    assert_eq!(inv["status"], "open");
    assert_eq!(
        s.last_event("credit_note.created").await["data"]["object"]["id"],
        cn["id"]
    );
    let upd = s.last_event("invoice.updated").await;
    assert_eq!(upd["data"]["previous_attributes"]["amount_remaining"], 5000);
    // Replayed, not re-applied.
    let (_, h, again) = s
        .post(
            "/v1/credit_notes",
            &[
                ("invoice", open_inv.as_str()),
                ("amount", "1000"),
                ("reason", "order_change"),
                ("memo", "goodwill"),
            ],
            Some("cn-key-1"),
        )
        .await;
    assert!(h.get("idempotent-replayed").is_some());
    assert_eq!(again["id"], cn["id"]);
    assert_eq!(sims.billing.credit_notes().len(), 1);

    // Too much → 400; the rest → paid, delinquency cleared.
    let (st, _, e) = s
        .post(
            "/v1/credit_notes",
            &[("invoice", open_inv.as_str()), ("amount", "4001")],
            None,
        )
        .await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("amount")));
    let (st, _, e) = s
        .post(
            "/v1/credit_notes",
            &[("invoice", open_inv.as_str()), ("amount", "1"), ("reason", "whim")],
            None,
        )
        .await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("reason")));
    let (_, c) = s.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(c["delinquent"], true);
    let cn2 = sims
        .billing
        .issue_credit_note(&open_inv, 4000, "product_unsatisfactory")
        .expect("credit the rest");
    let (_, inv) = s.get(&format!("/v1/invoices/{open_inv}")).await;
    assert_eq!(
        (inv["status"].as_str(), inv["amount_remaining"].as_i64()),
        (Some("paid"), Some(0))
    );
    let (_, c) = s.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(c["delinquent"], false);
    let (_, sub_now) = s.get(&format!("/v1/subscriptions/{}", id_of(&sub))).await;
    assert_eq!(sub_now["status"], "active");

    // On a paid invoice: the customer's balance gets the credit (negative = credit)…
    let (st, _, cn3) = s
        .post(
            "/v1/credit_notes",
            &[("invoice", paid_inv.as_str()), ("amount", "700")],
            None,
        )
        .await;
    assert_eq!((st, cn3["type"].as_str()), (200, Some("post_payment")), "{cn3}");
    let (_, c) = s.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(c["balance"], -700);
    let cu = s.last_event("customer.updated").await;
    assert_eq!(cu["data"]["previous_attributes"]["balance"], 0);
    // …which the next invoice consumes.
    sims.billing.set_payment_failure_rate(0.0);
    sims.billing.advance_clock(32 * 86_400);
    assert_eq!(sims.billing.run_billing_cycle(), 1);
    let next = sims.billing.invoices().last().cloned().unwrap_or_default();
    assert_eq!(next["starting_balance"], -700);
    assert_eq!(next["amount_due"], 4300);
    assert_eq!(next["status"], "paid");
    let (_, c) = s.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(c["balance"], 0);

    // Lists and retrieval.
    let (_, by_inv) = s.get(&format!("/v1/credit_notes?invoice={open_inv}")).await;
    assert_eq!(by_inv["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(by_inv["data"][0]["id"], cn2.as_str(), "newest first");
    let (_, by_cus) = s.get(&format!("/v1/credit_notes?customer={cus}")).await;
    assert_eq!(by_cus["data"].as_array().map(Vec::len), Some(3));
    let (st, one) = s.get(&format!("/v1/credit_notes/{cn2}")).await;
    assert_eq!((st, one["amount"].as_i64()), (200, Some(4000)));
    let (st, _, e) = s
        .post("/v1/credit_notes", &[("invoice", "in_nope"), ("amount", "1")], None)
        .await;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("resource_missing")));
    assert!(sims.billing.issue_credit_note("in_nope", 1, "").is_err());
    sims.shutdown().await;
}

#[tokio::test]
async fn billing_activity_is_deterministic_for_a_seed() {
    let summary = |sims: &Simulators| -> Value {
        let index: Vec<String> = sims.billing.customers().iter().map(id_of).collect();
        let pos = |v: &Value| index.iter().position(|c| v == c.as_str());
        let subs: Vec<Value> = sims
            .billing
            .subscriptions()
            .iter()
            .map(|s| {
                json!([
                    pos(&s["customer"]),
                    s["status"],
                    s["cancel_at_period_end"],
                    s["items"]["data"][0]["price"]["lookup_key"]
                ])
            })
            .collect();
        let invoices: Vec<Value> = sims
            .billing
            .invoices()
            .iter()
            .map(|i| {
                json!([
                    pos(&i["customer"]),
                    i["status"],
                    i["amount_due"],
                    i["amount_remaining"],
                    i["billing_reason"]
                ])
            })
            .collect();
        let notes: Vec<Value> = sims
            .billing
            .credit_notes()
            .iter()
            .map(|c| json!([pos(&c["customer"]), c["amount"], c["type"]]))
            .collect();
        let customers: Vec<Value> = sims
            .billing
            .customers()
            .iter()
            .map(|c| json!([c["balance"], c["delinquent"]]))
            .collect();
        json!({ "subs": subs, "invoices": invoices, "notes": notes, "customers": customers })
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sims = Simulators::start(SimConfig {
            seed: 3,
            ..SimConfig::default()
        })
        .await
        .expect("start");
        let s = Stripe::new(&sims);
        for i in 0..12 {
            let contact = i.to_string();
            // Every fourth customer was not created by the engine: finance leaves it alone.
            let tag = (i % 4 != 3).then_some(contact.as_str());
            s.customer(&format!("act{i}@example.test"), tag).await;
        }
        sims.billing.set_payment_failure_rate(0.3);
        let activity = BillingActivity {
            subscriptions: true,
            plan_changes: 0.3,
            cancellations: 0.1,
            credit_notes: 0.3,
            cycles: 3,
        };
        let report = run_billing_activity(&sims, 5, activity).await;
        assert_eq!(report.subscriptions_started, 9);
        assert_eq!(report.cycles, 3);
        assert!(report.invoices > 0 && report.invoices <= 27, "{report:?}");
        // Nothing new to start on a second pass.
        let again = run_billing_activity(
            &sims,
            6,
            BillingActivity {
                cycles: 0,
                plan_changes: 0.0,
                cancellations: 0.0,
                credit_notes: 0.0,
                ..BillingActivity::default()
            },
        )
        .await;
        assert_eq!(again.subscriptions_started, 0);
        runs.push((report, summary(&sims)));
        sims.shutdown().await;
    }
    assert_eq!(runs[0].0, runs[1].0);
    assert_eq!(runs[0].1, runs[1].1);
    let subs = runs[0].1["subs"].as_array().cloned().unwrap_or_default();
    assert_eq!(subs.len(), 9);
    assert!(subs.iter().all(|s| s[0].as_u64().is_some_and(|i| i % 4 != 3)));
}

#[tokio::test]
async fn plan_requests_need_the_property() {
    let sims = start(FaultProfile::none()).await;
    for i in 0..3 {
        sims.crm.create_contact(&[("email", &format!("pr{i}@example.test"))]);
    }
    assert_eq!(
        run_plan_requests(&sims, 1, 4).await,
        0,
        "no requested_plan property yet"
    );
    let h = Hub::new(&sims);
    let (st, def) = h
        .post(
            "/crm/v3/properties/contacts",
            json!({"name": "requested_plan", "label": "Requested plan", "type": "enumeration",
                   "fieldType": "select", "groupName": "contactinformation",
                   "options": [{"label": "Basic", "value": "basic"}, {"label": "Pro", "value": "pro"},
                               {"label": "Enterprise", "value": "enterprise"}]}),
        )
        .await;
    assert_eq!(st, 201, "{def}");
    assert_eq!(run_plan_requests(&sims, 1, 4).await, 4);
    let requested = sims
        .crm
        .contacts()
        .iter()
        .filter(|c| c["properties"]["requested_plan"].is_string())
        .count();
    assert!((1..=3).contains(&requested));
    sims.shutdown().await;
}

// --- Companies and property types ------------------------------------------------------------

#[tokio::test]
async fn hubspot_companies_crud_batch_search_and_webhooks() {
    let sims = start(FaultProfile::none()).await;
    let (url, hook) = receiver(0).await;
    sims.crm.set_webhook_target(&url);
    let h = Hub::new(&sims);
    let co = "/crm/v3/objects/companies";

    let (st, a) = h
        .post(
            co,
            json!({"properties": {"name": "Acme", "domain": "acme.test", "lifecyclestage": "lead"}}),
        )
        .await;
    assert_eq!(st, 201, "{a}");
    let id = id_of(&a);
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(a["properties"]["name"], "Acme");
    assert_eq!(a["properties"]["hs_object_id"], id.as_str());
    assert!(a["properties"]["hs_lastmodifieddate"].is_string());
    assert!(a["properties"].get("lastmodifieddate").is_none());

    // Default properties for companies; unknown and contact-only properties are rejected.
    let (st, _, got) = h.call(reqwest::Method::GET, &format!("{co}/{id}"), None).await;
    assert_eq!(st, 200);
    let mut keys: Vec<&String> = got["properties"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    keys.sort();
    assert_eq!(
        keys,
        vec!["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"]
    );
    let (st, e) = h.post(co, json!({"properties": {"email": "x@acme.test"}})).await;
    assert_eq!(
        (st, e["errors"][0]["code"].as_str()),
        (400, Some("PROPERTY_DOESNT_EXIST"))
    );
    let (st, _, _) = h.call(reqwest::Method::GET, &format!("{co}/424242"), None).await;
    assert_eq!(st, 404);

    // Custom company property through the companies properties API only.
    let def = json!({"name": "billing_account_id", "label": "Billing account", "type": "string",
                     "fieldType": "text", "groupName": "companyinformation", "hasUniqueValue": true});
    assert_eq!(h.post("/crm/v3/properties/companies", def.clone()).await.0, 201);
    assert_eq!(h.post("/crm/v3/properties/companies", def).await.0, 409);
    let (st, _, _) = h
        .call(
            reqwest::Method::GET,
            "/crm/v3/properties/contacts/billing_account_id",
            None,
        )
        .await;
    assert_eq!(st, 404, "company properties are not contact properties");
    let (_, _, props) = h.call(reqwest::Method::GET, "/crm/v3/properties/companies", None).await;
    assert!(props["results"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["name"] == "domain")));

    // Update.
    let (st, _, up) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{co}/{id}"),
            Some(json!({"properties": {"billing_account_id": "cus_1", "lifecyclestage": "customer"}})),
        )
        .await;
    assert_eq!(st, 200, "{up}");
    assert_eq!(up["properties"]["lifecyclestage"], "customer");

    // Batch upsert by the unique custom property: one update, one create; batch read/update.
    let (st, up) = h
        .post(
            &format!("{co}/batch/upsert"),
            json!({"inputs": [
                {"idProperty": "billing_account_id", "id": "cus_1", "properties": {"city": "Paris"}},
                {"idProperty": "billing_account_id", "id": "cus_2", "properties": {"name": "Globex"}},
            ]}),
        )
        .await;
    assert_eq!(st, 200, "{up}");
    let results = up["results"].as_array().cloned().unwrap_or_default();
    assert!(results.iter().any(|r| r["new"] == false && r["id"] == id.as_str()));
    let globex = results.iter().find(|r| r["new"] == true).map(id_of).unwrap_or_default();
    assert_eq!(
        h.post(
            &format!("{co}/batch/upsert"),
            json!({"inputs": [{"idProperty": "domain", "id": "x.test", "properties": {}}]})
        )
        .await
        .0,
        400,
        "domain is not a unique property"
    );
    let (st, upd) = h
        .post(
            &format!("{co}/batch/update"),
            json!({"inputs": [{"id": globex, "properties": {"domain": "globex.test"}}]}),
        )
        .await;
    assert_eq!((st, upd["status"].as_str()), (200, Some("COMPLETE")));
    let (st, rd) = h
        .post(
            &format!("{co}/batch/read"),
            json!({"inputs": [{"id": id}, {"id": "1"}], "properties": ["city"]}),
        )
        .await;
    assert_eq!(st, 207);
    assert_eq!(rd["results"][0]["properties"]["city"], "Paris");
    assert!(rd["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("COMPANY")));

    // Search by domain and by last-modified; free-text query; list paging.
    let (st, found) = h
        .post(
            &format!("{co}/search"),
            json!({"filterGroups": [{"filters": [{"propertyName": "domain", "operator": "EQ", "value": "globex.test"}]}]}),
        )
        .await;
    assert_eq!(st, 200, "{found}");
    assert_eq!(found["total"], 1);
    assert_eq!(found["results"][0]["id"], globex.as_str());
    let (_, recent) = h
        .post(
            &format!("{co}/search"),
            json!({"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}],
                   "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}], "limit": 1}),
        )
        .await;
    assert_eq!(recent["total"], 2);
    assert_eq!(recent["paging"]["next"]["after"], "1");
    let (_, q) = h.post(&format!("{co}/search"), json!({"query": "acme"})).await;
    assert_eq!(q["total"], 1);
    let (_, _, l1) = h.call(reqwest::Method::GET, &format!("{co}?limit=1"), None).await;
    assert!(l1["paging"]["next"]["link"]
        .as_str()
        .is_some_and(|l| l.contains("/crm/v3/objects/companies?after=")));

    // UI edits through the handle; contacts are untouched.
    let ui = sims.crm.create_company(&[("name", "Initech"), ("nope", "x")]);
    sims.crm.edit_company(&ui, &[("domain", "initech.test")]).expect("edit");
    assert!(sims.crm.edit_company("1001", &[("name", "x")]).is_err());
    assert_eq!(sims.crm.companies().len(), 3);
    assert!(sims.crm.contacts().is_empty());

    // Webhooks: company.creation / company.propertyChange, API vs UI sources.
    let events = || -> Vec<Value> {
        hook.got()
            .iter()
            .flat_map(|(_, b)| serde_json::from_str::<Vec<Value>>(b).unwrap_or_default())
            .collect()
    };
    assert!(
        wait_for(|| events()
            .iter()
            .filter(|e| e["subscriptionType"] == "company.creation")
            .count()
            == 3)
        .await,
        "{:?}",
        events()
    );
    assert!(wait_for(|| sims.pending_webhooks() == 0).await);
    let evs = events();
    assert!(evs.iter().all(|e| e["subscriptionType"]
        .as_str()
        .is_some_and(|t| t.starts_with("company."))));
    assert!(evs.iter().any(|e| e["subscriptionType"] == "company.propertyChange"
        && e["propertyName"] == "lifecyclestage"
        && e["propertyValue"] == "customer"
        && e["changeSource"] == "INTEGRATION"));
    assert!(evs.iter().any(|e| e["propertyName"] == "domain"
        && e["propertyValue"] == "initech.test"
        && e["changeSource"] == "CRM_UI"
        && e["objectId"].as_u64() == ui.parse().ok()));
    let state: Value = Client::new()
        .get(format!("{}/_sim/state", h.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(state["companies"].as_array().map(Vec::len), Some(3));
    sims.shutdown().await;
}

#[tokio::test]
async fn hubspot_property_types_are_validated() {
    let sims = start(FaultProfile::none()).await;
    let h = Hub::new(&sims);
    let defs = [
        ("subscription_status", "string", "text"),
        ("mrr", "number", "number"),
        ("delinquent", "bool", "booleancheckbox"),
        ("cancel_at_period_end", "bool", "booleancheckbox"),
        ("next_invoice_date", "date", "date"),
        ("last_payment_at", "datetime", "date"),
    ];
    for (name, typ, field) in defs {
        let (st, d) = h
            .post(
                "/crm/v3/properties/contacts",
                json!({"name": name, "label": name, "type": typ, "fieldType": field, "groupName": "contactinformation"}),
            )
            .await;
        assert_eq!((st, d["type"].as_str()), (201, Some(typ)), "{d}");
    }
    let (st, _) = h
        .post(
            "/crm/v3/properties/contacts",
            json!({"name": "plan", "label": "Plan", "type": "enumeration", "fieldType": "select",
                   "groupName": "contactinformation",
                   "options": [{"label": "Basic", "value": "basic"}, {"label": "Pro", "value": "pro"}]}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, e) = h
        .post(
            "/crm/v3/properties/contacts",
            json!({"name": "odd", "label": "Odd", "type": "currency", "fieldType": "text", "groupName": "contactinformation"}),
        )
        .await;
    assert_eq!((st, e["category"].as_str()), (400, Some("VALIDATION_ERROR")));

    let (_, c) = h
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "t@example.test"}}),
        )
        .await;
    let path = format!("/crm/v3/objects/contacts/{}", id_of(&c));
    let patch = |props: Value| {
        let path = path.clone();
        let h = &h;
        async move {
            h.call(reqwest::Method::PATCH, &path, Some(json!({ "properties": props })))
                .await
        }
    };
    let bad = [
        json!({"mrr": "abc"}),
        json!({"mrr": "NaN"}),
        json!({"delinquent": "maybe"}),
        json!({"next_invoice_date": "next tuesday"}),
        json!({"next_invoice_date": "1714564800123"}),
        json!({"last_payment_at": "yesterday"}),
        json!({"plan": "gold"}),
    ];
    for props in bad {
        let (st, _, e) = patch(props.clone()).await;
        assert_eq!(
            (st, e["category"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{props} → {e}"
        );
        assert_eq!(e["status"], "error");
        assert!(
            e["errors"][0]["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("INVALID_")),
            "{e}"
        );
    }
    let (st, _, ok) = patch(json!({
        "subscription_status": "active", "mrr": "50.5", "delinquent": "true",
        "cancel_at_period_end": false, "next_invoice_date": "2024-05-01",
        "last_payment_at": "1714564800000", "plan": "pro",
    }))
    .await;
    assert_eq!(st, 200, "{ok}");
    let p = &ok["properties"];
    assert_eq!(p["mrr"], "50.5");
    assert_eq!(p["delinquent"], "true");
    assert_eq!(p["cancel_at_period_end"], "false");
    assert_eq!(p["next_invoice_date"], "2024-05-01");
    assert_eq!(p["last_payment_at"], "2024-05-01T12:00:00.000Z");
    let (st, _, ok) =
        patch(json!({"next_invoice_date": "1717200000000", "last_payment_at": "2024-06-01T10:00:00Z", "mrr": 20}))
            .await;
    assert_eq!(st, 200, "{ok}");
    assert_eq!(ok["properties"]["next_invoice_date"], "2024-06-01");
    assert_eq!(ok["properties"]["last_payment_at"], "2024-06-01T10:00:00.000Z");
    assert_eq!(ok["properties"]["mrr"], "20");

    // Search compares dates as dates.
    let (_, found) = h
        .post(
            "/crm/v3/objects/contacts/search",
            json!({"filterGroups": [{"filters": [{"propertyName": "next_invoice_date", "operator": "GT", "value": "2024-05-15"}]}]}),
        )
        .await;
    assert_eq!(found["total"], 1);

    // Enumeration options can be extended; HubSpot-defined definitions cannot change.
    let (st, _, d) = h
        .call(
            reqwest::Method::PATCH,
            "/crm/v3/properties/contacts/plan",
            Some(
                json!({"options": [{"label": "Basic", "value": "basic"}, {"label": "Pro", "value": "pro"},
                                    {"label": "Gold", "value": "gold"}]}),
            ),
        )
        .await;
    assert_eq!((st, d["options"].as_array().map(Vec::len)), (200, Some(3)));
    assert_eq!(patch(json!({"plan": "gold"})).await.0, 200);
    let (st, _, _) = h
        .call(
            reqwest::Method::PATCH,
            "/crm/v3/properties/contacts/email",
            Some(json!({"label": "E-mail"})),
        )
        .await;
    assert_eq!(st, 400);
    sims.shutdown().await;
}

#[tokio::test]
async fn hubspot_batch_update_answers_per_record_like_hubspot() {
    let sims = start(FaultProfile::none()).await;
    let h = Hub::new(&sims);
    let c = "/crm/v3/objects/contacts";
    let a = sims.crm.create_contact(&[("email", "a@example.test")]);
    let b = sims.crm.create_contact(&[("email", "b@example.test")]);

    // A missing id: 207, the others applied, the error names the id; results carry the
    // inputs' objectWriteTraceId.
    let (st, r) = h
        .post(
            &format!("{c}/batch/update"),
            json!({"inputs": [
                {"id": a, "objectWriteTraceId": "0", "properties": {"firstname": "Ann"}},
                {"id": "424242", "objectWriteTraceId": "1", "properties": {"firstname": "Nobody"}},
                {"id": b, "objectWriteTraceId": "2", "properties": {"firstname": "Bo"}},
            ]}),
        )
        .await;
    assert_eq!(st, 207, "{r}");
    assert_eq!(
        (r["numErrors"].as_u64(), r["errors"][0]["category"].as_str()),
        (Some(1), Some("OBJECT_NOT_FOUND"))
    );
    assert_eq!(r["errors"][0]["context"]["ids"], json!(["424242"]));
    let traces: Vec<(&str, &str)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["id"].as_str().unwrap(), x["objectWriteTraceId"].as_str().unwrap()))
        .collect();
    assert_eq!(traces, [(a.as_str(), "0"), (b.as_str(), "2")]);

    // One invalid value (not a lifecycle stage) fails the whole batch: nothing applied.
    let (st, r) = h
        .post(
            &format!("{c}/batch/update"),
            json!({"inputs": [
                {"id": a, "properties": {"firstname": "Changed"}},
                {"id": b, "properties": {"lifecyclestage": "platinum"}},
            ]}),
        )
        .await;
    assert_eq!((st, r["category"].as_str()), (400, Some("VALIDATION_ERROR")), "{r}");
    let first = |id: &str| {
        sims.crm
            .contacts()
            .into_iter()
            .find(|x| x["id"] == id)
            .and_then(|x| x["properties"]["firstname"].as_str().map(str::to_string))
    };
    assert_eq!(
        first(&a).as_deref(),
        Some("Ann"),
        "nothing of the refused batch applied"
    );

    // An unknown property: the whole batch is refused.
    let (st, r) = h
        .post(
            &format!("{c}/batch/update"),
            json!({"inputs": [{"id": a, "properties": {"no_such_property": "x"}}, {"id": b, "properties": {"firstname": "Y"}}]}),
        )
        .await;
    assert_eq!((st, r["category"].as_str()), (400, Some("VALIDATION_ERROR")), "{r}");
    assert_eq!(first(&b).as_deref(), Some("Bo"));

    // The same id twice: refused.
    let (st, r) = h
        .post(
            &format!("{c}/batch/update"),
            json!({"inputs": [{"id": a, "properties": {"firstname": "1"}}, {"id": a, "properties": {"firstname": "2"}}]}),
        )
        .await;
    assert_eq!(st, 400, "{r}");
    assert!(
        r["message"].as_str().unwrap_or_default().contains("Duplicate IDs"),
        "{r}"
    );
    sims.shutdown().await;
}

#[tokio::test]
async fn stripe_list_by_email_is_newest_first_and_follows_edits_and_removals() {
    let sims = start(FaultProfile::none()).await;
    let s = Stripe::new(&sims);
    let mut ids = Vec::new();
    for email in ["a@example.test", "b@example.test", "a@example.test"] {
        let (st, _, c) = s.post("/v1/customers", &[("email", email)], None).await;
        assert_eq!(st, 200);
        ids.push(c["id"].as_str().expect("id").to_string());
    }
    let listed = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| c["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (st, v) = s.get("/v1/customers?email=a%40example.test").await;
    assert_eq!(st, 200);
    assert_eq!(listed(&v), vec![ids[2].clone(), ids[0].clone()], "newest first");
    // An edit moves the customer to its new email, keeping its place by creation.
    let (st, _, _) = s
        .post(
            &format!("/v1/customers/{}", ids[1]),
            &[("email", "a@example.test")],
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (_, v) = s.get("/v1/customers?email=a%40example.test").await;
    assert_eq!(listed(&v), vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    let (_, v) = s.get("/v1/customers?email=b%40example.test").await;
    assert!(listed(&v).is_empty());
    sims.billing.remove_customer_silently(&ids[2]).expect("remove");
    let (_, v) = s.get("/v1/customers?email=a%40example.test").await;
    assert_eq!(listed(&v), vec![ids[1].clone(), ids[0].clone()]);
    let (_, v) = s.get("/v1/customers?email=a%40example.test&limit=1").await;
    assert_eq!(
        (listed(&v), v["has_more"].as_bool()),
        (vec![ids[1].clone()], Some(true))
    );
    let (_, v) = s.get("/v1/customers").await;
    assert_eq!(listed(&v).len(), 2);
}
