//! Webhook verifiers and parsers under mutation: `ingest::stripe::{verify, parse_event}` and
//! `ingest::hubspot::{verify, parse_events}`.
//!
//! A fuzz input is a structured case: for Stripe `<Stripe-Signature header>\n<body>`, for
//! HubSpot `<X-HubSpot-Request-Timestamp>\n<X-HubSpot-Signature-v3>\n<body>`, so one
//! mutation lands in a header, a timestamp or the body. The corpus holds real-shaped
//! deliveries signed at `NOW` with the secret; mutations keep the original signature, so
//! almost every mutated case must be refused. Properties:
//! - nothing panics (overflow checks are on in the fuzz profile);
//! - `verify` agrees with an independent oracle (exactly one timestamp, within the
//!   tolerance computed without overflow, and a signature that is the HMAC of the bytes as
//!   sent): a mutated body, header or timestamp carrying the original signature verifies only
//!   when the signed bytes are unchanged; explicitly, the case's body with one byte changed
//!   and its timestamp moved by one never verify under the case's signature;
//! - the case's body signed correctly with the current timestamp always verifies;
//! - parsing answers events or a `Malformed` error, and every event has a non-empty event id,
//!   object id and billing id (when set), an entity key that reads back as its object, side
//!   and id, and a payload that is JSON.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use driftless::contract::Side;
use driftless::ingest::{self, hubspot, stripe, IngestError, Routes};
use driftless::ledger::NewEvent;

use crate::harness;

const STRIPE_SECRET: &str = "whsec_fuzzSecret0123456789";
const HUBSPOT_SECRET: &str = "b6c1d7e0-hubspot-client-secret";
/// The verifier's clock (seconds), with the corpus signed at it.
const NOW: i64 = 1_764_000_000;
const NOW_MS: i64 = NOW * 1000 + 123;
const URI: &str = "https://sync.example.test/webhooks/hubspot";

fn hmac(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn routes() -> [Routes; 2] {
    [
        Routes::default(),
        Routes {
            contact: "customer".into(),
            company: Some("account".into()),
        },
    ]
}

/// What every parsed event must satisfy.
fn check_event(e: &NewEvent, side: Side) -> Result<(), String> {
    if e.event_id.is_empty() || e.object_id.is_empty() {
        return Err(format!("an event with an empty id: {e:?}"));
    }
    if e.source != side {
        return Err(format!("an event from the wrong side: {e:?}"));
    }
    if e.billing_id.as_deref() == Some("") {
        return Err(format!("an empty billing id: {e:?}"));
    }
    match ingest::parse_entity_key(&e.entity_key) {
        Some((object, _, id)) if !object.is_empty() && !id.is_empty() && object == e.identity_object => {}
        other => return Err(format!("entity key {:?} reads back as {other:?} ({e:?})", e.entity_key)),
    }
    if serde_json::from_str::<Value>(&e.payload).is_err() {
        return Err(format!("payload is not JSON: {:?}", e.payload));
    }
    Ok(())
}

fn check_error_text(e: &IngestError) -> Result<(), String> {
    let text = e.to_string();
    if text.is_empty() || text.contains("Some(") || e.code().is_empty() {
        return Err(format!("an unhelpful error: {text:?}"));
    }
    Ok(())
}

// ---- Stripe --------------------------------------------------------------------------

fn stripe_header(t: &str, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(hmac(STRIPE_SECRET, &[t.as_bytes(), b".", body]))
    )
}

/// The oracle: does `header` carry a valid, fresh signature of `body`?
fn stripe_oracle(header: &str, body: &[u8]) -> bool {
    let mut t: Vec<&str> = Vec::new();
    let mut v1: Vec<&str> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return false;
        };
        match k {
            "t" => t.push(v),
            "v1" => v1.push(v),
            _ => {}
        }
    }
    let [t_text] = t[..] else { return false };
    let Ok(ts) = t_text.parse::<i64>() else {
        return false;
    };
    if (i128::from(NOW) - i128::from(ts)).abs() > 300 {
        return false;
    }
    let want = hmac(STRIPE_SECRET, &[t_text.as_bytes(), b".", body]);
    v1.iter().any(|s| hex::decode(s).is_ok_and(|b| b == want))
}

