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
