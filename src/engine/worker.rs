//! Workers: claim one record at a time from the per-record queue, finish its outstanding
//! writes in order, then classify its new events (echo / superseded), re-read both records,
//! plan, and write the decision — each step one ledger transaction.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use super::{echo, EngineError, Inner};
use crate::budget::Lane;
use crate::connectors::{ConnectorError, Fields, RemoteRecord};
use crate::contract::{ObjectMapping, Owner, Side};
use crate::ingest::parse_entity_key;
use crate::ingest::stripe::{META_CORRELATION, META_ORIGIN};
use crate::ledger::{
    ChangeSet, Claim, InboxEvent, NewAudit, NewDeadLetter, NewOp, NewReview, OpOutcome, OutboxOp, ShadowValue,
    WriteHold,
};
use crate::plan::{self, Sequencing, Shadow};

pub(super) const LEASE_MS: i64 = 120_000;
/// Rounds of (dispatch, plan) per claim before the record goes back in line.
const MAX_ROUNDS: usize = 4;
/// However a record fails — reads, refused decisions, writes, rate limits — it is given up
/// (to review or the dead letters, with the reason) once it has been failing this long.
/// Counted failures give up sooner, after the contract's `retry.max_attempts`.
pub(super) const GIVE_UP_AFTER_MS: i64 = 60 * 60 * 1000;
/// Every this many claims a worker takes bulk work (replay) ahead of live work, so bulk
/// progresses under a steady stream of events; otherwise live work is claimed first.
const BULK_CLAIM_EVERY: u64 = 10;

tokio::task_local! {
    /// The budget lane of the record being processed: every request it makes (reads and
    /// writes) waits in this lane. A bulk record turns live when a live event for it (not an echo of our own write) is
    /// pending. Outside a scope (the console's replay preview sets its own), requests are live.
    pub(super) static LANE: std::cell::Cell<Lane>;
}

fn lane() -> Lane {
    LANE.try_with(|l| l.get()).unwrap_or(Lane::Live)
}

/// The record has live events to plan: its work is live from here on.
fn make_live() {
    let _ = LANE.try_with(|l| l.set(Lane::Live));
}

