//! What a failure changes: a record given up to review, a read given up to the dead letters,
//! events recorded with nothing to sync.

use serde_json::json;

use crate::contract::{Contract, Side};
use crate::ledger::{ChangeSet, EventState, FailedRead, InboxEvent, NewAudit, NewReview, OpKind};

/// A record whose turns keep failing, given up to review with the reason: its unplanned
/// events conflicted (in review), audited.
pub fn turn_given_up(
    contract: &Contract,
    key: &str,
    events: &[InboxEvent],
    error: &str,
    attempts: i64,
    failing_ms: i64,
) -> ChangeSet {
    let reason = format!(
        "could not be synced: {error} ({attempts} failed attempts over {} s); fix the cause, then resolve to plan it again",
        failing_ms.max(0) / 1000
    );
    ChangeSet {
        event_states: events
            .iter()
            .map(|ev| (ev.id, EventState::Conflicted, reason.clone()))
            .collect(),
        review: Some(NewReview {
            reason: reason.clone(),
            fields: json!([]),
        }),
        audit: vec![NewAudit {
            inbox_id: events.last().map(|ev| ev.id),
            outbox_id: None,
            actor: "engine".into(),
            action: "give_up".into(),
            rule: Some("retry:engine".into()),
            detail: json!({"error": error, "attempts": attempts}),
        }],
        ..ChangeSet::new(key, &contract.version)
    }
}

/// A read given up: a dead-lettered operation `op` with its dead letter (retrying it plans the
/// record again), the record's unplanned events dead-lettered with the reason, audited.
#[allow(clippy::too_many_arguments)]
pub fn read_given_up(
    contract: &Contract,
    key: &str,
    events: &[InboxEvent],
    side: Side,
    op: OpKind,
    target: Option<&str>,
    error: &str,
    response: Option<&str>,
    class: &str,
    attempts: i64,
) -> ChangeSet {
    ChangeSet {
        event_states: events
            .iter()
            .map(|ev| (ev.id, EventState::DeadLettered, error.to_string()))
            .collect(),
        failed_reads: vec![FailedRead {
            destination: side,
            op,
            target_id: target.map(str::to_string),
            error_class: class.to_string(),
            error: error.to_string(),
            response: response.map(str::to_string),
            attempts,
            cause_inbox_id: events.last().map(|ev| ev.id),
        }],
        audit: vec![NewAudit {
            inbox_id: events.last().map(|ev| ev.id),
            outbox_id: None,
            actor: "engine".into(),
            action: "dead_letter".into(),
            rule: Some(format!("read:{class}")),
            detail: json!({"error": error, "attempts": attempts, "read": op.as_str(), "target": target}),
        }],
        ..ChangeSet::new(key, &contract.version)
    }
}

/// Events of a record driftless does not sync, applied with the reason, audited.
pub fn not_synced(contract: &Contract, key: &str, events: &[InboxEvent], reason: &str) -> ChangeSet {
    ChangeSet {
        event_states: events
            .iter()
            .map(|e| (e.id, EventState::Applied, reason.to_string()))
            .collect(),
        audit: vec![NewAudit {
            inbox_id: events.last().map(|e| e.id),
            outbox_id: None,
            actor: "engine".into(),
            action: "ignore".into(),
            rule: Some("not_synced".into()),
            detail: json!({ "reason": reason, "events": events.len() }),
        }],
        ..ChangeSet::new(key, &contract.version)
    }
}
