//! The ledger: every SQL statement driftless runs lives in this module, so a PostgreSQL
//! backend is an addition here rather than a rewrite elsewhere.
//!
//! One writer connection (all writes go through `BEGIN IMMEDIATE` transactions, so a
//! read-then-write never fails with "database is locked" on upgrade) and a small read pool.
//! The workers' hot path (claims, decisions, releases, their reads of their own record) and
//! inbound batches go through the group-commit thread on that writer (`group.rs`).
//! The file is in WAL mode with `synchronous = FULL`: a commit that returned is on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
pub use trouble::{Episode, Unwritable};
use tx::WriteTx;

pub use crate::api::{
    CrmWriteCalls, DestinationWrites, LagFigures, LedgerStatus, PauseFlag, PollerStatus, ReconciliationGap,
};
use crate::contract::Side;
use group::{ClaimRequest, GroupWork};

/// Embedded migrations, run at open.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open ledger {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("ledger {path} could not be migrated: {source}")]
    Migrate {
        path: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("the ledger is locked by another writer (is another driftless running on it?): {0}")]
    Locked(String),
    /// Another engine serves this ledger (its lock file is held).
    #[error("the ledger {path} is already served by another driftless ({holder}); stop that one first, or give this one its own --ledger")]
    InUse { path: String, holder: String },
    /// The file is not a ledger; nothing was written to it.
    #[error("{path} is not a driftless ledger: {detail}; it was left untouched: move it aside or point --ledger at another file")]
    NotALedger { path: String, detail: String },
    /// The ledger (or its directory) cannot be written, found at open.
    #[error("the ledger {path} cannot be written ({}): {detail}; driftless records every event in its ledger: {}, or point --ledger at another file", why.label(), why.remedy())]
    OpenUnwritable {
        path: String,
        why: Unwritable,
        detail: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger query failed: {0}")]
    Sql(sqlx::Error),
    /// A statement the group-commit thread ran (see `group.rs`) failed.
    #[error("ledger query failed: {0}")]
    Native(rusqlite::Error),
    #[error("ledger write failed: {0}")]
    WriteFailed(String),
    #[error("ledger holds unreadable data in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The request conflicts with the ledger's state (an unfinished run, an active mode).
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        let locked = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c == "5" || c == "6" || c.starts_with("517") || c.starts_with("261"))
            .unwrap_or(false);
        if locked {
            LedgerError::Locked(e.to_string())
        } else {
            LedgerError::Sql(e)
        }
    }
}

pub type Result<T> = std::result::Result<T, LedgerError>;

/// The states an inbound event can be in (DESIGN.md invariant 4). `duplicate` is not a row
/// state: duplicates are deliveries of an event the inbox already holds, kept in their own table.
pub const EVENT_STATES: [&str; 7] = [
    EventState::Pending.as_str(),
    EventState::Applied.as_str(),
    "duplicate",
    EventState::Echo.as_str(),
    EventState::Superseded.as_str(),
    EventState::Conflicted.as_str(),
    EventState::DeadLettered.as_str(),
];

/// The inbound events by state as the counters say (`kept`: what `status` reports) and as
/// counted from the rows (`counted`), read in one snapshot by [`Ledger::event_census`]. Every
/// state of [`EVENT_STATES`] is a key of both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCensus {
    pub kept: BTreeMap<String, i64>,
    pub counted: BTreeMap<String, i64>,
}

impl EventCensus {
    /// Every state whose counter is not the number of its events, and every state counted
    /// that is not one of [`EVENT_STATES`]: empty when each event is counted once, in its state.
    pub fn mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        let states: std::collections::BTreeSet<&String> = self.kept.keys().chain(self.counted.keys()).collect();
        for s in states {
            let (k, c) = (
                self.kept.get(s).copied().unwrap_or(0),
                self.counted.get(s).copied().unwrap_or(0),
            );
            if !EVENT_STATES.contains(&s.as_str()) {
                out.push(format!("{s}: not an event state (counter {k}, {c} events)"));
            } else if k != c {
                out.push(format!("{s}: counter {k}, {c} events"));
            }
        }
        out
    }

    /// Distinct events (rows of the inbox), counted.
    pub fn distinct_events(&self) -> i64 {
        self.counted
            .iter()
            .filter(|(s, _)| s.as_str() != "duplicate")
            .map(|(_, n)| n)
            .sum()
    }

    /// Every delivery received (distinct events plus duplicates), counted.
    pub fn total(&self) -> i64 {
        self.counted.values().sum()
    }

    /// Events counted in `state`.
    pub fn counted(&self, state: &str) -> i64 {
        self.counted.get(state).copied().unwrap_or(0)
    }
}

/// Counts a call in progress for as long as it lives (also when its future is dropped).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(n: &'a std::sync::atomic::AtomicUsize) -> Waiting<'a> {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Every state of [`EVENT_STATES`] at zero.
fn no_events() -> BTreeMap<String, i64> {
    EVENT_STATES.iter().map(|s| (s.to_string(), 0)).collect()
}

/// The per-state counters `status` reports (`ledger_counts`, migrations 12 and 16), zero for a
/// state without events, and the duplicate deliveries (rows of `inbox_duplicates`).
async fn kept_event_counts(conn: &mut sqlx::SqliteConnection) -> Result<BTreeMap<String, i64>> {
    let mut out = no_events();
    for r in sqlx::query("SELECT key, n FROM ledger_counts WHERE tbl = 'inbox' AND n <> 0")
        .fetch_all(&mut *conn)
        .await?
    {
        out.insert(r.try_get(0)?, r.try_get(1)?);
    }
    let dups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox_duplicates")
        .fetch_one(&mut *conn)
        .await?;
    out.insert("duplicate".into(), dups);
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: Side,
    pub event_id: String,
    pub via: &'static str,
    pub event_type: String,
    pub object_type: String,
    pub object_id: String,
    /// The contract object (mapping name) whose identity map resolves `billing_id`.
    pub identity_object: String,
    /// The queue key to use when the identity map does not know `billing_id`.
    pub entity_key: String,
    /// For billing events: resolve the queue key through the identity map first.
    pub billing_id: Option<String>,
    pub payload: String,
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    Inserted(i64),
    Duplicate(i64),
}