pub(super) async fn run(inner: Arc<Inner>, idx: usize) {
    let owner = format!("{}-w{idx}", std::process::id());
    let mut stop = inner.shutdown_rx();
    let mut claims: u64 = 0;
    while !inner.stopping() {
        let notified = inner.work.notified();
        claims += 1;
        let bulk_first = claims.is_multiple_of(BULK_CLAIM_EVERY);
        let claim = match inner
            .ledger
            .claim_lane(&owner, 1, inner.now_ms(), LEASE_MS, bulk_first)
            .await
        {
            Ok(mut c) => c.pop(),
            Err(e) => {
                if !inner.ledger.explains(&e) {
                    tracing::warn!(error = %e, "claim failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(claim) = claim else {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let key = claim.entity_key.clone();
        let lane = if claim.bulk { Lane::Bulk } else { Lane::Live };
        match LANE
            .scope(std::cell::Cell::new(lane), process(&inner, &owner, &claim))
            .await
        {
            Ok(Turn::Done) => {
                if let Err(e) = inner.ledger.release(&claim, &owner).await {
                    if !inner.ledger.explains(&e) {
                        tracing::warn!(error = %e, record = %key, "release failed; the lease will expire");
                    }
                }
            }
            Ok(Turn::Parked) => {}
            Err(e) => {
                inner.metrics.add("errors", "engine", 1.0);
                if let Err(e2) = after_failed_turn(&inner, &owner, &claim, &e).await {
                    if !inner.ledger_explains(&e2) {
                        tracing::warn!(error = %e2, record = %key, "could not park a failed record; its lease will expire");
                    }
                }
            }
        }
    }
}

enum Turn {
    Done,
    Parked,
}

/// A turn failed with an engine error (the ledger refused a decision, a read of the ledger
/// failed): park the record with backoff, counted, and give it up to review with the reason
/// once it has failed `retry.max_attempts` times in a row or for `GIVE_UP_AFTER_MS`. While the
/// ledger itself cannot be written nothing is counted: the whole engine waits for it (health
/// says why), and giving up would need the same ledger.
pub(super) async fn after_failed_turn(
    inner: &Inner,
    owner: &str,
    claim: &Claim,
    e: &EngineError,
) -> Result<(), EngineError> {
    let key = claim.entity_key.as_str();
    let now = inner.now_ms();
    if inner.ledger_explains(e) {
        let reason = format!("waiting for the ledger: {e}");
        inner.ledger.park(key, owner, now + 2_000, &reason).await?;
        return Ok(());
    }
    let attempts = claim.failures + 1;
    let max = i64::from(inner.contract.retry.max_attempts);
    let too_long = claim.failing_since_ms.is_some_and(|t| now - t >= GIVE_UP_AFTER_MS);
    if attempts < max && !too_long {
        tracing::warn!(error = %e, record = %key, attempt = attempts, max, "record processing failed; parked for a retry");
        let reason = format!("error (attempt {attempts} of {max}): {e}");
        inner
            .ledger
            .park_failed(key, owner, now + backoff_ms(inner, attempts), &reason, true, now)
            .await?;
        return Ok(());
    }
    tracing::warn!(error = %e, record = %key, attempts, "record processing keeps failing; sent to review");
    let events = inner.ledger.unplanned_events(key).await?;
    let since = claim.failing_since_ms.unwrap_or(now);
    let reason = format!(
        "could not be synced: {e} ({attempts} failed attempts over {} s); fix the cause, then resolve to plan it again",
        (now - since).max(0) / 1000
    );
    let cs = ChangeSet {
        entity_key: key.to_string(),
        contract_version: inner.contract.version.clone(),
        event_states: events.iter().map(|ev| (ev.id, "conflicted", reason.clone())).collect(),
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
            detail: json!({"error": e.to_string(), "attempts": attempts}),
        }],
        ..Default::default()
    };
    inner.ledger.apply(&cs, now).await?;
    inner.ledger.release(claim, owner).await?;
    Ok(())
}

pub(super) enum Step {
    Done,
    Parked,
    DeadLettered,
}

pub(super) struct Ctx<'a> {
    inner: &'a Inner,
    owner: &'a str,
    key: &'a str,
    mapping: &'a ObjectMapping,
    crm_id: Option<&'a str>,
    side_id: (Side, &'a str),
    /// Creates planned in this turn right after a lookup by origin found no customer for the
    /// record (their ids): under the same lease, before any attempt, that lookup stands.
    origin_checked: std::sync::Mutex<Vec<i64>>,
    /// The record's failed turns in a row that no write counts, and when its run of failures
    /// began (from its claim): the bounds of every retry (`give_up_*`).
    failures: i64,
    failing_since_ms: Option<i64>,
}

impl<'a> Ctx<'a> {
    /// A record claimed by `owner` outside the worker loop (the CRM batcher's backlog), when it
    /// is one the worker syncs.
    pub(super) fn for_claimed(inner: &'a Inner, owner: &'a str, claim: &'a Claim) -> Option<Ctx<'a>> {
        let key = claim.entity_key.as_str();
        let (object, side, id) = parse_entity_key(key)?;
        let mapping = inner.contract.object(object).filter(|m| syncs_customers(m))?;
        Some(Ctx {
            inner,
            owner,
            key,
            mapping,
            crm_id: (side == Side::Crm).then_some(id),
            side_id: (side, id),
            origin_checked: Default::default(),
            failures: claim.failures,
            failing_since_ms: claim.failing_since_ms,
        })
    }

    /// Whether this record has been failing (any failure, rate limits included) for longer
    /// than any retry may go on.
    fn failing_too_long(&self, now_ms: i64) -> bool {
        self.failing_since_ms.is_some_and(|t| now_ms - t >= GIVE_UP_AFTER_MS)
    }
}

async fn process(inner: &Inner, owner: &str, claim: &Claim) -> Result<Turn, EngineError> {
    let key = claim.entity_key.as_str();
    let Some((object, side, id)) = parse_entity_key(key) else {
        settle_unsynced(inner, key, "unroutable record key").await?;
        return Ok(Turn::Done);
    };
    let mapping = match inner.contract.object(object) {
        Some(m) if syncs_customers(m) => m,
        Some(_) => {
            // FIXME(issue 4): subscriptions, invoices and credit notes are recorded but not synced yet.
            settle_unsynced(
                inner,
                key,
                "object recorded; syncing it arrives with the drift-safe core",
            )
            .await?;
            return Ok(Turn::Done);
        }
        None => {
            settle_unsynced(inner, key, "object not in the contract").await?;
            return Ok(Turn::Done);
        }
    };
    let ctx = Ctx {
        inner,
        owner,
        key,
        mapping,
        crm_id: (side == Side::Crm).then_some(id),
        side_id: (side, id),
        origin_checked: Default::default(),
        failures: claim.failures,
        failing_since_ms: claim.failing_since_ms,
    };
    let mut replan = claim.replan;
    for _ in 0..MAX_ROUNDS {
        for op in inner.ledger.open_ops(key).await? {
            match dispatch(&ctx, &op).await? {
                Step::Done => replan |= op.op == "create_customer",
                Step::DeadLettered => {}
                Step::Parked => return Ok(Turn::Parked),
            }
        }
        let events = inner.ledger.unplanned_events(key).await?;
        if events.is_empty() && !replan {
            return Ok(Turn::Done);
        }
        match decide(&ctx, events, replan).await? {
            Some(Turn::Parked) => return Ok(Turn::Parked),
            Some(Turn::Done) | None => {}
        }
        replan = false;
    }
    Ok(Turn::Done)
}

/// Mark every unplanned event of a record as applied with `reason` (nothing to sync).
async fn settle_unsynced(inner: &Inner, key: &str, reason: &str) -> Result<(), EngineError> {
    let events = inner.ledger.unplanned_events(key).await?;
    if events.is_empty() {
        return Ok(());
    }
    let cs = ChangeSet {
        entity_key: key.to_string(),
        contract_version: inner.contract.version.clone(),
        event_states: events.iter().map(|e| (e.id, "applied", reason.to_string())).collect(),
        audit: vec![NewAudit {
            inbox_id: events.last().map(|e| e.id),
            outbox_id: None,
            actor: "engine".into(),
            action: "ignore".into(),
            rule: Some("not_synced".into()),
            detail: json!({ "reason": reason, "events": events.len() }),
        }],
        ..Default::default()
    };
    inner.ledger.apply(&cs, inner.now_ms()).await?;
    Ok(())
}

fn backoff_ms(inner: &Inner, attempts: i64) -> i64 {
    let r = &inner.contract.retry;
    let exp = (r.base_backoff_ms as f64) * 2f64.powi((attempts - 1).clamp(0, 20) as i32);
    let cap = exp.min(r.max_backoff_ms as f64).max(1.0);
    rand::thread_rng().gen_range(cap / 2.0..=cap) as i64
}

/// A read the worker needed failed: what was read, from which system, and the error.
pub(super) struct ReadFailure {
    error: ConnectorError,
    side: Side,
    /// The dead-lettered operation's name if the read is given up (`read_customer`, …).
    op: &'static str,
    /// The id read, when there was one.
    target: Option<String>,
    /// What was read, for a person: `billing customer "cus_1" (contact 42's billing_customer_id)`.
    what: String,
}

impl ReadFailure {
    fn new(error: ConnectorError, side: Side, op: &'static str, target: Option<&str>, what: String) -> ReadFailure {
        ReadFailure {
            error,
            side,
            op,
            target: target.map(str::to_string),
            what,
        }
    }
}

impl From<ReadFailure> for EngineError {
    fn from(f: ReadFailure) -> EngineError {
        EngineError::Connector(f.error)
    }
}

/// A read failed. A rate limit waits (the budget slows down); a failure worth retrying parks
/// the record with backoff, counted; a failure not worth retrying (a malformed id, a key
/// refused), `retry.max_attempts` failures in a row, or failing for `GIVE_UP_AFTER_MS` gives
/// the read up: a dead letter naming what was read and why, the record's events
/// dead-lettered with it, never a loop.
async fn park_for_read(ctx: &Ctx<'_>, f: ReadFailure) -> Result<Option<Turn>, EngineError> {
    let inner = ctx.inner;
    let e = &f.error;
    let now = inner.now_ms();
    inner.metrics.add("read_errors", e.class(), 1.0);
    let max = i64::from(inner.contract.retry.max_attempts);
    let attempts = ctx.failures + 1;
    let give_up = |class: &'static str| give_up_read(ctx, &f, attempts, class);
    let (wait, count) = match e {
        ConnectorError::RateLimited { .. } => {
            let wait = inner.note_rate_limited(f.side, e.retry_after()).as_millis() as i64;
            if ctx.failing_too_long(now) {
                return give_up("rate_limited").await;
            }
            (wait, false)
        }
        _ if !e.retryable() => return give_up(e.class()).await,
        _ if attempts >= max || ctx.failing_too_long(now) => return give_up("exhausted").await,
        _ => (backoff_ms(inner, attempts), true),
    };
    let reason = if count {
        format!("read failed (attempt {attempts} of {max}): {}: {e}", f.what)
    } else {
        format!("read failed: {}: {e}", f.what)
    };
    inner
        .ledger
        .park_failed(ctx.key, ctx.owner, now + wait, &reason, count, now)
        .await?;
    Ok(Some(Turn::Parked))
}

/// Give a read up: a dead-lettered `read_…` operation with its dead letter (retrying it plans
/// the record again), the record's unplanned events dead-lettered with the reason, audited.
async fn give_up_read(ctx: &Ctx<'_>, f: &ReadFailure, attempts: i64, class: &str) -> Result<Option<Turn>, EngineError> {
    let inner = ctx.inner;
    let now = inner.now_ms();
    let error = format!("{}: {}", f.what, f.error);
    let events = inner.ledger.unplanned_events(ctx.key).await?;
    inner.metrics.add("dead_letters", f.side.as_str(), 1.0);
    let cs = ChangeSet {
        entity_key: ctx.key.to_string(),
        contract_version: inner.contract.version.clone(),
        event_states: events
            .iter()
            .map(|ev| (ev.id, "dead_lettered", error.clone()))
            .collect(),
        failed_reads: vec![crate::ledger::FailedRead {
            destination: f.side,
            op: f.op.to_string(),
            target_id: f.target.clone(),
            error_class: class.to_string(),
            error: error.clone(),
            response: f.error.body().map(str::to_string),
            attempts,
            cause_inbox_id: events.last().map(|ev| ev.id),
        }],
        audit: vec![NewAudit {
            inbox_id: events.last().map(|ev| ev.id),
            outbox_id: None,
            actor: "engine".into(),
            action: "dead_letter".into(),
            rule: Some(format!("read:{class}")),
            detail: json!({"error": error, "attempts": attempts, "read": f.op, "target": f.target}),
        }],
        ..Default::default()
    };
    inner.ledger.apply(&cs, now).await?;
    Ok(Some(Turn::Done))
}

/// Reads spend the destination's rate budget too, in the record's lane.
async fn read<T>(
    inner: &Inner,
    side: Side,
    f: impl std::future::Future<Output = Result<T, ConnectorError>>,
) -> Result<T, ConnectorError> {
    inner.acquire(side, lane()).await;
    f.await
}

fn shadow_map(rows: Vec<ShadowValue>) -> Shadow {
    rows.into_iter().map(|s| ((s.side, s.field), s.value)).collect()
}

/// The CRM property that carries the billing id (the field whose billing path is `id`).
pub(crate) fn billing_id_property(m: &ObjectMapping) -> Option<&str> {
    m.fields.iter().find(|f| f.billing == "id").map(|f| f.crm.as_str())
}

/// Find a billing customer an earlier (maybe lost) create made for this contact: its origin
/// marker in metadata, listed by email.
/// A customer an earlier (lost) create made for this CRM record, found by its origin marker:
/// through the customers with the record's email (a consistent list) when it has one, else
/// through Stripe's metadata search.
async fn find_by_origin(
    inner: &Inner,
    kind: crate::contract::CrmObject,
    crm_id: &str,
    email: Option<&str>,
) -> Result<Option<RemoteRecord>, ConnectorError> {
    let marker = format!("metadata.{}", kind.origin_key());
    let found = match email {
        Some(email) => inner.billing.customers_by_email(email).await?,
        None => inner.billing.customers_by_metadata(kind.origin_key(), crm_id).await?,
    };
    Ok(found.into_iter().rev().find(|r| r.get(&marker) == Some(crm_id)))
}

async fn decide(ctx: &Ctx<'_>, events: Vec<InboxEvent>, replan: bool) -> Result<Option<Turn>, EngineError> {
    let inner = ctx.inner;
    let key = ctx.key;
    let mut cs = ChangeSet {
        entity_key: key.to_string(),
        contract_version: inner.contract.version.clone(),
        replan: Some(false),
        ..Default::default()
    };
    // 1. Echoes: values we wrote coming back.
    let mut crm_writes = None;
    let mut billing_writes = None;
    let mut real: Vec<&InboxEvent> = Vec::new();
    for ev in &events {
        let writes = match ev.source {
            Side::Crm => &mut crm_writes,
            Side::Billing => &mut billing_writes,
        };
        if writes.is_none() {
            *writes = Some(inner.ledger.recent_writes(key, ev.source, 20).await?);
        }
        let mut verdict = echo::classify(ev, writes.as_deref().unwrap_or_default());
        if verdict.is_none() && ev.event_type.ends_with(crate::ingest::poll::POLLED_SUFFIX) {
            let shadow = shadow_map(inner.ledger.shadow(key).await?);
            let mapped: Vec<(&str, &str)> = contact_fields(&inner.contract, ctx.mapping)
                .map(|f| (f.crm.as_str(), f.name.as_str()))
                .collect();
            verdict = echo::crm_snapshot_echo(ev, writes.as_deref().unwrap_or_default(), &mapped, &shadow);
        }
        match verdict {
            Some(reason) => {
                inner.metrics.add("echo_drops", ev.source.as_str(), 1.0);
                cs.event_states.push((ev.id, "echo", reason));
            }
            None => real.push(ev),
        }
    }
    // Backfilled records stay bulk work; a live event makes the record live — unless it is
    // the echo of our own write (a backfill's create comes back as a live webhook).
    if real.iter().any(|e| !super::backfill::is_backfill_event(&e.event_id)) {
        make_live();
    }
    if real.is_empty() && !replan {
        inner.ledger.apply(&cs, inner.now_ms()).await?;
        return Ok(None);
    }

    // 2. Re-read both records now: never trust an old payload.
    let m = ctx.mapping;
    let (crm, billing, known_billing_id, origin_checked) = match load(inner, m, ctx.crm_id, ctx.side_id).await? {
        Ok(x) => x,
        Err(e) => return park_for_read(ctx, e).await,
    };

    // The cause: the newest real event, or (a follow-up after a create) the last write's cause.
    let cause: Option<(i64, String)> = match real.last() {
        Some(ev) => Some((ev.id, format!("{}:{}", ev.source.as_str(), ev.event_id))),
        None => inner.ledger.last_cause(key).await?,
    };
    let Some((cause_id, cause_tag)) = cause else {
        inner.ledger.apply(&cs, inner.now_ms()).await?;
        return Ok(None);
    };
    for ev in real.iter().take(real.len().saturating_sub(1)) {
        cs.event_states
            .push((ev.id, "superseded", format!("coalesced into event {cause_id}")));
    }
    if known_billing_id.is_some() && billing.is_none() {
        cs.review = Some(NewReview {
            reason: format!(
                "billing customer {} no longer exists",
                known_billing_id.as_deref().unwrap_or("?")
            ),
            fields: json!([]),
        });
        if real.last().is_some() {
            cs.event_states
                .push((cause_id, "conflicted", "billing counterpart missing".into()));
        }
        inner.ledger.apply(&cs, inner.now_ms()).await?;
        return Ok(None);
    }
    if let (Some(cid), Some(b), None) = (ctx.crm_id, &billing, &known_billing_id) {
        // About to link this customer to this CRM record. A customer that belongs to another
        // record (linked to it, or created for it) is never taken over: the CRM's billing id
        // was typed or copied wrongly, and a person decides (once, not in a retry loop).
        let kind = m.crm.as_str();
        let linked = inner.ledger.crm_id_linked_to(&m.name, &b.id).await?;
        let marker = b.get(&format!("metadata.{}", m.crm.origin_key()));
        let owner = linked.as_deref().filter(|o| *o != cid).or(marker.filter(|o| *o != cid));
        if let Some(other) = owner {
            let prop = billing_id_property(m).unwrap_or("billing id");
            let how = if linked.as_deref() == Some(other) {
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
            if real.last().is_some() {
                cs.event_states.push((cause_id, "conflicted", reason.clone()));
            }
            cs.audit.push(NewAudit {
                inbox_id: real.last().map(|e| e.id),
                outbox_id: None,
                actor: "engine".into(),
                action: "decide".into(),
                rule: Some("billing_id_taken".into()),
                detail: json!({"billing_id": b.id, "other": other, "reason": reason}),
            });
            inner.ledger.apply(&cs, inner.now_ms()).await?;
            return Ok(None);
        }
        cs.identity = Some((m.name.clone(), cid.to_string(), b.id.clone()));
    }

    // 3. Plan against the shadow.
    let shadow = shadow_map(inner.ledger.shadow(key).await?);
    let seq = Sequencing {
        crm_seq: real.iter().filter(|e| e.source == Side::Crm).map(|e| e.id).max(),
        billing_seq: real.iter().filter(|e| e.source == Side::Billing).map(|e| e.id).max(),
    };
    let extras = touches_billing_objects(&inner.contract, m, &real, replan);
    let migration = inner.ledger.migration_authority().await?;
    let p = match plan_record(
        inner,
        m,
        crm.as_ref(),
        billing.as_ref(),
        &shadow,
        seq,
        extras,
        migration.as_ref(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            let bid = billing.as_ref().map(|b| b.id.as_str());
            let what = format!(
                "the subscriptions and invoices of billing customer {:?}",
                bid.unwrap_or_default()
            );
            return park_for_read(
                ctx,
                ReadFailure::new(e, Side::Billing, "read_billing_summary", bid, what),
            )
            .await;
        }
    };
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
            rule: Some(d.rule.clone()),
            detail: serde_json::to_value(d).unwrap_or(Value::Null),
        });
    }
    let billing_id = billing.as_ref().map(|b| b.id.as_str());
    for w in &p.writes {
        cs.new_ops
            .push(new_op(inner, m, w, ctx.crm_id, billing_id, &cause_tag, cause_id));
    }
    let has_real = real.last().is_some();
    if let Some(reason) = &p.review {
        let fields: Vec<Value> = p
            .decisions
            .iter()
            .filter(|d| d.rule.ends_with("review") || d.rule.ends_with("flag") || d.outcome.contains("review"))
            .map(|d| {
                let owner = contact_fields(&inner.contract, m).find(|f| f.name == d.field).map(|f| f.owner.label()).unwrap_or("?");
                json!({"field": d.field, "crm": d.crm, "billing": d.billing, "owner": owner, "last_synced": d.last_synced})
            })
            .collect();
        cs.review = Some(NewReview {
            reason: reason.clone(),
            fields: Value::Array(fields),
        });
        if has_real {
            cs.event_states.push((cause_id, "conflicted", reason.clone()));
        }
    } else if cs.new_ops.is_empty() && has_real {
        cs.event_states
            .push((cause_id, "applied", "records already agree".into()));
    }
    let planned = cs.new_ops.len();
    let inserted = inner.ledger.apply(&cs, inner.now_ms()).await?;
    if origin_checked {
        if let Ok(mut ids) = ctx.origin_checked.lock() {
            ids.extend(&inserted);
        }
    }
    if planned > 0 && inserted.is_empty() && has_real {
        // An idempotency key was already taken: the write exists (or existed). Settle the
        // event rather than planning it again and again.
        tracing::warn!(record = %key, "a planned write reused an existing idempotency key; not written twice");
        let settle = ChangeSet {
            entity_key: key.to_string(),
            contract_version: inner.contract.version.clone(),
            event_states: vec![(
                cause_id,
                "applied",
                "write already made under the same idempotency key".into(),
            )],
            ..Default::default()
        };
        inner.ledger.apply(&settle, inner.now_ms()).await?;
    }
    Ok(None)
}

/// Contract objects other than the customer pair `m` that mirror that customer's billing
/// objects (subscriptions, invoices) onto the same CRM record.
pub(crate) fn billing_object_mappings<'a>(
    c: &'a crate::contract::Contract,
    m: &'a ObjectMapping,
) -> impl Iterator<Item = &'a ObjectMapping> {
    use crate::contract::BillingObject;
    c.objects
        .iter()
        .filter(move |o| o.crm == m.crm && matches!(o.billing, BillingObject::Subscription | BillingObject::Invoice))
}

