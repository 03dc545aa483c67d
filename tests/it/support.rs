use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// A request to `path` (from the server root) carrying the token, to add headers or a
    /// body of one's own to.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
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

/// The API token of the `serve` children tests start.
pub const SERVE_TOKEN: &str = "serve-child-token-0123456789abcdef";

/// A `driftless serve --demo` child (the real binary) with its stderr in a file.
pub struct ServeChild {
    pub child: Child,
    pub base: String,
    log: PathBuf,
}

impl ServeChild {
    /// Start on `ledger`; `Err` with its stderr when it exits instead of serving.
    pub fn start(ledger: &Path, log: &Path) -> Result<ServeChild, String> {
        ServeChild::start_with(ledger, log, &[])
    }

    /// Start on `ledger` with more `serve` arguments.
    pub fn start_with(ledger: &Path, log: &Path, args: &[&str]) -> Result<ServeChild, String> {
        let err = std::fs::File::create(log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_driftless"))
            .args(["serve", "--demo", "--workers", "8", "--addr", "127.0.0.1:0", "--ledger"])
            .arg(ledger)
            .args(args)
            .env("DRIFTLESS_TOKEN", SERVE_TOKEN)
            .env("DRIFTLESS_LOG", "warn,driftless=info")
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn serve");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("console/API: ") {
                    let _ = tx.send(rest.split("/?").next().unwrap_or("").to_string());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(base) = rx.try_recv() {
                return Ok(ServeChild {
                    child,
                    base,
                    log: log.to_path_buf(),
                });
            }
            if let Some(status) = child.try_wait().expect("wait") {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("exited with {status}: {text}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        call_api(reqwest::Client::new().get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        call_api(reqwest::Client::new().post(format!("{}{path}", self.base)).json(&body)).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call_api(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    match r.bearer_auth(SERVE_TOKEN).timeout(Duration::from_secs(30)).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let v = res.json().await.unwrap_or(serde_json::Value::Null);
            (status, v)
        }
        Err(e) => (0, serde_json::json!({ "error": e.to_string() })),
    }
}
