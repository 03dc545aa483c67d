//! Kill the engine process with SIGKILL mid-run, restart it on the same ledger, and check
//! convergence with no duplicate — from the simulators' own state.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driftless::connectors::hubspot::HubspotClient;
use driftless::connectors::CrmApi;
use driftless::contract::{self, DEFAULT_CONTRACT};
use driftless::engine::required_crm_properties;
use driftless::ledger::Ledger;
use driftless::sim::{run_actors, ActorPlan, FaultProfile, SimConfig, Simulators};

use crate::support::{meta, prop};

struct Engine {
    child: Child,
}

fn spawn(contract: &std::path::Path, ledger: &std::path::Path, port: u16, env: &[(&str, String)]) -> Engine {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
    cmd.args(["serve", "--contract"])
        .arg(contract)
        .arg("--ledger")
        .arg(ledger)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Engine {
        child: cmd.spawn().expect("engine starts"),
    }
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("engine did not come up on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_converges_without_duplicates() {
    let sims = Simulators::start(SimConfig {
        seed: 3,
        faults: FaultProfile::parse("dup=0.05,reorder=0.05,429=0.02,5xx=0.01,timeout=0.02,hang_ms=800")
            .expect("profile"),
        ..SimConfig::default()
    })
    .await
    .expect("sims");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let stripe_secret = sims
        .billing
        .register_webhook(&format!("http://127.0.0.1:{port}/webhooks/stripe"));
    sims.crm
        .set_webhook_target(&format!("http://127.0.0.1:{port}/webhooks/hubspot"));

    let dir = tempfile::tempdir().expect("tempdir");
    let contract_path = dir.path().join("contract.toml");
    let text = DEFAULT_CONTRACT
        .replace("https://api.hubapi.com", &sims.crm.base_url())
        .replace("https://api.stripe.com", &sims.billing.base_url())
        .replace("request_timeout_ms = 10000", "request_timeout_ms = 600")
        .replace("requests_per_second = 10.0", "requests_per_second = 500.0")
        .replace("requests_per_second = 25.0", "requests_per_second = 500.0");
    std::fs::write(&contract_path, &text).expect("write contract");
    let contract = contract::load(&contract_path).expect("contract valid");
    let crm = HubspotClient::new(&sims.crm.base_url(), sims.crm.token().to_string(), 2_000).expect("client");
    let defs = required_crm_properties(&contract);
    let mut created = false;
    for _ in 0..50 {
        if crm.ensure_properties(&defs).await.is_ok() {
            created = true;
            break;
        }
    }
    assert!(created, "CRM properties created");

    let env = vec![
        ("DRIFTLESS_CRM_TOKEN", sims.crm.token().to_string()),
        ("DRIFTLESS_BILLING_KEY", sims.billing.api_key().to_string()),
        ("DRIFTLESS_CRM_WEBHOOK_SECRET", sims.crm.webhook_secret().to_string()),
        ("DRIFTLESS_BILLING_WEBHOOK_SECRET", stripe_secret),
    ];
    let ledger = dir.path().join("ledger.db");
    let mut engine = spawn(&contract_path, &ledger, port, &env);
    wait_healthy(port).await;

    let actor_sims = sims.clone();
    let actors = tokio::spawn(async move {
        run_actors(
            &actor_sims,
            ActorPlan {
                seed: 3,
                records: 60,
                edits: 400,
                edits_per_sec: 60.0,
                billing_edit_share: 0.2,
            },
        )
        .await
    });
    // Three SIGKILLs at uneven points while work is in flight, each followed by a restart.
    let mut kills = 0;
    for pause_ms in [900u64, 1700, 1300] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        engine.child.kill().expect("SIGKILL");
        let _ = engine.child.wait();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        engine = spawn(&contract_path, &ledger, port, &env);
        wait_healthy(port).await;
    }
    let report = actors.await.expect("actors");
    assert_eq!(kills, 3);

    // Quiescence, judged from the simulators and the ledger file.
    let l = Ledger::open(&ledger).await.expect("ledger");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut stable = 0;
    while stable < 5 {
        assert!(Instant::now() < deadline, "no quiescence: {:?}", l.status().await.ok());
        tokio::time::sleep(Duration::from_millis(400)).await;
        let st = l.status().await.expect("status");
        let quiet = sims.pending_webhooks() == 0 && st.queue_depth == 0 && st.events["pending"] == 0;
        stable = if quiet { stable + 1 } else { 0 };
    }
    let st = l.status().await.expect("status");
    engine.child.kill().expect("stop engine");
    let _ = engine.child.wait();

    let contacts = sims.crm.contacts();
    let customers = sims.billing.customers();
    assert_eq!(contacts.len(), report.contacts_created);
    let mut by_contact: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for c in &customers {
        if let Some(id) = meta(c, "driftless_crm_contact_id") {
            by_contact.entry(id.to_string()).or_default().push(c);
        }
    }
    for c in &contacts {
        let id = c["id"].as_str().expect("contact id");
        let mine = by_contact.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(mine.len(), 1, "contact {id} has {} billing customers", mine.len());
        let cus = mine[0];
        assert_eq!(
            prop(c, "email"),
            cus["email"].as_str(),
            "email owner (CRM) wins for {id}"
        );
        assert_eq!(
            prop(c, "lifecyclestage"),
            meta(cus, "lifecycle_stage"),
            "lifecycle for {id}"
        );
        assert_eq!(
            prop(c, "billing_customer_id"),
            cus["id"].as_str(),
            "billing id for {id}"
        );
    }
    let sum: i64 = st
        .events
        .iter()
        .filter(|(k, _)| k.as_str() != "duplicate")
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(
        sum, st.distinct_events,
        "every event in exactly one state: {:?}",
        st.events
    );
    sims.shutdown().await;
}
