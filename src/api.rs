//! The console's API: the only types serialised to the UI (HTTP JSON, Tauri IPC, generated
//! TypeScript via ts-rs, OpenAPI via utoipa), and the one conversion of engine errors into
//! `{code, message}`. The operations themselves are `Engine` methods, declared once in
//! `operations` (which the HTTP routes and the desktop shell's one command dispatch through).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

/// Counts by state, writes, queue, lag and pause — what `driftless status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct LedgerStatus {
    /// Inbound events by state: pending, applied, duplicate, echo, superseded, conflicted,
    /// dead_lettered. Duplicates are deliveries of an event already held.
    pub events: BTreeMap<String, i64>,
    /// Every delivery received: distinct events plus duplicates.
    pub events_total: i64,
    pub distinct_events: i64,
    /// Writes per destination (`crm`, `billing`).
    pub writes: BTreeMap<String, DestinationWrites>,
    /// Records with work queued.
    pub queue_depth: i64,
    pub dead_letter_depth: i64,
    pub review_depth: i64,
    /// Event received -> applied, over the last 1,000 applied events.
    pub lag_ms: LagFigures,
    /// Active pauses (scope `global`, `crm` or `billing`).
    pub paused: Vec<PauseFlag>,
    /// Observe mode (scope `global`): events are ingested and planned, nothing is written
    /// until writes are turned on (`driftless writes on`).
    pub observe: Option<PauseFlag>,
    /// Planned writes per destination held by observe mode or a pause: what goes out when
    /// writes are turned on.
    pub held_writes: BTreeMap<String, i64>,
    /// Poll cursors (Stripe events, HubSpot search per object type): lag and state.
    #[serde(default)]
    pub pollers: Vec<PollerStatus>,
    /// How many records each CRM write call carried (batch updates), over the retained
    /// metric history.
    pub crm_write_calls: CrmWriteCalls,
    /// The latest backfill run.
    #[serde(default)]
    pub backfill: Option<BackfillRun>,
    /// Migration mode, while active.
    #[serde(default)]
    pub migration: Option<MigrationMode>,
}

/// One poll cursor: how far behind it is and whether history was lost.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct PollerStatus {
    /// The cursor's name, e.g. `poll:billing:events`, `poll:crm:contacts`.
    pub name: String,
    /// `crm` or `billing`.
    pub source: String,
    /// Everything up to this time (unix ms) is durable in the inbox.
    pub watermark_ms: i64,
    pub updated_at_ms: i64,
    /// Now minus the watermark: how old the newest change the poller has surely seen may be.
    pub lag_ms: i64,
    /// `ok`, or `reconciliation_needed` when the cursor fell behind the provider's retention
    /// and a window could not be read again (see `gaps`).
    pub state: String,
    pub message: Option<String>,
    /// Windows no poll can read again, waiting for the reconciler.
    pub gaps: Vec<ReconciliationGap>,
}

/// A time window whose events the provider no longer keeps: the reconciler compares both
/// systems over it instead.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReconciliationGap {
    pub id: i64,
    pub source: String,
    pub cursor: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: String,
    pub recorded_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
}

