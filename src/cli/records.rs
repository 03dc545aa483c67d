//! One record's history and its repair: `timeline`, `undrop`, `replay`, `review`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use driftless::api::{FieldChoice, ReplaySelector, ReviewResolution};

use super::{or_none, parse_time, with_engine, OpsArgs, BY};

#[derive(Subcommand)]
pub enum Cmd {
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
}

#[derive(Subcommand)]
pub enum ReviewCmd {
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

pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Review { cmd } => review(cmd).await?,
        Cmd::Timeline { query, json, ctx } => {
            let t = with_engine(&ctx, async |e| Ok(e.record_timeline(&query).await?)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "record {} (crm {}, billing {})",
                t.record,
                or_none(t.crm_id.as_deref()),
                or_none(t.billing_id.as_deref())
            );
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
        Cmd::Undrop { event, reason, ctx } => {
            let key = with_engine(&ctx, async |e| Ok(e.undrop_event(event, &reason, BY).await?)).await?;
            println!("event {event} requeued; record {key} will be planned again by the running engine");
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
            let sel = ReplaySelector {
                from_ms: from.as_deref().map(parse_time).transpose()?,
                to_ms: to.as_deref().map(parse_time).transpose()?,
                record,
                dead_letter_ids: dead_letters,
            };
            let p = with_engine(&ctx, async |e| Ok(e.replay(&sel, !run, BY).await?)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(ExitCode::SUCCESS);
            }
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
    }
    Ok(ExitCode::SUCCESS)
}

async fn review(cmd: ReviewCmd) -> Result<()> {
    match cmd {
        ReviewCmd::List { json, ctx } => {
            let items = with_engine(&ctx, async |e| Ok(e.list_reviews().await?)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(());
            }
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
                choices.push(FieldChoice {
                    field: field.into(),
                    take: side.into(),
                    value: None,
                });
            }
            for s in &set {
                let (field, value) = s.split_once('=').context("--set expects field=VALUE")?;
                choices.push(FieldChoice {
                    field: field.into(),
                    take: "value".into(),
                    value: Some(value.into()),
                });
            }
            let resolution = ReviewResolution { choices, reason };
            let key = with_engine(&ctx, async |e| Ok(e.resolve_review(id, &resolution, BY).await?)).await?;
            println!("review {id} resolved; writes for {key} are queued for the running engine");
        }
    }
    Ok(())
}
