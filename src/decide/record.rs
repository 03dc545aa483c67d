//! One record's decision, once its events are classified and both records re-read.

use serde_json::{json, Value};

use super::{plan_pair, writes, Authority, PairState};
use crate::connectors::RemoteRecord;
use crate::contract::{Contract, ObjectMapping, Side};
use crate::ledger::{ChangeSet, EventState, InboxEvent, NewAudit, NewReview, ShadowValue};
use crate::plan::{Rule, Sequencing, Shadow};

/// The billing objects' summaries, as read for this decision (each `None` when not read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summaries {
    pub subscription: Option<RemoteRecord>,
    pub invoices: Option<RemoteRecord>,
}

/// Everything a record's decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct RecordInputs<'a> {
    pub contract: &'a Contract,
    pub mapping: &'a ObjectMapping,
    /// The record's queue key.
    pub key: &'a str,
    /// The CRM record's id, for a record keyed on the CRM side.
    pub crm_id: Option<&'a str>,
    /// Its new events that are not echoes, oldest first.
    pub real: &'a [InboxEvent],
    /// Echoes found among its new events (inbox id, why), fated here too.
    pub echoes: &'a [(i64, String)],
    /// The record's last cause (inbox id, tag), for a decision without a new event (a
    /// follow-up after a create, a replay).
    pub last_cause: Option<(i64, &'a str)>,
    /// Both records as they are now.
    pub crm: Option<&'a RemoteRecord>,
    pub billing: Option<&'a RemoteRecord>,
    /// The billing id the identity map links to this record.
    pub known_billing_id: Option<&'a str>,
    /// The CRM record the identity map links `billing`'s id to (any record), when looked up.
    pub billing_linked_to: Option<&'a str>,
    pub shadow: &'a Shadow,
    pub summaries: Option<&'a Summaries>,
    pub migration: Option<&'a Authority>,
}

/// A record's decision: the changes to apply, and what the worker needs to know of them.
#[derive(Debug, Clone)]
pub struct Decision {
    pub changes: ChangeSet,
    /// The event the writes hang off (inbox id), if any.
    pub cause_id: Option<i64>,
    /// The decision had a new event (not only a plan again).
    pub has_real: bool,
}

