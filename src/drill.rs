//! The drill: run the engine against the simulators under faults until quiescent, then check
//! DESIGN.md's invariants by reading the simulators' own state and APIs (not the engine's
//! counters), plus the ledger for event accounting.
//!
//! The simulators always run in the drill's process. The engine runs in-process, or — with
//! crashes — as a child `driftless serve` process on a port fixed up front, SIGKILLed at
//! seeded random moments and restarted on the same ledger. Either way the drill reads the
//! engine's state only through the ledger file and the simulators.

mod engine;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::contract::{Contract, DEFAULT_CONTRACT, DEFAULT_CONTRACT_LABEL};
use crate::ingest::stripe::META_CRM_ID;
use crate::ledger::{EventCensus, LagFigures, Ledger};
use crate::runtime::{self, EngineSecrets, Running, RuntimeError};
use crate::sim::{
    run_actors, run_billing_activity, run_plan_requests, ActorPlan, ActorReport, BillingActivity,
    BillingActivityReport, FaultProfile, SimConfig, Simulators,
};
use engine::{EngineSpec, EngineUnderTest};

pub struct DrillOptions {
    pub seed: u64,
    pub records: usize,
    pub edits: usize,
    pub faults: FaultProfile,
    /// The contract to drill: the embedded default, or one loaded from a file (its text is read
    /// again from `contract.path` and must still have `contract.version`).
    pub contract: Contract,
    pub ledger: PathBuf,
    pub workers: usize,
    /// Give up waiting for quiescence after this long (the report then says so). With
    /// crashes, the kills still due after the activity count against the same window.
    pub settle_timeout: Duration,
    pub edits_per_sec: f64,
    /// Billing cycles of finance activity after the CRM actors (0 = none).
    pub billing_cycles: usize,
    /// SIGKILL the engine this many times at seeded random moments, restarting it on the same
    /// ledger each time (0 = the engine runs in-process).
    pub crashes: usize,
    /// The `driftless` binary to run the engine with (`serve`); needed when `crashes > 0`.
    pub engine_exe: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub ok: bool,
    pub seed: u64,
    pub records: usize,
    pub edits: usize,
    pub faults: String,
    pub duration_ms: u128,
    /// `in-process` or `child process`.
    pub engine: &'static str,
    /// SIGKILLs performed (each followed by a restart on the same ledger).
    pub crashes: usize,
    pub crashes_requested: usize,
    /// When each SIGKILL happened, in ms since the drill started.
    pub kill_at_ms: Vec<u64>,
    /// From each SIGKILL until the restarted engine answered `/healthz`, in ms.
    pub restart_ms: Vec<u64>,
    pub quiesced: bool,
    pub contacts: usize,
    pub billing_customers: usize,
    pub events: BTreeMap<String, i64>,
    pub events_total: i64,
    pub writes: BTreeMap<String, WriteFigures>,
    pub faults_injected: BTreeMap<String, usize>,
    pub dead_letters: i64,
    pub review_depth: i64,
    /// Plan changes requested in the CRM (`requested_plan`) after the finance activity.
    pub plan_requests: usize,
    pub lag_ms: LagFigures,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize, Default)]
pub struct WriteFigures {
    /// Mutating requests the system applied (state changed).
    pub applied: usize,
    /// Requests answered from the idempotency cache.
    pub replayed: usize,
    /// Upper bound on writes caused by user edits (one per edit per destination).
    pub bound: usize,
}

/// Client timeout towards the simulators (short, so timeouts after commit show quickly).
const REQUEST_TIMEOUT_MS: i64 = 1_500;
/// How long a killed engine stays down before its restart.
const DOWNTIME: Duration = Duration::from_millis(300);

pub async fn run(opts: DrillOptions) -> Result<DrillReport, RuntimeError> {
    let started = Instant::now();
    let sims = Simulators::start(SimConfig {
        seed: opts.seed,
        faults: opts.faults.clone(),
        ..SimConfig::default()
    })
    .await?;
    let report = drive(&opts, &sims, started).await;
    sims.shutdown().await;
    report
}

/// What the activity phases produced.
struct Outcome {
    actors: ActorReport,
    billing: Option<BillingActivityReport>,
    /// Plan changes sales requested in the CRM (`requested_plan`), after the finance activity.
    plan_requests: usize,
    quiesced: bool,
    crashes: CrashLog,
}

#[derive(Default)]
struct CrashLog {
    kill_at_ms: Vec<u64>,
    restart_ms: Vec<u64>,
}

