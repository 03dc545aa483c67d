//! `driftless serve`: the engine and its HTTP API (webhooks, console, console API), until
//! Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use driftless::runtime::{self, DemoOptions, ServeOptions};
use driftless::sim::{self, FaultProfile};

use super::{load_contract, tempfile_dir, OnOff};

#[derive(Args)]
pub struct ServeArgs {
    /// Run against the embedded simulators (with faults and actors) instead of real systems.
    #[arg(long)]
    demo: bool,
    /// The sync contract (default: the embedded default contract).
    #[arg(long)]
    contract: Option<PathBuf>,
    /// The ledger file. With --demo and no --ledger, a fresh ledger in a temporary directory.
    #[arg(long, env = "DRIFTLESS_LEDGER")]
    ledger: Option<PathBuf>,
    /// Where the console, its API and the webhook receivers listen (loopback unless
    /// --allow-non-loopback).
    #[arg(long, default_value = "127.0.0.1:8417")]
    addr: SocketAddr,
    /// Allow --addr to be an address other machines reach. Requires --public-url (the only
    /// host name, besides loopback, the console answers for) and a token from --token-file or
    /// DRIFTLESS_TOKEN.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Demo: simulator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Demo: fault profile (none | default | chaos | key=value list).
    #[arg(long, default_value = "default")]
    faults: String,
    /// Demo: run the seeded actors that edit records on both sides.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    actors: OnOff,
    /// Workers syncing records (one record each at a time; their decisions share group
    /// commits, so more workers make fuller commits).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Public base URL webhooks are sent to (when behind a tunnel or proxy).
    #[arg(long)]
    public_url: Option<String>,
    /// Fixed API token, at least 32 characters (e.g. for a Prometheus scraper); default: a fresh
    /// random token per launch. Prefer --token-file or DRIFTLESS_TOKEN: a command line shows
    /// in `ps`.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the fixed API token from this file (its first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// Where a fixed API token came from.
#[derive(PartialEq)]
enum TokenFrom {
    CommandLine,
    Elsewhere,
}

impl ServeArgs {
    /// The fixed token, if any: `--token`, `--token-file`, or `DRIFTLESS_TOKEN` (set but empty
    /// is a token too, and refused as too short: an empty token once turned authentication off).
    fn token(&self) -> Result<Option<(String, TokenFrom)>> {
        if let Some(t) = &self.token {
            return Ok(Some((t.clone(), TokenFrom::CommandLine)));
        }
        if let Some(f) = &self.token_file {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("cannot read the token file {}", f.display()))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            return Ok(Some((line, TokenFrom::Elsewhere)));
        }
        Ok(std::env::var("DRIFTLESS_TOKEN").ok().map(|t| (t, TokenFrom::Elsewhere)))
    }
}

pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let token = a.token()?;
    if a.allow_non_loopback && token.as_ref().is_some_and(|(_, from)| *from == TokenFrom::CommandLine) {
        anyhow::bail!(
            "with --allow-non-loopback the API token must come from --token-file or DRIFTLESS_TOKEN, \
             not --token (a command line shows in `ps` to every user of this machine)"
        );
    }
    let token = token.map(|(t, _)| t);
    let fixed_token = token.is_some();
    let contract = load_contract(a.contract.as_deref())?;
    for w in &contract.warnings {
        tracing::warn!("contract: {w}");
    }
    // The demo starts on a fresh ledger in a temporary folder unless one is named.
    let mut demo_dir = None;
    let ledger = match a.ledger {
        Some(l) => l,
        None if a.demo => {
            let dir = tempfile_dir()?;
            let p = dir.join("driftless-demo.db");
            demo_dir = Some(dir);
            p
        }
        None => PathBuf::from("driftless.db"),
    };
    let serve = ServeOptions {
        ledger,
        addr: a.addr,
        workers: a.workers,
        public_url: a.public_url,
        token,
        allow_non_loopback: a.allow_non_loopback,
    };
    let running = if a.demo {
        let faults = FaultProfile::parse(&a.faults)?;
        let r = runtime::start_demo(DemoOptions {
            seed: a.seed,
            faults,
            contract,
            serve,
            request_timeout_ms: 2_000,
        })
        .await?;
        if a.actors == OnOff::On {
            if let Some(s) = &r.sims {
                sim::spawn_background_actors(s, a.seed);
            }
        }
        r
    } else {
        runtime::serve_contract(contract, serve).await?
    };
    println!(
        "driftless is running{}",
        if a.demo {
            " on the embedded demo (simulated CRM and billing, faults on)"
        } else {
            ""
        }
    );
    if fixed_token {
        // A token the operator chose is not printed (it may be shared with a scraper).
        println!("  console/API: http://{}/?token=<your token>", running.addr);
        println!(
            "  status:      curl -s -H 'Authorization: Bearer <your token>' http://{}/api/status",
            running.addr
        );
    } else {
        println!("  console/API: {}", running.url());
        println!(
            "  status:      curl -s 'http://{}/api/status?token={}'",
            running.addr, running.token
        );
    }
    println!("  ledger:      {}", running.engine.ledger().path().display());
    println!(
        "  CLI status:  driftless status --json --ledger {}",
        running.engine.ledger().path().display()
    );
    if let Some(s) = &running.sims {
        println!("  simulated CRM:     {}", s.crm.base_url());
        println!("  simulated billing: {}", s.billing.base_url());
    }
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    eprintln!("stopping…");
    running.shutdown().await;
    if let Some(dir) = demo_dir {
        // The demo's fresh ledger lives only as long as the demo.
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM on Unix.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
