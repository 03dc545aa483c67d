//! The connectors' response handling under mutation, without HTTP: the pure classification
//! every `send` goes through (`stripe::classify`, `hubspot::classify`: status, headers, body
//! text to JSON or a typed error) and the parsers of what comes back (customers,
//! subscriptions, invoice summaries, event pages, customer lists; HubSpot records, list and
//! search pages, batch answers and their per-record 207 errors), then the pollers' parsers
//! (`ingest::stripe::event_from_value` on each polled event, `ingest::poll::crm_snapshot_event`
//! on each search hit).
//!
//! A fuzz input is `<status> <header>=<value> …\n<body>`. Properties: nothing panics; every
//! error has a class among the connector's classes and a message without Rust's debug
//! notation; a 2xx whose body is not JSON is `garbage` (HubSpot: an empty body is `null`, its
//! 204); the status classes hold (401/403 auth, 429 rate limited unless Stripe says not to
//! retry, 5xx server unless Stripe says not to retry, other non-2xx never `Ok`); parsed
//! records have non-empty ids; batch outcomes come one per input; polled events satisfy the
//! webhook parsers' properties.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use driftless::connectors::hubspot;
use driftless::connectors::stripe;
use driftless::connectors::{BatchUpsert, ConnResult, ConnectorError, RemoteRecord};
use driftless::contract::{CrmObject, Side};
use driftless::ingest::{self, Routes};

use crate::harness;

const NOW_MS: i64 = 1_764_000_000_123;
const CLASSES: &[&str] = &[
    "timeout",
    "transport",
    "rate_limited",
    "server",
    "auth",
    "validation",
    "garbage",
];

/// Split a case into status, headers and body.
fn parse_case(input: &[u8]) -> (u16, HeaderMap, String) {
    let (head, body) = match input.iter().position(|b| *b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&[][..], input),
    };
    let head = String::from_utf8_lossy(head);
    let mut words = head.split(' ');
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .unwrap_or(200);
    let mut headers = HeaderMap::new();
    for w in words {
        if let Some((k, v)) = w.split_once('=') {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v.replace('_', " ")),
            ) {
                headers.append(k, v);
            }
        }
    }
    (status, headers, String::from_utf8_lossy(body).into_owned())
}

fn check_error(e: &ConnectorError) -> Result<(), String> {
    let text = e.to_string();
    if !CLASSES.contains(&e.class()) || text.is_empty() || text.contains("Some(") {
        return Err(format!(
            "an untyped or unhelpful error: class {} text {text:?}",
            e.class()
        ));
    }
    Ok(())
}

/// A parser's answer: a record with a non-empty id, or a typed error.
fn check_record(what: &str, r: &ConnResult<RemoteRecord>) -> Result<(), String> {
    match r {
        Ok(rec) if rec.id.is_empty() => Err(format!("{what}: a record with an empty id: {rec:?}")),
        Ok(_) => Ok(()),
        Err(e) => check_error(e).map_err(|m| format!("{what}: {m}")),
    }
}

fn check_records(what: &str, r: &ConnResult<Vec<RemoteRecord>>) -> Result<(), String> {
    match r {
        Ok(recs) => recs.iter().try_for_each(|rec| check_record(what, &Ok(rec.clone()))),
        Err(e) => check_error(e).map_err(|m| format!("{what}: {m}")),
    }
}

fn check_new_event(e: &driftless::ledger::NewEvent) -> Result<(), String> {
    if e.event_id.is_empty() || e.object_id.is_empty() || e.billing_id.as_deref() == Some("") {
        return Err(format!("a polled event with an empty id: {e:?}"));
    }
    match ingest::parse_entity_key(&e.entity_key) {
        Some((object, _, id)) if !object.is_empty() && !id.is_empty() && object == e.identity_object => {}
        other => return Err(format!("entity key {:?} reads back as {other:?}", e.entity_key)),
    }
    serde_json::from_str::<Value>(&e.payload)
        .map(|_| ())
        .map_err(|_| format!("payload is not JSON: {:?}", e.payload))
}

fn routes() -> Routes {
    Routes {
        contact: "customer".into(),
        company: Some("account".into()),
    }
}

