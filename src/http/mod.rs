//! The headless server: the console UI (embedded), its token-guarded JSON API with a live
//! event stream, an OpenAPI document, Prometheus `/metrics`, and the webhook receivers —
//! all on 127.0.0.1. Every operation of the operations table is a route `/api/<name>`; the
//! server adds the guards (token, Host and Origin, body rules), the live stream, the document
//! and the webhooks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use include_dir::{include_dir, Dir};

use crate::api::ApiError;
use crate::engine::{Engine, EngineError};
use crate::ingest::{IngestError, MAX_WEBHOOK_BYTES};

mod extract;
pub use extract::public_host;
use extract::JsonBody;

use crate::operations::{Answer, Args, Kind};

/// The console build, embedded at compile time (see build.rs).
static UI: Dir<'static> = include_dir!("$DRIFTLESS_UI_DIR");

/// Same policy as the desktop window: nothing but this origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'none'";

#[derive(Clone)]
struct AppState {
    engine: Engine,
    token: String,
    /// The public base URL webhooks are sent to, if it differs from what `Host` says.
    public_url: Option<String>,
}

/// Serialises an engine error as `{code, message}` — the one place this happens over HTTP.
struct HttpError(EngineError);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            EngineError::Ingest(IngestError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Ingest(IngestError::BadSignature { .. } | IngestError::Stale { .. }) => {
                StatusCode::UNAUTHORIZED
            }
            EngineError::Ingest(IngestError::NotConfigured { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Ingest(_)
            | EngineError::BadScope(_)
            | EngineError::BadRequest(_)
            | EngineError::ReasonRequired => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Paused(_) | EngineError::Busy(_) => StatusCode::CONFLICT,
            EngineError::Stopped | EngineError::Ledger(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Connector(_) => StatusCode::BAD_GATEWAY,
        };
        (status, Json(ApiError::from(self.0))).into_response()
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        HttpError(e)
    }
}

/// A fresh random token for this launch.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The error answers the server gives besides each route's own, added to every operation of
/// the document in one place (so the document lists what each route can answer): the
/// console's guards (401 token, 403 host or origin), a request that cannot be read (400; for
/// bodies also 413 too large and 415 not JSON), 405 for a method the route does not take,
/// and 503 while the ledger cannot answer.
struct ErrorAnswers;

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        // Every route takes the launch token as a bearer token (or `?token=`, for links).
        if let Some(c) = doc.components.as_mut() {
            c.add_security_scheme(
                "token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        doc.security = Some(vec![SecurityRequirement::new("token", Vec::<String>::new())]);
        let answer = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiError")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let guarded = path.starts_with("/api/") || path == "/metrics";
            let ops = [(false, item.get.as_mut()), (true, item.post.as_mut())];
            for (is_post, op) in ops {
                let Some(op) = op else { continue };
                let mut add = |code: &str, what: &str| {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| answer(what).into());
                };
                if guarded {
                    add("401", "`unauthorized`: the launch token is missing or wrong");
                    add(
                        "403",
                        "`host_not_allowed` / `origin_not_allowed`: the request names another host, or comes from another origin",
                    );
                }
                add(
                    "400",
                    "`bad_request`: a parameter or the body cannot be read (the message says which)",
                );
                add("405", "`method_not_allowed`: the route does not take this method");
                add(
                    "503",
                    "`ledger_error` / `engine_stopped`: the ledger cannot answer right now",
                );
                if is_post {
                    add("413", "`too_large`: the body is over 1 MiB");
                    add(
                        "415",
                        "`unsupported_media_type`: the body must be JSON (Content-Type: application/json)",
                    );
                }
            }
        }
    }
}