/// CRM writes against the calls that carried them: HubSpot's batch endpoints take up to 100
/// records a call, so `mean_records` well above 1 means bulk work is being batched.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct CrmWriteCalls {
    /// Records written.
    pub records: i64,
    /// Calls made (a single update or one batch call).
    pub calls: i64,
    pub mean_records: f64,
    pub max_records: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct DestinationWrites {
    pub done: i64,
    pub pending: i64,
    pub dead_lettered: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct LagFigures {
    pub samples: i64,
    pub p50: i64,
    pub p95: i64,
    pub max: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct PauseFlag {
    pub scope: String,
    pub reason: Option<String>,
    pub set_by: String,
    pub set_at_ms: i64,
}

/// `status --json`: the ledger's figures plus the contract version in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Status {
    pub contract_version: String,
    #[serde(flatten)]
    #[schema(inline)]
    pub ledger: LedgerStatus,
    /// Each destination's rate budget as the running engine holds it (empty when read from
    /// the ledger file alone, e.g. `driftless status` with no engine).
    #[serde(default)]
    pub budgets: Vec<BudgetStatus>,
    /// The last finished reconciliation run, if any.
    #[serde(default)]
    pub reconciliation: Option<ReconciliationRun>,
}

/// One destination's rate budget: how it was sized, how fast it lets requests through now,
/// who waits, and why it is holding requests back.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct BudgetStatus {
    /// `crm` or `billing`.
    pub destination: String,
    /// How the figures were chosen (provider preset, contract overrides).
    pub source: String,
    pub configured_per_sec: f64,
    /// Bucket capacity in force: the contract's burst, lowered under a provider's rolling window.
    pub burst: i64,
    /// The adaptive rate in force now (lowered by 429s and low provider quota, recovering).
    pub current_per_sec: f64,
    /// Requests waiting for budget in the live lane (events) and the bulk lane (replay, backfill).
    pub live_waiting: i64,
    pub bulk_waiting: i64,
    /// Requests are held until then (Unix ms), for `blocked_reason`.
    pub blocked_until_ms: Option<i64>,
    pub blocked_reason: Option<String>,
    /// Requests sent today (UTC) and the daily cap (the contract's, else the provider's).
    pub daily_used: i64,
    pub daily_cap: Option<i64>,
    /// The daily cap is reached: requests wait for 00:00 UTC (nothing is dropped).
    pub daily_exhausted: bool,
    pub rate_limited_last_minute: i64,
    /// Since the engine started: requests let through, and 429s answered.
    pub requests: i64,
    pub rate_limited: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
#[ts(export)]
pub enum HealthState {
    Running,
    Paused,
    /// Observe mode: ingesting and planning, writing nothing.
    Observing,
    Degraded,
}

/// Health at a glance, with the reasons behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Health {
    pub state: HealthState,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Point {
    /// Start of the minute (unix ms).
    pub t_ms: i64,
    pub v: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

/// One chart of the overview: per-minute values over the last hour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Chart {
    /// Stable id: lag, drops, rate_limited, rate_wait, queue_depth, error_rate, backlog.
    pub id: String,
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReconciliationRun {
    pub finished_at_ms: i64,
    pub compared: i64,
    pub mismatched: i64,
    pub mismatch_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReconciliationSummary {
    pub last_run: Option<ReconciliationRun>,
    /// What to tell a person, e.g. "no reconciliation run yet".
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct SystemInfo {
    pub kind: String,
    pub base_url: String,
    pub reachable: bool,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct SystemsInfo {
    /// Running against the embedded simulators.
    pub demo: bool,
    pub crm: SystemInfo,
    pub billing: SystemInfo,
}

/// Everything the overview screen shows, in one payload (also pushed on the live stream).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Overview {
    pub generated_at_ms: i64,
    pub health: Health,
    pub status: Status,
    pub charts: Vec<Chart>,
    pub reconciliation: ReconciliationSummary,
    pub systems: SystemsInfo,
    /// Thresholds from the contract's `[alerts]` crossed now (and systems unreachable, history
    /// lost, daily caps reached), each with the screen that explains it.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// One alert: a threshold crossed, with where to look.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Alert {
    /// Stable id: `lag_p95`, `dead_letters`, `review_depth`, `error_rate`, `mismatch_rate`,
    /// `unreachable:<system>`, `daily_cap:<destination>`, `poller:<cursor>`.
    pub id: String,
    /// What crossed what, in words.
    pub message: String,
    /// The console screen that explains it (`dead-letters`, `review`, `reconciliation`, `overview`).
    pub screen: String,
    /// The screen's filters (e.g. `destination=crm`), as a query string; empty for none.
    pub params: String,
}

/// The body of a state-changing route that takes no arguments (`cancel_reconcile`,
/// `cancel_backfill`): `{}`. Required all the same, as JSON: see `http/extract.rs`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `validation_report`'s argument: a contract object pairing CRM records with billing customers.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ObjectArg {
    /// A contract object, e.g. `customer`.
    pub object: String,
}

/// `record_timeline`'s argument.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// An email, CRM id, billing id or record key.
    pub query: String,
}

/// `replay_run`'s argument: a replay run, or (no id) the latest.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReplayRunQuery {
    #[serde(default)]
    pub id: Option<i64>,
}

/// Which reconciliation run (its report, its CSV).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReconRunRef {
    pub id: i64,
}

