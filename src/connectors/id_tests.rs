//! Ids reach provider URLs only checked and percent-encoded: a malformed id (a CRM user's
//! `x/../../v1/charges` in `billing_customer_id`, an id in an event, a subscription id in an
//! answer) is an `InvalidId` error and no request goes out; a well-formed one still works.
//! Over real HTTP against a recording server on 127.0.0.1.

use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Value};

use super::hubspot::{self, HubspotClient};
use super::stripe::{self, StripeClient};
use super::{path_segment, BatchUpdate, BillingApi, ConnectorError, CrmApi, Fields, PropertyDef};
use crate::contract::CrmObject;

/// Every request's method and raw path (as sent, before any decoding).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Answers every request with `answer(method, path)` (status 200) and records it.
async fn recorder(answer: fn(&str, &str) -> Value) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let log = log.clone();
        async move {
            let path = uri.path().to_string();
            log.lock().unwrap().push((method.to_string(), path.clone()));
            (StatusCode::OK, axum::Json(answer(method.as_str(), &path)))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen)
}

/// Ids no provider makes, each a different way to leave the intended path or object.
const BAD_CUSTOMER_IDS: &[&str] = &[
    "x/../../v1/charges",
    "cus_1/../../v1/charges",
    "..",
    "",
    "cus_",
    "cus_a?expand[]=x",
    "cus_a#b",
    "cus_%2e%2e",
    "cus_a b",
    "cus_ü",
    "sub_123",
    "CUS_123",
];

fn assert_invalid(e: &ConnectorError, what: &str, id: &str) {
    assert!(
        matches!(e, ConnectorError::InvalidId { what: w, id: i, .. } if *w == what && i == id),
        "{e:?}"
    );
    assert_eq!(
        (e.class(), e.status(), e.retryable(), e.body()),
        ("validation", None, false, None)
    );
}

fn stripe_answer(method: &str, path: &str) -> Value {
    match (method, path) {
        ("GET", "/v1/subscriptions") => json!({"object": "list", "has_more": false, "data": [
            {"id": "../customers/cus_victim", "object": "subscription", "status": "active",
             "items": {"data": [{"id": "si_1", "price": {"id": "price_1", "lookup_key": "basic"}}]}}]}),
        ("GET", "/v1/prices") => json!({"object": "list", "data": [{"id": "price_2", "lookup_key": "pro"}]}),
        ("GET", "/v1/invoices") => json!({"object": "list", "has_more": false, "data": []}),
        _ => json!({"id": "cus_Abc123", "object": "customer", "email": "a@b.test", "metadata": {}}),
    }
}

