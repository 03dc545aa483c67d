//! CRM write batching: record updates of one object type that are ready at the same time go to
//! HubSpot as one `batch/update` call (at most 100 records), like the ledger's group commit.
//!
//! Workers still dispatch one record at a time and each write settles on its own (outbox
//! state, shadow, audit, echo bookkeeping, dead letter — `dispatch::settle`): a worker hands the
//! update to its object type's lane and waits for that record's outcome. A lane takes
//! whatever is waiting; a lone update is sent at once (as a single `PATCH`), and only when more
//! than one is waiting does it linger a few milliseconds for more. Each call passes the write
//! gate once (one unit of the CRM's rate budget, then the pause check), so while the budget
//! makes a call wait the next batch fills up. A call with room left is first topped up from
//! the backlog: records whose next write is this kind of update, claimed (leased, so still one
//! in flight per record) straight from the ledger and settled by the lane with the worker's
//! own code — so a backlog (a lifted pause, a replay, a burst) drains in full calls of 100
//! whatever the number of workers. A call HubSpot refuses as a whole (one invalid property
//! fails the batch) is split in halves and sent again, down to single records, so only the
//! bad record dead-letters; every other failure is each record's own, handled as today
//! (retry with backoff, 429 wait, dead letter).
//!
//! Bulk work (backfill, replay, reconciliation repairs, bulk resolutions) does not wait for
//! its CRM update: the worker parks the record (`dispatch::wait_for_batch`, reason "waiting for a full
//! CRM batch") and moves on. Every [`BATCH_CHECK`] the lane sends the waiting updates in calls
//! of 100 once 100 wait, once the oldest has waited [`BATCH_WAIT_MS`], or at once when no
//! other bulk work is queued unparked (a small replay is not held back; records held by a
//! pause, a freeze or a backoff are not waited for). So a backfill paced by the
//! billing quota (a few records a second) still reaches HubSpot in full calls. A live event
//! for a waiting record makes it claimable at once (ingest), and a waiting record a lane never
//! sends is claimed by a worker after [`BATCH_FALLBACK_MS`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::dispatch;
use super::worker::{self, Ctx, Step};
use super::{EngineError, Inner};
use crate::connectors::{BatchItemError, BatchUpdate, ConnResult, ConnectorError, Fields, RemoteRecord, CRM_BATCH_MAX};
use crate::contract::{CrmObject, Side};
use crate::decide::writes::{crm_update_op, fields_of};
use crate::ledger::{Claim, OutboxOp, WriteHold};

/// How long a lane waits for the next update once more than one is waiting.
const LINGER: Duration = Duration::from_millis(5);
/// The longest a lane lingers before sending what it has.
const LINGER_MAX: Duration = Duration::from_millis(25);

/// How often a lane looks for bulk updates waiting for a full call.
const BATCH_CHECK: Duration = Duration::from_millis(500);
/// The longest a bulk update waits for a full call while other bulk work is queued unparked.
pub(super) const BATCH_WAIT_MS: i64 = 30_000;
/// A waiting record's `not_before`: workers take it back if no lane sent it by then.
pub(super) const BATCH_FALLBACK_MS: i64 = BATCH_WAIT_MS + 30_000;

/// What became of one record's update.
pub(super) enum Sent {
    /// Outbound CRM writes are held (paused, or observe mode): nothing was sent.
    Held(WriteHold),
    /// The write gate could not read the pause flags (a ledger error): nothing was sent.
    GateFailed(String),
    Done(ConnResult<RemoteRecord>),
}

pub(crate) struct Job {
    item: BatchUpdate,
    reply: oneshot::Sender<Sent>,
}

/// One lane per CRM object type.
pub(crate) type CrmWrites = super::lanes::ObjectLanes<Job>;

/// Update one CRM record through its object type's lane; waits for this record's outcome.
pub(super) async fn update(inner: &Inner, kind: CrmObject, id: &str, fields: Fields) -> Result<Sent, EngineError> {
    let (reply, rx) = oneshot::channel();
    inner.crm_writes.send(
        kind,
        Job {
            item: BatchUpdate {
                id: id.to_string(),
                fields,
            },
            reply,
        },
    )?;
    rx.await.map_err(|_| EngineError::Stopped)
}

/// The lanes' tasks, started with the workers.
pub(super) fn spawn(inner: &Arc<Inner>) -> Vec<tokio::task::JoinHandle<()>> {
    [CrmObject::Contact, CrmObject::Company]
        .into_iter()
        .filter_map(|kind| {
            let rx = inner.crm_writes.take(kind)?;
            Some(tokio::spawn(run(inner.clone(), kind, rx)))
        })
        .collect()
}

