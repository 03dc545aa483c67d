//! Polled changes as inbox events. A Stripe event read from `/v1/events` is the same event a
//! webhook carries (same id, parsed by `stripe::event_from_value`), so webhook and poll
//! overlap dedupes in the inbox. A HubSpot search hit is a snapshot of one record version:
//! its id is `poll:{object}:{id}:{lastmodified}`, so re-reading the same version (overlap
//! windows, a re-read after a crash) is a counted duplicate and a new version is a new event.

use serde_json::{json, Value};

use super::{entity_key, Routes};
use crate::connectors::RemoteRecord;
use crate::contract::{CrmObject, Side};
use crate::ledger::NewEvent;

/// `{object}.polled`: the event type of a polled CRM snapshot.
pub const POLLED_SUFFIX: &str = ".polled";

/// The inbox event for one polled CRM record version. `modified_prop` names the record's
/// last-modified property; a hit without it cannot be versioned and is refused.
pub fn crm_snapshot_event(
    kind: CrmObject,
    record: &RemoteRecord,
    modified_prop: &str,
    now_ms: i64,
    routes: &Routes,
) -> Result<NewEvent, String> {
    let hs_object = kind.as_str();
    let modified = record
        .get(modified_prop)
        .ok_or_else(|| format!("{hs_object} {} has no {modified_prop}", record.id))?;
    if record.id.is_empty() {
        return Err(format!("{hs_object} search hit without an id"));
    }
    let object = routes.crm(hs_object).unwrap_or(hs_object);
    let props: serde_json::Map<String, Value> = record
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    let event_type = format!("{hs_object}{POLLED_SUFFIX}");
    let payload = json!({
        "subscriptionType": event_type, "objectId": record.id, "modifiedAt": modified, "properties": props,
    });
    Ok(NewEvent {
        source: Side::Crm,
        event_id: format!("poll:{hs_object}:{}:{modified}", record.id),
        via: "poll",
        event_type,
        object_type: hs_object.to_string(),
        object_id: record.id.clone(),
        identity_object: object.to_string(),
        entity_key: entity_key(object, Side::Crm, &record.id),
        billing_id: None,
        payload: super::payload_text(&payload),
        received_at_ms: now_ms,
    })
}

/// Whether an inbox payload is a polled CRM snapshot (every mapped property may have changed).
pub fn is_snapshot(payload: &Value) -> bool {
    payload
        .get("subscriptionType")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with(POLLED_SUFFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::Fields;

    #[test]
    fn a_snapshot_is_keyed_by_record_and_version() {
        let mut fields = Fields::new();
        fields.insert("email".into(), Some("a@b.test".into()));
        fields.insert("lastmodifieddate".into(), Some("2026-11-27T10:00:00.000Z".into()));
        let r = RemoteRecord { id: "7".into(), fields };
        let e = crm_snapshot_event(CrmObject::Contact, &r, "lastmodifieddate", 5, &Routes::default()).unwrap();
        assert_eq!(e.event_id, "poll:contact:7:2026-11-27T10:00:00.000Z");
        assert_eq!((e.entity_key.as_str(), e.via), ("customer:crm:7", "poll"));
        assert!(is_snapshot(&serde_json::from_str(&e.payload).unwrap()));
        let routes = Routes {
            contact: "customer".into(),
            company: Some("account".into()),
        };
        let e = crm_snapshot_event(CrmObject::Company, &r, "lastmodifieddate", 5, &routes).unwrap();
        assert_eq!(e.entity_key, "account:crm:7");
        assert!(crm_snapshot_event(CrmObject::Contact, &r, "hs_lastmodifieddate", 5, &Routes::default()).is_err());
    }
}
