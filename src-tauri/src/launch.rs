//! Which engine the window owns, and starting it. With a contract (`DRIFTLESS_CONTRACT`, or
//! `contract.toml` in the app data directory) the engine runs against the real systems with
//! its ledger at `<app data>/driftless.db`. Otherwise it is the embedded demo: both simulators
//! in-process, seeded actors editing records, and a fresh ledger on every launch (the
//! simulators live in memory and start empty, so yesterday's ledger would disagree with them).
//!
//! Webhooks to the desktop: with a contract, the engine's HTTP server (which carries
//! `/webhooks/stripe` and `/webhooks/hubspot`) listens on loopback, any port. To receive the
//! providers' signed webhooks through a tunnel (cloudflared, ngrok, …), set
//! `DRIFTLESS_PUBLIC_URL` to the tunnel's public base URL and point the tunnel at
//! `DRIFTLESS_LISTEN` (default `127.0.0.1:8417`): the server binds that address and verifies
//! signatures against the public URL (HubSpot v3 signs it). See [`Listen::choose`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use driftless::engine::Engine;
use driftless::runtime::{self, DemoOptions, Running, ServeOptions};
use driftless::sim::{self, FaultProfile};

/// The simulators' seed in demo mode (the same default as `driftless serve --demo`).
const DEMO_SEED: u64 = 1;
const WORKERS: usize = 32;

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

/// Where the engine's HTTP server listens, and the public URL webhooks arrive at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub public_url: Option<String>,
    /// `DRIFTLESS_ALLOW_NON_LOOPBACK=1`: listen on an address other machines reach (refused
    /// without `DRIFTLESS_PUBLIC_URL` and `DRIFTLESS_TOKEN`; see `ServeOptions::check`).
    pub allow_non_loopback: bool,
    /// `DRIFTLESS_TOKEN`: a fixed API token (at least 32 characters).
    pub token: Option<String>,
}

/// The address a tunnel forwards to when `DRIFTLESS_PUBLIC_URL` is set without `DRIFTLESS_LISTEN`.
pub const DEFAULT_TUNNEL_LISTEN: &str = "127.0.0.1:8417";

impl Listen {
    /// From `DRIFTLESS_PUBLIC_URL` and `DRIFTLESS_LISTEN` (empty counts as unset):
    /// neither: loopback, any port, no public URL; a public URL (`https://` or `http://`,
    /// trailing `/` trimmed): bind `DRIFTLESS_LISTEN` or [`DEFAULT_TUNNEL_LISTEN`]; only a
    /// listen address: bind it, no public URL. Touches nothing.
    pub fn choose(public_url: Option<String>, listen: Option<String>) -> Result<Listen, String> {
        let public_url = public_url.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let listen = listen.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        if let Some(u) = &public_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains(char::is_whitespace) {
                return Err(format!(
                    "DRIFTLESS_PUBLIC_URL must be an http:// or https:// base URL (the tunnel's), got {u:?}"
                ));
            }
        }
        let addr = match (&listen, &public_url) {
            (Some(l), _) => l.parse::<SocketAddr>().map_err(|e| {
                format!("DRIFTLESS_LISTEN must be address:port, e.g. {DEFAULT_TUNNEL_LISTEN}: {l:?}: {e}")
            })?,
            (None, Some(_)) => DEFAULT_TUNNEL_LISTEN
                .parse()
                .map_err(|e| format!("default listen address: {e}"))?,
            (None, None) => loopback_any_port(),
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "DRIFTLESS_LISTEN {addr} is not a loopback address: the console's API would be reachable from \
                 other machines; use 127.0.0.1 (a tunnel forwards to it), or set DRIFTLESS_ALLOW_NON_LOOPBACK=1 \
                 with DRIFTLESS_PUBLIC_URL and DRIFTLESS_TOKEN"
            ));
        }
        Ok(Listen {
            addr,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            allow_non_loopback: false,
            token: None,
        })
    }

    /// From the process environment.
    pub fn from_env() -> Result<Listen, String> {
        let var = |k: &str| std::env::var(k).ok();
        let allow = var("DRIFTLESS_ALLOW_NON_LOOPBACK").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let listen = var("DRIFTLESS_LISTEN");
        let public_url = var("DRIFTLESS_PUBLIC_URL");
        let mut l = if allow {
            // The loopback rule is lifted; `ServeOptions::check` then requires the public URL
            // and a fixed token.
            let addr = listen
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<SocketAddr>()
                        .map_err(|e| format!("DRIFTLESS_LISTEN must be address:port: {s:?}: {e}"))
                })
                .transpose()?;
            let mut l = Listen::choose(public_url, None)?;
            if let Some(a) = addr {
                l.addr = a;
            }
            l.allow_non_loopback = true;
            l
        } else {
            Listen::choose(public_url, listen)?
        };
        // Set but empty is not a token: an empty token once turned authentication off.
        l.token = var("DRIFTLESS_TOKEN");
        Ok(l)
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

