//! Which engine the window owns, and starting it. With a contract (`DRIFTLESS_CONTRACT`, or
//! `contract.toml` in the app data directory) the engine runs against the real systems with
//! its ledger at `<app data>/driftless.db`. Otherwise it is the embedded demo: both simulators
//! in-process, seeded actors editing records, and a fresh ledger on every launch (the
//! simulators live in memory and start empty, so yesterday's ledger would disagree with them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use driftless::engine::Engine;
use driftless::runtime::{self, DemoOptions, Running, ServeOptions};
use driftless::sim::{self, FaultProfile};

/// The simulators' seed in demo mode (the same default as `driftless serve --demo`).
const DEMO_SEED: u64 = 1;
const WORKERS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Demo { ledger: PathBuf },
    Contract { contract: PathBuf, ledger: PathBuf },
}

impl Mode {
    /// Decide from the environment and the app data directory; touches nothing.
    pub fn choose(data_dir: &Path, contract_env: Option<PathBuf>) -> Mode {
        let contract = contract_env
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| Some(data_dir.join("contract.toml")).filter(|p| p.is_file()));
        match contract {
            Some(contract) => Mode::Contract {
                contract,
                ledger: data_dir.join("driftless.db"),
            },
            None => Mode::Demo {
                ledger: data_dir.join("demo").join("ledger.db"),
            },
        }
    }
}

/// A started engine (and, in demo mode, the simulated users editing records).
pub struct Launched {
    running: Running,
    actors: Option<tokio::task::JoinHandle<()>>,
}

impl Launched {
    pub fn engine(&self) -> &Engine {
        &self.running.engine
    }

    pub async fn shutdown(self) {
        if let Some(a) = self.actors {
            a.abort();
        }
        self.running.shutdown().await;
    }
}

/// The engine's local HTTP server (webhooks; the token-guarded API) listens on loopback only.
fn loopback_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn start(mode: &Mode) -> Result<Launched> {
    match mode {
        Mode::Demo { ledger } => {
            fresh_ledger(ledger)?;
            let running = runtime::start_demo(DemoOptions {
                seed: DEMO_SEED,
                faults: FaultProfile::default_profile(),
                contract: driftless::contract::default_contract(),
                serve: serve_options(ledger),
                request_timeout_ms: 2_000,
            })
            .await
            .context("starting the embedded demo")?;
            let actors = running
                .sims
                .as_ref()
                .map(|s| sim::spawn_background_actors(s, DEMO_SEED));
            tracing::info!(ledger = %ledger.display(), api = %running.addr, "demo mode: simulated CRM and billing, faults on");
            Ok(Launched { running, actors })
        }
        Mode::Contract { contract, ledger } => {
            let c = driftless::contract::load(contract)
                .with_context(|| format!("loading the contract {}", contract.display()))?;
            if let Some(dir) = ledger.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let running = runtime::serve_contract(c, serve_options(ledger))
                .await
                .context("starting the engine")?;
            tracing::info!(contract = %contract.display(), ledger = %ledger.display(), api = %running.addr, "running against the contract's systems");
            Ok(Launched { running, actors: None })
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the previous message
/// already includes (several engine errors print their source themselves).
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn serve_options(ledger: &Path) -> ServeOptions {
    ServeOptions {
        ledger: ledger.to_path_buf(),
        addr: loopback_any_port(),
        workers: WORKERS,
        public_url: None,
        token: None,
    }
}

/// Remove a previous demo ledger with its WAL and shared-memory files.
fn fresh_ledger(ledger: &Path) -> Result<()> {
    let dir = ledger.parent().context("the demo ledger path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = ledger.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing the old demo ledger {}", Path::new(&p).display()))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_without_a_contract() {
        let dir = std::env::temp_dir().join(format!("driftless-desktop-mode-{}", std::process::id()));
        assert_eq!(
            Mode::choose(&dir, None),
            Mode::Demo {
                ledger: dir.join("demo/ledger.db")
            }
        );
        assert_eq!(Mode::choose(&dir, Some(PathBuf::new())), Mode::choose(&dir, None));
    }

    #[test]
    fn contract_from_env_or_data_dir() {
        let dir = std::env::temp_dir().join(format!("driftless-desktop-contract-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = PathBuf::from("/etc/driftless/contract.toml");
        assert_eq!(
            Mode::choose(&dir, Some(env.clone())),
            Mode::Contract {
                contract: env,
                ledger: dir.join("driftless.db")
            }
        );
        std::fs::write(dir.join("contract.toml"), "").unwrap();
        assert_eq!(
            Mode::choose(&dir, None),
            Mode::Contract {
                contract: dir.join("contract.toml"),
                ledger: dir.join("driftless.db")
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn describe_skips_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io)
            .context("cannot read contract x.toml: no such file")
            .context("loading the contract");
        assert_eq!(
            describe(&e),
            "loading the contract: cannot read contract x.toml: no such file"
        );
    }

    #[test]
    fn fresh_ledger_removes_the_old_files() {
        let dir = std::env::temp_dir().join(format!("driftless-desktop-fresh-{}", std::process::id()));
        let ledger = dir.join("demo/ledger.db");
        std::fs::create_dir_all(ledger.parent().unwrap()).unwrap();
        for f in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
            std::fs::write(dir.join("demo").join(f), "old").unwrap();
        }
        fresh_ledger(&ledger).unwrap();
        assert_eq!(std::fs::read_dir(dir.join("demo")).unwrap().count(), 0);
        fresh_ledger(&ledger).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
