//! Assembly: build an engine from a contract (real systems) or from the embedded simulators
//! (demo), and run it behind the HTTP server. Shared by the CLI, the drill and the tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::connectors::hubspot::HubspotClient;
use crate::connectors::stripe::StripeClient;
use crate::connectors::ConnectorError;
use crate::contract::Contract;
use crate::engine::{Engine, EngineConfig, EngineError, SystemClock, WebhookSecrets};
use crate::ledger::lock::{Holder, LedgerLock};
use crate::secrets::{self, SecretError};
use crate::sim::{FaultProfile, SimConfig, SimError, Simulators};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot build a connector: {0}")]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("{0}")]
    Internal(String),
    #[error("simulators: {0}")]
    Sim(#[from] SimError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Contract(#[from] crate::contract::ContractError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The drill's engine process did not start, stopped on its own, or never became healthy.
    #[error("engine process: {0}")]
    EngineProcess(String),
    /// The serve options are unsafe (a short token, a public address without its safeguards).
    #[error("{0}")]
    Refused(String),
}

/// An engine serving HTTP.
pub struct Running {
    pub engine: Engine,
    pub addr: SocketAddr,
    pub token: String,
    pub sims: Option<Simulators>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    /// This engine's hold on its ledger; released after the ledger is closed.
    lock: LedgerLock,
}

impl Running {
    /// The console URL, carrying the launch token.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.token)
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.engine.shutdown().await;
        if let Some(s) = &self.sims {
            s.shutdown().await;
        }
        drop(self.lock);
    }
}

pub struct ServeOptions {
    pub ledger: PathBuf,
    pub addr: SocketAddr,
    pub workers: usize,
    pub public_url: Option<String>,
    /// A fixed API token (at least [`MIN_TOKEN_CHARS`] characters); `None` makes a fresh
    /// random one for this launch.
    pub token: Option<String>,
    /// Listen on an address other than loopback. Refused without a `public_url` (the host the
    /// API accepts requests for) and a fixed `token`.
    pub allow_non_loopback: bool,
}

/// The shortest fixed API token accepted (a launch's own token is 48 hex digits).
pub const MIN_TOKEN_CHARS: usize = 32;

impl ServeOptions {
    /// Refuse what would leave the API open: a short or empty token (an empty one turned
    /// authentication off), an address reachable from other machines unless the operator said
    /// so, with the public URL and a fixed token that come with it.
    pub fn check(&self) -> Result<(), RuntimeError> {
        if let Some(t) = &self.token {
            let n = t.chars().count();
            if n < MIN_TOKEN_CHARS {
                return Err(RuntimeError::Refused(format!(
                    "the API token is {n} characters long; it must be at least {MIN_TOKEN_CHARS} \
                     (leave --token and DRIFTLESS_TOKEN unset for a fresh random token each launch, \
                     or make one with `openssl rand -hex 32`)"
                )));
            }
            if !t.chars().all(|c| c.is_ascii_graphic()) {
                return Err(RuntimeError::Refused(
                    "the API token must be printable ASCII without spaces (it travels in an HTTP header and a URL)"
                        .into(),
                ));
            }
        }
        if !self.addr.ip().is_loopback() {
            if !self.allow_non_loopback {
                return Err(RuntimeError::Refused(format!(
                    "{} is not a loopback address: the console and its API would be reachable from other \
                     machines. Listen on 127.0.0.1, or pass --allow-non-loopback together with --public-url \
                     and a token from --token-file or DRIFTLESS_TOKEN",
                    self.addr
                )));
            }
            if self.public_url.is_none() {
                return Err(RuntimeError::Refused(format!(
                    "listening on {} needs --public-url: the address people and webhooks use, whose host is \
                     the only one (besides loopback) the API answers",
                    self.addr
                )));
            }
            if self.token.is_none() {
                return Err(RuntimeError::Refused(format!(
                    "listening on {} needs a fixed API token from --token-file or DRIFTLESS_TOKEN \
                     (a token on the command line shows in `ps`)",
                    self.addr
                )));
            }
        }
        if let Some(u) = &self.public_url {
            crate::http::public_host(u).map_err(RuntimeError::Refused)?;
        }
        Ok(())
    }
}

