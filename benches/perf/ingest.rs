//! Ingest against this machine's own ceilings, both measured in the same run.
//!
//! `webhook`: signed Stripe webhooks sent by concurrent senders on loopback to the real HTTP
//! server (`http::router`: verify the signature, parse, group commit into the inbox, answer),
//! 20 % of them re-deliveries of an event already sent. Baseline: the same HTTP stack (axum,
//! the same listener, client and layers — `http::outer_layers`: body cap, security headers) answering the same POSTs without verifying or
//! storing. The engine runs no workers here (ingest alone is measured).
//! Each round also measures two durable floors with the same stack and senders (reported
//! without a target, to read the engine's ratio against): a handler that only makes the raw
//! body durable — a group commit into an append-only log (`fdatasync`), and one into SQLite
//! with the ledger's pragmas (one multi-row insert of (unique key, body) rows). The engine's
//! path holds all of the SQLite floor's work (a group commit of keyed rows) and more.
//! Knobs: `PERF_WEBHOOK_EVENTS` (deliveries, default 20,000), `PERF_WEBHOOK_SENDERS` (default 32).
//!
//! Both sections run `PERF_ROUNDS` rounds (default 3), each a baseline run (then the floors)
//! then an engine run on fresh files, and report the round with the median ratio: this machine's speed drifts
//! (the same baseline measured 28,000–43,000/s within an hour), so a baseline taken once and
//! an engine run minutes later gave ratios that moved by a third.
//!
//! `batch`: polled pages of 100 Stripe events (20 % re-reads of events an earlier page held,
//! as an overlap window gives) → parsed → `Engine::ingest` (the pollers' path: the ledger's group
//! commit — dedupe, inbox, work queue) one page at a time. Baseline: sqlx's raw multi-row `INSERT` of
//! the same rows, one statement and one transaction per page, into a table with the inbox's
//! columns and its `(source, event_id)` key, on a ledger file with the same pragmas (WAL,
//! `synchronous=FULL`).
//! Knob: `PERF_BATCH_EVENTS` (default 100,000).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use driftless::connectors::Offline;
use driftless::engine::{Engine, EngineConfig, SystemClock, WebhookSecrets};
use driftless::ingest::{stripe, Routes};

use crate::report::{knob, Figure, Report};

const SECRET: &str = "whsec_perf_bench";

/// An engine with no connectors and no workers, on a fresh ledger in `dir`.
pub async fn bare_engine(dir: &std::path::Path) -> Result<Engine, String> {
    Engine::open(EngineConfig {
        ledger: dir.join("ledger.db"),
        contract: driftless::contract::default_contract(),
        crm: Arc::new(Offline {
            system: "crm",
            why: "benchmark: no CRM".into(),
        }),
        billing: Arc::new(Offline {
            system: "billing",
            why: "benchmark: no billing".into(),
        }),
        webhook_secrets: WebhookSecrets {
            stripe: Some(SECRET.into()),
            hubspot: None,
        },
        workers: 1,
        clock: Arc::new(SystemClock),
        demo: false,
    })
    .await
    .map_err(|e| format!("the engine did not open: {e}"))
}

/// A Stripe `customer.updated` event about customer `i` (event ids distinct per `round`).
fn stripe_event(round: usize, i: usize) -> Value {
    json!({
        "id": format!("evt_perf{round}_{i:08}"),
        "object": "event",
        "type": "customer.updated",
        "created": 1_700_000_000 + i as i64,
        "livemode": false,
        "data": {"object": {
            "id": format!("cus_perf_{:06}", i % 50_000),
            "object": "customer",
            "email": format!("perf{i}@example.test"),
            "name": "Perf Bench",
            "metadata": {"driftless_crm_id": format!("{}", 100_000 + i % 50_000)},
        }},
    })
}

/// The order in which events are sent: every fifth delivery repeats an earlier event.
fn deliveries(n: usize) -> Vec<usize> {
    let mut next = 0usize;
    (0..n)
        .map(|k| {
            if k % 5 == 4 && next > 0 {
                // A re-delivery of an event sent a little earlier.
                (next - 1).saturating_sub(k % 7)
            } else {
                next += 1;
                next - 1
            }
        })
        .collect()
}