/// `reconcile_runs`' argument: at most this many runs (1 to 500; 100 when absent).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct RunsLimit {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Body of `pause_outbound` / `resume_outbound`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// `global` (default), `crm` or `billing`.
    #[schema(pattern = "^(global|crm|billing)$")]
    pub scope: Option<String>,
    /// Why — shown on every screen while paused, and audited. Required to pause.
    #[schema(pattern = "\\S")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct PauseResult {
    pub scope: String,
    pub paused: bool,
    /// For resume: whether that scope was paused before.
    pub changed: bool,
}

/// Every error the console sees: a stable code to branch on and a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

// ------------------------------------------------------------------------ operator operations

/// Which dead letters an operation applies to. Every field narrows the set.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    /// `crm` or `billing`.
    pub destination: Option<String>,
    /// `validation`, `exhausted`, `auth`, `not_found`, …
    pub error_class: Option<String>,
    /// Contract object, e.g. `customer`.
    pub object: Option<String>,
    /// Only dead letters at least this old (ms).
    pub min_age_ms: Option<i64>,
    /// Only dead letters at most this old (ms).
    pub max_age_ms: Option<i64>,
    /// Substring of the error, record key or request.
    pub text: Option<String>,
    /// Explicit ids (a selection).
    #[serde(default)]
    pub ids: Vec<i64>,
    /// Include retried / discarded ones.
    #[serde(default)]
    pub include_resolved: bool,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct DeadLetter {
    pub id: i64,
    pub record: String,
    pub object: String,
    pub destination: String,
    pub op: String,
    pub error_class: String,
    pub error: String,
    pub attempts: i64,
    pub idempotency_key: String,
    pub created_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub resolution: Option<String>,
    /// Invoice amount involved, in cents, when the write concerns an invoice.
    pub amount_cents: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct DeadLetterList {
    pub total: i64,
    pub items: Vec<DeadLetter>,
}

/// What a bulk action would touch, shown before it runs.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct BlastRadius {
    pub dead_letters: i64,
    pub records: i64,
    pub amount_cents: i64,
    pub by_destination: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct BulkResult {
    pub radius: BlastRadius,
    /// False for a preview (`dry_run`).
    pub applied: bool,
}

/// One entry of a record's causal timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct TimelineEntry {
    pub at_ms: i64,
    /// `event`, `duplicate`, `decision`, `write`, `operator`.
    pub kind: String,
    /// Inbox id, audit id or outbox id, by kind.
    pub id: i64,
    /// `crm` / `billing` for events and writes.
    pub side: Option<String>,
    /// One line a person reads.
    pub summary: String,
    /// Event fate (applied / duplicate / echo / superseded / conflicted / dead_lettered / pending),
    /// write state, or decision rule.
    pub state: Option<String>,
    pub rule: Option<String>,
    pub contract_version: Option<String>,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    /// JSON detail (payload, values written, response; for a duplicate, `original_inbox_id`).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Timeline {
    pub record: String,
    pub crm_id: Option<String>,
    pub billing_id: Option<String>,
    pub entries: Vec<TimelineEntry>,
}

/// Which records a replay re-plans: a time range of received events, one record, or the
/// records behind a dead-letter selection.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReplaySelector {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Email, CRM id, billing id or record key.
    pub record: Option<String>,
    #[serde(default)]
    pub dead_letter_ids: Vec<i64>,
}

