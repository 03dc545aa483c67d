//! The headless server: webhook receivers (signature-verified) and the token-guarded JSON API
//! on 127.0.0.1. Handlers stay thin: take state, await one engine call, convert the error.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::engine::{Engine, EngineError};
use crate::ingest::{IngestError, MAX_WEBHOOK_BYTES};

#[derive(Clone)]
struct AppState {
    engine: Engine,
    token: String,
    /// The public base URL webhooks are sent to, if it differs from what `Host` says.
    public_url: Option<String>,
}

/// Serialises an engine error as `{code, message}` — the one place this happens.
struct ApiError(EngineError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            EngineError::Ingest(IngestError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Ingest(IngestError::BadSignature { .. } | IngestError::Stale { .. }) => {
                StatusCode::UNAUTHORIZED
            }
            EngineError::Ingest(IngestError::NotConfigured { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Ingest(_) | EngineError::BadScope(_) => StatusCode::BAD_REQUEST,
            EngineError::Stopped | EngineError::Ledger(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Connector(_) => StatusCode::BAD_GATEWAY,
        };
        (
            status,
            Json(json!({"code": self.0.code(), "message": self.0.to_string()})),
        )
            .into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError(e)
    }
}

/// A fresh random token for this launch.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn router(engine: Engine, token: String, public_url: Option<String>) -> Router {
    let state = AppState {
        engine,
        token,
        public_url,
    };
    let api = Router::new()
        .route("/api/status", get(status))
        .route("/api/pause_outbound", post(pause_outbound))
        .route("/api/resume_outbound", post(resume_outbound))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(api)
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/webhooks/stripe", post(stripe_webhook))
        .route("/webhooks/hubspot", post(hubspot_webhook))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .with_state(state)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let from_header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    });
    let given = from_header.or(from_query).unwrap_or_default();
    let ok = given.len() == st.token.len()
        && given
            .bytes()
            .zip(st.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": "unauthorized", "message": "missing or wrong token: use the URL driftless printed at start"})),
        )
            .into_response();
    }
    next.run(req).await
}

async fn index() -> impl IntoResponse {
    Json(json!({
        "name": "driftless",
        "api": ["/api/status", "/api/pause_outbound", "/api/resume_outbound"],
        "webhooks": ["/webhooks/stripe", "/webhooks/hubspot"],
        "auth": "append ?token=<launch token> or send Authorization: Bearer <token>",
    }))
}

async fn status(State(st): State<AppState>) -> Result<Json<crate::engine::Status>, ApiError> {
    Ok(Json(st.engine.status().await?))
}

#[derive(Debug, Deserialize, Default)]
struct PauseBody {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn pause_outbound(
    State(st): State<AppState>,
    body: Option<Json<PauseBody>>,
) -> Result<impl IntoResponse, ApiError> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let scope = b.scope.as_deref().unwrap_or("global");
    st.engine
        .pause_outbound(scope, b.reason.as_deref(), "operator:api")
        .await?;
    Ok(Json(json!({"paused": scope})))
}

async fn resume_outbound(
    State(st): State<AppState>,
    body: Option<Json<PauseBody>>,
) -> Result<impl IntoResponse, ApiError> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let scope = b.scope.as_deref().unwrap_or("global");
    let was = st
        .engine
        .resume_outbound(scope, b.reason.as_deref(), "operator:api")
        .await?;
    Ok(Json(json!({"resumed": scope, "was_paused": was})))
}

async fn stripe_webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let sig = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let r = st.engine.ingest_stripe_webhook(sig, &body).await?;
    Ok(Json(r))
}

async fn hubspot_webhook(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let base = match &st.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{}", h("host").unwrap_or("127.0.0.1")),
    };
    let full = format!("{base}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let r = st
        .engine
        .ingest_hubspot_webhook(
            method.as_str(),
            &full,
            h("x-hubspot-signature-v3"),
            h("x-hubspot-request-timestamp"),
            &body,
        )
        .await?;
    Ok(Json(r))
}
