//! The Tauri commands: one per engine operation, with the engine's names (the same as the
//! HTTP routes `/api/<name>` and the UI's backend methods). Each takes the engine from state,
//! awaits one call and converts the error with `ApiError::from` — nothing else lives here.

use driftless::api::{ApiError, Overview, PauseRequest, PauseResult, Status};
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
