//! The `driftless` command line. A thin edge over the engine library: parse arguments, call
//! one library function, print. The commands live in `cli/`, one module per group; anyhow
//! lives only in the binary.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

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

/// Every command, by group; each group's module holds its arguments and its `run`.
#[derive(Subcommand)]
enum Cmd {
    /// Run the engine and its HTTP API (webhooks + console API) on 127.0.0.1.
    Serve(cli::serve::ServeArgs),
    /// status, pause, resume: on the ledger file, whether or not the server runs.
    #[command(flatten)]
    Status(cli::status::Cmd),
    /// connect, writes: going live.
    #[command(flatten)]
    Connect(cli::connect::Cmd),
    /// contract check, sim, drill, dev.
    #[command(flatten)]
    Tools(cli::tools::Cmd),
    /// dead-letters list | retry | discard.
    #[command(flatten)]
    DeadLetters(cli::dead_letters::Cmd),
    /// review, timeline, undrop, replay.
    #[command(flatten)]
    Records(cli::records::Cmd),
    /// reconcile, backfill, migration.
    #[command(flatten)]
    Runs(cli::runs::Cmd),
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing();
    let cli = Cli::parse();
    match run(cli.cmd).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Serve(a) => cli::serve::run(a).await,
        Cmd::Status(c) => cli::status::run(c).await,
        Cmd::Connect(c) => cli::connect::run(c).await,
        Cmd::Tools(c) => cli::tools::run(c).await,
        Cmd::DeadLetters(c) => cli::dead_letters::run(c).await,
        Cmd::Records(c) => cli::records::run(c).await,
        Cmd::Runs(c) => cli::runs::run(c).await,
    }
}
