//! The command line's commands, one module per group, each with its clap arguments and its
//! `run`; here the pieces they share. Part of the binary, not the library: anyhow lives here.
//!
//! Every command that needs an engine goes through [`with_engine`], and every command that
//! reads or writes the ledger file alone through [`with_ledger`]: both close what they opened
//! on every path, an error included (the engine flushes its metrics and closes the ledger).

pub mod connect;
pub mod dead_letters;
pub mod records;
pub mod runs;
pub mod serve;
pub mod status;
pub mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use driftless::contract::{self, Contract};
use driftless::engine::Engine;
use driftless::ledger::Ledger;
use driftless::runtime;

/// Who the CLI's actions are recorded as (audit log, pause flags).
pub const BY: &str = "cli";

#[derive(Args)]
pub struct LedgerArg {
    /// The ledger file (SQLite).
    #[arg(long, env = "DRIFTLESS_LEDGER", default_value = "driftless.db")]
    pub ledger: PathBuf,
}

#[derive(Args)]
pub struct OpsArgs {
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// The contract the engine runs with (its secrets are needed for replay previews).
    #[arg(long)]
    pub contract: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Destination {
    Crm,
    Billing,
}

impl Destination {
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Crm => "crm",
            Destination::Billing => "billing",
        }
    }
}

/// Open the CLI's engine (no workers: a running server picks up what the command queues),
/// run `f` with it, and shut it down whatever `f` returned.
pub async fn with_engine<T>(ctx: &OpsArgs, f: impl AsyncFnOnce(&Engine) -> Result<T>) -> Result<T> {
    let contract = load_contract(ctx.contract.as_deref())?;
    let engine = runtime::engine_for_cli(contract, ctx.ledger.ledger.clone()).await?;
    let r = f(&engine).await;
    engine.shutdown().await;
    r
}

/// Open the ledger file (no engine, no contract), run `f` with it, and close it whatever `f`
/// returned.
pub async fn with_ledger<T>(path: &Path, f: impl AsyncFnOnce(&Ledger) -> Result<T>) -> Result<T> {
    let ledger = Ledger::open(path).await?;
    let r = f(&ledger).await;
    ledger.close().await;
    r
}

pub fn load_contract(path: Option<&Path>) -> Result<Contract> {
    match path {
        Some(p) => Ok(contract::load(p)?),
        None => Ok(contract::default_contract()),
    }
}

/// RFC 3339 or unix milliseconds.
pub fn parse_time(s: &str) -> Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    Ok(chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("{s:?} is neither unix milliseconds nor an RFC 3339 time"))?
        .timestamp_millis())
}

pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An optional value for people: the value, `none` when absent, `(empty)` when blank.
pub fn or_none(v: Option<&str>) -> &str {
    match v {
        None => "none",
        Some("") => "(empty)",
        Some(v) => v,
    }
}

/// Counts by key for people, e.g. `crm 3, billing 1`; `none` when there are none.
pub fn counts(m: &BTreeMap<String, i64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

/// Events by state for people, the pipeline's order first:
/// `12 pending, 340 applied, 3 duplicates, 1 echo, …`.
pub fn event_counts(m: &BTreeMap<String, i64>) -> String {
    // (state, one, more)
    const ORDER: [(&str, &str, &str); 7] = [
        ("pending", "pending", "pending"),
        ("applied", "applied", "applied"),
        ("duplicate", "duplicate", "duplicates"),
        ("echo", "echo", "echoes"),
        ("superseded", "superseded", "superseded"),
        ("conflicted", "conflicted", "conflicted"),
        ("dead_lettered", "dead-lettered", "dead-lettered"),
    ];
    let known = ORDER.iter().map(|&(state, one, more)| {
        let n = m.get(state).copied().unwrap_or(0);
        format!("{n} {}", if n == 1 { one } else { more })
    });
    let other = m
        .iter()
        .filter(|(k, _)| !ORDER.iter().any(|(state, _, _)| state == k))
        .map(|(k, n)| format!("{n} {}", k.replace('_', " ")));
    known.chain(other).collect::<Vec<_>>().join(", ")
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,driftless=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A fresh directory for a demo's or a drill's ledger (the caller removes it).
pub fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("driftless-demo-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
