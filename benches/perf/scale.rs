//! Ledger at scale (issue #8): a 1,000,000-event ledger (`Ledger::seed_history`: events with
//! their fates, duplicates, writes, audit, ~1% of writes dead-lettered) served by the real
//! engine as a child process (`driftless serve --demo --actors off`); the console API is
//! called over HTTP, sequentially, and the engine's memory is read from /proc.
//!
//! Knobs: `PERF_SCALE_EVENTS` (default 1,000,000), `PERF_SCALE_RECORDS` (default 50,000),
//! `PERF_SCALE_CALLS` (calls per kind, default 200).
//!
//! Figures: `ledger 1M: engine RSS` (VmHWM, target < 150 MB; the demo's in-process simulators
//! are counted too, so it is an upper bound for the engine) and `ledger 1M: p95 <call>` for
//! the overview, dead-letter list pages (first, deep offset, filtered, filtered deep) and the
//! record timeline (target < 50 ms each).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::report::{knob, percentile, Figure, Report};

/// Kills the engine when dropped (every exit path of the section).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proc_status_kb(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn label(events: i64) -> String {
    if events % 1_000_000 == 0 {
        format!("{}M", events / 1_000_000)
    } else if events % 1_000 == 0 {
        format!("{}k", events / 1_000)
    } else {
        events.to_string()
    }
}

enum Call {
    Get(String),
    Post(&'static str, Value),
}

pub async fn ledger_at_scale(report: &mut Report) -> Result<(), String> {
    let events: i64 = knob("PERF_SCALE_EVENTS", 1_000_000);
    let records: i64 = knob("PERF_SCALE_RECORDS", 50_000);
    let calls: usize = knob("PERF_SCALE_CALLS", 200);
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let path = dir.path().join("scale.db");

    let t0 = Instant::now();
    let seeded = {
        let l = driftless::ledger::Ledger::open(&path)
            .await
            .map_err(|e| format!("open ledger: {e}"))?;
        let s = l
            .seed_history(events, records, chrono::Utc::now().timestamp_millis())
            .await
            .map_err(|e| format!("seed: {e}"))?;
        l.close().await;
        s
    };
    let seed_s = t0.elapsed().as_secs_f64();
    let db_mb = std::fs::metadata(&path).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    eprintln!("perf: [scale] seeded {seeded:?} in {seed_s:.1} s ({db_mb:.0} MB)");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let token = format!("perf-{}", uuid::Uuid::new_v4().simple());
    let log = std::fs::File::create(dir.path().join("engine.log")).map_err(|e| format!("log: {e}"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["serve", "--demo", "--actors", "off", "--ledger"])
        .arg(&path)
        .args(["--addr", &format!("127.0.0.1:{port}"), "--token", &token])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    let mut guard = ChildGuard(child);
    let pid = guard.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))?;

