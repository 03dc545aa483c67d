//! Long operations the console starts — a reconciliation, a backfill — run as background
//! tasks of the engine: the request returns at once and the console follows the run through
//! the ledger's run rows (checkpointed every page). One of each kind at a time in this
//! process; a second start is refused with `busy`, never queued silently. A run that ends in
//! an error keeps the error to show until the next start. Cancelling stops a run at its next
//! page boundary; it stays resumable (the next start continues at its checkpoint).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::api::{BackfillProgress, ReconcileAsk, ReconciliationState};
use crate::engine::backfill::BackfillOptions;
use crate::engine::{Engine, EngineError};
use crate::reconcile::{ReconcileRequest, Repair};

#[derive(Default)]
pub(crate) struct Jobs {
    reconcile: Mutex<JobState>,
    reconcile_cancel: AtomicBool,
    backfill: Mutex<JobState>,
}

#[derive(Default, Clone)]
struct JobState {
    running: bool,
    last_error: Option<String>,
}

fn lock(m: &Mutex<JobState>) -> std::sync::MutexGuard<'_, JobState> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Jobs {
    /// Whether an operator asked the running reconciliation to stop (checked per page).
    pub(crate) fn reconcile_cancelled(&self) -> bool {
        self.reconcile_cancel.load(Ordering::SeqCst)
    }

    /// Mark `which` running; `Busy` when it already is.
    fn begin(m: &Mutex<JobState>, what: &str) -> Result<(), EngineError> {
        let mut g = lock(m);
        if g.running {
            return Err(EngineError::Busy(format!(
                "a {what} is already running; follow it, or cancel it first"
            )));
        }
        g.running = true;
        g.last_error = None;
        Ok(())
    }

    fn end(m: &Mutex<JobState>, error: Option<String>) {
        let mut g = lock(m);
        g.running = false;
        g.last_error = error;
    }
}

impl ReconcileRequest {
    /// The request an operator's ask makes (the CLI's flags, the console's form).
    pub fn from_ask(ask: &ReconcileAsk, trigger: &str) -> ReconcileRequest {
        ReconcileRequest {
            window_days: ask.window_days,
            dry_run: ask.dry_run,
            repair: Repair::from_args(&ask.repair),
            review: ask.review.clone(),
            max_pages: ask.max_pages,
            trigger: trigger.to_string(),
        }
    }
}

impl Engine {
    /// What the console's reconciliation panel shows: whether a run is going (and how far it
    /// got), the last finished run's report, and the error the last background run ended in.
    pub async fn reconciliation_state(&self) -> Result<ReconciliationState, EngineError> {
        let job = lock(&self.inner.jobs.reconcile).clone();
        Ok(ReconciliationState {
            running: job.running,
            cancelling: job.running && self.inner.jobs.reconcile_cancelled(),
            current: self.inner.ledger.recon_unfinished().await?,
            last: self.last_reconciliation().await?,
            last_error: job.last_error,
            schedule: self.inner.contract.reconciliation.schedule.clone(),
        })
    }