fn split_once_nl(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|b| *b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[]),
    }
}

fn check_stripe(input: &[u8]) -> Result<(), String> {
    let (header, body) = split_once_nl(input);
    let header = String::from_utf8_lossy(header);
    let got = stripe::verify(STRIPE_SECRET, &header, body, NOW);
    let want = stripe_oracle(&header, body);
    match (&got, want) {
        (Ok(()), false) => return Err(format!("verified although the oracle refuses: {header:?}")),
        (Err(e), true) => return Err(format!("refused a valid signature: {e}")),
        (Err(e), false) => check_error_text(e)?,
        (Ok(()), true) => {}
    }
    if got.is_ok() {
        // The same signature over other bytes: never.
        if let Some((last, rest)) = body.split_last() {
            let mut changed = rest.to_vec();
            changed.push(last ^ 0x01);
            if stripe::verify(STRIPE_SECRET, &header, &changed, NOW).is_ok() {
                return Err("a changed body verified under the original signature".into());
            }
        }
        let moved = header.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        if moved != header && stripe::verify(STRIPE_SECRET, &moved, body, NOW).is_ok() {
            return Err("a moved timestamp verified under the original signature".into());
        }
    }
    // Any body signed correctly now verifies (also a few seconds off, either way).
    let skew = (body.len() % 600) as i64 - 300;
    for t in [NOW, NOW + skew] {
        if let Err(e) = stripe::verify(STRIPE_SECRET, &stripe_header(&t.to_string(), body), body, NOW) {
            return Err(format!(
                "a correctly signed body at t = now {:+} was refused: {e}",
                t - NOW
            ));
        }
    }
    for r in &routes() {
        match stripe::parse_event(body, "webhook", NOW_MS, r) {
            Ok(e) => check_event(&e, Side::Billing)?,
            Err(e @ IngestError::Malformed { .. }) => check_error_text(&e)?,
            Err(e) => return Err(format!("parse failed with a non-parse error: {e}")),
        }
    }
    Ok(())
}

fn customer(id: &str, meta: Value) -> Value {
    json!({
        "id": id, "object": "customer", "address": null, "balance": 0, "created": NOW - 86_400,
        "currency": "usd", "default_source": null, "delinquent": false, "description": null,
        "discount": null, "email": "ada@example.test", "invoice_prefix": "4F2A9C1B",
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null},
        "livemode": false, "metadata": meta, "name": "Ada Lovelace", "phone": "+44 20 7946 0958",
        "preferred_locales": ["en"], "shipping": null, "tax_exempt": "none", "test_clock": null,
    })
}

fn subscription(id: &str, cus: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "subscription", "customer": cus, "status": status, "cancel_at_period_end": false,
        "current_period_start": NOW - 86_400, "current_period_end": NOW + 29 * 86_400, "created": NOW - 86_400,
        "items": {"object": "list", "has_more": false, "data": [{
            "id": "si_Nx3Yq8Zr2Lk1Pw", "object": "subscription_item", "quantity": 3,
            "price": {"id": "price_1NfWq2LkdIwHu7ixAbCdEf12", "object": "price", "lookup_key": "pro",
                      "unit_amount": 4900, "currency": "usd",
                      "recurring": {"interval": "month", "interval_count": 1}}}]},
        "metadata": {"driftless_crm_contact_id": "1001"},
    })
}

fn invoice(id: &str, cus: Value, status: &str) -> Value {
    json!({
        "id": id, "object": "invoice", "customer": cus, "status": status, "amount_due": 14700,
        "amount_paid": 0, "amount_remaining": 14700, "currency": "usd", "number": "4F2A9C1B-0001",
        "subscription": "sub_1MowQVLkdIwHu7ixeRlqHVzs", "created": NOW - 3600,
        "status_transitions": {"finalized_at": NOW - 3600, "paid_at": null, "voided_at": null},
        "lines": {"object": "list", "data": [{"id": "il_1abc", "amount": 14700, "quantity": 3}]},
    })
}

