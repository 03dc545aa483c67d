//! `driftless connect` (the real binary) against the simulators: a bad key changes nothing;
//! a good key is tested read-only, the CRM properties are previewed then created, the contract
//! references the keychain entry, the ledger starts in observe mode; `serve` on that ledger
//! ingests and plans but writes nothing until `writes on`, then the held writes go out once.
//! And no secret reaches the logs (debug level), the ledger (every table, raw db/WAL bytes) or
//! the contract.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use driftless::ledger::Ledger;
use driftless::sim::{LoggedRequest, SimConfig, Simulators};
use sqlx::{Connection, Row};

use crate::support::{eventually, prop};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The default contract pointed at the simulators (comments and layout as shipped).
fn write_contract(dir: &Path, crm: &str, billing: &str) -> PathBuf {
    let text = driftless::contract::DEFAULT_CONTRACT
        .replace("https://api.hubapi.com", crm)
        .replace("https://api.stripe.com", billing);
    let p = dir.join("driftless.toml");
    std::fs::write(&p, text).expect("write contract");
    p
}

/// Run `driftless connect SYSTEM --json` with the key on stdin; the JSON step lines.
fn connect(
    system: &str,
    contract: &Path,
    ledger: &Path,
    service: &str,
    key: &str,
    extra: &[&str],
) -> (Output, Vec<serde_json::Value>) {
    let mut child = bin()
        .args([
            "connect",
            system,
            "--key-stdin",
            "--json",
            "--keychain-service",
            service,
        ])
        .arg("--contract")
        .arg(contract)
        .arg("--ledger")
        .arg(ledger)
        .args(extra)
        .env("DRIFTLESS_LOG", "debug")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn connect");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(format!("{key}\n").as_bytes()).expect("write key");
    }
    let out = child.wait_with_output().expect("connect runs");
    let steps = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out, steps)
}

fn step<'a>(steps: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {steps:?}"))
}

