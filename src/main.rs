//! The `driftless` command line. A thin edge over the engine library: parse arguments, call
//! one library function, print. anyhow lives only here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use driftless::contract::{self, Contract};
use driftless::ledger::Ledger;
use driftless::runtime::{self, DemoOptions, ServeOptions};
use driftless::sim::{self, FaultProfile, SimConfig, Simulators};

#[derive(Parser)]
#[command(
    name = "driftless",
    version,
    about = "Keep a CRM and a billing system in agreement, with every decision explained"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the engine and its HTTP API (webhooks + console API) on 127.0.0.1.
    Serve(ServeArgs),
    /// Print the ledger's counts (events by state, writes, queue, lag, pause).
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Pause outbound writes (all, or one destination). Works whether or not the server runs.
    Pause(PauseArgs),
    /// Resume outbound writes; the backlog drains in per-record order.
    Resume(PauseArgs),
    /// Connect a real account: test the key read-only, store it in the OS keychain, preview
    /// (and with --yes create) the CRM's custom properties, point the contract at the
    /// keychain entry and start the ledger in observe mode. The key is read from stdin or a
    /// variable, never from the command line.
    Connect(ConnectArgs),
    /// Observe mode: `writes off` holds every outbound write (ingest and plan only);
    /// `writes on` previews the held writes and, with --yes, sends them.
    Writes(WritesArgs),
    /// Validate a sync contract.
    Contract {
        #[command(subcommand)]
        cmd: ContractCmd,
    },
    /// Run the simulated CRM and billing systems standalone.
    Sim(SimArgs),
    /// Run engine + simulators under faults until quiescent, then check the invariants.
    Drill(DrillArgs),
    /// Dead letters: list, retry or discard (bulk actions print their blast radius first).
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        cmd: DeadLetterCmd,
    },
    /// The review queue: conflicted records side by side; resolve by choosing a side per field.
    Review {
        #[command(subcommand)]
        cmd: ReviewCmd,
    },
    /// A record's causal timeline (events and their fate, decisions, writes), by email, CRM id,
    /// billing id or record key.
    Timeline {
        query: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Requeue a dropped event (echo, superseded, a duplicate's original) for a fresh decision.
    Undrop {
        /// The inbox id shown in the timeline.
        event: i64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Plan records again from both systems' current state: a time range, a record, or the
    /// records behind dead letters. Prints the dry-run preview; add --run to queue them.
    Replay {
        /// RFC 3339 or unix ms.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        record: Option<String>,
        #[arg(long, value_delimiter = ',')]
        dead_letters: Vec<i64>,
        /// Queue the replay (default: dry run only).
        #[arg(long)]
        run: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Compare both systems (owned fields through the contract, rules across objects, missed
    /// events) and record the run; resumes a run a crash or cancel left behind. --dry-run
    /// previews the repair writes; --repair all|RECORD,… queues repairs through the pipeline.
    Reconcile {
        /// How far back the missed-event detector looks, e.g. `7d` (default: the contract's).
        #[arg(long)]
        window: Option<String>,
        #[arg(long)]
        dry_run: bool,
        /// `all`, or record keys / CRM ids separated by commas.
        #[arg(long, value_delimiter = ',')]
        repair: Vec<String>,
        /// Record keys / CRM ids to send to the review queue.
        #[arg(long, value_delimiter = ',')]
        review: Vec<String>,
        /// Stop (resumably) after this many pages.
        #[arg(long)]
        max_pages: Option<u64>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Backfill: initial load and catch-up of every record, resumable, idempotent.
    Backfill {
        #[command(subcommand)]
        cmd: BackfillCmd,
    },
    /// Migration mode: one system authoritative, phased backfills with validation reports.
    Migration {
        #[command(subcommand)]
        cmd: MigrationCmd,
    },
    /// Developer tools for measuring the console (not for production ledgers).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        cmd: DevCmd,
    },
}

#[derive(Subcommand)]
enum DevCmd {
    /// Add N synthetic open dead letters (records `customer:crm:seed-NNNNNN`, both
    /// destinations, four error classes, the last 30 days, every fifth with an invoice amount)
    /// to measure the Dead letters screen at scale: `driftless dev seed-dead-letters 100000 --ledger x.db`,
    /// then `driftless serve --demo --ledger x.db`.
    SeedDeadLetters {
        n: i64,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Add a synthetic history of N events over R records (`customer:crm:scale-NNNNNNN`, the
    /// last 30 days: events with their fates, duplicates, writes, audit, ~1% of writes dead
    /// letters, identity map, shadow, an hour of metrics) to measure the engine at scale:
    /// `driftless dev seed-ledger --events 1000000 --records 50000 --ledger x.db`.
    SeedLedger {
        #[arg(long, default_value_t = 1_000_000)]
        events: i64,
        #[arg(long, default_value_t = 50_000)]
        records: i64,
        #[command(flatten)]
        ledger: LedgerArg,
    },
}

#[derive(Subcommand)]
enum BackfillCmd {
    /// Page through every CRM record and billing customer into the pipeline (bulk lane), or
    /// resume the unfinished run at its cursor. The records are planned and written by the
    /// engine (a running `serve` on the same ledger, or this process until the run ends).
    Start {
        #[arg(long, value_enum, default_value_t = BackfillSystem::Both)]
        system: BackfillSystem,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// The latest run: state, pages, records, known total and estimated finish.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Cancel the running backfill before its next page (start again resumes it).
    Cancel {
        #[command(flatten)]
        ctx: OpsArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackfillSystem {
    Crm,
    Billing,
    Both,
}

impl BackfillSystem {
    fn as_str(self) -> &'static str {
        match self {
            BackfillSystem::Crm => "crm",
            BackfillSystem::Billing => "billing",
            BackfillSystem::Both => "both",
        }
    }
}

#[derive(Subcommand)]
enum MigrationCmd {
    /// Declare one system authoritative (for one contract object, or all): its values win
    /// and writes into it are frozen until `migration finish`. Audited.
    Start {
        #[arg(long, value_enum)]
        authority: BackfillSystemSide,
        #[arg(long)]
        object: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Run one phase: a backfill of the given system(s) recorded on the migration, then its
    /// validation report (counts, links, owned-field mismatches on a sample).
    Phase {
        #[arg(long, value_enum, default_value_t = BackfillSystem::Both)]
        system: BackfillSystem,
        /// Wait up to this long for the running engine to work off the queued records before
        /// validating.
        #[arg(long, default_value_t = 300)]
        settle_secs: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// The active migration and its phases' validation reports.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Leave migration mode: normal ownership again, frozen writes are planned again.
    Finish {
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        ctx: OpsArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackfillSystemSide {
    Crm,
    Billing,
}

#[derive(Subcommand)]
enum ReviewCmd {
    /// Open review items with each field's CRM value, billing value, owner and last synced value.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ctx: OpsArgs,
    },
    /// Resolve one item: `--take field=crm`, `--take field=billing` or `--set field=VALUE`.
    Resolve {
        id: i64,
        #[arg(long)]
        take: Vec<String>,
        #[arg(long)]
        set: Vec<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        ctx: OpsArgs,
    },
}

#[derive(Args)]
struct OpsArgs {
    #[command(flatten)]
    ledger: LedgerArg,
    /// The contract the engine runs with (its secrets are needed for replay previews).
    #[arg(long)]
    contract: Option<PathBuf>,
}

#[derive(Args)]
struct DeadLetterArgs {
    #[arg(long)]
    destination: Option<String>,
    #[arg(long)]
    error_class: Option<String>,
    #[arg(long)]
    object: Option<String>,
    /// Only dead letters older than this many seconds.
    #[arg(long)]
    older_than_secs: Option<i64>,
    #[arg(long)]
    text: Option<String>,
    #[arg(long, value_delimiter = ',')]
    ids: Vec<i64>,
    #[command(flatten)]
    ctx: OpsArgs,
}

impl DeadLetterArgs {
    fn filter(&self) -> driftless::api::DeadLetterFilter {
        driftless::api::DeadLetterFilter {
            destination: self.destination.clone(),
            error_class: self.error_class.clone(),
            object: self.object.clone(),
            min_age_ms: self.older_than_secs.map(|s| s * 1000),
            text: self.text.clone(),
            ids: self.ids.clone(),
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum DeadLetterCmd {
    /// List open dead letters matching the filters.
    List {
        #[command(flatten)]
        f: DeadLetterArgs,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Retry: plan the records behind them again. Shows the blast radius; --yes to do it.
    Retry {
        #[command(flatten)]
        f: DeadLetterArgs,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        yes: bool,
    },
    /// Discard with a reason. Shows the blast radius; --yes to do it.
    Discard {
        #[command(flatten)]
        f: DeadLetterArgs,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct LedgerArg {
    /// The ledger file (SQLite).
    #[arg(long, env = "DRIFTLESS_LEDGER", default_value = "driftless.db")]
    ledger: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum Destination {
    Crm,
    Billing,
}

#[derive(Args)]
struct PauseArgs {
    #[arg(long, value_enum)]
    destination: Option<Destination>,
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    ledger: LedgerArg,
}

#[derive(Args)]
struct ConnectArgs {
    #[arg(value_enum)]
    system: Destination,
    /// The contract to connect (created from the default contract when missing).
    #[arg(long, default_value = "driftless.toml")]
    contract: PathBuf,
    #[command(flatten)]
    ledger: LedgerArg,
    /// Read the key from standard input (e.g. piped from a password manager).
    #[arg(long, conflicts_with = "key_env")]
    key_stdin: bool,
    /// Read the key from this environment variable.
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
    /// Create the missing CRM custom properties without asking.
    #[arg(long)]
    yes: bool,
    /// One JSON object per step, one per line.
    #[arg(long)]
    json: bool,
    /// Keychain service to store the key under (entries are `SERVICE/crm`, `SERVICE/billing`);
    /// use another one per workspace when several accounts share this machine.
    #[arg(long, default_value = driftless::connect::KEYCHAIN_SERVICE)]
    keychain_service: String,
}

#[derive(Args)]
struct WritesArgs {
    #[arg(value_enum)]
    state: OnOff,
    #[arg(long)]
    reason: Option<String>,
    /// `on`: send the held writes (without it, only the preview is printed).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    ledger: LedgerArg,
}

#[derive(Subcommand)]
enum ContractCmd {
    /// Print the ownership matrix, or every problem (file:line:column) and exit 1.
    Check { file: PathBuf },
}

#[derive(Args)]
struct SimArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "default")]
    faults: String,
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    actors: OnOff,
    #[arg(long, default_value = "127.0.0.1:4010")]
    crm_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:4020")]
    billing_addr: SocketAddr,
    /// Where the CRM simulator sends webhooks (HubSpot configures this in app settings; the
    /// billing simulator takes `POST /v1/webhook_endpoints` like Stripe).
    #[arg(long)]
    crm_webhook_url: Option<String>,
    #[command(subcommand)]
    cmd: Option<SimCmd>,
}

#[derive(Subcommand)]
enum SimCmd {
    /// Forward an API (e.g. localstripe) with the simulators' seeded API faults in front of it.
    Proxy(ProxyArgs),
}

#[derive(Args)]
struct ProxyArgs {
    /// The API to forward to, e.g. http://127.0.0.1:8420.
    #[arg(long)]
    upstream: String,
    /// Loopback only.
    #[arg(long, default_value = "127.0.0.1:4030")]
    listen: SocketAddr,
    /// Fault profile (none | default | chaos | key=value list); API faults only.
    #[arg(long, default_value = "default")]
    faults: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct DrillArgs {
    #[arg(long)]
    contract: Option<PathBuf>,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    records: usize,
    #[arg(long)]
    edits: usize,
    #[arg(long, default_value = "chaos")]
    faults: String,
    #[arg(long)]
    json: bool,
    /// Keep the drill's ledger here (default: a temporary file, removed afterwards).
    #[arg(long)]
    ledger: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Seconds to wait for quiescence after the activity (with --crashes, kills still due
    /// count against it).
    #[arg(long, default_value_t = 600)]
    settle_secs: u64,
    /// Actor edit rate per second (0 = as fast as possible, which mostly measures coalescing).
    #[arg(long, default_value_t = 50.0)]
    edits_per_sec: f64,
    /// Billing cycles of finance activity (subscriptions, plan changes, cancellations, credit
    /// notes, failed payments) after the CRM actors; 0 to skip.
    #[arg(long, default_value_t = 2)]
    billing_cycles: usize,
    /// SIGKILL the engine N times at seeded random moments (1.5-8 s apart, closer for short
    /// runs) and restart it on the same ledger each time. With N > 0 the engine runs as a child
    /// `driftless serve` process (its output goes to LEDGER.engine.log); 0 runs it in-process.
    #[arg(long, default_value_t = 0, value_name = "N")]
    crashes: usize,
}

fn load_contract(path: Option<&Path>) -> Result<Contract> {
    match path {
        Some(p) => Ok(contract::load(p)?),
        None => Ok(contract::default_contract()),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,driftless=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn shutdown_signal() {
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

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Serve(a) => serve(a).await,
        Cmd::Status { json, ledger } => {
            let l = Ledger::open(&ledger.ledger).await?;
            let st = l.status().await?;
            if json {
                // The same object as `GET /api/status`.
                let status = driftless::api::Status {
                    contract_version: l.contract_version().await?.unwrap_or_else(|| "unknown".into()),
                    ledger: st,
                    budgets: Vec::new(),
                    reconciliation: l.recon_last_finished().await?.map(|r| r.summary()),
                };
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("events: {:?}", st.events);
                println!("writes: {:?}", st.writes);
                let c = &st.crm_write_calls;
                println!(
                    "crm writes {} in {} calls (mean {:.1}, max {} records per call)",
                    c.records, c.calls, c.mean_records, c.max_records
                );
                println!(
                    "queue depth {}, dead letters {}, review {}",
                    st.queue_depth, st.dead_letter_depth, st.review_depth
                );
                println!(
                    "lag ms p50 {} p95 {} max {}",
                    st.lag_ms.p50, st.lag_ms.p95, st.lag_ms.max
                );
                if let Some(m) = &st.migration {
                    println!(
                        "MIGRATION {} active: {} authoritative for {} ({}); writes into {} frozen",
                        m.id,
                        m.authority,
                        m.object.as_deref().unwrap_or("every object"),
                        m.reason,
                        m.authority
                    );
                }
                if let Some(r) = &st.backfill {
                    print_run(r);
                }
                if let Some(o) = &st.observe {
                    println!(
                        "OBSERVING (writes off) since {} by {}: {} held writes {:?}; `driftless writes on` sends them",
                        o.set_at_ms,
                        o.set_by,
                        st.held_writes.values().sum::<i64>(),
                        st.held_writes
                    );
                } else if st.paused.is_empty() {
                    println!("outbound writes: running");
                }
                for p in &st.paused {
                    println!(
                        "PAUSED {} by {} ({})",
                        p.scope,
                        p.set_by,
                        p.reason.as_deref().unwrap_or("no reason given")
                    );
                }
                for p in &st.pollers {
                    let state = p.message.as_deref().unwrap_or(p.state.as_str());
                    println!("poll {}: lag {} ms, {state}", p.name, p.lag_ms);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pause(a) => {
            let l = Ledger::open(&a.ledger.ledger).await?;
            let scope = scope_of(a.destination);
            // Every pause carries a reason (shown on every screen, audited).
            let reason = a
                .reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .unwrap_or("paused with `driftless pause` (no --reason given)");
            l.set_pause(scope, Some(reason), "cli", chrono::Utc::now().timestamp_millis())
                .await?;
            println!("outbound writes paused ({scope})");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Resume(a) => {
            let l = Ledger::open(&a.ledger.ledger).await?;
            let scope = scope_of(a.destination);
            let was = l
                .clear_pause(scope, a.reason.as_deref(), "cli", chrono::Utc::now().timestamp_millis())
                .await?;
            if was {
                println!("outbound writes resumed ({scope})");
            } else {
                println!("outbound writes were not paused ({scope})");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Connect(a) => connect_cmd(a).await,
        Cmd::Writes(a) => writes_cmd(a).await,
        Cmd::Contract {
            cmd: ContractCmd::Check { file },
        } => match contract::load(&file) {
            Ok(c) => {
                println!("{}", contract::ownership_matrix(&c));
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Sim(a) => sim_cmd(a).await,
        Cmd::Drill(a) => drill(a).await,
        Cmd::DeadLetters { cmd } => dead_letters(cmd).await,
        Cmd::Review { cmd } => review(cmd).await,
        Cmd::Backfill { cmd } => backfill(cmd).await,
        Cmd::Migration { cmd } => migration(cmd).await,
        Cmd::Dev {
            cmd: DevCmd::SeedDeadLetters { n, ledger },
        } => {
            let l = Ledger::open(&ledger.ledger).await?;
            let t0 = std::time::Instant::now();
            let now = chrono::Utc::now().timestamp_millis();
            let added = l.seed_dead_letters(n, now).await?;
            println!(
                "added {added} dead letters to {} in {} ms",
                ledger.ledger.display(),
                t0.elapsed().as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dev {
            cmd:
                DevCmd::SeedLedger {
                    events,
                    records,
                    ledger,
                },
        } => {
            let l = Ledger::open(&ledger.ledger).await?;
            let t0 = std::time::Instant::now();
            let now = chrono::Utc::now().timestamp_millis();
            let s = l.seed_history(events, records, now).await?;
            println!(
                "added {} events ({} pending, {} duplicates) over {} records, {} writes, {} dead letters, {} audit rows to {} in {} ms",
                s.events,
                s.pending,
                s.duplicates,
                s.records,
                s.writes,
                s.dead_letters,
                s.audit,
                ledger.ledger.display(),
                t0.elapsed().as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Timeline { query, json, ctx } => {
            let e = ops_engine(&ctx).await?;
            let t = e.record_timeline(&query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("record {} (crm {:?}, billing {:?})", t.record, t.crm_id, t.billing_id);
                for en in &t.entries {
                    let at = chrono::DateTime::from_timestamp_millis(en.at_ms)
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{at} {:<9} #{:<6} {:<14} {}{}{}",
                        en.kind,
                        en.id,
                        en.state.as_deref().or(en.rule.as_deref()).unwrap_or(""),
                        en.summary,
                        en.idempotency_key
                            .as_ref()
                            .map(|k| format!(" key={k}"))
                            .unwrap_or_default(),
                        en.contract_version
                            .as_ref()
                            .map(|v| format!(" contract={v}"))
                            .unwrap_or_default()
                    );
                }
            }
            e.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Undrop { event, reason, ctx } => {
            let e = ops_engine(&ctx).await?;
            let key = e.undrop_event(event, &reason, "cli").await?;
            println!("event {event} requeued; record {key} will be planned again by the running engine");
            e.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reconcile {
            window,
            dry_run,
            repair,
            review,
            max_pages,
            json,
            ctx,
        } => {
            let ask = driftless::api::ReconcileAsk {
                window_days: window
                    .as_deref()
                    .map(driftless::reconcile::parse_window)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                dry_run,
                repair,
                review,
                max_pages,
            };
            let req = driftless::reconcile::ReconcileRequest::from_ask(&ask, "cli");
            let e = ops_engine(&ctx).await?;
            let r = e.reconcile(&req, "cli").await;
            e.shutdown().await;
            let r = r?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "run {} ({}): {} compared, {} mismatched ({:.2}%, threshold {:.2}%), {} missed events, {} pages",
                    r.run.id,
                    if r.complete {
                        "finished"
                    } else {
                        "stopped; run again to resume"
                    },
                    r.compared,
                    r.mismatched_records,
                    100.0 * r.mismatch_rate,
                    100.0 * r.alert_threshold,
                    r.missed_events,
                    r.run.pages_read
                );
                for m in &r.mismatches {
                    println!(
                        "  {:<12} {:<34} {:<28} crm={} billing={} since {}",
                        m.m.kind,
                        m.m.entity_key,
                        m.m.name,
                        m.m.crm_value.as_deref().unwrap_or("-"),
                        m.m.billing_value.as_deref().unwrap_or("-"),
                        m.first_seen_ms
                    );
                }
                if let Some(p) = &r.repair {
                    println!(
                        "repair{}: {} records: {} create, {} update, {} no-op, {} conflict",
                        if p.queued { " queued" } else { " preview (dry run)" },
                        p.records,
                        p.creates,
                        p.updates,
                        p.noops,
                        p.conflicts
                    );
                }
            }
            Ok(if r.over_threshold {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Replay {
            from,
            to,
            record,
            dead_letters,
            run,
            json,
            ctx,
        } => {
            let e = ops_engine(&ctx).await?;
            let sel = driftless::api::ReplaySelector {
                from_ms: from.as_deref().map(parse_time).transpose()?,
                to_ms: to.as_deref().map(parse_time).transpose()?,
                record,
                dead_letter_ids: dead_letters,
            };
            let p = e.replay(&sel, !run, "cli").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                println!(
                    "{} records: {} create, {} update, {} no-op, {} conflict, {} unreadable now; \
                     {} idempotency keys already used",
                    p.records, p.creates, p.updates, p.noops, p.conflicts, p.unreadable, p.keys_already_used
                );
                for s in &p.samples {
                    println!(
                        "  {:<8} {} {} {} {}{}",
                        s.kind,
                        s.record,
                        s.destination.as_deref().unwrap_or("-"),
                        s.values.as_deref().unwrap_or(""),
                        s.idempotency_key
                            .as_deref()
                            .map(|k| format!("key {k}"))
                            .unwrap_or_default(),
                        s.key_used_by
                            .as_deref()
                            .map(|w| format!(" (already used by {w}: not written again)"))
                            .unwrap_or_default()
                    );
                }
                println!(
                    "{}",
                    if p.queued {
                        "queued: the running engine replays them"
                    } else {
                        "dry run: add --run to queue"
                    }
                );
            }
            e.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn review(cmd: ReviewCmd) -> Result<ExitCode> {
    match cmd {
        ReviewCmd::List { json, ctx } => {
            let e = ops_engine(&ctx).await?;
            let items = e.list_reviews().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{} records waiting for review", items.len());
                for it in &items {
                    println!("#{} {} — {}", it.id, it.record, it.reason);
                    println!(
                        "  {:<22} {:<28} {:<28} {:<26} last synced",
                        "field", "crm", "billing", "owner"
                    );
                    for f in &it.fields {
                        println!(
                            "  {:<22} {:<28} {:<28} {:<26} {}",
                            f.field,
                            f.crm.as_deref().unwrap_or("—"),
                            f.billing.as_deref().unwrap_or("—"),
                            f.owner,
                            f.last_synced.as_deref().unwrap_or("—")
                        );
                    }
                    for c in it.changes.iter().take(5) {
                        println!(
                            "  changed on {} by {}: {}",
                            c.side,
                            c.source.as_deref().unwrap_or("?"),
                            c.what
                        );
                    }
                }
            }
            e.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Resolve {
            id,
            take,
            set,
            reason,
            ctx,
        } => {
            let mut choices = Vec::new();
            for t in &take {
                let (field, side) = t.split_once('=').context("--take expects field=crm or field=billing")?;
                choices.push(driftless::api::FieldChoice {
                    field: field.into(),
                    take: side.into(),
                    value: None,
                });
            }
            for s in &set {
                let (field, value) = s.split_once('=').context("--set expects field=VALUE")?;
                choices.push(driftless::api::FieldChoice {
                    field: field.into(),
                    take: "value".into(),
                    value: Some(value.into()),
                });
            }
            let e = ops_engine(&ctx).await?;
            let key = e
                .resolve_review(id, &driftless::api::ReviewResolution { choices, reason }, "cli")
                .await?;
            println!("review {id} resolved; writes for {key} are queued for the running engine");
            e.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_time(s: &str) -> Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    Ok(chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("{s:?} is neither unix milliseconds nor an RFC 3339 time"))?
        .timestamp_millis())
}

async fn ops_engine(ctx: &OpsArgs) -> Result<driftless::engine::Engine> {
    let contract = load_contract(ctx.contract.as_deref())?;
    Ok(runtime::engine_for_cli(contract, ctx.ledger.ledger.clone()).await?)
}

/// Print a backfill run (or a migration phase, which is one) and exit 0 only when it is done.
fn finish_run(r: driftless::api::BackfillRun, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_run(&r);
    }
    Ok(if r.state == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_run(r: &driftless::api::BackfillRun) {
    println!(
        "backfill run {} ({}): {}; {} pages, {} records ({} new events, {} already held){}; streams done: {}",
        r.id,
        r.systems,
        r.state,
        r.pages,
        r.records,
        r.accepted,
        r.duplicates,
        r.total_known.map(|t| format!(" of {t} known")).unwrap_or_default(),
        if r.streams_done.is_empty() {
            "none".to_string()
        } else {
            r.streams_done.join(", ")
        }
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    if let Some(v) = &r.validation {
        println!(
            "  validation ({}): crm {} billing {} linked {} unlinked crm {} unlinked billing {}; {} of {} sampled pairs' fields differ",
            v.object, v.crm_records, v.billing_records, v.linked, v.unlinked_crm, v.unlinked_billing,
            v.mismatched_fields, v.sampled
        );
        for m in &v.mismatches {
            println!(
                "    {} / {} {}: crm {:?} billing {:?} (owner {})",
                m.crm_id, m.billing_id, m.field, m.crm, m.billing, m.owner
            );
        }
    }
}

async fn backfill(cmd: BackfillCmd) -> Result<ExitCode> {
    match cmd {
        BackfillCmd::Start { system, json, ctx } => {
            let e = ops_engine(&ctx).await?;
            let r = e
                .backfill(
                    system.as_str(),
                    "cli",
                    driftless::engine::backfill::BackfillOptions::default(),
                )
                .await;
            e.shutdown().await;
            finish_run(r?, json)
        }
        BackfillCmd::Status { json, ctx } => {
            let e = ops_engine(&ctx).await?;
            let p = e.backfill_progress().await?;
            e.shutdown().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                match &p.run {
                    Some(r) => print_run(r),
                    None => println!("no backfill has run on this ledger"),
                }
                if let Some(left) = p.pages_left {
                    println!("  {left} pages left to list");
                }
                if let Some(n) = p.records_to_sync.filter(|n| *n > 0) {
                    println!("  {n} records to sync");
                }
                if let Some(eta) = p.eta_ms {
                    println!(
                        "  estimated finish {} ({})",
                        fmt_ms(eta),
                        p.eta_covers.as_deref().unwrap_or("listing and syncing")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BackfillCmd::Cancel { ctx } => {
            let e = ops_engine(&ctx).await?;
            let r = e.backfill_cancel("cli").await;
            e.shutdown().await;
            match r? {
                Some(id) => println!("backfill run {id} cancelled; `driftless backfill start` resumes it"),
                None => println!("no backfill is running"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn migration(cmd: MigrationCmd) -> Result<ExitCode> {
    match cmd {
        MigrationCmd::Start {
            authority,
            object,
            reason,
            ctx,
        } => {
            let e = ops_engine(&ctx).await?;
            let side = match authority {
                BackfillSystemSide::Crm => "crm",
                BackfillSystemSide::Billing => "billing",
            };
            let m = e.migration_start(side, object.as_deref(), &reason, "cli").await;
            e.shutdown().await;
            let m = m?;
            println!(
                "migration {} active: {} authoritative for {}; writes into {} frozen until `driftless migration finish`",
                m.id,
                m.authority,
                m.object.as_deref().unwrap_or("every object"),
                m.authority
            );
            Ok(ExitCode::SUCCESS)
        }
        MigrationCmd::Phase {
            system,
            settle_secs,
            json,
            ctx,
        } => {
            let e = ops_engine(&ctx).await?;
            let r = e
                .migration_phase(system.as_str(), "cli", Duration::from_secs(settle_secs))
                .await;
            e.shutdown().await;
            finish_run(r?, json)
        }
        MigrationCmd::Status { json, ctx } => {
            let e = ops_engine(&ctx).await?;
            let m = e.migration_status().await;
            e.shutdown().await;
            let m = m?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                match &m {
                    None => println!("no migration is active"),
                    Some(m) => {
                        println!(
                            "migration {} since {} by {}: {} authoritative for {} ({}); {} phase(s)",
                            m.id,
                            fmt_ms(m.started_at_ms),
                            m.started_by,
                            m.authority,
                            m.object.as_deref().unwrap_or("every object"),
                            m.reason,
                            m.phases.len()
                        );
                        for r in &m.phases {
                            print_run(r);
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrationCmd::Finish { reason, ctx } => {
            let e = ops_engine(&ctx).await?;
            let m = e.migration_finish("cli", reason.as_deref()).await;
            e.shutdown().await;
            let m = m?;
            println!("migration {} finished: normal ownership restored", m.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

async fn dead_letters(cmd: DeadLetterCmd) -> Result<ExitCode> {
    match cmd {
        DeadLetterCmd::List { f, json, limit } => {
            let e = ops_engine(&f.ctx).await?;
            let mut filter = f.filter();
            filter.limit = Some(limit);
            let list = e.list_dead_letters(&filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{} open dead letters match", list.total);
                for d in &list.items {
                    println!(
                        "#{:<6} {:<8} {:<12} {:<28} {} ({} attempts)",
                        d.id, d.destination, d.error_class, d.record, d.error, d.attempts
                    );
                }
            }
            e.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterCmd::Retry { f, reason, yes } => bulk(f, reason, yes, true).await,
        DeadLetterCmd::Discard { f, reason, yes } => bulk(f, reason, yes, false).await,
    }
}

async fn bulk(f: DeadLetterArgs, reason: String, yes: bool, retry: bool) -> Result<ExitCode> {
    let e = ops_engine(&f.ctx).await?;
    let filter = f.filter();
    let reason = if reason.is_empty() && retry {
        "retry from CLI".to_string()
    } else {
        reason
    };
    let r = if retry {
        e.retry_dead_letters(&filter, !yes, &reason, "cli").await?
    } else {
        e.discard_dead_letters(&filter, !yes, &reason, "cli").await?
    };
    println!(
        "{} {} dead letters across {} records (amount involved {} cents; {:?})",
        if r.applied {
            if retry {
                "retried"
            } else {
                "discarded"
            }
        } else {
            "would touch"
        },
        r.radius.dead_letters,
        r.radius.records,
        r.radius.amount_cents,
        r.radius.by_destination
    );
    if !r.applied {
        println!("preview only: add --yes to do it");
    }
    e.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The key for `connect`: from a variable, from stdin, or typed at a prompt without echo.
fn read_key(a: &ConnectArgs) -> Result<driftless::secrets::Secret> {
    use std::io::{IsTerminal, Read};
    let key = if let Some(var) = &a.key_env {
        std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?
    } else if a.key_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the key from stdin")?;
        s
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("API key (not echoed): ").context("reading the key")?
    } else {
        anyhow::bail!(
            "pass the key on stdin with --key-stdin or name a variable with --key-env (never on the command line)"
        );
    };
    Ok(driftless::secrets::Secret::new(key.trim().to_string()))
}

async fn connect_cmd(a: ConnectArgs) -> Result<ExitCode> {
    use driftless::connect::{self, PropertyPreview, StepReport};
    use std::io::{BufRead, IsTerminal, Write};
    let key = read_key(&a)?;
    let system = match a.system {
        Destination::Crm => driftless::contract::Side::Crm,
        Destination::Billing => driftless::contract::Side::Billing,
    };
    let json = a.json;
    let (yes, can_ask) = (a.yes, !a.json && !a.key_stdin && std::io::stdin().is_terminal());
    let mut confirm = |p: &[PropertyPreview]| -> bool {
        if yes {
            return true;
        }
        if !can_ask {
            return false;
        }
        print!(
            "create {} custom properties? [y/N] ",
            p.iter().filter(|p| !p.exists).count()
        );
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim().eq_ignore_ascii_case("y")
    };
    let mut emit = |r: StepReport| {
        if json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            return;
        }
        println!("{} {:<18} {}", if r.ok { "ok" } else { "--" }, r.step, r.detail);
        if let Some(props) = r.data.get("properties").and_then(|v| v.as_array()) {
            for p in props {
                println!(
                    "     {:<8} {:<32} {:<34} {}/{} {}",
                    p["object"].as_str().unwrap_or(""),
                    p["name"].as_str().unwrap_or(""),
                    p["label"].as_str().unwrap_or(""),
                    p["type"].as_str().unwrap_or(""),
                    p["field_type"].as_str().unwrap_or(""),
                    if p["exists"] == true {
                        "exists"
                    } else {
                        "would be created"
                    }
                );
            }
        }
    };
    let opts = connect::ConnectOptions {
        system,
        contract: a.contract.clone(),
        ledger: a.ledger.ledger.clone(),
        keychain_service: a.keychain_service.clone(),
    };
    match connect::run(&opts, &key, &mut confirm, &mut emit).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "step": "error", "ok": false, "detail": e.to_string() })
                );
            } else {
                eprintln!("error: {e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

async fn writes_cmd(a: WritesArgs) -> Result<ExitCode> {
    let l = Ledger::open(&a.ledger.ledger).await?;
    let now = chrono::Utc::now().timestamp_millis();
    if a.state == OnOff::Off {
        l.set_observe(a.reason.as_deref(), "cli", now).await?;
        println!("writes off: observe mode (events are ingested and planned, nothing is written)");
        return Ok(ExitCode::SUCCESS);
    }
    let (observing, held, sent) = driftless::connect::writes_on(&l, a.yes, a.reason.as_deref(), "cli", now).await?;
    if !observing {
        println!("writes are already on (not in observe mode)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} held writes would go out: {}",
        held.values().sum::<i64>(),
        held.iter()
            .map(|(d, n)| format!("{d} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !a.yes {
        println!("preview only: add --yes to turn writes on");
        return Ok(ExitCode::SUCCESS);
    }
    if sent {
        println!("writes on: the running engine sends the held writes");
    } else {
        println!("writes are already on (not in observe mode)");
    }
    Ok(ExitCode::SUCCESS)
}

fn scope_of(d: Option<Destination>) -> &'static str {
    match d {
        None => "global",
        Some(Destination::Crm) => "crm",
        Some(Destination::Billing) => "billing",
    }
}

async fn serve(a: ServeArgs) -> Result<ExitCode> {
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
    let mut demo_dir = None;
    let running = if a.demo {
        let ledger = match a.ledger {
            Some(l) => l,
            None => {
                let dir = tempfile_dir()?;
                let p = dir.join("driftless-demo.db");
                demo_dir = Some(dir);
                p
            }
        };
        let faults = FaultProfile::parse(&a.faults)?;
        let r = runtime::start_demo(DemoOptions {
            seed: a.seed,
            faults,
            contract,
            serve: ServeOptions {
                ledger,
                addr: a.addr,
                workers: a.workers,
                public_url: a.public_url,
                token,
                allow_non_loopback: a.allow_non_loopback,
            },
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
        let ledger = a.ledger.unwrap_or_else(|| PathBuf::from("driftless.db"));
        runtime::serve_contract(
            contract,
            ServeOptions {
                ledger,
                addr: a.addr,
                workers: a.workers,
                public_url: a.public_url,
                token,
                allow_non_loopback: a.allow_non_loopback,
            },
        )
        .await?
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

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "driftless-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn sim_cmd(a: SimArgs) -> Result<ExitCode> {
    if let Some(SimCmd::Proxy(p)) = a.cmd {
        return proxy_cmd(p).await;
    }
    let sims = Simulators::start(SimConfig {
        seed: a.seed,
        faults: FaultProfile::parse(&a.faults)?,
        crm_addr: a.crm_addr,
        billing_addr: a.billing_addr,
        ..SimConfig::default()
    })
    .await?;
    if let Some(u) = &a.crm_webhook_url {
        sims.crm.set_webhook_target(u);
    }
    println!("simulated CRM (HubSpot API):   {}", sims.crm.base_url());
    println!("  token:                       {}", sims.crm.token());
    println!("  webhook signing secret:      {}", sims.crm.webhook_secret());
    println!(
        "  webhook target:              {} (POST {}/_sim/webhook_target to change)",
        a.crm_webhook_url.as_deref().unwrap_or("none"),
        sims.crm.base_url()
    );
    println!("simulated billing (Stripe API): {}", sims.billing.base_url());
    println!("  api key:                     {}", sims.billing.api_key());
    println!("  webhooks:                    POST /v1/webhook_endpoints url=… (answer carries the whsec_ secret)");
    println!(
        "faults: {}; actors: {}",
        a.faults,
        if a.actors == OnOff::On { "on" } else { "off" }
    );
    if a.actors == OnOff::On {
        sim::spawn_background_actors(&sims, a.seed);
    }
    shutdown_signal().await;
    sims.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn proxy_cmd(a: ProxyArgs) -> Result<ExitCode> {
    let proxy = sim::FaultProxy::start(sim::ProxyConfig {
        upstream: a.upstream,
        listen: a.listen,
        seed: a.seed,
        faults: FaultProfile::parse(&a.faults)?,
    })
    .await?;
    println!("fault proxy: {} -> {}", proxy.base_url(), proxy.upstream());
    println!(
        "  faults: {} (POST {}/_proxy/faults to change)",
        a.faults,
        proxy.base_url()
    );
    println!("  request log: GET {}/_proxy/requests", proxy.base_url());
    shutdown_signal().await;
    proxy.shutdown().await;
    let log = proxy.request_log();
    let faulted = log.iter().filter(|r| r.fault.is_some()).count();
    println!("{} requests, {faulted} faulted", log.len());
    Ok(ExitCode::SUCCESS)
}

async fn drill(a: DrillArgs) -> Result<ExitCode> {
    let contract = load_contract(a.contract.as_deref())?;
    let (ledger, tmp) = match a.ledger {
        Some(l) => (l, None),
        None => {
            let dir = tempfile_dir()?;
            (dir.join("drill.db"), Some(dir))
        }
    };
    let report = driftless::drill::run(driftless::drill::DrillOptions {
        seed: a.seed,
        records: a.records,
        edits: a.edits,
        faults: FaultProfile::parse(&a.faults)?,
        contract,
        ledger,
        workers: a.workers,
        settle_timeout: Duration::from_secs(a.settle_secs),
        edits_per_sec: a.edits_per_sec,
        billing_cycles: a.billing_cycles,
        crashes: a.crashes,
        engine_exe: Some(std::env::current_exe().context("locate the driftless binary")?),
    })
    .await?;
    if let Some(dir) = tmp {
        let _ = std::fs::remove_dir_all(dir);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &report.checks {
            println!("{} {:<24} {}", if c.ok { "PASS" } else { "FAIL" }, c.name, c.detail);
        }
        println!(
            "events {:?}; writes billing {} crm {}; {} ms",
            report.events, report.writes["billing"].applied, report.writes["crm"].applied, report.duration_ms
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