async fn run(inner: Arc<Inner>, kind: CrmObject, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut stop = inner.shutdown_rx();
    let mut check = tokio::time::interval(BATCH_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            j = rx.recv() => j,
            _ = check.tick() => {
                send_waiting(&inner, kind, &mut rx).await;
                continue;
            }
            _ = stop.changed() => None,
        };
        let Some(first) = first else { break };
        let mut jobs = vec![first];
        take_waiting(&mut rx, &mut jobs);
        if jobs.len() > 1 {
            linger(&mut rx, &mut jobs, CRM_BATCH_MAX).await;
        }
        flush(&inner, kind, jobs, &mut rx).await;
    }
}

/// Send the bulk updates parked for a full call: full calls while 100 wait, then the rest
/// once the oldest has waited long enough or no other bulk work is queued unparked.
async fn send_waiting(inner: &Inner, kind: CrmObject, rx: &mut mpsc::UnboundedReceiver<Job>) {
    let op = crm_update_op(kind);
    loop {
        let waiting = match inner.ledger.batch_waiting(op, inner.now_ms(), BATCH_FALLBACK_MS).await {
            Ok(w) => w,
            Err(e) => {
                if !inner.ledger.explains(&e) {
                    tracing::warn!(error = %e, "could not read the CRM updates waiting for a batch");
                }
                return;
            }
        };
        let full = waiting.count >= CRM_BATCH_MAX as i64;
        let overdue = waiting
            .oldest_parked_ms
            .is_some_and(|t| inner.now_ms() - t >= BATCH_WAIT_MS);
        if waiting.count == 0 || !(full || overdue || !waiting.more_bulk_work) {
            return;
        }
        // Bulk work: the call waits in the bulk lane of the budget.
        let call = flush(inner, kind, Vec::new(), rx);
        let sent = worker::LANE
            .scope(std::cell::Cell::new(crate::budget::Lane::Bulk), call)
            .await;
        if !full || sent == 0 {
            return;
        }
    }
}

/// Everything already waiting, up to a full call.
fn take_waiting(rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>) {
    take_upto(rx, jobs, CRM_BATCH_MAX);
}