/// One write a replay would make.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReplayWrite {
    pub record: String,
    /// `create`, `update`, `noop`, `conflict`.
    pub kind: String,
    pub destination: Option<String>,
    /// JSON of the values it would write.
    pub values: Option<String>,
    pub rules: Vec<String>,
    /// The idempotency key the write would carry (fixed when it is planned).
    pub idempotency_key: Option<String>,
    /// Set when that key is already in the outbox: the run would not write again; this names
    /// the earlier write and its state (e.g. `write 42 (done)`).
    pub key_used_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReplayPreview {
    pub records: i64,
    /// Records the counts below are of: all of them, or those previewed within the preview's
    /// few seconds (at most 200; each preview reads both systems, in the quota live sync
    /// leaves); the run replays every record.
    #[serde(default)]
    pub previewed: i64,
    pub creates: i64,
    pub updates: i64,
    pub noops: i64,
    pub conflicts: i64,
    /// Planned writes (among creates and updates) whose idempotency key an earlier write
    /// already used: the run would record them as made, not write them again.
    pub keys_already_used: i64,
    /// Records that could not be read now (system unreachable), not counted above.
    pub unreadable: i64,
    /// Up to 5 samples of each kind.
    pub samples: Vec<ReplayWrite>,
    /// False for the dry run; true once the records were queued.
    pub queued: bool,
    /// The replay run the records were queued as (follow it with `replay_run`), once queued.
    #[serde(default)]
    pub run_id: Option<i64>,
    /// The selection as the engine resolved it: a time range left open at the end is closed
    /// at the moment of the preview, so running this selector replays exactly the previewed
    /// records, not also those whose first event arrived since. None for the reconciler's
    /// repairs (they name their records).
    #[serde(default)]
    pub selector: Option<ReplaySelector>,
}

/// One field of a conflicted record, side by side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReviewField {
    pub field: String,
    pub crm: Option<String>,
    pub billing: Option<String>,
    pub owner: String,
    pub last_synced: Option<String>,
}

/// Who changed what, when (from the record's recent inbound events).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct Change {
    pub side: String,
    pub at_ms: i64,
    pub event_id: String,
    /// e.g. `email = "a@b"` or `metadata.lifecycle_stage: "lead" -> "customer"`.
    pub what: String,
    /// `CRM_UI`, `INTEGRATION`, `dashboard`, `api`, … as the system reported it.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReviewItem {
    pub id: i64,
    pub record: String,
    pub reason: String,
    pub created_at_ms: i64,
    pub fields: Vec<ReviewField>,
    pub changes: Vec<Change>,
}

/// How one field is settled: take the CRM's value, the billing value, or a typed value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct FieldChoice {
    pub field: String,
    /// `crm`, `billing` or `value`.
    #[schema(pattern = "^(crm|billing|value)$")]
    pub take: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReviewResolution {
    pub choices: Vec<FieldChoice>,
    /// Why (audited).
    #[schema(pattern = "\\S")]
    pub reason: String,
}

/// One backfill run (initial load / catch-up): what `driftless backfill status` prints.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct BackfillRun {
    pub id: i64,
    /// `crm`, `billing` or `both`.
    pub systems: String,
    /// `running`, `cancelled` or `failed` (start again resumes either at its cursor), `done`.
    pub state: String,
    /// Streams read to the end (`crm:contacts`, `billing:customers`, ...).
    pub streams_done: Vec<String>,
    /// Pages made durable, records read, inbox events accepted and already-held duplicates.
    pub pages: i64,
    pub records: i64,
    pub accepted: i64,
    pub duplicates: i64,
    /// Records the providers report (HubSpot search totals; Stripe lists report none).
    pub total_known: Option<i64>,
    pub error: Option<String>,
    pub started_by: String,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The migration this run is a phase of.
    pub migration_id: Option<i64>,
    /// The phase's validation report (migration phases).
    pub validation: Option<ValidationReport>,
}