fn sign(body: &[u8], t: i64) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    Ok(format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes())))
}

/// One blast's figures: wall time, non-2xx answers, mean request latency as the senders saw
/// it, and this process's CPU time over the blast (server, client and ledger threads alike).
struct Blast {
    secs: f64,
    bad: usize,
    latency_ms: f64,
    cpu_s: Option<f64>,
}

impl Blast {
    /// CPU µs per delivery: on 2 cores the HTTP baseline alone keeps both busy, so this is
    /// what bounds the ratio once the ledger's serial commit is not the limit.
    fn cpu_us_per(&self, n: usize) -> Option<f64> {
        self.cpu_s.map(|c| c * 1e6 / n as f64)
    }
}

/// User + system CPU seconds this process has used (Linux `/proc/self/stat`, in the kernel's
/// fixed 100 Hz `USER_HZ` ticks); `None` elsewhere.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is the first, utime the 12th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Send every request (body, signature) to `url` from `senders` concurrent tasks over one
/// keep-alive client.
async fn blast(url: &str, requests: Arc<Vec<(Vec<u8>, String)>>, senders: usize) -> Result<Blast, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu0 = process_cpu_s();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, requests, next, url) = (client.clone(), requests.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut bad, mut waited) = (0usize, Duration::ZERO);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((body, sig)) = requests.get(i) else { break };
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", sig)
                    .body(body.clone())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                    }
                    _ => bad += 1,
                }
                waited += sent.elapsed();
            }
            (bad, waited)
        }));
    }
    let (mut bad, mut waited) = (0, Duration::ZERO);
    for t in tasks {
        let (b, w) = t.await.map_err(|e| e.to_string())?;
        bad += b;
        waited += w;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Blast {
        secs,
        bad,
        latency_ms: waited.as_secs_f64() * 1e3 / requests.len().max(1) as f64,
        cpu_s: process_cpu_s().zip(cpu0).map(|(b, a)| b - a),
    })
}