    /// Start a reconciliation in the background (audited); the state right after it started.
    /// Refused with `busy` while one started here is running.
    pub async fn start_reconcile(&self, ask: &ReconcileAsk, by: &str) -> Result<ReconciliationState, EngineError> {
        if let Some(d) = ask.window_days {
            crate::reconcile::parse_window(&d.to_string()).map_err(EngineError::BadRequest)?;
        }
        Jobs::begin(&self.inner.jobs.reconcile, "reconciliation")?;
        self.inner.jobs.reconcile_cancel.store(false, Ordering::SeqCst);
        let detail = serde_json::to_value(ask).unwrap_or_default();
        if let Err(e) = self
            .inner
            .ledger
            .audit_action(by, "reconcile_start", detail, self.inner.now_ms())
            .await
        {
            Jobs::end(&self.inner.jobs.reconcile, Some(e.to_string()));
            return Err(e.into());
        }
        let engine = self.clone();
        let req = ReconcileRequest::from_ask(ask, "console");
        let by = by.to_string();
        let h = tokio::spawn(async move {
            let r = engine.reconcile(&req, &by).await;
            if let Err(e) = &r {
                tracing::warn!(error = %e, "background reconciliation stopped");
            }
            Jobs::end(&engine.inner.jobs.reconcile, r.err().map(|e| e.to_string()));
            engine.inner.jobs.reconcile_cancel.store(false, Ordering::SeqCst);
        });
        self.inner.push_task(h);
        // The run row exists once the task has started (or resumed) it; wait briefly so the
        // answer shows it and a cancel right after is noted on it.
        for _ in 0..50 {
            let st = self.reconciliation_state().await?;
            if st.current.is_some() || !st.running {
                return Ok(st);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.reconciliation_state().await
    }

    /// Ask the background reconciliation to stop at its next page (audited). It stays
    /// resumable: the next start continues at its checkpoint. Nothing happens when none is
    /// running. The state after the ask.
    pub async fn cancel_reconcile(&self, by: &str) -> Result<ReconciliationState, EngineError> {
        if !lock(&self.inner.jobs.reconcile).running {
            return self.reconciliation_state().await;
        }
        self.inner.jobs.reconcile_cancel.store(true, Ordering::SeqCst);
        let run = self.inner.ledger.recon_unfinished().await?;
        if let Some(run) = &run {
            self.inner
                .ledger
                .recon_note(run.id, &format!("cancel asked by {by}; resumable at its checkpoint"))
                .await?;
        }
        self.inner
            .ledger
            .audit_action(
                by,
                "reconcile_cancel",
                serde_json::json!({"run": run.map(|r| r.id)}),
                self.inner.now_ms(),
            )
            .await?;
        self.reconciliation_state().await
    }

    /// Start (or resume) a backfill of `systems` in the background; its progress right after.
    /// Refused with `busy` while one started here is running.
    pub async fn start_backfill(&self, systems: &str, by: &str) -> Result<BackfillProgress, EngineError> {
        crate::engine::backfill::Systems::parse(systems)?;
        Jobs::begin(&self.inner.jobs.backfill, "backfill")?;
        let engine = self.clone();
        let (systems, by) = (systems.to_string(), by.to_string());
        let h = tokio::spawn(async move {
            let r = engine.backfill(&systems, &by, BackfillOptions::default()).await;
            if let Err(e) = &r {
                tracing::warn!(error = %e, "background backfill stopped");
            }
            Jobs::end(&engine.inner.jobs.backfill, r.err().map(|e| e.to_string()));
        });
        self.inner.push_task(h);
        // The run row exists once the task has started it; wait briefly so the answer shows it.
        for _ in 0..50 {
            let p = self.backfill_progress().await?;
            if p.run.as_ref().is_some_and(|r| r.state == "running") || !lock(&self.inner.jobs.backfill).running {
                return Ok(self.with_backfill_job(p));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(self.with_backfill_job(self.backfill_progress().await?))
    }

    /// Cancel the running backfill (from any process; audited): it stops before its next
    /// page and stays resumable. Its progress after the ask.
    pub async fn cancel_backfill(&self, by: &str) -> Result<BackfillProgress, EngineError> {
        self.backfill_cancel(by).await?;
        self.backfill_state().await
    }

    /// The backfill's progress with this process's background job (error of the last one).
    pub async fn backfill_state(&self) -> Result<BackfillProgress, EngineError> {
        Ok(self.with_backfill_job(self.backfill_progress().await?))
    }

    fn with_backfill_job(&self, mut p: BackfillProgress) -> BackfillProgress {
        let job = lock(&self.inner.jobs.backfill).clone();
        p.job_running = job.running;
        p.last_error = job.last_error;
        p
    }
}