async fn serve_engine(
    engine: Engine,
    listener: tokio::net::TcpListener,
    opts: &ServeOptions,
    sims: Option<Simulators>,
    lock: LedgerLock,
) -> Result<Running, RuntimeError> {
    let public_url = opts.public_url.clone();
    let addr = listener.local_addr().map_err(|source| RuntimeError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })?;
    let token = opts.token.clone().unwrap_or_else(crate::http::new_token);
    let app = crate::http::router(engine.clone(), token.clone(), public_url);
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.changed().await;
        };
        if let Err(e) = crate::http::serve(listener, app, shutdown).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    engine.start();
    Ok(Running {
        engine,
        addr,
        token,
        sims,
        stop,
        server,
        lock,
    })
}

/// Take the ledger for the engine about to serve on `listener` (before the ledger is opened):
/// one serving engine per ledger.
fn lock_ledger(opts: &ServeOptions, listener: &tokio::net::TcpListener) -> Result<LedgerLock, RuntimeError> {
    let console = match (&opts.public_url, listener.local_addr()) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Ok(a)) => format!("http://{a}"),
        (None, Err(_)) => format!("http://{}", opts.addr),
    };
    Ok(LedgerLock::acquire(&opts.ledger, &Holder::this_process(&console))?)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, RuntimeError> {
    crate::http::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, source })
}

/// The credentials one engine needs, resolved: from the contract's references
/// ([`EngineSecrets::resolve`]) or handed over directly (the drill's in-process engine, which
/// knows the simulators' secrets). `Debug` redacts them.
#[derive(Clone)]
pub struct EngineSecrets {
    pub crm_token: String,
    pub billing_key: String,
    pub crm_webhook_secret: Option<String>,
    pub billing_webhook_secret: Option<String>,
}

impl std::fmt::Debug for EngineSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineSecrets(<redacted>)")
    }
}

impl EngineSecrets {
    /// Resolve the contract's secret references (environment variables, keychain entries).
    pub fn resolve(contract: &Contract) -> Result<EngineSecrets, SecretError> {
        let crm = &contract.systems.crm;
        let billing = &contract.systems.billing;
        let opt = |r: &Option<crate::contract::SecretRef>| -> Result<Option<String>, SecretError> {
            Ok(r.as_ref()
                .map(secrets::resolve)
                .transpose()?
                .map(|s| s.expose().to_string()))
        };
        Ok(EngineSecrets {
            crm_token: secrets::resolve(&crm.secret)?.expose().to_string(),
            billing_key: secrets::resolve(&billing.secret)?.expose().to_string(),
            crm_webhook_secret: opt(&crm.webhook_secret)?,
            billing_webhook_secret: opt(&billing.webhook_secret)?,
        })
    }
}

fn crm_client(contract: &Contract, secrets: &EngineSecrets) -> Result<HubspotClient, RuntimeError> {
    let cfg = &contract.systems.crm;
    Ok(HubspotClient::new(
        &cfg.base_url,
        secrets.crm_token.clone(),
        cfg.request_timeout_ms,
    )?)
}

/// Open an engine on the systems the contract names (base URLs, request timeouts), with these
/// credentials. Workers are started by [`serve_engine`].
async fn open_engine(
    contract: Contract,
    secrets: EngineSecrets,
    ledger: PathBuf,
    workers: usize,
    demo: bool,
) -> Result<Engine, RuntimeError> {
    let crm = crm_client(&contract, &secrets)?;
    let billing_cfg = &contract.systems.billing;
    let billing = StripeClient::new(
        &billing_cfg.base_url,
        secrets.billing_key.clone(),
        billing_cfg.request_timeout_ms,
    )?;
    Ok(Engine::open(EngineConfig {
        ledger,
        contract,
        crm: Arc::new(crm),
        billing: Arc::new(billing),
        webhook_secrets: WebhookSecrets {
            stripe: secrets.billing_webhook_secret,
            hubspot: secrets.crm_webhook_secret,
        },
        workers,
        clock: Arc::new(SystemClock),
        demo,
    })
    .await?)
}

