//! Tools around the engine: `contract check`, the simulators (`sim`, `sim proxy`), the `drill`,
//! and the hidden developer commands that seed a ledger for measurements.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use driftless::contract;
use driftless::sim::{self, FaultProfile, SimConfig, Simulators};

use super::serve::shutdown_signal;
use super::{event_counts, load_contract, now_ms, tempfile_dir, with_ledger, LedgerArg, OnOff};

#[derive(Subcommand)]
pub enum Cmd {
    /// Validate a sync contract.
    Contract {
        #[command(subcommand)]
        cmd: ContractCmd,
    },
    /// Run the simulated CRM and billing systems standalone.
    Sim(SimArgs),
    /// Run engine + simulators under faults until quiescent, then check the invariants.
    Drill(DrillArgs),
    /// Developer tools for measuring the console (not for production ledgers).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        cmd: DevCmd,
    },
}

#[derive(Subcommand)]
pub enum ContractCmd {
    /// Print the ownership matrix, or every problem (file:line:column) and exit 1.
    Check { file: PathBuf },
}

#[derive(Args)]
pub struct SimArgs {
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
pub enum SimCmd {
    /// Forward an API (e.g. localstripe) with the simulators' seeded API faults in front of it.
    Proxy(ProxyArgs),
}

#[derive(Args)]
pub struct ProxyArgs {
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
pub struct DrillArgs {
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

#[derive(Subcommand)]
pub enum DevCmd {
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

pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
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
        Cmd::Sim(a) => match a.cmd {
            Some(SimCmd::Proxy(p)) => proxy(p).await,
            None => sim(a).await,
        },
        Cmd::Drill(a) => drill(a).await,
        Cmd::Dev { cmd } => dev(cmd).await,
    }
}

async fn sim(a: SimArgs) -> Result<ExitCode> {
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

async fn proxy(a: ProxyArgs) -> Result<ExitCode> {
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
        let applied = |side: &str| report.writes.get(side).map_or(0, |w| w.applied);
        println!(
            "events: {}; writes applied: billing {}, crm {}; {} ms",
            event_counts(&report.events),
            applied("billing"),
            applied("crm"),
            report.duration_ms
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The seeding commands time the seeding itself (not opening and closing the ledger).
async fn dev(cmd: DevCmd) -> Result<ExitCode> {
    match cmd {
        DevCmd::SeedDeadLetters { n, ledger } => {
            let (added, took) = with_ledger(&ledger.ledger, async |l| {
                let t0 = Instant::now();
                Ok((l.seed_dead_letters(n, now_ms()).await?, t0.elapsed()))
            })
            .await?;
            println!(
                "added {added} dead letters to {} in {} ms",
                ledger.ledger.display(),
                took.as_millis()
            );
        }
        DevCmd::SeedLedger {
            events,
            records,
            ledger,
        } => {
            let (s, took) = with_ledger(&ledger.ledger, async |l| {
                let t0 = Instant::now();
                Ok((l.seed_history(events, records, now_ms()).await?, t0.elapsed()))
            })
            .await?;
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
                took.as_millis()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
