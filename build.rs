//! Points `DRIFTLESS_UI_DIR` at the console build (`ui/dist`) so `serve` embeds it. When the
//! UI has not been built (a plain `cargo build` on a fresh clone), a placeholder page that
//! says how to build it is embedded instead, so the engine never needs Node to compile.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let dist = manifest.join("ui").join("dist");
    println!("cargo:rerun-if-changed=ui/dist");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = if dist.join("index.html").is_file() {
        dist
    } else {
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| "target".into())).join("ui-placeholder");
        let _ = std::fs::create_dir_all(&out);
        let _ = std::fs::write(
            out.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>driftless</title>\
             <body style=\"font-family:sans-serif;margin:3em\"><h1>driftless</h1>\
             <p>The console UI was not built into this binary. Run <code>make run</code> \
             (or <code>make ui</code>, then rebuild). The JSON API is available under <code>/api/</code>.</p>",
        );
        out
    };
    println!("cargo:rustc-env=DRIFTLESS_UI_DIR={}", dir.display());
}
