//! HubSpot webhooks (v3 signatures): base64(HMAC-SHA256(client secret,
//! method + uri + body + timestamp)), timestamp in milliseconds, 5-minute tolerance.
//! A delivery is a JSON array of events.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{entity_key, IngestError, Routes};
use crate::contract::Side;
use crate::ledger::NewEvent;

const SYSTEM: &str = "crm";
pub const TOLERANCE_MS: i64 = 5 * 60 * 1000;
/// The headers a HubSpot webhook carries its v3 signature and its timestamp in.
pub const SIGNATURE_HEADER: &str = "X-HubSpot-Signature-v3";
pub const TIMESTAMP_HEADER: &str = "X-HubSpot-Request-Timestamp";

/// Verify `X-HubSpot-Signature-v3` for a request to `uri` (the full URL HubSpot called).
pub fn verify(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    signature: &str,
    timestamp_ms: &str,
    now_ms: i64,
) -> Result<(), IngestError> {
    let ts: i64 = timestamp_ms.trim().parse().map_err(|_| IngestError::Malformed {
        system: SYSTEM,
        detail: "X-HubSpot-Request-Timestamp is not a number of milliseconds".into(),
    })?;
    let age_ms = super::age(now_ms, ts);
    if !super::within(age_ms, TOLERANCE_MS) {
        return Err(IngestError::Stale {
            system: SYSTEM,
            age_secs: age_ms.map(|a| a / 1000),
            tolerance_secs: TOLERANCE_MS / 1000,
        });
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| IngestError::BadSignature { system: SYSTEM })?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| IngestError::NotConfigured { system: SYSTEM })?;
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.trim().as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| IngestError::BadSignature { system: SYSTEM })
}

