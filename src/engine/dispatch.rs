//! Sending a record's open writes, in order, through the one write gate, and recording what
//! became of each (`decide::writes` decides: done, wait, retry, dead letter).

use super::load::{find_by_origin, read};
use super::worker::{lane, Ctx, Step};
use super::{EngineError, Inner};
use crate::budget::Lane;
use crate::connectors::{ConnectorError, RemoteRecord};
use crate::contract::Side;
use crate::decide::writes;
use crate::decide::{self, AfterFailure};
use crate::ledger::{OpKind, OutboxOp, WriteHold};

/// The one gate in front of every outbound call: spend one unit of the destination's rate
/// budget in the record's lane, then read the pause flags from the ledger, so a pause set by
/// another process stops the very next write. `Some(hold)`: paused, frozen by migration mode
/// or observing, send nothing. A CRM batch call passes it once. `object`: the contract object
/// written.
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
async fn wait_for_batch(ctx: &Ctx<'_>, op: OpKind) -> Result<(), EngineError> {
    let inner = ctx.inner;
    let reason = crate::ledger::batch_wait_reason(op);
    let until = inner.now_ms() + super::crm_batch::BATCH_FALLBACK_MS;
    inner.ledger.park(ctx.key, ctx.owner, until, &reason).await?;
    inner.metrics.add("crm_batch_waits", op.as_str(), 1.0);
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

/// Send one open write and record its outcome.
pub(super) async fn dispatch(ctx: &Ctx<'_>, op: &OutboxOp) -> Result<Step, EngineError> {
    let inner = ctx.inner;
    let dest = op.destination;
    let fields = writes::fields_of(op);
    let target = op.target_id.as_deref().unwrap_or_default();
    if !op.op.is_crm_update() {
        if let Some(hold) = write_gate(inner, dest, Some(&ctx.mapping.name)).await? {
            return park_held(ctx, hold).await;
        }
    }
    let result = match op.op {
        OpKind::CreateCustomer => {
            let crm_id = ctx.crm_id.unwrap_or_default();
            let email = fields.get("email").and_then(|v| v.as_deref());
            // A customer an earlier, lost attempt made is found by its origin marker before
            // creating again. Not needed for a create never attempted and planned in this
            // turn right after that same lookup found none: the record is leased to this
            // worker, so nothing of ours created one since.
            let found = if op.attempts == 0 && ctx.origin_checked(op.id) {
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
        OpKind::UpdateCustomer => {
            inner
                .billing
                .update_customer(target, &op.idempotency_key, &fields)
                .await
        }
        OpKind::ChangePlan => inner.billing.change_plan(target, &op.idempotency_key, &fields).await,
        OpKind::UpdateContact | OpKind::UpdateCompany => {
            // Bulk work (backfill, replay, repairs) is not waited on: its CRM update waits,
            // parked, for the lane to send it in a full call.
            if lane() == Lane::Bulk && inner.crm_writes.running(ctx.mapping.crm) {
                wait_for_batch(ctx, op.op).await?;
                return Ok(Step::Parked);
            }
            // Coalesced with other records' updates into one batch call, gated there.
            match super::crm_batch::update(inner, ctx.mapping.crm, target, fields.clone()).await? {
                super::crm_batch::Sent::Held(hold) => return park_held(ctx, hold).await,
                super::crm_batch::Sent::GateFailed(why) => return park_gate_failed(ctx, &why).await,
                super::crm_batch::Sent::Done(r) => r,
            }
        }
        read @ (OpKind::ReadCustomer | OpKind::ReadContact | OpKind::ReadCompany | OpKind::ReadBillingSummary) => {
            // A given-up read is dead-lettered when recorded and never open: not a write.
            Err(ConnectorError::Rejected {
                system: "engine",
                status: 0,
                code: "not_a_write".into(),
                message: format!("{read} is a read given up, not a write to send"),
                body: String::new(),
            })
        }
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
    let e = match result {
        Ok(rec) => {
            inner.metrics.add("writes", dest.as_str(), 1.0);
            let cs = writes::done(&inner.contract, ctx.mapping, ctx.key, ctx.crm_id, op, &rec);
            inner.ledger.apply(&cs, now).await?;
            return Ok(Step::Done);
        }
        Err(e) => e,
    };
    let max = i64::from(inner.contract.retry.max_attempts);
    match decide::after_failure(&e, op.attempts, max, ctx.failing_too_long(now)) {
        AfterFailure::Wait => {
            // Rate pressure, not a failure: the provider asks for a retry (a 429 it says not
            // to retry arrives as a rejection and dead-letters). The record waits out
            // Retry-After (every worker does once 429s are not isolated; without guidance the
            // rate adapts) and the write is tried again with the same key, without spending
            // one of the op's attempts. It shows in the 429 chart, the budget's status and
            // lag; an operator can pause.
            let wait = inner.note_rate_limited(dest, e.retry_after());
            let reason = format!("rate limited by {}: waiting {} ms", dest.as_str(), wait.as_millis());
            inner
                .ledger
                .park_failed(ctx.key, ctx.owner, now + wait.as_millis() as i64, &reason, false, now)
                .await?;
            Ok(Step::Parked)
        }
        AfterFailure::Retry { attempts, max } => {
            inner.metrics.add("errors", dest.as_str(), 1.0);
            inner
                .ledger
                .record_attempt(op.id, &e.to_string(), e.status(), now)
                .await?;
            let wait = match e.retry_after() {
                Some(d) => d.as_millis() as i64,
                None => super::worker::backoff(inner, attempts),
            };
            let reason = format!("retry {attempts}/{max}: {e}");
            inner
                .ledger
                .park_failed(ctx.key, ctx.owner, now + wait, &reason, false, now)
                .await?;
            Ok(Step::Parked)
        }
        AfterFailure::GiveUp { class, attempts } => {
            inner.metrics.add("errors", dest.as_str(), 1.0);
            inner.metrics.add("dead_letters", dest.as_str(), 1.0);
            let cs = writes::dead_letter(&inner.contract, ctx.key, op, &e, class, attempts);
            inner.ledger.apply(&cs, now).await?;
            Ok(Step::DeadLettered)
        }
    }
}