fn writes(log: &[LoggedRequest]) -> Vec<String> {
    log.iter()
        .filter(|r| r.method != "GET" && r.mutating)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

async fn sims_with(key: &str, token: &str, crm_webhook_secret: &str) -> Simulators {
    Simulators::start(SimConfig {
        seed: 11,
        billing_api_key: key.into(),
        crm_token: token.into(),
        crm_webhook_secret: crm_webhook_secret.into(),
        ..SimConfig::default()
    })
    .await
    .expect("simulators start")
}

/// A loopback server answering every request with 200 and a body that is not an API's.
async fn garbage_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..16 {
            let Ok((mut s, _)) = l.accept().await else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let body = "<html>captive portal</html>";
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_bad_key_an_unreachable_host_and_garbage_and_changes_nothing() {
    let sims = sims_with(&unique("sk_test_"), &unique("pat-"), &unique("cs-")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let service = unique("driftless-it-");
    let contract = write_contract(dir.path(), &sims.crm.base_url(), &sims.billing.base_url());
    let before = std::fs::read(&contract).expect("read");

    for (system, key) in [("crm", "pat-wrong-token"), ("billing", "sk_test_wrong")] {
        let (out, steps) = connect(system, &contract, &ledger, &service, key, &["--yes"]);
        assert_eq!(out.status.code(), Some(1), "{system}: {steps:?}");
        let last = steps.last().expect("an error line");
        assert_eq!(last["step"], "error");
        let detail = last["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("key was refused (401"), "{detail}");
        assert!(!detail.contains(key), "the key is echoed: {detail}");
    }
    assert_eq!(std::fs::read(&contract).expect("read"), before, "contract changed");
    assert!(!ledger.exists(), "a ledger was created");
    assert!(writes(&sims.crm.request_log()).is_empty());
    assert!(writes(&sims.billing.request_log()).is_empty());

    // Unreachable: a port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", free.local_addr().expect("addr"));
    drop(free);
    let c2 = write_contract(dir.path(), &sims.crm.base_url(), &dead);
    let (out, steps) = connect("billing", &c2, &ledger, &service, sims.billing.api_key(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let detail = steps.last().expect("line")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("cannot reach"), "{detail}");

    // Garbage: something answers 200, but not Stripe.
    let c3 = write_contract(dir.path(), &sims.crm.base_url(), &garbage_server().await);
    let (out, steps) = connect("billing", &c3, &ledger, &service, sims.billing.api_key(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let detail = steps.last().expect("line")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("not the Stripe API"), "{detail}");
    assert!(!ledger.exists());
    sims.shutdown().await;
}

/// Every table's rows as text (SQLite's `quote()` of each column), one line per row.
async fn dump_ledger(path: &Path) -> String {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open ledger");
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut conn)
        .await
        .expect("tables");
    assert!(tables.len() >= 8, "tables: {tables:?}");
    let mut out = String::new();
    for t in &tables {
        let cols: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{t}\")"))
            .fetch_all(&mut conn)
            .await
            .expect("columns")
            .iter()
            .map(|r| r.get::<String, _>(1))
            .collect();
        let expr = cols
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {expr} FROM \"{t}\""))
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        for r in rows {
            out.push_str(t);
            out.push('|');
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

/// The ledger file and its WAL/shm companions, raw.
fn raw_ledger_bytes(path: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

/// Where `secret` appears: the names of the haystacks containing it.
fn leaks(secret: &str, haystacks: &[(&str, &[u8])]) -> Vec<String> {
    haystacks
        .iter()
        .filter(|(_, h)| h.windows(secret.len()).any(|w| w == secret.as_bytes()))
        .map(|(n, _)| n.to_string())
        .collect()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn stop(mut self) -> Vec<u8> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read(&self.log).unwrap_or_default()
    }
}

/// The engine serving a ledger (another process) has done all it can for now: no webhook
/// waiting at the simulators, and every queued record parked by the write gate (observe mode
/// or a pause), so none has a write on its way. `view` is the test's own connection.
async fn all_held(view: &Ledger, sims: &Simulators) -> bool {
    sims.pending_webhooks() == 0 && matches!(view.workable_queue_depth().await, Ok(0))
}

async fn status(ledger: &Path) -> serde_json::Value {
    let out = bin()
        .args(["status", "--json", "--ledger"])
        .arg(ledger)
        .output()
        .expect("status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_then_observe_then_writes_on_and_no_secret_leaks() {
    let (billing_key, crm_token, crm_whsec) = (unique("sk_test_"), unique("pat-na1-"), unique("cs-"));
    let sims = sims_with(&billing_key, &crm_token, &crm_whsec).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let service = unique("driftless-it-");
    let contract = write_contract(dir.path(), &sims.crm.base_url(), &sims.billing.base_url());
    let mut outputs: Vec<u8> = Vec::new();

    // CRM without --yes: the preview lists the missing properties; none is created.
    let (out, steps) = connect("crm", &contract, &ledger, &service, &crm_token, &[]);
    outputs.extend(&out.stdout);
    outputs.extend(&out.stderr);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(step(&steps, "test")["ok"], true);
    let preview = step(&steps, "properties_preview")["data"]["properties"]
        .as_array()
        .expect("properties")
        .clone();
    let missing: Vec<String> = preview
        .iter()
        .filter(|p| p["exists"] == false)
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    for needed in ["driftless_origin", "billing_customer_id", "subscription_status"] {
        assert!(
            missing.iter().any(|m| m == needed),
            "{needed} not previewed: {missing:?}"
        );
    }
    assert!(preview.iter().all(|p| p["type"] == "string" && p["label"].is_string()));
    assert_eq!(step(&steps, "properties")["ok"], false);
    assert!(writes(&sims.crm.request_log()).is_empty(), "preview wrote");

    // With --yes: created (once each), then all exist.
    let (out, steps) = connect("crm", &contract, &ledger, &service, &crm_token, &["--yes"]);
    outputs.extend(&out.stdout);
    outputs.extend(&out.stderr);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Vec<String> = step(&steps, "properties")["data"]["created"]
        .as_array()
        .expect("created")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(created, missing);
    let posts = writes(&sims.crm.request_log());
    assert_eq!(posts.len(), missing.len(), "{posts:?}");
    assert!(posts.iter().all(|p| p.starts_with("POST /crm/v3/properties/")));
    let http = reqwest::Client::new();
    for name in &missing {
        let object = preview
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["object"].as_str())
            .unwrap_or("contact");
        let plural = if object == "company" { "companies" } else { "contacts" };
        let r = http
            .get(format!("{}/crm/v3/properties/{plural}/{name}", sims.crm.base_url()))
            .bearer_auth(&crm_token)
            .send()
            .await
            .expect("GET property");
        assert_eq!(r.status().as_u16(), 200, "{name} not in the simulator");
    }
    let crm_store = step(&steps, "store")["data"].clone();

    let (out, steps) = connect("billing", &contract, &ledger, &service, &billing_key, &[]);
    outputs.extend(&out.stdout);
    outputs.extend(&out.stderr);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(step(&steps, "test")["ok"], true);
    let billing_store = step(&steps, "store")["data"].clone();
    assert!(
        writes(&sims.billing.request_log()).is_empty(),
        "connect wrote to billing"
    );

    // The contract references the keychain entries and holds neither key.
    let text = std::fs::read_to_string(&contract).expect("contract");
    assert!(
        text.contains(&format!("secret = {{ keychain = \"{service}/crm\" }}")),
        "{text}"
    );
    assert!(text.contains(&format!("secret = {{ keychain = \"{service}/billing\" }}")));
    assert!(text.contains("# HubSpot private-app token"), "comments lost");
    driftless::contract::load(&contract).expect("still a valid contract");
    let st = status(&ledger).await;
    assert_eq!(st["observe"]["set_by"], "connect", "{st}");

    // Serve that ledger. Keys come from the keychain where this machine has one, else from
    // the fallback variables connect named.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let stripe_whsec = sims.billing.register_webhook(&format!("{base}/webhooks/stripe"));
    sims.crm.set_webhook_target(&format!("{base}/webhooks/hubspot"));
    let api_token = unique("tok");
    let log = dir.path().join("serve.log");
    let mut cmd = bin();
    cmd.args(["serve", "--workers", "2", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--contract")
        .arg(&contract)
        .arg("--ledger")
        .arg(&ledger)
        .env("DRIFTLESS_TOKEN", &api_token)
        .env("DRIFTLESS_LOG", "debug")
        .env("RUST_LOG", "debug")
        .env("DRIFTLESS_CRM_WEBHOOK_SECRET", &crm_whsec)
        .env("DRIFTLESS_BILLING_WEBHOOK_SECRET", &stripe_whsec)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("serve.err")).expect("log"));
    let mut in_keychain = Vec::new();
    for (store, key, account) in [
        (&crm_store, &crm_token, "crm"),
        (&billing_store, &billing_key, "billing"),
    ] {
        match store["env_fallback"].as_str() {
            Some(var) => {
                assert_eq!(var, driftless::secrets::fallback_env_var(&service, account));
                cmd.env(var, key);
            }
            None => in_keychain.push(account),
        }
    }
    let serve = Serve {
        child: cmd.spawn().expect("spawn serve"),
        log: log.clone(),
    };
    eventually(30, "serve answers /healthz", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;

    // Events flow in; plans are made and held; nothing reaches either system.
    let crm_writes_before = writes(&sims.crm.request_log()).len();
    let emails = ["obs1@example.test", "obs2@example.test", "obs3@example.test"];
    let ids: Vec<String> = emails
        .iter()
        .map(|e| sims.crm.create_contact(&[("email", e), ("lifecyclestage", "lead")]))
        .collect();
    // Waited for, not slept on: the three creates planned and held, and nothing else the
    // engine could still do (`all_held`) — only then is "nothing reached either system" a
    // finding.
    let view = Ledger::open(&ledger)
        .await
        .expect("the test's own connection to the ledger");
    let st = eventually(40, "three billing creates planned, every record held", || {
        let (ledger, view, sims) = (ledger.clone(), view.clone(), sims.clone());
        async move {
            let st = status(&ledger).await;
            (st["held_writes"]["billing"].as_i64() == Some(3) && all_held(&view, &sims).await).then_some(st)
        }
    })
    .await;
    view.close().await;
    assert!(st["observe"].is_object());
    let overview: serde_json::Value = http
        .get(format!("{base}/api/overview"))
        .bearer_auth(&api_token)
        .send()
        .await
        .expect("overview")
        .json()
        .await
        .expect("overview JSON");
    assert_eq!(overview["health"]["state"], "observing", "{}", overview["health"]);
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&api_token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(metrics.contains("driftless_observe 1"), "{metrics}");
    assert!(
        metrics.contains("driftless_held_writes{destination=\"billing\"} 3"),
        "{metrics}"
    );
    assert!(
        writes(&sims.billing.request_log()).is_empty(),
        "a billing write while observing"
    );
    assert_eq!(
        writes(&sims.crm.request_log()).len(),
        crm_writes_before,
        "a CRM write while observing"
    );
    assert!(sims.billing.customers().is_empty());

    // `writes on` previews, then with --yes sends the held writes once.
    let out = bin()
        .args(["writes", "on", "--ledger"])
        .arg(&ledger)
        .output()
        .expect("writes on");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("3 held writes would go out") && text.contains("billing 3"),
        "{text}"
    );
    assert!(status(&ledger).await["observe"].is_object(), "preview turned writes on");
    let out = bin()
        .args(["writes", "on", "--yes", "--reason", "plans reviewed", "--ledger"])
        .arg(&ledger)
        .output()
        .expect("writes on");
    assert!(out.status.success());
    eventually(40, "every contact synced after writes on", || {
        let sims = sims.clone();
        let ids = ids.clone();
        async move {
            let contacts = sims.crm.contacts();
            ids.iter()
                .all(|id| {
                    contacts
                        .iter()
                        .any(|c| c["id"] == id.as_str() && prop(c, "billing_customer_id").is_some())
                })
                .then_some(())
        }
    })
    .await;
    let creates = sims
        .billing
        .request_log()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers" && r.applied)
        .count();
    assert_eq!(creates, 3, "each held create went out once");
    assert_eq!(sims.billing.customers().len(), 3);
    let st = status(&ledger).await;
    assert!(st["observe"].is_null());

    let mut logs = serve.stop();
    logs.extend(std::fs::read(dir.path().join("serve.err")).unwrap_or_default());
    assert!(
        String::from_utf8_lossy(&logs).contains("DEBUG"),
        "serve did not log at debug level"
    );

    // No secret anywhere.
    let dump = dump_ledger(&ledger).await;
    let raw = raw_ledger_bytes(&ledger);
    let contract_bytes = std::fs::read(&contract).expect("contract");
    let haystacks: Vec<(&str, &[u8])> = vec![
        ("connect output", &outputs),
        ("serve logs", &logs),
        ("ledger dump", dump.as_bytes()),
        ("ledger files", &raw),
        ("contract", &contract_bytes),
    ];
    assert!(dump.contains("obs1@example.test"), "the dump holds the ledger's rows");
    for secret in [&billing_key, &crm_token, &crm_whsec, &stripe_whsec] {
        assert!(!secret.is_empty());
        let found = leaks(secret, &haystacks);
        assert!(found.is_empty(), "a secret leaked into {found:?}");
    }

    // The search finds a planted value: written into a copy of the ledger, it shows in the
    // dump and in the raw bytes; printed, in the output.
    let planted = unique("sk_live_planted_");
    let copy = dir.path().join("copy.db");
    std::fs::copy(&ledger, &copy).expect("copy ledger");
    {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.display()))
            .await
            .expect("open copy");
        sqlx::query("INSERT INTO audit (at_ms, actor, action, detail) VALUES (0, 'test', 'plant', ?1)")
            .bind(format!("{{\"key\":\"{planted}\"}}"))
            .execute(&mut conn)
            .await
            .expect("plant");
    }
    let dump2 = dump_ledger(&copy).await;
    let raw2 = raw_ledger_bytes(&copy);
    let with_output = [outputs.clone(), planted.as_bytes().to_vec()].concat();
    let found = leaks(
        &planted,
        &[
            ("ledger dump", dump2.as_bytes()),
            ("ledger files", &raw2),
            ("connect output", &with_output),
        ],
    );
    assert_eq!(found, ["ledger dump", "ledger files", "connect output"]);

    for account in in_keychain {
        assert!(driftless::secrets::delete(&service, account).expect("delete keychain entry"));
    }
    sims.shutdown().await;
}

#[test]
fn writes_off_and_on_act_through_the_ledger_and_a_plain_ledger_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let run = |args: &[&str]| -> String {
        let out = bin().args(args).arg("--ledger").arg(&ledger).output().expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let st: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).expect("JSON");
    assert!(st["observe"].is_null(), "a ledger not made by connect starts writing");
    assert!(run(&["writes", "on"]).contains("already on"));
    run(&["writes", "off", "--reason", "audit week"]);
    let st: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).expect("JSON");
    assert_eq!(st["observe"]["reason"], "audit week");
    assert_eq!(st["observe"]["set_by"], "cli");
    assert!(run(&["status"]).contains("OBSERVING"));
    assert!(run(&["writes", "on"]).contains("preview only"));
    let st: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).expect("JSON");
    assert!(st["observe"].is_object(), "on without --yes changed it");
    assert!(run(&["writes", "on", "--yes"]).contains("writes on"));
    let st: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).expect("JSON");
    assert!(st["observe"].is_null());
}

