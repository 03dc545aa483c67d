//! The driftless desktop console: a thin Tauri 2 shell. It owns one engine in-process
//! (`launch`), exposes every operator operation through one command, `operation` (`commands`),
//! and pushes the live overview to the window (`live`). No SQL and no sync rules live here;
//! the UI is `ui/dist`, the same console `driftless serve` embeds.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod launch;
mod live;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use tauri::{Manager, RunEvent};

/// The started engine, taken out once at exit to shut it down cleanly.
struct Owned(Mutex<Option<launch::Launched>>);

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,driftless=info,driftless_desktop=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn setup(app: &mut tauri::App) -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = app.path().app_data_dir()?;
    let mode = launch::Mode::choose(&data_dir, std::env::var_os("DRIFTLESS_CONTRACT").map(Into::into));
    let listen = match launch::Listen::from_env() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("driftless-desktop: {e}");
            app.handle().exit(1);
            return Ok(());
        }
    };
    // The window opens below, after the engine is managed, so no command can arrive first.
    let launched = match tauri::async_runtime::block_on(launch::start(&mode, &listen)) {
        Ok(l) => l,
        Err(e) => {
            // An error returned from setup would panic inside the event loop: say what is wrong
            // and leave with a non-zero status instead.
            eprintln!("driftless-desktop: cannot start the engine: {}", launch::describe(&e));
            app.handle().exit(1);
            return Ok(());
        }
    };
    let engine = launched.engine().clone();
    app.manage(engine.clone());
    app.manage(Owned(Mutex::new(Some(launched))));
    open_window(app)?;
    live::spawn(app.handle().clone(), engine);
    Ok(())
}

/// The window from tauri.conf.json (`create: false` there), opened once the engine runs, with
/// the locale shim ahead of the console's scripts.
fn open_window(app: &tauri::App) -> tauri::Result<()> {
    let config = app
        .config()
        .app
        .windows
        .iter()
        .find(|w| w.label == live::WINDOW)
        .cloned()
        .ok_or_else(|| tauri::Error::WindowNotFound)?;
    tauri::WebviewWindowBuilder::from_config(app.handle(), &config)?
        .initialization_script(include_str!("locale_shim.js"))
        .build()?;
    Ok(())
}

fn main() -> ExitCode {
    init_tracing();
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .invoke_handler(tauri::generate_handler![commands::operation])
        .setup(setup)
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("driftless-desktop: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = app.run_return(|handle, event| {
        if let RunEvent::Exit = event {
            let launched = handle
                .try_state::<Owned>()
                .and_then(|owned| owned.0.lock().ok().and_then(|mut l| l.take()));
            if let Some(l) = launched {
                let stopped = tauri::async_runtime::block_on(tokio::time::timeout(SHUTDOWN_TIMEOUT, l.shutdown()));
                if stopped.is_err() {
                    tracing::warn!("the engine did not stop within {SHUTDOWN_TIMEOUT:?}");
                }
            }
        }
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
