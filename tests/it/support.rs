use std::net::SocketAddr;
use std::time::{Duration, Instant};

use driftless::drill::wait_quiescent;

use driftless::contract;
use driftless::runtime::{self, DemoOptions, Running, ServeOptions};
use driftless::sim::FaultProfile;

pub struct Demo {
    pub running: Running,
    pub _dir: tempfile::TempDir,
}

/// Engine + both simulators in-process, actors off: the test is the only user.
pub async fn demo(faults: FaultProfile) -> Demo {
    demo_with(contract::default_contract(), faults).await
}

pub async fn demo_with(contract: contract::Contract, faults: FaultProfile) -> Demo {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = runtime::start_demo(DemoOptions {
        seed: 7,
        faults,
        contract,
        serve: ServeOptions {
            ledger: dir.path().join("ledger.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 4,
            public_url: None,
            token: None,
            allow_non_loopback: false,
        },
        request_timeout_ms: 800,
    })
    .await
    .expect("demo starts");
    Demo { running, _dir: dir }
}

/// Poll `f` until it returns Some, or panic with `what` after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn prop<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v.get("properties")?.get(name)?.as_str().filter(|s| !s.is_empty())
}

pub fn meta<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v.get("metadata")?.get(name)?.as_str().filter(|s| !s.is_empty())
}

/// Create a contact (email, lifecycle stage `lead`) and wait until it is synced and quiet:
/// returns (CRM id, billing customer id).
pub async fn synced_contact(d: &Demo, email: &str) -> (String, String) {
    let sims = d.running.sims.clone().expect("sims");
    let id = sims.crm.create_contact(&[("email", email), ("lifecyclestage", "lead")]);
    let cus = eventually(20, "contact synced", || {
        let sims = sims.clone();
        let id = id.clone();
        async move {
            sims.crm
                .contacts()
                .into_iter()
                .find(|c| c["id"] == id.as_str())
                .and_then(|c| prop(&c, "billing_customer_id").map(str::to_string))
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(20)).await);
    (id, cus)
}

/// Mutating requests the simulators applied, as (billing, CRM); CRM property definitions
/// excluded.
pub fn applied_writes(sims: &driftless::sim::Simulators) -> (usize, usize) {
    let billing = sims
        .billing
        .request_log()
        .iter()
        .filter(|r| r.mutating && r.applied)
        .count();
    let crm = sims
        .crm
        .request_log()
        .iter()
        .filter(|r| r.mutating && r.applied && !r.path.contains("/properties/"))
        .count();
    (billing, crm)
}

/// The console API of a running demo over real HTTP, with its launch token: `call` answers the
/// status code and the JSON body (`{code, message}` for a refusal).
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn of(d: &Demo) -> Api {
        Api {
            base: format!("http://{}", d.running.addr),
            token: d.running.token.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// The request is built at once, so the answer does not borrow `path` (it may be a
    /// temporary `format!`).
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> impl std::future::Future<Output = (u16, serde_json::Value)> {
        let mut r = self
            .http
            .request(method, format!("{}/api/{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.expect("send");
            let code = r.status().as_u16();
            (code, r.json::<serde_json::Value>().await.expect("json"))
        }
    }
}
