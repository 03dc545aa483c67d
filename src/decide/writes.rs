//! Writes: the outbox operation for a planned write (which call, on which record, under which
//! idempotency key — fixed here, reused on every retry), what a completed write settles, and
//! what a write given up records (`decide::after_failure` says when).

use serde_json::{json, Value};

use crate::connectors::{ConnectorError, Fields, RemoteRecord};
use crate::contract::{BillingObject, Contract, CrmObject, ObjectMapping, Owner, Side};
use crate::ingest::stripe::{META_CORRELATION, META_ORIGIN};
use crate::ledger::{ChangeSet, EventState, NewAudit, NewDeadLetter, NewOp, OpKind, OpOutcome, OutboxOp, ShadowValue};
use crate::plan;

/// Where a write carries its correlation id on each side.
pub fn correlation_field(side: Side) -> String {
    match side {
        Side::Billing => format!("metadata.{META_CORRELATION}"),
        Side::Crm => "driftless_correlation_id".into(),
    }
}

/// The outbox operation that updates a CRM record of this kind.
pub fn crm_update_op(kind: CrmObject) -> OpKind {
    match kind {
        CrmObject::Contact => OpKind::UpdateContact,
        CrmObject::Company => OpKind::UpdateCompany,
    }
}

/// The outbox operation for a planned write of record `m` (CRM id, billing id), caused by the
/// event `cause` (inbox id, tag), carrying `correlation_id`. Replay's preview computes the same
/// keys to report the ones already used.
#[allow(clippy::too_many_arguments)]
pub fn new_op(
    contract: &Contract,
    m: &ObjectMapping,
    w: &plan::PlannedWrite,
    crm_id: Option<&str>,
    billing_id: Option<&str>,
    cause_tag: &str,
    cause_id: i64,
    correlation_id: String,
) -> NewOp {
    let mut values: serde_json::Map<String, Value> = w
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    let object = contract.object(&w.object).unwrap_or(m);
    let vars = |op: &'static str| {
        [
            ("billing_customer_id", billing_id.unwrap_or("-")),
            ("crm_contact_id", crm_id.unwrap_or("-")),
            ("crm_company_id", crm_id.unwrap_or("-")),
            ("event_id", cause_tag),
            ("object", object.name.as_str()),
            ("op", op),
        ]
    };
    let (op, target, idem) = match (w.side, w.create) {
        (Side::Billing, false) if object.billing == BillingObject::Subscription => {
            // The two-way case: a plan requested in the CRM moves the customer's
            // subscription; the key comes from that object's contract template.
            let idem = object.idempotency_key.render(&vars("change_plan"));
            (OpKind::ChangePlan, billing_id.map(str::to_string), idem)
        }
        (Side::Billing, true) => {
            values.insert(format!("metadata.{META_ORIGIN}"), Value::String("driftless".into()));
            values.insert(
                format!("metadata.{}", m.crm.origin_key()),
                Value::String(crm_id.unwrap_or_default().to_string()),
            );
            (OpKind::CreateCustomer, None, m.idempotency_key.render(&vars("create")))
        }
        (Side::Billing, false) => {
            let idem = format!("billing:update:{}:{}", billing_id.unwrap_or("-"), cause_tag);
            (OpKind::UpdateCustomer, billing_id.map(str::to_string), idem)
        }
        (Side::Crm, _) => {
            let idem = format!("crm:update:{}:{}", crm_id.unwrap_or("-"), cause_tag);
            (crm_update_op(m.crm), crm_id.map(str::to_string), idem)
        }
    };
    values.insert(correlation_field(w.side), Value::String(correlation_id.clone()));
    NewOp {
        destination: w.side,
        op,
        target_id: target,
        idempotency_key: idem,
        correlation_id,
        field_values: values,
        cause_inbox_id: Some(cause_id),
    }
}

/// An update of `target` on `side` with these values (a review resolution's write).
pub fn update_op(
    crm_kind: CrmObject,
    side: Side,
    target: &str,
    idempotency_key: String,
    mut values: serde_json::Map<String, Value>,
    cause: Option<i64>,
    correlation_id: String,
) -> NewOp {
    values.insert(correlation_field(side), Value::String(correlation_id.clone()));
    NewOp {
        destination: side,
        op: match side {
            Side::Crm => crm_update_op(crm_kind),
            Side::Billing => OpKind::UpdateCustomer,
        },
        target_id: Some(target.to_string()),
        idempotency_key,
        correlation_id,
        field_values: values,
        cause_inbox_id: cause,
    }
}

