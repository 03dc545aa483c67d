//! The console's API: the only types serialised to the UI (HTTP JSON, Tauri IPC, generated
//! TypeScript via ts-rs, OpenAPI via utoipa), and the one conversion of engine errors into
//! `{code, message}`. The operations themselves are `Engine` methods; the Tauri commands and
//! the HTTP handlers are thin wrappers with the same names.

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
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, TS, ToSchema)]
#[serde(rename_all = "lowercase")]
#[ts(export)]
pub enum HealthState {
    Running,
    Paused,
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
}

/// Body of `pause_outbound` / `resume_outbound`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, TS, ToSchema)]
#[ts(export)]
pub struct PauseRequest {
    /// `global` (default), `crm` or `billing`.
    pub scope: Option<String>,
    /// Why — shown on every screen while paused, and audited.
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

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        ApiError {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}
