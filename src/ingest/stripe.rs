//! Stripe webhooks: `Stripe-Signature: t=…,v1=…` over `"{t}.{body}"`, HMAC-SHA256, 300 s tolerance.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{entity_key, IngestError, Routes};
use crate::connectors::RemoteRecord;
use crate::contract::Side;
use crate::ledger::NewEvent;

const SYSTEM: &str = "billing";
pub const TOLERANCE_SECS: i64 = 300;
/// The header a Stripe webhook carries its signature in.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";
/// Metadata keys driftless writes on every billing record it creates or updates.
pub const META_CRM_ID: &str = "driftless_crm_contact_id";
/// The origin marker of a customer created for a CRM company.
pub const META_CRM_COMPANY_ID: &str = "driftless_crm_company_id";
pub const META_ORIGIN: &str = "driftless_origin";
pub const META_CORRELATION: &str = "driftless_correlation_id";

/// Verify a `Stripe-Signature` header against the raw body. The signed bytes are the header's
/// `t` value exactly as sent, `.`, and the body; the header must carry exactly one `t`.
pub fn verify(secret: &str, header: &str, body: &[u8], now_secs: i64) -> Result<(), IngestError> {
    let malformed = |detail: &str| IngestError::Malformed {
        system: SYSTEM,
        detail: detail.to_string(),
    };
    let mut t_text: Option<&str> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed("Stripe-Signature is not a list of key=value pairs"))?;
        match k {
            "t" if t_text.is_some() => return Err(malformed("Stripe-Signature has more than one timestamp (t=)")),
            "t" => t_text = Some(v),
            "v1" => {
                if let Ok(b) = hex::decode(v) {
                    sigs.push(b);
                }
            }
            _ => {}
        }
    }
    let t_text = t_text.ok_or_else(|| malformed("Stripe-Signature has no timestamp"))?;
    let t: i64 = t_text
        .parse()
        .map_err(|_| malformed("Stripe-Signature timestamp (t=) is not a whole number of seconds"))?;
    if sigs.is_empty() {
        return Err(IngestError::BadSignature { system: SYSTEM });
    }
    let age = super::age(now_secs, t);
    if !super::within(age, TOLERANCE_SECS) {
        return Err(IngestError::Stale {
            system: SYSTEM,
            age_secs: age,
            tolerance_secs: TOLERANCE_SECS,
        });
    }
    for sig in &sigs {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| IngestError::NotConfigured { system: SYSTEM })?;
        mac.update(t_text.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(sig).is_ok() {
            return Ok(());
        }
    }
    Err(IngestError::BadSignature { system: SYSTEM })
}

/// The contract object a Stripe object type belongs to.
fn object_of(stripe_object: &str) -> &str {
    match stripe_object {
        "customer" => "customer",
        "subscription" => "subscription",
        "invoice" => "invoice",
        "credit_note" => "credit_note",
        other => other,
    }
}

/// Parse one Stripe event into an inbox event.
pub fn parse_event(body: &[u8], via: &'static str, now_ms: i64, routes: &Routes) -> Result<NewEvent, IngestError> {
    let bad = |d: &str| IngestError::Malformed {
        system: SYSTEM,
        detail: d.to_string(),
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(&format!("body is not JSON: {e}")))?;
    event_from_value(&v, via, now_ms, routes).map_err(|d| bad(&d))
}