/// Whether this decision needs the subscription and invoice summaries (they cost requests):
/// a billing event about them, a CRM change to a field they own, or a plan without events.
fn touches_billing_objects(
    c: &crate::contract::Contract,
    m: &ObjectMapping,
    real: &[&InboxEvent],
    replan: bool,
) -> bool {
    if replan || real.is_empty() {
        return true;
    }
    real.iter().any(|ev| match ev.source {
        Side::Billing => {
            ev.event_type.starts_with("customer.subscription.")
                || ev.event_type.starts_with("invoice.")
                || ev.event_type.starts_with("credit_note.")
                || ev.event_type == "customer.updated"
                || ev.event_type == super::backfill::CUSTOMER_BACKFILLED
        }
        Side::Crm => {
            let payload: serde_json::Value = serde_json::from_str(&ev.payload).unwrap_or_default();
            if crate::ingest::poll::is_snapshot(&payload) {
                // A polled snapshot: any mapped property may have changed.
                return true;
            }
            let prop = payload.get("propertyName").and_then(|p| p.as_str()).unwrap_or("");
            billing_object_mappings(c, m).any(|o| o.fields.iter().any(|f| f.crm == prop))
        }
    })
}

/// Every field mapped onto a contact for the customer pair `m`: its own and those of the
/// billing objects mirrored onto the same contact.
pub(crate) fn contact_fields<'a>(
    c: &'a crate::contract::Contract,
    m: &'a ObjectMapping,
) -> impl Iterator<Item = &'a crate::contract::FieldMapping> {
    m.fields
        .iter()
        .chain(billing_object_mappings(c, m).flat_map(|o| o.fields.iter()))
}

