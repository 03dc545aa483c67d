//! The headless server: the console UI (embedded), its token-guarded JSON API with a live
//! event stream, an OpenAPI document, Prometheus `/metrics`, and the webhook receivers —
//! all on 127.0.0.1. Handlers stay thin: take state, await one engine call, convert the error.

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
use utoipa::OpenApi;

use crate::api::{
    ApiError, BackfillAsk, BackfillProgress, BulkResult, DeadLetterAction, DeadLetterFilter, DeadLetterList,
    MigrationMode, NoArgs, Overview, PauseRequest, PauseResult, ReconcileAsk, ReconcileReport, ReconciliationState,
    RecordRef, ReplayPreview, ReplayRequest, ReviewDecision, ReviewItem, Status, Timeline, UndropRequest,
    ValidationReport,
};
use crate::api::{AuditFilter, AuditList, ContractInfo, ReplayRun, ReplayRunRef};
use crate::api::{
    ConnectKey, ConnectProperties, ConnectPropertiesRequest, ConnectSaved, ConnectStep, WritesAnswer, WritesRequest,
};
use crate::api::{DeadLetterDetail, DeadLetterRef};
use crate::api::{ReconRepairAsk, ReconRunSummary};
use crate::engine::{Engine, EngineError};
use crate::ingest::{IngestError, MAX_WEBHOOK_BYTES};

mod extract;
pub use extract::public_host;
use extract::{Args, JsonBody};

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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "driftless console API",
        description = "Every route needs the launch token: `Authorization: Bearer <token>` or `?token=<token>`."
    ),
    paths(
        status,
        overview,
        pause_outbound,
        resume_outbound,
        stream,
        metrics,
        reconciliation_state,
        start_reconcile,
        cancel_reconcile,
        backfill_state,
        start_backfill,
        cancel_backfill,
        migration_status,
        validation_report,
        list_dead_letters,
        retry_dead_letters,
        discard_dead_letters,
        record_timeline,
        undrop_event,
        replay,
        list_reviews,
        resolve_review,
        replay_run,
        cancel_replay,
        list_audit,
        audit_csv,
        contract_info,
        dead_letter_detail,
        export_dead_letters,
        reconcile_runs,
        reconcile_report,
        reconcile_repair,
        reconcile_csv,
        connect_test,
        connect_properties,
        connect_save_key,
        set_writes
    ),
    modifiers(&ErrorAnswers),
    components(schemas(
        NoArgs,
        Status,
        Overview,
        PauseRequest,
        PauseResult,
        ApiError,
        ReconciliationState,
        ReconcileAsk,
        ReconcileReport,
        BackfillProgress,
        BackfillAsk,
        MigrationMode,
        ValidationReport,
        DeadLetterFilter,
        DeadLetterList,
        DeadLetterAction,
        BulkResult,
        Timeline,
        UndropRequest,
        RecordRef,
        ReplayRequest,
        ReplayPreview,
        ReviewItem,
        ReviewDecision,
        ReplayRun,
        ReplayRunRef,
        AuditFilter,
        AuditList,
        ContractInfo,
        DeadLetterDetail,
        ReconRunSummary,
        ReconRepairAsk,
        ConnectKey,
        ConnectStep,
        ConnectPropertiesRequest,
        ConnectProperties,
        ConnectSaved,
        WritesRequest,
        WritesAnswer
    ))
)]
pub struct ApiDoc;

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