/// Parse a delivery (array of events) into inbox events. `object_for` maps a HubSpot object
/// (`contact`) to the contract object keyed on it.
pub fn parse_events(
    body: &[u8],
    via: &'static str,
    now_ms: i64,
    routes: &Routes,
) -> Result<Vec<NewEvent>, IngestError> {
    let bad = |d: String| IngestError::Malformed {
        system: SYSTEM,
        detail: d,
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let arr = v
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of events".into()))?;
    arr.iter()
        .enumerate()
        .map(|(i, e)| event_from_value(e, via, now_ms, routes).map_err(|d| bad(format!("event {i}: {d}"))))
        .collect()
}

fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

pub fn event_from_value(e: &Value, via: &'static str, now_ms: i64, routes: &Routes) -> Result<NewEvent, String> {
    let event_id = id_string(e.get("eventId")).ok_or("no eventId")?;
    let sub = e
        .get("subscriptionType")
        .and_then(Value::as_str)
        .ok_or("no subscriptionType")?;
    let object_id = id_string(e.get("objectId")).ok_or("no objectId")?;
    let (hs_object, _) = sub
        .split_once('.')
        .filter(|(o, _)| super::is_object_name(o))
        .ok_or_else(|| {
            format!(
                "subscriptionType {:?} is not object.change (an object name of letters, digits and _)",
                sub.chars().take(64).collect::<String>()
            )
        })?;
    // Objects the contract does not pair keep HubSpot's name: recorded, settled as unsynced.
    let object = routes.crm(hs_object).unwrap_or(hs_object);
    Ok(NewEvent {
        source: Side::Crm,
        event_id,
        via,
        event_type: sub.to_string(),
        object_type: hs_object.to_string(),
        object_id: object_id.clone(),
        identity_object: object.to_string(),
        entity_key: entity_key(object, Side::Crm, &object_id),
        billing_id: None,
        payload: super::payload_text(e),
        received_at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, method: &str, uri: &str, body: &[u8], ts: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{method}{uri}").as_bytes());
        mac.update(body);
        mac.update(ts.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn v3_signature_checks() {
        let body = br#"[{"eventId":1}]"#;
        let uri = "http://127.0.0.1:9/webhooks/hubspot";
        let sig = sign("s", "POST", uri, body, "100000");
        assert!(verify("s", "POST", uri, body, &sig, "100000", 100_000).is_ok());
        assert!(verify("s", "POST", uri, b"[]", &sig, "100000", 100_000).is_err());
        assert!(verify("t", "POST", uri, body, &sig, "100000", 100_000).is_err());
        assert!(matches!(
            verify("s", "POST", uri, body, &sig, "100000", 100_000 + TOLERANCE_MS + 1),
            Err(IngestError::Stale { .. })
        ));
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_are_stale_not_an_overflow() {
        // `now_ms - ts` overflows for these (a panic with overflow checks; a skipped stale
        // check without them, since the wrapped age's `abs()` is negative).
        let body = br#"[{"eventId":1}]"#;
        let uri = "http://127.0.0.1:9/webhooks/hubspot";
        let now = 100_000;
        let far_past = (now as i128 - (1i128 << 63)) as i64;
        for ts in [far_past, i64::MIN, i64::MAX] {
            let ts = ts.to_string();
            let sig = sign("s", "POST", uri, body, &ts);
            match verify("s", "POST", uri, body, &sig, &ts, now) {
                Err(e @ IngestError::Stale { .. }) => assert_eq!(e.code(), "stale_timestamp"),
                other => panic!("ts = {ts}: expected a stale timestamp, got {other:?}"),
            }
        }
        let ts = far_past.to_string();
        let e = verify("s", "POST", uri, body, &sign("s", "POST", uri, body, &ts), &ts, now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "crm webhook: timestamp too far from now to measure, outside the 300 s tolerance"
        );
        for (now, ts) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN)] {
            let ts = ts.to_string();
            let sig = sign("s", "POST", uri, body, &ts);
            assert!(matches!(
                verify("s", "POST", uri, body, &sig, &ts, now),
                Err(IngestError::Stale { age_secs: None, .. })
            ));
        }
        let e = verify("s", "POST", uri, body, &sign("s", "POST", uri, body, "1"), "1", 400_002).unwrap_err();
        assert_eq!(
            e.to_string(),
            "crm webhook: timestamp 400 s away from now, outside the 300 s tolerance"
        );
    }

    #[test]
    fn a_subscription_type_without_a_plain_object_name_is_malformed() {
        // Found by the webhook_hubspot fuzz target: `.c[]ontact.privacyDeletion` gave the
        // object `""` and the key `:crm:1003`; a `:` in it would read back as another key.
        for typ in [
            ".c[]ontact.privacyDeletion",
            "a:b.change",
            ".creation",
            "con tact.creation",
        ] {
            let body = serde_json::json!([{"eventId": 1, "subscriptionType": typ, "objectId": 1003}]).to_string();
            let e = parse_events(body.as_bytes(), "webhook", 1, &Routes::default()).unwrap_err();
            assert_eq!(e.code(), "malformed", "{typ}");
            assert!(e.to_string().contains("is not object.change"), "{e}");
        }
        let body = br#"[{"eventId":1,"subscriptionType":"deal.propertyChange","objectId":7}]"#;
        let ev = parse_events(body, "webhook", 1, &Routes::default()).unwrap();
        assert_eq!(ev[0].entity_key, "deal:crm:7");
    }

    #[test]
    fn parses_batches_and_rejects_garbage() {
        let body = br#"[{"eventId":11,"subscriptionType":"contact.propertyChange","objectId":5,"propertyName":"email","propertyValue":"a@b"}]"#;
        let ev = parse_events(body, "webhook", 1, &Routes::default()).unwrap();
        assert_eq!(ev[0].entity_key, "customer:crm:5");
        assert_eq!(ev[0].event_id, "11");
        assert!(parse_events(b"{}", "webhook", 1, &Routes::default()).is_err());
        assert!(parse_events(br#"[{"eventId":1}]"#, "webhook", 1, &Routes::default()).is_err());
    }
}