/// The inbox event of one billing customer listed by a backfill: a synthetic event of type
/// [`CUSTOMER_BACKFILLED`](super::CUSTOMER_BACKFILLED) carrying the customer (routed like a
/// webhook's, by its CRM metadata), keyed by the customer and a hash of its fields, so an
/// unchanged customer is a duplicate next time.
pub fn backfilled_customer_event(r: &RemoteRecord, now_ms: i64, routes: &Routes) -> Result<NewEvent, String> {
    let mut obj = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    obj.insert("id".into(), r.id.clone().into());
    obj.insert("object".into(), "customer".into());
    let mut hasher = Sha256::new();
    for (k, v) in &r.fields {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_deref().unwrap_or_default().as_bytes());
        hasher.update([1]);
        let val = v.clone().map_or(Value::Null, Value::String);
        match k.strip_prefix("metadata.") {
            Some(mk) => {
                meta.insert(mk.to_string(), val);
            }
            None if k == "delinquent" => {
                obj.insert(k.clone(), Value::Bool(v.as_deref() == Some("true")));
            }
            None => {
                obj.insert(k.clone(), val);
            }
        }
    }
    obj.insert("metadata".into(), Value::Object(meta));
    let digest = hex::encode(&hasher.finalize()[..8]);
    let id = format!("backfill:customer:{}:{digest}", r.id);
    let v = serde_json::json!({
        "id": id, "object": "event", "type": super::CUSTOMER_BACKFILLED, "data": { "object": obj },
    });
    event_from_value(&v, "backfill", now_ms, routes)
}

