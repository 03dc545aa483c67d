//! Hostile input against the server (issue 19): tokens, addresses, Host and Origin games,
//! malformed and misleading request bodies, and what every refusal looks like. Each test
//! fails without its fix.

use std::process::Command;

use driftless::sim::FaultProfile;

use crate::support::{demo, Api};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
}

/// `serve` with these arguments and environment must refuse to start: exit 2-ish (not 0),
/// within seconds, saying `needle`.
fn refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let mut cmd = bin();
    cmd.args(["serve", "--demo", "--ledger"])
        .arg(&ledger)
        .args(args)
        .env_remove("DRIFTLESS_TOKEN")
        .env("DRIFTLESS_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} started instead of refusing ({needle})");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "serve {args:?} exited 0");
    assert!(err.contains(needle), "serve {args:?}: expected {needle:?} in:\n{err}");
    assert!(
        !err.contains("Some(") && !err.contains("{ "),
        "debug formatting in: {err}"
    );
}

#[test]
fn an_empty_or_short_token_is_refused_at_start() {
    refused(&["--token", ""], &[], "at least 32");
    refused(&["--token", "short-token"], &[], "11 characters");
    // Exported but empty: once silently turned authentication off.
    refused(&[], &[("DRIFTLESS_TOKEN", "")], "at least 32");
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("token");
    std::fs::write(&f, "\n").expect("write");
    refused(&["--token-file", f.to_str().expect("utf8")], &[], "at least 32");
}

#[test]
fn a_non_loopback_address_needs_the_flag_a_public_url_and_a_token_not_on_the_command_line() {
    let long = "0123456789abcdef0123456789abcdef";
    refused(&["--addr", "0.0.0.0:0"], &[], "not a loopback address");
    refused(
        &["--addr", "0.0.0.0:0", "--allow-non-loopback"],
        &[("DRIFTLESS_TOKEN", long)],
        "--public-url",
    );
    refused(
        &[
            "--addr",
            "0.0.0.0:0",
            "--allow-non-loopback",
            "--public-url",
            "https://sync.example.com",
        ],
        &[],
        "fixed API token",
    );
    refused(
        &[
            "--addr",
            "0.0.0.0:0",
            "--allow-non-loopback",
            "--public-url",
            "https://sync.example.com",
            "--token",
            long,
        ],
        &[],
        "not --token",
    );
}

#[test]
fn serve_options_refuse_short_tokens_and_open_addresses_in_every_shell() {
    use driftless::runtime::ServeOptions;
    let opts = |token: Option<&str>, addr: &str, allow: bool, public: Option<&str>| ServeOptions {
        ledger: "x.db".into(),
        addr: addr.parse().expect("addr"),
        workers: 1,
        public_url: public.map(str::to_string),
        token: token.map(str::to_string),
        allow_non_loopback: allow,
    };
    let long = "0123456789abcdef0123456789abcdef";
    assert!(opts(Some(""), "127.0.0.1:0", false, None).check().is_err());
    assert!(
        opts(Some("a b c d e f g h i j k l m n o p q r"), "127.0.0.1:0", false, None)
            .check()
            .is_err()
    );
    assert!(opts(Some(long), "127.0.0.1:0", false, None).check().is_ok());
    assert!(opts(None, "127.0.0.1:0", false, None).check().is_ok());
    assert!(opts(None, "[::1]:0", false, None).check().is_ok());
    assert!(opts(Some(long), "10.1.2.3:80", false, Some("https://s.example"))
        .check()
        .is_err());
    assert!(opts(Some(long), "10.1.2.3:80", true, Some("https://s.example"))
        .check()
        .is_ok());
    assert!(opts(Some(long), "10.1.2.3:80", true, Some("ftp://s.example"))
        .check()
        .is_err());
}