async fn serve(app: axum::Router) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>), String> {
    let listener = driftless::http::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(driftless::http::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    Ok((addr, stop))
}

/// A durable floor: the same HTTP stack with a handler that only makes each POST's body
/// durable before it answers, with the cheapest group commit there is. One thread takes every
/// body waiting, stores them all with one write and one sync, and answers them all. No
/// verifying, parsing, dedupe or queue: what durability alone costs on this disk and these
/// cores, measured beside the engine so its ratio can be read against it.
#[derive(Clone, Copy)]
enum Floor {
    /// An append-only log of raw bodies: one `pwrite` a group over blocks written and synced
    /// beforehand (so `fdatasync` flushes data, not file metadata). The machine's floor.
    Log,
    /// One multi-row `INSERT` a group of (unique key, raw body) rows into SQLite, with the
    /// ledger's pragmas (WAL, `synchronous = FULL`). The floor of any SQLite ledger.
    Sqlite,
}

/// The floors each round measures, in this order.
const FLOORS: [Floor; 2] = [Floor::Log, Floor::Sqlite];

/// A body to make durable, and where to say it is.
type Delivery = (axum::body::Bytes, tokio::sync::oneshot::Sender<()>);
/// A floor's group commit: every delivery of the group durable, or why not.
type Store = Box<dyn FnMut(&[Delivery]) -> Result<(), String> + Send>;

impl Floor {
    fn name(self) -> &'static str {
        match self {
            Floor::Log => "raw log, fdatasync",
            Floor::Sqlite => "raw SQLite insert",
        }
    }

    /// The floor's app, storing into `dir` (room for `bytes` of bodies).
    fn app(self, dir: &std::path::Path, bytes: usize) -> Result<axum::Router, String> {
        let err = |e: &dyn std::fmt::Display| format!("durable floor ({}): {e}", self.name());
        let mut store: Store = match self {
            Floor::Log => {
                use std::io::Write as _;
                use std::os::unix::fs::FileExt as _;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(dir.join("floor.log"))
                    .map_err(|e| err(&e))?;
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..bytes.div_ceil(zeros.len()) {
                    file.write_all(&zeros).map_err(|e| err(&e))?;
                }
                file.sync_all().map_err(|e| err(&e))?;
                let (mut at, mut buf) = (0u64, Vec::new());
                Box::new(move |group| {
                    buf.clear();
                    for (body, _) in group {
                        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                        buf.extend_from_slice(body);
                    }
                    file.write_all_at(&buf, at)
                        .and_then(|()| file.sync_data())
                        .map_err(|e| e.to_string())?;
                    at += buf.len() as u64;
                    Ok(())
                })
            }
            Floor::Sqlite => {
                let db = rusqlite::Connection::open(dir.join("floor.db")).map_err(|e| err(&e))?;
                db.execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     CREATE TABLE raw (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, body BLOB NOT NULL);",
                )
                .map_err(|e| err(&e))?;
                let mut seq = 0u64;
                Box::new(move |group| {
                    let sql = format!(
                        "INSERT INTO raw (key, body) VALUES {}",
                        vec!["(?, ?)"; group.len()].join(", ")
                    );
                    let keys: Vec<String> = group
                        .iter()
                        .map(|_| {
                            seq += 1;
                            format!("k{seq:012}")
                        })
                        .collect();
                    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(group.len() * 2);
                    let bodies: Vec<&[u8]> = group.iter().map(|(b, _)| b.as_ref()).collect();
                    for (key, body) in keys.iter().zip(&bodies) {
                        values.extend([key as &dyn rusqlite::ToSql, body]);
                    }
                    let tx = db.unchecked_transaction().map_err(|e| e.to_string())?;
                    tx.prepare_cached(&sql)
                        .and_then(|mut st| st.execute(rusqlite::params_from_iter(values)))
                        .map_err(|e| e.to_string())?;
                    tx.commit().map_err(|e| e.to_string())
                })
            }
        };
        let (tx, rx) = std::sync::mpsc::channel::<Delivery>();
        std::thread::Builder::new()
            .name("durable-floor".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    group.extend(rx.try_iter());
                    // A failed store leaves its group unanswered: each sender counts a failure.
                    if let Err(e) = store(&group) {
                        eprintln!("perf: [webhook] durable floor: {e}");
                        continue;
                    }
                    for (_, done) in group {
                        let _ = done.send(());
                    }
                }
            })
            .map_err(|e| err(&e))?;
        Ok(driftless::http::outer_layers(axum::Router::new().route(
            "/webhooks/stripe",
            axum::routing::post(move |body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let (done, durable) = tokio::sync::oneshot::channel();
                    if tx.send((body, done)).is_ok() && durable.await.is_ok() {
                        Ok(accepted())
                    } else {
                        Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                    }
                }
            }),
        )))
    }
}

/// What the baseline and the floors answer: the engine's answer to one new event.
fn accepted() -> axum::Json<Value> {
    axum::Json(json!({"accepted": 1, "duplicates": 0}))
}

/// The round whose engine/baseline ratio is the median of `rounds` (engine s, baseline s).
pub fn median_round(rounds: &[(f64, f64)]) -> (f64, f64) {
    let mut by_ratio = rounds.to_vec();
    by_ratio.sort_by(|a, b| (b.1 / b.0).total_cmp(&(a.1 / a.0)));
    by_ratio[by_ratio.len() / 2]
}