#[tokio::test]
async fn a_malformed_billing_id_sends_nothing_and_a_well_formed_one_works() {
    let (base, seen) = recorder(stripe_answer).await;
    let c = StripeClient::new(&base, "sk_test_x".into(), 2_000).unwrap();
    let fields: Fields = [("email".to_string(), Some("a@b.test".to_string()))].into();
    let plan: Fields = [("plan".to_string(), Some("pro".to_string()))].into();
    for &id in BAD_CUSTOMER_IDS {
        let what = "billing customer id";
        assert_invalid(&c.get_customer(id).await.unwrap_err(), what, id);
        assert_invalid(&c.update_customer(id, "k", &fields).await.unwrap_err(), what, id);
        assert_invalid(&c.subscription_summary(id).await.unwrap_err(), what, id);
        assert_invalid(&c.invoice_summary(id).await.unwrap_err(), what, id);
        assert_invalid(&c.change_plan(id, "k", &plan).await.unwrap_err(), what, id);
    }
    let long = format!("cus_{}", "a".repeat(252));
    assert_invalid(&c.get_customer(&long).await.unwrap_err(), "billing customer id", &long);
    assert!(seen.lock().unwrap().is_empty(), "sent: {:?}", seen.lock().unwrap());

    // Well-formed ids go through (the longest one too).
    let ok = format!("cus_{}", "a".repeat(251));
    assert_eq!(c.get_customer("cus_Abc123").await.unwrap().unwrap().id, "cus_Abc123");
    c.update_customer(&ok, "k", &fields).await.unwrap();
    c.invoice_summary("cus_Abc123").await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("GET".to_string(), "/v1/customers/cus_Abc123".to_string()),
            ("POST".to_string(), format!("/v1/customers/{ok}")),
            ("GET".to_string(), "/v1/invoices".to_string()),
        ]
    );

    // A subscription id from an answer is checked too: no POST to another path.
    seen.lock().unwrap().clear();
    let e = c.change_plan("cus_Abc123", "k", &plan).await.unwrap_err();
    assert_invalid(&e, "billing subscription id", "../customers/cus_victim");
    assert_eq!(
        e.to_string(),
        "billing subscription id \"../customers/cus_victim\" is not a Stripe id (expected sub_ followed by letters \
         and digits, 255 characters at most)"
    );
    assert!(
        seen.lock().unwrap().iter().all(|(m, _)| m == "GET"),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[test]
fn the_invalid_id_message_names_the_field_the_value_and_the_form() {
    let e = stripe::CUSTOMER_ID.validate("x/../../v1/charges").unwrap_err();
    assert_eq!(
        e.to_string(),
        "billing customer id \"x/../../v1/charges\" is not a Stripe id (expected cus_ followed by letters and \
         digits, 255 characters at most)"
    );
    assert_eq!(e.system(), "billing");
    // Quotes and control characters are escaped; a long value is cut.
    let e = hubspot::CONTACT_ID.validate("1\"\n2").unwrap_err();
    assert_eq!(
        e.to_string(),
        "crm contact id \"1\\\"\\n2\" is not a HubSpot record id (expected decimal digits, 20 at most)"
    );
    let e = hubspot::PROPERTY_NAME.validate(&"x".repeat(150)).unwrap_err();
    assert!(e.to_string().contains(&format!("\"{}…\"", "x".repeat(100))), "{e}");
}

#[test]
fn id_forms_accept_what_the_providers_and_their_fakes_make() {
    // Stripe (14 and 24 characters after the prefix), localstripe (14), the simulator.
    for id in ["cus_NffrFeUfNV2Hib", "cus_4QFJOjw2pOmAGJ", "cus_scale0000001", "cus_1"] {
        assert!(stripe::is_stripe_id("cus_", id), "{id}");
    }
    assert!(stripe::is_stripe_id("sub_", "sub_1MowQVLkdIwHu7ixeRlqHVzs"));
    for id in [
        "cus", "cus_", "cus__a", "cus_a_b", "cus_a-b", "sub_1", " cus_1", "cus_1\n",
    ] {
        assert!(!stripe::is_stripe_id("cus_", id), "{id}");
    }
    // HubSpot ids: digits (the simulator's from 1001 / 5000001, Prism's example 512).
    for id in ["1", "512", "1001", "5000001", "18446744073709551615"] {
        assert!(hubspot::is_record_id(id), "{id}");
    }
    for id in ["", "-1", "1.5", "1e3", "abc", "512/../1", "123456789012345678901", "٣"] {
        assert!(!hubspot::is_record_id(id), "{id}");
    }
    for name in ["email", "billing_customer_id", "hs_lastmodifieddate", "x1"] {
        assert!(hubspot::is_property_name(name), "{name}");
    }
    for name in ["", "Email", "a-b", "a/b", "..", "a.b"] {
        assert!(!hubspot::is_property_name(name), "{name}");
    }
}

#[test]
fn path_segments_are_percent_encoded_so_the_url_keeps_them_one_segment() {
    assert_eq!(path_segment("x/../../v1/charges"), "x%2F..%2F..%2Fv1%2Fcharges");
    assert_eq!(path_segment("a b?c#d%e&f=g"), "a%20b%3Fc%23d%25e%26f%3Dg");
    assert_eq!(path_segment("ü"), "%C3%BC");
    assert_eq!(path_segment("Az09-._~"), "Az09-._~");
    // What the encoding prevents: the URL parser resolves `..` in a raw id.
    let raw = reqwest::Url::parse("http://h/v1/customers/x/../../v1/charges").unwrap();
    assert_eq!(raw.path(), "/v1/v1/charges");
    let encoded =
        reqwest::Url::parse(&format!("http://h/v1/customers/{}", path_segment("x/../../v1/charges"))).unwrap();
    assert_eq!(encoded.path(), "/v1/customers/x%2F..%2F..%2Fv1%2Fcharges");
}

fn hubspot_answer(_method: &str, path: &str) -> Value {
    if path.ends_with("/batch/read") || path.ends_with("/batch/update") {
        json!({"status": "COMPLETE", "results": [{"id": "7", "properties": {"email": "a@b.test"}}],
               "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:01Z"})
    } else {
        json!({"id": "7", "properties": {"email": "a@b.test"}})
    }
}

#[tokio::test]
async fn a_malformed_crm_id_or_property_name_sends_nothing_and_a_well_formed_one_works() {
    let (base, seen) = recorder(hubspot_answer).await;
    let c = HubspotClient::new(&base, "pat-x".into(), 2_000).unwrap();
    let fields: Fields = [("email".to_string(), Some("a@b.test".to_string()))].into();
    for id in [
        "512/../../properties/contacts",
        "..",
        "",
        "7?archived=true",
        "abc",
        "7 ",
        "-7",
    ] {
        for (kind, what) in [
            (CrmObject::Contact, "crm contact id"),
            (CrmObject::Company, "crm company id"),
        ] {
            assert_invalid(&c.get_record(kind, id, &[]).await.unwrap_err(), what, id);
            assert_invalid(&c.update_record(kind, id, &fields).await.unwrap_err(), what, id);
        }
    }
    for name in ["../../objects/contacts/7", "Billing", "a b", ""] {
        let defs = [
            PropertyDef {
                object: CrmObject::Contact,
                name: "billing_customer_id".into(),
                label: "Billing".into(),
            },
            PropertyDef {
                object: CrmObject::Contact,
                name: name.into(),
                label: "Bad".into(),
            },
        ];
        assert_invalid(
            &c.ensure_properties(&defs).await.unwrap_err(),
            "crm property name",
            name,
        );
    }
    // Batch inputs: a malformed id is that input's own refusal, never sent; the rest are.
    let ids: Vec<String> = ["7", "x/../8", "9"].map(String::from).to_vec();
    let all_bad: Vec<String> = vec!["..".into()];
    let out = c.batch_read(CrmObject::Contact, &all_bad, &[]).await;
    assert!(
        matches!(&out[0], Err(e) if !e.whole_call && e.error.class() == "validation"),
        "{out:?}"
    );
    assert!(seen.lock().unwrap().is_empty(), "sent: {:?}", seen.lock().unwrap());

    let out = c.batch_read(CrmObject::Contact, &ids, &[]).await;
    assert_eq!(out[0].as_ref().unwrap().as_ref().unwrap().id, "7");
    let e = out[1].as_ref().unwrap_err();
    assert!(!e.whole_call);
    assert_invalid(&e.error, "crm contact id", "x/../8");
    assert_eq!(out[2].as_ref().unwrap(), &None);
    let updates: Vec<BatchUpdate> = ids
        .iter()
        .map(|id| BatchUpdate {
            id: id.clone(),
            fields: fields.clone(),
        })
        .collect();
    let out = c.batch_update(CrmObject::Company, &updates).await;
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_ref().unwrap().id, "7");
    assert_invalid(&out[1].as_ref().unwrap_err().error, "crm company id", "x/../8");
    assert!(
        out[2].as_ref().is_err_and(|e| e.error.class() == "garbage"),
        "unanswered"
    );

    assert_eq!(
        c.get_record(CrmObject::Contact, "7", &[]).await.unwrap().unwrap().id,
        "7"
    );
    c.update_record(CrmObject::Company, "18446744073709551615", &fields)
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("POST", "/crm/v3/objects/contacts/batch/read"),
            ("POST", "/crm/v3/objects/companies/batch/update"),
            ("GET", "/crm/v3/objects/contacts/7"),
            ("PATCH", "/crm/v3/objects/companies/18446744073709551615"),
        ]
        .map(|(m, p)| (m.to_string(), p.to_string()))
    );
}
