//! Workers: claim one record at a time from the per-record queue, send its open writes in
//! order (`dispatch.rs`), then decide its new events — load both records (`load.rs`), let
//! `crate::decide` decide, apply — each step one ledger transaction. Every decision is the
//! pure stage's; here is the I/O around it, and the bounds on every retry.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::dispatch::dispatch;
use super::load::{self, load, shadow_map, ReadFailure};
use super::{EngineError, Inner};
use crate::budget::Lane;
use crate::contract::{ObjectMapping, Side};
use crate::decide::{self, failures, AfterFailure, RecordInputs};
use crate::ingest::{parse_entity_key, Change};
use crate::ledger::{Claim, InboxEvent, OpKind};

pub(super) const LEASE_MS: i64 = 120_000;
/// Rounds of (dispatch, plan) per claim before the record goes back in line.
const MAX_ROUNDS: usize = 4;
/// Every this many claims a worker takes bulk work (replay) ahead of live work, so bulk
/// progresses under a steady stream of events; otherwise live work is claimed first.
const BULK_CLAIM_EVERY: u64 = 10;
/// Recent writes of a record the echo filter compares an event with.
const ECHO_WRITES: i64 = 20;

tokio::task_local! {
    /// The budget lane of the record being processed: every request it makes (reads and
    /// writes) waits in this lane. A bulk record turns live when a live event for it (not an
    /// echo of our own write) is pending. Outside a scope (the console's replay preview sets
    /// its own), requests are live.
    pub(super) static LANE: std::cell::Cell<Lane>;
}

pub(super) fn lane() -> Lane {
    LANE.try_with(|l| l.get()).unwrap_or(Lane::Live)
}

/// The record has live events to plan: its work is live from here on.
fn make_live() {
    let _ = LANE.try_with(|l| l.set(Lane::Live));
}

/// The wait before retry number `attempts`, with jitter.
pub(super) fn backoff(inner: &Inner, attempts: i64) -> i64 {
    decide::backoff_ms(&inner.contract.retry, attempts, rand::thread_rng().gen::<f64>())
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
/// once `decide::give_up_turn` says so. While the ledger itself cannot be written nothing is
/// counted: the whole engine waits for it (health says why), and giving up would need the
/// same ledger.
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
    let max = i64::from(inner.contract.retry.max_attempts);
    let too_long = decide::failing_too_long(claim.failing_since_ms, now);
    let attempts = claim.failures + 1;
    if !decide::give_up_turn(claim.failures, max, too_long) {
        tracing::warn!(error = %e, record = %key, attempt = attempts, max, "record processing failed; parked for a retry");
        let reason = format!("error (attempt {attempts} of {max}): {e}");
        inner
            .ledger
            .park_failed(key, owner, now + backoff(inner, attempts), &reason, true, now)
            .await?;
        return Ok(());
    }
    tracing::warn!(error = %e, record = %key, attempts, "record processing keeps failing; sent to review");
    let events = inner.ledger.unplanned_events(key).await?;
    let since = claim.failing_since_ms.unwrap_or(now);
    let cs = failures::turn_given_up(&inner.contract, key, &events, &e.to_string(), attempts, now - since);
    inner.ledger.apply(&cs, now).await?;
    inner.ledger.release(claim, owner).await?;
    Ok(())
}

pub(super) enum Step {
    Done,
    Parked,
    DeadLettered,
}

/// The record a worker holds for this turn.
pub(super) struct Ctx<'a> {
    pub(super) inner: &'a Inner,
    pub(super) owner: &'a str,
    pub(super) key: &'a str,
    pub(super) mapping: &'a ObjectMapping,
    pub(super) crm_id: Option<&'a str>,
    side_id: (Side, &'a str),
    /// Creates planned in this turn right after a lookup by origin found no customer for the
    /// record (their ids): under the same lease, before any attempt, that lookup stands.
    origin_checked: std::sync::Mutex<Vec<i64>>,
    /// The record's failed turns in a row that no write counts, and when its run of failures
    /// began (from its claim): the bounds of every retry.
    failures: i64,
    failing_since_ms: Option<i64>,
}