pub fn router(engine: Engine, token: String, public_url: Option<String>) -> Router {
    let hosts = extract::Hosts::new(public_url.as_deref());
    let state = AppState {
        engine,
        token,
        public_url,
    };
    let guarded = Router::new()
        .route("/api/status", get(status))
        .route("/api/overview", get(overview))
        .route("/api/pause_outbound", post(pause_outbound))
        .route("/api/resume_outbound", post(resume_outbound))
        .route("/api/stream", get(stream))
        .route("/api/reconciliation_state", get(reconciliation_state))
        .route("/api/start_reconcile", post(start_reconcile))
        .route("/api/cancel_reconcile", post(cancel_reconcile))
        .route("/api/backfill_state", get(backfill_state))
        .route("/api/start_backfill", post(start_backfill))
        .route("/api/cancel_backfill", post(cancel_backfill))
        .route("/api/migration_status", get(migration_status))
        .route("/api/validation_report", get(validation_report))
        .route("/api/list_dead_letters", post(list_dead_letters))
        .route("/api/retry_dead_letters", post(retry_dead_letters))
        .route("/api/discard_dead_letters", post(discard_dead_letters))
        .route("/api/record_timeline", get(record_timeline))
        .route("/api/undrop_event", post(undrop_event))
        .route("/api/replay", post(replay))
        .route("/api/list_reviews", get(list_reviews))
        .route("/api/resolve_review", post(resolve_review))
        .route("/api/replay_run", get(replay_run))
        .route("/api/cancel_replay", post(cancel_replay))
        .route("/api/list_audit", post(list_audit))
        .route("/api/audit.csv", get(audit_csv))
        .route("/api/contract_info", get(contract_info))
        .route("/api/dead_letter_detail", get(dead_letter_detail))
        .route("/api/export_dead_letters", get(export_dead_letters))
        .route("/api/reconcile_runs", get(reconcile_runs))
        .route("/api/reconcile_report", get(reconcile_report))
        .route("/api/reconcile_repair", post(reconcile_repair))
        .route("/api/reconcile.csv", get(reconcile_csv))
        .route("/api/connect_test", post(connect_test))
        .route("/api/connect_properties", post(connect_properties))
        .route("/api/connect_save_key", post(connect_save_key))
        .route("/api/set_writes", post(set_writes))
        .route("/api/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
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

/// Counts by state, writes, queue, lag and pause (same as `driftless status --json`).
#[utoipa::path(get, path = "/api/status", responses((status = 200, body = Status), (status = 401, body = ApiError)))]
async fn status(State(st): State<AppState>) -> Result<Json<Status>, HttpError> {
    Ok(Json(st.engine.status().await?))
}

/// Everything the overview screen shows.
#[utoipa::path(get, path = "/api/overview", responses((status = 200, body = Overview), (status = 401, body = ApiError)))]
async fn overview(State(st): State<AppState>) -> Result<Json<Overview>, HttpError> {
    Ok(Json(st.engine.overview().await?))
}

/// Pause outbound writes (global or one destination), with a reason; persisted and audited.
#[utoipa::path(post, path = "/api/pause_outbound", request_body = PauseRequest, responses((status = 200, body = PauseResult), (status = 400, body = ApiError)))]
async fn pause_outbound(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<PauseRequest>,
) -> Result<Json<PauseResult>, HttpError> {
    Ok(Json(st.engine.pause_outbound(&b, BY).await?))
}

/// Resume outbound writes; the backlog drains in per-record order.
#[utoipa::path(post, path = "/api/resume_outbound", request_body = PauseRequest, responses((status = 200, body = PauseResult), (status = 400, body = ApiError)))]
async fn resume_outbound(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<PauseRequest>,
) -> Result<Json<PauseResult>, HttpError> {
    Ok(Json(st.engine.resume_outbound(&b, BY).await?))
}

/// Who the audit log names for actions taken in the browser console.
const BY: &str = "operator:console";

/// The reconciliation going on (if any) and the last finished run's report.
#[utoipa::path(get, path = "/api/reconciliation_state", responses((status = 200, body = ReconciliationState), (status = 401, body = ApiError)))]
async fn reconciliation_state(State(st): State<AppState>) -> Result<Json<ReconciliationState>, HttpError> {
    Ok(Json(st.engine.reconciliation_state().await?))
}

/// Start a reconciliation in the background (resumes an unfinished one); 409 `busy` while one runs.
#[utoipa::path(post, path = "/api/start_reconcile", request_body = ReconcileAsk, responses((status = 200, body = ReconciliationState), (status = 409, body = ApiError)))]
async fn start_reconcile(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ReconcileAsk>,
) -> Result<Json<ReconciliationState>, HttpError> {
    Ok(Json(st.engine.start_reconcile(&b, BY).await?))
}

/// Stop the running reconciliation at its next page; it stays resumable.
#[utoipa::path(post, path = "/api/cancel_reconcile", request_body = NoArgs, responses((status = 200, body = ReconciliationState)))]
async fn cancel_reconcile(
    State(st): State<AppState>,
    JsonBody(_): JsonBody<crate::api::NoArgs>,
) -> Result<Json<ReconciliationState>, HttpError> {
    Ok(Json(st.engine.cancel_reconcile(BY).await?))
}

/// The latest backfill with its estimated finish.
#[utoipa::path(get, path = "/api/backfill_state", responses((status = 200, body = BackfillProgress)))]
async fn backfill_state(State(st): State<AppState>) -> Result<Json<BackfillProgress>, HttpError> {
    Ok(Json(st.engine.backfill_state().await?))
}

/// Start (or resume) a backfill in the background; 409 `busy` while one runs.
#[utoipa::path(post, path = "/api/start_backfill", request_body = BackfillAsk, responses((status = 200, body = BackfillProgress), (status = 409, body = ApiError)))]
async fn start_backfill(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<BackfillAsk>,
) -> Result<Json<BackfillProgress>, HttpError> {
    Ok(Json(st.engine.start_backfill(&b.systems, BY).await?))
}

/// Cancel the running backfill before its next page; it stays resumable.
#[utoipa::path(post, path = "/api/cancel_backfill", request_body = NoArgs, responses((status = 200, body = BackfillProgress)))]
async fn cancel_backfill(
    State(st): State<AppState>,
    JsonBody(_): JsonBody<crate::api::NoArgs>,
) -> Result<Json<BackfillProgress>, HttpError> {
    Ok(Json(st.engine.cancel_backfill(BY).await?))
}

/// Migration mode while active (`null` otherwise), with its phases.
#[utoipa::path(get, path = "/api/migration_status", responses((status = 200, body = Option<MigrationMode>)))]
async fn migration_status(State(st): State<AppState>) -> Result<Json<Option<MigrationMode>>, HttpError> {
    Ok(Json(st.engine.migration_status().await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectQuery {
    object: String,
}

/// A validation report for one customer-pair object (counts, links, sampled mismatches).
#[utoipa::path(get, path = "/api/validation_report", params(("object" = String, Query, description = "a contract object, e.g. customer")), responses((status = 200, body = ValidationReport), (status = 400, body = ApiError)))]
async fn validation_report(
    State(st): State<AppState>,
    Args(q): Args<ObjectQuery>,
) -> Result<Json<ValidationReport>, HttpError> {
    Ok(Json(st.engine.validation_report(&q.object).await?))
}

/// Dead letters matching a filter (newest first, `limit`/`offset` paging), with the total.
#[utoipa::path(post, path = "/api/list_dead_letters", request_body = DeadLetterFilter, responses((status = 200, body = DeadLetterList)))]
async fn list_dead_letters(
    State(st): State<AppState>,
    JsonBody(f): JsonBody<DeadLetterFilter>,
) -> Result<Json<DeadLetterList>, HttpError> {
    Ok(Json(st.engine.list_dead_letters(&f).await?))
}

/// Retry the filtered dead letters (their records are planned again), or preview the blast radius.
#[utoipa::path(post, path = "/api/retry_dead_letters", request_body = DeadLetterAction, responses((status = 200, body = BulkResult), (status = 400, body = ApiError)))]
async fn retry_dead_letters(
    State(st): State<AppState>,
    JsonBody(a): JsonBody<DeadLetterAction>,
) -> Result<Json<BulkResult>, HttpError> {
    Ok(Json(
        st.engine
            .retry_dead_letters(&a.filter, a.dry_run, &a.reason, BY)
            .await?,
    ))
}

/// Discard the filtered dead letters with a reason, or preview the blast radius.
#[utoipa::path(post, path = "/api/discard_dead_letters", request_body = DeadLetterAction, responses((status = 200, body = BulkResult), (status = 400, body = ApiError)))]
async fn discard_dead_letters(
    State(st): State<AppState>,
    JsonBody(a): JsonBody<DeadLetterAction>,
) -> Result<Json<BulkResult>, HttpError> {
    Ok(Json(
        st.engine
            .discard_dead_letters(&a.filter, a.dry_run, &a.reason, BY)
            .await?,
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordQuery {
    query: String,
}

/// A record's causal timeline, found by email, CRM id, billing id or record key.
#[utoipa::path(get, path = "/api/record_timeline", params(("query" = String, Query, description = "email, CRM id, billing id or record key")), responses((status = 200, body = Timeline), (status = 404, body = ApiError)))]
async fn record_timeline(State(st): State<AppState>, Args(q): Args<RecordQuery>) -> Result<Json<Timeline>, HttpError> {
    Ok(Json(st.engine.record_timeline(&q.query).await?))
}

/// Requeue a dropped event for a fresh decision (reason required).
#[utoipa::path(post, path = "/api/undrop_event", request_body = UndropRequest, responses((status = 200, body = RecordRef), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn undrop_event(
    State(st): State<AppState>,
    JsonBody(r): JsonBody<UndropRequest>,
) -> Result<Json<RecordRef>, HttpError> {
    let record = st.engine.undrop_event(r.inbox_id, &r.reason, BY).await?;
    Ok(Json(RecordRef { record }))
}

/// Replay a selection: the dry-run preview, or the run (refused with 409 `paused` while paused).
#[utoipa::path(post, path = "/api/replay", request_body = ReplayRequest, responses((status = 200, body = ReplayPreview), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn replay(
    State(st): State<AppState>,
    JsonBody(r): JsonBody<ReplayRequest>,
) -> Result<Json<ReplayPreview>, HttpError> {
    Ok(Json(st.engine.replay(&r.selector, r.dry_run, BY).await?))
}

/// The review queue: conflicted records with each field side by side.
#[utoipa::path(get, path = "/api/list_reviews", responses((status = 200, body = Vec<ReviewItem>)))]
async fn list_reviews(State(st): State<AppState>) -> Result<Json<Vec<ReviewItem>>, HttpError> {
    Ok(Json(st.engine.list_reviews().await?))
}

/// Settle a conflicted record (a side or a typed value per field, with a reason).
#[utoipa::path(post, path = "/api/resolve_review", request_body = ReviewDecision, responses((status = 200, body = RecordRef), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn resolve_review(
    State(st): State<AppState>,
    JsonBody(d): JsonBody<ReviewDecision>,
) -> Result<Json<RecordRef>, HttpError> {
    let record = st.engine.resolve_review(d.id, &d.resolution, BY).await?;
    Ok(Json(RecordRef { record }))
}

// ---- Replay runs, the audit log and the contract (issue 7). ----

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    id: Option<i64>,
}

/// A replay run with its progress (`id` absent: the latest; `null` when none ever ran).
#[utoipa::path(get, path = "/api/replay_run", params(("id" = Option<i64>, Query, description = "replay run id; the latest when absent")), responses((status = 200, body = Option<ReplayRun>), (status = 404, body = ApiError)))]
async fn replay_run(State(st): State<AppState>, Args(q): Args<RunQuery>) -> Result<Json<Option<ReplayRun>>, HttpError> {
    Ok(Json(st.engine.replay_run(q.id).await?))
}

/// Cancel a replay run: records no worker has claimed yet leave the queue (audited).
#[utoipa::path(post, path = "/api/cancel_replay", request_body = ReplayRunRef, responses((status = 200, body = ReplayRun), (status = 404, body = ApiError)))]
async fn cancel_replay(
    State(st): State<AppState>,
    JsonBody(r): JsonBody<ReplayRunRef>,
) -> Result<Json<ReplayRun>, HttpError> {
    Ok(Json(st.engine.cancel_replay(r.id, BY).await?))
}

/// Audit rows (decisions and operator actions) matching a filter, newest first, with the total.
#[utoipa::path(post, path = "/api/list_audit", request_body = AuditFilter, responses((status = 200, body = AuditList), (status = 400, body = ApiError)))]
async fn list_audit(
    State(st): State<AppState>,
    JsonBody(f): JsonBody<AuditFilter>,
) -> Result<Json<AuditList>, HttpError> {
    Ok(Json(st.engine.list_audit(&f).await?))
}

/// The filtered audit log as CSV (the `AuditFilter` fields as query parameters, no paging),
/// streamed page by page.
#[utoipa::path(get, path = "/api/audit.csv", params(("actor" = Option<String>, Query), ("action" = Option<String>, Query), ("record" = Option<String>, Query), ("text" = Option<String>, Query), ("from_ms" = Option<i64>, Query), ("to_ms" = Option<i64>, Query)), responses((status = 200, description = "text/csv"), (status = 400, body = ApiError)))]
async fn audit_csv(State(st): State<AppState>, Args(f): Args<AuditFilter>) -> Result<Response, HttpError> {
    // The first page is read before answering, so a bad filter is a proper error.
    let first = st.engine.audit_page(&f, None).await?;
    let engine = st.engine.clone();
    let head = futures_util::stream::once(async { Ok::<_, Infallible>(Bytes::from(crate::engine::AUDIT_CSV_HEADER)) });
    let pages = futures_util::stream::unfold(Some((engine, f, first)), |state| async move {
        let (engine, f, page) = state?;
        let mut chunk = String::new();
        for e in &page {
            chunk.push_str(&crate::engine::audit_csv_row(e));
        }
        let next = match page.last() {
            Some(last) if page.len() as i64 == crate::engine::AUDIT_CSV_PAGE => {
                match engine.audit_page(&f, Some(last.id)).await {
                    Ok(p) => Some((engine, f, p)),
                    Err(e) => {
                        // Headers are gone: say so in the file rather than end it silently.
                        chunk.push_str(&format!("# export stopped: {e}\n"));
                        None
                    }
                }
            }
            _ => None,
        };
        if chunk.is_empty() && next.is_none() {
            return None;
        }
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), next))
    });
    use futures_util::StreamExt;
    let body = axum::body::Body::from_stream(head.chain(pages));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"driftless-audit.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// One dead letter with its request, response, history and the events behind it.
#[utoipa::path(get, path = "/api/dead_letter_detail", params(("id" = i64, Query, description = "the dead letter's id")), responses((status = 200, body = DeadLetterDetail), (status = 404, body = ApiError)))]
async fn dead_letter_detail(
    State(st): State<AppState>,
    Args(q): Args<DeadLetterRef>,
) -> Result<Json<DeadLetterDetail>, HttpError> {
    Ok(Json(st.engine.dead_letter_detail(q.id).await?))
}

/// The filtered dead letters as CSV (the filter's fields as query parameters; `limit` and
/// `offset` ignored), streamed a page at a time so 100,000 rows never sit in memory. For a
/// download link the token goes in `?token=`.
#[utoipa::path(get, path = "/api/export_dead_letters", params(
    ("destination" = Option<String>, Query, description = "crm or billing"),
    ("error_class" = Option<String>, Query, description = "validation, exhausted, auth, not_found, …"),
    ("object" = Option<String>, Query, description = "contract object"),
    ("min_age_ms" = Option<i64>, Query, description = "at least this old"),
    ("max_age_ms" = Option<i64>, Query, description = "at most this old"),
    ("text" = Option<String>, Query, description = "substring of the error, record key or request"),
    ("include_resolved" = Option<bool>, Query, description = "include retried / discarded ones")
), responses((status = 200, description = "text/csv, newest first"), (status = 400, body = ApiError)))]
async fn export_dead_letters(
    State(st): State<AppState>,
    Args(f): Args<DeadLetterFilter>,
) -> Result<Response, HttpError> {
    use futures_util::StreamExt;
    // The first page is read before answering, so a ledger error is a proper JSON error.
    let (first, next) = st.engine.dead_letters_csv_page(&f, None).await?;
    let engine = st.engine.clone();
    let rest = futures_util::stream::unfold((engine, f, next), |(engine, f, next)| async move {
        let before = next?;
        match engine.dead_letters_csv_page(&f, Some(before)).await {
            Ok((page, n)) => Some((Ok::<_, EngineError>(Bytes::from(page)), (engine, f, n))),
            // Cut the body short: the client sees an incomplete download, not a silent truncation.
            Err(e) => Some((Err(e), (engine, f, None))),
        }
    });
    let body = futures_util::stream::once(async move { Ok::<_, EngineError>(Bytes::from(first)) }).chain(rest);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"dead-letters.csv\""),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The contract in force (version, ownership matrix) and its file re-validated now.
