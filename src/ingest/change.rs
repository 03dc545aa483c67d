//! What an inbox event says changed, in neutral terms. The providers' payload shapes (a
//! HubSpot `propertyChange`, a polled record version, a Stripe event with its
//! `previous_attributes`) are read here and nowhere past ingest: the decision stage sees a
//! [`Change`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::stripe::META_CORRELATION;
use crate::connectors::{stripe, RemoteRecord};
use crate::contract::Side;
use crate::ledger::InboxEvent;

/// What an event changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// One property of a CRM record now has this value.
    Property { name: String, value: Option<String> },
    /// A whole CRM record version (a polled snapshot): each property's value; any mapped
    /// property may have changed.
    Snapshot {
        properties: BTreeMap<String, Option<String>>,
    },
    /// A billing customer as it is after the event, with the paths that changed (`created`:
    /// every path it was created with) and, for a create, the correlation id it carries.
    Customer {
        created: bool,
        record: RemoteRecord,
        changed: Vec<String>,
        correlation: Option<String>,
    },
    /// A billing object mirrored onto the record changed: a subscription, an invoice, a
    /// credit note (what the summaries show).
    BillingObject,
    /// Anything else (a record created or deleted in the CRM, an event not understood).
    Other,
}

/// A field's value as text, as both systems and the outbox hold it: an empty string or `null`
/// is no value, a number or a flag its JSON text.
pub fn value_text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) | Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    }
}

impl Change {
    /// Read an inbox event (its payload as stored). A payload that cannot be read is `Other`:
    /// it was checked on the way in, and a decision never fails on what it cannot classify.
    pub fn of(ev: &InboxEvent) -> Change {
        let Ok(payload) = serde_json::from_str::<Value>(&ev.payload) else {
            return Change::Other;
        };
        match ev.source {
            Side::Crm => crm(&payload),
            Side::Billing => billing(&ev.event_type, &payload),
        }
    }

    /// Whether the change may move what the billing objects' summaries show, given the CRM
    /// properties the contract mirrors them onto (`mirrored`).
    pub fn touches_billing_objects<'a>(&self, mut mirrored: impl Iterator<Item = &'a str>) -> bool {
        match self {
            Change::BillingObject | Change::Snapshot { .. } => true,
            // The customer carries the delinquency the invoices' summary shows.
            Change::Customer { created, .. } => !created,
            Change::Property { name, .. } => mirrored.any(|p| p == name.as_str()),
            Change::Other => false,
        }
    }
}

fn crm(payload: &Value) -> Change {
    if super::poll::is_snapshot(payload) {
        let properties = payload
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| props.iter().map(|(k, v)| (k.clone(), value_text(Some(v)))).collect())
            .unwrap_or_default();
        return Change::Snapshot { properties };
    }
    let property_change = matches!(
        payload.get("subscriptionType").and_then(Value::as_str),
        Some("contact.propertyChange") | Some("company.propertyChange")
    );
    match payload.get("propertyName").and_then(Value::as_str) {
        Some(name) if property_change => Change::Property {
            name: name.to_string(),
            value: value_text(payload.get("propertyValue")),
        },
        _ => Change::Other,
    }
}

