//! Ingest: turn what the two systems send (signed webhooks, polled pages) into inbox events.
//! Verification is constant-time with a timestamp tolerance; a failure is a specific error
//! and nothing reaches the ledger. Parsing never panics on outside input.

pub mod hubspot;
pub mod stripe;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{system} webhook: no signing secret configured; set the contract's webhook_secret")]
    NotConfigured { system: &'static str },
    #[error("{system} webhook: missing header {header}")]
    MissingHeader { system: &'static str, header: &'static str },
    #[error("{system} webhook: signature does not match the body")]
    BadSignature { system: &'static str },
    #[error("{system} webhook: timestamp {age_secs} s away from now, outside the {tolerance_secs} s tolerance")]
    Stale {
        system: &'static str,
        age_secs: i64,
        tolerance_secs: i64,
    },
    #[error("{system} webhook: malformed: {detail}")]
    Malformed { system: &'static str, detail: String },
    #[error("webhook body of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
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

/// Largest webhook body accepted (Stripe events are well under this; HubSpot batches of 100
/// property changes too).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

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
}
