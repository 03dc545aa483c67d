//! The operations API: every operator operation, declared once (the table at the end of this
//! file) with its typed request and answer. From that one declaration come
//!
//! - [`call`]: the dispatch the console's two faces use — the HTTP server (`/api/<name>`) and
//!   the desktop shell (its one `operation` command). The CLI calls the same engine functions
//!   each entry names (with its own argument parsing and printing);
//! - [`openapi`]: the OpenAPI document's paths, requests, answers and schemas;
//! - [`typescript`]: the console's typed client (`ui/src/lib/types/operations.ts`, written
//!   by `cargo test` and checked fresh by `make types-fresh`): one method per operation.
//!
//! Adding an operation is one entry in the table (plus the engine function it calls, and the
//! screen that uses it). Three kinds: `read` (HTTP GET, arguments in the query string),
//! `write` (HTTP POST, a JSON object body) and CSV exports (GET, text/csv a page at a time,
//! one paging contract: a page's text, the header on the first, and the cursor of the next).

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::*;
use crate::engine::{Engine, EngineError};

/// How an operation is called over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// GET, arguments in the query string, answers JSON.
    Read,
    /// POST, a JSON object body, answers JSON.
    Write,
    /// GET, arguments in the query string, answers CSV (streamed a page at a time).
    Csv,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Csv => "csv",
        }
    }
}

/// A refusal an operation can answer besides the ones every route can give (a bad request,
/// the token, the ledger unavailable): declared in the table, documented in the OpenAPI
/// document (and checked against the server's real answers by the schema test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 404 `not_found`: the record, run or item the request names does not exist.
    NotFound,
    /// 409 `paused` / `busy`: outbound writes are paused, or a run of the kind is going on.
    Conflict,
}

impl Failure {
    /// The HTTP status and what the OpenAPI document says of it.
    pub fn answer(self) -> (&'static str, &'static str) {
        match self {
            Failure::NotFound => (
                "404",
                "`not_found`: what the request names does not exist (the message says which)",
            ),
            Failure::Conflict => (
                "409",
                "`paused` / `busy`: outbound writes are paused, or a run of this kind is going on",
            ),
        }
    }
}

/// One operation of the table.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub name: &'static str,
    pub kind: Kind,
    /// Its documentation (the table's doc comment).
    pub doc: &'static str,
    /// The refusals it can answer besides every route's.
    pub fails: &'static [Failure],
}

/// An operation's arguments as they arrived: a JSON object (HTTP POST body, the desktop
/// shell) or a query string (HTTP GET).
pub enum Args<'a> {
    Json(Value),
    Query(&'a str),
}

impl Args<'_> {
    /// The typed request. Unknown fields are refused by the request types; the launch `token`
    /// a link may carry in its query string is not an argument.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, EngineError> {
        match self {
            Args::Json(Value::Null) => T::deserialize(Value::Object(Default::default()))
                .map_err(|e| EngineError::BadRequest(format!("arguments: {e}"))),
            Args::Json(v @ Value::Object(_)) => {
                T::deserialize(v).map_err(|e| EngineError::BadRequest(format!("arguments: {e}")))
            }
            Args::Json(_) => Err(EngineError::BadRequest("arguments: expected a JSON object".into())),
            Args::Query(q) => {
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_str(q).map_err(|e| EngineError::BadRequest(format!("query string: {e}")))?;
                let rest: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "token").collect();
                let rest = serde_urlencoded::to_string(rest).unwrap_or_default();
                serde_urlencoded::from_str(&rest).map_err(|e| EngineError::BadRequest(format!("query parameters: {e}")))
            }
        }
    }
}

/// A page of a CSV export: its text (the header on the first page) and the cursor of the
/// next page (`None`: the last).
pub type CsvPage = (String, Option<i64>);

type PageFn =
    Box<dyn Fn(Option<i64>) -> Pin<Box<dyn Future<Output = Result<CsvPage, EngineError>> + Send>> + Send + Sync>;

/// A CSV export, read a page at a time (the server streams it; the desktop shell collects
/// it).
pub struct CsvExport {
    /// The download's file name.
    pub filename: String,
    page: PageFn,
}

impl CsvExport {
    /// The page after `cursor` (`None`: the first, with the header).
    pub async fn page(&self, cursor: Option<i64>) -> Result<CsvPage, EngineError> {
        (self.page)(cursor).await
    }

