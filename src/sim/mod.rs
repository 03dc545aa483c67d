//! Two fault-injecting HTTP simulators on loopback: a Stripe-compatible billing API and a
//! HubSpot CRM v3-compatible API. They are the demo mode and the test oracle; they share no
//! code with the engine's connectors on purpose.
//!
//! Each simulator answers its provider's API (auth, faults, request log) and a small admin
//! surface under `/_sim/` (no auth, never faulted, not logged). Billing: customers, prices,
//! subscriptions, invoices, credit notes and a billing cycle run on demand against the shared
//! clock. CRM: contacts and companies, each with its own properties API.

mod actors;
mod billing;
mod clock;
mod crm;
mod faults;
mod proxy;
mod webhooks;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use actors::{
    run_actors, run_billing_activity, run_plan_requests, spawn_background_actors, ActorPlan, ActorReport,
    BillingActivity, BillingActivityReport,
};
pub use billing::BillingSim;
pub use clock::SimClock;
pub use crm::CrmSim;
pub use faults::FaultProfile;
pub use proxy::{FaultProxy, ProxiedRequest, ProxyConfig, ProxyError};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot bind simulator to {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("simulator address {0} is not loopback; simulators bind 127.0.0.1 only")]
    NotLoopback(SocketAddr),
    #[error("bad fault profile: {0}")]
    BadFaultProfile(String),
    #[error("no such {kind}: {id}")]
    UnknownRecord { kind: &'static str, id: String },
    #[error("invalid edit: {0}")]
    InvalidEdit(String),
}

pub struct SimConfig {
    pub seed: u64,
    pub faults: FaultProfile,
    /// Port 0 = any free port.
    pub crm_addr: SocketAddr,
    pub billing_addr: SocketAddr,
    pub billing_api_key: String,
    pub crm_token: String,
    /// The HubSpot app's client secret, used for `X-HubSpot-Signature-v3`.
    pub crm_webhook_secret: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        SimConfig {
            seed: 1,
            faults: FaultProfile::none(),
            crm_addr: any,
            billing_addr: any,
            billing_api_key: "sk_test_sim".into(),
            crm_token: "pat-sim".into(),
            crm_webhook_secret: "sim-client-secret".into(),
        }
    }
}

/// One API request as the simulator saw it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoggedRequest {
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// The status of the committed outcome; for `timeout_after_commit` the client never saw it.
    pub status: u16,
    pub mutating: bool,
    /// Whether the simulator's state changed.
    pub applied: bool,
    pub idempotency_key: Option<String>,
    pub replayed: bool,
    pub correlation_id: Option<String>,
    /// `rate_limit`, `server_error`, `slow` or `timeout_after_commit`.
    pub fault: Option<String>,
    pub at_ms: i64,
}

/// Both simulators. Cheap to clone.
#[derive(Clone)]
pub struct Simulators {
    pub crm: CrmSim,
    pub billing: BillingSim,
}

impl Simulators {
    pub async fn start(cfg: SimConfig) -> Result<Simulators, SimError> {
        for addr in [cfg.crm_addr, cfg.billing_addr] {
            if !addr.ip().is_loopback() {
                return Err(SimError::NotLoopback(addr));
            }
        }
        let clock = Arc::new(SimClock::default());
        let billing_core = Core::bind("billing", cfg.billing_addr, cfg.seed, &cfg.faults, &clock).await?;
        let crm_core = Core::bind(
            "crm",
            cfg.crm_addr,
            cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            &cfg.faults,
            &clock,
        )
        .await?;
        let billing = BillingSim::new(billing_core, cfg.billing_api_key);
        let crm = CrmSim::new(crm_core, cfg.crm_token, cfg.crm_webhook_secret);
        Ok(Simulators { crm, billing })
    }

    /// Stop serving and stop delivering webhooks. Idempotent.
    pub async fn shutdown(&self) {
        self.billing.core().shutdown().await;
        self.crm.core().shutdown().await;
    }

    /// Set the fault profile of both simulators.
    pub fn set_faults(&self, f: FaultProfile) {
        self.billing.core().faults.set(f.clone());
        self.crm.core().faults.set(f);
    }

    /// Webhook deliveries queued, in retry or on the wire, both simulators.
    pub fn pending_webhooks(&self) -> usize {
        self.billing.core().hooks.pending() + self.crm.core().hooks.pending()
    }
}

