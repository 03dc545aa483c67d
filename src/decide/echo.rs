//! The echo filter: an inbound change is an echo when its values match what the outbox
//! recorded that we wrote to that record — values are compared; origin tags and correlation
//! ids only help find the write.

use crate::contract::{Contract, Side};
use crate::ingest::{value_text, Change};
use crate::ledger::{ChangeSet, EventState, OutboxOp};

/// The value the write `op` set at `path`, if it wrote that path.
fn written(op: &OutboxOp, path: &str) -> Option<Option<String>> {
    op.field_values.get(path).map(|v| value_text(Some(v)))
}

/// An event's change (`Change::of`), against the record's writes to the event's side, newest
/// first. Returns why it is an echo.
pub(crate) fn classify(change: &Change, writes: &[OutboxOp]) -> Option<String> {
    if writes.is_empty() {
        return None;
    }
    match change {
        Change::Property { name, value } => {
            let (op, wrote) = writes.iter().find_map(|w| written(w, name).map(|v| (w, v)))?;
            (&wrote == value).then(|| format!("{name} equals the value write {} set", op.correlation_id))
        }
        Change::Customer {
            created,
            record,
            changed,
            correlation,
        } => {
            // A create is ours when the write whose correlation id it carries wrote these values.
            let changed: Vec<String> = if *created {
                let corr = correlation.as_deref()?;
                let op = writes.iter().find(|w| w.correlation_id == corr)?;
                op.field_values.keys().cloned().collect()
            } else {
                changed.clone()
            };
            if changed.is_empty() {
                return None;
            }
            for path in &changed {
                let wrote = writes.iter().find_map(|w| written(w, path))?;
                if wrote.as_deref() != record.get(path) {
                    return None;
                }
            }
            Some(format!(
                "changed {} equal the values driftless wrote",
                changed.join(", ")
            ))
        }
        _ => None,
    }
}

/// A polled CRM snapshot (a whole record version, `ingest::poll`) is an echo when it carries
/// a value our latest write of a property set and nothing else new: every mapped property
/// (`mapped`: CRM property, contract field) equals either the value our latest write of it
/// set or its last synced value (`shadow`). `writes` are the record's CRM writes, newest first.
pub(crate) fn crm_snapshot_echo(
    change: &Change,
    writes: &[OutboxOp],
    mapped: &[(&str, &str)],
    shadow: &crate::plan::Shadow,
) -> Option<String> {
    let Change::Snapshot { properties } = change else {
        return None;
    };
    if writes.is_empty() {
        return None;
    }
    let mut ours: Vec<&str> = Vec::new();
    for (prop, field) in mapped {
        let value = properties.get(*prop).cloned().flatten();
        if writes.iter().find_map(|w| written(w, prop)) == Some(value.clone()) {
            ours.push(prop);
        } else if shadow.get(&(Side::Crm, field.to_string())) != Some(&value) {
            return None;
        }
    }
    (!ours.is_empty()).then(|| {
        format!(
            "polled version: {} equal what driftless wrote, every other property its last synced value",
            ours.join(", ")
        )
    })
}