fn stripe_event(id: &str, typ: &str, object: Value, prev: Option<Value>) -> Value {
    let mut data = json!({ "object": object });
    if let Some(p) = prev {
        data["previous_attributes"] = p;
    }
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": NOW - 2, "data": data,
        "livemode": false, "pending_webhooks": 1,
        "request": {"id": "req_Yq2Lk1PwNx3Zr8", "idempotency_key": "billing:create:1001:7"}, "type": typ,
    })
}

/// Real-shaped Stripe events: customers (linked to a contact, to a company, unlinked),
/// subscriptions, invoices (customer as id and expanded), a credit note, an unmapped object.
pub fn stripe_bodies() -> Vec<Vec<u8>> {
    let cus = "cus_NffrFeUfNV2Hib";
    let linked = json!({"driftless_crm_contact_id": "1001", "driftless_origin": "crm",
                        "driftless_correlation_id": "c0ffee00-1111-2222-3333-444455556666",
                        "lifecycle_stage": "customer"});
    let events = [
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixAAAAAAAA",
            "customer.created",
            customer(cus, linked.clone()),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixBBBBBBBB",
            "customer.updated",
            customer(cus, linked),
            Some(json!({"email": "old@example.test", "metadata": {"lifecycle_stage": "lead"}})),
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixCCCCCCCC",
            "customer.updated",
            customer("cus_Company00000001", json!({"driftless_crm_company_id": "5000001"})),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixDDDDDDDD",
            "customer.deleted",
            customer(cus, json!({})),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixEEEEEEEE",
            "customer.subscription.created",
            subscription("sub_1MowQVLkdIwHu7ixeRlqHVzs", cus, "active"),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixFFFFFFFF",
            "customer.subscription.updated",
            subscription("sub_1MowQVLkdIwHu7ixeRlqHVzs", cus, "past_due"),
            Some(json!({"status": "active"})),
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixGGGGGGGG",
            "customer.subscription.deleted",
            subscription("sub_1MowQVLkdIwHu7ixeRlqHVzs", cus, "canceled"),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixHHHHHHHH",
            "invoice.finalized",
            invoice("in_1Abc", json!(cus), "open"),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixIIIIIIII",
            "invoice.paid",
            invoice("in_1Abc", json!({"id": cus, "object": "customer"}), "paid"),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixJJJJJJJJ",
            "invoice.payment_failed",
            invoice("in_1Def", json!(cus), "open"),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixKKKKKKKK",
            "credit_note.created",
            json!({"id": "cn_1Abc", "object": "credit_note", "customer": cus, "invoice": "in_1Abc",
                   "amount": 4900, "status": "issued"}),
            None,
        ),
        stripe_event(
            "evt_1NfWq2LkdIwHu7ixLLLLLLLL",
            "charge.succeeded",
            json!({"id": "ch_3Abc", "object": "charge", "amount": 14700, "customer": cus}),
            None,
        ),
    ];
    events.iter().map(|e| serde_json::to_vec(e).expect("JSON")).collect()
}