/// The read-only requests `connect` sends, against software nobody here wrote: localstripe
/// (the billing key test through the real binary) and Prism mocking HubSpot's published spec
/// with `--errors` (a request the spec refuses is answered 4xx, so a 200 is a valid request).
///
/// Gap found: localstripe accepts any key starting `sk_` (longer than 5 characters), so only a
/// key of the wrong kind (a publishable `pk_…`) is refused by it; a wrong secret key is shown
/// refused against the simulator (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_read_only_requests_pass_localstripe_and_prism() {
    use crate::prism::{derive_spec, prism_bin, specs_dir, Prism};
    let dir = tempfile::tempdir().expect("tempdir");
    let ls = crate::localstripe::LocalStripe::start(dir.path().join("localstripe.log")).await;
    let contract = write_contract(dir.path(), "http://127.0.0.1:9", &ls.base_url);
    let ledger = dir.path().join("l.db");
    let service = unique("driftless-it-");
    let (out, steps) = connect("billing", &contract, &ledger, &service, "pk_test_publishable", &[]);
    assert_eq!(out.status.code(), Some(1), "{steps:?}");
    let detail = steps.last().expect("line")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("key was refused (401"), "{detail}");
    assert!(!ledger.exists());
    let (out, steps) = connect(
        "billing",
        &contract,
        &ledger,
        &service,
        crate::localstripe::API_KEY,
        &[],
    );
    assert!(
        out.status.success(),
        "{steps:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(step(&steps, "test")["data"]["status"], 200);
    if step(&steps, "store")["data"]["env_fallback"].is_null() {
        assert!(driftless::secrets::delete(&service, "billing").expect("delete"));
    }

    let bin = prism_bin();
    assert!(
        bin.exists(),
        "Prism ({}) is missing: run `scripts/setup.sh test`",
        bin.display()
    );
    let specs = specs_dir().join("hubspot");
    let mut prisms = Vec::new();
    for (name, dynamic) in [("contacts", false), ("properties", true)] {
        let derived = dir.path().join(format!("{name}.prism.json"));
        derive_spec(&specs.join(format!("{name}.json")), &derived);
        let p = Prism::spawn(&bin, &derived, dir.path().join(format!("prism-{name}.log")), dynamic);
        p.wait_ready(45).await;
        prisms.push(p);
    }
    let mut c = driftless::contract::default_contract();
    let token = driftless::secrets::Secret::new("pat-na1-driftless-connect-prism".into());
    c.systems.crm.base_url = prisms[0].base_url.clone();
    let test = driftless::connect::test_connection(&c.systems.crm, driftless::contract::Side::Crm, &token)
        .await
        .expect("GET /crm/v3/objects/contacts?limit=1 is valid for HubSpot's spec");
    assert_eq!(test.data["status"], 200);
    // Prism checks that a credential is sent at all: without one, the spec's security refuses.
    let none = driftless::secrets::Secret::new(" ".into());
    let refused = driftless::connect::test_connection(&c.systems.crm, driftless::contract::Side::Crm, &none).await;
    assert!(
        matches!(
            refused,
            Err(driftless::connect::ConnectError::BadKey { status: 401, .. })
        ),
        "Prism did not refuse a request without a credential: {refused:?}"
    );
    c.systems.crm.base_url = prisms[1].base_url.clone();
    let preview = driftless::connect::preview_properties(&c.systems.crm, &c, &token)
        .await
        .expect("GET /crm/v3/properties/{objectType}/{name} is valid for HubSpot's spec");
    assert!(!preview.is_empty());
    assert!(
        preview.iter().all(|p| p.exists),
        "Prism answers every property read with 200"
    );
}