async fn drive(opts: &DrillOptions, sims: &Simulators, started: Instant) -> Result<DrillReport, RuntimeError> {
    // One port for the engine's whole life: the webhook endpoints registered with the
    // simulators stay valid across restarts, so their retries reach the restarted engine.
    let addr = engine::free_port()?;
    let billing_webhook_secret = sims.billing.register_webhook(&format!("http://{addr}/webhooks/stripe"));
    sims.crm.set_webhook_target(&format!("http://{addr}/webhooks/hubspot"));
    let contract_path = engine::sibling(&opts.ledger, ".contract.toml");
    let text = engine_contract_text(&opts.contract, &sims.crm.base_url(), &sims.billing.base_url())?;
    std::fs::write(&contract_path, text).map_err(|source| RuntimeError::Io {
        what: format!("write {}", contract_path.display()),
        source,
    })?;
    let contract = crate::contract::load(&contract_path)?;
    let secrets = EngineSecrets {
        crm_token: sims.crm.token().to_string(),
        billing_key: sims.billing.api_key().to_string(),
        crm_webhook_secret: Some(sims.crm.webhook_secret().to_string()),
        billing_webhook_secret: Some(billing_webhook_secret),
    };
    runtime::ensure_crm_properties(&contract, &secrets).await?;
    let spec = EngineSpec {
        contract_path,
        contract: contract.clone(),
        secrets,
        ledger: opts.ledger.clone(),
        addr,
        workers: opts.workers,
    };
    let mut engine = if opts.crashes == 0 {
        EngineUnderTest::in_process(spec).await?
    } else {
        let exe = opts.engine_exe.clone().ok_or_else(|| {
            RuntimeError::EngineProcess("crashes need the driftless binary to run the engine with".into())
        })?;
        EngineUnderTest::child(exe, spec).await?
    };
    // The engine has migrated the ledger by now; a second connection reads it (WAL).
    let ledger = match Ledger::open(&opts.ledger).await {
        Ok(l) => l,
        Err(e) => {
            engine.stop().await;
            return Err(e.into());
        }
    };
    let outcome = exercise(opts, sims, &ledger, &mut engine, started).await;
    // Stop the engine before checking, so nothing moves under the checks.
    let survived = engine.stop().await;
    let report = match outcome {
        Ok(outcome) => {
            let run = RunFacts {
                contract: &contract,
                outcome: &outcome,
                engine: engine.kind(),
                survived,
                started,
            };
            check(&ledger, sims, opts, &run).await
        }
        Err(e) => Err(e),
    };
    ledger.close().await;
    report
}

/// The activity with the crash schedule running alongside: actors; then (with billing
/// cycles) quiescence and finance activity; then the settle phase — the kills still due,
/// then quiescence — all of it within `settle_timeout`.
async fn exercise(
    opts: &DrillOptions,
    sims: &Simulators,
    ledger: &Ledger,
    engine: &mut EngineUnderTest,
    started: Instant,
) -> Result<Outcome, RuntimeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let schedule = crash_schedule(opts);
    let crash = crash_loop(engine, &schedule, started, stop_rx);
    tokio::pin!(crash);
    let mut crashed: Option<CrashLog> = None;

    let actors = alongside(
        run_actors(
            sims,
            ActorPlan {
                seed: opts.seed,
                records: opts.records,
                edits: opts.edits,
                edits_per_sec: opts.edits_per_sec,
                billing_edit_share: 0.2,
            },
        ),
        crash.as_mut(),
        &mut crashed,
    )
    .await?;
    // Then finance: subscriptions for the customers the engine created, plan changes,
    // cancellations, credit notes and billing cycles (failed payments included).
    let billing = if opts.billing_cycles > 0 {
        alongside(
            wait_quiet(ledger, sims, opts.settle_timeout),
            crash.as_mut(),
            &mut crashed,
        )
        .await?;
        let activity = run_billing_activity(
            sims,
            opts.seed,
            BillingActivity {
                cycles: opts.billing_cycles,
                ..BillingActivity::default()
            },
        );
        Some(alongside(activity, crash.as_mut(), &mut crashed).await?)
    } else {
        None
    };
    // Then sales: plan changes requested in the CRM, the two-way case (one per five records).
    let plan_requests = if billing.is_some() {
        alongside(
            wait_quiet(ledger, sims, opts.settle_timeout),
            crash.as_mut(),
            &mut crashed,
        )
        .await?;
        let n = (opts.records / 5).max(1);
        alongside(run_plan_requests(sims, opts.seed, n), crash.as_mut(), &mut crashed).await?
    } else {
        0
    };
    // Settle: the kills still due (the engine is still replaying webhooks and retrying
    // writes), then quiescence, within one bounded window.
    let deadline = tokio::time::Instant::now() + opts.settle_timeout;
    let crashes = match crashed {
        Some(log) => log,
        None => match tokio::time::timeout_at(deadline, crash.as_mut()).await {
            Ok(log) => log?,
            Err(_) => {
                // Out of time: stop killing; the report shows fewer crashes than requested.
                let _ = stop_tx.send(true);
                crash.as_mut().await?
            }
        },
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let quiesced = wait_quiet(ledger, sims, left).await;
    Ok(Outcome {
        actors,
        billing,
        plan_requests,
        quiesced,
        crashes,
    })
}