#[utoipa::path(get, path = "/api/contract_info", responses((status = 200, body = ContractInfo)))]
async fn contract_info(State(st): State<AppState>) -> Json<ContractInfo> {
    Json(st.engine.contract_info())
}

// ---- The reconciliation screen (issue 7). ----

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<i64>,
}

/// Finished reconciliation runs with their rates, newest first (`limit` 1 to 500, default 100).
#[utoipa::path(get, path = "/api/reconcile_runs", params(("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "at most this many runs (1 to 500; 100)")), responses((status = 200, body = Vec<ReconRunSummary>), (status = 400, body = ApiError)))]
async fn reconcile_runs(
    State(st): State<AppState>,
    Args(q): Args<LimitQuery>,
) -> Result<Json<Vec<ReconRunSummary>>, HttpError> {
    Ok(Json(st.engine.reconcile_runs(q.limit).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdQuery {
    id: i64,
}

/// One reconciliation run's report: its mismatches by field and by rule.
#[utoipa::path(get, path = "/api/reconcile_report", params(("id" = i64, Query, description = "reconciliation run id")), responses((status = 200, body = ReconcileReport), (status = 404, body = ApiError)))]
async fn reconcile_report(
    State(st): State<AppState>,
    Args(q): Args<IdQuery>,
) -> Result<Json<ReconcileReport>, HttpError> {
    Ok(Json(st.engine.reconcile_report(q.id).await?))
}

/// Preview (dry run) or queue the repair of the latest finished run's mismatched records, or
/// send them to review; an older run is refused (400), a run going on too (409 `busy`).
#[utoipa::path(post, path = "/api/reconcile_repair", request_body = ReconRepairAsk, responses((status = 200, body = ReconcileReport), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn reconcile_repair(
    State(st): State<AppState>,
    JsonBody(a): JsonBody<ReconRepairAsk>,
) -> Result<Json<ReconcileReport>, HttpError> {
    Ok(Json(st.engine.reconcile_repair(&a, BY).await?))
}

/// A run's mismatches as CSV, streamed page by page.
#[utoipa::path(get, path = "/api/reconcile.csv", params(("id" = i64, Query, description = "reconciliation run id")), responses((status = 200, description = "text/csv"), (status = 404, body = ApiError)))]
async fn reconcile_csv(State(st): State<AppState>, Args(q): Args<IdQuery>) -> Result<Response, HttpError> {
    // The first page is read before answering, so an unknown run is a proper error.
    let first = st.engine.reconcile_csv_page(q.id, 0).await?;
    let engine = st.engine.clone();
    let run = q.id;
    let head =
        futures_util::stream::once(async { Ok::<_, Infallible>(Bytes::from(crate::reconcile::RECON_CSV_HEADER)) });
    let pages = futures_util::stream::unfold(Some(first), move |state| {
        let engine = engine.clone();
        async move {
            let (mut chunk, next) = state?;
            let following = match next {
                Some(after) => match engine.reconcile_csv_page(run, after).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        // Headers are gone: say so in the file rather than end it silently.
                        chunk.push_str(&format!("# export stopped: {e}\n"));
                        None
                    }
                },
                None => None,
            };
            if chunk.is_empty() && following.is_none() {
                return None;
            }
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), following))
        }
    });
    use futures_util::StreamExt;
    let body = axum::body::Body::from_stream(head.chain(pages));
    let name = format!("attachment; filename=\"driftless-reconciliation-{run}.csv\"");
    let disposition = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
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
            h("x-hubspot-signature-v3"),
            h("x-hubspot-request-timestamp"),
            &body,
        )
        .await?;
    Ok(Json(r))
}