#[derive(Debug, Clone)]
pub struct InboxEvent {
    pub id: i64,
    pub source: Side,
    pub event_id: String,
    pub event_type: String,
    pub object_id: String,
    pub payload: String,
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxOp {
    pub id: i64,
    pub entity_key: String,
    pub destination: Side,
    pub op: OpKind,
    pub target_id: Option<String>,
    pub idempotency_key: String,
    pub correlation_id: String,
    pub field_values: serde_json::Map<String, serde_json::Value>,
    pub cause_inbox_id: Option<i64>,
    pub state: String,
    pub attempts: i64,
    pub result_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewOp {
    pub destination: Side,
    pub op: OpKind,
    pub target_id: Option<String>,
    pub idempotency_key: String,
    pub correlation_id: String,
    pub field_values: serde_json::Map<String, serde_json::Value>,
    pub cause_inbox_id: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ShadowValue {
    pub side: Side,
    pub field: String,
    pub value: Option<String>,
    pub sync_seq: i64,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub inbox_id: Option<i64>,
    pub outbox_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub rule: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct OpOutcome {
    pub op_id: i64,
    pub state: &'static str,
    pub response_status: Option<u16>,
    pub response: Option<String>,
    pub result_id: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub op_id: i64,
    pub destination: Side,
    pub error_class: String,
    pub error: String,
    pub request: String,
    pub response: Option<String>,
    pub attempts: i64,
}

/// A read of a record the engine gave up on (see [`ChangeSet::failed_reads`]).
#[derive(Debug, Clone)]
pub struct FailedRead {
    pub destination: Side,
    /// `read_customer`, `read_contact`, …
    pub op: OpKind,
    /// The id that was read.
    pub target_id: Option<String>,
    pub error_class: String,
    pub error: String,
    pub response: Option<String>,
    pub attempts: i64,
    pub cause_inbox_id: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewReview {
    pub reason: String,
    pub fields: serde_json::Value,
}

/// Everything one decision changes, written in one transaction (DESIGN.md "Apply").
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub entity_key: String,
    pub contract_version: String,
    pub event_states: Vec<(i64, EventState, String)>,
    pub new_ops: Vec<NewOp>,
    pub op_outcomes: Vec<OpOutcome>,
    pub shadow: Vec<ShadowValue>,
    /// (object, crm_id, billing_id)
    pub identity: Option<(String, String, String)>,
    pub audit: Vec<NewAudit>,
    pub dead_letters: Vec<NewDeadLetter>,
    pub review: Option<NewReview>,
    /// Reads the engine gave up on: each becomes a dead-lettered operation (op `read_…`) with
    /// its dead letter, so it is triaged, retried (the record is planned again) or discarded
    /// like a failed write.
    pub failed_reads: Vec<FailedRead>,
    /// Inbox ids whose event becomes `applied` once none of its operations is still pending.
    pub settle_causes: Vec<i64>,
    /// Set (true) or clear (false) the record's "plan again" mark.
    pub replan: Option<bool>,
}

impl ChangeSet {
    /// An empty change set for a record, decided under a contract version.
    pub fn new(entity_key: &str, contract_version: &str) -> ChangeSet {
        ChangeSet {
            entity_key: entity_key.to_string(),
            contract_version: contract_version.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub entity_key: String,
    pub last_seq: i64,
    /// A write completed for this record since its last plan: plan again.
    pub replan: bool,
    /// Queued as bulk work (replay) with no live event since: its requests take the bulk lane.
    pub bulk: bool,
    /// Failed turns in a row that no write counts (reads, refused decisions).
    pub failures: i64,
    /// When this record's current run of failures began (any failure, rate limits included).
    pub failing_since_ms: Option<i64>,
}

/// Bulk work (replay) is queued with `ready_seq` at or above this, so live work (ordered by
/// inbox id, far below) is claimed first; a live event on a bulk-queued record brings it back
/// to its live position.
pub const BULK_SEQ_BASE: i64 = 1 << 50;

#[derive(Clone)]
pub struct Ledger {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Work for the group-commit thread: claims, decisions, releases, inbound batches and
    /// backfill pages for its next transaction, and the workers' hot reads (see `group.rs`).
    group: tokio::sync::mpsc::UnboundedSender<group::GroupMsg>,
    path: PathBuf,
    /// Whether writes fail because the ledger cannot be written (disk full, read-only).
    trouble: std::sync::Arc<trouble::Trouble>,
    /// Inbound batches handed to [`Ledger::ingest`] and not yet answered.
    ingesting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn side_of(s: &str) -> Result<Side> {
    Side::parse(s).ok_or_else(|| LedgerError::Corrupt {
        what: "side",
        detail: s.to_string(),
    })
}

fn json_map(s: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_str(s).map_err(|e| LedgerError::Corrupt {
        what: "outbox.field_values",
        detail: e.to_string(),
    })
}

const PAUSE_PREFIX: &str = "pause:";

/// SQLite's file header.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Before a ledger is opened for writing: an existing file must be an SQLite database whose
/// tables are a driftless ledger's (or none yet), and writable.
fn preflight(path: &Path) -> Result<()> {
    use std::io::Read;
    let label = path.display().to_string();
    let not_a_ledger = |detail: String| LedgerError::NotALedger {
        path: label.clone(),
        detail,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // A new ledger: created empty here, so a directory that cannot be written is named as
        // such (SQLite would only say it cannot open the file).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(match lock::unwritable_io(&e) {
                    Some(why) => LedgerError::OpenUnwritable {
                        path: label.clone(),
                        why,
                        detail: format!("cannot create it: {e}"),
                    },
                    None => LedgerError::Io {
                        path: label.clone(),
                        source: e,
                    },
                }),
            };
        }
        Err(e) => {
            return Err(LedgerError::Io {
                path: label.clone(),
                source: e,
            })
        }
    };
    if meta.is_dir() {
        return Err(not_a_ledger("it is a directory".into()));
    }
    if !meta.is_file() {
        return Err(not_a_ledger("it is not a regular file".into()));
    }
    let io = |e: std::io::Error| match lock::unwritable_io(&e) {
        Some(why) => LedgerError::OpenUnwritable {
            path: label.clone(),
            why,
            detail: e.to_string(),
        },
        None => LedgerError::Io {
            path: label.clone(),
            source: e,
        },
    };
    // Opened for writing (and closed again, untouched): a read-only file or file system shows
    // here, where SQLite would quietly open it read-only and fail at the first write.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    if meta.len() == 0 {
        return Ok(());
    }
    let mut head = [0u8; 16];
    let n = f.read(&mut head).map_err(io)?;
    if n < head.len() || &head != SQLITE_HEADER {
        return Err(not_a_ledger(
            "it is not an SQLite database (its first bytes are not SQLite's file header)".into(),
        ));
    }
    let db = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_a_ledger(format!("SQLite cannot read it: {e}")))?;
    let tables: Vec<String> = group::rows(
        &db,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        [],
        |r| Ok(r.get(0)?),
    )
    .map_err(|e| not_a_ledger(format!("SQLite cannot read it: {e}")))?;
    if !tables.is_empty() && !tables.iter().any(|t| t == "_sqlx_migrations") {
        let mut shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        if tables.len() > shown.len() {
            shown.push("…");
        }
        return Err(not_a_ledger(format!(
            "it is an SQLite database of another program (tables {})",
            shown.join(", ")
        )));
    }
    Ok(())
}

/// An error opening or migrating the ledger, named for what it means.
fn opening(path: &str, source: sqlx::Error) -> LedgerError {
    let code = source
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok());
    if let Some(why) = code.and_then(Unwritable::from_code) {
        return LedgerError::OpenUnwritable {
            path: path.to_string(),
            why,
            detail: source.to_string(),
        };
    }
    match code.map(|c| c & 0xff) {
        // SQLITE_CORRUPT, SQLITE_NOTADB
        Some(11) | Some(26) => LedgerError::NotALedger {
            path: path.to_string(),
            detail: format!("SQLite reports it damaged: {source}"),
        },
        _ => LedgerError::Open {
            path: path.to_string(),
            source,
        },
    }
}