/// POST a JSON body to the console API; the status and the JSON answer.
async fn api_post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// The Connect screen's API (what its buttons call) on `serve` with a contract file pointed at
/// the simulators: a wrong key gets the specific reason, the right one connects; the CRM
/// properties are previewed then created exactly once; saving the key rewrites the contract's
/// secret reference and starts observing; writes on previews then sends the held writes once.
/// Neither key reaches an answer, the debug log or the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_connect_screen_api_tests_creates_saves_and_turns_writes_on_without_leaking_keys() {
    let (billing_key, crm_token, crm_whsec) = (unique("sk_test_"), unique("pat-na1-"), unique("cs-"));
    let sims = sims_with(&billing_key, &crm_token, &crm_whsec).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let service = unique("driftless-it-");
    let contract = write_contract(dir.path(), &sims.crm.base_url(), &sims.billing.base_url());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let stripe_whsec = sims.billing.register_webhook(&format!("{base}/webhooks/stripe"));
    sims.crm.set_webhook_target(&format!("{base}/webhooks/hubspot"));
    let api_token = unique("tok");
    let log = dir.path().join("serve.log");
    let mut cmd = bin();
    cmd.args(["serve", "--workers", "2", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--contract")
        .arg(&contract)
        .arg("--ledger")
        .arg(&ledger)
        .env("DRIFTLESS_TOKEN", &api_token)
        .env("DRIFTLESS_LOG", "debug")
        .env("RUST_LOG", "debug")
        .env("DRIFTLESS_KEYCHAIN_SERVICE", &service)
        .env("DRIFTLESS_CRM_TOKEN", &crm_token)
        .env("DRIFTLESS_BILLING_KEY", &billing_key)
        .env("DRIFTLESS_CRM_WEBHOOK_SECRET", &crm_whsec)
        .env("DRIFTLESS_BILLING_WEBHOOK_SECRET", &stripe_whsec)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("serve.err")).expect("log"));
    let serve = Serve {
        child: cmd.spawn().expect("spawn serve"),
        log: log.clone(),
    };
    let http = reqwest::Client::new();
    eventually(30, "serve answers /healthz", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    let mut answers = String::new();

    // Wrong keys: the specific reason; right keys: connected.
    for (system, key, wrong) in [
        ("crm", &crm_token, "pat-wrong-token"),
        ("billing", &billing_key, "sk_test_wrong"),
    ] {
        let (code, a) = api_post(
            &http,
            &base,
            &api_token,
            "/api/connect_test",
            serde_json::json!({ "system": system, "key": wrong }),
        )
        .await;
        assert_eq!(code, 200, "{a}");
        assert_eq!(a["ok"], false, "{a}");
        assert_eq!(a["code"], "key_refused", "{a}");
        assert!(
            a["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("the key was refused (401"),
            "{a}"
        );
        let (_, a) = api_post(
            &http,
            &base,
            &api_token,
            "/api/connect_test",
            serde_json::json!({ "system": system, "key": key }),
        )
        .await;
        assert_eq!(a["ok"], true, "{system}: {a}");
        assert_eq!(a["step"], "test");
        answers.push_str(&a.to_string());
    }
    let (code, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/connect_test",
        serde_json::json!({ "system": "crm", "key": "  " }),
    )
    .await;
    // No key is a bad request, as for every connect route.
    assert_eq!((code, a["code"].as_str()), (400, Some("bad_request")), "{a}");
    assert!(a["message"].as_str().unwrap_or("").contains("empty"), "{a}");

    // CRM properties: preview writes nothing; create makes each missing one exactly once.
    let (code, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/connect_properties",
        serde_json::json!({ "key": crm_token, "create": false }),
    )
    .await;
    assert_eq!(code, 200, "{a}");
    answers.push_str(&a.to_string());
    let missing: Vec<String> = a["properties"]
        .as_array()
        .expect("properties")
        .iter()
        .filter(|p| p["exists"] == false)
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(missing.iter().any(|m| m == "billing_customer_id"), "{missing:?}");
    assert!(writes(&sims.crm.request_log()).is_empty(), "the preview wrote");
    let (_, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/connect_properties",
        serde_json::json!({ "key": crm_token, "create": true }),
    )
    .await;
    answers.push_str(&a.to_string());
    let created: Vec<String> = a["created"]
        .as_array()
        .expect("created")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(created, missing);
    assert!(
        a["properties"]
            .as_array()
            .expect("properties")
            .iter()
            .all(|p| p["exists"] == true),
        "{a}"
    );
    let (_, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/connect_properties",
        serde_json::json!({ "key": crm_token, "create": true }),
    )
    .await;
    assert_eq!(a["created"], serde_json::json!([]), "{a}");
    let posts = writes(&sims.crm.request_log());
    assert_eq!(
        posts.len(),
        missing.len(),
        "each property created exactly once: {posts:?}"
    );
    let (code, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/connect_properties",
        serde_json::json!({ "key": "pat-wrong", "create": false }),
    )
    .await;
    assert_eq!(code, 400, "{a}");
    assert!(a["message"].as_str().unwrap_or_default().contains("refused"), "{a}");

    // A wrong key saves nothing; the right one: keychain (or the env var to set), contract, observe.
    let before = std::fs::read_to_string(&contract).expect("contract");
    let (code, _) = api_post(
        &http,
        &base,
        &api_token,
        "/api/connect_save_key",
        serde_json::json!({ "system": "billing", "key": "sk_test_wrong" }),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        std::fs::read_to_string(&contract).expect("contract"),
        before,
        "a refused key changed the contract"
    );
    assert!(
        status(&ledger).await["observe"].is_null(),
        "a refused key started observing"
    );
    let (code, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/connect_save_key",
        serde_json::json!({ "system": "billing", "key": billing_key }),
    )
    .await;
    assert_eq!(code, 200, "{a}");
    answers.push_str(&a.to_string());
    assert_eq!(a["keychain"], format!("{service}/billing"));
    if let Some(var) = a["env_fallback"].as_str() {
        assert_eq!(var, driftless::secrets::fallback_env_var(&service, "billing"));
    }
    let text = std::fs::read_to_string(&contract).expect("contract");
    assert!(
        text.contains(&format!("secret = {{ keychain = \"{service}/billing\" }}")),
        "{text}"
    );
    assert!(text.contains("# HubSpot private-app token"), "comments lost");
    driftless::contract::load(&contract).expect("still a valid contract");
    let st = status(&ledger).await;
    assert_eq!(st["observe"]["set_by"], "operator:console", "{st}");

    // Observing: events are planned and held, nothing goes out.
    let emails = ["cs1@example.test", "cs2@example.test"];
    let ids: Vec<String> = emails
        .iter()
        .map(|e| sims.crm.create_contact(&[("email", e), ("lifecyclestage", "lead")]))
        .collect();
    let view = Ledger::open(&ledger)
        .await
        .expect("the test's own connection to the ledger");
    eventually(40, "two billing creates planned, every record held", || {
        let (ledger, view, sims) = (ledger.clone(), view.clone(), sims.clone());
        async move {
            (status(&ledger).await["held_writes"]["billing"].as_i64() == Some(2) && all_held(&view, &sims).await)
                .then_some(())
        }
    })
    .await;
    view.close().await;
    assert!(
        writes(&sims.billing.request_log()).is_empty(),
        "a billing write while observing"
    );

    // Writes on: the preview changes nothing; the confirm sends each held write once.
    let (_, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/set_writes",
        serde_json::json!({ "on": true, "confirm": false }),
    )
    .await;
    assert_eq!(a["observe"], true, "{a}");
    assert_eq!(a["sent"], false);
    assert_eq!(a["held_writes"]["billing"], 2, "{a}");
    assert!(
        status(&ledger).await["observe"].is_object(),
        "the preview turned writes on"
    );
    let (_, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/set_writes",
        serde_json::json!({ "on": true, "confirm": true, "reason": "reviewed" }),
    )
    .await;
    assert_eq!(a["sent"], true, "{a}");
    assert_eq!(a["observe"], false);
    eventually(40, "both contacts synced after writes on", || {
        let sims = sims.clone();
        let ids = ids.clone();
        async move {
            let contacts = sims.crm.contacts();
            ids.iter()
                .all(|id| {
                    contacts
                        .iter()
                        .any(|c| c["id"] == id.as_str() && prop(c, "billing_customer_id").is_some())
                })
                .then_some(())
        }
    })
    .await;
    let creates = sims
        .billing
        .request_log()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers" && r.applied)
        .count();
    assert_eq!(creates, 2, "each held create went out once");
    // Back to observe.
    let (_, a) = api_post(
        &http,
        &base,
        &api_token,
        "/api/set_writes",
        serde_json::json!({ "on": false }),
    )
    .await;
    assert_eq!(a["observe"], true, "{a}");
    assert_eq!(status(&ledger).await["observe"]["set_by"], "operator:console");

    let mut logs = serve.stop();
    logs.extend(std::fs::read(dir.path().join("serve.err")).unwrap_or_default());
    assert!(
        String::from_utf8_lossy(&logs).contains("DEBUG"),
        "serve did not log at debug level"
    );
    let dump = dump_ledger(&ledger).await;
    let raw = raw_ledger_bytes(&ledger);
    assert!(dump.contains("cs1@example.test"), "the dump holds the ledger's rows");
    // The keys travelled only in request bodies: not in any answer, the debug log or the ledger.
    let haystacks: Vec<(&str, &[u8])> = vec![
        ("API answers", answers.as_bytes()),
        ("ledger dump", dump.as_bytes()),
        ("ledger files", &raw),
    ];
    for secret in [&billing_key, &crm_token] {
        let found = leaks(secret, &haystacks);
        assert!(found.is_empty(), "a key leaked into {found:?}");
    }
    // The serve log holds the keys only where the test itself put them in serve's
    // environment — it must not: the log is searched for them too.
    let found = leaks(&billing_key, &[("serve logs", &logs)]);
    assert!(found.is_empty(), "the billing key leaked into the serve log");
    let found = leaks(&crm_token, &[("serve logs", &logs)]);
    assert!(found.is_empty(), "the CRM token leaked into the serve log");
    // The search finds a planted value.
    let planted = unique("sk_live_planted_");
    assert_eq!(
        leaks(&planted, &[("planted", format!("x{planted}x").as_bytes())]),
        ["planted"]
    );

    let _ = driftless::secrets::delete(&service, "billing");
    sims.shutdown().await;
}