// ---------------------------------------------------------------------------------------
// Shared HTTP plumbing.

/// What every simulator has: clock, faults, request log, webhook queue, server tasks.
pub(crate) struct Core {
    addr: SocketAddr,
    /// This simulator's seed (for seeded behaviour beyond faults, e.g. payment failures).
    pub seed: u64,
    listener: Mutex<Option<tokio::net::TcpListener>>,
    pub clock: Arc<SimClock>,
    pub faults: Arc<faults::FaultEngine>,
    pub hooks: Arc<webhooks::WebhookQueue>,
    log: Mutex<Vec<LoggedRequest>>,
    seq: AtomicU64,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Core {
    async fn bind(
        _name: &str,
        addr: SocketAddr,
        seed: u64,
        profile: &FaultProfile,
        clock: &Arc<SimClock>,
    ) -> Result<Core, SimError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let faults = Arc::new(faults::FaultEngine::new(seed, profile.clone()));
        let hooks = Arc::new(webhooks::WebhookQueue::new(seed ^ 0x5bd1_e995, faults.clone()));
        Ok(Core {
            addr,
            seed,
            listener: Mutex::new(Some(listener)),
            clock: clock.clone(),
            faults,
            hooks,
            log: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            stop: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Start the HTTP server and the webhook worker for `api`.
    fn serve<A: Api>(api: Arc<A>) {
        let core = api.core();
        let Some(listener) = core.listener.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let app = axum::Router::new().fallback(entry::<A>).with_state(api.clone());
        let mut rx = core.stop.subscribe();
        let server = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        let worker = tokio::spawn(core.hooks.clone().run(core.stop.subscribe()));
        core.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([server, worker]);
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for mut t in tasks {
            if tokio::time::timeout(Duration::from_secs(2), &mut t).await.is_err() {
                t.abort();
            }
        }
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        let mut v = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by_key(|r| r.seq);
        v
    }

    fn record(&self, r: LoggedRequest) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    async fn pause(&self, ms: u64) {
        pause_unless_stopped(&self.stop, ms).await;
    }
}

/// A parsed incoming request.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Path segments after the leading slash.
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_matches('/').split('/').collect()
    }
}

/// A response to send.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_headers(mut self, headers: &[(&'static str, String)]) -> Reply {
        self.headers.extend(headers.iter().cloned());
        self
    }

    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::from(self.body.to_string()));
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                h.append(k, v);
            }
        }
        resp
    }
}

/// The outcome of handling one API request.
pub(crate) struct Outcome {
    pub reply: Reply,
    pub applied: bool,
    pub idempotency_key: Option<String>,
    pub replayed: bool,
    pub correlation_id: Option<String>,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome {
            reply,
            applied: false,
            idempotency_key: None,
            replayed: false,
            correlation_id: None,
        }
    }
}

/// What differs between the two simulators.
pub(crate) trait Api: Send + Sync + Sized + 'static {
    fn core(&self) -> &Core;
    fn authorized(&self, req: &Req) -> bool;
    fn unauthorized(&self) -> Reply;
    fn is_mutating(&self, req: &Req) -> bool;
    fn rate_limited(&self) -> Reply;
    /// How this provider counts its quota (profile option `quota`).
    fn quota_shape(&self) -> faults::QuotaShape {
        faults::QuotaShape::PerSecondBucket
    }
    /// Over the quota: the provider's own 429.
    fn over_quota(&self, _q: &faults::QuotaAnswer) -> Reply {
        self.rate_limited()
    }
    /// Headers telling the client where it stands (HubSpot sends them on every response).
    fn quota_headers(&self, _q: &faults::QuotaAnswer) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    fn server_error(&self, status: u16) -> Reply;
    /// Handle an API request. Synchronous: state changes are atomic.
    fn handle(&self, req: &Req) -> Outcome;
    /// Simulator-specific admin routes; `None` for unknown ones.
    fn admin(&self, req: &Req) -> Option<Reply>;
    fn state_json(&self) -> Value;
}

