//! Every decision about a record, pure: given what the worker read — the record's new events,
//! both records as they are now, the shadow, the billing objects' summaries, migration mode,
//! who the billing id belongs to — what changes: each event's fate, the writes (with their
//! idempotency keys), the review item, the identity link, the audit. Also what becomes of a
//! write, a read or a turn that failed. No I/O here: the worker (`engine/worker.rs`) loads,
//! calls these, and applies what they return; property tests (`tests.rs`) hold the contract's
//! rules over random histories, ownerships and migration modes.

pub mod echo;
pub mod failures;
mod record;
#[cfg(test)]
mod tests;
pub mod writes;

use std::borrow::Cow;

pub use record::{record, Decision, RecordInputs, Summaries};

use crate::connectors::{ConnectorError, RemoteRecord};
use crate::contract::{BillingObject, Contract, ObjectMapping, Owner, Retry, Side};
use crate::ingest::Change;
use crate::plan::{self, Rule, Sequencing, Shadow};

/// However a record fails — reads, refused decisions, writes, rate limits — it is given up
/// (to review or the dead letters, with the reason) once it has been failing this long.
/// Counted failures give up sooner, after the contract's `retry.max_attempts`.
pub const GIVE_UP_AFTER_MS: i64 = 60 * 60 * 1000;

/// The active migration's authority and the object it covers (`None`: every object).
pub type Authority = (Side, Option<String>);

/// The contract mapping as the planner must apply it: during migration mode the authority
/// owns every field of the covered pair (except the identity field, the billing id).
pub fn owners_under<'a>(m: &'a ObjectMapping, migration: Option<&Authority>) -> Cow<'a, ObjectMapping> {
    let Some((side, object)) = migration else {
        return Cow::Borrowed(m);
    };
    if object.as_deref().is_some_and(|o| o != m.name) {
        return Cow::Borrowed(m);
    }
    let owner = match side {
        Side::Crm => Owner::Crm,
        Side::Billing => Owner::Billing,
    };
    let mut owned = m.clone();
    for f in owned.fields.iter_mut().filter(|f| f.billing != "id") {
        f.owner = owner;
    }
    Cow::Owned(owned)
}

/// The wait before retry number `attempts` (exponential, capped by the contract, with jitter:
/// `unit` in [0, 1) picks within the upper half).
pub fn backoff_ms(retry: &Retry, attempts: i64, unit: f64) -> i64 {
    let exp = (retry.base_backoff_ms as f64) * 2f64.powi((attempts - 1).clamp(0, 20) as i32);
    let cap = exp.min(retry.max_backoff_ms as f64).max(1.0);
    (cap / 2.0 + unit.clamp(0.0, 1.0) * cap / 2.0) as i64
}

/// Whether this decision needs the subscription and invoice summaries (they cost requests):
/// a change to a billing object or to the customer, a CRM change to a property they are
/// mirrored onto, a whole polled version, or a plan without events. `changes`: the new events'
/// changes (`Change::of`), read once by the worker.
pub fn needs_summaries(c: &Contract, m: &ObjectMapping, changes: &[Change], replan: bool) -> bool {
    if replan || changes.is_empty() {
        return true;
    }
    changes.iter().any(|change| {
        let mirrored = c
            .billing_object_mappings(m)
            .flat_map(|o| o.fields.iter().map(|f| f.crm.as_str()));
        change.touches_billing_objects(mirrored)
    })
}

/// Which summaries the contract mirrors onto the record: (subscription, invoices).
pub fn summaries_mapped(c: &Contract, m: &ObjectMapping) -> (bool, bool) {
    let mut out = (false, false);
    for o in c.billing_object_mappings(m) {
        match o.billing {
            BillingObject::Subscription => out.0 = true,
            _ => out.1 = true,
        }
    }
    out
}

fn add_review(p: &mut plan::Plan, msg: String) {
    p.review = Some(match p.review.take() {
        Some(prev) => format!("{prev}; {msg}"),
        None => msg,
    });
}

/// Both records of a pair as they are now, with what else their plan depends on.
#[derive(Debug, Clone, Copy)]
pub struct PairState<'a> {
    pub crm: Option<&'a RemoteRecord>,
    pub billing: Option<&'a RemoteRecord>,
    pub shadow: &'a Shadow,
    /// The billing objects' summaries, when read.
    pub summaries: Option<&'a Summaries>,
    pub migration: Option<&'a Authority>,
}