/// Only echoes of our own writes came in: each fated `echo` with why; nothing to read or plan.
pub fn echoes_only(contract: &Contract, key: &str, echoes: Vec<(i64, String)>) -> ChangeSet {
    ChangeSet {
        event_states: echoes
            .into_iter()
            .map(|(id, why)| (id, EventState::Echo, why))
            .collect(),
        replan: Some(false),
        ..ChangeSet::new(key, &contract.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::InboxEvent;
    use serde_json::{json, Value};

    fn op(corr: &str, values: Value) -> OutboxOp {
        OutboxOp {
            id: 1,
            entity_key: "customer:crm:1".into(),
            destination: Side::Billing,
            op: crate::ledger::OpKind::UpdateCustomer,
            target_id: Some("cus_1".into()),
            idempotency_key: "k".into(),
            correlation_id: corr.into(),
            field_values: values.as_object().cloned().unwrap_or_default(),
            cause_inbox_id: None,
            state: "done".into(),
            attempts: 1,
            result_id: None,
        }
    }

    fn ev(source: Side, payload: Value) -> InboxEvent {
        InboxEvent {
            id: 1,
            source,
            event_id: "e".into(),
            // As ingest stores it: the provider's event type.
            event_type: payload
                .get("type")
                .or(payload.get("subscriptionType"))
                .and_then(Value::as_str)
                .unwrap_or("t")
                .into(),
            object_id: "1".into(),
            payload: payload.to_string(),
            received_at_ms: 0,
        }
    }

    #[test]
    fn billing_update_matching_our_values_is_echo_and_a_different_value_is_not() {
        let writes = vec![op(
            "c1",
            json!({"metadata.lifecycle_stage": "customer", "metadata.driftless_correlation_id": "c1"}),
        )];
        let e = json!({"type": "customer.updated", "data": {"object": {"id": "cus_1", "metadata": {"lifecycle_stage": "customer", "driftless_correlation_id": "c1"}},
            "previous_attributes": {"metadata": {"lifecycle_stage": "lead", "driftless_correlation_id": null}}}});
        assert!(classify(&Change::of(&ev(Side::Billing, e)), &writes).is_some());
        let e = json!({"type": "customer.updated", "data": {"object": {"id": "cus_1", "metadata": {"lifecycle_stage": "other"}},
            "previous_attributes": {"metadata": {"lifecycle_stage": "customer"}}}});
        assert!(classify(&Change::of(&ev(Side::Billing, e)), &writes).is_none());
    }

    #[test]
    fn only_the_latest_write_of_a_property_counts() {
        let writes = vec![
            op("new", json!({"billing_customer_id": "cus_2"})),
            op("old", json!({"billing_customer_id": "cus_1"})),
        ];
        let e = |v: &str| json!({"subscriptionType": "contact.propertyChange", "propertyName": "billing_customer_id", "propertyValue": v});
        assert!(classify(&Change::of(&ev(Side::Crm, e("cus_2"))), &writes).is_some());
        assert!(classify(&Change::of(&ev(Side::Crm, e("cus_1"))), &writes).is_none());
    }

    #[test]
    fn a_polled_snapshot_is_an_echo_only_when_nothing_but_our_values_changed() {
        let writes = vec![op("c", json!({"billing_customer_id": "cus_2"}))];
        let mapped = [("billing_customer_id", "billing_customer_id"), ("email", "email")];
        let snap = |id: &str, email: &str| {
            ev(
                Side::Crm,
                json!({"subscriptionType": "contact.polled", "objectId": "1",
                    "properties": {"billing_customer_id": id, "email": email, "lastmodifieddate": "x"}}),
            )
        };
        let mut shadow = crate::plan::Shadow::new();
        shadow.insert((Side::Crm, "email".into()), Some("a@b.test".into()));
        assert!(crm_snapshot_echo(&Change::of(&snap("cus_2", "a@b.test")), &writes, &mapped, &shadow).is_some());
        // A user edit in the same version is not an echo.
        assert!(crm_snapshot_echo(&Change::of(&snap("cus_2", "new@b.test")), &writes, &mapped, &shadow).is_none());
        // Not our value.
        assert!(crm_snapshot_echo(&Change::of(&snap("cus_9", "a@b.test")), &writes, &mapped, &shadow).is_none());
        // Nothing of ours in it: not an echo, even when all equals the shadow.
        shadow.insert((Side::Crm, "billing_customer_id".into()), Some("cus_9".into()));
        assert!(crm_snapshot_echo(&Change::of(&snap("cus_9", "a@b.test")), &writes, &mapped, &shadow).is_none());
        assert!(crm_snapshot_echo(&Change::of(&snap("cus_2", "a@b.test")), &[], &mapped, &shadow).is_none());
    }

    #[test]
    fn unrelated_property_is_not_echo() {
        let writes = vec![op("c", json!({"billing_customer_id": "cus_2"}))];
        let e = json!({"subscriptionType": "contact.propertyChange", "propertyName": "email", "propertyValue": "x@y"});
        assert!(classify(&Change::of(&ev(Side::Crm, e)), &writes).is_none());
    }
}
