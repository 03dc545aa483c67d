//! Points `DRIFTLESS_UI_DIR` at the console build (`ui/dist`) so `serve` embeds it. When the
//! UI has not been built (a plain `cargo build` on a fresh clone), a placeholder page that
//! says how to build it is embedded instead, so the engine never needs Node to compile.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let dist = manifest.join("ui").join("dist");
    println!("cargo:rerun-if-changed=ui/dist");
    println!("cargo:rerun-if-changed=build.rs");
    // `sqlx::migrate!` embeds migrations/: a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    // The embedded copy lives in OUT_DIR (inside the target dir), never at the clone's path:
    // a target dir shared by clones at different paths (CI's cache) must not point at a
    // checkout that is gone.
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| "target".into())).join("ui");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::create_dir_all(&out);
    if !(dist.join("index.html").is_file() && copy_dir(&dist, &out).is_ok()) {
        let _ = std::fs::write(
            out.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>driftless</title>\
             <body style=\"font-family:sans-serif;margin:3em\"><h1>driftless</h1>\
             <p>The console UI was not built into this binary. Run <code>make run</code> \
             (or <code>make ui</code>, then rebuild). The JSON API is available under <code>/api/</code>.</p>",
        );
    }
    println!("cargo:rustc-env=DRIFTLESS_UI_DIR={}", out.display());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