/// The console API's documentation: every operation of the table (`operations::openapi`),
/// the routes that are not operations (the live stream, Prometheus), and the answers every
/// route can give (`ErrorAnswers`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{ContentBuilder, ResponseBuilder};
    use utoipa::Modify;
    let mut doc = crate::operations::openapi();
    doc.info.description = Some(
        "Every route needs the launch token: `Authorization: Bearer <token>` or `?token=<token>`. \
         Reads are GET with query parameters, writes are POST with a JSON object body."
            .into(),
    );
    // A GET route answering `mime` (with `schema`, when its body has one).
    let text = |path: &str,
                what: &str,
                mime: &str,
                schema: Option<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>| {
        let op = OperationBuilder::new()
            .operation_id(Some(path.trim_start_matches('/').replace('/', "_")))
            .summary(Some(what))
            .response(
                "200",
                ResponseBuilder::new()
                    .description(what)
                    .content(mime, ContentBuilder::new().schema(schema).build())
                    .build(),
            )
            .build();
        PathItem::new(HttpMethod::Get, op)
    };
    doc.paths.paths.insert(
        "/api/stream".into(),
        text(
            "/api/stream",
            "server-sent events: `overview` (an Overview) once a second, `error` (an ApiError)",
            "text/event-stream",
            // Its events are JSON documents of two kinds, not one string: no schema.
            None,
        ),
    );
    doc.paths.paths.insert(
        "/metrics".into(),
        text(
            "/metrics",
            "Prometheus text exposition of the status figures and engine counters",
            "text/plain",
            Some(<String as utoipa::PartialSchema>::schema()),
        ),
    );
    ErrorAnswers.modify(&mut doc);
    doc
}

/// Who the audit log names for actions taken in the browser console.
const BY: &str = "operator:console";

pub fn router(engine: Engine, token: String, public_url: Option<String>) -> Router {
    let hosts = extract::Hosts::new(public_url.as_deref());
    let state = AppState {
        engine,
        token,
        public_url,
    };
    // Every operation of the table at `/api/<name>`: reads and CSV exports are GET with query
    // parameters, writes POST with a JSON object body.
    let mut guarded = Router::new();
    for op in crate::operations::OPERATIONS {
        let name = op.name;
        let path = format!("/api/{name}");
        guarded = match op.kind {
            Kind::Write => guarded.route(
                &path,
                post(
                    move |State(st): State<AppState>, JsonBody(args): JsonBody<serde_json::Value>| async move {
                        operation(&st, name, Args::Json(args)).await
                    },
                ),
            ),
            Kind::Read | Kind::Csv => guarded.route(
                &path,
                get(move |State(st): State<AppState>, uri: Uri| async move {
                    operation(&st, name, Args::Query(uri.query().unwrap_or(""))).await
                }),
            ),
        };
    }
    let guarded = guarded
        .route("/api/stream", get(stream))
        .route("/api/openapi.json", get(|| async { Json(openapi()) }))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // The console and its API answer only for this server's own names and origin; webhooks
    // are authenticated by their signatures and reach the server under whatever name the
    // tunnel or proxy in front of it uses.
    let console = Router::new()
        .merge(guarded)
        .fallback(get(ui))
        .layer(middleware::from_fn_with_state(hosts, extract::guard_origin));
    outer_layers(
        Router::new()
            .merge(console)
            .route("/healthz", get(|| async { "ok" }))
            .route("/webhooks/stripe", post(stripe_webhook))
            .route("/webhooks/hubspot", post(hubspot_webhook)),
    )
    .with_state(state)
}

/// One operation over HTTP: JSON, or a CSV export streamed a page at a time. A CSV's first
/// page is read before answering, so an error there (an unknown run, a bad filter) is a
/// proper `{code, message}`; a page failing later ends the file with `# export stopped: …`
/// (the headers are gone), the one behaviour of every export.
async fn operation(st: &AppState, name: &'static str, args: Args<'_>) -> Result<Response, HttpError> {
    match crate::operations::call(&st.engine, name, args, BY).await? {
        Answer::Json(v) => Ok(Json(v).into_response()),
        Answer::Csv(export) => {
            use futures_util::StreamExt;
            let (first, next) = export.page(None).await?;
            let disposition = format!("attachment; filename=\"{}\"", export.filename.replace('"', ""));
            let rest = futures_util::stream::unfold((export, next), |(export, next)| async move {
                let cursor = next?;
                match export.page(Some(cursor)).await {
                    Ok((text, n)) => Some((Bytes::from(text), (export, n))),
                    Err(e) => Some((Bytes::from(format!("# export stopped: {e}\n")), (export, None))),
                }
            });
            let body = futures_util::stream::once(async move { Bytes::from(first) })
                .chain(rest)
                .map(Ok::<_, Infallible>);
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/csv; charset=utf-8"),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                axum::body::Body::from_stream(body),
            )
                .into_response())
        }
    }
}