/// Plan a contact/customer pair: the customer mapping, then (when `extras`) each billing
/// object mirrored onto the contact, read once per object kind. A connector failure comes back
/// inside `Ok(Err(..))` so callers can park.
#[allow(clippy::too_many_arguments)]
async fn plan_record(
    inner: &Inner,
    m: &ObjectMapping,
    crm: Option<&RemoteRecord>,
    billing: Option<&RemoteRecord>,
    shadow: &Shadow,
    seq: Sequencing,
    extras: bool,
    migration: Option<&super::backfill::Authority>,
) -> Result<plan::Plan, ConnectorError> {
    use crate::contract::BillingObject;
    // Migration mode: the authority owns the pair's fields (the one place it applies).
    let mut p = plan::plan(&super::backfill::owners_under(m, migration), crm, billing, shadow, seq);
    let (Some(c), Some(b), true) = (crm, billing, extras) else {
        return Ok(p);
    };
    let mut subscription: Option<RemoteRecord> = None;
    let mut invoices: Option<RemoteRecord> = None;
    for extra in billing_object_mappings(&inner.contract, m) {
        let summary = match extra.billing {
            BillingObject::Subscription => match &subscription {
                Some(s) => s.clone(),
                None => {
                    let s = read(inner, Side::Billing, inner.billing.subscription_summary(&b.id)).await?;
                    subscription.insert(s).clone()
                }
            },
            _ => match &invoices {
                Some(s) => s.clone(),
                None => {
                    let mut r = read(inner, Side::Billing, inner.billing.invoice_summary(&b.id)).await?;
                    // Delinquency lives on the customer, which was just read.
                    r.fields.insert(
                        "delinquent".into(),
                        Some(b.get("delinquent").unwrap_or("false").to_string()),
                    );
                    invoices.insert(r).clone()
                }
            },
        };
        let p2 = plan::plan(extra, Some(c), Some(&summary), shadow, seq);
        merge_plan(&mut p, p2, extra, &summary);
    }
    Ok(p)
}

