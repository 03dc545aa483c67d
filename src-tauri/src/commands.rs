//! The Tauri commands: one per engine operation, with the engine's names (the same as the
//! HTTP routes `/api/<name>` and the UI's backend methods). Each takes the engine from state,
//! awaits one call and converts the error with `ApiError::from` — nothing else lives here.

use driftless::api::{
    ApiError, BackfillAsk, BackfillProgress, BulkResult, DeadLetterAction, DeadLetterFilter, DeadLetterList,
    MigrationMode, Overview, PauseRequest, PauseResult, ReconcileAsk, ReconciliationState, RecordRef, ReplayPreview,
    ReplayRequest, ReviewDecision, ReviewItem, Status, Timeline, UndropRequest, ValidationReport,
};
use driftless::api::{AuditFilter, AuditList, ContractInfo, ReplayRun, ReplayRunRef};
use driftless::api::{ReconRepairAsk, ReconRunSummary, ReconcileReport};
use driftless::engine::Engine;
use tauri::State;

/// Who the audit log names for actions taken in the window.
const BY: &str = "operator:desktop";

#[tauri::command]
pub async fn overview(engine: State<'_, Engine>) -> Result<Overview, ApiError> {
    engine.overview().await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn status(engine: State<'_, Engine>) -> Result<Status, ApiError> {
    engine.status().await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn pause_outbound(engine: State<'_, Engine>, req: PauseRequest) -> Result<PauseResult, ApiError> {
    engine.pause_outbound(&req, BY).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn resume_outbound(engine: State<'_, Engine>, req: PauseRequest) -> Result<PauseResult, ApiError> {
    engine.resume_outbound(&req, BY).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn reconciliation_state(engine: State<'_, Engine>) -> Result<ReconciliationState, ApiError> {
    engine.reconciliation_state().await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn start_reconcile(engine: State<'_, Engine>, req: ReconcileAsk) -> Result<ReconciliationState, ApiError> {
    engine.start_reconcile(&req, BY).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn cancel_reconcile(engine: State<'_, Engine>) -> Result<ReconciliationState, ApiError> {
    engine.cancel_reconcile(BY).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn backfill_state(engine: State<'_, Engine>) -> Result<BackfillProgress, ApiError> {
    engine.backfill_state().await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn start_backfill(engine: State<'_, Engine>, req: BackfillAsk) -> Result<BackfillProgress, ApiError> {
    engine.start_backfill(&req.systems, BY).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn cancel_backfill(engine: State<'_, Engine>) -> Result<BackfillProgress, ApiError> {
    engine.cancel_backfill(BY).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn migration_status(engine: State<'_, Engine>) -> Result<Option<MigrationMode>, ApiError> {
    engine.migration_status().await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn validation_report(engine: State<'_, Engine>, object: String) -> Result<ValidationReport, ApiError> {
    engine.validation_report(&object).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn list_dead_letters(engine: State<'_, Engine>, req: DeadLetterFilter) -> Result<DeadLetterList, ApiError> {
    engine.list_dead_letters(&req).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn retry_dead_letters(engine: State<'_, Engine>, req: DeadLetterAction) -> Result<BulkResult, ApiError> {
    engine
        .retry_dead_letters(&req.filter, req.dry_run, &req.reason, BY)
        .await
        .map_err(ApiError::from)
}

#[tauri::command]
pub async fn discard_dead_letters(engine: State<'_, Engine>, req: DeadLetterAction) -> Result<BulkResult, ApiError> {
    engine
        .discard_dead_letters(&req.filter, req.dry_run, &req.reason, BY)
        .await
        .map_err(ApiError::from)
}

#[tauri::command]
pub async fn record_timeline(engine: State<'_, Engine>, query: String) -> Result<Timeline, ApiError> {
    engine.record_timeline(&query).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn undrop_event(engine: State<'_, Engine>, req: UndropRequest) -> Result<RecordRef, ApiError> {
    let record = engine
        .undrop_event(req.inbox_id, &req.reason, BY)
        .await
        .map_err(ApiError::from)?;
    Ok(RecordRef { record })
}

#[tauri::command]
pub async fn replay(engine: State<'_, Engine>, req: ReplayRequest) -> Result<ReplayPreview, ApiError> {
    engine
        .replay(&req.selector, req.dry_run, BY)
        .await
        .map_err(ApiError::from)
}

#[tauri::command]
pub async fn list_reviews(engine: State<'_, Engine>) -> Result<Vec<ReviewItem>, ApiError> {
    engine.list_reviews().await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn resolve_review(engine: State<'_, Engine>, req: ReviewDecision) -> Result<RecordRef, ApiError> {
    let record = engine
        .resolve_review(req.id, &req.resolution, BY)
        .await
        .map_err(ApiError::from)?;
    Ok(RecordRef { record })
}

// ---- Replay runs, the audit log and the contract (issue 7). ----

#[tauri::command]
pub async fn replay_run(engine: State<'_, Engine>, id: Option<i64>) -> Result<Option<ReplayRun>, ApiError> {
    engine.replay_run(id).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn cancel_replay(engine: State<'_, Engine>, req: ReplayRunRef) -> Result<ReplayRun, ApiError> {
    engine.cancel_replay(req.id, BY).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn list_audit(engine: State<'_, Engine>, filter: AuditFilter) -> Result<AuditList, ApiError> {
    engine.list_audit(&filter).await.map_err(ApiError::from)
}

/// The filtered audit log as CSV text (the window saves it; `serve` streams `/api/audit.csv`).
#[tauri::command]
pub async fn audit_csv(engine: State<'_, Engine>, filter: AuditFilter) -> Result<String, ApiError> {
    engine.audit_csv(&filter).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn contract_info(engine: State<'_, Engine>) -> Result<ContractInfo, ApiError> {
    Ok(engine.contract_info())
}

// ---- Dead letters screen (issue 7): the detail drawer and the CSV export. ----

#[tauri::command]
pub async fn dead_letter_detail(
    engine: State<'_, Engine>,
    id: i64,
) -> Result<driftless::api::DeadLetterDetail, ApiError> {
    engine.dead_letter_detail(id).await.map_err(ApiError::from)
}

/// The filtered set as CSV text (the window saves it as a file).
#[tauri::command]
pub async fn export_dead_letters(engine: State<'_, Engine>, req: DeadLetterFilter) -> Result<String, ApiError> {
    engine.dead_letters_csv(&req).await.map_err(ApiError::from)
}

// ---- The reconciliation screen (issue 7). ----

#[tauri::command]
pub async fn reconcile_runs(engine: State<'_, Engine>, limit: Option<i64>) -> Result<Vec<ReconRunSummary>, ApiError> {
    engine.reconcile_runs(limit).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn reconcile_report(engine: State<'_, Engine>, id: i64) -> Result<ReconcileReport, ApiError> {
    engine.reconcile_report(id).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn reconcile_repair(engine: State<'_, Engine>, req: ReconRepairAsk) -> Result<ReconcileReport, ApiError> {
    engine.reconcile_repair(&req, BY).await.map_err(ApiError::from)
}

/// A run's mismatches as CSV text (the window saves it; `serve` streams `/api/reconcile.csv`).
#[tauri::command]
pub async fn reconcile_csv(engine: State<'_, Engine>, id: i64) -> Result<String, ApiError> {
    engine.reconcile_csv(id).await.map_err(ApiError::from)
}

// ---- Connect screen (issue 7): the key arrives over IPC only and is never returned. ----

#[tauri::command]
pub async fn connect_test(
    engine: State<'_, Engine>,
    req: driftless::api::ConnectKey,
) -> Result<driftless::api::ConnectStep, ApiError> {
    engine.connect_test(&req.system, &req.key).await.map_err(ApiError::from)
}

#[tauri::command]
pub async fn connect_properties(
    engine: State<'_, Engine>,
    req: driftless::api::ConnectPropertiesRequest,
) -> Result<driftless::api::ConnectProperties, ApiError> {
    engine
        .connect_properties(&req.key, req.create)
        .await
        .map_err(ApiError::from)
}

#[tauri::command]
pub async fn connect_save_key(
    engine: State<'_, Engine>,
    req: driftless::api::ConnectKey,
) -> Result<driftless::api::ConnectSaved, ApiError> {
    engine
        .connect_save_key(&req.system, &req.key, BY)
        .await
        .map_err(ApiError::from)
}

#[tauri::command]
pub async fn set_writes(
    engine: State<'_, Engine>,
    req: driftless::api::WritesRequest,
) -> Result<driftless::api::WritesAnswer, ApiError> {
    engine.set_writes(&req, BY).await.map_err(ApiError::from)
}
