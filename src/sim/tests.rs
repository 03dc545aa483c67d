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

use super::{FaultProfile, SimConfig, Simulators};

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