impl<'a> Ctx<'a> {
    /// The record `claim` holds, when it is one the worker syncs.
    pub(super) fn for_claimed(inner: &'a Inner, owner: &'a str, claim: &'a Claim) -> Option<Ctx<'a>> {
        let key = claim.entity_key.as_str();
        let (object, side, id) = parse_entity_key(key)?;
        let mapping = inner.contract.object(object).filter(|m| m.syncs_customers())?;
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
    pub(super) fn failing_too_long(&self, now_ms: i64) -> bool {
        decide::failing_too_long(self.failing_since_ms, now_ms)
    }

    /// Whether the create `op_id` was planned right after a lookup by origin found nothing.
    pub(super) fn origin_checked(&self, op_id: i64) -> bool {
        self.origin_checked
            .lock()
            .map(|ids| ids.contains(&op_id))
            .unwrap_or(false)
    }
}

async fn process(inner: &Inner, owner: &str, claim: &Claim) -> Result<Turn, EngineError> {
    let key = claim.entity_key.as_str();
    let why_not = match parse_entity_key(key).map(|(object, _, _)| inner.contract.object(object)) {
        None => Some("unroutable record key"),
        Some(None) => Some("object not in the contract"),
        // Subscriptions, invoices and credit notes are synced with their customer.
        Some(Some(m)) if !m.syncs_customers() => Some("object recorded; synced with its customer"),
        Some(Some(_)) => None,
    };
    let ctx = match (why_not, Ctx::for_claimed(inner, owner, claim)) {
        (None, Some(ctx)) => ctx,
        (why, _) => {
            let events = inner.ledger.unplanned_events(key).await?;
            if !events.is_empty() {
                let why = why.unwrap_or("not synced");
                let cs = failures::not_synced(&inner.contract, key, &events, why);
                inner.ledger.apply(&cs, inner.now_ms()).await?;
            }
            return Ok(Turn::Done);
        }
    };
    let mut replan = claim.replan;
    for _ in 0..MAX_ROUNDS {
        for op in inner.ledger.open_ops(key).await? {
            match dispatch(&ctx, &op).await? {
                Step::Done => replan |= op.op == OpKind::CreateCustomer,
                Step::DeadLettered => {}
                Step::Parked => return Ok(Turn::Parked),
            }
        }
        let events = inner.ledger.unplanned_events(key).await?;
        if events.is_empty() && !replan {
            return Ok(Turn::Done);
        }
        if let Turn::Parked = decide_events(&ctx, events, replan).await? {
            return Ok(Turn::Parked);
        }
        replan = false;
    }
    Ok(Turn::Done)
}

/// A read failed: wait, retry with backoff (counted), or give it up (`decide::after_failure`).
async fn park_for_read(ctx: &Ctx<'_>, f: ReadFailure) -> Result<Turn, EngineError> {
    let inner = ctx.inner;
    let now = inner.now_ms();
    inner.metrics.add("read_errors", f.error.class(), 1.0);
    let max = i64::from(inner.contract.retry.max_attempts);
    let verdict = decide::after_failure(&f.error, ctx.failures, max, ctx.failing_too_long(now));
    let (wait, count, reason) = match verdict {
        AfterFailure::Wait => {
            let wait = inner.note_rate_limited(f.side, f.error.retry_after()).as_millis() as i64;
            (wait, false, format!("read failed: {}: {}", f.what, f.error))
        }
        AfterFailure::Retry { attempts, max } => (
            backoff(inner, attempts),
            true,
            format!("read failed (attempt {attempts} of {max}): {}: {}", f.what, f.error),
        ),
        AfterFailure::GiveUp { class, attempts } => {
            let events = inner.ledger.unplanned_events(ctx.key).await?;
            inner.metrics.add("dead_letters", f.side.as_str(), 1.0);
            let error = format!("{}: {}", f.what, f.error);
            let cs = failures::read_given_up(
                &inner.contract,
                ctx.key,
                &events,
                f.side,
                f.op,
                f.target.as_deref(),
                &error,
                f.error.body(),
                class,
                attempts,
            );
            inner.ledger.apply(&cs, now).await?;
            return Ok(Turn::Done);
        }
    };
    inner
        .ledger
        .park_failed(ctx.key, ctx.owner, now + wait, &reason, count, now)
        .await?;
    Ok(Turn::Parked)
}

/// Decide a record's new events: echoes first (no read needed for those), then both records
/// re-read, then `decide::record`, applied in one transaction.
async fn decide_events(ctx: &Ctx<'_>, events: Vec<InboxEvent>, replan: bool) -> Result<Turn, EngineError> {
    let inner = ctx.inner;
    let key = ctx.key;
    let m = ctx.mapping;
    // 1. Echoes: values we wrote coming back. Each event's payload is read once, here.
    let mut writes = [None, None];
    let mut shadow = None;
    let mut mapped: Vec<(&str, &str)> = Vec::new();
    let mut echoes: Vec<(i64, String)> = Vec::new();
    let mut real: Vec<InboxEvent> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    for ev in events {
        let change = Change::of(&ev);
        let w = &mut writes[ev.source as usize];
        if w.is_none() {
            *w = Some(inner.ledger.recent_writes(key, ev.source, ECHO_WRITES).await?);
        }
        let w = w.as_deref().unwrap_or_default();
        let mut verdict = decide::echo::classify(&change, w);
        if verdict.is_none() && matches!(change, Change::Snapshot { .. }) && !w.is_empty() {
            if shadow.is_none() {
                shadow = Some(shadow_map(inner.ledger.shadow(key).await?));
                mapped = inner
                    .contract
                    .contact_fields(m)
                    .map(|f| (f.crm.as_str(), f.name.as_str()))
                    .collect();
            }
            verdict =
                decide::echo::crm_snapshot_echo(&change, w, &mapped, shadow.as_ref().unwrap_or(&Default::default()));
        }
        match verdict {
            Some(why) => {
                inner.metrics.add("echo_drops", ev.source.as_str(), 1.0);
                echoes.push((ev.id, why));
            }
            None => {
                real.push(ev);
                changes.push(change);
            }
        }
    }
    // Backfilled records stay bulk work; a live event makes the record live — unless it is
    // the echo of our own write (a backfill's create comes back as a live webhook).
    if real.iter().any(|e| !crate::ingest::is_backfill_event(&e.event_id)) {
        make_live();
    }
    if real.is_empty() && !replan {
        let cs = decide::echo::echoes_only(&inner.contract, key, echoes);
        inner.ledger.apply(&cs, inner.now_ms()).await?;
        return Ok(Turn::Done);
    }

    // 2. Re-read both records now: never trust an old payload.
    let loaded = match load(inner, m, ctx.crm_id, ctx.side_id).await? {
        Ok(x) => x,
        Err(f) => return park_for_read(ctx, f).await,
    };
    let last_cause = match real.is_empty() {
        true => inner.ledger.last_cause(key).await?,
        false => None,
    };
    let billing_linked_to = match (&loaded.billing, &loaded.known_billing_id, ctx.crm_id) {
        (Some(b), None, Some(_)) => inner.ledger.crm_id_linked_to(&m.name, &b.id).await?,
        _ => None,
    };
    let shadow = match shadow {
        Some(s) => s,
        None => shadow_map(inner.ledger.shadow(key).await?),
    };
    let migration = inner.ledger.migration_authority().await?;
    let summaries = match (&loaded.crm, &loaded.billing) {
        (Some(_), Some(b)) if decide::needs_summaries(&inner.contract, m, &changes, replan) => {
            match load::summaries(inner, m, b).await {
                Ok(s) => Some(s),
                Err(f) => return park_for_read(ctx, f).await,
            }
        }
        _ => None,
    };

    // 3. Decide, and apply.
    let d = decide::record(
        &RecordInputs {
            contract: &inner.contract,
            mapping: m,
            key,
            crm_id: ctx.crm_id,
            real: &real,
            echoes: &echoes,
            last_cause: last_cause.as_ref().map(|(id, tag)| (*id, tag.as_str())),
            crm: loaded.crm.as_ref(),
            billing: loaded.billing.as_ref(),
            known_billing_id: loaded.known_billing_id.as_deref(),
            billing_linked_to: billing_linked_to.as_deref(),
            shadow: &shadow,
            summaries: summaries.as_ref(),
            migration: migration.as_ref(),
        },
        &mut || uuid::Uuid::new_v4().to_string(),
    );
    let planned = d.changes.new_ops.len();
    let inserted = inner.ledger.apply(&d.changes, inner.now_ms()).await?;
    if loaded.origin_checked {
        if let Ok(mut ids) = ctx.origin_checked.lock() {
            ids.extend(&inserted);
        }
    }
    if let (true, true, Some(cause_id)) = (planned > 0 && inserted.is_empty(), d.has_real, d.cause_id) {
        // An idempotency key was already taken: the write exists (or existed). Settle the
        // event rather than planning it again and again.
        tracing::warn!(record = %key, "a planned write reused an existing idempotency key; not written twice");
        let settle = decide::writes::key_already_used(&inner.contract, key, cause_id);
        inner.ledger.apply(&settle, inner.now_ms()).await?;
    }
    Ok(Turn::Done)
}