/// Run `work` while also driving the crash loop (until it finishes); a failed kill or
/// restart ends the drill with its error.
async fn alongside<F: Future>(
    work: F,
    mut crash: Pin<&mut impl Future<Output = Result<CrashLog, RuntimeError>>>,
    crashed: &mut Option<CrashLog>,
) -> Result<F::Output, RuntimeError> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            log = crash.as_mut(), if crashed.is_none() => *crashed = Some(log?),
        }
    }
}

/// The pauses before each kill: seeded, uniform in 1.5–8 s, shrunk (down to a fifth) when the
/// actors' activity is shorter than the kills would take, so they land while work is in flight.
fn crash_schedule(opts: &DrillOptions) -> Vec<Duration> {
    if opts.crashes == 0 {
        return Vec::new();
    }
    let (lo, hi) = (1.5_f64, 8.0_f64);
    let activity_secs = if opts.edits_per_sec > 0.0 {
        opts.edits as f64 / opts.edits_per_sec
    } else {
        0.0
    };
    let scale = (activity_secs / (opts.crashes as f64 * (lo + hi) / 2.0)).clamp(0.2, 1.0);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xc4a5_4e5d_0d1e_5eed);
    (0..opts.crashes)
        .map(|_| Duration::from_secs_f64(rng.gen_range(lo..=hi) * scale))
        .collect()
}

/// Each pause, then a SIGKILL, a short downtime and a restart on the same ledger (waiting until
/// healthy). Stops early when told to.
async fn crash_loop(
    engine: &mut EngineUnderTest,
    schedule: &[Duration],
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> Result<CrashLog, RuntimeError> {
    let mut log = CrashLog::default();
    for pause in schedule {
        tokio::select! {
            _ = tokio::time::sleep(*pause) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let at = started.elapsed();
        engine.kill().await?;
        log.kill_at_ms.push(ms(at));
        tracing::info!(at_ms = ms(at), "drill: engine SIGKILLed");
        tokio::time::sleep(DOWNTIME).await;
        engine.restart().await?;
        log.restart_ms.push(ms(started.elapsed().saturating_sub(at)));
    }
    Ok(log)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The contract text the drill's engine runs: the caller's contract with both systems pointed
/// at the simulators, short request timeouts, loopback rate limits (the simulators' only limits
/// are the fault profile's 429s), and the credentials named by the four standard environment
/// variables — their values never enter the file.
fn engine_contract_text(contract: &Contract, crm_url: &str, billing_url: &str) -> Result<String, RuntimeError> {
    use toml_edit::{value, DocumentMut, InlineTable, Item, Table, TableLike};
    let text = if contract.path.as_os_str() == DEFAULT_CONTRACT_LABEL {
        DEFAULT_CONTRACT.to_string()
    } else {
        let t = crate::contract::read_text(&contract.path)?;
        if crate::contract::contract_version(t.as_bytes()) != contract.version {
            return Err(RuntimeError::Internal(format!(
                "{} changed since it was loaded",
                contract.path.display()
            )));
        }
        t
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| RuntimeError::Internal(format!("{}: {e}", contract.path.display())))?;
    fn table<'a>(root: &'a mut dyn TableLike, path: &[&str]) -> Result<&'a mut dyn TableLike, RuntimeError> {
        let mut cur = root;
        for key in path {
            if cur.get(key).is_none() {
                cur.insert(key, Item::Table(Table::new()));
            }
            cur = cur
                .get_mut(key)
                .and_then(Item::as_table_like_mut)
                .ok_or_else(|| RuntimeError::Internal(format!("contract: `{key}` is not a table")))?;
        }
        Ok(cur)
    }
    fn env_ref(var: &str) -> Item {
        let mut t = InlineTable::new();
        t.insert("env", var.into());
        value(t)
    }
    for (side, url, secret, webhook) in [
        ("crm", crm_url, "DRIFTLESS_CRM_TOKEN", "DRIFTLESS_CRM_WEBHOOK_SECRET"),
        (
            "billing",
            billing_url,
            "DRIFTLESS_BILLING_KEY",
            "DRIFTLESS_BILLING_WEBHOOK_SECRET",
        ),
    ] {
        let sys = table(doc.as_table_mut(), &["systems", side])?;
        sys.insert("base_url", value(url));
        sys.insert("request_timeout_ms", value(REQUEST_TIMEOUT_MS));
        sys.insert("secret", env_ref(secret));
        sys.insert("webhook_secret", env_ref(webhook));
    }
    for (side, rl) in [
        ("crm", &contract.rate_limits.crm),
        ("billing", &contract.rate_limits.billing),
    ] {
        let t = table(doc.as_table_mut(), &["rate_limits", side])?;
        t.insert("requests_per_second", value(rl.requests_per_second.max(1_000.0)));
        t.insert("burst", value(i64::from(rl.burst.max(100))));
        // The drill measures sync, not the provider's daily quota.
        t.insert("daily_cap", value(crate::contract::MAX_DAILY_CAP));
    }
    Ok(doc.to_string())
}

/// Quiescent: no webhook waiting at the simulators, nothing pending in the ledger, stable
/// over several consecutive looks. For a [`Running`] demo engine (the tests' helper).
pub async fn wait_quiescent(running: &Running, timeout: Duration) -> bool {
    let webhooks = || running.sims.as_ref().map_or(0, |s| s.pending_webhooks());
    quiet_for(running.engine.ledger(), webhooks, timeout).await
}

/// Quiescent, judged from a ledger (any connection to the file: the engine may run in another
/// process) and the simulators.
pub async fn wait_quiet(ledger: &Ledger, sims: &Simulators, timeout: Duration) -> bool {
    quiet_for(ledger, || sims.pending_webhooks(), timeout).await
}

async fn quiet_for(ledger: &Ledger, pending_webhooks: impl Fn() -> usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut stable = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let webhooks = pending_webhooks();
        let quiet = match ledger.status().await {
            Ok(st) => {
                webhooks == 0
                    && st.queue_depth == 0
                    && st.events.get("pending").copied().unwrap_or(0) == 0
                    && st.writes.values().all(|w| w.pending == 0)
            }
            Err(_) => false,
        };
        stable = if quiet { stable + 1 } else { 0 };
        if stable >= 5 {
            return true;
        }
    }
    false
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|x| !x.is_empty()).map(str::to_string)
}

