//! Webhook signatures made by the official SDKs (stripe-python 16.1.0, hubspot-api-client
//! 12.0.0, run from the peers venv `scripts/setup.sh test` builds) against the running
//! server over real HTTP: valid deliveries are acknowledged and recorded; tampered bodies,
//! wrong secrets, stale or rewritten timestamps and a HubSpot signature over another URI
//! are refused with their specific code and leave the ledger untouched.
//!
//! The engine is assembled like the demo (simulators in-process, webhooks registered with
//! them) but through `serve_contract_with`, so the test holds the Stripe endpoint's secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use driftless::contract;
use driftless::drill::wait_quiet;
use driftless::runtime::{self, EngineSecrets, Running, ServeOptions};
use driftless::sim::{SimConfig, Simulators};
use serde_json::Value;

use crate::support::{eventually, prop};

struct Rig {
    running: Running,
    sims: Simulators,
    stripe_secret: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Engine + simulators. `public_url` is the engine's `--public-url`; without it the
    /// simulators deliver webhooks to the engine (the demo's wiring).
    async fn start(public_url: Option<String>) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let sims = Simulators::start(SimConfig {
            seed: 11,
            ..SimConfig::default()
        })
        .await
        .expect("simulators start");
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("local addr")
        };
        let stripe_secret = sims.billing.register_webhook(&format!("http://{addr}/webhooks/stripe"));
        if public_url.is_none() {
            sims.crm.set_webhook_target(&format!("http://{addr}/webhooks/hubspot"));
        }
        let mut c = contract::default_contract();
        c.systems.crm.base_url = sims.crm.base_url();
        c.systems.billing.base_url = sims.billing.base_url();
        c.systems.crm.request_timeout_ms = 800;
        c.systems.billing.request_timeout_ms = 800;
        let secrets = EngineSecrets {
            crm_token: sims.crm.token().to_string(),
            billing_key: sims.billing.api_key().to_string(),
            crm_webhook_secret: Some(sims.crm.webhook_secret().to_string()),
            billing_webhook_secret: Some(stripe_secret.clone()),
        };
        runtime::ensure_crm_properties(&c, &secrets)
            .await
            .expect("CRM properties");
        let running = runtime::serve_contract_with(
            c,
            secrets,
            ServeOptions {
                ledger: dir.path().join("ledger.db"),
                addr,
                workers: 2,
                public_url,
                token: None,
                allow_non_loopback: false,
            },
        )
        .await
        .expect("engine serves");
        Rig {
            running,
            sims,
            stripe_secret,
            _dir: dir,
        }
    }

    async fn quiet(&self) {
        assert!(
            wait_quiet(self.running.engine.ledger(), &self.sims, Duration::from_secs(15)).await,
            "engine quiescent"
        );
    }

    async fn events_total(&self) -> i64 {
        self.running.engine.status().await.expect("status").ledger.events_total
    }

    async fn shutdown(self) {
        self.running.shutdown().await;
        self.sims.shutdown().await;
    }
}

/// The peers venv's interpreter; a missing one fails the test (never a silent skip).
fn peers_python() -> PathBuf {
    let p = match std::env::var_os("DRIFTLESS_PEERS_PY") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/driftless/peers/bin/python")
        }
    };
    assert!(
        p.exists(),
        "the Python peers (official stripe and hubspot-api-client SDKs) are not installed: no \
         interpreter at {} — run `scripts/setup.sh test` (or set DRIFTLESS_PEERS_PY)",
        p.display()
    );
    p
}

struct Subject<'a> {
    hubspot_uri: &'a str,
    wrong_uris: &'a [String],
    contact_id: &'a str,
    customer_id: &'a str,
    email: &'a str,
}