/// The status classes both providers share, and the 2xx rules.
fn check_classified(
    status: u16,
    body: &str,
    got: &ConnResult<Value>,
    stripe_no_retry: Option<bool>,
    empty_is_null: bool,
) -> Result<(), String> {
    let ok2xx = (200..300).contains(&status);
    match got {
        Ok(_) if !ok2xx => return Err(format!("status {status} answered Ok")),
        Ok(v) if ok2xx => {
            let is_json = serde_json::from_str::<Value>(body).is_ok();
            let empty = empty_is_null && body.trim().is_empty();
            if !is_json && !empty {
                return Err(format!("a 2xx non-JSON body answered Ok: {v}"));
            }
        }
        Ok(_) => {}
        Err(e) => {
            check_error(e)?;
            let want = match status {
                s if (200..300).contains(&s) => Some("garbage"),
                429 if stripe_no_retry == Some(false) => Some("validation"),
                429 => Some("rate_limited"),
                401 | 403 => Some("auth"),
                s if s >= 500 && stripe_no_retry != Some(false) => Some("server"),
                _ => None,
            };
            if let Some(w) = want.filter(|w| *w != e.class()) {
                return Err(format!("status {status} classed {} (expected {w}): {e}", e.class()));
            }
            if e.status().is_some_and(|s| s != status) {
                return Err(format!("status {status} reported as {:?}", e.status()));
            }
        }
    }
    Ok(())
}

fn check_stripe(input: &[u8]) -> Result<(), String> {
    let (status, headers, body) = parse_case(input);
    let got = stripe::classify(status, &headers, &body);
    let should_retry = match headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    check_classified(status, &body, &got, should_retry, false)?;
    let Ok(v) = got else { return Ok(()) };
    check_record("customer_record", &stripe::customer_record(&v))?;
    check_record("subscription_record", &stripe::subscription_record(&v))?;
    check_records("customer_page", &stripe::customer_page(&v))?;
    match stripe::customer_list_page(&v) {
        Ok(p) => {
            check_records("customer_list_page", &Ok(p.records.clone()))?;
            if p.next.as_deref() == Some("") {
                return Err("an empty next-page cursor".into());
            }
        }
        Err(e) => check_error(&e)?,
    }
    if let Some(data) = v.get("data").and_then(Value::as_array) {
        for item in data {
            check_record("subscription_record", &stripe::subscription_record(item))?;
        }
        check_record(
            "invoice_summary_record",
            &Ok(stripe::invoice_summary_record("cus_NffrFeUfNV2Hib", data)),
        )?;
    }
    match stripe::event_page(&v) {
        Ok(page) => {
            for ev in &page.events {
                // The events poller parses each one as a webhook event.
                if let Ok(e) = ingest::stripe::event_from_value(ev, "poll", NOW_MS, &routes()) {
                    check_new_event(&e)?;
                }
            }
        }
        Err(e) => check_error(&e)?,
    }
    Ok(())
}

fn check_hubspot(input: &[u8]) -> Result<(), String> {
    let (status, headers, body) = parse_case(input);
    let got = hubspot::classify(status, &headers, &body);
    check_classified(status, &body, &got, None, true)?;
    let Ok(v) = got else { return Ok(()) };
    check_record("contact_record", &hubspot::contact_record(&v))?;
    match hubspot::list_page(status, &v) {
        Ok(p) => {
            check_records("list_page", &Ok(p.records))?;
            if p.next.as_deref() == Some("") {
                return Err("list_page: an empty next-page cursor".into());
            }
        }
        Err(e) => check_error(&e)?,
    }
    match hubspot::search_page(status, &v) {
        Ok(p) => {
            check_records("search_page", &Ok(p.results.clone()))?;
            if p.next_after.as_deref() == Some("") {
                return Err("search_page: an empty next-page cursor".into());
            }
            for kind in [CrmObject::Contact, CrmObject::Company] {
                for rec in &p.results {
                    // The CRM poller's snapshot events.
                    if let Ok(e) =
                        ingest::poll::crm_snapshot_event(kind, rec, hubspot::modified_property(kind), NOW_MS, &routes())
                    {
                        check_new_event(&e)?;
                        if e.source != Side::Crm {
                            return Err("a CRM snapshot from the billing side".into());
                        }
                    }
                }
            }
        }
        Err(e) => check_error(&e)?,
    }
    let ids = ["1001", "1002", "5000001"];
    let answer = || hubspot::batch_answer(status, &v);
    match answer() {
        Ok(a) => {
            for e in &a.errors {
                check_error(&e.error)?;
            }
            let read = hubspot::read_outcomes(a, &ids);
            let update = hubspot::update_outcomes(answer().map_err(|e| e.to_string())?, &ids);
            let inputs: Vec<BatchUpsert> = ["a@example.test", "b@example.test"]
                .iter()
                .map(|e| BatchUpsert {
                    id: e.to_string(),
                    id_property: "email".into(),
                    fields: Default::default(),
                })
                .collect();
            let upsert = hubspot::upsert_outcomes(answer().map_err(|e| e.to_string())?, &inputs);
            if read.len() != ids.len() || update.len() != ids.len() || upsert.len() != inputs.len() {
                return Err("batch outcomes are not one per input".into());
            }
            for r in &read {
                match r {
                    Ok(Some(rec)) => check_record("batch read", &Ok(rec.clone()))?,
                    Ok(None) => {}
                    Err(e) => check_error(&e.error)?,
                }
            }
            for r in &update {
                match r {
                    Ok(rec) => check_record("batch update", &Ok(rec.clone()))?,
                    Err(e) => check_error(&e.error)?,
                }
            }
            for r in &upsert {
                match r {
                    Ok((rec, _)) => check_record("batch upsert", &Ok(rec.clone()))?,
                    Err(e) => check_error(&e.error)?,
                }
            }
        }
        Err(e) => check_error(&e)?,
    }
    Ok(())
}

