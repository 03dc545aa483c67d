//! Runs tauri-build (config, capabilities, the app's command permissions) and makes sure the
//! console build exists. `frontendDist` is `../ui/dist`; when the UI has not been built (a
//! plain `cargo build --workspace` or `cargo clippy --workspace` on a fresh clone), a
//! placeholder page that says how to build it is embedded instead, so the shell compiles
//! without Node — the same choice the engine's own build.rs makes for `serve`.

use std::path::PathBuf;

/// The window's one command (`src/commands.rs`): every engine operation goes through it by
/// name. tauri-build generates its `allow-operation` permission, which
/// `capabilities/main-window.json` grants.
const COMMANDS: &[&str] = &["operation"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dist = manifest_dir.join("..").join("ui").join("dist");
    println!("cargo:rerun-if-changed=../ui/dist");
    // An explicit TAURI_CONFIG (the Tauri CLI, or a developer pointing at another page) wins.
    println!("cargo:rerun-if-env-changed=TAURI_CONFIG");
    if !dist.join("index.html").is_file() && std::env::var_os("TAURI_CONFIG").is_none() {
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui-placeholder");
        std::fs::create_dir_all(&out).expect("create the placeholder UI directory");
        std::fs::write(
            out.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>driftless</title>\
             <body style=\"font-family:sans-serif;margin:3em\"><h1>driftless</h1>\
             <p>The console UI was not built into this binary. Run <code>make run</code>, or \
             <code>cd ui &amp;&amp; npm ci &amp;&amp; npm run build</code> and rebuild.</p>",
        )
        .expect("write the placeholder UI");
        let path = out.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
        let config = format!(r#"{{"build":{{"frontendDist":"{path}"}}}}"#);
        // tauri-build reads TAURI_CONFIG in this process; `generate_context!` reads it in rustc.
        std::env::set_var("TAURI_CONFIG", &config);
        println!("cargo:rustc-env=TAURI_CONFIG={config}");
        println!("cargo:warning=ui/dist is missing: embedding a placeholder page (build the UI first)");
    }
    tauri_build::try_build(
        tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri-build failed");
}