async fn entry<A: Api>(
    State(api): State<Arc<A>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = match serde_urlencoded::from_str::<Vec<(String, String)>>(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(_) => return Reply::json(400, json!({"error": "malformed query string"})).into_response(),
    };
    let req = Req {
        method,
        path: uri.path().to_string(),
        query,
        headers,
        body,
    };
    if req.path.starts_with("/_sim/") {
        return admin(&*api, &req).into_response();
    }
    let core = api.core();
    let mut log = LoggedRequest {
        seq: core.seq.fetch_add(1, Ordering::Relaxed) + 1,
        method: req.method.to_string(),
        path: req.path.clone(),
        status: 0,
        mutating: api.is_mutating(&req),
        applied: false,
        idempotency_key: None,
        replayed: false,
        correlation_id: None,
        fault: None,
        at_ms: core.clock.now_ms(),
    };
    if !api.authorized(&req) {
        let r = api.unauthorized();
        log.status = r.status;
        core.record(log);
        return r.into_response();
    }
    let quota = core.faults.take_quota(api.quota_shape());
    let quota_headers = quota.map(|q| api.quota_headers(&q)).unwrap_or_default();
    if let Some(q) = quota.filter(|q| !q.allowed) {
        let r = api.over_quota(&q).with_headers(&quota_headers);
        log.status = r.status;
        log.fault = Some("quota".into());
        core.record(log);
        return r.into_response();
    }
    let d = core.faults.decide(log.mutating);
    let fault_reply = if d.rate_limit {
        Some(("rate_limit", api.rate_limited()))
    } else {
        d.server_error.map(|s| ("server_error", api.server_error(s)))
    };
    if let Some((fault, r)) = fault_reply {
        log.status = r.status;
        log.fault = Some(fault.into());
        core.record(log);
        return r.with_headers(&quota_headers).into_response();
    }
    let out = api.handle(&req);
    log.status = out.reply.status;
    log.applied = out.applied;
    log.idempotency_key = out.idempotency_key;
    log.replayed = out.replayed;
    log.correlation_id = out.correlation_id;
    if let Some(ms) = d.hang_ms {
        log.fault = Some("timeout_after_commit".into());
        core.record(log);
        core.pause(ms).await;
        return api.server_error(500).with_headers(&quota_headers).into_response();
    }
    if let Some(ms) = d.slow_ms {
        log.fault = Some("slow".into());
        core.pause(ms).await;
    }
    core.record(log);
    out.reply.with_headers(&quota_headers).into_response()
}

fn admin<A: Api>(api: &A, req: &Req) -> Reply {
    let core = api.core();
    let bad = |msg: String| Reply::json(400, json!({ "error": msg }));
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/_sim/requests") => Reply::json(200, json!(core.request_log())),
        ("GET", "/_sim/state") => Reply::json(200, api.state_json()),
        ("GET", "/_sim/faults") => Reply::json(200, json!(format!("{:?}", core.faults.profile()))),
        ("POST", "/_sim/faults") => match FaultProfile::parse(&String::from_utf8_lossy(&req.body)) {
            Ok(p) => {
                core.faults.set(p.clone());
                Reply::json(200, json!({ "ok": true, "profile": format!("{p:?}") }))
            }
            Err(e) => bad(e.to_string()),
        },
        // Drop the webhooks of changes made while on (drift behind the engine's back, for
        // the reconciler's browser tests); `{"on": false}` delivers again.
        ("POST", "/_sim/suppress_webhooks") => {
            match serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v["on"].as_bool())
            {
                Some(on) => {
                    core.hooks.suppress(on);
                    Reply::json(200, json!({ "ok": true, "suppressed": on }))
                }
                None => bad("expected {\"on\": true|false}".into()),
            }
        }
        ("POST", "/_sim/clock/advance") => {
            match serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v["secs"].as_i64())
            {
                Some(secs) => {
                    core.clock.advance(secs);
                    Reply::json(200, json!({ "ok": true, "now": core.clock.now_s() }))
                }
                None => bad("expected {\"secs\": N}".into()),
            }
        }
        _ => api
            .admin(req)
            .unwrap_or_else(|| Reply::json(404, json!({ "error": "unknown admin route" }))),
    }
}

/// Random alphanumeric id suffix (ids are unique, not seeded).
/// Sleep `ms`, cut short when `stop` turns true (a server shutting down).
pub(crate) async fn pause_unless_stopped(stop: &watch::Sender<bool>, ms: u64) {
    let mut rx = stop.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
        _ = rx.wait_for(|s| *s) => {}
    }
}

pub(crate) fn rand_id(prefix: &str, len: usize) -> String {
    use rand::Rng;
    let s: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{s}")
}
