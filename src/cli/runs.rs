//! Runs over every record: `reconcile`, `backfill`, `migration` (whose phases are backfills).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};

use driftless::api::{BackfillRun, ReconcileAsk};
use driftless::engine::backfill::BackfillOptions;
use driftless::reconcile::{self, ReconcileRequest};

use super::{fmt_ms, or_none, with_engine, OpsArgs, BY};

#[derive(Subcommand)]
pub enum Cmd {
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
}

#[derive(Subcommand)]
pub enum BackfillCmd {
    /// Page through every CRM record and billing customer into the pipeline (bulk lane), or
    /// resume the unfinished run at its cursor. The records are planned and written by the
    /// engine (a running `serve` on the same ledger, or this process until the run ends).
    Start {
        #[arg(long, value_enum, default_value_t = System::Both)]
        system: System,
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

#[derive(Subcommand)]
pub enum MigrationCmd {
    /// Declare one system authoritative (for one contract object, or all): its values win
    /// and writes into it are frozen until `migration finish`. Audited.
    Start {
        #[arg(long, value_enum)]
        authority: super::Destination,
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
        #[arg(long, value_enum, default_value_t = System::Both)]
        system: System,
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

/// Which systems a backfill (or a migration phase) pages through.
#[derive(Clone, Copy, ValueEnum)]
pub enum System {
    Crm,
    Billing,
    Both,
}

impl System {
    fn as_str(self) -> &'static str {
        match self {
            System::Crm => "crm",
            System::Billing => "billing",
            System::Both => "both",
        }
    }
}

pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Reconcile {
            window,
            dry_run,
            repair,
            review,
            max_pages,
            json,
            ctx,
        } => {
            let ask = ReconcileAsk {
                window_days: window
                    .as_deref()
                    .map(reconcile::parse_window)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                dry_run,
                repair,
                review,
                max_pages,
            };
            let req = ReconcileRequest::from_ask(&ask, BY);
            let r = with_engine(&ctx, async |e| Ok(e.reconcile(&req, BY).await?)).await?;
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
        Cmd::Backfill { cmd } => backfill(cmd).await,
        Cmd::Migration { cmd } => migration(cmd).await,
    }
}

async fn backfill(cmd: BackfillCmd) -> Result<ExitCode> {
    match cmd {
        BackfillCmd::Start { system, json, ctx } => {
            let r = with_engine(&ctx, async |e| {
                Ok(e.backfill(system.as_str(), BY, BackfillOptions::default()).await?)
            })
            .await?;
            finish_run(r, json)
        }
        BackfillCmd::Status { json, ctx } => {
            let p = with_engine(&ctx, async |e| Ok(e.backfill_progress().await?)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(ExitCode::SUCCESS);
            }
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
            Ok(ExitCode::SUCCESS)
        }
        BackfillCmd::Cancel { ctx } => {
            match with_engine(&ctx, async |e| Ok(e.backfill_cancel(BY).await?)).await? {
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
            let m = with_engine(&ctx, async |e| {
                Ok(e.migration_start(authority.as_str(), object.as_deref(), &reason, BY)
                    .await?)
            })
            .await?;
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
            let settle = Duration::from_secs(settle_secs);
            let r = with_engine(&ctx, async |e| {
                Ok(e.migration_phase(system.as_str(), BY, settle).await?)
            })
            .await?;
            finish_run(r, json)
        }
        MigrationCmd::Status { json, ctx } => {
            let m = with_engine(&ctx, async |e| Ok(e.migration_status().await?)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
                return Ok(ExitCode::SUCCESS);
            }
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
            Ok(ExitCode::SUCCESS)
        }
        MigrationCmd::Finish { reason, ctx } => {
            let m = with_engine(&ctx, async |e| Ok(e.migration_finish(BY, reason.as_deref()).await?)).await?;
            println!("migration {} finished: normal ownership restored", m.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Print a backfill run (or a migration phase, which is one) and exit 0 only when it is done.
fn finish_run(r: BackfillRun, json: bool) -> Result<ExitCode> {
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

/// A backfill run (also the latest one in `status`) with its validation report, if any.
pub fn print_run(r: &BackfillRun) {
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
                "    {} / {} {}: crm {} billing {} (owner {})",
                m.crm_id,
                m.billing_id,
                m.field,
                or_none(m.crm.as_deref()),
                or_none(m.billing.as_deref()),
                m.owner
            );
        }
    }
}