// ---- Connect screen (issue 7). Keys arrive in the body only and are never echoed back. ----

/// Test a key read-only against the system the contract configures (`ok: false` with the
/// specific reason when it fails).
#[utoipa::path(post, path = "/api/connect_test", request_body = ConnectKey, responses((status = 200, body = ConnectStep), (status = 400, body = ApiError)))]
async fn connect_test(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ConnectKey>,
) -> Result<Json<ConnectStep>, HttpError> {
    Ok(Json(st.engine.connect_test(&b.system, &b.key).await?))
}

/// The CRM properties the contract needs (which exist, which would be created); with
/// `create`, the missing ones are created first.
#[utoipa::path(post, path = "/api/connect_properties", request_body = ConnectPropertiesRequest, responses((status = 200, body = ConnectProperties), (status = 400, body = ApiError)))]
async fn connect_properties(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ConnectPropertiesRequest>,
) -> Result<Json<ConnectProperties>, HttpError> {
    Ok(Json(st.engine.connect_properties(&b.key, b.create).await?))
}

/// Test, store in the keychain, point the contract file at it, observe mode on.
#[utoipa::path(post, path = "/api/connect_save_key", request_body = ConnectKey, responses((status = 200, body = ConnectSaved), (status = 400, body = ApiError)))]
async fn connect_save_key(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ConnectKey>,
) -> Result<Json<ConnectSaved>, HttpError> {
    Ok(Json(st.engine.connect_save_key(&b.system, &b.key, BY).await?))
}

