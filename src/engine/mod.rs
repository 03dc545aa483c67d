//! The engine: owns the ledger, the checked contract, the connectors and the worker tasks.
//! Every operation the console, the CLI and the HTTP server offer is one method here.

pub mod backfill;
mod connect;
mod console;
mod crm_batch;
mod crm_reads;
mod dead_letters;
mod dispatch;
pub(crate) mod jobs;
mod lanes;
mod load;
mod metrics;
mod ops;
pub use console::{audit_csv_row, AUDIT_CSV_HEADER, AUDIT_CSV_PAGE};
pub use dead_letters::csv_cell;
mod overview;
pub(crate) mod pager;
pub mod poll;
pub(crate) mod reconcile;
pub(crate) mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};

pub use metrics::Metrics;
pub use overview::newly_crossed;

use crate::budget::{Budget, Lane};
use crate::connectors::{BillingApi, CrmApi};
use crate::contract::{Contract, Side};
use crate::ingest::{self, IngestError};
use crate::ledger::{IngestOutcome, Ledger, LedgerError, NewEvent};

pub use crate::clock::{Clock, SystemClock};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Connector(#[from] crate::connectors::ConnectorError),
    #[error("the engine is shutting down")]
    Stopped,
    #[error("unknown pause scope {0:?}: use global, crm or billing")]
    BadScope(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("a reason is required for this action (it goes into the audit log)")]
    ReasonRequired,
    #[error("outbound writes are paused ({0}); resume first, then replay")]
    Paused(String),
    /// One of a kind at a time (a reconciliation or backfill already running).
    #[error("{0}")]
    Busy(String),
}

impl EngineError {
    /// Stable code the UI and scripts branch on.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Ledger(LedgerError::Locked(_)) => "ledger_locked",
            EngineError::Ledger(LedgerError::Conflict(_)) => "conflict",
            EngineError::Ledger(_) => "ledger_error",
            EngineError::Ingest(e) => e.code(),
            EngineError::Connector(_) => "system_unreachable",
            EngineError::Stopped => "engine_stopped",
            EngineError::BadScope(_) | EngineError::BadRequest(_) | EngineError::ReasonRequired => "bad_request",
            EngineError::NotFound(_) => "not_found",
            EngineError::Paused(_) => "paused",
            EngineError::Busy(_) => "busy",
        }
    }
}

impl Inner {
    /// Whether an error is the ledger being unwritable, which the ledger logs once per episode
    /// (so a loop that hits it need not log every failure).
    pub(crate) fn ledger_explains(&self, e: &EngineError) -> bool {
        matches!(e, EngineError::Ledger(l) if self.ledger.explains(l))
    }
}

/// The one conversion of an engine error for the console (HTTP JSON, Tauri IPC): a stable code
/// and a message for people.
impl From<EngineError> for crate::api::ApiError {
    fn from(e: EngineError) -> Self {
        crate::api::ApiError {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}

/// Webhook signing secrets, resolved from the contract's references (never stored).
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    pub stripe: Option<String>,
    pub hubspot: Option<String>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("stripe", &self.stripe.as_ref().map(|_| "<set>"))
            .field("hubspot", &self.hubspot.as_ref().map(|_| "<set>"))
            .finish()
    }
}

pub struct EngineConfig {
    pub ledger: PathBuf,
    pub contract: Contract,
    pub crm: Arc<dyn CrmApi>,
    pub billing: Arc<dyn BillingApi>,
    pub webhook_secrets: WebhookSecrets,
    /// Records processed concurrently (each record is still handled by one worker at a time).
    pub workers: usize,
    pub clock: Arc<dyn Clock>,
    /// Running against the embedded simulators.
    pub demo: bool,
}

pub use crate::api::Status;
use crate::api::{PauseRequest, PauseResult};