/// A backfill's progress with its estimated finish.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct BackfillProgress {
    pub run: Option<BackfillRun>,
    /// Pages still to read, when the total is known.
    pub pages_left: Option<i64>,
    /// Records the workers still have to sync: listed but not yet applied (the run's
    /// backfill events still pending), plus those still to list when the total is known.
    pub records_to_sync: Option<i64>,
    /// Estimated finish (Unix ms) of listing **and** syncing: the later of the listing's end
    /// (pages left at the CRM budget's current rate) and the workers' end (`records_to_sync`
    /// at this run's observed apply rate, or the slower destination budget's current rate
    /// while nothing is applied yet).
    pub eta_ms: Option<i64>,
    /// What the estimate covers (Stripe lists report no total: records of a billing listing
    /// still to read are not in it).
    pub eta_covers: Option<String>,
    /// A backfill started from the console is running in this engine.
    #[serde(default)]
    pub job_running: bool,
    /// The error the last backfill started from the console ended in.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Migration mode: one system authoritative until `migration finish`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct MigrationMode {
    pub id: i64,
    /// `crm` or `billing`: its values win, writes into it are frozen.
    pub authority: String,
    /// The contract object the mode covers; none = every object.
    pub object: Option<String>,
    pub reason: String,
    pub started_by: String,
    pub started_at_ms: i64,
    pub finished_by: Option<String>,
    pub finished_at_ms: Option<i64>,
    /// Backfill runs made as phases of this migration, oldest first.
    #[serde(default)]
    pub phases: Vec<BackfillRun>,
}

/// A migration phase's validation: counts on each side, links through the identity map and
/// owned-field mismatches on a sample of linked pairs.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ValidationReport {
    pub object: String,
    pub crm_records: i64,
    pub billing_records: i64,
    /// CRM records with a billing counterpart in the identity map.
    pub linked: i64,
    pub unlinked_crm: i64,
    pub unlinked_billing: i64,
    /// Linked pairs compared field by field.
    pub sampled: i64,
    /// Owned fields that differ in the sample, with up to 20 examples.
    pub mismatched_fields: i64,
    pub mismatches: Vec<FieldMismatch>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct FieldMismatch {
    pub crm_id: String,
    pub billing_id: String,
    pub field: String,
    pub crm: Option<String>,
    pub billing: Option<String>,
    /// The side whose value should win (the authority during a migration).
    pub owner: String,
}

// ---- Reconciliation (issue 6): a run, its findings, and what the console asks for. ----

/// A run as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReconRunRow {
    pub id: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub window_days: i64,
    pub trigger: String,
    pub state: String,
    pub phase: String,
    pub cursor: Option<String>,
    pub pages_read: i64,
    pub compared: i64,
    pub duration_ms: Option<i64>,
    /// Distinct records with a field or rule mismatch.
    pub mismatched_records: i64,
    pub log: Vec<String>,
    pub error: Option<String>,
}

/// A mismatch to record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct NewMismatch {
    pub entity_key: String,
    /// `field`, `rule` or `missed_event`.
    pub kind: String,
    pub name: String,
    pub crm_value: Option<String>,
    pub billing_value: Option<String>,
    pub owner: Option<String>,
    pub detail: Option<String>,
}

/// A recorded mismatch, with the time it was first seen (carried over from the previous
/// finished run while the mismatch persists).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct MismatchRow {
    #[serde(flatten)]
    pub m: NewMismatch,
    pub first_seen_ms: i64,
}

/// One reconciliation as `driftless reconcile --json` and the console show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReconcileReport {
    pub run: ReconRunRow,
    /// Whether this call continued a run a crash or cancel left behind.
    pub resumed: bool,
    /// `false` when the run stopped at `max_pages` and resumes on the next call.
    pub complete: bool,
    pub compared: i64,
    pub mismatched_records: i64,
    pub mismatch_rate: f64,
    pub alert_threshold: f64,
    pub over_threshold: bool,
    pub by_field: BTreeMap<String, i64>,
    pub by_rule: BTreeMap<String, i64>,
    pub missed_events: i64,
    pub mismatches: Vec<MismatchRow>,
    pub gaps_resolved: Vec<i64>,
    /// The repair preview (dry run) or what was queued.
    pub repair: Option<ReplayPreview>,
    pub sent_to_review: usize,
}

