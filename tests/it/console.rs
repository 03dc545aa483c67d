//! The console's HTTP surface: overview, live stream, OpenAPI, Prometheus, embedded UI.

use std::time::Duration;

use driftless::sim::FaultProfile;

use crate::support::{demo, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_stream_metrics_openapi_and_ui_are_served_behind_the_token() {
    let d = demo(FaultProfile::none()).await;
    let base = format!("http://{}", d.running.addr);
    let tok = d.running.token.clone();
    let http = reqwest::Client::new();
    let sims = d.running.sims.clone().expect("sims");
    sims.crm.create_contact(&[("email", "console@example.test")]);
    eventually(20, "the contact synced", || {
        let sims = sims.clone();
        async move { (sims.billing.customers().len() == 1).then_some(()) }
    })
    .await;

    let o: serde_json::Value = http
        .get(format!("{base}/api/overview?token={tok}"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = o["charts"]
        .as_array()
        .expect("charts")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "lag",
            "drops",
            "rate_limited",
            "rate_wait",
            "queue_depth",
            "error_rate",
            "backlog"
        ]
    );
    assert_eq!(o["health"]["state"], "running", "{}", o["health"]);
    assert_eq!(o["reconciliation"]["message"], "no reconciliation run yet");
    assert_eq!(o["systems"]["demo"], true);
    let st: serde_json::Value = http
        .get(format!("{base}/api/status"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(o["status"]["contract_version"], st["contract_version"]);

    // Paused shows in health with the reason.
    let r = http
        .post(format!("{base}/api/pause_outbound?token={tok}"))
        .json(&serde_json::json!({"scope": "billing", "reason": "card processor incident"}))
        .send()
        .await
        .expect("send");
    let pr: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        pr,
        serde_json::json!({"scope": "billing", "paused": true, "changed": true})
    );
    let o: serde_json::Value = http
        .get(format!("{base}/api/overview?token={tok}"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(o["health"]["state"], "paused");
    assert!(o["health"]["reasons"][0]
        .as_str()
        .unwrap_or("")
        .contains("card processor incident"));
    let bad = http
        .post(format!("{base}/api/pause_outbound?token={tok}"))
        .json(&serde_json::json!({"scope": "everything"}))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status().as_u16(), 400);
    let e: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(e["code"], "bad_request");

    // The live stream: refused without the token, an `overview` event with it.
    assert_eq!(
        http.get(format!("{base}/api/stream"))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        401
    );
    let mut resp = http
        .get(format!("{base}/api/stream?token={tok}"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("event: overview") && std::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    assert!(text.contains("event: overview"), "{text}");
    assert!(text.contains("\"health\""), "{text}");
    drop(resp);

    // Prometheus and OpenAPI.
    let m = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("send");
    assert!(m.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain"));
    let m = m.text().await.expect("text");
    assert!(m.contains("driftless_events{state=\"applied\"}"), "{m}");
    assert!(m.contains("driftless_paused{scope=\"billing\"} 1"), "{m}");
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        401
    );
    let doc: serde_json::Value = http
        .get(format!("{base}/api/openapi.json?token={tok}"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(doc["paths"]["/api/overview"].is_object());

    // The UI is served with a strict CSP and never leaks the token through a Referer.
    let page = http.get(format!("{base}/?token={tok}")).send().await.expect("send");
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("object-src 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.expect("html").to_lowercase();
    assert!(html.contains("<!doctype html"), "{html}");
    let nf = http
        .get(format!("{base}/api/nope?token={tok}"))
        .send()
        .await
        .expect("send");
    assert_eq!(nf.status().as_u16(), 404);
    d.running.shutdown().await;
}

/// The console starts, follows and cancels a reconciliation and a backfill over the wire:
/// one of each at a time (`busy`), a cancel leaves the run resumable, the next start finishes
/// it and its report names the drift injected behind the engine's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_and_backfill_run_in_the_background_from_the_console() {
    let d = demo(FaultProfile::none()).await;
    let base = format!("http://{}", d.running.addr);
    let tok = d.running.token.clone();
    let http = reqwest::Client::new();
    let sims = d.running.sims.clone().expect("sims");
    let mut pairs = Vec::new();
    for i in 0..4 {
        pairs.push(crate::support::synced_contact(&d, &format!("bg{i}@example.test")).await);
    }
    assert!(driftless::drill::wait_quiescent(&d.running, Duration::from_secs(20)).await);
    sims.crm.suppress_webhooks(true);
    sims.crm
        .edit_contact(&pairs[0].0, &[("lifecyclestage", "opportunity")])
        .expect("edit");
    // Slow answers so the run is still going when the second start and the cancel arrive.
    let slow = FaultProfile::parse("slow=1,slow_ms=300").expect("profile");
    sims.crm.set_faults(slow.clone());
    sims.billing.set_faults(slow);

    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}/api/{path}"))
            .bearer_auth(&tok)
            .json(&body)
            .send()
    };
    let get = |path: &str| http.get(format!("{base}/api/{path}")).bearer_auth(&tok).send();

    let r = post("start_reconcile", serde_json::json!({})).await.expect("send");
    assert_eq!(r.status(), 200);
    let st: serde_json::Value = r.json().await.expect("json");
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["schedule"], "nightly");
    let r = post("start_reconcile", serde_json::json!({})).await.expect("send");
    assert_eq!(r.status(), 409, "a second run while one is going is refused");
    let err: serde_json::Value = r.json().await.expect("json");
    assert_eq!(err["code"], "busy", "{err}");

    let st: serde_json::Value = post("cancel_reconcile", serde_json::json!({}))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(st["cancelling"], true, "{st}");
    let stopped: serde_json::Value = eventually(30, "the cancelled run stopped", || {
        let r = get("reconciliation_state");
        async move {
            let v: serde_json::Value = r.await.ok()?.json().await.ok()?;
            (v["running"] == false).then_some(v)
        }
    })
    .await;
    assert!(stopped["last"].is_null(), "a cancelled run is not finished: {stopped}");
    let current = &stopped["current"];
    assert_eq!(current["state"], "running", "left resumable: {stopped}");
    assert!(
        current["log"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x.as_str().is_some_and(|s| s.contains("cancel asked")))),
        "{current}"
    );
    let pages_at_cancel = current["pages_read"].as_i64().expect("pages");

    sims.crm.set_faults(FaultProfile::none());
    sims.billing.set_faults(FaultProfile::none());
    let r = post("start_reconcile", serde_json::json!({"window_days": 7}))
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let done: serde_json::Value = eventually(60, "the resumed run finished", || {
        let r = get("reconciliation_state");
        async move {
            let v: serde_json::Value = r.await.ok()?.json().await.ok()?;
            (v["running"] == false && !v["last"].is_null()).then_some(v)
        }
    })
    .await;
    let last = &done["last"];
    assert_eq!(
        last["run"]["id"], current["id"],
        "the cancelled run was resumed, not restarted"
    );
    assert!(last["run"]["pages_read"].as_i64().expect("pages") >= pages_at_cancel);
    assert_eq!(last["compared"], 4, "{last}");
    assert_eq!(last["mismatched_records"], 1, "{last}");
    assert_eq!(last["by_field"]["lifecycle_stage"], 1, "{last}");
    assert!(done["current"].is_null() && done["last_error"].is_null(), "{done}");
    let bad = post("start_reconcile", serde_json::json!({"window_days": 400}))
        .await
        .expect("send");
    assert_eq!(bad.status(), 400);

    // A backfill from the console, followed to its end; a bad system is named.
    let bad = post("start_backfill", serde_json::json!({"systems": "erp"}))
        .await
        .expect("send");
    assert_eq!(bad.status(), 400);
    let r = post("start_backfill", serde_json::json!({"systems": "crm"}))
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let p: serde_json::Value = eventually(60, "the backfill finished", || {
        let r = get("backfill_state");
        async move {
            let v: serde_json::Value = r.await.ok()?.json().await.ok()?;
            (v["job_running"] == false && v["run"]["state"] == "done").then_some(v)
        }
    })
    .await;
    assert_eq!(p["run"]["records"], 4, "{p}");
    assert!(p["last_error"].is_null(), "{p}");

    let m: serde_json::Value = get("migration_status").await.expect("send").json().await.expect("json");
    assert!(m.is_null());
    let v: serde_json::Value = get("validation_report?object=customer")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["crm_records"], 4, "{v}");
    let r = get("validation_report?object=nothing").await.expect("send");
    assert_eq!(r.status(), 400);
    d.running.shutdown().await;
}

/// The operator actions are reachable over the wire with the engine's names and answer in
/// `{code, message}` when refused: a record's timeline, a replay preview and run, the review
/// queue, the dead-letter list and its bulk preview, un-drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_answer_over_http_with_the_engines_errors() {
    let d = demo(FaultProfile::none()).await;
    let (crm_id, billing_id) = crate::support::synced_contact(&d, "ops-http@example.test").await;
    let api = crate::support::Api::of(&d);
    let call = |method, path: &str, body| api.call(method, path, body);
    use reqwest::Method;

    let (code, t) = call(Method::GET, "record_timeline?query=ops-http%40example.test", None).await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["crm_id"], crm_id.as_str());
    assert_eq!(t["billing_id"], billing_id.as_str());
    assert!(t["entries"].as_array().is_some_and(|e| !e.is_empty()));
    let (code, e) = call(Method::GET, "record_timeline?query=nobody%40example.test", None).await;
    assert_eq!((code, e["code"].as_str()), (404, Some("not_found")));

    let sel = serde_json::json!({"selector": {"from_ms": null, "to_ms": null, "record": crm_id, "dead_letter_ids": []}, "dry_run": true});
    let (code, p) = call(Method::POST, "replay", Some(sel.clone())).await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        (p["records"].as_i64(), p["queued"].as_bool()),
        (Some(1), Some(false)),
        "{p}"
    );
    let (code, p) = call(
        Method::POST,
        "replay",
        Some(serde_json::json!({"selector": {"from_ms": null, "to_ms": null, "record": null, "dead_letter_ids": []}})),
    )
    .await;
    assert_eq!((code, p["code"].as_str()), (400, Some("bad_request")), "{p}");
    call(
        Method::POST,
        "pause_outbound",
        Some(serde_json::json!({"scope": "global", "reason": "test"})),
    )
    .await;
    let mut run = sel.clone();
    run["dry_run"] = serde_json::json!(false);
    let (code, p) = call(Method::POST, "replay", Some(run.clone())).await;
    assert_eq!(
        (code, p["code"].as_str()),
        (409, Some("paused")),
        "a replay is refused while paused: {p}"
    );
    call(
        Method::POST,
        "resume_outbound",
        Some(serde_json::json!({"scope": "global"})),
    )
    .await;
    let (code, p) = call(Method::POST, "replay", Some(run)).await;
    assert_eq!((code, p["queued"].as_bool()), (200, Some(true)), "{p}");

    let (code, l) = call(
        Method::POST,
        "list_dead_letters",
        Some(serde_json::json!({"limit": 50})),
    )
    .await;
    assert_eq!(code, 200, "{l}");
    assert_eq!(l["total"], 0);
    let (code, b) = call(
        Method::POST,
        "discard_dead_letters",
        Some(serde_json::json!({"filter": {}, "dry_run": false, "reason": " "})),
    )
    .await;
    assert_eq!(
        (code, b["code"].as_str()),
        (400, Some("bad_request")),
        "a discard needs a reason: {b}"
    );
    let (code, b) = call(
        Method::POST,
        "retry_dead_letters",
        Some(serde_json::json!({"filter": {}, "dry_run": true})),
    )
    .await;
    assert_eq!((code, b["applied"].as_bool()), (200, Some(false)), "{b}");

    let (code, r) = call(Method::GET, "list_reviews", None).await;
    assert_eq!((code, r.as_array().map(Vec::len)), (200, Some(0)), "{r}");
    let (code, r) = call(
        Method::POST,
        "resolve_review",
        Some(serde_json::json!({"id": 999, "resolution": {"choices": [], "reason": "x"}})),
    )
    .await;
    assert_eq!((code, r["code"].as_str()), (404, Some("not_found")), "{r}");
    let (code, r) = call(
        Method::POST,
        "undrop_event",
        Some(serde_json::json!({"inbox_id": 999_999, "reason": "look again"})),
    )
    .await;
    assert_eq!((code, r["code"].as_str()), (404, Some("not_found")), "{r}");
    d.running.shutdown().await;
}