fn add_review(p: &mut plan::Plan, msg: String) {
    p.review = Some(match p.review.take() {
        Some(prev) => format!("{prev}; {msg}"),
        None => msg,
    });
}

/// Fold a billing-object mapping's plan into the customer's: one CRM write per decision.
/// A billing write is kept only where billing accepts one: a plan change on a live
/// subscription. Anything else goes to review with the reason.
fn merge_plan(into: &mut plan::Plan, from: plan::Plan, m: &ObjectMapping, summary: &RemoteRecord) {
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
                crate::contract::BillingObject::Subscription => {
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
                rule: "unsupported_write".into(),
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

type Loaded = (Option<RemoteRecord>, Option<RemoteRecord>, Option<String>, bool);

/// Read both records as they are now: (CRM record, billing record, billing id the identity
/// map knows, whether a lookup by origin marker just found no customer for the CRM record).
/// A connector failure is returned inside `Ok(Err(..))` so callers can park.
async fn load(
    inner: &Inner,
    m: &ObjectMapping,
    crm_id: Option<&str>,
    side_id: (Side, &str),
) -> Result<Result<Loaded, ReadFailure>, EngineError> {
    let mut props: Vec<String> = m.fields.iter().map(|f| f.crm.clone()).collect();
    props.extend(billing_object_mappings(&inner.contract, m).flat_map(|o| o.fields.iter().map(|f| f.crm.clone())));
    let extra: &[&str] = match m.crm {
        crate::contract::CrmObject::Contact => &["email", "driftless_correlation_id"],
        crate::contract::CrmObject::Company => &["driftless_correlation_id"],
    };
    for p in extra.iter().copied() {
        if !props.iter().any(|x| x == p) {
            props.push(p.to_string());
        }
    }
    let kind = m.crm.as_str();
    let crm = match crm_id {
        // Through the object type's read lane: reads waiting together go as one batch/read.
        Some(id) => match super::crm_reads::get(inner, m.crm, id, std::sync::Arc::new(props), lane()).await? {
            Ok(r) => r,
            Err(e) => {
                let what = format!("CRM {kind} {id:?}");
                return Ok(Err(ReadFailure::new(e, Side::Crm, crm_read_op(m.crm), Some(id), what)));
            }
        },
        None => None,
    };
    let known_billing_id = match crm_id {
        Some(id) => inner.ledger.billing_id_for(&m.name, id).await?,
        None => None,
    };
    // Where the billing id came from, for a person reading why a read failed.
    let from_crm = |prop: &str| match crm_id {
        Some(id) => format!("{kind} {id}'s {prop}"),
        None => format!("the CRM's {prop}"),
    };
    let billing_id: Option<(String, String)> = known_billing_id
        .clone()
        .map(|b| (b, "linked in the identity map".to_string()))
        .or_else(|| {
            let prop = billing_id_property(m)?;
            let v = crm.as_ref()?.get(prop)?;
            Some((v.to_string(), from_crm(prop)))
        })
        .or_else(|| (side_id.0 == Side::Billing).then(|| (side_id.1.to_string(), "the record's billing event".into())));
    let mut origin_checked = false;
    let billing = match &billing_id {
        Some((bid, source)) => match read(inner, Side::Billing, inner.billing.get_customer(bid)).await {
            Ok(r) => r,
            Err(e) => {
                let what = format!("billing customer {bid:?} ({source})");
                return Ok(Err(ReadFailure::new(
                    e,
                    Side::Billing,
                    "read_customer",
                    Some(bid),
                    what,
                )));
            }
        },
        None => match (crm_id, &crm) {
            (Some(cid), Some(c)) if m.create_in == Some(Side::Billing) => {
                match read(inner, Side::Billing, find_by_origin(inner, m.crm, cid, c.get("email"))).await {
                    Ok(r) => {
                        origin_checked = r.is_none();
                        r
                    }
                    Err(e) => {
                        let what = format!("billing customers created for {kind} {cid} (lookup by origin marker)");
                        return Ok(Err(ReadFailure::new(e, Side::Billing, "read_customer", None, what)));
                    }
                }
            }
            _ => None,
        },
    };
    Ok(Ok((crm, billing, known_billing_id, origin_checked)))
}

/// The dead-lettered operation's name when a read of a CRM record is given up.
fn crm_read_op(kind: crate::contract::CrmObject) -> &'static str {
    match kind {
        crate::contract::CrmObject::Contact => "read_contact",
        crate::contract::CrmObject::Company => "read_company",
    }
}

/// The object pairs the worker syncs record by record: a CRM contact or company with a billing
/// customer (subscriptions and invoices ride along with their customer).
pub(crate) fn syncs_customers(m: &ObjectMapping) -> bool {
    m.billing == crate::contract::BillingObject::Customer
}

/// Plan a record from both systems' current state without writing anything (replay's dry
/// run). `None` when the record is not one this version syncs. The writes hang off `cause`
/// (inbox id, tag) when given — the event a repair is about to deliver — else off the
/// record's last cause, as the run will.
pub(super) async fn preview(
    inner: &Inner,
    key: &str,
    cause: Option<(i64, String)>,
) -> Result<Option<(plan::Plan, Vec<NewOp>)>, EngineError> {
    let Some((object, side, id)) = parse_entity_key(key) else {
        return Ok(None);
    };
    let Some(m) = inner.contract.object(object).filter(|m| syncs_customers(m)) else {
        return Ok(None);
    };
    let crm_id = (side == Side::Crm).then_some(id);
    let (crm, billing, _, _) = load(inner, m, crm_id, (side, id)).await??;
    let shadow = shadow_map(inner.ledger.shadow(key).await?);
    let migration = inner.ledger.migration_authority().await?;
    let p = plan_record(
        inner,
        m,
        crm.as_ref(),
        billing.as_ref(),
        &shadow,
        Sequencing::default(),
        true,
        migration.as_ref(),
    )
    .await?;
    // A replay plans without a new event: its writes hang off the record's last cause, as
    // the run will.
    let (cause_id, cause_tag) = match cause {
        Some(c) => c,
        None => inner.ledger.last_cause(key).await?.unwrap_or((0, "none".into())),
    };
    let billing_id = billing.as_ref().map(|b| b.id.as_str());
    let ops = p
        .writes
        .iter()
        .map(|w| new_op(inner, m, w, crm_id, billing_id, &cause_tag, cause_id))
        .collect();
    Ok(Some((p, ops)))
}

/// The outbox operation for a planned write: what to call, on which record, with which
/// idempotency key (fixed here, reused on every retry) and correlation id. Replay's preview
/// computes the same keys to report the ones already used.
fn new_op(
    inner: &Inner,
    m: &ObjectMapping,
    w: &plan::PlannedWrite,
    crm_id: Option<&str>,
    billing_id: Option<&str>,
    cause_tag: &str,
    cause_id: i64,
) -> NewOp {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let mut values: serde_json::Map<String, Value> = w
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    let object = inner.contract.object(&w.object).unwrap_or(m);
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
        (Side::Billing, false) if object.billing == crate::contract::BillingObject::Subscription => {
            // The two-way case: a plan requested in the CRM moves the customer's
            // subscription; the key comes from that object's contract template.
            let idem = object.idempotency_key.render(&vars("change_plan"));
            ("change_plan", billing_id.map(str::to_string), idem)
        }
        (Side::Billing, true) => {
            values.insert(format!("metadata.{META_ORIGIN}"), Value::String("driftless".into()));
            values.insert(
                format!("metadata.{}", m.crm.origin_key()),
                Value::String(crm_id.unwrap_or_default().to_string()),
            );
            ("create_customer", None, m.idempotency_key.render(&vars("create")))
        }
        (Side::Billing, false) => {
            let idem = format!("billing:update:{}:{}", billing_id.unwrap_or("-"), cause_tag);
            ("update_customer", billing_id.map(str::to_string), idem)
        }
        (Side::Crm, _) => {
            let idem = format!("crm:update:{}:{}", crm_id.unwrap_or("-"), cause_tag);
            (crm_update_op(m.crm), crm_id.map(str::to_string), idem)
        }
    };
    values.insert(correlation_field(w.side), Value::String(correlation_id.clone()));
    NewOp {
        destination: w.side,
        op: op.into(),
        target_id: target,
        idempotency_key: idem,
        correlation_id,
        field_values: values,
        cause_inbox_id: Some(cause_id),
    }
}

