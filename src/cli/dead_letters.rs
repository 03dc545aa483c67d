//! `dead-letters list | retry | discard`: the bulk actions print their blast radius first and
//! act only with --yes; both need a reason (it goes into the audit log).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use driftless::api::DeadLetterFilter;

use super::{counts, with_engine, OpsArgs, BY};

#[derive(Subcommand)]
pub enum Cmd {
    /// Dead letters: list, retry or discard (bulk actions print their blast radius first).
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        cmd: DeadLetterCmd,
    },
}

#[derive(Subcommand)]
pub enum DeadLetterCmd {
    /// List open dead letters matching the filters.
    List {
        #[command(flatten)]
        f: FilterArgs,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Retry with a reason: plan the records behind them again. Shows the blast radius; --yes
    /// to do it.
    Retry(BulkArgs),
    /// Discard with a reason. Shows the blast radius; --yes to do it.
    Discard(BulkArgs),
}

/// A bulk action on the filtered dead letters.
#[derive(Args)]
pub struct BulkArgs {
    #[command(flatten)]
    f: FilterArgs,
    #[arg(long)]
    reason: String,
    #[arg(long)]
    yes: bool,
}

#[derive(Args)]
pub struct FilterArgs {
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

impl FilterArgs {
    fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
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

pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    let Cmd::DeadLetters { cmd } = cmd;
    match cmd {
        DeadLetterCmd::List { f, json, limit } => {
            let mut filter = f.filter();
            filter.limit = Some(limit);
            let list = with_engine(&f.ctx, async |e| Ok(e.list_dead_letters(&filter).await?)).await?;
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
        }
        DeadLetterCmd::Retry(b) => bulk(b, true).await?,
        DeadLetterCmd::Discard(b) => bulk(b, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn bulk(BulkArgs { f, reason, yes }: BulkArgs, retry: bool) -> Result<()> {
    let reason = reason.as_str();
    let filter = f.filter();
    let r = with_engine(&f.ctx, async |e| {
        Ok(if retry {
            e.retry_dead_letters(&filter, !yes, reason, BY).await?
        } else {
            e.discard_dead_letters(&filter, !yes, reason, BY).await?
        })
    })
    .await?;
    let did = match (r.applied, retry) {
        (false, _) => "would touch",
        (true, true) => "retried",
        (true, false) => "discarded",
    };
    println!(
        "{did} {} dead letters across {} records (amount involved {} cents; by destination: {})",
        r.radius.dead_letters,
        r.radius.records,
        r.radius.amount_cents,
        counts(&r.radius.by_destination)
    );
    if !r.applied {
        println!("preview only: add --yes to do it");
    }
    Ok(())
}