    let t_start = Instant::now();
    loop {
        if let Ok(Some(status)) = guard.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("engine.log")).unwrap_or_default();
            return Err(format!("the engine exited with {status}: {}", log.trim()));
        }
        let ok = http
            .get(format!("{base}/api/status"))
            .bearer_auth(&token)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ok {
            break;
        }
        if t_start.elapsed() > Duration::from_secs(120) {
            return Err("the engine did not answer within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_s = t_start.elapsed().as_secs_f64();

    let send = |call: &Call| {
        let req = match call {
            Call::Get(p) => http.get(format!("{base}{p}")),
            Call::Post(p, body) => http.post(format!("{base}{p}")).json(body),
        };
        req.bearer_auth(&token).send()
    };
    // The dead-letter total, to aim the deep pages.
    let list: Value = send(&Call::Post("/api/list_dead_letters", json!({"limit": 1})))
        .await
        .map_err(|e| format!("list_dead_letters: {e}"))?
        .json()
        .await
        .map_err(|e| format!("list_dead_letters: {e}"))?;
    let total = list["total"].as_i64().unwrap_or(0);
    let filter = json!({"destination": "billing", "error_class": "validation", "limit": 50});
    let filtered: Value = send(&Call::Post("/api/list_dead_letters", filter.clone()))
        .await
        .map_err(|e| format!("list_dead_letters: {e}"))?
        .json()
        .await
        .map_err(|e| format!("list_dead_letters: {e}"))?;
    let filtered_total = filtered["total"].as_i64().unwrap_or(0);
    let mut deep_filtered = filter.clone();
    deep_filtered["offset"] = json!((filtered_total * 9 / 10).max(0));

    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let n_records = seeded.records.max(1);
    type Make<'a> = Box<dyn FnMut(&mut rand::rngs::StdRng) -> Call + 'a>;
    let kinds: Vec<(&str, Make)> = vec![
        ("overview", Box::new(|_| Call::Get("/api/overview".into()))),
        (
            "dead letters page 1",
            Box::new(|_| Call::Post("/api/list_dead_letters", json!({"limit": 50}))),
        ),
        (
            "dead letters deep page",
            Box::new(move |_| Call::Post("/api/list_dead_letters", json!({"limit": 50, "offset": total * 9 / 10}))),
        ),
        (
            "dead letters filtered",
            Box::new(move |_| Call::Post("/api/list_dead_letters", filter.clone())),
        ),
        (
            "dead letters filtered deep",
            Box::new(move |_| Call::Post("/api/list_dead_letters", deep_filtered.clone())),
        ),
        (
            "record timeline",
            Box::new(move |rng: &mut rand::rngs::StdRng| {
                let r = rng.gen_range(1..=n_records);
                Call::Get(format!(
                    "/api/record_timeline?query={}",
                    driftless::ledger::seeded_record(r).replace(':', "%3A")
                ))
            }),
        ),
    ];
    let name = label(events);
    let mut results = Vec::new();
    for (kind, mut make) in kinds {
        let mut samples = Vec::with_capacity(calls);
        let mut bytes = 0usize;
        for i in 0..calls + 5 {
            let call = make(&mut rng);
            let t = Instant::now();
            let resp = send(&call).await.map_err(|e| format!("{kind}: {e}"))?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| format!("{kind}: {e}"))?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                return Err(format!("{kind}: HTTP {status}: {}", String::from_utf8_lossy(&body)));
            }
            if i >= 5 {
                samples.push(ms);
                bytes = body.len();
            }
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        eprintln!(
            "perf: [scale] {kind}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            percentile(&samples, 50.0),
            percentile(&samples, 95.0),
            percentile(&samples, 100.0)
        );
        results.push((kind, samples, bytes));
    }
    let hwm = proc_status_kb(pid, "VmHWM:").ok_or("cannot read the engine's VmHWM")? / 1024.0;
    let rss = proc_status_kb(pid, "VmRSS:").unwrap_or(0.0) / 1024.0;
    let anon = proc_status_kb(pid, "RssAnon:").unwrap_or(0.0) / 1024.0;
    let file = proc_status_kb(pid, "RssFile:").unwrap_or(0.0) / 1024.0;
    drop(guard);

    let seed_detail = json!({
        "events": seeded.events, "records": seeded.records, "pending": seeded.pending,
        "duplicates": seeded.duplicates, "writes": seeded.writes, "dead_letters": seeded.dead_letters,
        "audit_rows": seeded.audit, "seed_s": seed_s, "ledger_mb": db_mb, "engine_ready_s": ready_s,
    });
    report.add(Figure {
        name: format!("ledger {name}: engine RSS"),
        value: hwm,
        unit: "MB".into(),
        baseline: None,
        target: "< 150 MB".into(),
        met: Some(hwm < 150.0),
        detail: json!({
            "vm_hwm_mb": hwm, "vm_rss_mb": rss, "rss_anon_mb": anon, "rss_file_mb": file,
            "note": "driftless serve --demo --actors off: the demo's in-process simulators are counted, so this is an upper bound for the engine",
            "seed": seed_detail,
        }),
    });
    for (kind, samples, bytes) in results {
        let p95 = percentile(&samples, 95.0);
        report.add(Figure {
            name: format!("ledger {name}: p95 {kind}"),
            value: p95,
            unit: "ms".into(),
            baseline: None,
            target: "< 50 ms".into(),
            met: Some(p95 < 50.0),
            detail: json!({
                "p50_ms": percentile(&samples, 50.0), "p95_ms": p95, "max_ms": percentile(&samples, 100.0),
                "calls": samples.len(), "warmup_calls": 5, "response_bytes": bytes,
                "dead_letters_total": total, "dead_letters_filtered_total": filtered_total,
                "seed_s": seed_s,
            }),
        });
    }
    Ok(())
}
