//! The echo filter: an inbound change is an echo when its values match what the outbox
//! recorded that we wrote to that record — values are compared; origin tags and correlation
//! ids only help find the write.

use serde_json::Value;

use crate::connectors::stripe;
use crate::contract::Side;
use crate::ingest::stripe::META_CORRELATION;
use crate::ledger::{InboxEvent, OutboxOp};

fn written(op: &OutboxOp, path: &str) -> Option<Option<String>> {
    op.field_values.get(path).map(|v| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::String(_) | Value::Null => None,
        other => Some(other.to_string()),
    })
}

/// `writes` are the record's writes to `ev.source`, newest first. Returns why it is an echo.
pub(crate) fn classify(ev: &InboxEvent, writes: &[OutboxOp]) -> Option<String> {
    if writes.is_empty() {
        return None;
    }
    let payload: Value = serde_json::from_str(&ev.payload).ok()?;
    match ev.source {
        Side::Crm => crm_echo(&payload, writes),
        Side::Billing => billing_echo(&payload, writes),
    }
}

fn crm_echo(e: &Value, writes: &[OutboxOp]) -> Option<String> {
    if !matches!(
        e.get("subscriptionType").and_then(Value::as_str),
        Some("contact.propertyChange") | Some("company.propertyChange")
    ) {
        return None;
    }
    let prop = e.get("propertyName").and_then(Value::as_str)?;
    let value = match e.get("propertyValue") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(Value::String(_)) => None,
        Some(other) => Some(other.to_string()),
    };
    let latest = writes.iter().find_map(|w| written(w, prop).map(|v| (w, v)))?;
    (latest.1 == value).then(|| format!("{prop} equals the value write {} set", latest.0.correlation_id))
}

fn billing_echo(e: &Value, writes: &[OutboxOp]) -> Option<String> {
    let obj = e.get("data")?.get("object")?;
    let record = stripe::customer_record(obj).ok()?;
    let typ = e.get("type").and_then(Value::as_str)?;
    let changed: Vec<String> = if typ.ends_with(".created") {
        // A create is ours when the write it carries the correlation id of wrote these values.
        let corr = obj.get("metadata")?.get(META_CORRELATION)?.as_str()?;
        let op = writes.iter().find(|w| w.correlation_id == corr)?;
        op.field_values.keys().cloned().collect()
    } else {
        let prev = e.get("data")?.get("previous_attributes")?.as_object()?;
        let mut paths = Vec::new();
        for (k, v) in prev {
            if k == "metadata" {
                for mk in v.as_object()?.keys() {
                    paths.push(format!("metadata.{mk}"));
                }
            } else {
                paths.push(k.clone());
            }
        }
        paths
    };
    if changed.is_empty() {
        return None;
    }
    for path in &changed {
        let (_, wrote) = writes.iter().find_map(|w| written(w, path).map(|v| (w, v)))?;
        if wrote.as_deref() != record.get(path) {
            return None;
        }
    }
    Some(format!(
        "changed {} equal the values driftless wrote",
        changed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(corr: &str, values: Value) -> OutboxOp {
        OutboxOp {
            id: 1,
            entity_key: "customer:crm:1".into(),
            destination: Side::Billing,
            op: "update_customer".into(),
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
            event_type: "t".into(),
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
        assert!(classify(&ev(Side::Billing, e), &writes).is_some());
        let e = json!({"type": "customer.updated", "data": {"object": {"id": "cus_1", "metadata": {"lifecycle_stage": "other"}},
            "previous_attributes": {"metadata": {"lifecycle_stage": "customer"}}}});
        assert!(classify(&ev(Side::Billing, e), &writes).is_none());
    }

    #[test]
    fn only_the_latest_write_of_a_property_counts() {
        let writes = vec![
            op("new", json!({"billing_customer_id": "cus_2"})),
            op("old", json!({"billing_customer_id": "cus_1"})),
        ];
        let e = |v: &str| json!({"subscriptionType": "contact.propertyChange", "propertyName": "billing_customer_id", "propertyValue": v});
        assert!(classify(&ev(Side::Crm, e("cus_2")), &writes).is_some());
        assert!(classify(&ev(Side::Crm, e("cus_1")), &writes).is_none());
    }

    #[test]
    fn unrelated_property_is_not_echo() {
        let writes = vec![op("c", json!({"billing_customer_id": "cus_2"}))];
        let e = json!({"subscriptionType": "contact.propertyChange", "propertyName": "email", "propertyValue": "x@y"});
        assert!(classify(&ev(Side::Crm, e), &writes).is_none());
    }
}
