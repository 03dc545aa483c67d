//! The CLI as scripts use it: exit codes, JSON output, pause through the ledger, the token.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
}

fn fixture(name: &str) -> String {
    format!("{}/tests/contracts/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn contract_check_prints_the_matrix_for_a_good_file() {
    let out = bin()
        .args([
            "contract",
            "check",
            &format!("{}/contracts/default.toml", env!("CARGO_MANIFEST_DIR")),
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "email",
        "lifecycle_stage",
        "billing_customer_id",
        "subscription_status",
        "invoice_balance",
    ] {
        assert!(text.contains(needle), "matrix lacks {needle}:\n{text}");
    }
}

#[test]
fn contract_check_lists_every_problem_with_its_location_and_exits_1() {
    let path = fixture("broken_many.toml");
    let out = bin().args(["contract", "check", &path]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("broken_many.toml:")).collect();
    assert!(lines.len() >= 5, "expected every problem, got:\n{text}");
    for l in &lines {
        let rest = l.split("broken_many.toml:").nth(1).unwrap_or("");
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts.next().and_then(|s| s.parse().ok()).expect("line number");
        let col: usize = parts.next().and_then(|s| s.parse().ok()).expect("column");
        assert!(line > 0 && col > 0, "{l}");
    }
}

#[test]
fn contract_check_never_echoes_a_literal_secret() {
    let path = fixture("literal_secret.toml");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let out = bin().args(["contract", "check", &path]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secretish in text
        .split('"')
        .filter(|s| s.starts_with("sk_") || s.starts_with("pat-"))
    {
        assert!(!printed.contains(secretish), "secret echoed: {printed}");
    }
}

#[test]
fn pause_and_resume_act_through_the_ledger_and_status_json_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let l = ledger.to_str().expect("utf8 path");
    let ok = bin()
        .args([
            "pause",
            "--destination",
            "billing",
            "--reason",
            "incident",
            "--ledger",
            l,
        ])
        .status()
        .expect("run");
    assert!(ok.success());
    let out = bin().args(["status", "--json", "--ledger", l]).output().expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    assert_eq!(v["paused"][0]["scope"], "billing");
    assert_eq!(v["paused"][0]["reason"], "incident");
    for state in [
        "pending",
        "applied",
        "duplicate",
        "echo",
        "superseded",
        "conflicted",
        "dead_lettered",
    ] {
        assert!(v["events"][state].is_i64(), "status lacks events.{state}");
    }
    for key in ["queue_depth", "dead_letter_depth", "review_depth"] {
        assert!(v[key].is_i64(), "status lacks {key}");
    }
    assert!(v["lag_ms"]["p95"].is_i64());
    assert!(v["writes"]["crm"]["done"].is_i64());
    assert!(bin()
        .args(["resume", "--destination", "billing", "--ledger", l])
        .status()
        .expect("run")
        .success());
    let out = bin().args(["status", "--json", "--ledger", l]).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["paused"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_requests_without_the_token_and_matches_status() {
    let d = crate::support::demo(driftless::sim::FaultProfile::none()).await;
    let base = format!("http://{}", d.running.addr);
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/api/status")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{base}/api/status?token=wrong"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{base}/api/status"))
        .bearer_auth(&d.running.token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["contract_version"], d.running.engine.contract().version.as_str());
    // Pause through the API is visible in the ledger.
    let r = http
        .post(format!("{base}/api/pause_outbound?token={}", d.running.token))
        .json(&serde_json::json!({"scope": "crm", "reason": "test"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(d.running.engine.ledger().pauses().await.unwrap()[0].scope, "crm");
    // A webhook with a bad signature is refused and nothing reaches the inbox.
    let r = http
        .post(format!("{base}/webhooks/stripe"))
        .header("Stripe-Signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(v["code"] == "stale_timestamp" || v["code"] == "bad_signature", "{v}");
    assert_eq!(d.running.engine.status().await.unwrap().ledger.events_total, 0);
    d.running.shutdown().await;
}

#[test]
fn backfill_and_migration_commands_speak_json_and_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let l = ledger.to_str().expect("utf8 path");
    let out = bin()
        .args(["backfill", "status", "--json", "--ledger", l])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v["run"].is_null());
    // No credentials in this process: the run fails with the reason and can be resumed.
    let out = bin()
        .args(["backfill", "start", "--system", "crm", "--ledger", l])
        .env_remove("DRIFTLESS_CRM_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("crm"));
    let out = bin()
        .args(["backfill", "status", "--json", "--ledger", l])
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["run"]["state"], "failed");
    assert!(v["run"]["error"].as_str().is_some_and(|e| e.contains("crm:contacts")));

    let out = bin()
        .args([
            "migration",
            "start",
            "--authority",
            "billing",
            "--reason",
            "provider switch",
            "--ledger",
            l,
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin()
        .args(["migration", "status", "--json", "--ledger", l])
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (v["authority"].as_str(), v["object"].is_null()),
        (Some("billing"), true)
    );
    let out = bin().args(["status", "--json", "--ledger", l]).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    assert_eq!(v["migration"]["reason"], "provider switch");
    let out = bin()
        .args([
            "migration",
            "start",
            "--authority",
            "crm",
            "--reason",
            "again",
            "--ledger",
            l,
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "one mode at a time");
    assert!(String::from_utf8_lossy(&out.stderr).contains("finish it first"));
    let ok = bin()
        .args(["migration", "finish", "--ledger", l])
        .status()
        .expect("run");
    assert!(ok.success());
    let out = bin().args(["status", "--json", "--ledger", l]).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    assert!(v["migration"].is_null());
}

/// Run the binary; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin().args(args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_debug_formatting(text: &str) {
    assert!(
        !text.contains("Some(") && !text.contains("None") && !text.contains('{') && !text.contains('}'),
        "debug formatting in:\n{text}"
    );
}

#[test]
fn pause_needs_a_reason_and_a_refused_pause_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let l = ledger.to_str().expect("utf8 path");
    // No --reason: refused before anything runs, the flag named in the usage.
    let (code, _, err) = run(&["pause", "--ledger", l]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--reason"), "{err}");
    // A blank reason: the engine's own refusal (the same check as POST /api/pause_outbound).
    let (code, _, err) = run(&["pause", "--destination", "crm", "--reason", "  ", "--ledger", l]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("a reason is required"), "{err}");
    // A destination that does not exist.
    let (code, _, err) = run(&["pause", "--destination", "nowhere", "--reason", "x", "--ledger", l]);
    assert_eq!(code, Some(2), "{err}");
    // Nothing was paused.
    let (code, out, err) = run(&["status", "--json", "--ledger", l]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    assert_eq!(v["paused"].as_array().map(Vec::len), Some(0), "{v}");
    let (_, out, _) = run(&["status", "--ledger", l]);
    assert!(
        out.contains("outbound writes: running") && !out.contains("PAUSED"),
        "{out}"
    );
    // Resume with a blank reason is refused too (leave it out instead).
    let (code, _, err) = run(&["resume", "--reason", " ", "--ledger", l]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("must say something"), "{err}");
    // Dead-letter retries, like discards, need a reason.
    let (code, _, err) = run(&["dead-letters", "retry", "--ledger", l]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--reason"), "{err}");
}

#[test]
fn the_text_output_people_read_has_no_debug_formatting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let l = ledger.to_str().expect("utf8 path");
    let (code, _, err) = run(&["dev", "seed-ledger", "--events", "40", "--records", "4", "--ledger", l]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["dev", "seed-dead-letters", "6", "--ledger", l]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&[
        "pause",
        "--destination",
        "billing",
        "--reason",
        "incident",
        "--ledger",
        l,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = run(&["status", "--ledger", l]);
    assert_eq!(code, Some(0), "{err}");
    no_debug_formatting(&out);
    assert!(
        out.contains("events: ") && out.contains(" pending, ") && out.contains(" applied"),
        "{out}"
    );
    assert!(out.contains("writes to crm: ") && out.contains(" done"), "{out}");
    assert!(out.contains("PAUSED billing by cli (incident)"), "{out}");
    // Observe mode's held writes, by destination.
    let (code, _, err) = run(&["writes", "off", "--reason", "audit", "--ledger", l]);
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = run(&["status", "--ledger", l]);
    no_debug_formatting(&out);
    assert!(out.contains("OBSERVING") && out.contains("held writes ("), "{out}");
    // The blast radius by destination.
    let (code, out, err) = run(&["dead-letters", "retry", "--reason", "fixed", "--ledger", l]);
    assert_eq!(code, Some(0), "{err}");
    no_debug_formatting(&out);
    assert!(
        out.contains("by destination: ") && out.contains("preview only"),
        "{out}"
    );
    // A record's ids: a missing one reads `none`, never `None` or `Some("…")`.
    let (code, out, err) = run(&["timeline", "customer:crm:scale-0000001", "--ledger", l]);
    assert_eq!(code, Some(0), "{err}");
    let head = out.lines().next().unwrap_or("");
    no_debug_formatting(head);
    assert!(head.contains("(crm scale-0000001, billing "), "{head}");
}