/// Decide a record. `correlation_id` gives each planned write its correlation id.
pub fn record(i: &RecordInputs<'_>, correlation_id: &mut dyn FnMut() -> String) -> Decision {
    let m = i.mapping;
    let mut cs = super::echo::echoes_only(i.contract, i.key, i.echoes.to_vec());
    // The cause: the newest real event, or (a follow-up after a create) the last write's cause.
    let cause: Option<(i64, String)> = match i.real.last() {
        Some(ev) => Some((ev.id, format!("{}:{}", ev.source.as_str(), ev.event_id))),
        None => i.last_cause.map(|(id, tag)| (id, tag.to_string())),
    };
    let has_real = i.real.last().is_some();
    let Some((cause_id, cause_tag)) = cause else {
        return Decision {
            changes: cs,
            cause_id: None,
            has_real,
        };
    };
    let done = |cs: ChangeSet| Decision {
        changes: cs,
        cause_id: Some(cause_id),
        has_real,
    };
    for ev in i.real.iter().take(i.real.len().saturating_sub(1)) {
        cs.event_states.push((
            ev.id,
            EventState::Superseded,
            format!("coalesced into event {cause_id}"),
        ));
    }
    // The billing customer the identity map links is gone: a person decides (it is never
    // recreated without one).
    if let (Some(known), None) = (i.known_billing_id, i.billing) {
        let reason = format!("billing customer {known} no longer exists");
        cs.review = Some(NewReview {
            reason: reason.clone(),
            fields: json!([]),
        });
        cs.audit.push(NewAudit {
            inbox_id: Some(cause_id),
            outbox_id: None,
            actor: "engine".into(),
            action: "decide".into(),
            rule: Some(Rule::BillingMissing.as_str().into()),
            detail: json!({"billing_id": known, "reason": reason}),
        });
        if has_real {
            cs.event_states
                .push((cause_id, EventState::Conflicted, "billing counterpart missing".into()));
        }
        return done(cs);
    }
    if let (Some(cid), Some(b), None) = (i.crm_id, i.billing, i.known_billing_id) {
        // About to link this customer to this CRM record. A customer that belongs to another
        // record (linked to it, or created for it) is never taken over: the CRM's billing id
        // was typed or copied wrongly, and a person decides (once, not in a retry loop).
        let kind = m.crm.as_str();
        let linked = i.billing_linked_to.filter(|o| *o != cid);
        let marker = b.get(&format!("metadata.{}", m.crm.origin_key())).filter(|o| *o != cid);
        if let Some(other) = linked.or(marker) {
            let prop = m.billing_id_property().unwrap_or("billing id");
            let how = if linked.is_some() {
                "is linked to"
            } else {
                "was created for"
            };
            let reason = format!(
                "{kind} {cid}'s {prop} names billing customer {}, which {how} {kind} {other}; \
                 correct {prop} in the CRM (or merge the two records), then resolve",
                b.id
            );
            cs.review = Some(NewReview {
                reason: reason.clone(),
                fields: json!([{"field": prop, "crm": b.id, "billing": null, "owner": "billing", "last_synced": null}]),
            });
            if has_real {
                cs.event_states.push((cause_id, EventState::Conflicted, reason.clone()));
            }
            cs.audit.push(NewAudit {
                inbox_id: Some(cause_id),
                outbox_id: None,
                actor: "engine".into(),
                action: "decide".into(),
                rule: Some(Rule::BillingIdTaken.as_str().into()),
                detail: json!({"billing_id": b.id, "other": other, "reason": reason}),
            });
            return done(cs);
        }
        cs.identity = Some((m.name.clone(), cid.to_string(), b.id.clone()));
    }

    // Plan against the shadow, ties broken by the ledger's own sequence.
    let seq = Sequencing {
        crm_seq: i.real.iter().filter(|e| e.source == Side::Crm).map(|e| e.id).max(),
        billing_seq: i.real.iter().filter(|e| e.source == Side::Billing).map(|e| e.id).max(),
    };
    let state = PairState {
        crm: i.crm,
        billing: i.billing,
        shadow: i.shadow,
        summaries: i.summaries,
        migration: i.migration,
    };
    let p = plan_pair(i.contract, m, &state, seq);
    for (field, value) in &p.in_sync {
        for side in [Side::Crm, Side::Billing] {
            cs.shadow.push(ShadowValue {
                side,
                field: field.clone(),
                value: value.clone(),
                sync_seq: cause_id,
            });
        }
    }
    for d in &p.decisions {
        cs.audit.push(NewAudit {
            inbox_id: Some(cause_id),
            outbox_id: None,
            actor: "engine".into(),
            action: "decide".into(),
            rule: Some(d.rule.as_str().into()),
            detail: serde_json::to_value(d).unwrap_or(Value::Null),
        });
    }
    let billing_id = i.billing.map(|b| b.id.as_str());
    for w in &p.writes {
        cs.new_ops.push(writes::new_op(
            i.contract,
            m,
            w,
            i.crm_id,
            billing_id,
            &cause_tag,
            cause_id,
            correlation_id(),
        ));
    }
    if let Some(reason) = &p.review {
        let fields: Vec<Value> = p
            .decisions
            .iter()
            .filter(|d| d.rule.for_review() || d.outcome.contains("review"))
            .map(|d| {
                let owner = i
                    .contract
                    .contact_fields(m)
                    .find(|f| f.name == d.field)
                    .map(|f| f.owner.label())
                    .unwrap_or("?");
                json!({"field": d.field, "crm": d.crm, "billing": d.billing, "owner": owner, "last_synced": d.last_synced})
            })
            .collect();
        cs.review = Some(NewReview {
            reason: reason.clone(),
            fields: Value::Array(fields),
        });
        if has_real {
            cs.event_states.push((cause_id, EventState::Conflicted, reason.clone()));
        }
    } else if cs.new_ops.is_empty() && has_real {
        cs.event_states
            .push((cause_id, EventState::Applied, "records already agree".into()));
    }
    done(cs)
}