pub fn event_from_value(v: &Value, via: &'static str, now_ms: i64, routes: &Routes) -> Result<NewEvent, String> {
    let non_empty = |s: &&str| !s.is_empty();
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(non_empty)
        .ok_or("event has no id")?;
    if v.get("object").and_then(Value::as_str) != Some("event") {
        return Err("not an event object".into());
    }
    let typ = v.get("type").and_then(Value::as_str).ok_or("event has no type")?;
    let obj = v
        .get("data")
        .and_then(|d| d.get("object"))
        .ok_or("event has no data.object")?;
    let obj_id = obj
        .get("id")
        .and_then(Value::as_str)
        .filter(non_empty)
        .ok_or("data.object has no id")?;
    let obj_type = obj.get("object").and_then(Value::as_str).unwrap_or("unknown");
    if !super::is_object_name(obj_type) {
        return Err(format!(
            "data.object.object {:?} is not a Stripe object type (letters, digits, _ and . only)",
            obj_type.chars().take(64).collect::<String>()
        ));
    }
    let object = object_of(obj_type);
    // A customer driftless created names its CRM record in metadata: a contact or a company.
    let meta = |k: &str| {
        obj.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let crm = match (meta(META_CRM_ID), meta(META_CRM_COMPANY_ID), &routes.company) {
        (Some(c), _, _) => Some((routes.contact.as_str(), c)),
        (None, Some(c), Some(company)) => Some((company.as_str(), c)),
        _ => None,
    };
    // Subscriptions, invoices and credit notes belong to their customer's record.
    let owner_customer = match object {
        "subscription" | "invoice" | "credit_note" => match obj.get("customer") {
            Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
            Some(Value::Object(o)) => o
                .get("id")
                .and_then(Value::as_str)
                .filter(non_empty)
                .map(str::to_string),
            _ => None,
        },
        _ => None,
    };
    // Keyed on the CRM record once known (the ledger also resolves billing ids it has linked,
    // whichever object linked them), so both systems' events about one pair share a queue.
    let contact = routes.contact.as_str();
    let (identity_object, billing_id, key) = match (&owner_customer, crm) {
        (Some(cus), _) => (contact, cus.clone(), entity_key(contact, Side::Billing, cus)),
        (None, Some((o, c))) if object == "customer" => (o, obj_id.to_string(), entity_key(o, Side::Crm, c)),
        (None, _) if object == "customer" => (contact, obj_id.to_string(), entity_key(contact, Side::Billing, obj_id)),
        (None, _) => (object, obj_id.to_string(), entity_key(object, Side::Billing, obj_id)),
    };
    Ok(NewEvent {
        source: Side::Billing,
        event_id: id.to_string(),
        via,
        event_type: typ.to_string(),
        object_type: obj_type.to_string(),
        object_id: obj_id.to_string(),
        identity_object: identity_object.to_string(),
        entity_key: key,
        billing_id: Some(billing_id),
        payload: super::payload_text(v),
        received_at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn accepts_valid_rejects_tampered_wrong_secret_and_stale() {
        let body = br#"{"id":"evt_1"}"#;
        let h = sign("whsec_a", 1000, body);
        assert!(verify("whsec_a", &h, body, 1000).is_ok());
        assert!(matches!(
            verify("whsec_a", &h, br#"{"id":"evt_2"}"#, 1000),
            Err(IngestError::BadSignature { .. })
        ));
        assert!(matches!(
            verify("whsec_b", &h, body, 1000),
            Err(IngestError::BadSignature { .. })
        ));
        assert!(matches!(
            verify("whsec_a", &h, body, 1301),
            Err(IngestError::Stale { .. })
        ));
        assert!(matches!(
            verify("whsec_a", "garbage", body, 1000),
            Err(IngestError::Malformed { .. })
        ));
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_are_stale_not_an_overflow() {
        // `now - t` overflows for these: with overflow checks that panicked; without them the
        // age wrapped to i64::MIN, whose `abs()` is negative, and the stale check passed.
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_000;
        let far_past = (now as i128 - (1i128 << 63)) as i64; // now − 2^63 fits; now − t does not
        for t in [far_past, i64::MIN, i64::MAX, i64::MIN + 1] {
            let h = sign("whsec_a", t, body);
            match verify("whsec_a", &h, body, now) {
                Err(e @ IngestError::Stale { .. }) => {
                    assert_eq!(e.code(), "stale_timestamp");
                    assert!(e.to_string().contains("outside the 300 s tolerance"), "{e}");
                }
                other => panic!("t = {t}: expected a stale timestamp, got {other:?}"),
            }
        }
        let e = verify("whsec_a", &sign("whsec_a", far_past, body), body, now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "billing webhook: timestamp too far from now to measure, outside the 300 s tolerance"
        );
        // A measurable age is still reported.
        let e = verify("whsec_a", &sign("whsec_a", now - 301, body), body, now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "billing webhook: timestamp 301 s away from now, outside the 300 s tolerance"
        );
        // `now` itself at the ends of the range.
        for (now, t) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (i64::MAX, -1)] {
            assert!(matches!(
                verify("whsec_a", &sign("whsec_a", t, body), body, now),
                Err(IngestError::Stale { age_secs: None, .. })
            ));
        }
        assert!(verify("whsec_a", &sign("whsec_a", i64::MAX, body), body, i64::MAX).is_ok());
    }

    #[test]
    fn the_signature_covers_the_timestamp_text_as_sent_and_one_timestamp_only() {
        let body = br#"{"id":"evt_1"}"#;
        let h = sign("whsec_a", 1000, body);
        // The same number written differently is not what was signed.
        for t in ["01000", "+1000"] {
            let forged = h.replacen("t=1000", &format!("t={t}"), 1);
            assert!(
                matches!(
                    verify("whsec_a", &forged, body, 1000),
                    Err(IngestError::BadSignature { .. })
                ),
                "{forged}"
            );
        }
        // A second timestamp is refused whichever one is signed.
        for extra in [",t=1000", ",t=999"] {
            let e = verify("whsec_a", &format!("{h}{extra}"), body, 1000).unwrap_err();
            assert_eq!(
                e.to_string(),
                "billing webhook: malformed: Stripe-Signature has more than one timestamp (t=)"
            );
        }
        let e = verify("whsec_a", &h.replacen("t=1000", "t=soon", 1), body, 1000).unwrap_err();
        assert!(e.to_string().contains("is not a whole number of seconds"), "{e}");
    }

    #[test]
    fn object_types_and_ids_that_would_break_the_entity_key_are_malformed() {
        // Found by the webhook_stripe fuzz target: an object type with a `:` made the key
        // `in:voice:billing:in_1`, which reads back as object `in`, side `voice`.
        let ev = |obj: serde_json::Value| serde_json::json!({"id": "evt_1", "object": "event", "type": "invoice.paid", "data": {"object": obj}});
        let routes = Routes::default();
        for obj in [
            serde_json::json!({"id": "in_1", "object": "in:voice", "customer": "cus_1"}),
            serde_json::json!({"id": "in_1", "object": "", "customer": "cus_1"}),
            serde_json::json!({"id": "in_1", "object": "in voice", "customer": "cus_1"}),
            serde_json::json!({"id": "", "object": "invoice", "customer": "cus_1"}),
        ] {
            assert!(
                event_from_value(&ev(obj.clone()), "webhook", 5, &routes).is_err(),
                "{obj}"
            );
        }
        let mut no_id = ev(serde_json::json!({"id": "in_1", "object": "invoice"}));
        no_id["id"] = "".into();
        assert!(event_from_value(&no_id, "webhook", 5, &routes).is_err());
        let body = serde_json::to_vec(&ev(serde_json::json!({"id": "in_1", "object": "in:voice"}))).unwrap();
        let e = parse_event(&body, "webhook", 5, &routes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "billing webhook: malformed: data.object.object \"in:voice\" is not a Stripe object type (letters, \
             digits, _ and . only)"
        );
        // An empty owner is no owner: the invoice keeps its own key.
        for customer in [serde_json::json!(""), serde_json::json!({"id": ""})] {
            let e = event_from_value(
                &ev(serde_json::json!({"id": "in_1", "object": "invoice", "customer": customer})),
                "webhook",
                5,
                &routes,
            )
            .unwrap();
            assert_eq!(e.entity_key, "invoice:billing:in_1");
        }
        // Dotted Stripe types stay fine.
        let e = event_from_value(
            &ev(serde_json::json!({"id": "cs_1", "object": "checkout.session"})),
            "webhook",
            5,
            &routes,
        )
        .unwrap();
        assert_eq!(e.entity_key, "checkout.session:billing:cs_1");
    }

    #[test]
    fn a_company_customer_routes_to_the_company_object_when_the_contract_maps_one() {
        let v = serde_json::json!({"id": "evt_2", "object": "event", "type": "customer.updated",
            "data": {"object": {"id": "cus_2", "object": "customer", "metadata": {"driftless_crm_company_id": "9"}}}});
        let routes = Routes {
            contact: "customer".into(),
            company: Some("account".into()),
        };
        let e = event_from_value(&v, "webhook", 5, &routes).unwrap();
        assert_eq!(
            (e.entity_key.as_str(), e.identity_object.as_str()),
            ("account:crm:9", "account")
        );
        // Without a company mapping it stays a billing-side customer event.
        let e = event_from_value(&v, "webhook", 5, &Routes::default()).unwrap();
        assert_eq!(e.entity_key, "customer:billing:cus_2");
        let hs = serde_json::json!([{"eventId": 1, "subscriptionType": "company.propertyChange", "objectId": 9,
            "propertyName": "name", "propertyValue": "Acme"}]);
        let body = hs.to_string();
        let ev = crate::ingest::hubspot::parse_events(body.as_bytes(), "webhook", 1, &routes).unwrap();
        assert_eq!(ev[0].entity_key, "account:crm:9");
        let ev = crate::ingest::hubspot::parse_events(body.as_bytes(), "webhook", 1, &Routes::default()).unwrap();
        assert_eq!(ev[0].entity_key, "company:crm:9");
    }

    #[test]
    fn event_keys_on_crm_id_from_metadata() {
        let v = serde_json::json!({"id": "evt_1", "object": "event", "type": "customer.updated",
            "data": {"object": {"id": "cus_1", "object": "customer", "metadata": {"driftless_crm_contact_id": "7"}}}});
        let e = event_from_value(&v, "webhook", 5, &Routes::default()).unwrap();
        assert_eq!(e.entity_key, "customer:crm:7");
        assert_eq!(e.billing_id.as_deref(), Some("cus_1"));
        assert!(event_from_value(&serde_json::json!({"id": 3}), "webhook", 5, &Routes::default()).is_err());
    }
}