/// What the checks need to know about the run besides the systems' state.
struct RunFacts<'a> {
    /// The contract the engine ran.
    contract: &'a Contract,
    outcome: &'a Outcome,
    engine: &'static str,
    /// The engine was still running when the drill stopped it (it never exited on its own).
    survived: bool,
    started: Instant,
}

async fn check(
    ledger: &Ledger,
    sims: &Simulators,
    opts: &DrillOptions,
    run: &RunFacts<'_>,
) -> Result<DrillReport, RuntimeError> {
    let actors = &run.outcome.actors;
    let billing = run.outcome.billing.as_ref();
    let quiesced = run.outcome.quiesced;
    let contacts = sims.crm.contacts();
    let customers = sims.billing.customers();
    let status = ledger.status().await?;
    let mut checks = Vec::new();

    // 1. No duplicate creates: one billing customer per CRM contact.
    let mut by_contact: HashMap<String, Vec<&Value>> = HashMap::new();
    for c in &customers {
        if let Some(cid) = s(c, &["metadata", META_CRM_ID]) {
            by_contact.entry(cid).or_default().push(c);
        }
    }
    let dups: Vec<String> = by_contact
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| format!("contact {k} has {} customers", v.len()))
        .collect();
    // A contact without a customer is accounted for only when its create sits in the dead
    // letters (exhausted or refused, with full context); otherwise it was lost.
    let (_, open_dead) = ledger
        .dead_letters(
            &crate::api::DeadLetterFilter {
                limit: Some(100_000),
                ..Default::default()
            },
            i64::MAX,
        )
        .await?;
    let dead_lettered: HashSet<String> = open_dead
        .iter()
        .filter_map(|d| crate::ingest::parse_entity_key(&d.record).map(|(_, _, id)| id.to_string()))
        .collect();
    let (explained, missing): (Vec<String>, Vec<String>) = contacts
        .iter()
        .filter_map(|c| s(c, &["id"]))
        .filter(|id| !by_contact.contains_key(id))
        .partition(|id| dead_lettered.contains(id));
    checks.push(Check {
        name: "no_duplicate_creates",
        ok: dups.is_empty() && missing.is_empty(),
        detail: format!(
            "{} contacts, {} customers carrying a contact id; duplicates: {}; contacts without a customer: {}; \
             without a customer but in dead letters: {}",
            contacts.len(),
            by_contact.len(),
            first_few(&dups),
            first_few(&missing),
            first_few(&explained)
        ),
    });

    // 2. Owner wins: owned fields equal on both sides, or the record is in review — or its
    // write sits in the dead letters (exhausted under the faults, with full context for the
    // operator), which the check names apart, as it does for creates.
    let subscriptions = sims.billing.subscriptions();
    let invoices = sims.billing.invoices();
    let mapping = run.contract.object("customer");
    let requests_plans = run
        .contract
        .objects
        .iter()
        .any(|o| o.fields.iter().any(|f| f.crm == "requested_plan"));
    // (contact, what differs), outside review.
    let mut found: Vec<(String, String)> = Vec::new();
    let reviewed: HashSet<String> = ledger
        .open_review_keys()
        .await?
        .into_iter()
        .filter_map(|k| crate::ingest::parse_entity_key(&k).map(|(_, _, id)| id.to_string()))
        .collect();
    if let Some(m) = mapping {
        for c in &contacts {
            let Some(cid) = s(c, &["id"]) else { continue };
            let Some(cust) = by_contact.get(&cid).and_then(|v| v.first()) else {
                continue;
            };
            for f in &m.fields {
                let crm_v = s(c, &["properties", &f.crm]);
                let bill_v = match f.billing.strip_prefix("metadata.") {
                    Some(k) => s(cust, &["metadata", k]),
                    None => s(cust, &[&f.billing]),
                };
                if crm_v != bill_v && !reviewed.contains(&cid) {
                    let what = format!("{}: crm {} billing {}", f.name, shown(&crm_v), shown(&bill_v));
                    found.push((cid.clone(), what));
                }
            }
            // Billing-owned subscription and invoice fields, computed here from the billing
            // simulator's own objects (deliberately independent of the connector's code).
            if billing.is_some() {
                let mut expected = expected_billing_fields(cust, &subscriptions, &invoices);
                // The shared plan request settles on the plan billing holds (or sits in review).
                if requests_plans {
                    let plan = expected.iter().find(|(p, _)| *p == "plan").map(|(_, v)| v.clone());
                    expected.push(("requested_plan", plan.flatten()));
                }
                for (prop, want) in expected {
                    let got = s(c, &["properties", prop]);
                    if got != want && !reviewed.contains(&cid) {
                        found.push((
                            cid.clone(),
                            format!("{prop}: crm {} billing {}", shown(&got), shown(&want)),
                        ));
                    }
                }
            }
        }
    }
    let (dead_lettered_mismatches, mismatches): (Vec<String>, Vec<String>) = {
        let (dl, other): (Vec<_>, Vec<_>) = found.into_iter().partition(|(cid, _)| dead_lettered.contains(cid));
        let text = |v: Vec<(String, String)>| {
            v.into_iter()
                .map(|(cid, what)| format!("contact {cid} {what}"))
                .collect()
        };
        (text(dl), text(other))
    };
    checks.push(Check {
        name: "owner_wins",
        ok: mismatches.is_empty(),
        detail: format!(
            "{} field mismatches outside review and the dead letters ({} records in review); first: {}; \
             mismatched with their write in the dead letters: {}",
            mismatches.len(),
            reviewed.len(),
            first_few(&mismatches),
            first_few(&dead_lettered_mismatches)
        ),
    });

    // 3. No echo loops: writes the systems applied stay within one per user action per
    // destination.
    let mut writes = BTreeMap::new();
    let mut faults_injected: BTreeMap<String, usize> = BTreeMap::new();
    for (side, log) in [("billing", sims.billing.request_log()), ("crm", sims.crm.request_log())] {
        let mut w = WriteFigures::default();
        for r in &log {
            if let Some(f) = &r.fault {
                *faults_injected.entry(format!("{side}:{f}")).or_default() += 1;
            }
            if r.mutating && r.applied && !r.path.contains("/properties/") {
                // A CRM batch call writes several records: count each (by its correlation id).
                w.applied += match &r.correlation_id {
                    Some(ids) if r.path.contains("/batch/") => ids.split(',').count(),
                    _ => 1,
                };
            }
            if r.replayed {
                w.replayed += 1;
            }
        }
        w.bound = match side {
            // a create per contact, at most one write per CRM edit and per billing edit (revert)
            "billing" => actors.contacts_created + actors.crm_edits + actors.billing_edits + run.outcome.plan_requests,
            // the billing id written back once per contact; billing edits touch CRM-owned fields
            // only; each finance action or invoice may take a few events (created, finalized,
            // paid, customer.updated), each at most one CRM write
            _ => {
                // each plan request's result flows back in one CRM write
                actors.contacts_created
                    + actors.billing_edits
                    + run.outcome.plan_requests
                    + billing.map_or(0, |b| {
                        3 * (b.subscriptions_started
                            + b.plan_changes
                            + b.cancellations
                            + b.credit_notes
                            + b.invoices_collected
                            + b.invoices
                            + b.subscriptions_ended)
                    })
            }
        };
        writes.insert(side.to_string(), w);
    }
    let over: Vec<String> = writes
        .iter()
        .filter(|(_, w)| w.applied > w.bound)
        .map(|(k, w)| format!("{k}: {} applied writes > bound {}", w.applied, w.bound))
        .collect();
    checks.push(Check {
        name: "no_echo_loops",
        ok: over.is_empty(),
        detail: if over.is_empty() {
            format!(
                "billing {}/{} and crm {}/{} applied writes within bound; {} echo events dropped",
                writes["billing"].applied,
                writes["billing"].bound,
                writes["crm"].applied,
                writes["crm"].bound,
                status.events.get("echo").copied().unwrap_or(0)
            )
        } else {
            over.join("; ")
        },
    });

    // 4. Nothing lost, everything accounted: every billing event the system emitted is in the
    // inbox, and every inbox event is in exactly one state — the counters the status reports
    // checked against the inbox's rows, not against themselves.
    let emitted = list_billing_events(&sims.billing.base_url(), sims.billing.api_key()).await;
    let (lost, emitted_n) = match &emitted {
        Ok(ids) => (
            ledger.missing_events(crate::contract::Side::Billing, ids).await?,
            ids.len(),
        ),
        Err(e) => (vec![format!("could not list billing events: {e}")], 0),
    };
    checks.push(every_event_accounted(&ledger.event_census().await?, &lost, emitted_n));
    checks.push(Check {
        name: "quiesced",
        ok: quiesced,
        detail: if quiesced {
            "no pending webhooks, events or writes".into()
        } else {
            format!(
                "still busy after {:?}: queue depth {}",
                opts.settle_timeout, status.queue_depth
            )
        },
    });
    // 6 (DESIGN.md): progress survives SIGKILL. Every kill requested happened and was followed
    // by a healthy restart on the same ledger; the checks above then hold across the crashes.
    let crashes = &run.outcome.crashes;
    if opts.crashes > 0 {
        let performed = crashes.kill_at_ms.len();
        let restarted = crashes.restart_ms.len();
        checks.push(Check {
            name: "crash_recovery",
            ok: performed == opts.crashes && restarted == performed && run.survived,
            detail: format!(
                "{performed} of {} SIGKILLs performed (at {} ms), {restarted} restarts on the same ledger \
                 (kill to healthy: max {} ms){}",
                opts.crashes,
                crashes
                    .kill_at_ms
                    .iter()
                    .map(|ms| ms.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                crashes.restart_ms.iter().max().copied().unwrap_or(0),
                if run.survived {
                    ""
                } else {
                    "; the engine process exited on its own"
                }
            ),
        });
    }

    let ok = checks.iter().all(|c| c.ok);
    Ok(DrillReport {
        ok,
        seed: opts.seed,
        records: opts.records,
        edits: opts.edits,
        faults: format!("{:?}", opts.faults),
        duration_ms: run.started.elapsed().as_millis(),
        engine: run.engine,
        crashes: crashes.kill_at_ms.len(),
        crashes_requested: opts.crashes,
        kill_at_ms: crashes.kill_at_ms.clone(),
        restart_ms: crashes.restart_ms.clone(),
        quiesced,
        contacts: contacts.len(),
        billing_customers: customers.len(),
        events: status.events.clone(),
        events_total: status.events_total,
        writes,
        faults_injected,
        dead_letters: status.dead_letter_depth,
        review_depth: status.review_depth,
        plan_requests: run.outcome.plan_requests,
        lag_ms: status.lag_ms.clone(),
        checks,
    })
}

