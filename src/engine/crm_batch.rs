//! CRM write batching: record updates of one object type that are ready at the same time go to
//! HubSpot as one `batch/update` call (at most 100 records), like the ledger's group commit.
//!
//! Workers still dispatch one record at a time and settle each write on their own (outbox
//! state, shadow, audit, echo bookkeeping, dead letter): they hand the update to their object
//! type's lane and wait for that record's outcome. A lane takes whatever is waiting; a lone
//! update is sent at once (as a single `PATCH`), and only when more than one is waiting does it
//! linger a few milliseconds for more. Each call passes the write gate once (one unit of the
//! CRM's rate budget, then the pause check), so while the budget makes a call wait the next
//! batch fills up. A call HubSpot refuses as a whole (one invalid property fails the batch) is
//! retried record by record, so only the bad record dead-letters; every other failure is each
//! record's own, handled by the worker as today (retry with backoff, 429 wait, dead letter).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{worker, EngineError, Inner};
use crate::connectors::{BatchItemError, BatchUpdate, ConnResult, ConnectorError, Fields, RemoteRecord, CRM_BATCH_MAX};
use crate::contract::{CrmObject, Side};

/// How long a lane waits for the next update once more than one is waiting.
const LINGER: Duration = Duration::from_millis(5);
/// The longest a lane lingers before sending what it has.
const LINGER_MAX: Duration = Duration::from_millis(25);

/// What became of one record's update.
pub(super) enum Sent {
    /// Outbound CRM writes are paused: nothing was sent.
    Paused,
    /// The write gate could not read the pause flags (a ledger error): nothing was sent.
    GateFailed(String),
    Done(ConnResult<RemoteRecord>),
}

struct Job {
    id: String,
    fields: Fields,
    reply: oneshot::Sender<Sent>,
}

struct Lane {
    tx: mpsc::UnboundedSender<Job>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
}

/// One lane per CRM object type.
pub(crate) struct CrmWrites {
    lanes: [Lane; 2],
}

impl CrmWrites {
    pub(crate) fn new() -> CrmWrites {
        let lane = || {
            let (tx, rx) = mpsc::unbounded_channel();
            Lane {
                tx,
                rx: std::sync::Mutex::new(Some(rx)),
            }
        };
        CrmWrites { lanes: [lane(), lane()] }
    }

    fn lane(&self, kind: CrmObject) -> &Lane {
        match kind {
            CrmObject::Contact => &self.lanes[0],
            CrmObject::Company => &self.lanes[1],
        }
    }
}

/// Update one CRM record through its object type's lane; waits for this record's outcome.
pub(super) async fn update(inner: &Inner, kind: CrmObject, id: &str, fields: Fields) -> Result<Sent, EngineError> {
    let (reply, rx) = oneshot::channel();
    inner
        .crm_writes
        .lane(kind)
        .tx
        .send(Job {
            id: id.to_string(),
            fields,
            reply,
        })
        .map_err(|_| EngineError::Stopped)?;
    rx.await.map_err(|_| EngineError::Stopped)
}

/// The lanes' tasks, started with the workers.
pub(super) fn spawn(inner: &Arc<Inner>) -> Vec<tokio::task::JoinHandle<()>> {
    [CrmObject::Contact, CrmObject::Company]
        .into_iter()
        .filter_map(|kind| {
            let rx = match inner.crm_writes.lane(kind).rx.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            }?;
            Some(tokio::spawn(run(inner.clone(), kind, rx)))
        })
        .collect()
}

async fn run(inner: Arc<Inner>, kind: CrmObject, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut stop = inner.shutdown_rx();
    loop {
        let first = tokio::select! {
            j = rx.recv() => j,
            _ = stop.changed() => None,
        };
        let Some(first) = first else { break };
        let mut jobs = vec![first];
        take_waiting(&mut rx, &mut jobs);
        if jobs.len() > 1 {
            linger(&mut rx, &mut jobs).await;
        }
        flush(&inner, kind, jobs, &mut rx).await;
    }
}

/// Everything already waiting, up to a full call.
fn take_waiting(rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < CRM_BATCH_MAX {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

/// More than one update is waiting: give the rest of a burst a few milliseconds to arrive.
async fn linger(rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>) {
    let deadline = Instant::now() + LINGER_MAX;
    while jobs.len() < CRM_BATCH_MAX {
        let gap = LINGER.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(gap, rx.recv()).await {
            Ok(Some(j)) => {
                jobs.push(j);
                take_waiting(rx, jobs);
            }
            _ => break,
        }
    }
}

/// Pass the write gate once, then send the batch (topped up with what arrived meanwhile).
async fn flush(inner: &Inner, kind: CrmObject, mut jobs: Vec<Job>, rx: &mut mpsc::UnboundedReceiver<Job>) {
    match worker::write_gate(inner, Side::Crm).await {
        Ok(true) => {}
        Ok(false) => {
            take_waiting(rx, &mut jobs);
            for j in jobs {
                let _ = j.reply.send(Sent::Paused);
            }
            return;
        }
        Err(e) => {
            let why = e.to_string();
            for j in jobs {
                let _ = j.reply.send(Sent::GateFailed(why.clone()));
            }
            return;
        }
    }
    take_waiting(rx, &mut jobs);
    let outcomes = call(inner, kind, &jobs).await;
    for (j, out) in jobs.into_iter().zip(outcomes) {
        let _ = j.reply.send(out);
    }
}

/// Count one CRM write call carrying `records` records.
fn note_call(inner: &Inner, kind: CrmObject, records: usize) {
    let label = kind.as_str();
    inner.metrics.add("crm_write_calls", label, 1.0);
    inner.metrics.add("crm_write_records", label, records as f64);
    inner.metrics.max("crm_write_call_max", label, records as f64);
}

/// One call for the whole batch (a lone record as a single update); a batch refused as a
/// whole for its content is retried record by record.
async fn call(inner: &Inner, kind: CrmObject, jobs: &[Job]) -> Vec<Sent> {
    if let [one] = jobs {
        note_call(inner, kind, 1);
        return vec![Sent::Done(inner.crm.update_record(kind, &one.id, &one.fields).await)];
    }
    let inputs: Vec<BatchUpdate> = jobs
        .iter()
        .map(|j| BatchUpdate {
            id: j.id.clone(),
            fields: j.fields.clone(),
        })
        .collect();
    note_call(inner, kind, inputs.len());
    let items = inner.crm.batch_update(kind, &inputs).await;
    let mut out = Vec::with_capacity(jobs.len());
    let mut paused = false;
    for (j, item) in jobs.iter().zip(items) {
        match item {
            Ok(rec) => out.push(Sent::Done(Ok(rec))),
            Err(BatchItemError {
                error: ConnectorError::Rejected { .. },
                whole_call: true,
            }) => {
                // One bad record fails HubSpot's whole batch: find it by sending each alone,
                // each through the gate like any write.
                if !paused {
                    match worker::write_gate(inner, Side::Crm).await {
                        Ok(true) => {
                            note_call(inner, kind, 1);
                            out.push(Sent::Done(inner.crm.update_record(kind, &j.id, &j.fields).await));
                            continue;
                        }
                        Ok(false) => paused = true,
                        Err(e) => {
                            out.push(Sent::GateFailed(e.to_string()));
                            continue;
                        }
                    }
                }
                out.push(Sent::Paused);
            }
            Err(e) => out.push(Sent::Done(Err(e.error))),
        }
    }
    out
}
