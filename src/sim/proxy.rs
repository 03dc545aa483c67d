//! A fault proxy: put the simulators' API faults in front of an API nobody here wrote (e.g.
//! localstripe). Every request is forwarded to the upstream as it came (method, path, query,
//! headers including `Authorization` and `Idempotency-Key`, body) unless the seeded fault
//! decision says otherwise:
//!
//! - `rate_limit`: answered 429 with `Retry-After: 1` and Stripe's error JSON, not forwarded;
//! - `server_error` (bursts): answered 500/503, not forwarded;
//! - `timeout_after_commit` (mutating requests): forwarded and applied upstream, then the
//!   answer is held `hang_ms` and the connection dropped — the client never sees it;
//! - `slow`: forwarded, the answer delayed `slow_ms`.
//!
//! Loopback only. A request log records the fault applied to each request; it is served at
//! `GET /_proxy/requests` (never faulted, never forwarded) and the profile can be changed with
//! `POST /_proxy/faults` (body: a fault profile string), like the simulators' `/_sim/` routes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::faults::FaultEngine;
use super::FaultProfile;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy address {0} is not loopback; the fault proxy binds 127.0.0.1 only")]
    NotLoopback(SocketAddr),
    #[error("cannot bind the fault proxy to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream `{0}` is not an http:// or https:// URL")]
    BadUpstream(String),
    #[error("cannot build the proxy's HTTP client: {0}")]
    Client(String),
    /// The body of a response withheld by `timeout_after_commit`: the connection is dropped.
    #[error("response withheld (timeout_after_commit)")]
    Withheld,
}