/// The values an operation writes, as the connectors take them.
pub fn fields_of(op: &OutboxOp) -> Fields {
    op.field_values
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            };
            (k.clone(), s)
        })
        .collect()
}

/// Shadow rows a completed write settles: every mapped field it wrote, on both sides.
pub fn settled_shadow(contract: &Contract, m: &ObjectMapping, op: &OutboxOp) -> Vec<ShadowValue> {
    let seq = op.cause_inbox_id.unwrap_or(0);
    let mut out = Vec::new();
    for f in contract.contact_fields(m) {
        // A write never carries a field its destination owns; skipping them keeps one path
        // mapped twice (a subscription's `plan`, owned by billing, and the shared requested
        // plan) from settling the other field.
        if f.owner.side() == Some(op.destination) {
            continue;
        }
        let path = match op.destination {
            Side::Crm => &f.crm,
            Side::Billing => &f.billing,
        };
        let value = match op.field_values.get(path.as_str()) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => None,
            None if op.op == OpKind::CreateCustomer && f.owner != Owner::Billing && path != "id" => None,
            None => continue,
        };
        for side in [Side::Crm, Side::Billing] {
            out.push(ShadowValue {
                side,
                field: f.name.clone(),
                value: value.clone(),
                sync_seq: seq,
            });
        }
    }
    out
}

/// A write done: its outcome, the shadow it settles, the identity a create makes, the audit.
pub fn done(
    contract: &Contract,
    m: &ObjectMapping,
    key: &str,
    crm_id: Option<&str>,
    op: &OutboxOp,
    rec: &RemoteRecord,
) -> ChangeSet {
    let mut cs = ChangeSet::new(key, &contract.version);
    cs.op_outcomes.push(OpOutcome {
        op_id: op.id,
        state: "done",
        response_status: Some(200),
        response: Some(json!({"id": rec.id}).to_string()),
        result_id: Some(rec.id.clone()),
        error: None,
    });
    cs.shadow = settled_shadow(contract, m, op);
    if op.op == OpKind::CreateCustomer {
        if let Some(cid) = crm_id {
            cs.identity = Some((m.name.clone(), cid.to_string(), rec.id.clone()));
        }
        cs.replan = Some(true);
    }
    cs.settle_causes = op.cause_inbox_id.into_iter().collect();
    cs.audit.push(NewAudit {
        inbox_id: op.cause_inbox_id,
        outbox_id: Some(op.id),
        actor: "engine".into(),
        action: "write_applied".into(),
        rule: None,
        detail: json!({"destination": op.destination.as_str(), "op": op.op.as_str(), "target": rec.id,
            "idempotency_key": op.idempotency_key, "correlation_id": op.correlation_id, "attempt": op.attempts + 1}),
    });
    cs
}

/// A write given up: its outcome, its dead letter, its cause dead-lettered, the audit.
pub fn dead_letter(
    contract: &Contract,
    key: &str,
    op: &OutboxOp,
    e: &ConnectorError,
    class: &str,
    attempts: i64,
) -> ChangeSet {
    let mut cs = ChangeSet::new(key, &contract.version);
    cs.op_outcomes.push(OpOutcome {
        op_id: op.id,
        state: "dead_lettered",
        response_status: e.status(),
        response: e.body().map(str::to_string),
        result_id: None,
        error: Some(e.to_string()),
    });
    cs.dead_letters.push(NewDeadLetter {
        op_id: op.id,
        destination: op.destination,
        error_class: class.into(),
        error: e.to_string(),
        request: json!({"op": op.op.as_str(), "target": op.target_id, "idempotency_key": op.idempotency_key,
            "correlation_id": op.correlation_id, "fields": op.field_values})
        .to_string(),
        response: e.body().map(str::to_string),
        attempts,
    });
    if let Some(c) = op.cause_inbox_id {
        cs.event_states.push((c, EventState::DeadLettered, e.to_string()));
    }
    cs.audit.push(NewAudit {
        inbox_id: op.cause_inbox_id,
        outbox_id: Some(op.id),
        actor: "engine".into(),
        action: "dead_letter".into(),
        rule: Some(format!("retry:{class}")),
        detail: json!({"error": e.to_string(), "attempts": attempts}),
    });
    cs
}

/// A planned write's idempotency key was already taken: the write exists (or existed), so its
/// cause is settled rather than planned again and again.
pub fn key_already_used(contract: &Contract, key: &str, cause_id: i64) -> ChangeSet {
    ChangeSet {
        event_states: vec![(
            cause_id,
            EventState::Applied,
            "write already made under the same idempotency key".into(),
        )],
        ..ChangeSet::new(key, &contract.version)
    }
}