/// What an operator asks of a reconciliation: the CLI's flags, the console's form.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReconcileAsk {
    /// Days back the missed-event detector looks (1 to 90; the contract's window when absent).
    #[serde(default)]
    pub window_days: Option<u32>,
    /// Preview the repair writes without queueing them.
    #[serde(default)]
    pub dry_run: bool,
    /// Records to repair once compared: `["all"]`, record keys or CRM ids; empty for none.
    #[serde(default)]
    pub repair: Vec<String>,
    /// Records (keys or CRM ids) to send to the review queue instead.
    #[serde(default)]
    pub review: Vec<String>,
    /// Stop, resumably, after reading this many pages.
    #[serde(default)]
    pub max_pages: Option<u64>,
}

/// The console's reconciliation panel: the run going on, the last finished one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReconciliationState {
    /// A run started from the console is going on in this engine.
    pub running: bool,
    /// A cancel was asked; the run stops at its next page.
    pub cancelling: bool,
    /// The unfinished run (going on, or left by a crash or cancel: the next run resumes it).
    pub current: Option<ReconRunRow>,
    /// The last finished run.
    pub last: Option<ReconcileReport>,
    /// The error the last run started from the console ended in.
    pub last_error: Option<String>,
    /// The contract's schedule (`nightly`, `hourly`, a cron expression or `manual`).
    pub schedule: String,
}

/// Start a backfill from the console.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct BackfillAsk {
    /// `crm`, `billing` or `both`.
    #[schema(pattern = "^(crm|billing|both)$")]
    pub systems: String,
}

// ---- Operator actions (issue 7's screens): request bodies of the console API. ----

/// Retry or discard the dead letters a filter selects; `dry_run` only measures the blast radius.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterAction {
    pub filter: DeadLetterFilter,
    #[serde(default)]
    pub dry_run: bool,
    /// Required unless `dry_run` (it goes into the audit log).
    #[serde(default)]
    pub reason: String,
}

/// Requeue a dropped event for a fresh decision.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct UndropRequest {
    pub inbox_id: i64,
    /// Why (audited).
    #[schema(pattern = "\\S")]
    pub reason: String,
}

/// A replay: the preview (`dry_run`) or the run.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub selector: ReplaySelector,
    #[serde(default)]
    pub dry_run: bool,
}

/// Settle one conflicted record of the review queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    pub id: i64,
    pub resolution: ReviewResolution,
}

/// Which record an action touched (its record key).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct RecordRef {
    pub record: String,
}

// ---- Replay runs, the audit log and the contract (issue 7: Replay, Audit log, Contract screens). ----

/// A queued replay and how far it got. A record is pending while it still has queued work;
/// `cancel_replay` removes the records whose replay work no worker has claimed yet.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReplayRun {
    pub id: i64,
    pub started_by: String,
    /// `replay` (an operator's) or the reconciler's `reconcile repair`.
    pub reason: String,
    /// The selection (JSON of a `ReplaySelector`) when an operator chose one.
    pub selector: Option<String>,
    pub started_at_ms: i64,
    /// `running`, `done` (no record has queued work left) or `cancelled`.
    pub state: String,
    pub finished_at_ms: Option<i64>,
    pub cancelled_by: Option<String>,
    pub records: i64,
    /// Records that still have queued work.
    pub pending: i64,
    /// Records whose work is finished.
    pub done: i64,
    /// Records whose queued replay work a cancel removed.
    pub cancelled: i64,
    /// Records that already had work queued (an event, a retry) when the replay joined it:
    /// a cancel leaves that work alone.
    pub joined: i64,
}

/// Which audit rows to list. Every field narrows the set.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// Actor, or its beginning (`operator:` matches every operator).
    #[serde(default)]
    pub actor: Option<String>,
    /// Exact action, e.g. `replay`, `pause`, `decision`.
    #[serde(default)]
    pub action: Option<String>,
    /// Email, CRM id, billing id or record key.
    #[serde(default)]
    pub record: Option<String>,
    /// Substring of the action, rule, record key or detail.
    #[serde(default)]
    pub text: Option<String>,
    /// At or after (Unix ms).
    #[serde(default)]
    pub from_ms: Option<i64>,
    /// Before (Unix ms).
    #[serde(default)]
    pub to_ms: Option<i64>,
    /// Page size (default 100, at most 1000) and offset, newest first.
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