#[test]
fn webhook_stripe() {
    let mut corpus = Vec::new();
    for (i, body) in stripe_bodies().into_iter().enumerate() {
        let now = NOW.to_string();
        let signed = stripe_header(&now, &body);
        let header = match i % 4 {
            0 => signed,
            // A rolled secret: an old signature first, a v0 beside.
            1 => format!(
                "t={now},v1={},{},v0={}",
                hex::encode([7u8; 32]),
                signed.replacen(&format!("t={now},"), "", 1),
                hex::encode([9u8; 32])
            ),
            2 => format!(" {} ", signed.replace(',', " , ")),
            _ => stripe_header(&(NOW - 299).to_string(), &body),
        };
        let mut case = header.into_bytes();
        case.push(b'\n');
        case.extend_from_slice(&body);
        corpus.push(case);
    }
    // Pretty-printed JSON (Stripe sends it so) and a body that is not an event.
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&stripe_bodies()[0]).expect("JSON")).expect("JSON");
    for body in [pretty, b"[]".to_vec()] {
        let mut case = stripe_header(&NOW.to_string(), &body).into_bytes();
        case.push(b'\n');
        case.extend_from_slice(&body);
        corpus.push(case);
    }
    let dict = [
        "t=",
        "v1=",
        "v0=",
        ",",
        "=",
        "\n",
        "t=1764000000",
        "t=1764000300",
        "t=-1",
        "t=01764000000",
        "\"id\":",
        "\"object\":",
        "\"event\"",
        "\"customer\"",
        "\"subscription\"",
        "\"invoice\"",
        "\"data\":",
        "\"metadata\":",
        "\"driftless_crm_contact_id\"",
        "\"driftless_crm_company_id\"",
        "\"type\":",
        "\"\"",
        ":",
        "cus_",
        "sub_",
        "in_",
        "evt_",
        "{\"id\":\"\"}",
        "\"customer\":{\"id\":\"\"}",
    ];
    let r = harness::run("webhook_stripe", &corpus, &dict, 8192, check_stripe);
    assert!(r.cases >= corpus.len() as u64 && r.secs >= 0.0, "{r:?}");
}

// ---- HubSpot -------------------------------------------------------------------------

fn hubspot_signature(ts: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(hmac(HUBSPOT_SECRET, &[b"POST", URI.as_bytes(), body, ts.as_bytes()]))
}

fn hubspot_oracle(ts: &str, sig: &str, body: &[u8]) -> bool {
    let ts = ts.trim();
    let Ok(t) = ts.parse::<i64>() else { return false };
    if (i128::from(NOW_MS) - i128::from(t)).abs() > 300_000 {
        return false;
    }
    sig.trim() == hubspot_signature(ts, body)
}

fn check_hubspot(input: &[u8]) -> Result<(), String> {
    let (ts, rest) = split_once_nl(input);
    let (sig, body) = split_once_nl(rest);
    let (ts, sig) = (String::from_utf8_lossy(ts), String::from_utf8_lossy(sig));
    let got = hubspot::verify(HUBSPOT_SECRET, "POST", URI, body, &sig, &ts, NOW_MS);
    let want = hubspot_oracle(&ts, &sig, body);
    match (&got, want) {
        (Ok(()), false) => return Err(format!("verified although the oracle refuses: ts {ts:?} sig {sig:?}")),
        (Err(e), true) => return Err(format!("refused a valid signature: {e}")),
        (Err(e), false) => check_error_text(e)?,
        (Ok(()), true) => {}
    }
    if got.is_ok() {
        if let Some((last, rest)) = body.split_last() {
            let mut changed = rest.to_vec();
            changed.push(last ^ 0x01);
            if hubspot::verify(HUBSPOT_SECRET, "POST", URI, &changed, &sig, &ts, NOW_MS).is_ok() {
                return Err("a changed body verified under the original signature".into());
            }
        }
        if let Ok(t) = ts.trim().parse::<i64>() {
            let moved = t.wrapping_add(1).to_string();
            if hubspot::verify(HUBSPOT_SECRET, "POST", URI, body, &sig, &moved, NOW_MS).is_ok() {
                return Err("a moved timestamp verified under the original signature".into());
            }
        }
        if hubspot::verify(HUBSPOT_SECRET, "PUT", URI, body, &sig, &ts, NOW_MS).is_ok() {
            return Err("another method verified under the original signature".into());
        }
    }
    let skew = (body.len() % 600_000) as i64 - 300_000;
    for t in [NOW_MS, NOW_MS + skew] {
        let t = t.to_string();
        if let Err(e) = hubspot::verify(
            HUBSPOT_SECRET,
            "POST",
            URI,
            body,
            &hubspot_signature(&t, body),
            &t,
            NOW_MS,
        ) {
            return Err(format!("a correctly signed body at {t} was refused: {e}"));
        }
    }
    for r in &routes() {
        match hubspot::parse_events(body, "webhook", NOW_MS, r) {
            Ok(events) => {
                for e in &events {
                    check_event(e, Side::Crm)?;
                }
            }
            Err(e @ IngestError::Malformed { .. }) => check_error_text(&e)?,
            Err(e) => return Err(format!("parse failed with a non-parse error: {e}")),
        }
    }
    Ok(())
}