pub async fn start(mode: &Mode, listen: &Listen) -> Result<Launched> {
    match mode {
        Mode::Demo { ledger } => {
            fresh_ledger(ledger)?;
            let running = runtime::start_demo(DemoOptions {
                seed: DEMO_SEED,
                faults: FaultProfile::default_profile(),
                contract: driftless::contract::default_contract(),
                // The simulators deliver webhooks in-process, on loopback.
                serve: serve_options(
                    ledger,
                    &Listen {
                        addr: loopback_any_port(),
                        public_url: None,
                        allow_non_loopback: false,
                        token: None,
                    },
                ),
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
            let running = runtime::serve_contract(c, serve_options(ledger, listen))
                .await
                .context("starting the engine")?;
            tracing::info!(contract = %contract.display(), ledger = %ledger.display(), api = %running.addr, "running against the contract's systems");
            if let Some(u) = &listen.public_url {
                tracing::info!(public_url = %u, listen = %running.addr, "webhooks: {u}/webhooks/stripe and {u}/webhooks/hubspot, tunnelled to {}", running.addr);
            }
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

fn serve_options(ledger: &Path, listen: &Listen) -> ServeOptions {
    ServeOptions {
        ledger: ledger.to_path_buf(),
        addr: listen.addr,
        workers: WORKERS,
        public_url: listen.public_url.clone(),
        token: listen.token.clone(),
        allow_non_loopback: listen.allow_non_loopback,
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
    fn loopback_any_port_without_a_public_url() {
        let l = Listen::choose(None, None).unwrap();
        assert_eq!(
            l,
            Listen {
                addr: loopback_any_port(),
                public_url: None,
                allow_non_loopback: false,
                token: None,
            }
        );
        assert_eq!(Listen::choose(Some(" ".into()), Some(String::new())).unwrap(), l);
    }

    #[test]
    fn a_public_url_binds_the_tunnel_address_and_is_passed_on() {
        let l = Listen::choose(Some("https://abc.trycloudflare.com/".into()), None).unwrap();
        assert_eq!(l.addr, DEFAULT_TUNNEL_LISTEN.parse::<SocketAddr>().unwrap());
        assert_eq!(l.public_url.as_deref(), Some("https://abc.trycloudflare.com"));
        let l = Listen::choose(Some("https://hooks.example.com".into()), Some("127.0.0.1:9000".into())).unwrap();
        assert_eq!(l.addr, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(l.public_url.as_deref(), Some("https://hooks.example.com"));
        // A fixed port without a public URL.
        let l = Listen::choose(None, Some("127.0.0.1:9001".into())).unwrap();
        assert_eq!((l.addr.port(), l.public_url), (9001, None));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = Listen::choose(Some("hooks.example.com".into()), None).unwrap_err();
        assert!(e.contains("DRIFTLESS_PUBLIC_URL"), "{e}");
        let e = Listen::choose(Some("https://x.test".into()), Some("localhost".into())).unwrap_err();
        assert!(e.contains("DRIFTLESS_LISTEN"), "{e}");
        let e = Listen::choose(None, Some("0.0.0.0:8417".into())).unwrap_err();
        assert!(
            e.contains("not a loopback address") && e.contains("DRIFTLESS_ALLOW_NON_LOOPBACK"),
            "{e}"
        );
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