async fn answer(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let res = r.send().await.expect("send");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("status {status}: not JSON ({ct}): {text:?}"));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_origin_games_are_refused_and_webhooks_are_not_affected() {
    let d = demo(FaultProfile::none()).await;
    let api = Api::of(&d);
    let host = d.running.addr.to_string();
    // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own Host.
    for path in ["/api/status", "/", "/assets/x.js", "/metrics"] {
        let (status, v) = answer(
            api.request(reqwest::Method::GET, path)
                .header("Host", "evil.example:8417"),
        )
        .await;
        assert_eq!((status, v["code"].as_str()), (403, Some("host_not_allowed")), "{path}");
    }
    let (status, _) = answer(
        api.request(reqwest::Method::GET, "/api/status")
            .header("Host", "localhost"),
    )
    .await;
    assert_eq!(status, 200);
    // A cross-origin page with a leaked token cannot drive the API.
    let pause = serde_json::json!({"scope": "global", "reason": "origin test"});
    let (status, v) = answer(
        api.request(reqwest::Method::POST, "/api/pause_outbound")
            .header("Origin", "http://evil.example")
            .json(&pause),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (403, Some("origin_not_allowed")));
    let (status, _) = answer(
        api.request(reqwest::Method::POST, "/api/pause_outbound")
            .header("Origin", "null")
            .json(&pause),
    )
    .await;
    assert_eq!(status, 403);
    assert!(d.running.engine.ledger().pauses().await.expect("pauses").is_empty());
    // The console's own origin is fine.
    let (status, _) = answer(
        api.request(reqwest::Method::POST, "/api/pause_outbound")
            .header("Origin", format!("http://{host}"))
            .json(&pause),
    )
    .await;
    assert_eq!(status, 200);
    // Webhooks are authenticated by signature, whatever name the tunnel uses.
    let (status, v) = answer(
        reqwest::Client::new()
            .post(format!("{}/webhooks/stripe", api.base()))
            .header("Host", "hooks.example.com")
            .header("Stripe-Signature", "t=1,v1=00")
            .body("{}"),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (401, Some("stale_timestamp")), "{v}");
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_routes_need_a_json_body_with_known_fields_and_pause_needs_a_reason() {
    let d = demo(FaultProfile::none()).await;
    let api = Api::of(&d);
    let post = |path: &str| api.request(reqwest::Method::POST, path);
    // No body at all: once paused everything with no reason.
    let (status, v) = answer(post("/api/pause_outbound")).await;
    assert_eq!((status, v["code"].as_str()), (415, Some("unsupported_media_type")));
    let (status, v) = answer(post("/api/pause_outbound").header("Content-Type", "application/json")).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("body_required")));
    // A misspelt field: once paused *everything*.
    let (status, v) = answer(post("/api/pause_outbound").json(&serde_json::json!({"destination": "billing"}))).await;
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `destination`"),
        "{v}"
    );
    // A form or text body (what a cross-origin page can send without a preflight).
    let (status, _) = answer(
        post("/api/pause_outbound")
            .header("Content-Type", "text/plain")
            .body(r#"{"scope":"global","reason":"x"}"#),
    )
    .await;
    assert_eq!(status, 415);
    // Pause keeps a reason.
    let (status, v) = answer(post("/api/pause_outbound").json(&serde_json::json!({"scope": "crm"}))).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")));
    assert!(v["message"].as_str().unwrap_or("").contains("reason"), "{v}");
    let (status, _) =
        answer(post("/api/pause_outbound").json(&serde_json::json!({"scope": "crm", "reason": "  "}))).await;
    assert_eq!(status, 400);
    assert!(
        d.running.engine.ledger().pauses().await.expect("pauses").is_empty(),
        "a refused request paused something"
    );
    // Routes without arguments still take `{}` as JSON.
    let (status, _) = answer(post("/api/cancel_reconcile").json(&serde_json::json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = answer(post("/api/cancel_reconcile").json(&serde_json::json!({"now": true}))).await;
    assert_eq!(status, 400);

    // Every error is the API's JSON: too large, wrong method, bad query, unknown query field.
    // (A body refused part-read closes its connection: each goes on a client of its own.)
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, v) = answer(
        reqwest::Client::new()
            .post(format!("{}/api/list_audit", api.base()))
            .bearer_auth(api.token())
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"text":"{big}"}}"#)),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (413, Some("too_large")));
    let (status, v) = answer(api.request(reqwest::Method::GET, "/api/pause_outbound")).await;
    assert_eq!((status, v["code"].as_str()), (405, Some("method_not_allowed")));
    let (status, v) = answer(api.request(reqwest::Method::GET, "/api/reconcile_report?id=abc")).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")));
    let (status, _) = answer(api.request(reqwest::Method::GET, "/api/reconcile_runs?limit=5&lmit=6")).await;
    assert_eq!(status, 400);
    // The launch token in the query is not an argument.
    let (status, _) = answer(reqwest::Client::new().get(format!(
        "{}/api/reconcile_runs?limit=5&token={}",
        api.base(),
        api.token()
    )))
    .await;
    assert_eq!(status, 200);
    let (status, v) = answer(
        reqwest::Client::new()
            .post(format!("{}/webhooks/stripe", api.base()))
            .body(big),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (413, Some("too_large")));

    // The document lists those answers for every route.
    let (_, doc) = answer(api.request(reqwest::Method::GET, "/api/openapi.json")).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let codes = op["responses"].as_object().expect("responses");
            for c in ["400", "401", "403", "405", "503"] {
                assert!(codes.contains_key(c), "{method} {path} does not list {c}");
            }
            if method == "post" {
                for c in ["413", "415"] {
                    assert!(codes.contains_key(c), "{method} {path} does not list {c}");
                }
            }
        }
    }
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_webhook_secret_is_made_per_launch() {
    let a = demo(FaultProfile::none()).await;
    let b = demo(FaultProfile::none()).await;
    let secret = |d: &crate::support::Demo| d.running.sims.as_ref().expect("sims").crm.webhook_secret().to_string();
    let (sa, sb) = (secret(&a), secret(&b));
    assert_ne!(sa, sb, "two launches share a webhook secret");
    assert!(sa.len() >= 32 && sa != "sim-client-secret", "{sa}");
    a.running.shutdown().await;
    b.running.shutdown().await;
}