fn hs_event(event_id: u64, typ: &str, object_id: Value, prop: Option<(&str, &str)>) -> Value {
    let mut e = json!({
        "eventId": event_id, "subscriptionId": 2_134_567, "portalId": 62_515, "appId": 1_160_452,
        "occurredAt": NOW_MS - 1500, "subscriptionType": typ, "attemptNumber": 0, "objectId": object_id,
        "changeSource": "CRM_UI", "sourceId": "userId:9870001",
    });
    if let Some((name, value)) = prop {
        e["propertyName"] = name.into();
        e["propertyValue"] = value.into();
    }
    e
}

/// Real-shaped HubSpot deliveries: contact and company creations and property changes, one
/// and several per delivery, ids as numbers and strings, a deletion, an association change.
pub fn hubspot_bodies() -> Vec<Vec<u8>> {
    let deliveries = [
        json!([hs_event(
            1001,
            "contact.propertyChange",
            json!(1001),
            Some(("email", "ada@example.test"))
        )]),
        json!([
            hs_event(1002, "contact.creation", json!(1002), None),
            hs_event(
                1003,
                "contact.propertyChange",
                json!(1002),
                Some(("lifecyclestage", "customer"))
            ),
            hs_event(
                1004,
                "company.propertyChange",
                json!(5_000_001),
                Some(("name", "Zoë \"Z\" & Co\n"))
            ),
        ]),
        json!([hs_event(1005, "company.creation", json!("5000002"), None)]),
        json!([hs_event(1006, "contact.deletion", json!(1001), None)]),
        json!([hs_event(4_294_967_297, "contact.privacyDeletion", json!(1003), None)]),
        json!([hs_event(
            1007,
            "contact.propertyChange",
            json!(1004),
            Some(("billing_customer_id", "cus_NffrFeUfNV2Hib"))
        )]),
        json!([{"eventId": 1008, "subscriptionId": 2_134_568, "portalId": 62_515, "appId": 1_160_452,
                "occurredAt": NOW_MS, "subscriptionType": "contact.associationChange", "attemptNumber": 0,
                "changeSource": "USER", "associationType": "CONTACT_TO_COMPANY", "fromObjectId": 1001,
                "toObjectId": 5_000_001, "associationRemoved": false, "isPrimaryAssociation": true}]),
        json!([hs_event(
            1009,
            "deal.propertyChange",
            json!(77),
            Some(("amount", "100"))
        )]),
        json!([]),
    ];
    deliveries
        .iter()
        .map(|d| serde_json::to_vec(d).expect("JSON"))
        .collect()
}

#[test]
fn webhook_hubspot() {
    let mut corpus = Vec::new();
    for (i, body) in hubspot_bodies().into_iter().enumerate() {
        let ts = match i % 3 {
            0 => NOW_MS,
            1 => NOW_MS - 299_000,
            _ => NOW_MS + 1_000,
        }
        .to_string();
        let mut case = format!("{ts}\n{}\n", hubspot_signature(&ts, &body)).into_bytes();
        case.extend_from_slice(&body);
        corpus.push(case);
    }
    let dict = [
        "\n",
        "=",
        "==",
        "+",
        "/",
        "1764000000123",
        "1764000300123",
        "-1764000000123",
        "\"eventId\":",
        "\"objectId\":",
        "\"subscriptionType\":",
        "\"contact.propertyChange\"",
        "\"company.creation\"",
        "\"contact.\"",
        "\".\"",
        "\":\"",
        "\"\"",
        "\"propertyName\":",
        "\"propertyValue\":",
        "1.5",
        "-0",
        "1e2",
        "{}",
        "[{}]",
    ];
    let r = harness::run("webhook_hubspot", &corpus, &dict, 8192, check_hubspot);
    assert!(r.cases >= corpus.len() as u64 && r.secs >= 0.0, "{r:?}");
}