pub(crate) struct Inner {
    pub(crate) ledger: Ledger,
    pub(crate) contract: Contract,
    pub(crate) crm: Arc<dyn CrmApi>,
    pub(crate) billing: Arc<dyn BillingApi>,
    secrets: WebhookSecrets,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) work: Notify,
    pub(crate) budgets: [Arc<Budget>; 2],
    /// CRM record updates coalesced into batch calls (`crm_batch.rs`).
    pub(crate) crm_writes: crm_batch::CrmWrites,
    pub(crate) crm_reads: crm_reads::CrmReads,
    shutdown: watch::Sender<bool>,
    workers: usize,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) demo: bool,
    /// Last connection failure per system (crm, billing), cleared by the next success.
    failures: std::sync::Mutex<[Option<(i64, String)>; 2]>,
    /// Which contract object each inbound event belongs to.
    pub(crate) routes: ingest::Routes,
    /// The pollers' search limiter and cap.
    pub(crate) poll: poll::PollState,
    /// Reconciliations and backfills started from the console, running in the background.
    pub(crate) jobs: jobs::Jobs,
}

impl Inner {
    pub(crate) fn budget(&self, side: Side) -> &Budget {
        match side {
            Side::Crm => &self.budgets[0],
            Side::Billing => &self.budgets[1],
        }
    }
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Take one request's budget for `side` in `lane`, counting the wait.
    pub(crate) async fn acquire(&self, side: Side, lane: Lane) {
        let waited = self.budget(side).acquire(lane).await;
        self.metrics
            .add("rate_wait_ms", side.as_str(), waited.as_millis() as f64);
    }