/// Where a write carries its correlation id on each side.
fn correlation_field(side: Side) -> String {
    match side {
        Side::Billing => format!("metadata.{META_CORRELATION}"),
        Side::Crm => "driftless_correlation_id".into(),
    }
}

/// An update of `target` on `side` with a fresh correlation id (written with the values).
/// The outbox operation that updates a CRM record of this kind.
pub(super) fn crm_update_op(kind: crate::contract::CrmObject) -> &'static str {
    match kind {
        crate::contract::CrmObject::Contact => "update_contact",
        crate::contract::CrmObject::Company => "update_company",
    }
}

pub(super) fn update_op(
    crm_kind: crate::contract::CrmObject,
    side: Side,
    target: &str,
    idempotency_key: String,
    mut values: serde_json::Map<String, Value>,
    cause: Option<i64>,
) -> NewOp {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    values.insert(correlation_field(side), Value::String(correlation_id.clone()));
    NewOp {
        destination: side,
        op: match side {
            Side::Crm => crm_update_op(crm_kind).into(),
            Side::Billing => "update_customer".into(),
        },
        target_id: Some(target.to_string()),
        idempotency_key,
        correlation_id,
        field_values: values,
        cause_inbox_id: cause,
    }
}

/// Writes are held (paused, or observe mode): the record waits, its write stays open.
pub(super) async fn park_held(ctx: &Ctx<'_>, hold: WriteHold) -> Result<Step, EngineError> {
    ctx.inner
        .ledger
        .park_held(ctx.key, ctx.owner, hold, ctx.inner.now_ms())
        .await?;
    Ok(Step::Parked)
}

