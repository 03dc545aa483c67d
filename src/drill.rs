//! The drill: run the engine against the simulators under faults until quiescent, then check
//! DESIGN.md's invariants by reading the simulators' own state and APIs (not the engine's
//! counters), plus the ledger for event accounting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::contract::Contract;
use crate::ingest::stripe::META_CRM_ID;
use crate::ledger::LagFigures;
use crate::runtime::{self, DemoOptions, Running, RuntimeError, ServeOptions};
use crate::sim::{run_actors, run_billing_activity, ActorPlan, BillingActivity, BillingActivityReport, FaultProfile};

pub struct DrillOptions {
    pub seed: u64,
    pub records: usize,
    pub edits: usize,
    pub faults: FaultProfile,
    pub contract: Contract,
    pub ledger: PathBuf,
    pub workers: usize,
    /// Give up waiting for quiescence after this long (the report then says so).
    pub settle_timeout: Duration,
    pub edits_per_sec: f64,
    /// Billing cycles of finance activity after the CRM actors (0 = none).
    pub billing_cycles: usize,
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
    pub quiesced: bool,
    pub contacts: usize,
    pub billing_customers: usize,
    pub events: BTreeMap<String, i64>,
    pub events_total: i64,
    pub writes: BTreeMap<String, WriteFigures>,
    pub faults_injected: BTreeMap<String, usize>,
    pub dead_letters: i64,
    pub review_depth: i64,
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

pub async fn run(opts: DrillOptions) -> Result<DrillReport, RuntimeError> {
    let started = Instant::now();
    let faults_label = format!("{:?}", opts.faults);
    // The simulators run on loopback; their only rate limits are the fault profile's 429s.
    let mut contract = opts.contract.clone();
    for rl in [&mut contract.rate_limits.crm, &mut contract.rate_limits.billing] {
        rl.requests_per_second = rl.requests_per_second.max(1_000.0);
        rl.burst = rl.burst.max(100);
    }
    let running = runtime::start_demo(DemoOptions {
        seed: opts.seed,
        faults: opts.faults.clone(),
        contract,
        serve: ServeOptions {
            ledger: opts.ledger.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: opts.workers,
            public_url: None,
            token: None,
        },
        request_timeout_ms: 1_500,
    })
    .await?;
    let sims = running
        .sims
        .clone()
        .ok_or_else(|| RuntimeError::Internal("demo started without simulators".into()))?;
    let actors = run_actors(
        &sims,
        ActorPlan {
            seed: opts.seed,
            records: opts.records,
            edits: opts.edits,
            edits_per_sec: opts.edits_per_sec,
            billing_edit_share: 0.2,
        },
    )
    .await;
    // Then finance: subscriptions for the customers the engine created, plan changes,
    // cancellations, credit notes and billing cycles (failed payments included).
    let mut quiesced = wait_quiescent(&running, opts.settle_timeout).await;
    let billing = if opts.billing_cycles > 0 {
        let b = run_billing_activity(
            &sims,
            opts.seed,
            BillingActivity {
                cycles: opts.billing_cycles,
                ..BillingActivity::default()
            },
        )
        .await;
        quiesced = wait_quiescent(&running, opts.settle_timeout).await;
        Some(b)
    } else {
        None
    };
    let report = check(
        &running,
        &opts,
        &actors,
        billing.as_ref(),
        quiesced,
        started,
        faults_label,
    )
    .await;
    running.shutdown().await;
    report
}

/// Quiescent: no webhook waiting at the simulators, nothing pending in the ledger, stable
/// over several consecutive looks.
pub async fn wait_quiescent(running: &Running, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut stable = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let webhooks = running.sims.as_ref().map_or(0, |s| s.pending_webhooks());
        let quiet = match running.engine.status().await {
            Ok(st) => {
                webhooks == 0
                    && st.ledger.queue_depth == 0
                    && st.ledger.events.get("pending").copied().unwrap_or(0) == 0
                    && st.ledger.writes.values().all(|w| w.pending == 0)
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

async fn check(
    running: &Running,
    opts: &DrillOptions,
    actors: &crate::sim::ActorReport,
    billing: Option<&BillingActivityReport>,
    quiesced: bool,
    started: Instant,
    faults_label: String,
) -> Result<DrillReport, RuntimeError> {
    let sims = running
        .sims
        .as_ref()
        .ok_or_else(|| RuntimeError::Internal("drill has no simulators".into()))?;
    let contacts = sims.crm.contacts();
    let customers = sims.billing.customers();
    let status = running.engine.status().await?;
    let ledger = running.engine.ledger();
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
            "{} contacts, {} customers carrying a contact id; duplicates: {:?}; contacts without a customer: {:?}; \
             without a customer but in dead letters: {:?}",
            contacts.len(),
            by_contact.len(),
            dups.iter().take(5).collect::<Vec<_>>(),
            missing.iter().take(5).collect::<Vec<_>>(),
            explained.iter().take(5).collect::<Vec<_>>()
        ),
    });

    // 2. Owner wins: owned fields equal on both sides, or the record is in review.
    let subscriptions = sims.billing.subscriptions();
    let invoices = sims.billing.invoices();
    let mapping = opts.contract.object("customer");
    let mut mismatches = Vec::new();
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
                    mismatches.push(format!(
                        "contact {cid} {}: crm {:?} billing {:?}",
                        f.name, crm_v, bill_v
                    ));
                }
            }
            // Billing-owned subscription and invoice fields, computed here from the billing
            // simulator's own objects (deliberately independent of the connector's code).
            if billing.is_some() {
                for (prop, want) in expected_billing_fields(cust, &subscriptions, &invoices) {
                    let got = s(c, &["properties", prop]);
                    if got != want && !reviewed.contains(&cid) {
                        mismatches.push(format!("contact {cid} {prop}: crm {got:?} billing {want:?}"));
                    }
                }
            }
        }
    }
    checks.push(Check {
        name: "owner_wins",
        ok: mismatches.is_empty(),
        detail: format!(
            "{} field mismatches outside review ({} records in review); first: {:?}",
            mismatches.len(),
            reviewed.len(),
            mismatches.iter().take(5).collect::<Vec<_>>()
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
                w.applied += 1;
            }
            if r.replayed {
                w.replayed += 1;
            }
        }
        w.bound = match side {
            // a create per contact, at most one write per CRM edit and per billing edit (revert)
            "billing" => actors.contacts_created + actors.crm_edits + actors.billing_edits,
            // the billing id written back once per contact; billing edits touch CRM-owned fields
            // only; each finance action or invoice may take a few events (created, finalized,
            // paid, customer.updated), each at most one CRM write
            _ => {
                actors.contacts_created
                    + actors.billing_edits
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
                status.ledger.events.get("echo").copied().unwrap_or(0)
            )
        } else {
            over.join("; ")
        },
    });

    // 4. Nothing lost, everything accounted: every billing event the system emitted is in the
    // inbox, and every inbox event is in exactly one state.
    let emitted = list_billing_events(&sims.billing.base_url(), sims.billing.api_key()).await;
    let (lost, emitted_n) = match &emitted {
        Ok(ids) => (
            ledger.missing_events(crate::contract::Side::Billing, ids).await?,
            ids.len(),
        ),
        Err(e) => (vec![format!("could not list billing events: {e}")], 0),
    };
    let by_state: i64 = status
        .ledger
        .events
        .iter()
        .filter(|(k, _)| k.as_str() != "duplicate")
        .map(|(_, v)| *v)
        .sum();
    let pending = status.ledger.events.get("pending").copied().unwrap_or(0);
    checks.push(Check {
        name: "every_event_accounted",
        ok: lost.is_empty() && by_state == status.ledger.distinct_events && pending == 0,
        detail: format!(
            "{emitted_n} billing events emitted, {} missing from the inbox {:?}; {} distinct events = sum of states {}; {} pending; {} duplicate deliveries dropped",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>(),
            status.ledger.distinct_events,
            by_state,
            pending,
            status.ledger.events.get("duplicate").copied().unwrap_or(0)
        ),
    });
    checks.push(Check {
        name: "quiesced",
        ok: quiesced,
        detail: if quiesced {
            "no pending webhooks, events or writes".into()
        } else {
            format!(
                "still busy after {:?}: queue depth {}",
                opts.settle_timeout, status.ledger.queue_depth
            )
        },
    });

    let ok = checks.iter().all(|c| c.ok);
    Ok(DrillReport {
        ok,
        seed: opts.seed,
        records: opts.records,
        edits: opts.edits,
        faults: faults_label,
        duration_ms: started.elapsed().as_millis(),
        quiesced,
        contacts: contacts.len(),
        billing_customers: customers.len(),
        events: status.ledger.events.clone(),
        events_total: status.ledger.events_total,
        writes,
        faults_injected,
        dead_letters: status.ledger.dead_letter_depth,
        review_depth: status.ledger.review_depth,
        lag_ms: status.ledger.lag_ms.clone(),
        checks,
    })
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