fn case(head: &str, body: &Value) -> Vec<u8> {
    let mut c = format!("{head}\n").into_bytes();
    c.extend_from_slice(&serde_json::to_vec(body).expect("JSON"));
    c
}

fn stripe_customer(id: &str) -> Value {
    json!({"id": id, "object": "customer", "balance": 0, "created": 1_763_900_000, "delinquent": true,
           "description": null, "email": "ada@example.test", "livemode": false, "name": "Ada Lovelace",
           "phone": "", "metadata": {"driftless_crm_contact_id": "1001", "lifecycle_stage": "customer",
           "seats": 3}})
}

fn stripe_subscription(id: &str, status: &str, interval: &str) -> Value {
    json!({"id": id, "object": "subscription", "customer": "cus_NffrFeUfNV2Hib", "status": status,
           "cancel_at_period_end": true, "current_period_end": 1_766_592_000,
           "items": {"object": "list", "data": [
               {"id": "si_Nx3Yq8Zr2Lk1Pw", "quantity": 3, "price": {"id": "price_1Nf", "lookup_key": "pro",
                "unit_amount": 4900, "recurring": {"interval": interval, "interval_count": 1}}},
               {"id": "si_Nx3Yq8Zr2Lk1Px", "quantity": 1, "price": {"id": "price_2Nf", "unit_amount": 120000,
                "recurring": {"interval": "year", "interval_count": 2}}}]}})
}

fn stripe_invoice(id: &str, status: &str, remaining: i64, paid_at: Value) -> Value {
    json!({"id": id, "object": "invoice", "customer": "cus_NffrFeUfNV2Hib", "status": status,
           "amount_due": 14700, "amount_remaining": remaining,
           "status_transitions": {"finalized_at": 1_763_990_000, "paid_at": paid_at}})
}

fn stripe_list(data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data})
}