/// Invariant 4's check: no billing event the system emitted is missing from the inbox
/// (`lost`), the per-state counters agree with the inbox's rows (so each event is counted
/// once, in its state), and none is left pending.
fn every_event_accounted(census: &EventCensus, lost: &[String], emitted: usize) -> Check {
    let mismatches = census.mismatches();
    let pending = census.counted("pending");
    Check {
        name: "every_event_accounted",
        ok: lost.is_empty() && mismatches.is_empty() && pending == 0,
        detail: format!(
            "{emitted} billing events emitted, {} missing from the inbox ({}); {} distinct events, {}; \
             {pending} pending; {} duplicate deliveries dropped",
            lost.len(),
            first_few(lost),
            census.distinct_events(),
            if mismatches.is_empty() {
                "every state's counter equals its events".to_string()
            } else {
                format!("counters differ from the inbox's rows: {}", mismatches.join("; "))
            },
            census.counted("duplicate")
        ),
    }
}

/// A value in a check's detail: quoted, or `none`.
fn shown(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "none".to_string(), |x| format!("\"{x}\""))
}

/// The first five items of a list, comma-separated, with how many more (`none` when empty).
fn first_few<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let mut out = items
        .iter()
        .take(5)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 5 {
        out.push_str(&format!(" and {} more", items.len() - 5));
    }
    out
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}

