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
}

/// An engine serving HTTP.
pub struct Running {
    pub engine: Engine,
    pub addr: SocketAddr,
    pub token: String,
    pub sims: Option<Simulators>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
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
    }
}

pub struct ServeOptions {
    pub ledger: PathBuf,
    pub addr: SocketAddr,
    pub workers: usize,
    pub public_url: Option<String>,
    /// A fixed API token; `None` makes a fresh random one for this launch.
    pub token: Option<String>,
}

async fn serve_engine(
    engine: Engine,
    listener: tokio::net::TcpListener,
    opts: &ServeOptions,
    sims: Option<Simulators>,
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
    })
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, RuntimeError> {
    crate::http::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, source })
}

/// Run against the systems the contract names, with secrets from its references.
pub async fn serve_contract(contract: Contract, opts: ServeOptions) -> Result<Running, RuntimeError> {
    let crm_cfg = &contract.systems.crm;
    let billing_cfg = &contract.systems.billing;
    let crm = HubspotClient::new(
        &crm_cfg.base_url,
        secrets::resolve(&crm_cfg.secret)?.expose().to_string(),
        crm_cfg.request_timeout_ms,
    )?;
    let billing = StripeClient::new(
        &billing_cfg.base_url,
        secrets::resolve(&billing_cfg.secret)?.expose().to_string(),
        billing_cfg.request_timeout_ms,
    )?;
    let webhook_secrets = WebhookSecrets {
        stripe: billing_cfg
            .webhook_secret
            .as_ref()
            .map(secrets::resolve)
            .transpose()?
            .map(|s| s.expose().to_string()),
        hubspot: crm_cfg
            .webhook_secret
            .as_ref()
            .map(secrets::resolve)
            .transpose()?
            .map(|s| s.expose().to_string()),
    };
    let listener = bind(opts.addr).await?;
    let engine = Engine::open(EngineConfig {
        ledger: opts.ledger.clone(),
        contract,
        crm: Arc::new(crm),
        billing: Arc::new(billing),
        webhook_secrets,
        workers: opts.workers,
        clock: Arc::new(SystemClock),
        demo: false,
    })
    .await?;
    serve_engine(engine, listener, &opts, None).await
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
    let sims = Simulators::start(SimConfig {
        seed: opts.seed,
        faults: opts.faults,
        ..SimConfig::default()
    })
    .await?;
    let listener = bind(opts.serve.addr).await?;
    let local = listener.local_addr().map_err(|source| RuntimeError::Bind {
        addr: opts.serve.addr,
        source,
    })?;
    let stripe_secret = sims
        .billing
        .register_webhook(&format!("http://{local}/webhooks/stripe"));
    sims.crm.set_webhook_target(&format!("http://{local}/webhooks/hubspot"));
    let mut contract = opts.contract;
    contract.systems.crm.base_url = sims.crm.base_url();
    contract.systems.billing.base_url = sims.billing.base_url();
    let crm = HubspotClient::new(
        &sims.crm.base_url(),
        sims.crm.token().to_string(),
        opts.request_timeout_ms,
    )?;
    let billing = StripeClient::new(
        &sims.billing.base_url(),
        sims.billing.api_key().to_string(),
        opts.request_timeout_ms,
    )?;
    let engine = Engine::open(EngineConfig {
        ledger: opts.serve.ledger.clone(),
        contract,
        crm: Arc::new(crm),
        billing: Arc::new(billing),
        webhook_secrets: WebhookSecrets {
            stripe: Some(stripe_secret),
            hubspot: Some(sims.crm.webhook_secret().to_string()),
        },
        workers: opts.serve.workers,
        clock: Arc::new(SystemClock),
        demo: true,
    })
    .await?;
    // Creating the CRM properties may meet the fault profile's 429s; try a few times.
    let mut last = None;
    for _ in 0..20 {
        match engine.ensure_crm_properties().await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    if let Some(e) = last {
        return Err(e.into());
    }
    serve_engine(engine, listener, &opts.serve, Some(sims)).await
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