/// Run tests/peers/signature_vectors.py; returns its vectors.
async fn sdk_vectors(rig: &Rig, s: &Subject<'_>) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/signature_vectors.py");
    let now_ms = chrono::Utc::now().timestamp_millis().to_string();
    let mut cmd = tokio::process::Command::new(peers_python());
    cmd.arg(&script)
        .args(["--stripe-secret", &rig.stripe_secret])
        .args(["--hubspot-secret", rig.sims.crm.webhook_secret()])
        .args(["--hubspot-uri", s.hubspot_uri])
        .args(["--now-ms", &now_ms])
        .args(["--contact-id", s.contact_id])
        .args(["--customer-id", s.customer_id])
        .args(["--email", s.email]);
    for u in s.wrong_uris {
        cmd.args(["--hubspot-wrong-uri", u]);
    }
    let out = cmd.output().await.expect("run the peers interpreter");
    assert!(
        out.status.success(),
        "{} failed ({}): {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    assert_eq!(doc["sdk"]["stripe"], "16.1.0", "pinned stripe-python");
    assert_eq!(doc["sdk"]["hubspot-api-client"], "12.0.0", "pinned hubspot-api-client");
    let vectors = doc["vectors"].as_array().expect("vectors").clone();
    for v in &vectors {
        // The SDK's own verification agrees with the verdict driftless must reach.
        assert_eq!(
            v["sdk_verdict"], v["expect"],
            "{} {}: {}",
            v["system"], v["name"], v["sdk_detail"]
        );
    }
    vectors
}

fn label(v: &Value) -> String {
    format!(
        "{}/{}",
        v["system"].as_str().unwrap_or("?"),
        v["name"].as_str().unwrap_or("?")
    )
}

fn event_ids(v: &Value) -> Vec<String> {
    v["event_ids"]
        .as_array()
        .expect("event_ids")
        .iter()
        .map(|i| i.as_str().expect("event id").to_string())
        .collect()
}

/// POST every vector (refusals first, then acceptances) to the running server and check the
/// answer and the ledger's delivery count after each. Simulator webhooks are suppressed
/// meanwhile, so the count moves only by what the vectors deliver. Returns the accepted and
/// refused event ids.
async fn deliver(rig: &Rig, vectors: &[Value]) -> (Vec<String>, Vec<String>) {
    rig.sims.billing.suppress_webhooks(true);
    rig.sims.crm.suppress_webhooks(true);
    let http = reqwest::Client::new();
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    let mut ordered: Vec<&Value> = vectors.iter().filter(|v| v["expect"] == "reject").collect();
    ordered.extend(vectors.iter().filter(|v| v["expect"] == "accept"));
    for v in ordered {
        let name = label(v);
        let ids = event_ids(v);
        let before = rig.events_total().await;
        let mut req = http
            .post(format!(
                "http://{}{}",
                rig.running.addr,
                v["path"].as_str().expect("path")
            ))
            .body(v["body"].as_str().expect("body").to_string());
        for (k, val) in v["headers"].as_object().expect("headers") {
            req = req.header(k.as_str(), val.as_str().expect("header value"));
        }
        let res = req.send().await.expect("delivery reaches the server");
        let status = res.status();
        let answer: Value = res.json().await.expect("JSON answer");
        let after = rig.events_total().await;
        if v["expect"] == "accept" {
            assert!(status.is_success(), "{name}: {status} {answer}");
            assert_eq!(answer["accepted"], ids.len(), "{name}: {answer}");
            assert_eq!(answer["duplicates"], 0, "{name}: {answer}");
            assert_eq!(after, before + ids.len() as i64, "{name}: recorded in the ledger");
            accepted.extend(ids);
        } else {
            assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{name}: {answer}");
            assert_eq!(answer["code"], v["code"], "{name} ({}): {answer}", v["reason"]);
            assert_eq!(after, before, "{name}: nothing reaches the ledger");
            refused.extend(ids);
        }
    }
    rig.sims.billing.suppress_webhooks(false);
    rig.sims.crm.suppress_webhooks(false);
    (accepted, refused)
}

/// The record's timeline holds every accepted event, settled, and none of the refused ones.
async fn check_timeline(rig: &Rig, contact_id: &str, accepted: &[String], refused: &[String]) {
    let t = rig.running.engine.record_timeline(contact_id).await.expect("timeline");
    let events: Vec<_> = t.entries.iter().filter(|e| e.kind == "event").collect();
    let has = |id: &str| {
        events
            .iter()
            .find(|e| e.summary.split_whitespace().any(|w| w == id))
            .map(|e| e.state.clone().unwrap_or_default())
    };
    for id in accepted {
        let state = has(id).unwrap_or_else(|| panic!("accepted event {id} not in the timeline: {t:?}"));
        assert_ne!(state, "pending", "event {id} settled");
    }
    for id in refused {
        assert!(has(id).is_none(), "refused event {id} reached the ledger");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_signatures_are_accepted_and_forgeries_refused_over_http() {
    peers_python();
    let rig = Rig::start(None).await;
    // A linked pair, synced through the simulators' own signed webhooks.
    let email = "sdk-vectors@example.test";
    let contact = rig
        .sims
        .crm
        .create_contact(&[("email", email), ("lifecyclestage", "lead")]);
    let customer = eventually(15, "contact synced", || {
        let sims = rig.sims.clone();
        let contact = contact.clone();
        async move {
            sims.crm
                .contacts()
                .into_iter()
                .find(|c| c["id"] == contact.as_str())
                .and_then(|c| prop(&c, "billing_customer_id").map(str::to_string))
        }
    })
    .await;
    rig.quiet().await;

    // No public_url: the receiver rebuilds the URI from Host (reqwest sends `127.0.0.1:port`).
    let addr: SocketAddr = rig.running.addr;
    let uri = format!("http://{addr}/webhooks/hubspot");
    let wrong = vec![
        format!("https://{addr}/webhooks/hubspot"),
        format!("http://localhost:{}/webhooks/hubspot", addr.port()),
    ];
    let vectors = sdk_vectors(
        &rig,
        &Subject {
            hubspot_uri: &uri,
            wrong_uris: &wrong,
            contact_id: &contact,
            customer_id: &customer,
            email,
        },
    )
    .await;
    let names: Vec<String> = vectors.iter().map(label).collect();
    for want in [
        "stripe/valid",
        "stripe/tampered_body",
        "stripe/wrong_secret",
        "stripe/stale_timestamp",
        "hubspot/valid",
        "hubspot/tampered_body",
        "hubspot/wrong_secret",
        "hubspot/stale_timestamp",
        "hubspot/other_uri",
    ] {
        assert!(names.iter().any(|n| n == want), "vector {want} missing: {names:?}");
    }
    let (accepted, refused) = deliver(&rig, &vectors).await;
    assert!(accepted.len() >= 7 && refused.len() >= 10, "{accepted:?} {refused:?}");
    rig.quiet().await;
    check_timeline(&rig, &contact, &accepted, &refused).await;
    // Same-valued deliveries about a synced pair cost no write, and nothing was duplicated.
    assert_eq!(rig.sims.billing.customers().len(), 1);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_signatures_are_checked_against_the_public_url() {
    peers_python();
    // Behind a proxy: HubSpot calls the public URL, the engine listens on loopback.
    let public = "https://hooks.example.test";
    let rig = Rig::start(Some(format!("{public}/"))).await;
    let email = "public-url@example.test";
    let contact = rig
        .sims
        .crm
        .create_contact(&[("email", email), ("lifecyclestage", "lead")]);
    let local = format!("http://{}/webhooks/hubspot", rig.running.addr);
    let vectors = sdk_vectors(
        &rig,
        &Subject {
            hubspot_uri: &format!("{public}/webhooks/hubspot"),
            // What Host says is not what HubSpot signed once a public URL is configured.
            wrong_uris: &[local],
            contact_id: &contact,
            customer_id: "cus_unused",
            email,
        },
    )
    .await;
    // The Stripe vectors do not involve the URI (covered above).
    let hubspot: Vec<Value> = vectors.into_iter().filter(|v| v["system"] == "hubspot").collect();
    let (accepted, refused) = deliver(&rig, &hubspot).await;
    assert!(accepted.len() >= 4 && refused.len() >= 8, "{accepted:?} {refused:?}");
    // The accepted delivery starts a real sync: the contact gets its billing customer.
    eventually(15, "contact synced from the SDK-signed delivery", || {
        let sims = rig.sims.clone();
        let contact = contact.clone();
        async move {
            sims.crm
                .contacts()
                .into_iter()
                .find(|c| c["id"] == contact.as_str())
                .and_then(|c| prop(&c, "billing_customer_id").map(str::to_string))
        }
    })
    .await;
    rig.quiet().await;
    check_timeline(&rig, &contact, &accepted, &refused).await;
    rig.shutdown().await;
}
