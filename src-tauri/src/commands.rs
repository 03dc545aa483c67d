//! The window's one command: `operation`, any operation of the engine's operations table
//! (`driftless::operations`, the same table the HTTP server routes and the CLI calls) by
//! name, with its arguments as a JSON object. A CSV export answers its whole text. Nothing
//! else lives here: adding an operation adds nothing to the shell.

use driftless::api::ApiError;
use driftless::engine::Engine;
use driftless::operations::{self, Args};
use tauri::State;

/// Who the audit log names for actions taken in the window.
const BY: &str = "operator:desktop";

#[tauri::command]
pub async fn operation(
    engine: State<'_, Engine>,
    name: String,
    args: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let answer = operations::call(&engine, &name, Args::Json(args), BY).await?;
    Ok(answer.into_json().await?)
}