// ---- Replay runs, the audit log and the contract (issue 7's Replay, Audit log, Contract screens). ----

/// A replay run is followed until its record has no queued work left; the audit log lists it
/// with filters and the CSV export streams the same rows; the contract answer names the
/// version `status` reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_runs_the_audit_log_and_the_contract_over_http() {
    let d = demo(FaultProfile::none()).await;
    let base = format!("http://{}", d.running.addr);
    let tok = d.running.token.clone();
    let http = reqwest::Client::new();
    let (crm_id, _) = crate::support::synced_contact(&d, "replay-run@example.test").await;
    let api = crate::support::Api::of(&d);
    let call = |method, path: &str, body| api.call(method, path, body);
    use reqwest::Method;

    let sel = serde_json::json!({"selector": {"record": crm_id, "dead_letter_ids": []}, "dry_run": false});
    let (code, p) = call(Method::POST, "replay", Some(sel)).await;
    assert_eq!((code, p["queued"].as_bool()), (200, Some(true)), "{p}");
    let run_id = p["run_id"].as_i64().expect("a run id");
    let mut run = serde_json::Value::Null;
    for _ in 0..100 {
        let (code, r) = call(Method::GET, &format!("replay_run?id={run_id}"), None).await;
        assert_eq!(code, 200, "{r}");
        run = r;
        if run["state"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(
        (run["records"].as_i64(), run["pending"].as_i64(), run["done"].as_i64()),
        (Some(1), Some(0), Some(1))
    );
    let (_, latest) = call(Method::GET, "replay_run", None).await;
    assert_eq!(latest["id"].as_i64(), Some(run_id));
    // Cancelling a finished run changes nothing.
    let (code, c) = call(Method::POST, "cancel_replay", Some(serde_json::json!({"id": run_id}))).await;
    assert_eq!(
        (code, c["state"].as_str(), c["cancelled"].as_i64()),
        (200, Some("done"), Some(0)),
        "{c}"
    );
    let (code, e) = call(Method::POST, "cancel_replay", Some(serde_json::json!({"id": 999_999}))).await;
    assert_eq!((code, e["code"].as_str()), (404, Some("not_found")), "{e}");

    // The audit log: the replay by record (email resolves to the record key), by actor prefix.
    let (code, l) = call(
        Method::POST,
        "list_audit",
        Some(serde_json::json!({"action": "replay", "record": "replay-run@example.test"})),
    )
    .await;
    assert_eq!(code, 200, "{l}");
    assert_eq!(l["total"], 1, "{l}");
    assert_eq!(l["items"][0]["actor"], "operator:console");
    assert!(l["items"][0]["detail"]
        .as_str()
        .unwrap_or("")
        .contains(&format!("\"run\":{run_id}")));
    let (_, ops) = call(
        Method::POST,
        "list_audit",
        Some(serde_json::json!({"actor": "operator:", "limit": 1})),
    )
    .await;
    assert!(ops["total"].as_i64().unwrap_or(0) >= 1, "{ops}");
    assert_eq!(ops["items"].as_array().map(Vec::len), Some(1), "one row per page of 1");
    let (code, e) = call(
        Method::POST,
        "list_audit",
        Some(serde_json::json!({"from_ms": 10, "to_ms": 5})),
    )
    .await;
    assert_eq!((code, e["code"].as_str()), (400, Some("bad_request")), "{e}");

    // The CSV export streams exactly the filtered rows, newest first (a fixed end keeps the set still).
    // Rows before the newest one's millisecond: later rows can only come after it.
    let (_, newest) = call(Method::POST, "list_audit", Some(serde_json::json!({"limit": 1}))).await;
    let to = newest["items"][0]["at_ms"].as_i64().expect("an audit row");
    let (_, all) = call(
        Method::POST,
        "list_audit",
        Some(serde_json::json!({"to_ms": to, "limit": 1000})),
    )
    .await;
    let r = http
        .get(format!("{base}/api/audit_csv?to_ms={to}"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    let csv = r.text().await.expect("text");
    let ids: Vec<i64> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    let want: Vec<i64> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_i64())
        .collect();
    assert_eq!(
        all["total"].as_i64(),
        Some(want.len() as i64),
        "fewer than 1000 rows here"
    );
    assert!(!want.is_empty());
    assert_eq!(ids, want, "the CSV holds the listed rows in order");
    assert!(csv.starts_with("id,at,record,"));

    // The contract: the embedded default (the demo), the version status reports, every object.
    let (code, c) = call(Method::GET, "contract_info", None).await;
    assert_eq!(code, 200, "{c}");
    let (_, s) = call(Method::GET, "status", None).await;
    assert_eq!(c["version"], s["contract_version"]);
    assert_eq!((c["embedded"].as_bool(), c["path"].is_null()), (Some(true), true));
    let fields: usize = c["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["fields"].as_array().map_or(0, Vec::len))
        .sum();
    let default = driftless::contract::default_contract();
    assert_eq!(fields, default.objects.iter().map(|o| o.fields.len()).sum::<usize>());
    d.running.shutdown().await;
}

/// The Dead letters screen's routes: one dead letter's detail (404 in words for an unknown
/// id) and the filtered set streamed as CSV, also with the token in the query (a download
/// link), never without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_detail_and_csv_export_over_http() {
    let d = demo(FaultProfile::none()).await;
    let base = format!("http://{}", d.running.addr);
    let tok = d.running.token.clone();
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_millis();
    let added = d
        .running
        .engine
        .ledger()
        .seed_dead_letters(10_000, now)
        .await
        .expect("seed");
    assert_eq!(added, 10_000);

    let list: serde_json::Value = http
        .post(format!("{base}/api/list_dead_letters"))
        .bearer_auth(&tok)
        .json(&serde_json::json!({"destination": "crm", "error_class": "exhausted", "limit": 5000}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let items = list["items"].as_array().expect("items").clone();
    assert_eq!(list["total"].as_i64(), Some(items.len() as i64));
    assert!(items.len() > 2_000, "more than one CSV page: {}", items.len());

    let first = &items[0];
    let r = http
        .get(format!("{base}/api/dead_letter_detail?id={}", first["id"]))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let det: serde_json::Value = r.json().await.expect("json");
    assert_eq!(&det["dead_letter"], first);
    assert_eq!(det["write_state"], "dead_lettered");
    assert!(det["request"]
        .as_str()
        .is_some_and(|q| q.contains(first["idempotency_key"].as_str().unwrap_or("?"))));
    let r = http
        .get(format!("{base}/api/dead_letter_detail?id=987654321"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(e["code"], "not_found");

    // The CSV: a header, then the same rows in the same order (more than one page of 2,000).
    let r = http
        .get(format!(
            "{base}/api/export_dead_letters?destination=crm&error_class=exhausted&token={tok}"
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    let text = r.text().await.expect("body");
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("id,created_at,")));
    let ids: Vec<i64> = lines
        .map(|l| l.split(',').next().and_then(|x| x.parse().ok()).expect("an id"))
        .collect();
    let want: Vec<i64> = items.iter().filter_map(|x| x["id"].as_i64()).collect();
    assert_eq!(ids, want);

    let r = http
        .get(format!("{base}/api/export_dead_letters"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    d.running.shutdown().await;
}

/// The reconciliation screen's API: finished runs with their rates (newest first), one run's
/// report, its CSV, the repair of the latest run in two steps (preview writes nothing, repair
/// fixes the systems: the next run is clean) and an older run's repair refused as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_runs_reports_csv_and_repair_of_the_latest_run_over_http() {
    let d = demo(FaultProfile::none()).await;
    let base = format!("http://{}", d.running.addr);
    let tok = d.running.token.clone();
    let http = reqwest::Client::new();
    let sims = d.running.sims.clone().expect("sims");
    let mut pairs = Vec::new();
    for i in 0..3 {
        pairs.push(crate::support::synced_contact(&d, &format!("rs{i}@example.test")).await);
    }
    assert!(driftless::drill::wait_quiescent(&d.running, Duration::from_secs(20)).await);
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}/api/{path}"))
            .bearer_auth(&tok)
            .json(&body)
            .send()
    };
    let get = |path: String| http.get(format!("{base}/api/{path}")).bearer_auth(&tok).send();
    let json = |r: reqwest::Response| async move { r.json::<serde_json::Value>().await.expect("json") };
    let run_to_end = |n: usize| {
        let post = &post;
        let get = &get;
        async move {
            let r = post("start_reconcile", serde_json::json!({})).await.expect("send");
            assert_eq!(r.status(), 200);
            eventually(60, "the run finished", || async move {
                let v: serde_json::Value = get("reconcile_runs".into()).await.ok()?.json().await.ok()?;
                (v.as_array()?.len() == n).then_some(v)
            })
            .await
        }
    };

    let runs = run_to_end(1).await;
    let clean_id = runs[0]["id"].as_i64().expect("id");
    assert_eq!(runs[0]["mismatched"], 0, "{runs}");

    // Drift behind the engine's back: a CRM-owned field edited in the CRM, another edited in
    // billing, no webhook delivered.
    sims.crm.suppress_webhooks(true);
    sims.billing.suppress_webhooks(true);
    sims.crm
        .edit_contact(&pairs[0].0, &[("lifecyclestage", "opportunity")])
        .expect("edit");
    sims.billing
        .edit_customer(&pairs[1].1, Some("changed-in-billing@example.test"), &[])
        .expect("edit");
    let runs = run_to_end(2).await;
    let id = runs[0]["id"].as_i64().expect("id");
    assert!(id > clean_id, "newest first: {runs}");
    assert_eq!(runs[1]["id"], clean_id);
    assert_eq!(runs[0]["compared"], 3, "{runs}");
    assert_eq!(runs[0]["mismatched"], 2, "{runs}");
    assert!((runs[0]["mismatch_rate"].as_f64().expect("rate") - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(runs[0]["trigger"], "console");
    let one: serde_json::Value = json(get("reconcile_runs?limit=1".into()).await.expect("send")).await;
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    assert_eq!(get("reconcile_runs?limit=0".into()).await.expect("send").status(), 400);

    let report = json(get(format!("reconcile_report?id={id}")).await.expect("send")).await;
    assert_eq!(report["by_field"]["lifecycle_stage"], 1, "{report}");
    assert_eq!(report["by_field"]["email"], 1, "{report}");
    let email = report["mismatches"]
        .as_array()
        .expect("mismatches")
        .iter()
        .find(|m| m["kind"] == "field" && m["name"] == "email")
        .cloned()
        .expect("the email mismatch");
    assert_eq!(email["entity_key"], format!("customer:crm:{}", pairs[1].0));
    assert_eq!(email["crm_value"], "rs1@example.test");
    assert_eq!(email["billing_value"], "changed-in-billing@example.test");
    assert_eq!(email["owner"], "crm");
    assert!(email["first_seen_ms"].as_i64().is_some());
    assert_eq!(
        get("reconcile_report?id=999999".into()).await.expect("send").status(),
        404
    );

    // The CSV: a header and one line per mismatch, the same as the report.
    let r = get(format!("reconcile_csv?id={id}")).await.expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    let csv = r.text().await.expect("text");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "run,record,kind,name,crm_value,billing_value,owner,first_seen,detail"
    );
    assert_eq!(
        lines.len() - 1,
        report["mismatches"].as_array().map_or(0, Vec::len),
        "{csv}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "customer:crm:{},field,email,rs1@example.test,changed-in-billing@example.test,crm",
            pairs[1].0
        ))),
        "{csv}"
    );
    assert_eq!(get("reconcile_csv?id=999999".into()).await.expect("send").status(), 404);

    // An older run's findings may be stale: refused, naming the latest.
    let r = post(
        "reconcile_repair",
        serde_json::json!({"run_id": clean_id, "records": ["all"], "dry_run": true}),
    )
    .await
    .expect("send");
    assert_eq!(r.status(), 400);
    let err = json(r).await;
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("not the latest") && m.contains(&id.to_string())),
        "{err}"
    );
    let r = post("reconcile_repair", serde_json::json!({"run_id": id, "records": []}))
        .await
        .expect("send");
    assert_eq!(r.status(), 400, "a repair names its records");

    // Preview: the writes, nothing written.
    let billing_writes = || sims.billing.request_log().iter().filter(|r| r.mutating).count();
    let before = billing_writes();
    let runs_before = runs.as_array().map_or(0, Vec::len);
    let dry = json(
        post(
            "reconcile_repair",
            serde_json::json!({"run_id": id, "records": ["all"], "dry_run": true}),
        )
        .await
        .expect("send"),
    )
    .await;
    let p = &dry["repair"];
    assert_eq!(p["queued"], false, "{dry}");
    assert_eq!(p["records"], 2, "{dry}");
    assert!(p["updates"].as_i64().unwrap_or(0) >= 2, "{dry}");
    assert_eq!(billing_writes(), before, "the preview wrote nothing");
    let email_now = |bid: &str| {
        sims.billing
            .customers()
            .iter()
            .find(|c| c["id"] == bid)
            .and_then(|c| c["email"].as_str().map(str::to_string))
    };
    assert_eq!(
        email_now(&pairs[1].1).as_deref(),
        Some("changed-in-billing@example.test")
    );

    // Repair: queued through replay; billing shows the owner's value again.
    sims.crm.suppress_webhooks(false);
    sims.billing.suppress_webhooks(false);
    let done = json(
        post(
            "reconcile_repair",
            serde_json::json!({"run_id": id, "records": ["all"]}),
        )
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(done["repair"]["queued"], true, "{done}");
    assert!(done["repair"]["run_id"].as_i64().is_some(), "{done}");
    eventually(30, "the billing email repaired", || {
        let e = email_now(&pairs[1].1);
        async move { (e.as_deref() == Some("rs1@example.test")).then_some(()) }
    })
    .await;
    assert!(driftless::drill::wait_quiescent(&d.running, Duration::from_secs(30)).await);
    assert_eq!(
        json(get("reconcile_runs".into()).await.expect("send"))
            .await
            .as_array()
            .map(Vec::len),
        Some(runs_before),
        "repair compared nothing again: no new run"
    );
    let runs = run_to_end(3).await;
    assert_eq!(runs[0]["mismatched"], 0, "the next run is clean: {runs}");
    d.running.shutdown().await;
}