fn date_of(t: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d").to_string())
}

/// What the contact should show for a billing customer's subscription and invoices.
fn expected_billing_fields(
    customer: &Value,
    subs: &[Value],
    invoices: &[Value],
) -> Vec<(&'static str, Option<String>)> {
    let cus = customer["id"].as_str().unwrap_or_default();
    let mut mine: Vec<&Value> = subs.iter().filter(|x| x["customer"] == cus).collect();
    mine.sort_by_key(|x| {
        std::cmp::Reverse((
            x["created"].as_i64().unwrap_or(0),
            x["id"].as_str().unwrap_or("").to_string(),
        ))
    });
    let sub = mine.iter().find(|x| x["status"] != "canceled").or_else(|| mine.first());
    let mut out = Vec::new();
    match sub {
        Some(sub) => {
            let live = sub["status"] != "canceled";
            let items = sub["items"]["data"].as_array().cloned().unwrap_or_default();
            let mrr: i64 = items
                .iter()
                .map(|i| i["price"]["unit_amount"].as_i64().unwrap_or(0) * i["quantity"].as_i64().unwrap_or(1))
                .sum();
            out.push(("subscription_status", sub["status"].as_str().map(str::to_string)));
            out.push((
                "plan",
                items
                    .first()
                    .and_then(|i| i["price"]["lookup_key"].as_str())
                    .map(str::to_string),
            ));
            out.push(("mrr", Some(money(if live { mrr } else { 0 }))));
            out.push((
                "next_invoice_date",
                sub["current_period_end"].as_i64().filter(|_| live).and_then(date_of),
            ));
            out.push((
                "cancel_at_period_end",
                Some(sub["cancel_at_period_end"].as_bool().unwrap_or(false).to_string()),
            ));
        }
        None => {
            for p in [
                "subscription_status",
                "plan",
                "mrr",
                "next_invoice_date",
                "cancel_at_period_end",
            ] {
                out.push((p, None));
            }
        }
    }
    let mine: Vec<&Value> = invoices.iter().filter(|i| i["customer"] == cus).collect();
    let open: i64 = mine
        .iter()
        .filter(|i| i["status"] == "open")
        .map(|i| i["amount_remaining"].as_i64().unwrap_or(0))
        .sum();
    let last_paid = mine
        .iter()
        .filter_map(|i| i["status_transitions"]["paid_at"].as_i64())
        .max();
    out.push(("invoice_balance", Some(money(open))));
    out.push((
        "delinquent",
        Some(customer["delinquent"].as_bool().unwrap_or(false).to_string()),
    ));
    out.push((
        "last_payment_at",
        last_paid
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    ));
    out
}