/// One audit row: an engine decision or an operator action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub record: Option<String>,
    pub inbox_id: Option<i64>,
    pub outbox_id: Option<i64>,
    /// `engine`, `operator:<name>`, `cli`, …
    pub actor: String,
    pub action: String,
    pub rule: Option<String>,
    pub contract_version: Option<String>,
    /// JSON detail.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct AuditList {
    /// Rows matching the filter (all pages).
    pub total: i64,
    pub items: Vec<AuditEntry>,
    /// The record key the `record` filter resolved to, if it named one.
    pub record: Option<String>,
}

/// One mapped field of the contract: where it lives on each side and who owns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ContractField {
    pub name: String,
    /// CRM property.
    pub crm: String,
    /// Billing path (`email`, `metadata.<key>`, …).
    pub billing: String,
    /// `crm`, `billing` or `shared`.
    pub owner: String,
    /// For shared fields: `review` or `latest_sync_timestamp`.
    pub conflict_rule: Option<String>,
    /// For owned fields: what a non-owner edit gets (`revert` or `flag`).
    pub on_non_owner_edit: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ContractObject {
    pub name: String,
    /// CRM object (`contact`, `company`) and billing object (`customer`, …).
    pub crm: String,
    pub billing: String,
    /// Side on which a missing counterpart is created.
    pub create_in: Option<String>,
    pub fields: Vec<ContractField>,
}

/// A problem in the contract file: `file:line:column: field: message`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ContractIssue {
    pub file: String,
    pub line: i64,
    pub column: i64,
    pub field: String,
    pub message: String,
}

/// The contract in force, its ownership matrix, and the file re-validated now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ContractInfo {
    pub name: String,
    /// The version the engine runs with (what every decision records).
    pub version: String,
    /// The file it was started with; none for the embedded default contract (the demo).
    pub path: Option<String>,
    pub embedded: bool,
    /// The file's version as it is on disk now (differs from `version` once it was edited).
    pub file_version: Option<String>,
    /// The file could not be read now.
    pub read_error: Option<String>,
    /// Problems in the file as it is on disk now (empty when it compiles).
    pub issues: Vec<ContractIssue>,
    pub objects: Vec<ContractObject>,
}

/// Which replay run (cancel).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReplayRunRef {
    pub id: i64,
}

// ---- Dead letters screen (issue 7): one dead letter's detail for the drawer. ----

/// One dead letter with everything the detail drawer shows: the write as sent, the answer,
/// the engine's decisions about it (attempts, dead letter, retry/discard) and the events behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct DeadLetterDetail {
    pub dead_letter: DeadLetter,
    /// The write as it was sent (JSON: op, target, idempotency key, correlation id, fields).
    pub request: String,
    /// The destination's last answer body, if it gave one.
    pub response: Option<String>,
    pub response_status: Option<i64>,
    /// The outbox row of the write.
    pub write_id: i64,
    /// The write's state now (`dead_lettered`; a retry plans a fresh write).
    pub write_state: String,
    pub correlation_id: String,
    /// Decisions and operator actions about this write, oldest first.
    pub history: Vec<TimelineEntry>,
    /// The inbound events behind it: the one that caused the write and the record's other
    /// dead-lettered events.
    pub events: Vec<TimelineEntry>,
}

/// Which dead letter the drawer opens.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRef {
    pub id: i64,
}

// ---- Reconciliation screen (issue 7): finished runs, one run's report, repair of a run. ----

/// A finished reconciliation run, as the console's run list shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ReconRunSummary {
    pub id: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub window_days: i64,
    /// `cli`, `console` or `schedule`.
    pub trigger: String,
    pub compared: i64,
    /// Distinct records with a field or rule mismatch.
    pub mismatched: i64,
    /// `mismatched / compared` (0 when nothing was compared).
    pub mismatch_rate: f64,
    pub duration_ms: Option<i64>,
}

