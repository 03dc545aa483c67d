//! Going live: `connect` a real account, and `writes on|off` (observe mode).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use driftless::connect::{self, PropertyPreview, StepReport};
use driftless::contract::Side;
use driftless::secrets::Secret;

use super::{now_ms, with_ledger, Destination, LedgerArg, OnOff, BY};

#[derive(Subcommand)]
pub enum Cmd {
    /// Connect a real account: test the key read-only, store it in the OS keychain, preview
    /// (and with --yes create) the CRM's custom properties, point the contract at the
    /// keychain entry and start the ledger in observe mode. The key is read from stdin or a
    /// variable, never from the command line.
    Connect(ConnectArgs),
    /// Observe mode: `writes off` holds every outbound write (ingest and plan only);
    /// `writes on` previews the held writes and, with --yes, sends them.
    Writes(WritesArgs),
}

#[derive(Args)]
pub struct ConnectArgs {
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
pub struct WritesArgs {
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

pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Connect(a) => connect_cmd(a).await,
        Cmd::Writes(a) => writes(a).await,
    }
}

/// The key for `connect`: from a variable, from stdin, or typed at a prompt without echo.
fn read_key(a: &ConnectArgs) -> Result<Secret> {
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
    Ok(Secret::new(key.trim().to_string()))
}

async fn connect_cmd(a: ConnectArgs) -> Result<ExitCode> {
    use std::io::{BufRead, IsTerminal, Write};
    let key = read_key(&a)?;
    let system = match a.system {
        Destination::Crm => Side::Crm,
        Destination::Billing => Side::Billing,
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

async fn writes(a: WritesArgs) -> Result<ExitCode> {
    let reason = a.reason.as_deref();
    if a.state == OnOff::Off {
        with_ledger(&a.ledger.ledger, async |l| {
            Ok(l.set_observe(reason, BY, now_ms()).await?)
        })
        .await?;
        println!("writes off: observe mode (events are ingested and planned, nothing is written)");
        return Ok(ExitCode::SUCCESS);
    }
    let (observing, held, sent) = with_ledger(&a.ledger.ledger, async |l| {
        Ok(connect::writes_on(l, a.yes, reason, BY, now_ms()).await?)
    })
    .await?;
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