fn take_upto(rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>, cap: usize) {
    while jobs.len() < cap {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

/// More than one update is waiting: give the rest of a burst a few milliseconds to arrive.
async fn linger(rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>, cap: usize) {
    let deadline = Instant::now() + LINGER_MAX;
    while jobs.len() < cap {
        let gap = LINGER.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(gap, rx.recv()).await {
            Ok(Some(j)) => {
                jobs.push(j);
                take_upto(rx, jobs, cap);
            }
            _ => break,
        }
    }
}

/// Top the call up from the backlog, pass the write gate once (budget, then pause) right
/// before sending, and hand each record its outcome. Returns how many records the call
/// carried (none: nothing was waiting after all, and no call was made).
async fn flush(inner: &Inner, kind: CrmObject, mut jobs: Vec<Job>, rx: &mut mpsc::UnboundedReceiver<Job>) -> usize {
    let owner = format!("{}-crm-{}", std::process::id(), kind.as_str());
    let backlog = backlog(inner, kind, &owner, CRM_BATCH_MAX.saturating_sub(jobs.len())).await;
    if jobs.is_empty() && backlog.is_empty() {
        return 0;
    }
    let room = CRM_BATCH_MAX.saturating_sub(backlog.len());
    if !backlog.is_empty() {
        // Draining a backlog: workers that claimed its other records a moment ago are about
        // to hand them over; a few milliseconds keeps them in this call.
        linger(rx, &mut jobs, room).await;
    }
    let gate = dispatch::write_gate(inner, Side::Crm, inner.routes.crm(kind.as_str())).await;
    // Updates handed over while the budget made us wait ride along.
    take_upto(rx, &mut jobs, room);
    let items: Vec<BatchUpdate> = jobs
        .iter()
        .map(|j| j.item.clone())
        .chain(backlog.iter().map(|(_, op)| BatchUpdate {
            id: op.target_id.clone().unwrap_or_default(),
            fields: fields_of(op),
        }))
        .collect();
    let outcomes: Vec<Sent> = match gate {
        Ok(None) => call(inner, kind, &items).await,
        Ok(Some(hold)) => items.iter().map(|_| Sent::Held(hold)).collect(),
        Err(e) => {
            let why = e.to_string();
            items.iter().map(|_| Sent::GateFailed(why.clone())).collect()
        }
    };
    let mut outcomes = outcomes.into_iter();
    for j in jobs {
        let _ = j
            .reply
            .send(outcomes.next().unwrap_or(Sent::GateFailed("no outcome".into())));
    }
    let settles = backlog.into_iter().map(|(claim, op)| {
        let sent = outcomes.next().unwrap_or(Sent::GateFailed("no outcome".into()));
        let owner = owner.as_str();
        async move { settle_backlog(inner, owner, claim, op, sent).await }
    });
    futures_util::future::join_all(settles).await;
    items.len()
}

/// Claim up to `room` records whose next write is this lane's update.
async fn backlog(inner: &Inner, kind: CrmObject, owner: &str, room: usize) -> Vec<(Claim, OutboxOp)> {
    if room == 0 {
        return Vec::new();
    }
    let op_name = crm_update_op(kind);
    let claims = match inner
        .ledger
        .claim_first_op(owner, op_name, room as i64, inner.now_ms(), worker::LEASE_MS)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            if !inner.ledger.explains(&e) {
                tracing::warn!(error = %e, "could not claim the CRM backlog; the workers will send it");
            }
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(claims.len());
    for claim in claims {
        let first = match inner.ledger.open_ops(&claim.entity_key).await {
            Ok(ops) => ops.into_iter().next(),
            Err(e) => {
                if !inner.ledger.explains(&e) {
                    tracing::warn!(error = %e, record = %claim.entity_key, "could not read a claimed record's writes");
                }
                None
            }
        };
        match first {
            Some(op) if op.op == op_name && op.target_id.is_some() => out.push((claim, op)),
            _ => {
                if let Err(e) = inner.ledger.release(&claim, owner).await {
                    tracing::warn!(error = %e, record = %claim.entity_key, "release failed; the lease will expire");
                }
            }
        }
    }
    out
}

/// Settle a backlog record's write as its worker would, then hand the record back.
async fn settle_backlog(inner: &Inner, owner: &str, claim: Claim, op: OutboxOp, sent: Sent) {
    let key = claim.entity_key.as_str();
    let step = match Ctx::for_claimed(inner, owner, &claim) {
        None => Ok(Step::Done),
        Some(ctx) => match sent {
            Sent::Done(result) => dispatch::settle(&ctx, &op, result).await,
            Sent::Held(hold) => dispatch::park_held(&ctx, hold).await,
            Sent::GateFailed(why) => dispatch::park_gate_failed(&ctx, &why).await,
        },
    };
    let handed_back = match step {
        Ok(Step::Parked) => Ok(()),
        Ok(Step::Done | Step::DeadLettered) => inner.ledger.release(&claim, owner).await.map_err(Into::into),
        // Counted and bounded like a worker's failed turn.
        Err(e) => worker::after_failed_turn(inner, owner, &claim, &e).await,
    };
    if let Err(e) = handed_back {
        if !inner.ledger_explains(&e) {
            tracing::warn!(error = %e, record = %key, "could not hand a record back; its lease will expire");
        }
    }
}

/// Count one CRM write call carrying `records` records.
fn note_call(inner: &Inner, kind: CrmObject, records: usize) {
    let label = kind.as_str();
    inner.metrics.add("crm_write_calls", label, 1.0);
    inner.metrics.add("crm_write_records", label, records as f64);
    inner.metrics.max("crm_write_call_max", label, records as f64);
}

/// One call for the whole batch (a lone record as a single update). A batch HubSpot refuses
/// as a whole for its content (one invalid value fails every record) is split in halves and
/// each half sent again, down to single records, so only the bad record fails: about
/// 2·log2(n) extra calls for one bad record in n, instead of n.
fn call<'a>(
    inner: &'a Inner,
    kind: CrmObject,
    jobs: &'a [BatchUpdate],
) -> futures_util::future::BoxFuture<'a, Vec<Sent>> {
    Box::pin(async move {
        if let [one] = jobs {
            note_call(inner, kind, 1);
            return vec![Sent::Done(inner.crm.update_record(kind, &one.id, &one.fields).await)];
        }
        note_call(inner, kind, jobs.len());
        let items = inner.crm.batch_update(kind, jobs).await;
        let refused_whole = items.iter().all(|i| {
            matches!(
                i,
                Err(BatchItemError {
                    error: ConnectorError::Rejected { .. },
                    whole_call: true,
                })
            )
        });
        if !refused_whole || items.len() != jobs.len() {
            return items
                .into_iter()
                .map(|item| Sent::Done(item.map_err(|e| e.error)))
                .collect();
        }
        inner.metrics.add("crm_batch_splits", kind.as_str(), 1.0);
        let (left, right) = jobs.split_at(jobs.len() / 2);
        let mut out = Vec::with_capacity(jobs.len());
        for half in [left, right] {
            match dispatch::write_gate(inner, Side::Crm, inner.routes.crm(kind.as_str())).await {
                Ok(None) => out.extend(call(inner, kind, half).await),
                Ok(Some(hold)) => out.extend(half.iter().map(|_| Sent::Held(hold))),
                Err(e) => out.extend(half.iter().map(|_| Sent::GateFailed(e.to_string()))),
            }
        }
        out
    })
}