fn billing(event_type: &str, payload: &Value) -> Change {
    if event_type.starts_with("customer.subscription.")
        || event_type.starts_with("invoice.")
        || event_type.starts_with("credit_note.")
    {
        return Change::BillingObject;
    }
    let customer = event_type == "customer.updated"
        || event_type == "customer.created"
        || event_type == super::CUSTOMER_BACKFILLED;
    if !customer {
        return Change::Other;
    }
    let Some(obj) = payload.get("data").and_then(|d| d.get("object")) else {
        return Change::Other;
    };
    let Ok(record) = stripe::customer_record(obj) else {
        return Change::Other;
    };
    let created = event_type == "customer.created";
    let correlation = obj
        .get("metadata")
        .and_then(|m| m.get(META_CORRELATION))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut changed = Vec::new();
    if let Some(prev) = payload
        .get("data")
        .and_then(|d| d.get("previous_attributes"))
        .and_then(Value::as_object)
    {
        for (k, v) in prev {
            match (k.as_str(), v.as_object()) {
                ("metadata", Some(meta)) => changed.extend(meta.keys().map(|mk| format!("metadata.{mk}"))),
                _ => changed.push(k.clone()),
            }
        }
    }
    Change::Customer {
        created,
        record,
        changed,
        correlation: if created { correlation } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(source: Side, event_type: &str, payload: Value) -> InboxEvent {
        InboxEvent {
            id: 1,
            source,
            event_id: "e".into(),
            event_type: event_type.into(),
            object_id: "1".into(),
            payload: payload.to_string(),
            received_at_ms: 0,
        }
    }

    #[test]
    fn crm_events_read_as_property_changes_snapshots_or_other() {
        let e = ev(
            Side::Crm,
            "contact.propertyChange",
            json!({"subscriptionType": "contact.propertyChange", "propertyName": "email", "propertyValue": ""}),
        );
        assert_eq!(
            Change::of(&e),
            Change::Property {
                name: "email".into(),
                value: None
            }
        );
        let e = ev(
            Side::Crm,
            "contact.polled",
            json!({"subscriptionType": "contact.polled", "objectId": "1", "properties": {"email": "a@b.test", "plan": ""}}),
        );
        let Change::Snapshot { properties } = Change::of(&e) else {
            panic!("a polled version is a snapshot");
        };
        assert_eq!(properties.get("email"), Some(&Some("a@b.test".to_string())));
        assert_eq!(properties.get("plan"), Some(&None));
        let e = ev(
            Side::Crm,
            "contact.creation",
            json!({"subscriptionType": "contact.creation"}),
        );
        assert_eq!(Change::of(&e), Change::Other);
        assert_eq!(Change::of(&ev(Side::Crm, "x", json!(null))), Change::Other);
        let mut bad = ev(Side::Crm, "x", json!({}));
        bad.payload = "{not json".into();
        assert_eq!(Change::of(&bad), Change::Other);
    }

    #[test]
    fn billing_events_name_the_paths_they_changed() {
        let e = ev(
            Side::Billing,
            "customer.updated",
            json!({"type": "customer.updated", "data": {"object": {"id": "cus_1", "email": "a@b.test", "metadata": {"lifecycle_stage": "customer"}},
                "previous_attributes": {"email": "old@b.test", "metadata": {"lifecycle_stage": "lead"}}}}),
        );
        let Change::Customer {
            created,
            record,
            changed,
            correlation,
        } = Change::of(&e)
        else {
            panic!("a customer update");
        };
        assert!(!created);
        assert_eq!(record.get("metadata.lifecycle_stage"), Some("customer"));
        assert_eq!(
            changed,
            vec!["email".to_string(), "metadata.lifecycle_stage".to_string()]
        );
        assert_eq!(correlation, None);
        let e = ev(
            Side::Billing,
            "customer.created",
            json!({"type": "customer.created", "data": {"object": {"id": "cus_1", "metadata": {"driftless_correlation_id": "c1"}}}}),
        );
        assert!(matches!(Change::of(&e), Change::Customer { created: true, correlation: Some(c), .. } if c == "c1"));
        for t in ["invoice.paid", "customer.subscription.updated", "credit_note.created"] {
            assert_eq!(
                Change::of(&ev(Side::Billing, t, json!({}))),
                Change::BillingObject,
                "{t}"
            );
        }
        assert_eq!(
            Change::of(&ev(Side::Billing, "customer.deleted", json!({}))),
            Change::Other
        );
    }

    #[test]
    fn which_changes_may_move_the_summaries() {
        let mirrored = ["plan", "mrr"];
        let touches = |c: Change| c.touches_billing_objects(mirrored.iter().copied());
        assert!(touches(Change::BillingObject));
        assert!(touches(Change::Snapshot {
            properties: BTreeMap::new()
        }));
        assert!(touches(Change::Property {
            name: "plan".into(),
            value: None
        }));
        assert!(!touches(Change::Property {
            name: "email".into(),
            value: None
        }));
        assert!(!touches(Change::Other));
    }
}