/// Create the CRM custom properties the contract needs, retrying a few times: a simulator's
/// fault profile (or a real provider) may answer 429 or 5xx.
pub async fn ensure_crm_properties(contract: &Contract, secrets: &EngineSecrets) -> Result<(), RuntimeError> {
    use crate::connectors::CrmApi;
    let crm = crm_client(contract, secrets)?;
    let defs = crate::connectors::hubspot::required_properties(contract);
    let mut last = None;
    for _ in 0..30 {
        match crm.ensure_properties(&defs).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    match last {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Run against the systems the contract names, with secrets from its references.
pub async fn serve_contract(contract: Contract, opts: ServeOptions) -> Result<Running, RuntimeError> {
    let secrets = EngineSecrets::resolve(&contract)?;
    serve_contract_with(contract, secrets, opts).await
}

/// Run against the systems the contract names, with these credentials.
pub async fn serve_contract_with(
    contract: Contract,
    secrets: EngineSecrets,
    opts: ServeOptions,
) -> Result<Running, RuntimeError> {
    opts.check()?;
    let listener = bind(opts.addr).await?;
    let lock = lock_ledger(&opts, &listener)?;
    let engine = open_engine(contract, secrets, opts.ledger.clone(), opts.workers, false).await?;
    serve_engine(engine, listener, &opts, None, lock).await
}

pub struct DemoOptions {
    pub seed: u64,
    pub faults: FaultProfile,
    pub contract: Contract,
    pub serve: ServeOptions,
    /// Client timeout towards the simulators (short, so timeouts after commit show quickly).
    pub request_timeout_ms: u64,
}

/// The embedded default: both simulators in-process, the engine pointed at them over real
/// HTTP on loopback, webhooks registered the way the real systems register them.
pub async fn start_demo(opts: DemoOptions) -> Result<Running, RuntimeError> {
    opts.serve.check()?;
    let sims = Simulators::start(SimConfig {
        seed: opts.seed,
        faults: opts.faults,
        // A fresh webhook secret each launch (the HubSpot app's client secret).
        crm_webhook_secret: crate::http::new_token(),
        ..SimConfig::default()
    })
    .await?;
    let listener = bind(opts.serve.addr).await?;
    let lock = lock_ledger(&opts.serve, &listener)?;
    let local = listener.local_addr().map_err(|source| RuntimeError::Bind {
        addr: opts.serve.addr,
        source,
    })?;
    // Webhooks are registered the way the real systems register them, unless the contract
    // has that system polled only (the laptop case: no webhook can reach the engine).
    let mut contract = opts.contract;
    let stripe_secret = if contract.systems.billing.ingest.webhooks() {
        Some(
            sims.billing
                .register_webhook(&format!("http://{local}/webhooks/stripe")),
        )
    } else {
        None
    };
    if contract.systems.crm.ingest.webhooks() {
        sims.crm.set_webhook_target(&format!("http://{local}/webhooks/hubspot"));
    }
    for (sys, url) in [
        (&mut contract.systems.crm, sims.crm.base_url()),
        (&mut contract.systems.billing, sims.billing.base_url()),
    ] {
        sys.base_url = url;
        sys.request_timeout_ms = opts.request_timeout_ms;
    }
    let secrets = EngineSecrets {
        crm_token: sims.crm.token().to_string(),
        billing_key: sims.billing.api_key().to_string(),
        crm_webhook_secret: Some(sims.crm.webhook_secret().to_string()),
        billing_webhook_secret: stripe_secret,
    };
    ensure_crm_properties(&contract, &secrets).await?;
    let engine = open_engine(contract, secrets, opts.serve.ledger.clone(), opts.serve.workers, true).await?;
    serve_engine(engine, listener, &opts.serve, Some(sims), lock).await
}

/// An engine for one CLI command: the ledger, the contract and — where the contract's
/// secrets resolve — the real connectors. Workers are not started: the command's effect
/// (queued replans, resolved dead letters) is picked up by the running server.
pub async fn engine_for_cli(contract: Contract, ledger: PathBuf) -> Result<Engine, RuntimeError> {
    use crate::connectors::{BillingApi, CrmApi, Offline};
    let crm_cfg = contract.systems.crm.clone();
    let billing_cfg = contract.systems.billing.clone();
    let crm: Arc<dyn CrmApi> = match secrets::resolve(&crm_cfg.secret) {
        Ok(s) => Arc::new(HubspotClient::new(
            &crm_cfg.base_url,
            s.expose().to_string(),
            crm_cfg.request_timeout_ms,
        )?),
        Err(e) => Arc::new(Offline {
            system: "crm",
            why: format!("not connected in this process: {e}"),
        }),
    };
    let billing: Arc<dyn BillingApi> = match secrets::resolve(&billing_cfg.secret) {
        Ok(s) => Arc::new(StripeClient::new(
            &billing_cfg.base_url,
            s.expose().to_string(),
            billing_cfg.request_timeout_ms,
        )?),
        Err(e) => Arc::new(Offline {
            system: "billing",
            why: format!("not connected in this process: {e}"),
        }),
    };
    Ok(Engine::open(EngineConfig {
        ledger,
        contract,
        crm,
        billing,
        webhook_secrets: WebhookSecrets::default(),
        workers: 1,
        clock: Arc::new(SystemClock),
        demo: false,
    })
    .await?)
}