/// The layers every request passes (body cap, security headers): the server's HTTP stack,
/// shared with the performance suite's HTTP baseline so the two differ only in the handler.
pub fn outer_layers<S: Clone + Send + Sync + 'static>(app: Router<S>) -> Router<S> {
    app.layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .layer(middleware::from_fn(extract::json_errors))
        .layer(middleware::from_fn(security_headers))
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

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // The token travels in the URL: never leak it through a Referer.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
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
    if !constant_time_eq(&given, &st.token) {
        let body = ApiError {
            code: "unauthorized".into(),
            message: "missing or wrong token: open the URL driftless printed at start".into(),
        };
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let path = req.uri().path().to_string();
    let t0 = std::time::Instant::now();
    let res = next.run(req).await;
    let took = t0.elapsed();
    if took >= SLOW_REQUEST && path != "/api/stream" {
        tracing::warn!(path = %path, status = res.status().as_u16(), ms = took.as_millis() as u64, "slow API request");
    }
    res
}

/// An API call slower than this is logged (the console polls; a stall shows in the log).
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(2);

/// The console's files; unknown paths get `index.html` (client-side routes).
async fn ui(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") || path.starts_with("webhooks/") {
        let body = ApiError {
            code: "not_found".into(),
            message: format!("no such endpoint: /{path}"),
        };
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    let file = UI.get_file(path).or_else(|| UI.get_file("index.html"));
    match file {
        Some(f) => {
            let mime = match f.path().extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                Some("ico") => "image/x-icon",
                Some("json") => "application/json",
                Some("woff2") => "font/woff2",
                _ => "application/octet-stream",
            };
            let cache = if f.path().starts_with("assets") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, cache)],
                f.contents(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "console not built").into_response(),
    }
}

/// Server-sent events: `overview` (an `Overview`) once a second; `error` (an `ApiError`) when
/// the engine cannot answer.
#[utoipa::path(get, path = "/api/stream", responses((status = 200, description = "text/event-stream of `overview` events")))]
async fn stream(State(st): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let engine = st.engine.clone();
    let s = futures_util::stream::unfold((engine, true), |(engine, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ev = match engine.overview().await {
            Ok(o) => Event::default().event("overview").json_data(&o),
            Err(e) => Event::default().event("error").json_data(ApiError::from(e)),
        };
        let ev = ev.unwrap_or_else(|_| Event::default().event("error").data("serialisation failed"));
        Some((Ok(ev), (engine, false)))
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}

/// Prometheus text exposition of the status figures and engine counters.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics(State(st): State<AppState>) -> Result<Response, HttpError> {
    let status = st.engine.status().await?;
    let text = crate::engine::prometheus_text(&status, &st.engine.metrics().totals());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn stripe_webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, HttpError> {
    let sig = headers
        .get(crate::ingest::stripe::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let r = st.engine.ingest_stripe_webhook(sig, &body).await?;
    Ok(Json(r))
}

async fn hubspot_webhook(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, HttpError> {
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
            h(crate::ingest::hubspot::SIGNATURE_HEADER),
            h(crate::ingest::hubspot::TIMESTAMP_HEADER),
            &body,
        )
        .await?;
    Ok(Json(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_operation_and_the_other_routes_with_their_error_answers() {
        let doc = serde_json::to_value(openapi()).unwrap_or_default();
        for op in crate::operations::OPERATIONS {
            assert!(
                doc["paths"].get(format!("/api/{}", op.name)).is_some(),
                "{} missing",
                op.name
            );
        }
        for p in ["/api/stream", "/metrics"] {
            assert!(doc["paths"][p]["get"]["responses"]["401"].is_object(), "{p}");
        }
        assert!(doc["paths"]["/api/pause_outbound"]["post"]["responses"]["415"].is_object());
        assert!(doc["components"]["securitySchemes"]["token"].is_object());
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