pub struct ProxyConfig {
    /// The API to forward to, e.g. `http://127.0.0.1:8420`.
    pub upstream: String,
    /// Loopback only; port 0 = any free port.
    pub listen: SocketAddr,
    pub seed: u64,
    pub faults: FaultProfile,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProxiedRequest {
    pub seq: u64,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub mutating: bool,
    /// Whether the upstream received the request and answered it.
    pub forwarded: bool,
    pub upstream_status: Option<u16>,
    /// The status the client was sent; `None` when the answer was withheld.
    pub status: Option<u16>,
    pub idempotency_key: Option<String>,
    /// `rate_limit`, `server_error`, `slow` or `timeout_after_commit`.
    pub fault: Option<String>,
    pub at_ms: i64,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    faults: FaultEngine,
    log: Mutex<Vec<ProxiedRequest>>,
    seq: AtomicU64,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn record(&self, r: ProxiedRequest) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    async fn pause(&self, ms: u64) {
        super::pause_unless_stopped(&self.stop, ms).await;
    }
}

/// A running fault proxy.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    pub async fn start(cfg: ProxyConfig) -> Result<FaultProxy, ProxyError> {
        if !cfg.listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(cfg.listen));
        }
        let upstream = cfg.upstream.trim_end_matches('/').to_string();
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            return Err(ProxyError::BadUpstream(cfg.upstream));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ProxyError::Client(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            upstream,
            http,
            faults: FaultEngine::new(cfg.seed, cfg.faults),
            log: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            stop: watch::channel(false).0,
        });
        let app = axum::Router::new().fallback(entry).with_state(shared.clone());
        let mut rx = shared.stop.subscribe();
        let server = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                tracing::warn!(error = %e, "fault proxy stopped");
            }
        });
        Ok(FaultProxy {
            addr,
            shared,
            server: Mutex::new(Some(server)),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    pub fn request_log(&self) -> Vec<ProxiedRequest> {
        let mut v = self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by_key(|r| r.seq);
        v
    }

    pub fn set_faults(&self, f: FaultProfile) {
        self.shared.faults.set(f);
    }

    /// Stop serving (held answers are cut short). Idempotent.
    pub async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        let task = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut t) = task {
            if tokio::time::timeout(Duration::from_secs(2), &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// Headers that belong to one connection, not to the request or response.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        if !hop_by_hop(k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

fn stripe_error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut err = json!({ "type": kind, "message": message });
    if let Some(c) = code {
        err["code"] = Value::from(c);
    }
    let mut r = Response::new(Body::from(json!({ "error": err }).to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn rate_limited() -> Response {
    let mut r = stripe_error(
        429,
        "invalid_request_error",
        Some("rate_limit"),
        "Request rate limit exceeded (fault proxy).",
    );
    let h = r.headers_mut();
    h.insert("retry-after", HeaderValue::from_static("1"));
    h.insert("stripe-should-retry", HeaderValue::from_static("true"));
    r
}

fn server_error(status: u16) -> Response {
    let mut r = stripe_error(
        status,
        "api_error",
        None,
        "An unknown error occurred while processing your request (fault proxy).",
    );
    r.headers_mut()
        .insert("stripe-should-retry", HeaderValue::from_static("true"));
    r
}

/// A response whose body fails at once: the connection is dropped, no answer arrives.
fn withheld() -> Response {
    let body = Body::from_stream(futures_util::stream::iter([Err::<Bytes, _>(ProxyError::Withheld)]));
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

struct Upstream {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Upstream {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        *r.headers_mut() = end_to_end(&self.headers);
        r
    }
}

async fn forward(
    s: &Shared,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Upstream, reqwest::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let resp = s
        .http
        .request(method, format!("{}{}", s.upstream, path))
        .headers(end_to_end(headers))
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?;
    Ok(Upstream { status, headers, body })
}

fn admin(s: &Shared, method: &Method, path: &str, body: &Bytes) -> Response {
    let json_reply = |status: u16, v: Value| {
        let mut r = Response::new(Body::from(v.to_string()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r
    };
    match (method.as_str(), path) {
        ("GET", "/_proxy/requests") => {
            let log = s.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            json_reply(200, json!(log))
        }
        ("POST", "/_proxy/faults") => match FaultProfile::parse(&String::from_utf8_lossy(body)) {
            Ok(p) => {
                s.faults.set(p.clone());
                json_reply(200, json!({ "ok": true, "profile": format!("{p:?}") }))
            }
            Err(e) => json_reply(400, json!({ "error": e.to_string() })),
        },
        _ => json_reply(404, json!({ "error": "unknown proxy admin route" })),
    }
}

async fn entry(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if uri.path().starts_with("/_proxy/") {
        return admin(&s, &method, uri.path(), &body);
    }
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut log = ProxiedRequest {
        seq: s.seq.fetch_add(1, Ordering::Relaxed) + 1,
        method: method.to_string(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        mutating,
        forwarded: false,
        upstream_status: None,
        status: None,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        fault: None,
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    let d = s.faults.decide(mutating);
    let refused = if d.rate_limit {
        Some(("rate_limit", rate_limited()))
    } else {
        d.server_error.map(|st| ("server_error", server_error(st)))
    };
    if let Some((fault, r)) = refused {
        log.status = Some(r.status().as_u16());
        log.fault = Some(fault.into());
        s.record(log);
        return r;
    }
    let up = match forward(&s, method, &uri, &headers, body).await {
        Ok(up) => up,
        Err(e) => {
            let r = stripe_error(502, "api_error", None, &format!("fault proxy: upstream failed: {e}"));
            log.status = Some(502);
            s.record(log);
            return r;
        }
    };
    log.forwarded = true;
    log.upstream_status = Some(up.status.as_u16());
    if let Some(ms) = d.hang_ms {
        log.fault = Some("timeout_after_commit".into());
        s.record(log);
        s.pause(ms).await;
        return withheld();
    }
    if let Some(ms) = d.slow_ms {
        log.fault = Some("slow".into());
        s.pause(ms).await;
    }
    log.status = Some(up.status.as_u16());
    s.record(log);
    up.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that counts what reached it and echoes the headers the proxy forwarded.
    async fn upstream() -> (String, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::Relaxed);
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
                axum::Json(json!({
                    "method": method.as_str(),
                    "path": uri.path_and_query().map(|p| p.as_str().to_string()),
                    "authorization": header("authorization"),
                    "idempotency_key": header("idempotency-key"),
                    "body": String::from_utf8_lossy(&body),
                }))
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (format!("http://{addr}"), hits)
    }

    async fn proxy(upstream: String, faults: &str) -> FaultProxy {
        FaultProxy::start(ProxyConfig {
            upstream,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 3,
            faults: FaultProfile::parse(faults).expect("profile"),
        })
        .await
        .expect("proxy starts")
    }

    #[tokio::test]
    async fn forwards_method_path_query_headers_and_body() {
        let (up, hits) = upstream().await;
        let p = proxy(up, "none").await;
        let v: Value = reqwest::Client::new()
            .post(format!("{}/v1/customers?expand[]=x", p.base_url()))
            .bearer_auth("sk_test_1")
            .header("Idempotency-Key", "k1")
            .form(&[("email", "a@b.test")])
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/v1/customers?expand[]=x");
        assert_eq!(v["authorization"], "Bearer sk_test_1");
        assert_eq!(v["idempotency_key"], "k1");
        assert_eq!(v["body"], "email=a%40b.test");
        assert_eq!(hits.load(Ordering::Relaxed), 1);
        let log = p.request_log();
        assert_eq!(log.len(), 1);
        assert!(log[0].forwarded && log[0].mutating && log[0].fault.is_none());
        assert_eq!(log[0].idempotency_key.as_deref(), Some("k1"));
        p.shutdown().await;
    }

    #[tokio::test]
    async fn refused_requests_are_not_forwarded_and_withheld_ones_are() {
        let (up, hits) = upstream().await;
        let p = proxy(up, "429=1").await;
        let r = reqwest::get(format!("{}/v1/customers", p.base_url()))
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "rate_limit");
        p.set_faults(FaultProfile::parse("5xx=1,burst=1").expect("profile"));
        let r = reqwest::get(format!("{}/v1/customers", p.base_url()))
            .await
            .expect("answer");
        assert!(r.status().is_server_error());
        assert_eq!(
            hits.load(Ordering::Relaxed),
            0,
            "refused requests never reach the upstream"
        );

        p.set_faults(FaultProfile::parse("timeout=1,hang_ms=50").expect("profile"));
        let client = reqwest::Client::new();
        let answered = match client.post(format!("{}/v1/customers", p.base_url())).send().await {
            Ok(r) => r.bytes().await.is_ok(),
            Err(_) => false,
        };
        assert!(!answered, "a withheld answer never arrives whole");
        assert_eq!(
            hits.load(Ordering::Relaxed),
            1,
            "the withheld request was applied upstream"
        );
        // Reads are never withheld.
        let r = client
            .get(format!("{}/v1/customers", p.base_url()))
            .send()
            .await
            .expect("answer");
        assert!(r.status().is_success());
        let faults: Vec<_> = p.request_log().into_iter().map(|r| r.fault).collect();
        assert_eq!(
            faults,
            vec![
                Some("rate_limit".to_string()),
                Some("server_error".to_string()),
                Some("timeout_after_commit".to_string()),
                None
            ]
        );
        p.shutdown().await;
    }

    #[tokio::test]
    async fn refuses_a_non_loopback_address_and_a_bad_upstream() {
        let r = FaultProxy::start(ProxyConfig {
            upstream: "http://127.0.0.1:1".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            seed: 1,
            faults: FaultProfile::none(),
        })
        .await;
        assert!(matches!(r, Err(ProxyError::NotLoopback(_))));
        let r = FaultProxy::start(ProxyConfig {
            upstream: "ftp://x".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            faults: FaultProfile::none(),
        })
        .await;
        assert!(matches!(r, Err(ProxyError::BadUpstream(_))));
    }
}