/// Observe mode: writes off, or the held writes previewed / sent (`driftless writes on --yes`).
#[utoipa::path(post, path = "/api/set_writes", request_body = WritesRequest, responses((status = 200, body = WritesAnswer), (status = 400, body = ApiError)))]
async fn set_writes(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<WritesRequest>,
) -> Result<Json<WritesAnswer>, HttpError> {
    Ok(Json(st.engine.set_writes(&b, BY).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_every_console_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for p in [
            "/api/status",
            "/api/overview",
            "/api/pause_outbound",
            "/api/resume_outbound",
            "/api/stream",
            "/metrics",
            "/api/reconciliation_state",
            "/api/start_reconcile",
            "/api/cancel_reconcile",
            "/api/backfill_state",
            "/api/start_backfill",
            "/api/cancel_backfill",
            "/api/migration_status",
            "/api/validation_report",
            "/api/list_dead_letters",
            "/api/retry_dead_letters",
            "/api/discard_dead_letters",
            "/api/record_timeline",
            "/api/undrop_event",
            "/api/replay",
            "/api/list_reviews",
            "/api/resolve_review",
            "/api/replay_run",
            "/api/cancel_replay",
            "/api/list_audit",
            "/api/audit.csv",
            "/api/contract_info",
            "/api/dead_letter_detail",
            "/api/export_dead_letters",
            "/api/reconcile_runs",
            "/api/reconcile_report",
            "/api/reconcile_repair",
            "/api/reconcile.csv",
            "/api/connect_test",
            "/api/connect_properties",
            "/api/connect_save_key",
            "/api/set_writes",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} missing from OpenAPI");
        }
        assert!(doc["components"]["schemas"].get("Overview").is_some());
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
