//! Ingest: turn what the two systems send (signed webhooks, polled pages) into inbox events.
//! Verification is constant-time with a timestamp tolerance; a failure is a specific error
//! and nothing reaches the ledger. Parsing never panics on outside input.

mod change;
pub mod hubspot;
pub mod poll;
pub mod stripe;

pub use change::{value_text, Change};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{system} webhook: no signing secret configured; set the contract's webhook_secret")]
    NotConfigured { system: &'static str },
    #[error("{system} webhook: missing header {header}")]
    MissingHeader { system: &'static str, header: &'static str },
    #[error("{system} webhook: signature does not match the body")]
    BadSignature { system: &'static str },
    #[error("{system} webhook: {}, outside the {tolerance_secs} s tolerance", stale_age(*age_secs))]
    Stale {
        system: &'static str,
        /// How far the timestamp is from now (positive: in the past); `None` when the
        /// difference does not fit in 64 bits (a timestamp near the end of the range).
        age_secs: Option<i64>,
        tolerance_secs: i64,
    },
    #[error("{system} webhook: malformed: {detail}")]
    Malformed { system: &'static str, detail: String },
    #[error("webhook body of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
}

/// An event's payload as stored: compact JSON text. Written straight into a buffer, which is
/// a third faster than `Value`'s `Display` (through `fmt::Formatter`): ~0.6 µs of a polled
/// event's ~2 µs parse (`perf -- batch`).
pub(crate) fn payload_text(v: &serde_json::Value) -> String {
    // Serializing a `Value` cannot fail (its map keys are strings); `Display` is the fallback.
    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
}

/// The age part of a stale timestamp's message.
fn stale_age(age_secs: Option<i64>) -> String {
    match age_secs {
        Some(a) => format!("timestamp {a} s away from now"),
        None => "timestamp too far from now to measure".to_string(),
    }
}

/// How far `then` is from `now` (positive: in the past), in the timestamps' unit; `None` when
/// the difference does not fit in an `i64`. Outside numbers go through this, never `now - t`
/// (which overflows: a panic with overflow checks, a wrong answer without).
pub(crate) fn age(now: i64, then: i64) -> Option<i64> {
    now.checked_sub(then)
}

/// Whether an age is within `tolerance` either way (an unmeasurable age never is).
pub(crate) fn within(age: Option<i64>, tolerance: i64) -> bool {
    age.is_some_and(|a| a.unsigned_abs() <= tolerance.unsigned_abs())
}

impl IngestError {
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::NotConfigured { .. } => "webhook_not_configured",
            IngestError::MissingHeader { .. } => "missing_header",
            IngestError::BadSignature { .. } => "bad_signature",
            IngestError::Stale { .. } => "stale_timestamp",
            IngestError::Malformed { .. } => "malformed",
            IngestError::TooLarge { .. } => "too_large",
        }
    }
}

/// The event type of a backfilled billing customer (a snapshot the backfill makes).
pub const CUSTOMER_BACKFILLED: &str = "customer.backfilled";

/// Whether an inbox event came from a backfill (its record's work stays in the bulk lane).
pub fn is_backfill_event(event_id: &str) -> bool {
    event_id.starts_with("backfill:")
}

/// Largest webhook body accepted (Stripe events are well under this; HubSpot batches of 100
/// property changes too).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

/// Which contract object an inbound event belongs to: the object pairing CRM contacts with
/// billing customers, and the one pairing CRM companies with billing customers (if mapped).
/// Queue keys carry the contract's object name, so routing is decided here, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub contact: String,
    pub company: Option<String>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            contact: "customer".into(),
            company: None,
        }
    }
}

impl Routes {
    pub fn from_contract(c: &crate::contract::Contract) -> Self {
        use crate::contract::{BillingObject, CrmObject};
        let pair = |kind: CrmObject| {
            c.objects
                .iter()
                .find(|o| o.crm == kind && o.billing == BillingObject::Customer)
                .map(|o| o.name.clone())
        };
        Routes {
            contact: pair(CrmObject::Contact).unwrap_or_else(|| "customer".into()),
            company: pair(CrmObject::Company),
        }
    }

    /// The object for a CRM object type as HubSpot names it (`contact`, `company`).
    pub fn crm(&self, hs_object: &str) -> Option<&str> {
        match hs_object {
            "contact" => Some(&self.contact),
            "company" => self.company.as_deref(),
            _ => None,
        }
    }
}

/// Whether an object type from outside (Stripe's `data.object.object`, the object part of
/// HubSpot's `subscriptionType`) can name a queue: non-empty, at most 64 ASCII letters,
/// digits, `_`, `-` or `.`. A `:` would make the entity key read back as another record.
pub(crate) fn is_object_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Queue key of a record: `{object}:{side}:{id}`. Records are keyed on their CRM id once
/// known, so both systems' events about one pair share one queue.
pub fn entity_key(object: &str, side: crate::contract::Side, id: &str) -> String {
    format!("{object}:{}:{id}", side.as_str())
}

/// Parse a queue key back into (object, side, id).
pub fn parse_entity_key(key: &str) -> Option<(&str, crate::contract::Side, &str)> {
    let mut it = key.splitn(3, ':');
    let object = it.next()?;
    let side = crate::contract::Side::parse(it.next()?)?;
    let id = it.next()?;
    Some((object, side, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Side;

    #[test]
    fn entity_keys_round_trip() {
        let k = entity_key("customer", Side::Crm, "42");
        assert_eq!(k, "customer:crm:42");
        assert_eq!(parse_entity_key(&k), Some(("customer", Side::Crm, "42")));
        assert_eq!(parse_entity_key("nonsense"), None);
    }

    #[test]
    fn payload_text_is_the_compact_json_display_gave() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{ "id": "evt_1", "data": { "object": { "name": "Zoë \"Z\" Ng\n", "n": [1, 2.5, -3e2, null, true] } }, "emoji": "\ud83d\ude00" }"#,
        )
        .unwrap();
        assert_eq!(payload_text(&v), v.to_string());
        assert!(!payload_text(&v).contains(": "));
    }
}