pub async fn webhook(report: &mut Report) -> Result<(), String> {
    let n: usize = knob("PERF_WEBHOOK_EVENTS", 20_000);
    let senders: usize = knob("PERF_WEBHOOK_SENDERS", 32);
    let rounds: usize = knob("PERF_ROUNDS", 3).max(1);
    let now = chrono::Utc::now().timestamp();
    let order = deliveries(n);
    let distinct = order.iter().collect::<std::collections::HashSet<_>>().len();

    // Baseline: the same stack, answering without verifying or storing.
    let baseline_app = driftless::http::outer_layers(axum::Router::new().route(
        "/webhooks/stripe",
        axum::routing::post(|_body: axum::body::Bytes| async { accepted() }),
    ));
    let (base_addr, base_stop) = serve(baseline_app).await?;
    let base_url = format!("http://{base_addr}/webhooks/stripe");

    // Rounds alternate baseline and engine, so a machine whose speed drifts (a shared VM)
    // moves both sides of the ratio alike; the median round is reported.
    // Each round's (engine, baseline, floors), in `FLOORS` order.
    let mut done: Vec<(Blast, Blast, Vec<Blast>)> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let requests: Vec<(Vec<u8>, String)> = order
            .iter()
            .map(|&i| {
                let body = serde_json::to_vec(&stripe_event(round, i)).map_err(|e| e.to_string())?;
                let sig = sign(&body, now)?;
                Ok((body, sig))
            })
            .collect::<Result<_, String>>()?;
        let requests = Arc::new(requests);
        if round == 0 {
            let warm: Arc<Vec<(Vec<u8>, String)>> = Arc::new(requests.iter().take(200).cloned().collect());
            blast(&base_url, warm, senders).await?;
        }
        let base = blast(&base_url, requests.clone(), senders).await?;

        // The durable floors, on fresh files.
        let mut floors = Vec::with_capacity(FLOORS.len());
        for floor in FLOORS {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let bytes = requests.iter().map(|(b, _)| b.len() + 4).sum();
            let (addr, stop) = serve(floor.app(dir.path(), bytes)?).await?;
            let f = blast(&format!("http://{addr}/webhooks/stripe"), requests.clone(), senders).await?;
            let _ = stop.send(());
            if f.bad > 0 {
                return Err(format!("durable floor ({}): {} non-2xx answers", floor.name(), f.bad));
            }
            floors.push(f);
        }

        // The engine, on a fresh ledger: verify, parse, group commit, answer.
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let engine = bare_engine(dir.path()).await?;
        let app = driftless::http::router(engine.clone(), "perf-token".into(), None);
        let (addr, stop) = serve(app).await?;
        let url = format!("http://{addr}/webhooks/stripe");
        let eng = blast(&url, requests.clone(), senders).await?;
        let _ = stop.send(());
        let st = engine.status().await.map_err(|e| e.to_string())?;
        engine.shutdown().await;
        // Everything acknowledged is durable and counted once.
        let held = st.ledger.distinct_events as usize;
        let dups = st.ledger.events_total as usize - held;
        if eng.bad > 0 || base.bad > 0 || held != distinct || held + dups != n {
            return Err(format!(
                "deliveries not all accounted: {} engine / {} baseline non-2xx answers, \
                 {held} distinct events held (sent {distinct}), {dups} duplicates counted (sent {})",
                eng.bad,
                base.bad,
                n - distinct
            ));
        }
        let us = |b: &Blast| b.cpu_us_per(n).map_or("?".to_string(), |c| format!("{c:.0}"));
        let line = |b: &Blast| {
            format!(
                "{:.0}/s ({} µs CPU and {:.2} ms a delivery)",
                n as f64 / b.secs,
                us(b),
                b.latency_ms
            )
        };
        eprintln!(
            "perf: [webhook] round {}: engine {}, baseline {}; durable floors: {}",
            round + 1,
            line(&eng),
            line(&base),
            FLOORS
                .iter()
                .zip(&floors)
                .map(|(fl, f)| format!("{} {} = {:.2} x baseline", fl.name(), line(f), base.secs / f.secs))
                .collect::<Vec<_>>()
                .join("; ")
        );
        done.push((eng, base, floors));
    }
    let _ = base_stop.send(());
    let blast_json =
        |b: &Blast| json!({"s": b.secs, "cpu_us_per_delivery": b.cpu_us_per(n), "latency_ms": b.latency_ms});
    let per_round: Vec<Value> = done
        .iter()
        .map(|(eng, base, floors)| {
            json!({
                "engine_s": eng.secs, "baseline_s": base.secs, "ratio": base.secs / eng.secs,
                "engine_cpu_us_per_delivery": eng.cpu_us_per(n), "baseline_cpu_us_per_delivery": base.cpu_us_per(n),
                "engine_latency_ms": eng.latency_ms, "baseline_latency_ms": base.latency_ms,
                "floors": FLOORS.iter().zip(floors).map(|(fl, f)| json!({"floor": fl.name(), "blast": blast_json(f)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let times: Vec<(f64, f64)> = done.iter().map(|(eng, base, _)| (eng.secs, base.secs)).collect();
    let (secs, base_s) = median_round(&times);
    let rate = n as f64 / secs;
    let baseline = n as f64 / base_s;
    report.add(Figure {
        name: "webhook ingest (verify, durable, dedupe, ack)".into(),
        value: rate,
        unit: "events/s".into(),
        baseline: Some(baseline),
        target: ">= 0.5 x HTTP baseline".into(),
        met: Some(rate >= 0.5 * baseline),
        detail: json!({
            "deliveries": n, "distinct_events": distinct, "duplicates": n - distinct,
            "senders": senders, "engine_s": secs, "baseline_s": base_s,
            "rounds": per_round,
            "baseline": "the same axum stack answering the POST without verifying or storing",
            "cpu": "process CPU (server, client and ledger threads) over the blast, per delivery; latency is the senders' mean",
        }),
    });
    // What durability alone allows here, for reading the figure above: no target of their own.
    for (k, floor) in FLOORS.iter().enumerate() {
        let t: Vec<(f64, f64)> = done
            .iter()
            .map(|(_, base, floors)| (floors[k].secs, base.secs))
            .collect();
        let (secs, base_s) = median_round(&t);
        report.add(Figure {
            name: format!("  durable floor: {}", floor.name()),
            value: n as f64 / secs,
            unit: "events/s".into(),
            baseline: Some(n as f64 / base_s),
            target: "(reference: no target)".into(),
            met: None,
            detail: json!({
                "floor": floor.name(),
                "what": "the same HTTP stack and senders; the handler only makes the raw body durable (one thread, group commit: every body waiting, one write, one sync) and answers; no verify, parse, dedupe or queue",
                "rounds": t.iter().map(|(f, b)| json!({"floor_s": f, "baseline_s": b, "ratio": b / f})).collect::<Vec<_>>(),
            }),
        });
    }
    Ok(())
}

pub async fn batch(report: &mut Report) -> Result<(), String> {
    const PAGE: usize = 100;
    let n: usize = knob("PERF_BATCH_EVENTS", 100_000);
    let order = deliveries(n);
    let distinct = order.iter().collect::<std::collections::HashSet<_>>().len();
    let pages: Vec<Vec<Value>> = order
        .chunks(PAGE)
        .map(|c| c.iter().map(|&i| stripe_event(0, i)).collect())
        .collect();
    let routes = Routes::from_contract(&driftless::contract::default_contract());

    // Baseline: raw multi-row INSERTs of the same rows (parsed the same way, outside the timing).
    let rows: Vec<Vec<driftless::ledger::NewEvent>> = pages
        .iter()
        .map(|p| {
            p.iter()
                .map(|v| stripe::event_from_value(v, "poll", 0, &routes))
                .collect::<Result<Vec<_>, String>>()
        })
        .collect::<Result<_, _>>()?;
    let rounds: usize = knob("PERF_ROUNDS", 3).max(1);
    // Rounds alternate baseline and engine, each on fresh files, so a machine whose speed
    // drifts moves both sides of the ratio alike; the median round is reported.
    let mut times = Vec::with_capacity(rounds);
    let mut schema_s = 0f64;
    let mut parse_s = 0f64;
    for round in 0..rounds {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let base_s = raw_baseline(&dir.path().join("raw.db"), &rows, false).await?;
        if round == 0 {
            // The same raw insert into the ledger's own inbox table (its indexes): how much of
            // the gap is the schema rather than the ingest path.
            schema_s = raw_baseline(&dir.path().join("schema.db"), &rows, true).await?;
        }

        // The pollers' path: parse the page, then Engine::ingest (group commit: dedupe, queue).
        let engine = bare_engine(dir.path()).await?;
        let start = Instant::now();
        let mut parsing = 0f64;
        for page in &pages {
            let now = chrono::Utc::now().timestamp_millis();
            let t0 = Instant::now();
            let events = page
                .iter()
                .map(|v| stripe::event_from_value(v, "poll", now, &routes))
                .collect::<Result<Vec<_>, String>>()?;
            parsing += t0.elapsed().as_secs_f64();
            engine.ingest(events).await.map_err(|e| e.to_string())?;
        }
        let secs = start.elapsed().as_secs_f64();
        let st = engine.status().await.map_err(|e| e.to_string())?;
        engine.shutdown().await;
        let held = st.ledger.distinct_events as usize;
        if held != distinct || st.ledger.events_total as usize != n {
            return Err(format!(
                "events not accounted: {held} distinct held (sent {distinct}), {} deliveries counted (sent {n})",
                st.ledger.events_total
            ));
        }
        eprintln!(
            "perf: [batch] round {}: engine {:.0}/s, baseline {:.0}/s",
            round + 1,
            n as f64 / secs,
            n as f64 / base_s
        );
        parse_s = parse_s.max(parsing);
        times.push((secs, base_s));
    }
    let (secs, base_s) = median_round(&times);
    let baseline = n as f64 / base_s;
    let rate = n as f64 / secs;
    report.add(Figure {
        name: "batch ingest (polled pages of 100)".into(),
        value: rate,
        unit: "events/s".into(),
        baseline: Some(baseline),
        target: ">= 0.5 x raw multi-row insert".into(),
        met: Some(rate >= 0.5 * baseline),
        detail: json!({
            "events": n, "distinct_events": distinct, "page_size": PAGE, "pages": pages.len(),
            "engine_s": secs, "engine_parse_s_max": parse_s, "baseline_s": base_s,
            "rounds": times.iter().map(|(e, b)| json!({"engine_s": e, "baseline_s": b, "ratio": b / e})).collect::<Vec<_>>(),
            "raw_insert_into_ledger_inbox_per_sec": n as f64 / schema_s,
            "baseline": "sqlx raw multi-row INSERT, one per page, same columns and (source, event_id) key, WAL + synchronous=FULL",
        }),
    });
    Ok(())
}

/// sqlx's raw multi-row insert of the same rows, one transaction per page: into a table with
/// the inbox's columns and key, or (`ledger_schema`) into a migrated ledger's own inbox table.
async fn raw_baseline(
    path: &std::path::Path,
    pages: &[Vec<driftless::ledger::NewEvent>],
    ledger_schema: bool,
) -> Result<f64, String> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};
    let e = |e: sqlx::Error| e.to_string();
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .map_err(e)?;
    if ledger_schema {
        driftless::ledger::Ledger::open(path)
            .await
            .map_err(|e| e.to_string())?
            .close()
            .await;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, source TEXT NOT NULL, event_id TEXT NOT NULL, \
         via TEXT NOT NULL, event_type TEXT NOT NULL, object_type TEXT NOT NULL, object_id TEXT NOT NULL, \
         entity_key TEXT NOT NULL, payload TEXT NOT NULL, received_at_ms INTEGER NOT NULL, \
         UNIQUE (source, event_id))",
    )
    .execute(&mut conn)
    .await
    .map_err(e)?;
    let start = Instant::now();
    for page in pages {
        let mut tx = conn.begin().await.map_err(e)?;
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO inbox (source, event_id, via, event_type, object_type, object_id, entity_key, \
             payload, received_at_ms) ",
        );
        qb.push_values(page, |mut b, ev| {
            b.push_bind(ev.source.as_str())
                .push_bind(&ev.event_id)
                .push_bind(ev.via)
                .push_bind(&ev.event_type)
                .push_bind(&ev.object_type)
                .push_bind(&ev.object_id)
                .push_bind(&ev.entity_key)
                .push_bind(&ev.payload)
                .push_bind(ev.received_at_ms);
        });
        qb.push(" ON CONFLICT (source, event_id) DO NOTHING");
        qb.build().execute(&mut *tx).await.map_err(e)?;
        tx.commit().await.map_err(e)?;
    }
    Ok(start.elapsed().as_secs_f64())
}