    /// A 429 the provider wants retried: the one place that tells the budget (which holds
    /// every caller when 429s are not isolated, and adapts its rate) and counts it for the
    /// overview's 429 chart. Returns how long the request that was answered 429 waits.
    pub(crate) fn note_rate_limited(&self, side: Side, retry_after: Option<Duration>) -> Duration {
        self.metrics.add("rate_limited", side.as_str(), 1.0);
        self.budget(side).on_rate_limited(retry_after)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, [Option<(i64, String)>; 2]> {
        match self.failures.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Remember how a request to `side` went, for the "system unreachable" signal.
    pub(crate) fn note_outcome(&self, side: Side, error: Option<&crate::connectors::ConnectorError>) {
        let idx = side as usize;
        let mut f = self.failures();
        match error {
            None => f[idx] = None,
            Some(e) if matches!(e.class(), "timeout" | "transport") => f[idx] = Some((self.now_ms(), e.to_string())),
            Some(_) => {}
        }
    }

    pub(crate) fn last_failure(&self, side: Side) -> Option<(i64, String)> {
        self.failures()[side as usize].clone()
    }
}

/// Cheap to clone; built once per shell.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub use crate::connectors::hubspot::required_properties as required_crm_properties;

impl Engine {
    /// Open the ledger (migrating it) and forget leases of a previous run. Workers start with
    /// [`Engine::start`].
    pub async fn open(cfg: EngineConfig) -> Result<Engine, EngineError> {
        let ledger = Ledger::open(&cfg.ledger).await?;
        ledger.reset_leases().await?;
        ledger
            .record_contract_version(&cfg.contract.version, cfg.clock.now_ms())
            .await?;
        let (shutdown, _) = watch::channel(false);
        let rl = &cfg.contract.rate_limits;
        let budgets = [
            Arc::new(Budget::new("crm", &rl.crm, cfg.clock.clone())),
            Arc::new(Budget::new("billing", &rl.billing, cfg.clock.clone())),
        ];
        // Providers' rate-limit headers on every response feed the budgets.
        cfg.crm.observe_rates(budgets[0].clone());
        cfg.billing.observe_rates(budgets[1].clone());
        let routes = ingest::Routes::from_contract(&cfg.contract);
        let inner = Arc::new(Inner {
            ledger,
            contract: cfg.contract,
            crm: cfg.crm,
            billing: cfg.billing,
            secrets: cfg.webhook_secrets,
            clock: cfg.clock,
            metrics: Metrics::default(),
            work: Notify::new(),
            budgets,
            crm_writes: crm_batch::CrmWrites::new(),
            crm_reads: crm_reads::CrmReads::new(),
            shutdown,
            workers: cfg.workers.max(1),
            tasks: std::sync::Mutex::new(Vec::new()),
            demo: cfg.demo,
            failures: std::sync::Mutex::new([None, None]),
            routes,
            poll: poll::PollState::default(),
            jobs: jobs::Jobs::default(),
        });
        Ok(Engine { inner })
    }

    /// Start the workers and the metrics flusher.
    pub fn start(&self) {
        for i in 0..self.inner.workers {
            let h = tokio::spawn(worker::run(self.inner.clone(), i));
            self.inner.push_task(h);
        }
        for h in crm_batch::spawn(&self.inner)
            .into_iter()
            .chain(crm_reads::spawn(&self.inner))
        {
            self.inner.push_task(h);
        }
        let h = tokio::spawn(metrics::flusher(self.inner.clone()));
        self.inner.push_task(h);
        let h = tokio::spawn(reconcile::scheduled(self.clone()));
        self.inner.push_task(h);
        let systems = &self.inner.contract.systems;
        for (side, sys) in [(Side::Crm, &systems.crm), (Side::Billing, &systems.billing)] {
            if sys.ingest.polls() {
                let h = tokio::spawn(poll::run(self.clone(), side));
                self.inner.push_task(h);
            }
        }
    }

    /// Stop workers at their next safe point and wait for them.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.work.notify_waiters();
        let tasks: Vec<_> = match self.inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        metrics::flush(&self.inner).await;
        self.inner.ledger.close().await;
    }

    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    pub fn contract(&self) -> &Contract {
        &self.inner.contract
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// A destination's rate budget: pollers, backfill and reconciliation take
    /// `budget(side).acquire(Lane::…)` before each request.
    pub fn budget(&self, side: Side) -> &Budget {
        self.inner.budget(side)
    }

    /// Create the CRM custom properties the contract needs (demo and first connection).
    pub async fn ensure_crm_properties(&self) -> Result<Vec<String>, EngineError> {
        let defs = required_crm_properties(&self.inner.contract);
        Ok(self.inner.crm.ensure_properties(&defs).await?)
    }

    pub async fn status(&self) -> Result<Status, EngineError> {
        // Poll lag by the engine's clock; the budgets as this engine holds them.
        let budgets = self.inner.budgets.iter().map(|b| b.snapshot()).collect();
        status_on(
            &self.inner.ledger,
            &self.inner.contract.version,
            budgets,
            self.inner.now_ms(),
        )
        .await
    }

    /// Pause outbound writes (`global`, `crm` or `billing`), with a reason. Persisted and
    /// audited; the dispatcher sees it before its next write.
    pub async fn pause_outbound(&self, req: &PauseRequest, by: &str) -> Result<PauseResult, EngineError> {
        pause_on(&self.inner.ledger, req, by, self.inner.now_ms()).await
    }

    /// Resume outbound writes; the backlog drains in per-record order.
    pub async fn resume_outbound(&self, req: &PauseRequest, by: &str) -> Result<PauseResult, EngineError> {
        let r = resume_on(&self.inner.ledger, req, by, self.inner.now_ms()).await?;
        self.inner.work.notify_waiters();
        Ok(r)
    }

    /// Verify and durably record a Stripe webhook. Returns once the event is in the ledger.
    pub async fn ingest_stripe_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<IngestReport, EngineError> {
        check_size(body)?;
        let secret = self
            .inner
            .secrets
            .stripe
            .as_deref()
            .ok_or(IngestError::NotConfigured { system: "billing" })?;
        let sig = signature.ok_or(IngestError::MissingHeader {
            system: "billing",
            header: ingest::stripe::SIGNATURE_HEADER,
        })?;
        let now = self.inner.now_ms();
        ingest::stripe::verify(secret, sig, body, now / 1000)?;
        let ev = ingest::stripe::parse_event(body, "webhook", now, &self.inner.routes)?;
        self.ingest(vec![ev]).await
    }

    /// Verify and durably record a HubSpot webhook delivery (an array of events).
    pub async fn ingest_hubspot_webhook(
        &self,
        method: &str,
        uri: &str,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
    ) -> Result<IngestReport, EngineError> {
        check_size(body)?;
        let secret = self
            .inner
            .secrets
            .hubspot
            .as_deref()
            .ok_or(IngestError::NotConfigured { system: "crm" })?;
        let sig = signature.ok_or(IngestError::MissingHeader {
            system: "crm",
            header: ingest::hubspot::SIGNATURE_HEADER,
        })?;
        let ts = timestamp.ok_or(IngestError::MissingHeader {
            system: "crm",
            header: ingest::hubspot::TIMESTAMP_HEADER,
        })?;
        let now = self.inner.now_ms();
        ingest::hubspot::verify(secret, method, uri, body, sig, ts, now)?;
        let events = ingest::hubspot::parse_events(body, "webhook", now, &self.inner.routes)?;
        self.ingest(events).await
    }

    /// Record already-verified events (webhooks, pollers, replay): durable once this returns.
    /// Batches waiting at the same moment share one multi-row insert and one commit (the
    /// ledger's group commit).
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<IngestReport, EngineError> {
        let outcomes = self.inner.ledger.ingest(events).await?;

        let mut report = IngestReport::default();
        for o in outcomes {
            match o {
                IngestOutcome::Inserted(_) => report.accepted += 1,
                IngestOutcome::Duplicate(_) => report.duplicates += 1,
            }
        }
        self.inner.metrics.add("dedupe_drops", "", report.duplicates as f64);
        self.inner
            .metrics
            .add("events_received", "", (report.accepted + report.duplicates) as f64);
        if report.accepted > 0 {
            self.inner.work.notify_waiters();
        }
        Ok(report)
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
}

/// The status of a ledger: its figures (poll lag measured at `now_ms`), the contract version
/// and the rate budgets given, the last finished reconciliation. [`Engine::status`] calls it
/// with its own contract, budgets and clock; `driftless status` calls it on the ledger file
/// alone, with the version recorded there and no budgets, whether or not a server runs.
pub async fn status_on(
    ledger: &Ledger,
    contract_version: &str,
    budgets: Vec<crate::api::BudgetStatus>,
    now_ms: i64,
) -> Result<Status, EngineError> {
    Ok(Status {
        contract_version: contract_version.to_string(),
        ledger: ledger.status_at(now_ms).await?,
        budgets,
        reconciliation: ledger.recon_last_finished().await?.map(|r| r.summary()),
    })
}

/// Pause outbound writes on a ledger: the scope checked, a reason required. The engine's
/// `pause_outbound` and `driftless pause` (with or without a server on the ledger) both come
/// here; a running dispatcher sees the pause before its next write.
pub async fn pause_on(ledger: &Ledger, req: &PauseRequest, by: &str, now_ms: i64) -> Result<PauseResult, EngineError> {
    let scope = check_scope(req.scope.as_deref())?;
    // A pause is shown on every screen and in the audit log with why: an operator on the
    // next shift must not find writes stopped with no reason.
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or(EngineError::ReasonRequired)?;
    ledger.set_pause(scope, Some(reason), by, now_ms).await?;
    Ok(PauseResult {
        scope: scope.to_string(),
        paused: true,
        changed: true,
    })
}

/// Resume outbound writes on a ledger: the scope checked, a blank reason refused (leave it
/// out instead). `changed` says whether that scope was paused. The engine's
/// `resume_outbound` calls it and then wakes its workers; a server running on the ledger
/// `driftless resume` acted on sees the pause gone at its next look.
pub async fn resume_on(ledger: &Ledger, req: &PauseRequest, by: &str, now_ms: i64) -> Result<PauseResult, EngineError> {
    let scope = check_scope(req.scope.as_deref())?;
    if req.reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(EngineError::BadRequest(
            "a reason, when given, must say something (leave it out instead)".into(),
        ));
    }
    let was = ledger.clear_pause(scope, req.reason.as_deref(), by, now_ms).await?;
    Ok(PauseResult {
        scope: scope.to_string(),
        paused: false,
        changed: was,
    })
}

fn check_scope(scope: Option<&str>) -> Result<&'static str, EngineError> {
    match scope.unwrap_or("global") {
        "global" => Ok("global"),
        "crm" => Ok("crm"),
        "billing" => Ok("billing"),
        other => Err(EngineError::BadScope(other.to_string())),
    }
}

/// Prometheus text exposition: status gauges plus this process's counters.
pub fn prometheus_text(status: &Status, totals: &[(String, String, f64)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let l = &status.ledger;
    let _ = writeln!(
        out,
        "# HELP driftless_events Inbound events by state (duplicates are deliveries dropped)."
    );
    let _ = writeln!(out, "# TYPE driftless_events gauge");
    for (state, n) in &l.events {
        let _ = writeln!(out, "driftless_events{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP driftless_writes Outbound writes by destination and state.");
    let _ = writeln!(out, "# TYPE driftless_writes gauge");
    for (dest, w) in &l.writes {
        for (state, n) in [
            ("done", w.done),
            ("pending", w.pending),
            ("dead_lettered", w.dead_lettered),
        ] {
            let _ = writeln!(out, "driftless_writes{{destination=\"{dest}\",state=\"{state}\"}} {n}");
        }
    }
    for (name, help, v) in [
        ("driftless_queue_depth", "Records with work queued.", l.queue_depth),
        (
            "driftless_dead_letters",
            "Dead letters waiting for a person.",
            l.dead_letter_depth,
        ),
        (
            "driftless_review_depth",
            "Records waiting in the review queue.",
            l.review_depth,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP driftless_lag_ms Event received to applied, last 1000 events."
    );
    let _ = writeln!(out, "# TYPE driftless_lag_ms gauge");
    for (q, v) in [("0.5", l.lag_ms.p50), ("0.95", l.lag_ms.p95), ("1", l.lag_ms.max)] {
        let _ = writeln!(out, "driftless_lag_ms{{quantile=\"{q}\"}} {v}");
    }
    let _ = writeln!(out, "# HELP driftless_paused Outbound writes paused (1) per scope.");
    let _ = writeln!(out, "# TYPE driftless_paused gauge");
    for scope in ["global", "crm", "billing"] {
        let on = l.paused.iter().any(|p| p.scope == scope);
        let _ = writeln!(out, "driftless_paused{{scope=\"{scope}\"}} {}", u8::from(on));
    }
    let _ = writeln!(
        out,
        "# HELP driftless_observe Observe mode (1): ingest and plan, write nothing.\n# TYPE driftless_observe gauge\ndriftless_observe {}",
        u8::from(l.observe.is_some())
    );
    let _ = writeln!(
        out,
        "# HELP driftless_held_writes Planned writes held by observe mode or a pause."
    );
    let _ = writeln!(out, "# TYPE driftless_held_writes gauge");
    for (dest, n) in &l.held_writes {
        let _ = writeln!(out, "driftless_held_writes{{destination=\"{dest}\"}} {n}");
    }
    if !l.pollers.is_empty() {
        let _ = writeln!(
            out,
            "# HELP driftless_poll_lag_ms Age of each poll cursor's watermark.\n# TYPE driftless_poll_lag_ms gauge"
        );
        for p in &l.pollers {
            let _ = writeln!(out, "driftless_poll_lag_ms{{cursor=\"{}\"}} {}", p.name, p.lag_ms);
        }
        let _ = writeln!(
            out,
            "# HELP driftless_poll_reconciliation_gaps Windows a poll cursor lost to provider retention.\n\
             # TYPE driftless_poll_reconciliation_gaps gauge"
        );
        for p in &l.pollers {
            let _ = writeln!(
                out,
                "driftless_poll_reconciliation_gaps{{cursor=\"{}\"}} {}",
                p.name,
                p.gaps.len()
            );
        }
    }
    let mut last = String::new();
    for (name, labels, v) in totals {
        let metric = format!("driftless_{name}_total");
        if metric != last {
            let _ = writeln!(out, "# TYPE {metric} counter");
            last = metric.clone();
        }
        if labels.is_empty() {
            let _ = writeln!(out, "{metric} {v}");
        } else {
            let _ = writeln!(out, "{metric}{{label=\"{labels}\"}} {v}");
        }
    }
    out
}

fn check_size(body: &[u8]) -> Result<(), IngestError> {
    if body.len() > ingest::MAX_WEBHOOK_BYTES {
        return Err(IngestError::TooLarge {
            size: body.len(),
            limit: ingest::MAX_WEBHOOK_BYTES,
        });
    }
    Ok(())
}

impl Inner {
    fn push_task(&self, h: tokio::task::JoinHandle<()>) {
        match self.tasks.lock() {
            Ok(mut t) => t.push(h),
            Err(p) => p.into_inner().push(h),
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