/// Plan a pair: the customer mapping (under migration mode's owners), then each billing object
/// mirrored onto the CRM record from its summary, folded in (`merge_plan`).
pub fn plan_pair(c: &Contract, m: &ObjectMapping, state: &PairState<'_>, seq: Sequencing) -> plan::Plan {
    let PairState {
        crm,
        billing,
        shadow,
        summaries,
        migration,
    } = *state;
    // Migration mode: the authority owns the pair's fields (the one place it applies).
    let mut p = plan::plan(&owners_under(m, migration), crm, billing, shadow, seq);
    let (Some(crm), Some(billing), Some(s)) = (crm, billing, summaries) else {
        return p;
    };
    for extra in c.billing_object_mappings(m) {
        let summary = match extra.billing {
            BillingObject::Subscription => s.subscription.clone(),
            _ => s.invoices.clone().map(|mut r| {
                // Delinquency lives on the customer, which was just read.
                r.fields.insert(
                    "delinquent".into(),
                    Some(billing.get("delinquent").unwrap_or("false").to_string()),
                );
                r
            }),
        };
        let Some(summary) = summary else { continue };
        let p2 = plan::plan(extra, Some(crm), Some(&summary), shadow, seq);
        merge_plan(&mut p, p2, extra, &summary);
    }
    p
}

/// Fold a billing-object mapping's plan into the customer's: one CRM write per decision.
/// A billing write is kept only where billing accepts one: a plan change on a live
/// subscription. Anything else goes to review with the reason.
pub fn merge_plan(into: &mut plan::Plan, from: plan::Plan, m: &ObjectMapping, summary: &RemoteRecord) {
    into.in_sync.extend(from.in_sync);
    into.decisions.extend(from.decisions);
    if let Some(r) = from.review {
        add_review(into, r);
    }
    for w in from.writes {
        if w.side == Side::Billing {
            let fields = w.settles.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>().join(",");
            let live = !matches!(
                summary.get("status"),
                None | Some("canceled") | Some("incomplete_expired")
            );
            let refusal = match m.billing {
                BillingObject::Subscription => {
                    if !w.fields.keys().all(|k| k == "plan") {
                        Some(format!(
                            "only the plan of a billing subscription can be written, not {fields}"
                        ))
                    } else if w.fields.values().any(Option::is_none) {
                        Some(format!(
                            "{fields} was cleared; a subscription cannot be left without a plan"
                        ))
                    } else if !live {
                        Some(format!(
                            "{fields} changed but the customer has no live subscription to change"
                        ))
                    } else {
                        None
                    }
                }
                _ => Some(format!("billing {} objects are written by billing only", m.name)),
            };
            let Some(why) = refusal else {
                into.writes.push(w);
                continue;
            };
            into.decisions.push(plan::Decision {
                field: fields.clone(),
                rule: Rule::UnsupportedWrite,
                crm: w.settles.first().and_then(|(_, v)| v.clone()),
                billing: None,
                last_synced: None,
                outcome: format!("{why}; sent to review"),
            });
            add_review(into, format!("{}: {why}", m.name));
            continue;
        }
        match into.writes.iter_mut().find(|x| x.side == Side::Crm && !x.create) {
            Some(existing) => {
                existing.fields.extend(w.fields);
                existing.settles.extend(w.settles);
            }
            None => into.writes.push(w),
        }
    }
}

/// What becomes of a failed request, a write or a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// The provider asks to wait (a 429 it allows to retry): wait, nothing counted.
    Wait,
    /// Try again after backoff (a write with the same key); this was failure `attempts` of `max`.
    Retry { attempts: i64, max: i64 },
    /// Give it up to the dead letters, classed.
    GiveUp { class: &'static str, attempts: i64 },
}

/// The one rule for a failed request (`failed_before`: the write's attempts, or the record's
/// failed turns in a row for a read): a rate limit waits, uncounted, until the record has been
/// failing too long; a failure worth retrying is retried until `max_attempts`; one not worth
/// retrying (a malformed id, a key refused, a validation error) is given up at once.
pub fn after_failure(
    e: &ConnectorError,
    failed_before: i64,
    max_attempts: i64,
    failing_too_long: bool,
) -> AfterFailure {
    let attempts = failed_before + 1;
    let give_up = |class| AfterFailure::GiveUp { class, attempts };
    match e {
        ConnectorError::RateLimited { .. } if failing_too_long => give_up("rate_limited"),
        ConnectorError::RateLimited { .. } => AfterFailure::Wait,
        _ if !e.retryable() => give_up(e.class()),
        _ if attempts >= max_attempts || failing_too_long => give_up("exhausted"),
        _ => AfterFailure::Retry {
            attempts,
            max: max_attempts,
        },
    }
}

/// Whether a record failing since `since_ms` has been failing longer than any retry may go on.
pub fn failing_too_long(since_ms: Option<i64>, now_ms: i64) -> bool {
    since_ms.is_some_and(|t| now_ms - t >= GIVE_UP_AFTER_MS)
}

/// Whether a record whose turn failed (a refused decision, a ledger read) is given up to
/// review: after `max_attempts` failed turns in a row, or failing too long.
pub fn give_up_turn(failures: i64, max_attempts: i64, failing_too_long: bool) -> bool {
    failures + 1 >= max_attempts || failing_too_long
}