impl Ledger {
    /// Open (creating if needed) and migrate the ledger at `path`.
    pub async fn open(path: &Path) -> Result<Ledger> {
        let label = path.display().to_string();
        // Look before touching: a file that is not a ledger (another program's database, a
        // document, garbage) is refused without a byte written to it, and a read-only one is
        // named as such rather than failing somewhere in the migrations.
        let checked = path.to_path_buf();
        tokio::task::spawn_blocking(move || preflight(&checked))
            .await
            .map_err(|e| LedgerError::WriteFailed(format!("the ledger check did not finish: {e}")))??;
        // The path as a file name, never parsed as a URL (`?` and `#` are file name characters).
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Reads through a memory map instead of copying pages out of the OS cache (the
            // hot path's top cost in a profile at 10k records), and a larger page cache.
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-8192");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            // A local file has no far end to lose: sqlx's liveness ping on every acquire is
            // one more trip to the connection's thread per call, on the one writer every
            // worker's read and write waits for.
            .test_before_acquire(false)
            // One connection for the ledger's life: the group thread keeps its prepared
            // statements on it between rounds (`group.rs`), so the pool never retires it.
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(opts.clone())
            .await
            .map_err(|source| opening(&label, source))?;
        MIGRATOR.run(&writer).await.map_err(|source| match source {
            sqlx::migrate::MigrateError::Execute(e) => opening(&label, e),
            sqlx::migrate::MigrateError::VersionMissing(v) => LedgerError::NotALedger {
                path: label.clone(),
                detail: format!(
                    "it was last opened by a newer driftless (its migration {v} is unknown to this one); \
                     run that version, or restore a backup"
                ),
            },
            source => LedgerError::Migrate {
                path: label.clone(),
                source,
            },
        })?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            // The read pool (console, CLI) reads through SQLite's own bounded page cache: mapped,
            // every page a console call touched stayed resident once per connection (the
            // engine's RSS reached 1.1 GB serving a 1M-event ledger; `perf -- scale`).
            .connect_with(opts.read_only(true).pragma("mmap_size", "0"))
            .await
            .map_err(|source| LedgerError::Open { path: label, source })?;
        let trouble = std::sync::Arc::new(trouble::Trouble::new(path.display().to_string()));
        let group = group::start(writer.clone(), trouble.clone())?;
        Ok(Ledger {
            writer,
            reader,
            group,
            path: path.to_path_buf(),
            trouble,
            ingesting: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn begin(&self) -> Result<WriteTx> {
        let conn = self.writer.acquire().await?;
        WriteTx::begin(conn, self.trouble.clone()).await
    }

    /// Why the ledger cannot be written right now (disk full, read-only), since when and how
    /// many writes were refused; `None` while writes succeed.
    pub fn unwritable(&self) -> Option<Episode> {
        self.trouble.current()
    }

    /// Whether a failed ledger call is explained by the ledger being unwritable — the episode
    /// is logged once, then summarised (`trouble.rs`), so the caller need not log it again.
    pub fn explains(&self, e: &LedgerError) -> bool {
        e.unwritable().is_some() || (matches!(e, LedgerError::WriteFailed(_)) && self.trouble.current().is_some())
    }

    pub async fn close(&self) {
        // The group thread's prepared statements go first (sqlx cannot close a connection
        // with statements left on it).
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.group.send(group::GroupMsg::Close(ack)).is_ok() {
            let _ = done.await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }

    // ----------------------------------------------------------------------------- ingest

    /// Make a batch of inbound events durable in one transaction (the group commit's, shared
    /// with the workers' decisions): new events land in the inbox and their records in the
    /// work queue; deliveries of events already held are recorded as duplicates. Returns one
    /// outcome per input, in order.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<IngestOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let work = GroupWork::Ingest { events, bulk: false };
        let _waiting = Waiting::enter(&self.ingesting);
        Ok(self.grouped(work).await?.outcomes)
    }

    /// Inbound batches (webhook deliveries, polled pages) this handle is making durable right
    /// now: handed to the group commit and not yet answered — committed or failed. A delivery
    /// is acknowledged only after its batch is answered, so while the ledger cannot be written
    /// (another connection holds its write lock) this counts the deliveries held open.
    pub fn ingests_waiting(&self) -> usize {
        self.ingesting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// [`Ledger::ingest`] inside the group's transaction; `bulk` queues new records behind
    /// live work (backfill), a record already queued keeps its place.
    pub(super) fn ingest_in(db: &rusqlite::Connection, events: &[&NewEvent], bulk: bool) -> Result<Vec<IngestOutcome>> {
        use rusqlite::types::ToSql;
        let bulk_base = if bulk { BULK_SEQ_BASE } else { 0 };
        // A billing id belongs to one CRM record, whichever object linked it (a contact's or a
        // company's customer); prefer the event's own object. One lookup for the whole batch
        // (inside the transaction, so a link made a moment ago is seen).
        let mut billing_ids: Vec<&str> = events.iter().filter_map(|e| e.billing_id.as_deref()).collect();
        billing_ids.sort_unstable();
        billing_ids.dedup();
        let mut linked: HashMap<(String, String), String> = HashMap::new();
        for chunk in billing_ids.chunks(500) {
            let sql = format!(
                "SELECT object, billing_id, object || ':crm:' || crm_id FROM identity_map WHERE billing_id IN ({})",
                group::marks(chunk.len())
            );
            for (object, billing_id, key) in group::rows(db, &sql, rusqlite::params_from_iter(chunk), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })? {
                linked.insert((object, billing_id), key);
            }
        }
        let entity_of = |e: &&NewEvent| -> String {
            let Some(bid) = e.billing_id.as_deref() else {
                return e.entity_key.clone();
            };
            if let Some(k) = linked.get(&(e.identity_object.clone(), bid.to_string())) {
                return k.clone();
            }
            // Another object's link: the lowest object name, so the choice is stable.
            linked
                .iter()
                .filter(|((_, b), _)| b == bid)
                .min_by(|a, b| a.0 .0.cmp(&b.0 .0))
                .map(|(_, k)| k.clone())
                .unwrap_or_else(|| e.entity_key.clone())
        };
        // One statement per chunk answers for every event: a new one is inserted, one already
        // held is touched (a no-op update of a column no index or trigger watches) so that
        // RETURNING names its row too. Rows are told apart by id: the inbox's ids only grow,
        // so a row is new exactly when its id is above the largest id before the batch.
        let before: i64 = db
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM inbox")?
            .query_row([], |r| r.get(0))?;
        // Each event's queue key, and the inbox id its upsert answered with.
        let entities: Vec<String> = events.iter().map(entity_of).collect();
        let mut ids: Vec<i64> = Vec::with_capacity(events.len());
        for (chunk, keys) in events.chunks(200).zip(entities.chunks(200)) {
            let sql = format!(
                "INSERT INTO inbox (source, event_id, via, event_type, object_type, object_id, entity_key, payload, \
                 received_at_ms) VALUES {} \
                 ON CONFLICT (source, event_id) DO UPDATE SET via = inbox.via \
                 RETURNING id, source, event_id",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let sources: Vec<&str> = chunk.iter().map(|e| e.source.as_str()).collect();
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 9);
            for ((e, entity), source) in chunk.iter().zip(keys).zip(&sources) {
                values.extend([
                    source as &dyn ToSql,
                    &e.event_id,
                    &e.via,
                    &e.event_type,
                    &e.object_type,
                    &e.object_id,
                    entity,
                    &e.payload,
                    &e.received_at_ms,
                ]);
            }
            // SQLite does not promise RETURNING's order: each row is checked against the event
            // at its position, and only a row that differs is carried by its key.
            let mut at = 0;
            let rows = group::rows(db, &sql, rusqlite::params_from_iter(values), |r| {
                let id: i64 = r.get(0)?;
                let text = |i: usize| r.get_ref(i).and_then(|v| v.as_str().map_err(rusqlite::Error::from));
                let (source, event_id) = (text(1)?, text(2)?);
                let same = chunk
                    .get(at)
                    .is_some_and(|e| e.source.as_str() == source && e.event_id == event_id);
                at += 1;
                Ok((id, (!same).then(|| (source.to_string(), event_id.to_string()))))
            })?;
            if rows.len() == chunk.len() && rows.iter().all(|(_, other)| other.is_none()) {
                ids.extend(rows.iter().map(|(id, _)| *id));
                continue;
            }
            let mut by_key: HashMap<(&str, &str), i64> = HashMap::with_capacity(rows.len());
            for (pos, (id, other)) in rows.iter().enumerate() {
                let key = match other {
                    Some((source, event_id)) => (source.as_str(), event_id.as_str()),
                    None => (sources[pos], chunk[pos].event_id.as_str()),
                };
                by_key.insert(key, *id);
            }
            for e in chunk {
                ids.push(*by_key.get(&(e.source.as_str(), e.event_id.as_str())).ok_or_else(|| {
                    LedgerError::WriteFailed(format!("event {} is not in the inbox after its insert", e.event_id))
                })?);
            }
        }
        // Each record's new events, as one head row: ready at its first, newest is its last.
        // A delivery of an event held before, or already seen in this batch, is a duplicate.
        let mut out = Vec::with_capacity(events.len());
        let mut seen_new: std::collections::HashSet<i64> = std::collections::HashSet::new();
        let mut heads: Vec<(&str, i64, i64)> = Vec::new();
        let mut head_of: HashMap<&str, usize> = HashMap::new();
        let mut dups: Vec<(i64, &NewEvent)> = Vec::new();
        for ((e, entity), &id) in events.iter().zip(&entities).zip(&ids) {
            if id > before && seen_new.insert(id) {
                match head_of.get(entity.as_str()) {
                    Some(&h) => {
                        heads[h].1 = heads[h].1.min(id);
                        heads[h].2 = heads[h].2.max(id);
                    }
                    None => {
                        head_of.insert(entity.as_str(), heads.len());
                        heads.push((entity.as_str(), id, id));
                    }
                }
                out.push(IngestOutcome::Inserted(id));
            } else {
                dups.push((id, e));
                out.push(IngestOutcome::Duplicate(id));
            }
        }
        // The per-state counts (`ledger_counts`): new events are pending. Kept here, once a
        // batch, for every inbound event (migration 16).
        if !heads.is_empty() {
            db.prepare_cached("UPDATE ledger_counts SET n = n + ?1 WHERE tbl = 'inbox' AND key = 'pending'")?
                .execute([seen_new.len() as i64])?;
        }
        for chunk in heads.chunks(300) {
            // A live event for a record whose bulk CRM update waits for a full batch call
            // makes it claimable now: live work does not wait for bulk batching.
            let sql = format!(
                "INSERT INTO work_queue (entity_key, ready_seq, last_seq) VALUES {} \
                 ON CONFLICT (entity_key) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), \
                 ready_seq = min(ready_seq, excluded.ready_seq), replay_run = NULL, \
                 not_before_ms = CASE WHEN excluded.ready_seq < {BULK_SEQ_BASE} \
                   AND parked_reason LIKE '{}%' THEN 0 ELSE not_before_ms END",
                vec!["(?, ?, ?)"; chunk.len()].join(", "),
                crm_batch::BATCH_WAIT_PREFIX
            );
            let seqs: Vec<(i64, i64)> = chunk
                .iter()
                .map(|(_, first, last)| (first + bulk_base, *last))
                .collect();
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 3);
            for ((entity, _, _), (ready, last)) in chunk.iter().zip(&seqs) {
                values.extend([entity as &dyn ToSql, ready, last]);
            }
            db.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(values))?;
        }
        // Each delivery of an event already held is recorded.
        for rows in dups.chunks(300) {
            let sql = format!(
                "INSERT INTO inbox_duplicates (inbox_id, via, received_at_ms) VALUES {}",
                vec!["(?, ?, ?)"; rows.len()].join(", ")
            );
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(rows.len() * 3);
            for (id, e) in rows {
                values.extend([id as &dyn ToSql, &e.via, &e.received_at_ms]);
            }
            db.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(values))?;
        }
        Ok(out)
    }

    // ------------------------------------------------------------------------------ queue

    /// Forget leases held by a previous run of the engine (it is gone: one engine per ledger).
    pub async fn reset_leases(&self) -> Result<u64> {
        let r =
            sqlx::query("UPDATE work_queue SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner IS NOT NULL")
                .execute(&self.writer)
                .await?;
        Ok(r.rows_affected())
    }

    /// Claim up to `n` records whose turn it is, oldest first, for `lease_ms`.
    pub async fn claim(&self, owner: &str, n: i64, now_ms: i64, lease_ms: i64) -> Result<Vec<Claim>> {
        self.claim_lane(owner, n, now_ms, lease_ms, false).await
    }

    /// [`Ledger::claim`], live work first; with `bulk_first`, bulk work first (a share of
    /// claims takes it, so bulk progresses under a steady stream of live events). The claim
    /// joins the group commit: the workers' claims share commits with their decisions.
    pub async fn claim_lane(
        &self,
        owner: &str,
        n: i64,
        now_ms: i64,
        lease_ms: i64,
        bulk_first: bool,
    ) -> Result<Vec<Claim>> {
        let work = GroupWork::Claim(ClaimRequest {
            owner: owner.to_string(),
            n,
            now_ms,
            lease_ms,
            bulk_first,
        });
        Ok(self.grouped(work).await?.claims)
    }

    /// Release a claimed record: removed from the queue when nothing new arrived while it was
    /// claimed and it has no pending work; otherwise handed back for another turn.
    pub async fn release(&self, claim: &Claim, owner: &str) -> Result<()> {
        self.grouped(GroupWork::Release {
            claim: claim.clone(),
            owner: owner.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Hand a claimed record back, not to be claimed again before `not_before_ms`.
    /// Park a record whose turn failed, until `not_before_ms`: one more failure in its count
    /// when `count` (a read or a decision failed; a write counts its own attempts), and the
    /// start of its run of failures kept (any failure, rate limits included).
    pub async fn park_failed(
        &self,
        entity_key: &str,
        owner: &str,
        not_before_ms: i64,
        reason: &str,
        count: bool,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE work_queue SET lease_owner = NULL, lease_until_ms = 0, not_before_ms = ?3, \
             parked_reason = ?4, failures = failures + ?5, failing_since_ms = COALESCE(failing_since_ms, ?6) \
             WHERE entity_key = ?1 AND lease_owner = ?2",
        )
        .bind(entity_key)
        .bind(owner)
        .bind(not_before_ms)
        .bind(reason)
        .bind(i64::from(count))
        .bind(now_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn park(&self, entity_key: &str, owner: &str, not_before_ms: i64, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE work_queue SET lease_owner = NULL, lease_until_ms = 0, not_before_ms = ?3, \
             parked_reason = ?4 WHERE entity_key = ?1 AND lease_owner = ?2",
        )
        .bind(entity_key)
        .bind(owner)
        .bind(not_before_ms)
        .bind(reason)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Events of a record that no plan has consumed yet, oldest first. The record's pending
    /// events are one range of its index, named: without `INDEXED BY` SQLite once picked an
    /// index (`inbox_by_state`, dropped since) that walked every pending event of every
    /// record — quadratic in a backlog.
    pub async fn unplanned_events(&self, entity_key: &str) -> Result<Vec<InboxEvent>> {
        let key = entity_key.to_string();
        self.hot(move |db| {
            group::rows(
                db,
                "SELECT id, source, event_id, event_type, object_id, payload, received_at_ms \
                 FROM inbox i INDEXED BY inbox_by_entity_state \
                 WHERE entity_key = ?1 AND state = 'pending' \
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.cause_inbox_id = i.id) ORDER BY id",
                [&key],
                |r| {
                    Ok(InboxEvent {
                        id: r.get(0)?,
                        source: side_of(&r.get::<_, String>(1)?)?,
                        event_id: r.get(2)?,
                        event_type: r.get(3)?,
                        object_id: r.get(4)?,
                        payload: r.get(5)?,
                        received_at_ms: r.get(6)?,
                    })
                },
            )
        })
        .await
    }

    /// Operations planned for a record and not yet finished, in the order they were planned.
    pub async fn open_ops(&self, entity_key: &str) -> Result<Vec<OutboxOp>> {
        let key = entity_key.to_string();
        self.hot(move |db| {
            let sql = format!(
                "SELECT {} FROM outbox WHERE entity_key = ?1 AND state = 'pending' ORDER BY id",
                group::OP_COLUMNS
            );
            group::rows(db, &sql, [&key], group::op_from_row)
        })
        .await
    }

    /// The most recent operations that reached `destination` for a record, newest first.
    pub async fn recent_writes(&self, entity_key: &str, destination: Side, limit: i64) -> Result<Vec<OutboxOp>> {
        let key = entity_key.to_string();
        self.hot(move |db| {
            let sql = format!(
                "SELECT {} FROM outbox WHERE entity_key = ?1 AND destination = ?2 AND state IN ('done', 'pending') \
                 ORDER BY id DESC LIMIT ?3",
                group::OP_COLUMNS
            );
            group::rows(
                db,
                &sql,
                rusqlite::params![key, destination.as_str(), limit],
                group::op_from_row,
            )
        })
        .await
    }

    pub async fn shadow(&self, entity_key: &str) -> Result<Vec<ShadowValue>> {
        let key = entity_key.to_string();
        self.hot(move |db| {
            group::rows(
                db,
                "SELECT side, field, value, sync_seq FROM shadow WHERE entity_key = ?1",
                [&key],
                |r| {
                    Ok(ShadowValue {
                        side: side_of(&r.get::<_, String>(0)?)?,
                        field: r.get(1)?,
                        value: r.get(2)?,
                        sync_seq: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    /// The CRM record the identity map links a billing id to (for `object`), if any.
    pub async fn crm_id_linked_to(&self, object: &str, billing_id: &str) -> Result<Option<String>> {
        let (object, billing_id) = (object.to_string(), billing_id.to_string());
        self.hot(move |db| {
            let found = group::rows(
                db,
                "SELECT crm_id FROM identity_map WHERE object = ?1 AND billing_id = ?2",
                [&object, &billing_id],
                |r| Ok(r.get::<_, String>(0)?),
            )?;
            Ok(found.into_iter().next())
        })
        .await
    }

    pub async fn billing_id_for(&self, object: &str, crm_id: &str) -> Result<Option<String>> {
        let (object, crm_id) = (object.to_string(), crm_id.to_string());
        self.hot(move |db| {
            let found = group::rows(
                db,
                "SELECT billing_id FROM identity_map WHERE object = ?1 AND crm_id = ?2",
                [&object, &crm_id],
                |r| Ok(r.get::<_, Option<String>>(0)?),
            )?;
            Ok(found.into_iter().next().flatten())
        })
        .await
    }

    // ------------------------------------------------------------------------------ apply

    /// Write one decision's changes atomically. Returns the ids of the new operations.
    pub async fn apply(&self, cs: &ChangeSet, now_ms: i64) -> Result<Vec<i64>> {
        Ok(self
            .grouped(GroupWork::Apply {
                cs: Box::new(cs.clone()),
                now_ms,
            })
            .await?
            .ids)
    }

    /// Count one more failed attempt of an operation that will be retried.
    pub async fn record_attempt(&self, op_id: i64, error: &str, status: Option<u16>, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, response_status = ?3, updated_at_ms = ?4 \
             WHERE id = ?1",
        )
        .bind(op_id)
        .bind(error)
        .bind(status.map(i64::from))
        .bind(now_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    // ---------------------------------------------------------------------------- control

    /// Pause outbound writes for `scope` (`global`, `crm` or `billing`), audited.
    pub async fn set_pause(&self, scope: &str, reason: Option<&str>, by: &str, now_ms: i64) -> Result<()> {
        self.flag_on(
            &format!("{PAUSE_PREFIX}{scope}"),
            reason,
            by,
            now_ms,
            "pause_outbound",
            serde_json::json!({"scope": scope, "reason": reason}),
        )
        .await
    }

    /// Turn a control flag on (pause scope, observe mode) and audit it as `action`, in one
    /// transaction.
    pub(crate) async fn flag_on(
        &self,
        key: &str,
        reason: Option<&str>,
        by: &str,
        now_ms: i64,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO control_flags (key, value, reason, set_by, set_at_ms) VALUES (?1, 'on', ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET value = 'on', reason = excluded.reason, set_by = excluded.set_by, \
             set_at_ms = excluded.set_at_ms",
        )
        .bind(key)
        .bind(reason)
        .bind(by)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        Self::audit_operator(&mut tx, now_ms, None, None, by, action, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Resume outbound writes for `scope`; parked records become claimable at once.
    pub async fn clear_pause(&self, scope: &str, reason: Option<&str>, by: &str, now_ms: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM control_flags WHERE key = ?1")
            .bind(format!("{PAUSE_PREFIX}{scope}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE work_queue SET not_before_ms = 0, parked_reason = NULL WHERE parked_reason = 'paused'")
            .execute(&mut *tx)
            .await?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            None,
            None,
            by,
            "resume_outbound",
            serde_json::json!({"scope": scope, "reason": reason}),
        )
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// An operator action with no other ledger change (e.g. starting or cancelling a
    /// background reconciliation): one audit row.
    pub async fn audit_action(&self, by: &str, action: &str, detail: serde_json::Value, now_ms: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        Self::audit_operator(&mut tx, now_ms, None, None, by, action, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An operator action in the audit log (rule `operator`), inside a write transaction.
    pub(super) async fn audit_operator(
        tx: &mut WriteTx,
        now_ms: i64,
        entity_key: Option<&str>,
        inbox_id: Option<i64>,
        actor: &str,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at_ms, entity_key, inbox_id, actor, action, rule, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'operator', ?6)",
        )
        .bind(now_ms)
        .bind(entity_key)
        .bind(inbox_id)
        .bind(actor)
        .bind(action)
        .bind(detail.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Remember the contract version the engine runs with (so `status` can report it).
    pub async fn record_contract_version(&self, version: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO control_flags (key, value, set_by, set_at_ms) VALUES ('contract_version', ?1, 'engine', ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, set_at_ms = excluded.set_at_ms",
        )
        .bind(version)
        .bind(now_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The contract version the engine last ran with, if any.
    pub async fn contract_version(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM control_flags WHERE key = 'contract_version'")
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    /// Current pause flags. Read on the writer connection so a pause set a moment ago by
    /// another process (the CLI) is seen by the very next write.
    pub async fn pauses(&self) -> Result<Vec<PauseFlag>> {
        let rows = sqlx::query(
            "SELECT key, reason, set_by, set_at_ms FROM control_flags WHERE key LIKE 'pause:%' AND value = 'on' ORDER BY key",
        )
        .fetch_all(&self.writer)
        .await?;
        rows.into_iter()
            .map(|r| {
                let key: String = r.try_get(0)?;
                Ok(PauseFlag {
                    scope: key.trim_start_matches(PAUSE_PREFIX).to_string(),
                    reason: r.try_get(1)?,
                    set_by: r.try_get(2)?,
                    set_at_ms: r.try_get(3)?,
                })
            })
            .collect()
    }

    // ----------------------------------------------------------------------------- status

    /// The ledger's figures, with poll lag measured by the wall clock (the CLI's view).
    pub async fn status(&self) -> Result<LedgerStatus> {
        self.status_at(chrono::Utc::now().timestamp_millis()).await
    }

    /// The ledger's figures, with poll lag measured at `now_ms` (the engine's clock).
    pub async fn status_at(&self, now_ms: i64) -> Result<LedgerStatus> {
        // Counts kept by triggers and the inbox's insert path (migrations 12 and 16): counting
        // a million-event inbox took ~90 ms. `event_census` checks them against the rows.
        let mut st = LedgerStatus {
            events: kept_event_counts(&mut *self.reader.acquire().await?).await?,
            ..Default::default()
        };
        let dups = st.events.get("duplicate").copied().unwrap_or(0);
        st.distinct_events = st.events.values().sum::<i64>() - dups;
        st.events_total = st.distinct_events + dups;
        for side in ["crm", "billing"] {
            st.writes.insert(side.to_string(), DestinationWrites::default());
        }
        let rows = sqlx::query("SELECT key, n FROM ledger_counts WHERE tbl = 'outbox' AND n <> 0")
            .fetch_all(&self.reader)
            .await?;
        for r in rows {
            let key: String = r.try_get(0)?;
            let (dest, state) = key.split_once(':').ok_or_else(|| LedgerError::Corrupt {
                what: "ledger_counts",
                detail: key.clone(),
            })?;
            let (dest, state) = (dest.to_string(), state.to_string());
            let n: i64 = r.try_get(1)?;
            let w = st.writes.entry(dest).or_default();
            match state.as_str() {
                "done" => w.done = n,
                "pending" => w.pending = n,
                "dead_lettered" => w.dead_lettered = n,
                _ => {}
            }
        }
        st.queue_depth = sqlx::query_scalar("SELECT COUNT(*) FROM work_queue")
            .fetch_one(&self.reader)
            .await?;
        st.dead_letter_depth = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters WHERE resolved_at_ms IS NULL")
            .fetch_one(&self.reader)
            .await?;
        st.review_depth = sqlx::query_scalar("SELECT COUNT(*) FROM review_queue WHERE resolved_at_ms IS NULL")
            .fetch_one(&self.reader)
            .await?;
        let mut lags: Vec<i64> = sqlx::query_scalar(
            // The partial index: without it the planner sorted every applied event (a
            // second at a million events).
            "SELECT decided_at_ms - received_at_ms FROM inbox INDEXED BY inbox_applied_recent \
             WHERE state = 'applied' ORDER BY decided_at_ms DESC LIMIT 1000",
        )
        .fetch_all(&self.reader)
        .await?;
        lags.sort_unstable();
        st.lag_ms = lag_figures(&lags);
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN name = 'crm_write_records' THEN value END), 0) AS REAL), \
                    CAST(COALESCE(SUM(CASE WHEN name = 'crm_write_calls' THEN value END), 0) AS REAL), \
                    CAST(COALESCE(MAX(CASE WHEN name = 'crm_write_call_max' THEN value END), 0) AS REAL) \
             FROM metric_samples WHERE name IN ('crm_write_records', 'crm_write_calls', 'crm_write_call_max')",
        )
        .fetch_one(&self.reader)
        .await?;
        let (records, calls, max): (f64, f64, f64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        st.crm_write_calls = CrmWriteCalls {
            records: records as i64,
            calls: calls as i64,
            mean_records: if calls > 0.0 { records / calls } else { 0.0 },
            max_records: max as i64,
        };
        let rows = sqlx::query(
            "SELECT key, reason, set_by, set_at_ms FROM control_flags WHERE key LIKE 'pause:%' AND value = 'on' ORDER BY key",
        )
        .fetch_all(&self.reader)
        .await?;
        for r in rows {
            let key: String = r.try_get(0)?;
            st.paused.push(PauseFlag {
                scope: key.trim_start_matches(PAUSE_PREFIX).to_string(),
                reason: r.try_get(1)?,
                set_by: r.try_get(2)?,
                set_at_ms: r.try_get(3)?,
            });
        }
        self.gate_status(&mut st).await?;
        self.backfill_status(&mut st).await?;
        st.pollers = self.poller_status(now_ms).await?;
        Ok(st)
    }

    /// Invariant 4 counted two ways in one read snapshot: the per-state counters `status`
    /// reports (`ledger_counts`, kept by triggers and by the inbox's insert path) and the rows
    /// themselves (`inbox` grouped by state; duplicates are rows of `inbox_duplicates` either
    /// way). The counters exist so `status` never counts a million-event inbox; this is what
    /// they must equal ([`EventCensus::mismatches`]). It scans the inbox: for tests, the drill
    /// and checks, not for every status.
    pub async fn event_census(&self) -> Result<EventCensus> {
        // One read transaction: both sides from the same snapshot, even while events arrive.
        let mut tx = self.reader.begin().await?;
        let kept = kept_event_counts(&mut tx).await?;
        let mut counted = no_events();
        for r in sqlx::query("SELECT state, COUNT(*) FROM inbox GROUP BY state")
            .fetch_all(&mut *tx)
            .await?
        {
            counted.insert(r.try_get(0)?, r.try_get(1)?);
        }
        // Duplicates are rows of `inbox_duplicates` either way: counted once, above.
        counted.insert("duplicate".into(), kept.get("duplicate").copied().unwrap_or(0));
        tx.commit().await?;
        Ok(EventCensus { kept, counted })
    }

    /// Add per-minute metric deltas (summed into the existing sample for that minute).
    pub async fn add_metric_samples(&self, samples: &[(String, String, i64, f64)]) -> Result<()> {
        self.write_metric_samples(samples, "value + excluded.value").await
    }

    /// Raise per-minute maxima (the larger of the stored and the new value wins).
    pub async fn max_metric_samples(&self, samples: &[(String, String, i64, f64)]) -> Result<()> {
        self.write_metric_samples(samples, "MAX(value, excluded.value)").await
    }

    /// Set gauge samples for a minute (the last sample of the minute wins).
    pub async fn set_metric_samples(&self, samples: &[(String, String, i64, f64)]) -> Result<()> {
        self.write_metric_samples(samples, "excluded.value").await
    }

    async fn write_metric_samples(&self, samples: &[(String, String, i64, f64)], merge: &'static str) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO metric_samples (name, labels, minute, value) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name, labels, minute) DO UPDATE SET value = {merge}"
        );
        let mut tx = self.begin().await?;
        for (name, labels, minute, value) in samples {
            sqlx::query(&sql)
                .bind(name)
                .bind(labels)
                .bind(minute)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// End-to-end lag of each event received in `[from_ms, to_ms)` and decided: receipt → the
    /// last write it caused done (its decision, when it caused none). The performance suite's
    /// "lag under load"; events still pending are left out (the caller waits for quiet).
    pub async fn event_lags(&self, from_ms: i64, to_ms: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(COALESCE(i.decided_at_ms, 0), COALESCE((SELECT MAX(o.done_at_ms) FROM outbox o \
                    WHERE o.cause_inbox_id = i.id AND o.state = 'done'), 0)) - i.received_at_ms \
             FROM inbox i WHERE i.received_at_ms >= ?1 AND i.received_at_ms < ?2 AND i.state <> 'pending'",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Gauges sampled now: open writes per destination, dead-letter and review depth, and the
    /// lag of events applied since `since_ms`.
    pub async fn gauges(&self, since_ms: i64) -> Result<Gauges> {
        let mut g = Gauges::default();
        let rows = sqlx::query("SELECT destination, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY destination")
            .fetch_all(&self.reader)
            .await?;
        for r in rows {
            let d: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            match d.as_str() {
                "crm" => g.open_writes_crm = n,
                _ => g.open_writes_billing = n,
            }
        }
        g.dead_letter_depth = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters WHERE resolved_at_ms IS NULL")
            .fetch_one(&self.reader)
            .await?;
        g.review_depth = sqlx::query_scalar("SELECT COUNT(*) FROM review_queue WHERE resolved_at_ms IS NULL")
            .fetch_one(&self.reader)
            .await?;
        g.queue_depth = sqlx::query_scalar("SELECT COUNT(*) FROM work_queue")
            .fetch_one(&self.reader)
            .await?;
        let mut lags: Vec<i64> = sqlx::query_scalar(
            "SELECT decided_at_ms - received_at_ms FROM inbox INDEXED BY inbox_applied_recent \
             WHERE state = 'applied' AND decided_at_ms >= ?1",
        )
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        lags.sort_unstable();
        g.lag = lag_figures(&lags);
        Ok(g)
    }

    /// Per-minute samples of one metric since `since_minute`: (labels, minute, value).
    pub async fn metric_series(&self, name: &str, since_minute: i64) -> Result<Vec<(String, i64, f64)>> {
        let rows = sqlx::query(
            "SELECT labels, minute, value FROM metric_samples WHERE name = ?1 AND minute >= ?2 ORDER BY labels, minute",
        )
        .bind(name)
        .bind(since_minute)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Rows of a table, for invariant checks, dumps and the secret-leak test.
    pub async fn count(&self, table: LedgerTable) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name());
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.reader).await?)
    }

    /// Of `event_ids` from `source`, those the inbox does not hold.
    pub async fn missing_events(&self, source: Side, event_ids: &[String]) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for chunk in event_ids.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT event_id FROM inbox WHERE source = ");
            qb.push_bind(source.as_str()).push(" AND event_id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(id);
            }
            qb.push(")");
            let found: std::collections::HashSet<String> = qb
                .build_query_scalar::<String>()
                .fetch_all(&self.reader)
                .await?
                .into_iter()
                .collect();
            missing.extend(chunk.iter().filter(|id| !found.contains(*id)).cloned());
        }
        Ok(missing)
    }

    /// Records with an open review item.
    pub async fn open_review_keys(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT entity_key FROM review_queue WHERE resolved_at_ms IS NULL ORDER BY id")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// Audit rows for one record, oldest first: (id, at, actor, action, rule, contract version, detail).
    pub async fn audit_for(&self, entity_key: &str) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, inbox_id, outbox_id, actor, action, rule, contract_version, detail FROM audit \
             WHERE entity_key = ?1 ORDER BY id",
        )
        .bind(entity_key)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    inbox_id: r.try_get(2)?,
                    outbox_id: r.try_get(3)?,
                    actor: r.try_get(4)?,
                    action: r.try_get(5)?,
                    rule: r.try_get(6)?,
                    contract_version: r.try_get(7)?,
                    detail: r.try_get(8)?,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub open_writes_crm: i64,
    pub open_writes_billing: i64,
    pub queue_depth: i64,
    pub dead_letter_depth: i64,
    pub review_depth: i64,
    pub lag: LagFigures,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub inbox_id: Option<i64>,
    pub outbox_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub rule: Option<String>,
    pub contract_version: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub enum LedgerTable {
    Inbox,
    InboxDuplicates,
    WorkQueue,
    Outbox,
    Audit,
    DeadLetters,
    ReviewQueue,
}

impl LedgerTable {
    fn name(self) -> &'static str {
        match self {
            LedgerTable::Inbox => "inbox",
            LedgerTable::InboxDuplicates => "inbox_duplicates",
            LedgerTable::WorkQueue => "work_queue",
            LedgerTable::Outbox => "outbox",
            LedgerTable::Audit => "audit",
            LedgerTable::DeadLetters => "dead_letters",
            LedgerTable::ReviewQueue => "review_queue",
        }
    }
}

/// p50 / p95 / max of sorted samples.
pub fn lag_figures(sorted: &[i64]) -> LagFigures {
    if sorted.is_empty() {
        return LagFigures::default();
    }
    let pick = |q: f64| {
        let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[idx.min(sorted.len() - 1)]
    };
    LagFigures {
        samples: sorted.len() as i64,
        p50: pick(0.50),
        p95: pick(0.95),
        max: sorted[sorted.len() - 1],
    }
}

mod backfill;
mod crm_batch;
pub use crm_batch::{batch_wait_reason, BatchWaiting};
mod dead_letters;
mod gate;
mod group;
mod kinds;
pub use kinds::{EventState, OpKind};
pub mod lock;
mod ops;
pub mod reconcile;
mod replay_runs;
mod seed;
pub mod trouble;
mod tx;
mod watermarks;

pub use backfill::{BackfillStart, BACKFILL_PREFIX};
pub use gate::WriteHold;
pub use seed::{seeded_record, SeedSummary};
pub use watermarks::{Gap, GapKind};

#[cfg(test)]
mod tests;
