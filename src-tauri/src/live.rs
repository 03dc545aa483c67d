//! The live overview: once a second, ask the engine for the overview, emit it to the window as
//! the `overview` event (the UI's `listen('overview')`), keep the native title bar saying
//! whether outbound writes are paused — so a pause is visible even when the window is not —
//! and raise a desktop notification once per alert crossing (the console's banner links to
//! the screen that explains it).

use std::time::Duration;

use driftless::api::PauseFlag;
use driftless::engine::Engine;
use tauri::{AppHandle, Emitter, Manager};
use tauri_plugin_notification::NotificationExt;

pub const WINDOW: &str = "main";
pub const EVENT: &str = "overview";
const EVERY: Duration = Duration::from_secs(1);

/// "driftless", or "driftless — PAUSED (global, crm)" while any pause is active.
pub fn window_title(paused: &[PauseFlag]) -> String {
    if paused.is_empty() {
        return "driftless".to_string();
    }
    let scopes: Vec<&str> = paused.iter().map(|p| p.scope.as_str()).collect();
    format!("driftless — PAUSED ({})", scopes.join(", "))
}

pub fn spawn(app: AppHandle, engine: Engine) -> tauri::async_runtime::JoinHandle<()> {
    tauri::async_runtime::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shown_title = String::new();
        let mut alerted = std::collections::BTreeSet::new();
        loop {
            tick.tick().await;
            let overview = match engine.overview().await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "overview failed");
                    continue;
                }
            };
            let title = window_title(&overview.status.ledger.paused);
            if title != shown_title {
                if let Some(w) = app.get_webview_window(WINDOW) {
                    match w.set_title(&title) {
                        Ok(()) => shown_title = title,
                        Err(e) => tracing::warn!(error = %e, "cannot set the window title"),
                    }
                }
            }
            for a in driftless::engine::newly_crossed(&mut alerted, &overview.alerts) {
                let shown = app
                    .notification()
                    .builder()
                    .title("driftless alert")
                    .body(&a.message)
                    .show();
                if let Err(e) = shown {
                    // No notification daemon (e.g. a bare X server): the banner still shows it.
                    tracing::warn!(error = %e, alert = %a.id, "cannot show a desktop notification");
                }
            }
            if let Err(e) = app.emit_to(WINDOW, EVENT, &overview) {
                tracing::warn!(error = %e, "cannot emit the overview");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(scope: &str) -> PauseFlag {
        PauseFlag {
            scope: scope.into(),
            reason: Some("incident".into()),
            set_by: "operator:desktop".into(),
            set_at_ms: 0,
        }
    }

    #[test]
    fn title_names_every_paused_scope() {
        assert_eq!(window_title(&[]), "driftless");
        assert_eq!(window_title(&[flag("global")]), "driftless — PAUSED (global)");
        assert_eq!(
            window_title(&[flag("crm"), flag("billing")]),
            "driftless — PAUSED (crm, billing)"
        );
    }
}