/// Every event id the billing system holds, through its public `/v1/events` API.
async fn list_billing_events(base: &str, key: &str) -> Result<Vec<String>, reqwest::Error> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100_000 {
        let mut q = vec![("limit".to_string(), "100".to_string())];
        if let Some(a) = &after {
            q.push(("starting_after".into(), a.clone()));
        }
        // The simulators' admin surface is never faulted, but the API is: retry 429/5xx.
        let mut page = None;
        for _ in 0..50 {
            let resp = http
                .get(format!("{base}/v1/events"))
                .bearer_auth(key)
                .query(&q)
                .send()
                .await?;
            if resp.status().is_success() {
                page = Some(resp.json::<Value>().await?);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(page) = page else { break };
        let data = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        for e in &data {
            if let Some(id) = e.get("id").and_then(Value::as_str) {
                ids.push(id.to_string());
            }
        }
        if page.get("has_more").and_then(Value::as_bool) != Some(true) || data.is_empty() {
            break;
        }
        after = ids.last().cloned();
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(crashes: usize, edits: usize, edits_per_sec: f64) -> DrillOptions {
        DrillOptions {
            seed: 7,
            records: 10,
            edits,
            faults: FaultProfile::none(),
            contract: crate::contract::default_contract(),
            ledger: PathBuf::from("unused.db"),
            workers: 1,
            settle_timeout: Duration::from_secs(1),
            edits_per_sec,
            billing_cycles: 0,
            crashes,
            engine_exe: None,
        }
    }

    #[test]
    fn the_engine_contract_points_at_the_simulators_and_names_secrets_only_by_env() {
        let c = crate::contract::default_contract();
        let text = engine_contract_text(&c, "http://127.0.0.1:1", "http://127.0.0.1:2").expect("edits");
        let e = crate::contract::compile("drill.toml", &text).expect("still a valid contract");
        assert_eq!(e.systems.crm.base_url, "http://127.0.0.1:1");
        assert_eq!(e.systems.billing.base_url, "http://127.0.0.1:2");
        assert_eq!(e.systems.crm.request_timeout_ms, 1_500);
        use crate::contract::SecretRef::Env;
        assert!(matches!(&e.systems.crm.secret, Env(v) if v == "DRIFTLESS_CRM_TOKEN"));
        assert!(matches!(&e.systems.billing.secret, Env(v) if v == "DRIFTLESS_BILLING_KEY"));
        assert!(matches!(&e.systems.crm.webhook_secret, Some(Env(v)) if v == "DRIFTLESS_CRM_WEBHOOK_SECRET"));
        assert!(matches!(&e.systems.billing.webhook_secret, Some(Env(v)) if v == "DRIFTLESS_BILLING_WEBHOOK_SECRET"));
        assert!(e.rate_limits.crm.requests_per_second >= 1_000.0 && e.rate_limits.crm.burst >= 100);
        assert!(e.rate_limits.billing.requests_per_second >= 1_000.0 && e.rate_limits.billing.burst >= 100);
        assert_eq!(e.objects.len(), c.objects.len());
    }

    #[test]
    fn a_contract_file_changed_since_it_was_loaded_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, DEFAULT_CONTRACT).expect("write");
        let c = crate::contract::load(&p).expect("valid");
        std::fs::write(&p, format!("{DEFAULT_CONTRACT}\n# edited\n")).expect("write");
        assert!(engine_contract_text(&c, "http://a", "http://b").is_err());
    }

    #[test]
    fn every_event_accounted_fails_on_an_uncounted_event_a_lost_one_or_one_pending() {
        let states = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            crate::ledger::EVENT_STATES
                .iter()
                .map(|s| (s.to_string(), pairs.iter().find(|(k, _)| k == s).map_or(0, |p| p.1)))
                .collect()
        };
        let agree = EventCensus {
            kept: states(&[("applied", 5), ("echo", 2), ("duplicate", 1)]),
            counted: states(&[("applied", 5), ("echo", 2), ("duplicate", 1)]),
        };
        let c = every_event_accounted(&agree, &[], 4);
        assert!(c.ok, "{}", c.detail);
        assert!(
            c.detail
                .contains("7 distinct events, every state's counter equals its events"),
            "{}",
            c.detail
        );

        // One applied event the counters never counted: the states still sum to what the
        // counters say, the rows do not.
        let uncounted = EventCensus {
            kept: states(&[("applied", 4), ("echo", 2), ("duplicate", 1)]),
            ..agree.clone()
        };
        let c = every_event_accounted(&uncounted, &[], 4);
        assert!(!c.ok);
        assert!(c.detail.contains("applied: counter 4, 5 events"), "{}", c.detail);

        let c = every_event_accounted(&agree, &["evt_9".to_string()], 4);
        assert!(!c.ok);
        assert!(c.detail.contains("1 missing from the inbox (evt_9)"), "{}", c.detail);

        let pending = EventCensus {
            kept: states(&[("pending", 1), ("applied", 5)]),
            counted: states(&[("pending", 1), ("applied", 5)]),
        };
        assert!(!every_event_accounted(&pending, &[], 4).ok);
    }

    #[test]
    fn the_crash_schedule_is_seeded_complete_and_bounded() {
        let o = opts(5, 3_000, 50.0);
        let a = crash_schedule(&o);
        assert_eq!(a, crash_schedule(&o), "same seed, same kills");
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|d| (1.5..=8.0).contains(&d.as_secs_f64())), "{a:?}");
        // A short run brings the kills closer (never below a fifth), so they land mid-work.
        let short = crash_schedule(&opts(3, 400, 60.0));
        assert_eq!(short.len(), 3);
        assert!(
            short.iter().all(|d| (0.3..=8.0 * 0.5).contains(&d.as_secs_f64())),
            "{short:?}"
        );
        assert!(crash_schedule(&opts(0, 400, 60.0)).is_empty());
    }
}
