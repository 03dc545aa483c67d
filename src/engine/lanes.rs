//! One job queue per CRM object type, drained by one task each once the workers start: the
//! plumbing shared by the CRM write lanes (`crm_batch.rs`) and read lanes (`crm_reads.rs`).

use tokio::sync::mpsc;

use super::EngineError;
use crate::contract::CrmObject;

struct Lane<J> {
    tx: mpsc::UnboundedSender<J>,
    /// The receiving end until the lane's task takes it (`None` once it runs).
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<J>>>,
}

pub(crate) struct ObjectLanes<J> {
    lanes: [Lane<J>; 2],
}

impl<J> ObjectLanes<J> {
    pub(crate) fn new() -> ObjectLanes<J> {
        let lane = || {
            let (tx, rx) = mpsc::unbounded_channel();
            Lane {
                tx,
                rx: std::sync::Mutex::new(Some(rx)),
            }
        };
        ObjectLanes {
            lanes: [lane(), lane()],
        }
    }

    fn lane(&self, kind: CrmObject) -> &Lane<J> {
        match kind {
            CrmObject::Contact => &self.lanes[0],
            CrmObject::Company => &self.lanes[1],
        }
    }

    fn receiver(&self, kind: CrmObject) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedReceiver<J>>> {
        match self.lane(kind).rx.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Queue a job on `kind`'s lane.
    pub(crate) fn send(&self, kind: CrmObject, job: J) -> Result<(), EngineError> {
        self.lane(kind).tx.send(job).map_err(|_| EngineError::Stopped)
    }

    /// Whether `kind`'s lane task has started (taken its receiver).
    pub(crate) fn running(&self, kind: CrmObject) -> bool {
        self.receiver(kind).is_none()
    }

    /// The receiver for `kind`'s lane task; `None` once a task has it.
    pub(crate) fn take(&self, kind: CrmObject) -> Option<mpsc::UnboundedReceiver<J>> {
        self.receiver(kind).take()
    }
}
