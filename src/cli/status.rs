//! `status`, `pause`, `resume`: on the ledger file alone, so they work whether or not a
//! server runs and need no contract, through the same code the server's operations use
//! (`engine::status_on`, `pause_on`, `resume_on`: scope and reason checks included).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use driftless::api::{PauseRequest, Status};
use driftless::engine;

use super::{counts, event_counts, fmt_ms, now_ms, with_ledger, Destination, LedgerArg, BY};

#[derive(Subcommand)]
pub enum Cmd {
    /// Print the ledger's counts (events by state, writes, queue, lag, pause).
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Pause outbound writes (all, or one destination), saying why. Works whether or not the
    /// server runs.
    Pause {
        #[arg(long, value_enum)]
        destination: Option<Destination>,
        /// Why: shown on every screen while paused, and audited.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        ledger: LedgerArg,
    },
    /// Resume outbound writes; the backlog drains in per-record order.
    Resume {
        #[arg(long, value_enum)]
        destination: Option<Destination>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        ledger: LedgerArg,
    },
}

pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Status { json, ledger } => {
            let st = with_ledger(&ledger.ledger, async |l| {
                let version = l.contract_version().await?.unwrap_or_else(|| "unknown".into());
                // No engine here: no rate budgets to show.
                Ok(engine::status_on(l, &version, Vec::new(), now_ms()).await?)
            })
            .await?;
            if json {
                // The same object as `GET /api/status`.
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
        }
        Cmd::Pause {
            destination,
            reason,
            ledger,
        } => {
            let req = PauseRequest {
                scope: destination.map(|d| d.as_str().to_string()),
                reason: Some(reason),
            };
            let r = with_ledger(&ledger.ledger, async |l| {
                Ok(engine::pause_on(l, &req, BY, now_ms()).await?)
            })
            .await?;
            println!("outbound writes paused ({})", r.scope);
        }
        Cmd::Resume {
            destination,
            reason,
            ledger,
        } => {
            let req = PauseRequest {
                scope: destination.map(|d| d.as_str().to_string()),
                reason,
            };
            let r = with_ledger(&ledger.ledger, async |l| {
                Ok(engine::resume_on(l, &req, BY, now_ms()).await?)
            })
            .await?;
            if r.changed {
                println!("outbound writes resumed ({})", r.scope);
            } else {
                println!("outbound writes were not paused ({})", r.scope);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &Status) {
    let st = &status.ledger;
    println!("events: {}", event_counts(&st.events));
    for (dest, w) in &st.writes {
        println!(
            "writes to {dest}: {} pending, {} done, {} dead-lettered",
            w.pending, w.done, w.dead_lettered
        );
    }
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
        super::runs::print_run(r);
    }
    if let Some(o) = &st.observe {
        println!(
            "OBSERVING (writes off) since {} by {}: {} held writes ({}); `driftless writes on` sends them",
            fmt_ms(o.set_at_ms),
            o.set_by,
            st.held_writes.values().sum::<i64>(),
            counts(&st.held_writes)
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
