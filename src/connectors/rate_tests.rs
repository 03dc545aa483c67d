//! The connectors' side of rate limiting, over real HTTP against a canned server on
//! 127.0.0.1: how each provider's 429 is classified and that HubSpot's rate-limit headers
//! reach the budget on every response.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;

use super::headers::{RateHeaders, RateObserver};
use super::hubspot::HubspotClient;
use super::stripe::StripeClient;
use super::{BillingApi, ConnectorError, CrmApi};
use crate::contract::CrmObject;

/// Serve one canned answer (status, headers, body) to every request; returns the base URL.
async fn canned(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> String {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let status = StatusCode::from_u16(status).expect("status");
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move { (status, h, body).into_response() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

const STRIPE_429: &str =
    r#"{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Request rate limit exceeded."}}"#;

#[tokio::test]
async fn stripe_429_is_retried_unless_stripe_says_not_to() {
    let url = canned(429, &[("stripe-should-retry", "false")], STRIPE_429).await;
    let c = StripeClient::new(&url, "sk_test_x".into(), 2_000).expect("client");
    let e = c.get_customer("cus_1").await.expect_err("429");
    assert!(!e.retryable(), "{e:?}");
    assert!(
        matches!(&e, ConnectorError::Rejected { status: 429, code, .. } if code == "should_not_retry"),
        "{e:?}"
    );
    assert!(e.to_string().contains("Stripe-Should-Retry: false"), "{e}");

    let url = canned(
        429,
        &[("stripe-should-retry", "true"), ("retry-after", "3")],
        STRIPE_429,
    )
    .await;
    let c = StripeClient::new(&url, "sk_test_x".into(), 2_000).expect("client");
    let e = c.get_customer("cus_1").await.expect_err("429");
    assert!(e.retryable(), "{e:?}");
    assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(3)));

    // No guidance at all: retryable, and the budget decides how long (AIMD).
    let url = canned(429, &[], STRIPE_429).await;
    let c = StripeClient::new(&url, "sk_test_x".into(), 2_000).expect("client");
    let e = c.get_customer("cus_1").await.expect_err("429");
    assert!(
        matches!(
            e,
            ConnectorError::RateLimited {
                retry_after_ms: None,
                ..
            }
        ),
        "{e:?}"
    );
}

#[derive(Default)]
struct Seen(Mutex<Vec<RateHeaders>>);

impl RateObserver for Seen {
    fn observe(&self, h: &RateHeaders) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(*h);
    }
}

const HS_HEADERS: &[(&str, &str)] = &[
    ("x-hubspot-ratelimit-max", "100"),
    ("x-hubspot-ratelimit-remaining", "7"),
    ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
    ("x-hubspot-ratelimit-daily", "250000"),
    ("x-hubspot-ratelimit-daily-remaining", "1234"),
];

#[tokio::test]
async fn hubspot_rate_headers_reach_the_budget_on_every_response() {
    let url = canned(
        200,
        HS_HEADERS,
        r#"{"id":"1","properties":{"email":"a@example.test"},"createdAt":"2024-01-01T00:00:00Z","updatedAt":"2024-01-01T00:00:00Z","archived":false}"#,
    )
    .await;
    let c = HubspotClient::new(&url, "pat".into(), 2_000).expect("client");
    let seen = Arc::new(Seen::default());
    c.observe_rates(seen.clone());
    let rec = c
        .get_record(CrmObject::Contact, "1", &["email".into()])
        .await
        .expect("record");
    assert!(rec.is_some());
    let got = seen.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        got,
        vec![RateHeaders {
            max: Some(100),
            remaining: Some(7),
            interval_ms: Some(10_000),
            daily: Some(250_000),
            daily_remaining: Some(1_234),
        }]
    );
}

#[tokio::test]
async fn hubspot_429_waits_a_slot_by_its_headers_and_a_daily_429_empties_the_day() {
    let url = canned(
        429,
        &[
            ("x-hubspot-ratelimit-max", "100"),
            ("x-hubspot-ratelimit-remaining", "0"),
            ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
        ],
        r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#,
    )
    .await;
    let c = HubspotClient::new(&url, "pat".into(), 2_000).expect("client");
    let seen = Arc::new(Seen::default());
    c.observe_rates(seen.clone());
    let e = c.get_record(CrmObject::Contact, "1", &[]).await.expect_err("429");
    // The window is full: one slot (10 000 ms / 100) is the guidance.
    assert!(
        matches!(
            e,
            ConnectorError::RateLimited {
                retry_after_ms: Some(100),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(seen.0.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);

    let url = canned(
        429,
        &[],
        r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#,
    )
    .await;
    let c = HubspotClient::new(&url, "pat".into(), 2_000).expect("client");
    let seen = Arc::new(Seen::default());
    c.observe_rates(seen.clone());
    let e = c.get_record(CrmObject::Contact, "1", &[]).await.expect_err("429");
    // No rate header, no Retry-After: no invented wait (the budget's AIMD decides), and the
    // DAILY policy tells the budget nothing is left today.
    assert!(
        matches!(
            e,
            ConnectorError::RateLimited {
                retry_after_ms: None,
                ..
            }
        ),
        "{e:?}"
    );
    let got = seen.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].daily_remaining, Some(0));
}