/// Repair (or preview the repair of) records a finished run found mismatched, without
/// comparing again. Only the latest finished run may be acted on.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ReconRepairAsk {
    pub run_id: i64,
    /// `["all"]`, record keys or CRM ids of the run's mismatched records.
    #[serde(default)]
    pub records: Vec<String>,
    /// Records (keys or CRM ids) to send to the review queue instead (ignored by the dry run).
    #[serde(default)]
    pub review: Vec<String>,
    /// Preview the writes without queueing them.
    #[serde(default)]
    pub dry_run: bool,
}

// ---- Connect screen (issue 7): keys, the connection test, CRM properties, observe mode. ----

/// A system's API key, as the Connect screen sends it. It travels only in this request body
/// (token-guarded localhost API / Tauri IPC): never echoed back, logged or stored in the
/// ledger; its `Debug` hides it.
#[derive(Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ConnectKey {
    /// `crm` or `billing`.
    #[schema(pattern = "^(crm|billing)$")]
    pub system: String,
    #[schema(pattern = "\\S")]
    pub key: String,
}

impl std::fmt::Debug for ConnectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectKey")
            .field("system", &self.system)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// One step of connecting, as `driftless connect --json` prints it (`step`, `ok`, `detail`).
/// A failed connection test is `ok: false` with the specific reason and a `code`:
/// `key_refused`, `unreachable`, `not_the_api` or `unexpected_answer` (no key at all is a
/// 400 `bad_request`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ConnectStep {
    pub step: String,
    pub ok: bool,
    pub detail: String,
    pub code: Option<String>,
}

/// A CRM custom property the contract needs, and whether the account has it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ConnectProperty {
    /// `contact` or `company`.
    pub object: String,
    pub name: String,
    pub label: String,
    /// HubSpot property type (`string`) and field type (`text`) driftless creates.
    #[serde(rename = "type")]
    pub kind: String,
    pub field_type: String,
    pub exists: bool,
}

/// Preview (`create: false`) or create (`create: true`, the operator confirmed) the CRM
/// properties, with the CRM key (not echoed back).
#[derive(Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct ConnectPropertiesRequest {
    #[schema(pattern = "\\S")]
    pub key: String,
    pub create: bool,
}

impl std::fmt::Debug for ConnectPropertiesRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectPropertiesRequest")
            .field("key", &"<redacted>")
            .field("create", &self.create)
            .finish()
    }
}

/// The CRM properties as the account has them now, and those this call created.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ConnectProperties {
    pub properties: Vec<ConnectProperty>,
    pub created: Vec<String>,
}

/// What saving a key did: the steps (`test`, `store`, `contract`, `observe`) as the CLI
/// reports them.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct ConnectSaved {
    pub steps: Vec<ConnectStep>,
    /// The keychain entry the key is referenced by (`service/account`).
    pub keychain: String,
    /// No usable OS keychain here: the environment variable to set to the key instead.
    pub env_fallback: Option<String>,
    /// The contract file whose `secret` reference now names the keychain entry; none when the
    /// engine runs on the embedded demo contract.
    pub contract_path: Option<String>,
    pub contract_changed: bool,
    pub observe: bool,
}

/// Observe mode from the console: `on: false` holds every write (observe); `on: true` without
/// `confirm` previews the held writes, with `confirm` sends them (`driftless writes on --yes`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
#[serde(deny_unknown_fields)]
pub struct WritesRequest {
    pub on: bool,
    #[serde(default)]
    pub confirm: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Observe mode after the request, and the held writes per destination (before sending).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct WritesAnswer {
    /// Observe mode is on (nothing is written).
    pub observe: bool,
    /// Planned writes per destination held by observe mode or a pause: what goes (or went) out.
    pub held_writes: BTreeMap<String, i64>,
    /// Writes were turned on by this request.
    pub sent: bool,
    /// Observe mode changed.
    pub changed: bool,
}