    /// Every page, as one text.
    pub async fn collect(&self) -> Result<String, EngineError> {
        let (mut out, mut next) = self.page(None).await?;
        while let Some(cursor) = next {
            let (text, n) = self.page(Some(cursor)).await?;
            out.push_str(&text);
            next = n;
        }
        Ok(out)
    }
}

/// What an operation answered.
pub enum Answer {
    Json(Value),
    Csv(CsvExport),
}

impl Answer {
    /// As JSON, a CSV export collected into one string (the desktop shell).
    pub async fn into_json(self) -> Result<Value, EngineError> {
        match self {
            Answer::Json(v) => Ok(v),
            Answer::Csv(c) => Ok(Value::String(c.collect().await?)),
        }
    }
}

fn to_json<T: serde::Serialize>(answer: T) -> Result<Value, EngineError> {
    serde_json::to_value(answer)
        .map_err(|e| EngineError::BadRequest(format!("the answer could not be serialised: {e}")))
}

/// The operation called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.name == name)
}

macro_rules! kind {
    (read) => {
        Kind::Read
    };
    (write) => {
        Kind::Write
    };
}

macro_rules! operations {
    (
        json {
            $( $(#[doc = $doc:literal])* $name:ident ($kind:ident $req:ty) -> $res:ty $(, or [$($fail:ident),+])?
                = |$e:ident, $a:ident, $by:ident| $body:expr; )*
        }
        csv {
            $( $(#[doc = $cdoc:literal])* $cname:ident ($creq:ty) file $file:expr $(, or [$($cfail:ident),+])?
                => |$ce:ident, $ca:ident, $cursor:ident| $cbody:expr; )*
        }
    ) => {
        /// Every operation, in the table's order.
        pub const OPERATIONS: &[Operation] = &[
            $( Operation {
                name: stringify!($name),
                kind: kind!($kind),
                doc: concat!($($doc, "\n"),*),
                fails: &[$($(Failure::$fail),+)?],
            }, )*
            $( Operation {
                name: stringify!($cname),
                kind: Kind::Csv,
                doc: concat!($($cdoc, "\n"),*),
                fails: &[$($(Failure::$cfail),+)?],
            }, )*
        ];

        /// Run the operation `name` with `args`, as `by` (who the audit log names).
        pub async fn call(engine: &Engine, name: &str, args: Args<'_>, by: &str) -> Result<Answer, EngineError> {
            match name {
                $( stringify!($name) => {
                    let $a: $req = args.parse()?;
                    let $e = engine;
                    let $by = by;
                    let _ = (&$a, &$by);
                    let answer: $res = $body;
                    Ok(Answer::Json(to_json(answer)?))
                } )*
                $( stringify!($cname) => {
                    let $ca: $creq = args.parse()?;
                    let filename: String = $file;
                    let engine = engine.clone();
                    Ok(Answer::Csv(CsvExport {
                        filename,
                        page: Box::new(move |$cursor| {
                            let $ce = engine.clone();
                            let $ca = $ca.clone();
                            Box::pin(async move {
                                let $ce = &$ce;
                                $cbody
                            })
                        }),
                    }))
                } )*
                _ => Err(EngineError::NotFound(format!("no operation {name:?}"))),
            }
        }

        /// The OpenAPI document's paths and schemas for every operation.
        pub fn openapi() -> utoipa::openapi::OpenApi {
            let mut d = docs::Docs::default();
            $( d.add::<$req, $res>(find(stringify!($name))); )*
            $( d.add_csv::<$creq>(find(stringify!($cname))); )*
            d.finish()
        }

        /// The console's typed client, as TypeScript.
        pub fn typescript() -> String {
            let cfg = ts_rs::Config::from_env();
            let mut t = typescript::Client::default();
            $( t.add::<$req, $res>(stringify!($name), kind!($kind), concat!($($doc, "\n"),*), &cfg); )*
            $( t.add::<$creq, String>(stringify!($cname), Kind::Csv, concat!($($cdoc, "\n"),*), &cfg); )*
            t.finish()
        }
    };
}

operations! {
    json {
    /// Counts by state, writes, queue, lag and pause (what `driftless status --json` prints).
    status(read NoArgs) -> Status = |e, _a, _by| e.status().await?;
    /// Everything the overview screen shows: health with reasons, alerts, figures, charts.
    overview(read NoArgs) -> Overview = |e, _a, _by| e.overview().await?;
    /// Pause outbound writes (global or one destination), with a reason; persisted and audited.
    pause_outbound(write PauseRequest) -> PauseResult = |e, a, by| e.pause_outbound(&a, by).await?;
    /// Resume outbound writes; the backlog drains in per-record order.
    resume_outbound(write PauseRequest) -> PauseResult = |e, a, by| e.resume_outbound(&a, by).await?;
    /// The reconciliation going on (if any) and the last finished run's report.
    reconciliation_state(read NoArgs) -> ReconciliationState = |e, _a, _by| e.reconciliation_state().await?;
    /// Start a reconciliation in the background (resumes an unfinished one); `busy` while one runs.
    start_reconcile(write ReconcileAsk) -> ReconciliationState, or [Conflict] = |e, a, by| e.start_reconcile(&a, by).await?;
    /// Stop the running reconciliation at its next page; it stays resumable.
    cancel_reconcile(write NoArgs) -> ReconciliationState = |e, _a, by| e.cancel_reconcile(by).await?;
    /// The latest backfill with its estimated finish.
    backfill_state(read NoArgs) -> BackfillProgress = |e, _a, _by| e.backfill_state().await?;
    /// Start (or resume) a backfill in the background; `busy` while one runs.
    start_backfill(write BackfillAsk) -> BackfillProgress, or [Conflict] = |e, a, by| e.start_backfill(&a.systems, by).await?;
    /// Cancel the running backfill before its next page; it stays resumable.
    cancel_backfill(write NoArgs) -> BackfillProgress = |e, _a, by| e.cancel_backfill(by).await?;
    /// Migration mode while active (`null` otherwise), with its phases.
    migration_status(read NoArgs) -> Option<MigrationMode> = |e, _a, _by| e.migration_status().await?;
    /// A validation report for one customer-pair object (counts, links, sampled mismatches).
    validation_report(read ObjectArg) -> ValidationReport = |e, a, _by| e.validation_report(&a.object).await?;
    /// Dead letters matching a filter (newest first, `limit`/`offset` paging), with the total.
    list_dead_letters(write DeadLetterFilter) -> DeadLetterList = |e, a, _by| e.list_dead_letters(&a).await?;
    /// Retry the filtered dead letters (their records are planned again), or preview the blast radius.
    retry_dead_letters(write DeadLetterAction) -> BulkResult =
        |e, a, by| e.retry_dead_letters(&a.filter, a.dry_run, &a.reason, by).await?;
    /// Discard the filtered dead letters with a reason, or preview the blast radius.
    discard_dead_letters(write DeadLetterAction) -> BulkResult =
        |e, a, by| e.discard_dead_letters(&a.filter, a.dry_run, &a.reason, by).await?;
    /// One dead letter with its request, response, history and the events behind it.
    dead_letter_detail(read DeadLetterRef) -> DeadLetterDetail, or [NotFound] = |e, a, _by| e.dead_letter_detail(a.id).await?;
    /// A record's causal timeline, found by email, CRM id, billing id or record key.
    record_timeline(read RecordQuery) -> Timeline, or [NotFound] = |e, a, _by| e.record_timeline(&a.query).await?;
    /// Requeue a dropped event for a fresh decision (reason required).
    undrop_event(write UndropRequest) -> RecordRef, or [NotFound] =
        |e, a, by| RecordRef { record: e.undrop_event(a.inbox_id, &a.reason, by).await? };
    /// Replay a selection: the dry-run preview, or the run (refused with `paused` while paused).
    replay(write ReplayRequest) -> ReplayPreview, or [NotFound, Conflict] = |e, a, by| e.replay(&a.selector, a.dry_run, by).await?;
    /// A replay run with its progress (no `id`: the latest; `null` when none ever ran).
    replay_run(read ReplayRunQuery) -> Option<ReplayRun>, or [NotFound] = |e, a, _by| e.replay_run(a.id).await?;
    /// Cancel a replay run: records no worker has claimed yet leave the queue (audited).
    cancel_replay(write ReplayRunRef) -> ReplayRun, or [NotFound] = |e, a, by| e.cancel_replay(a.id, by).await?;
    /// The review queue: conflicted records with each field side by side.
    list_reviews(read NoArgs) -> Vec<ReviewItem> = |e, _a, _by| e.list_reviews().await?;
    /// Settle a conflicted record (a side or a typed value per field, with a reason).
    resolve_review(write ReviewDecision) -> RecordRef, or [NotFound] =
        |e, a, by| RecordRef { record: e.resolve_review(a.id, &a.resolution, by).await? };
    /// Audit rows (decisions and operator actions) matching a filter, newest first, with the total.
    list_audit(write AuditFilter) -> AuditList = |e, a, _by| e.list_audit(&a).await?;
    /// The contract in force (version, ownership matrix) and its file re-validated now.
    contract_info(read NoArgs) -> ContractInfo = |e, _a, _by| e.contract_info();
    /// Finished reconciliation runs with their rates, newest first.
    reconcile_runs(read RunsLimit) -> Vec<ReconRunSummary> = |e, a, _by| e.reconcile_runs(a.limit).await?;
    /// One reconciliation run's report: its mismatches by field and by rule.
    reconcile_report(read ReconRunRef) -> ReconcileReport, or [NotFound] = |e, a, _by| e.reconcile_report(a.id).await?;
    /// Preview (dry run) or queue the repair of the latest finished run's mismatched records, or
    /// send them to review; an older run is refused, a run going on too (`busy`).
    reconcile_repair(write ReconRepairAsk) -> ReconcileReport, or [Conflict] = |e, a, by| e.reconcile_repair(&a, by).await?;
    /// Test a key read-only against the system the contract configures (`ok: false` with the
    /// specific reason when the system refuses it).
    connect_test(write ConnectKey) -> ConnectStep = |e, a, _by| e.connect_test(&a.system, &a.key).await?;
    /// The CRM properties the contract needs (which exist, which would be created); with
    /// `create`, the missing ones are created first.
    connect_properties(write ConnectPropertiesRequest) -> ConnectProperties =
        |e, a, _by| e.connect_properties(&a.key, a.create).await?;
    /// Test, store in the keychain, point the contract file at it, observe mode on.
    connect_save_key(write ConnectKey) -> ConnectSaved = |e, a, by| e.connect_save_key(&a.system, &a.key, by).await?;
    /// Observe mode: writes off, or the held writes previewed / sent (`driftless writes on --yes`).
    set_writes(write WritesRequest) -> WritesAnswer = |e, a, by| e.set_writes(&a, by).await?;
    }
    csv {
    /// The filtered audit log (the `AuditFilter` fields as query parameters, no paging).
    audit_csv(AuditFilter) file "driftless-audit.csv".to_string() => |e, a, cursor| e.audit_csv_page(&a, cursor).await;
    /// The filtered dead letters (the filter's fields as query parameters; `limit` and
    /// `offset` ignored), newest first.
    export_dead_letters(DeadLetterFilter) file "dead-letters.csv".to_string() =>
        |e, a, cursor| e.dead_letters_csv_page(&a, cursor).await;
    /// One reconciliation run's mismatches.
    reconcile_csv(ReconRunRef) file format!("driftless-reconciliation-{}.csv", a.id), or [NotFound] =>
        |e, a, cursor| e.reconcile_csv_page(a.id, cursor).await;
    }
}

/// The OpenAPI document, built from the table.
mod docs {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::{ComponentsBuilder, ContentBuilder, OpenApi, Paths, RefOr, Required, ResponseBuilder};
    use utoipa::ToSchema;

    use super::{Failure, Kind, Operation};

    /// An operation as the table describes it: its name, summary and documentation, its 200
    /// answer (`what`, of type `mime` with `schema`), and its own refusals.
    fn described(
        name: &str,
        doc: &str,
        what: &str,
        mime: &str,
        schema: RefOr<Schema>,
        fails: &[Failure],
    ) -> OperationBuilder {
        let answer = ResponseBuilder::new()
            .description(what)
            .content(mime, ContentBuilder::new().schema(Some(schema)).build())
            .build();
        let op = OperationBuilder::new()
            .operation_id(Some(name))
            .summary(Some(first_line(doc)))
            .description(Some(doc.trim().to_string()))
            .response("200", answer);
        failures(op, fails)
    }

    /// The operation's own refusals, each an `ApiError`.
    fn failures(mut op: OperationBuilder, fails: &[Failure]) -> OperationBuilder {
        for f in fails {
            let (status, what) = f.answer();
            let body = ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ApiError")))
                .build();
            op = op.response(
                status,
                ResponseBuilder::new()
                    .description(what)
                    .content("application/json", body)
                    .build(),
            );
        }
        op
    }

    #[derive(Default)]
    pub(super) struct Docs {
        paths: Paths,
        schemas: Vec<(String, RefOr<Schema>)>,
    }

    fn first_line(doc: &str) -> String {
        doc.lines().next().unwrap_or("").trim().to_string()
    }

    /// Query parameters from a request type's object schema: one per property.
    fn query_params(schema: &RefOr<Schema>) -> Vec<utoipa::openapi::path::Parameter> {
        let RefOr::T(Schema::Object(o)) = schema else {
            return Vec::new();
        };
        o.properties
            .iter()
            .map(|(name, prop)| {
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Query)
                    .required(if o.required.contains(name) {
                        Required::True
                    } else {
                        Required::False
                    })
                    .schema(Some(prop.clone()))
                    .build()
            })
            .collect()
    }

    impl Docs {
        pub(super) fn add<Req: ToSchema, Res: ToSchema>(&mut self, op: Option<&Operation>) {
            let Some(&Operation { name, kind, doc, fails }) = op else {
                return;
            };
            let req = Req::schema();
            Req::schemas(&mut self.schemas);
            Res::schemas(&mut self.schemas);
            let mut op = described(name, doc, "the answer", "application/json", Res::schema(), fails);
            let method = match kind {
                Kind::Write => {
                    op = op.request_body(Some(
                        RequestBodyBuilder::new()
                            .content("application/json", ContentBuilder::new().schema(Some(req)).build())
                            .required(Some(Required::True))
                            .build(),
                    ));
                    HttpMethod::Post
                }
                _ => {
                    for p in query_params(&req) {
                        op = op.parameter(p);
                    }
                    HttpMethod::Get
                }
            };
            self.paths
                .paths
                .insert(format!("/api/{name}"), PathItem::new(method, op.build()));
        }

        pub(super) fn add_csv<Req: ToSchema>(&mut self, op: Option<&Operation>) {
            let Some(&Operation { name, doc, fails, .. }) = op else {
                return;
            };
            let req = Req::schema();
            Req::schemas(&mut self.schemas);
            let mut op = described(
                name,
                doc,
                "text/csv, streamed a page at a time; a page that fails after the first ends the file with `# export stopped: <why>`",
                "text/csv",
                <String as utoipa::PartialSchema>::schema(),
                fails,
            );
            for p in query_params(&req) {
                op = op.parameter(p);
            }
            self.paths
                .paths
                .insert(format!("/api/{name}"), PathItem::new(HttpMethod::Get, op.build()));
        }

        pub(super) fn finish(mut self) -> OpenApi {
            self.schemas.sort_by(|a, b| a.0.cmp(&b.0));
            self.schemas.dedup_by(|a, b| a.0 == b.0);
            let mut doc = OpenApi::new(
                utoipa::openapi::Info::new("driftless console API", env!("CARGO_PKG_VERSION")),
                self.paths,
            );
            doc.components = Some(ComponentsBuilder::new().schemas_from_iter(self.schemas).build());
            doc
        }
    }
}

/// The console's typed client, built from the table.
mod typescript {
    use std::collections::BTreeSet;

    use ts_rs::{Dependency, TS};

    use super::Kind;

    #[derive(Default)]
    pub(super) struct Client {
        imports: BTreeSet<(String, String)>,
        table: Vec<String>,
        methods: Vec<String>,
        kinds: Vec<String>,
    }

    /// Collects the exported types it is shown.
    struct Collect<'a>(&'a ts_rs::Config, Vec<Dependency>);

    impl ts_rs::TypeVisitor for Collect<'_> {
        fn visit<T: TS + 'static + ?Sized>(&mut self) {
            if let Some(d) = Dependency::from_ty::<T>(self.0) {
                self.1.push(d);
            }
        }
    }

    /// The type's TypeScript name, and the exported types it needs imported: itself, or for
    /// `Option<T>` / `Vec<T>` the `T` inside.
    fn name_and_imports<T: TS + 'static>(cfg: &ts_rs::Config, imports: &mut BTreeSet<(String, String)>) -> String {
        let deps: Vec<Dependency> = match Dependency::from_ty::<T>(cfg) {
            Some(d) => vec![d],
            None => {
                let mut c = Collect(cfg, Vec::new());
                T::visit_generics(&mut c);
                c.1
            }
        };
        for d in deps {
            let file = d.output_path.with_extension("");
            imports.insert((d.ts_name.clone(), file.to_string_lossy().replace('\\', "/")));
        }
        T::name(cfg)
    }

    fn camel(name: &str) -> String {
        let mut out = String::new();
        let mut up = false;
        for c in name.chars() {
            if c == '_' {
                up = true;
            } else if up {
                out.extend(c.to_uppercase());
                up = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    fn comment(doc: &str, indent: &str) -> String {
        let lines: Vec<&str> = doc.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        match lines.as_slice() {
            [] => String::new(),
            [one] => format!("{indent}/** {one} */\n"),
            many => {
                let body: String = many.iter().map(|l| format!("{indent} * {l}\n")).collect();
                format!("{indent}/**\n{body}{indent} */\n")
            }
        }
    }

    impl Client {
        pub(super) fn add<Req: TS + 'static, Res: TS + 'static>(
            &mut self,
            name: &str,
            kind: Kind,
            doc: &str,
            cfg: &ts_rs::Config,
        ) {
            let req = name_and_imports::<Req>(cfg, &mut self.imports);
            let res = name_and_imports::<Res>(cfg, &mut self.imports);
            self.table.push(format!(
                "{}  {name}: {{ kind: '{}'; request: {req}; answer: {res} }};\n",
                comment(doc, "  "),
                kind.as_str()
            ));
            self.kinds.push(format!("  {name}: '{}',\n", kind.as_str()));
            let default = if req == "NoArgs" { " = {}" } else { "" };
            self.methods.push(format!(
                "{}  {}(request: {req}{default}): Promise<{res}> {{\n    return this.call('{name}', request);\n  }}\n",
                comment(doc, "  "),
                camel(name)
            ));
        }

        pub(super) fn finish(self) -> String {
            let mut out = String::from(
                "// Generated by `cargo test` from the operations table (src/operations.rs). Do not edit:\n\
                 // add an operation there, and this file follows.\n\n",
            );
            for (name, file) in &self.imports {
                out.push_str(&format!("import type {{ {name} }} from './{file}';\n"));
            }
            out.push_str(
                "\n/** Every operation: how it is called, its request and its answer. */\nexport type Operations = {\n",
            );
            out.extend(self.table);
            out.push_str(
                "};\n\nexport type OperationName = keyof Operations;\n\
                 export type OperationRequest<K extends OperationName> = Operations[K]['request'];\n\
                 export type OperationAnswer<K extends OperationName> = Operations[K]['answer'];\n\n\
                 /** `read`: GET with query parameters; `write`: POST with a JSON body; `csv`: GET answering text/csv. */\n\
                 export const OPERATION_KINDS: { [K in OperationName]: Operations[K]['kind'] } = {\n",
            );
            out.extend(self.kinds);
            out.push_str(
                "};\n\n/** One method per operation, each a `call` of the backend's (HTTP or the desktop window). */\n\
                 export abstract class OperationCalls {\n\
                 \x20 abstract call<K extends OperationName>(name: K, request: OperationRequest<K>): Promise<OperationAnswer<K>>;\n\n",
            );
            out.push_str(&self.methods.join("\n"));
            out.push_str("}\n");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_unique_documented_and_answers_to_its_name() {
        let mut names: Vec<&str> = OPERATIONS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "an operation name is declared twice");
        for o in OPERATIONS {
            assert!(!o.doc.trim().is_empty(), "{} has no documentation", o.name);
            assert_eq!(find(o.name).map(|f| f.name), Some(o.name));
        }
        let doc = serde_json::to_value(openapi()).unwrap_or_default();
        for o in OPERATIONS {
            assert!(
                doc["paths"].get(format!("/api/{}", o.name)).is_some(),
                "{} missing from OpenAPI",
                o.name
            );
        }
    }

    #[test]
    fn query_arguments_set_the_token_aside_and_refuse_unknown_ones() {
        let q: RecordQuery = Args::Query("query=a%40b.test&token=secret").parse().expect("parse");
        assert_eq!(q.query, "a@b.test");
        assert!(Args::Query("query=x&extra=1").parse::<RecordQuery>().is_err());
        assert!(Args::Json(serde_json::json!([1])).parse::<NoArgs>().is_err());
        let _: NoArgs = Args::Json(Value::Null).parse().expect("no arguments");
    }

    /// Writes the console's typed client where ts-rs writes the types (`cargo test` keeps it
    /// current; `make types-fresh` checks the committed copy).
    #[test]
    fn export_typescript_client() {
        let dir = std::env::var("TS_RS_EXPORT_DIR").unwrap_or_else(|_| "./bindings".into());
        let path = std::path::Path::new(&dir).join("operations.ts");
        let text = typescript();
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            std::fs::create_dir_all(&dir).expect("types directory");
            std::fs::write(&path, text).expect("write operations.ts");
        }
    }
}