/// A bulk-lane record's CRM update waits, parked, for its lane to send it in a full call
/// (`crm_batch.rs`).
async fn wait_for_batch(ctx: &Ctx<'_>, op: &str) -> Result<(), EngineError> {
    let inner = ctx.inner;
    let reason = crate::ledger::batch_wait_reason(op);
    let until = inner.now_ms() + super::crm_batch::BATCH_FALLBACK_MS;
    inner.ledger.park(ctx.key, ctx.owner, until, &reason).await?;
    inner.metrics.add("crm_batch_waits", op, 1.0);
    Ok(())
}

/// The write gate could not read the pause flags: the record waits and tries again.
pub(super) async fn park_gate_failed(ctx: &Ctx<'_>, why: &str) -> Result<Step, EngineError> {
    let reason = format!("error: write gate: {why}");
    ctx.inner
        .ledger
        .park(ctx.key, ctx.owner, ctx.inner.now_ms() + 2_000, &reason)
        .await?;
    Ok(Step::Parked)
}

pub(super) fn fields_of(op: &OutboxOp) -> Fields {
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
fn settled_shadow(contract: &crate::contract::Contract, m: &ObjectMapping, op: &OutboxOp) -> Vec<ShadowValue> {
    let seq = op.cause_inbox_id.unwrap_or(0);
    let mut out = Vec::new();
    for f in contact_fields(contract, m) {
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
            None if op.op == "create_customer" && f.owner != Owner::Billing && path != "id" => None,
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

/// The one gate in front of every outbound call: spend one unit of the destination's rate
/// budget in the record's lane, then read the pause flags from the ledger, so a pause set by another process stops
/// the very next write. `Some(hold)`: paused, frozen by migration mode or observing, send
/// nothing. A CRM batch call passes it once. `object`: the contract object written.
pub(super) async fn write_gate(
    inner: &Inner,
    dest: Side,
    object: Option<&str>,
) -> Result<Option<WriteHold>, EngineError> {
    // In the lane of the record being processed (a CRM batch call runs in the lane of the
    // task that sends it).
    inner.acquire(dest, lane()).await;
    // Pause and observe mode are read from the ledger right before the write, so a flag set
    // by another process stops the very next write.
    Ok(inner.ledger.write_hold(dest.as_str(), object).await?)
}

async fn dispatch(ctx: &Ctx<'_>, op: &OutboxOp) -> Result<Step, EngineError> {
    let inner = ctx.inner;
    let dest = op.destination;
    let fields = fields_of(op);
    let target = op.target_id.as_deref().unwrap_or_default();
    let batched = matches!(op.op.as_str(), "update_contact" | "update_company");
    if !batched {
        if let Some(hold) = write_gate(inner, dest, Some(&ctx.mapping.name)).await? {
            return park_held(ctx, hold).await;
        }
    }
    let result = match op.op.as_str() {
        "create_customer" => {
            let crm_id = ctx.crm_id.unwrap_or_default();
            let email = fields.get("email").and_then(|v| v.as_deref());
            // A customer an earlier, lost attempt made is found by its origin marker before
            // creating again. Not needed for a create never attempted and planned in this
            // turn right after that same lookup found none: the record is leased to this
            // worker, so nothing of ours created one since.
            let checked = op.attempts == 0
                && ctx
                    .origin_checked
                    .lock()
                    .map(|ids| ids.contains(&op.id))
                    .unwrap_or(false);
            let found = if checked {
                Ok(None)
            } else {
                // The lookup is a request of its own: it spends budget too.
                read(
                    inner,
                    Side::Billing,
                    find_by_origin(inner, ctx.mapping.crm, crm_id, email),
                )
                .await
            };
            match found {
                Ok(Some(found)) => Ok(found),
                Ok(None) => inner.billing.create_customer(&op.idempotency_key, &fields).await,
                Err(e) => Err(e),
            }
        }
        "update_customer" => {
            inner
                .billing
                .update_customer(target, &op.idempotency_key, &fields)
                .await
        }
        "change_plan" => inner.billing.change_plan(target, &op.idempotency_key, &fields).await,
        "update_contact" | "update_company" => {
            // Bulk work (backfill, replay, repairs) is not waited on: its CRM update waits,
            // parked, for the lane to send it in a full call.
            if lane() == Lane::Bulk && inner.crm_writes.running(ctx.mapping.crm) {
                wait_for_batch(ctx, &op.op).await?;
                return Ok(Step::Parked);
            }
            // Coalesced with other records' updates into one batch call, gated there.
            match super::crm_batch::update(inner, ctx.mapping.crm, target, fields.clone()).await? {
                super::crm_batch::Sent::Held(hold) => return park_held(ctx, hold).await,
                super::crm_batch::Sent::GateFailed(why) => return park_gate_failed(ctx, &why).await,
                super::crm_batch::Sent::Done(r) => r,
            }
        }
        other => Err(ConnectorError::Rejected {
            system: "engine",
            status: 0,
            code: "unknown_op".into(),
            message: format!("unknown operation {other}"),
            body: String::new(),
        }),
    };
    settle(ctx, op, result).await
}

/// Record what became of a write that was sent: done (shadow, identity, audit, the cause
/// settled), rate limited (wait, same key), retry with backoff, or dead letter.
pub(super) async fn settle(
    ctx: &Ctx<'_>,
    op: &OutboxOp,
    result: Result<RemoteRecord, ConnectorError>,
) -> Result<Step, EngineError> {
    let inner = ctx.inner;
    let dest = op.destination;
    inner.note_outcome(dest, result.as_ref().err());
    let now = inner.now_ms();
    let mut cs = ChangeSet {
        entity_key: ctx.key.to_string(),
        contract_version: inner.contract.version.clone(),
        ..Default::default()
    };
    match result {
        Ok(rec) => {
            inner.metrics.add("writes", dest.as_str(), 1.0);
            cs.op_outcomes.push(OpOutcome {
                op_id: op.id,
                state: "done",
                response_status: Some(200),
                response: Some(json!({"id": rec.id}).to_string()),
                result_id: Some(rec.id.clone()),
                error: None,
            });
            cs.shadow = settled_shadow(&inner.contract, ctx.mapping, op);
            if op.op == "create_customer" {
                if let Some(cid) = ctx.crm_id {
                    cs.identity = Some((ctx.mapping.name.clone(), cid.to_string(), rec.id.clone()));
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
                detail: json!({"destination": dest.as_str(), "op": op.op, "target": rec.id,
                    "idempotency_key": op.idempotency_key, "correlation_id": op.correlation_id, "attempt": op.attempts + 1}),
            });
            inner.ledger.apply(&cs, now).await?;
            Ok(Step::Done)
        }
        Err(ConnectorError::RateLimited { retry_after_ms, .. }) if !ctx.failing_too_long(now) => {
            // Rate pressure, not a failure: the provider asks for a retry (a 429 it says not
            // to retry arrives as a rejection and dead-letters below). The record waits out
            // Retry-After (every worker does once 429s are not isolated; without guidance the
            // rate adapts) and the write is tried again with the same key, without spending
            // one of the op's attempts. It shows in the 429
            // chart, the budget's status and lag; an operator can pause.
            let wait = inner.note_rate_limited(dest, retry_after_ms.map(Duration::from_millis));
            let reason = format!("rate limited by {}: waiting {} ms", dest.as_str(), wait.as_millis());
            inner
                .ledger
                .park_failed(ctx.key, ctx.owner, now + wait.as_millis() as i64, &reason, false, now)
                .await?;
            Ok(Step::Parked)
        }
        Err(e) => {
            let attempts = op.attempts + 1;
            inner.metrics.add("errors", dest.as_str(), 1.0);
            let max = i64::from(inner.contract.retry.max_attempts);
            // A rate limit reaches here only once the record has been failing for longer than
            // any retry may go on: it is given up like an exhausted write.
            let rate_limited = matches!(e, ConnectorError::RateLimited { .. });
            if e.retryable() && attempts < max && !rate_limited && !ctx.failing_too_long(now) {
                inner
                    .ledger
                    .record_attempt(op.id, &e.to_string(), e.status(), now)
                    .await?;
                let wait = match e.retry_after() {
                    Some(d) => d.as_millis() as i64,
                    None => backoff_ms(inner, attempts),
                };
                let reason = format!("retry {attempts}/{max}: {e}");
                inner
                    .ledger
                    .park_failed(ctx.key, ctx.owner, now + wait, &reason, false, now)
                    .await?;
                return Ok(Step::Parked);
            }
            let class = match &e {
                ConnectorError::RateLimited { .. } => "rate_limited",
                e if e.retryable() => "exhausted",
                e => e.class(),
            };
            inner.metrics.add("dead_letters", dest.as_str(), 1.0);
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
                destination: dest,
                error_class: class.into(),
                error: e.to_string(),
                request: json!({"op": op.op, "target": op.target_id, "idempotency_key": op.idempotency_key,
                    "correlation_id": op.correlation_id, "fields": op.field_values})
                .to_string(),
                response: e.body().map(str::to_string),
                attempts,
            });
            if let Some(c) = op.cause_inbox_id {
                cs.event_states.push((c, "dead_lettered", e.to_string()));
            }
            cs.audit.push(NewAudit {
                inbox_id: op.cause_inbox_id,
                outbox_id: Some(op.id),
                actor: "engine".into(),
                action: "dead_letter".into(),
                rule: Some(format!("retry:{class}")),
                detail: json!({"error": e.to_string(), "attempts": attempts}),
            });
            inner.ledger.apply(&cs, now).await?;
            Ok(Step::DeadLettered)
        }
    }
}
