//! The engine under drill: in this process (no crashes), or a child `driftless serve` process
//! that the drill SIGKILLs and restarts on the same ledger and the same port, so the
//! simulators' webhook retries reach the restarted engine.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::contract::Contract;
use crate::runtime::{self, EngineSecrets, Running, RuntimeError, ServeOptions};

/// How long a (re)started engine process may take to answer `/healthz`.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// Everything needed to start the engine, the same for both kinds.
pub(super) struct EngineSpec {
    /// The contract file the engine runs (secrets only as `{ env = … }` references).
    pub contract_path: PathBuf,
    pub contract: Contract,
    pub secrets: EngineSecrets,
    pub ledger: PathBuf,
    pub addr: SocketAddr,
    pub workers: usize,
}

pub(super) enum EngineUnderTest {
    InProcess(Option<Running>),
    Child(ChildEngine),
}

impl EngineUnderTest {
    /// Start the engine in this process.
    pub async fn in_process(spec: EngineSpec) -> Result<EngineUnderTest, RuntimeError> {
        let running = runtime::serve_contract_with(
            spec.contract,
            spec.secrets,
            ServeOptions {
                ledger: spec.ledger,
                addr: spec.addr,
                workers: spec.workers,
                public_url: None,
                token: None,
                allow_non_loopback: false,
            },
        )
        .await?;
        Ok(EngineUnderTest::InProcess(Some(running)))
    }

    /// Start `exe serve` as a child process and wait until it answers `/healthz`.
    pub async fn child(exe: PathBuf, spec: EngineSpec) -> Result<EngineUnderTest, RuntimeError> {
        let s = &spec.secrets;
        let mut env = vec![
            ("DRIFTLESS_CRM_TOKEN", s.crm_token.clone()),
            ("DRIFTLESS_BILLING_KEY", s.billing_key.clone()),
        ];
        if let Some(v) = &s.crm_webhook_secret {
            env.push(("DRIFTLESS_CRM_WEBHOOK_SECRET", v.clone()));
        }
        if let Some(v) = &s.billing_webhook_secret {
            env.push(("DRIFTLESS_BILLING_WEBHOOK_SECRET", v.clone()));
        }
        let log_path = sibling(&spec.ledger, ".engine.log");
        let mut c = ChildEngine {
            exe,
            contract_path: spec.contract_path,
            ledger: spec.ledger,
            addr: spec.addr,
            workers: spec.workers,
            env,
            log_path,
            starts: 0,
            child: None,
        };
        c.start().await?;
        Ok(EngineUnderTest::Child(c))
    }

    /// SIGKILL the engine process and reap it.
    pub async fn kill(&mut self) -> Result<(), RuntimeError> {
        match self {
            EngineUnderTest::Child(c) => c.kill().await,
            EngineUnderTest::InProcess(_) => Err(RuntimeError::EngineProcess(
                "an in-process engine cannot be killed; crashes need a child process".into(),
            )),
        }
    }

    /// Start the engine process again (same ledger, same port) and wait until it is healthy.
    pub async fn restart(&mut self) -> Result<(), RuntimeError> {
        match self {
            EngineUnderTest::Child(c) => c.start().await,
            EngineUnderTest::InProcess(_) => Err(RuntimeError::EngineProcess(
                "an in-process engine cannot be restarted".into(),
            )),
        }
    }

    /// Stop the engine. Returns false when an engine process had already exited on its own.
    pub async fn stop(&mut self) -> bool {
        match self {
            EngineUnderTest::InProcess(r) => {
                if let Some(r) = r.take() {
                    r.shutdown().await;
                }
                true
            }
            EngineUnderTest::Child(c) => {
                let alive = c.running();
                let _ = c.kill().await;
                alive
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            EngineUnderTest::InProcess(_) => "in-process",
            EngineUnderTest::Child(_) => "child process",
        }
    }
}

/// A `driftless serve` child. Dropping it kills the process, so no error path (or panic) of
/// the drill leaks an engine.
pub(super) struct ChildEngine {
    exe: PathBuf,
    contract_path: PathBuf,
    ledger: PathBuf,
    addr: SocketAddr,
    workers: usize,
    env: Vec<(&'static str, String)>,
    /// The child's stdout and stderr, appended across restarts (never the drill's stdout).
    log_path: PathBuf,
    starts: usize,
    child: Option<Child>,
}

impl ChildEngine {
    fn open_log(&self) -> Result<File, RuntimeError> {
        use std::io::Write;
        let mut f = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|source| io_err(format!("open {}", self.log_path.display()), source))?;
        let _ = writeln!(f, "=== driftless drill: engine start #{} ===", self.starts + 1);
        Ok(f)
    }

    async fn start(&mut self) -> Result<(), RuntimeError> {
        let log = self.open_log()?;
        let log_err = log
            .try_clone()
            .map_err(|source| io_err(format!("open {}", self.log_path.display()), source))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--contract")
            .arg(&self.contract_path)
            .arg("--ledger")
            .arg(&self.ledger)
            .arg("--addr")
            .arg(self.addr.to_string())
            .arg("--workers")
            .arg(self.workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|source| io_err(format!("start {}", self.exe.display()), source))?;
        self.child = Some(child);
        self.starts += 1;
        self.wait_healthy().await
    }

    async fn wait_healthy(&mut self) -> Result<(), RuntimeError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| RuntimeError::EngineProcess(format!("HTTP client: {e}")))?;
        let url = format!("http://{}/healthz", self.addr);
        let deadline = Instant::now() + HEALTHY_WITHIN;
        while Instant::now() < deadline {
            if !self.running() {
                return Err(RuntimeError::EngineProcess(format!(
                    "the engine exited before it became healthy; see {}",
                    self.log_path.display()
                )));
            }
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(RuntimeError::EngineProcess(format!(
            "not healthy on {} within {:?}; see {}",
            self.addr,
            HEALTHY_WITHIN,
            self.log_path.display()
        )))
    }

    /// Whether the process is still running (false once it exited, or when none was started).
    fn running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | None => false,
            Some(Err(_)) => true,
        }
    }

    /// SIGKILL (what `Child::kill` sends on unix), then reap without blocking the runtime.
    async fn kill(&mut self) -> Result<(), RuntimeError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // An error here means it had already exited; it is reaped below either way.
        let _ = child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
                Ok(None) => {
                    self.child = Some(child);
                    return Err(RuntimeError::EngineProcess(
                        "killed engine did not exit within 10 s".into(),
                    ));
                }
                Err(source) => return Err(io_err("reap the engine process".into(), source)),
            }
        }
    }
}

impl Drop for ChildEngine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn io_err(what: String, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io { what, source }
}

/// A free loopback port, chosen once: the engine keeps it across restarts, so the webhook
/// endpoints registered with the simulators stay valid.
pub(super) fn free_port() -> Result<SocketAddr, RuntimeError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|source| io_err("pick a free loopback port".into(), source))?;
    l.local_addr()
        .map_err(|source| io_err("pick a free loopback port".into(), source))
}

/// `path` with `suffix` appended to its file name (`drill.db` → `drill.db.engine.log`).
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}