#[test]
fn connector_stripe_responses() {
    let event = json!({"id": "evt_1NfWq2LkdIwHu7ixAAAAAAAA", "object": "event", "type": "customer.updated",
        "created": 1_764_000_000, "data": {"object": stripe_customer("cus_NffrFeUfNV2Hib"),
        "previous_attributes": {"email": "old@example.test"}}});
    let sub_event = json!({"id": "evt_1NfWq2LkdIwHu7ixBBBBBBBB", "object": "event",
        "type": "customer.subscription.updated", "created": 1_764_000_001,
        "data": {"object": stripe_subscription("sub_1MowQVLkdIwHu7ixeRlqHVzs", "active", "month")}});
    let error = |typ: &str, code: &str, msg: &str| {
        json!({"error": {"type": typ, "code": code, "message": msg,
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing", "request_log_url": "https://dashboard.stripe.com/logs/req_1"}})
    };
    let corpus = vec![
        case("200", &stripe_customer("cus_NffrFeUfNV2Hib")),
        case(
            "200",
            &json!({"id": "cus_NffrFeUfNV2Hib", "object": "customer", "deleted": true}),
        ),
        case(
            "200",
            &stripe_subscription("sub_1MowQVLkdIwHu7ixeRlqHVzs", "active", "week"),
        ),
        case(
            "200",
            &stripe_subscription("sub_1MowQVLkdIwHu7ixeRlqHVzt", "canceled", "day"),
        ),
        case(
            "200",
            &stripe_list(
                vec![
                    stripe_customer("cus_NffrFeUfNV2Hib"),
                    stripe_customer("cus_4QFJOjw2pOmAGJ"),
                ],
                true,
            ),
        ),
        case(
            "200",
            &stripe_list(
                vec![
                    stripe_subscription("sub_1MowQVLkdIwHu7ixeRlqHVzs", "past_due", "month"),
                    stripe_subscription("sub_1MowQVLkdIwHu7ixeRlqHVzt", "canceled", "year"),
                ],
                false,
            ),
        ),
        case(
            "200",
            &stripe_list(
                vec![
                    stripe_invoice("in_1", "open", 14700, Value::Null),
                    stripe_invoice("in_2", "paid", 0, json!(1_763_995_000)),
                    stripe_invoice("in_3", "open", -500, Value::Null),
                ],
                false,
            ),
        ),
        case("200", &stripe_list(vec![event, sub_event], true)),
        case(
            "200",
            &json!({"object": "search_result", "url": "/v1/customers/search", "has_more": false,
            "data": [stripe_customer("cus_NffrFeUfNV2Hib")], "next_page": null}),
        ),
        case(
            "404",
            &error("invalid_request_error", "resource_missing", "No such customer: 'cus_x'"),
        ),
        case(
            "400",
            &error(
                "invalid_request_error",
                "parameter_unknown",
                "Received unknown parameter: foo",
            ),
        ),
        case("402", &error("card_error", "card_declined", "Your card was declined.")),
        case(
            "409",
            &error(
                "idempotency_error",
                "idempotency_key_in_use",
                "Keys for idempotent requests can only be used with the same parameters",
            ),
        ),
        case(
            "429 retry-after=2",
            &error("invalid_request_error", "rate_limit", "Request rate limit exceeded."),
        ),
        case(
            "429 stripe-should-retry=false",
            &error(
                "invalid_request_error",
                "lock_timeout",
                "This object cannot be accessed right now",
            ),
        ),
        case(
            "400 stripe-should-retry=true",
            &error("api_error", "unknown", "Retry later"),
        ),
        case(
            "401",
            &error(
                "invalid_request_error",
                "api_key_invalid",
                "Invalid API Key provided: sk_test_****",
            ),
        ),
        case(
            "500 retry-after=Wed,_21_Oct_2015_07:28:00_GMT",
            &error("api_error", "", "Something went wrong"),
        ),
        case(
            "503 stripe-should-retry=false",
            &json!({"error": {"type": "api_error"}}),
        ),
        b"502\n<html><body>Bad gateway</body></html>".to_vec(),
        b"200\n".to_vec(),
        b"200\nnot json".to_vec(),
    ];
    let dict = [
        "200 ",
        "201 ",
        "204 ",
        "299 ",
        "400 ",
        "401 ",
        "404 ",
        "429 ",
        "500 ",
        "599 ",
        "retry-after=",
        "stripe-should-retry=false",
        "stripe-should-retry=true",
        "\"id\":",
        "\"id\":\"\"",
        "\"data\":",
        "[]",
        "\"has_more\":true",
        "\"object\":",
        "\"customer\"",
        "\"metadata\":",
        "\"unit_amount\":",
        "\"quantity\":",
        "\"interval\":\"week\"",
        "\"interval\":\"day\"",
        "\"interval_count\":",
        "\"amount_remaining\":",
        "\"paid_at\":",
        "\"current_period_end\":",
        "\"status\":\"open\"",
        "\"error\":",
        "\"message\":",
        "{\"id\":1}",
    ];
    let r = harness::run("connector_stripe_responses", &corpus, &dict, 8192, check_stripe);
    assert!(r.cases >= corpus.len() as u64 && r.secs >= 0.0, "{r:?}");
}

fn hs_object(id: Value, props: Value) -> Value {
    json!({"id": id, "properties": props, "createdAt": "2026-01-01T00:00:00.000Z",
           "updatedAt": "2026-11-27T10:00:00.000Z", "archived": false})
}

#[test]
fn connector_hubspot_responses() {
    let contact = |id: &str| {
        hs_object(
            json!(id),
            json!({"email": "ada@example.test", "lifecyclestage": "customer", "billing_customer_id": "cus_NffrFeUfNV2Hib",
                   "lastmodifieddate": "2026-11-27T10:00:00.000Z", "hs_lastmodifieddate": "2026-11-27T10:00:00.000Z",
                   "hs_object_id": id, "firstname": null, "num_employees": ""}),
        )
    };
    let mut traced = contact("1002");
    traced["objectWriteTraceId"] = "1".into();
    let mut upserted = contact("1003");
    upserted["properties"]["email"] = "B@Example.test".into();
    upserted["new"] = true.into();
    let batch = |results: Vec<Value>, errors: Value| {
        json!({"status": "COMPLETE", "results": results, "numErrors": errors.as_array().map_or(0, Vec::len),
               "errors": errors, "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:01Z"})
    };
    let hs_error = |category: &str, message: &str| {
        json!({"status": "error", "message": message, "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
               "category": category, "links": {"knowledge-base": "https://www.hubspot.com/products/service/knowledge-base"}})
    };
    let corpus = vec![
        case("200", &contact("1001")),
        case("200", &hs_object(json!(5_000_001), json!({"name": "Acme", "domain": "acme.example.test"}))),
        case("200", &json!({"results": [contact("1001"), contact("1002")],
            "paging": {"next": {"after": "1003", "link": "https://api.hubapi.com/crm/v3/objects/contacts?after=1003"}}})),
        case("200", &json!({"total": 2, "results": [contact("1001"), contact("1002")],
            "paging": {"next": {"after": 2}}})),
        case("200", &json!({"total": 0, "results": []})),
        case("200", &batch(vec![contact("1001"), traced], json!([]))),
        case("207", &batch(vec![contact("1001")], json!([
            {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some CONTACT objects",
             "context": {"ids": ["1002"]}, "errors": [], "links": {}},
            {"status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid",
             "context": {"objectWriteTraceId": ["2"]}},
            {"status": "error", "category": "RATE_LIMITS", "message": "slow down", "objectWriteTraceId": "0"},
            {"status": "error", "category": "INTERNAL_ERROR", "message": "oops", "context": {"ids": [5000001]}}]))),
        case("200", &batch(vec![upserted], json!([]))),
        b"204\n".to_vec(),
        case("400", &hs_error("VALIDATION_ERROR", "Property values were not valid")),
        case("404", &hs_error("OBJECT_NOT_FOUND", "resource not found")),
        case("409", &hs_error("CONFLICT", "A property named billing_customer_id already exists")),
        case("401", &hs_error("INVALID_AUTHENTICATION", "Authentication credentials not found")),
        case(
            "429 x-hubspot-ratelimit-max=190 x-hubspot-ratelimit-remaining=0 x-hubspot-ratelimit-interval-milliseconds=10000",
            &json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING", "category": "RATE_LIMITS"}),
        ),
        case("429 retry-after=1", &json!({"status": "error", "policyName": "DAILY", "category": "RATE_LIMITS"})),
        case("502", &json!({"message": "bad gateway"})),
        b"200\n<html>maintenance</html>".to_vec(),
        b"400\nnot json".to_vec(),
    ];
    let dict = [
        "200 ",
        "204 ",
        "207 ",
        "400 ",
        "404 ",
        "429 ",
        "503 ",
        "retry-after=",
        "x-hubspot-ratelimit-max=",
        "x-hubspot-ratelimit-remaining=0",
        "x-hubspot-ratelimit-interval-milliseconds=",
        "\"id\":",
        "\"id\":\"\"",
        "\"properties\":",
        "\"results\":",
        "\"errors\":",
        "\"context\":",
        "\"ids\":",
        "\"objectWriteTraceId\":",
        "\"total\":",
        "\"paging\":",
        "\"after\":",
        "\"category\":",
        "\"new\":true",
        "\"lastmodifieddate\":",
        "\"email\":",
        "[\"1001\"]",
        "\"18446744073709551615\"",
    ];
    let r = harness::run("connector_hubspot_responses", &corpus, &dict, 8192, check_hubspot);
    assert!(r.cases >= corpus.len() as u64 && r.secs >= 0.0, "{r:?}");
}
