//! CRM read batching: the workers' re-reads of CRM records (one per decision) that are waiting
//! at the same time go to HubSpot as one `batch/read` call (at most 100 ids), like the
//! ledger's group commit and the CRM write lanes (`crm_batch.rs`).
//!
//! A worker hands its read to its object type's lane and waits for that record's answer. The
//! lane takes everything waiting with the same properties; a lone read is sent at once as a
//! single `GET` (what it was before), several as one `batch/read`. Each call takes one unit of
//! the CRM budget — live when any read waiting for it is live — before it is formed, so while the
//! budget makes a call wait, it fills up: a backlog read at a budget of
//! Q calls/s costs Q / 100 of it per record instead of one unit each. At most
//! [`IN_FLIGHT`] calls are out at once. Every outcome is the record's own: found, gone
//! (`None`), or the error the worker already handles for a single read (a whole-call failure
//! — 429, 5xx, timeout — is given to every read in the call).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{EngineError, Inner};
use crate::budget::Lane;
use crate::connectors::{ConnResult, RemoteRecord, CRM_BATCH_MAX};
use crate::contract::{CrmObject, Side};

/// Calls a lane may have out at once (a real HubSpot answers in 100–300 ms: one call at a
/// time would cap reads at a few calls a second however full they are).
const IN_FLIGHT: usize = 4;

pub(crate) struct Job {
    id: String,
    props: Arc<Vec<String>>,
    lane: Lane,
    reply: oneshot::Sender<ConnResult<Option<RemoteRecord>>>,
}

/// One lane per CRM object type.
pub(crate) type CrmReads = super::lanes::ObjectLanes<Job>;

/// Read one CRM record through its object type's lane (in budget lane `lane`); waits for this
/// record's answer. `Ok(None)`: the record does not exist. Before the lanes run (no workers
/// started in this process) the read goes out on its own.
pub(super) async fn get(
    inner: &Inner,
    kind: CrmObject,
    id: &str,
    props: Arc<Vec<String>>,
    lane: Lane,
) -> Result<ConnResult<Option<RemoteRecord>>, EngineError> {
    // No lane task without workers (a CLI command, a console preview in a process that runs
    // none): read directly, as one request.
    if !inner.crm_reads.running(kind) {
        inner.acquire(Side::Crm, lane).await;
        return Ok(inner.crm.get_record(kind, id, &props).await);
    }
    let (reply, rx) = oneshot::channel();
    inner.crm_reads.send(
        kind,
        Job {
            id: id.to_string(),
            props,
            lane,
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
            let rx = inner.crm_reads.take(kind)?;
            Some(tokio::spawn(run(inner.clone(), kind, rx)))
        })
        .collect()
}

async fn run(inner: Arc<Inner>, kind: CrmObject, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut stop = inner.shutdown_rx();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Reads asking for other properties than the call being formed wait for the next one.
    let mut held: Vec<Job> = Vec::new();
    loop {
        let first = match held.is_empty() {
            false => Some(held.remove(0)),
            true => tokio::select! {
                j = rx.recv() => j,
                _ = stop.changed() => None,
            },
        };
        let Some(first) = first else { break };
        // A slot, then the budget, then the call is formed: while either makes it wait, more
        // reads queue up for it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        // Live when any read already waiting is live (one opened in the bulk lane can still
        // delay a live read that arrives while it waits: by at most the bulk lane's share).
        while let Ok(j) = rx.try_recv() {
            held.push(j);
        }
        let lane = if first.lane == Lane::Live || held.iter().any(|j| j.lane == Lane::Live) {
            Lane::Live
        } else {
            Lane::Bulk
        };
        inner.acquire(Side::Crm, lane).await;
        let mut jobs = vec![first];
        let mut rest = std::mem::take(&mut held);
        while let Ok(j) = rx.try_recv() {
            rest.push(j);
        }
        for j in rest {
            if jobs.len() < CRM_BATCH_MAX && j.props == jobs[0].props {
                jobs.push(j);
            } else {
                held.push(j);
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            call(&inner, kind, jobs).await;
            drop(slot);
        });
    }
}

/// One call for `jobs` (same properties, budget already taken): a `GET` or a `batch/read`.
async fn call(inner: &Inner, kind: CrmObject, jobs: Vec<Job>) {
    if let [one] = jobs.as_slice() {
        let r = inner.crm.get_record(kind, &one.id, &one.props).await;
        if let Some(job) = jobs.into_iter().next() {
            let _ = job.reply.send(r);
        }
        return;
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let props = jobs[0].props.clone();
    let answers = inner.crm.batch_read(kind, &ids, &props).await;
    inner.metrics.add("crm_read_calls", "", 1.0);
    inner.metrics.add("crm_read_records", "", jobs.len() as f64);
    let mut answers = answers.into_iter();
    for job in jobs {
        let r = match answers.next() {
            Some(Ok(rec)) => Ok(rec),
            Some(Err(e)) => Err(e.error),
            None => Err(crate::connectors::ConnectorError::Garbage {
                system: "crm",
                status: 200,
                detail: "batch/read answered fewer records than it was asked for".into(),
                body: String::new(),
            }),
        };
        let _ = job.reply.send(r);
    }
}
