//! The group-commit thread: the workers' claims, decisions and releases, their reads of their
//! own record, inbound batches and backfill pages, all on the writer's connection, run in
//! this thread.
//!
//! sqlx runs each SQLite connection on a thread of its own and every statement is a round
//! trip to it: on this 2-core machine, under the workers' load, that trip cost 70–90 µs, ten
//! times the statement, and the workers' ~20 statements a record made the writer's queue
//! the bound on end-to-end apply (a read waited 3.5 ms, a decision 8 ms). Here the thread
//! checks the writer out of its pool once per round, takes its handle from sqlx's worker
//! (`lock_handle`: sqlx makes no call on it meanwhile) and runs every statement of the round
//! in-thread through rusqlite, on the same SQLite library sqlx links. Reads first, on their
//! own (each sees every committed write, nothing uncommitted), then the writes in one
//! transaction.

use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, OptionalExtension};
use sqlx::SqlitePool;

use super::{side_of, ChangeSet, Claim, IngestOutcome, Ledger, LedgerError, NewEvent, Result, BULK_SEQ_BASE};

/// What the group-commit thread is asked to do: a write for the next group commit, or a read.
pub(super) enum GroupMsg {
    Write(GroupJob),
    Read(HotRead),
    /// The ledger closes: drop the kept statements (answered when done).
    Close(tokio::sync::oneshot::Sender<()>),
}

/// A read run by the group-commit thread before the round's transaction. It answers through
/// the channel it captured; dropped unrun (the writer could not be checked out), its caller
/// hears that the ledger stopped.
pub(super) type HotRead = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

/// A write that joins the next group commit: a worker's claim, one decision's changes, a
/// record's release, a batch of inbound events, a backfill page; answered once the group is
/// committed.
pub(super) struct GroupJob {
    work: GroupWork,
    reply: tokio::sync::oneshot::Sender<Result<GroupDone>>,
}

pub(super) enum GroupWork {
    Claim(ClaimRequest),
    Apply { cs: Box<ChangeSet>, now_ms: i64 },
    Release { claim: Claim, owner: String },
    Ingest { events: Vec<NewEvent>, bulk: bool },
    BackfillPage(Box<super::backfill::PageRequest>),
}

/// What a committed job answers: a claim the records it claimed, a decision the new
/// operations' ids, an ingest one outcome per event, a backfill page its counts (none when
/// its run no longer runs); a release nothing.
#[derive(Default)]
pub(super) struct GroupDone {
    pub(super) claims: Vec<Claim>,
    pub(super) ids: Vec<i64>,
    pub(super) outcomes: Vec<IngestOutcome>,
    pub(super) page: Option<(usize, usize)>,
}

pub(super) struct ClaimRequest {
    pub(super) owner: String,
    pub(super) n: i64,
    pub(super) now_ms: i64,
    pub(super) lease_ms: i64,
    pub(super) bulk_first: bool,
}

/// The most jobs (and, apart, the most reads) one round carries.
const GROUP_MAX: usize = 64;

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => LedgerError::Locked(e.to_string()),
            _ => LedgerError::Native(e),
        }
    }
}

/// Start the group-commit thread for `writer` (its own single-threaded runtime, so a round
/// never waits behind the workers' tasks for a turn).
pub(super) fn start(
    writer: SqlitePool,
    trouble: std::sync::Arc<super::trouble::Trouble>,
) -> Result<tokio::sync::mpsc::UnboundedSender<GroupMsg>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("ledger-group".into())
        .spawn(
            move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(group_commit(writer, rx, trouble)),
                Err(e) => tracing::error!(error = %e, "the ledger's group-commit thread has no runtime"),
            },
        )
        .map_err(|e| LedgerError::WriteFailed(format!("cannot start the group-commit thread: {e}")))?;
    Ok(tx)
}

/// Group commit: every claim, decision, release, inbound batch and backfill page waiting when
/// the writer is free goes into one transaction, and every job is answered only after that commit
/// returned — durable, as with a transaction of its own. One commit (one fsync) then serves
/// many records. Should any job fail, the group is rolled back and each job runs again in a
/// transaction of its own, so a failing job is answered with its error and changes nothing,
/// and the others commit as before. The reads waiting run first, outside the transaction.
///
/// The writer stays checked out (and its handle locked) from one round to the next while work
/// keeps coming — up to `HOLD_MAX`, and while the next message arrives within `LINGER` — so a
/// busy ledger pays the checkout (two trips to sqlx's worker thread) once per run of rounds,
/// not once a round; between runs the pool serves its other users, first come first served.
async fn group_commit(
    writer: SqlitePool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<GroupMsg>,
    trouble: std::sync::Arc<super::trouble::Trouble>,
) {
    let mut kept: Option<Kept> = None;
    let mut carried: Option<GroupMsg> = None;
    let mut open = true;
    while open {
        let first = match carried.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => break,
            },
        };
        let mut conn = match writer.acquire().await {
            Ok(c) => c,
            Err(e) => {
                unavailable(gather(first, &mut rx), &e.into(), &trouble);
                continue;
            }
        };
        let mut handle = match conn.lock_handle().await {
            Ok(h) => h,
            Err(e) => {
                unavailable(gather(first, &mut rx), &e.into(), &trouble);
                continue;
            }
        };
        let db = match keep(&mut kept, handle.as_raw_handle().as_ptr()) {
            Ok(db) => db,
            Err(e) => {
                unavailable(gather(first, &mut rx), &e, &trouble);
                continue;
            }
        };
        let since = std::time::Instant::now();
        let mut next = Some(first);
        while let Some(first) = next.take() {
            let round = gather(first, &mut rx);
            for read in round.reads {
                read(db);
            }
            let changes = db.total_changes();
            let done = run_jobs(db, &round.jobs);
            // Writability: a failure that means the ledger cannot be written starts or extends
            // an episode; a commit that wrote something ends it (a claim that found nothing
            // commits without writing, also on a full disk).
            for d in &done {
                if let Err(e) = d {
                    trouble.failed(e);
                }
            }
            if db.total_changes() > changes && done.iter().any(|d| d.is_ok()) {
                trouble.succeeded();
            }
            if !db.is_autocommit() {
                // A transaction a failed rollback left open would make sqlx's next `BEGIN` fail.
                if let Err(e) = db.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "the group commit could not roll back an open transaction");
                }
            }
            for (job, d) in round.jobs.into_iter().zip(done) {
                let _ = job.reply.send(d);
            }
            if !round.closing.is_empty() {
                // The ledger closes: its statements go while the handle is still locked.
                kept = None;
                for ack in round.closing {
                    let _ = ack.send(());
                }
                break;
            }
            if since.elapsed() >= HOLD_MAX {
                break;
            }
            match tokio::time::timeout(LINGER, rx.recv()).await {
                Ok(Some(m)) => next = Some(m),
                Ok(None) => open = false,
                Err(_) => {}
            }
        }
        if !open {
            kept = None;
        }
        drop(handle);
        drop(conn);
        // A message that arrived after HOLD_MAX starts the next run (after the pool's waiters).
        if open {
            carried = rx.try_recv().ok();
        }
    }
    forget(&writer, &mut kept).await;
}

/// How long the writer stays checked out while work keeps coming, at most.
const HOLD_MAX: std::time::Duration = std::time::Duration::from_millis(20);
/// How long the group thread waits for more work before it gives the writer back.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// One round's messages: the first and whatever else is waiting (up to `GROUP_MAX` of each).
struct Round {
    jobs: Vec<GroupJob>,
    reads: Vec<HotRead>,
    closing: Vec<tokio::sync::oneshot::Sender<()>>,
}

fn gather(first: GroupMsg, rx: &mut tokio::sync::mpsc::UnboundedReceiver<GroupMsg>) -> Round {
    let mut round = Round {
        jobs: Vec::new(),
        reads: Vec::new(),
        closing: Vec::new(),
    };
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        match msg {
            GroupMsg::Write(j) => round.jobs.push(j),
            GroupMsg::Read(r) => round.reads.push(r),
            GroupMsg::Close(ack) => round.closing.push(ack),
        }
        if round.jobs.len() < GROUP_MAX && round.reads.len() < GROUP_MAX && round.closing.is_empty() {
            next = rx.try_recv().ok();
        }
    }
    round
}

/// The writer could not be checked out: every write of the round is answered with why; its
/// reads are dropped unrun (their callers hear that the ledger did not answer).
fn unavailable(round: Round, e: &LedgerError, trouble: &super::trouble::Trouble) {
    if !trouble.failed(e) {
        tracing::warn!(error = %e, "the ledger's writer is unavailable");
    }
    let why = e.to_string();
    for job in round.jobs {
        let _ = job.reply.send(Err(LedgerError::WriteFailed(why.clone())));
    }
    for ack in round.closing {
        let _ = ack.send(());
    }
}

/// The group thread's rusqlite connection on the writer's handle, kept from round to round so
/// each statement is compiled once, not once a round (compiling the inbox's 100-row insert and
/// the rest each round was most of an inbound page's time in the ledger).
struct Kept {
    /// The sqlite3 handle `db` was made for.
    raw: usize,
    db: rusqlite::Connection,
}

/// Prepared statements kept (the multi-row statements come in one text per row count).
const STATEMENTS: usize = 512;

/// The kept connection for the writer's handle `raw` (locked by the caller), made on first use.
fn keep(kept: &mut Option<Kept>, raw: *mut rusqlite::ffi::sqlite3) -> Result<&rusqlite::Connection> {
    if kept.as_ref().is_some_and(|k| k.raw != raw as usize) {
        // The pool has no lifetime or idle limit on its one connection, so this is not
        // expected. The old handle is still open: SQLite refuses to close a connection with
        // statements not finalized (sqlx's close then fails); finalizing them here is safe.
        tracing::error!("the ledger's writer connection was replaced; its statements are dropped");
        *kept = None;
    }
    Ok(match kept {
        Some(k) => &k.db,
        None => {
            // SAFETY: the handle is sqlx's open connection and rusqlite links the same SQLite
            // (libsqlite3-sys, one copy). `from_handle` does not take ownership: dropping `db`
            // finalizes the statements it prepared and closes nothing. It makes calls on the
            // handle only while the group thread holds it locked (sqlx's worker is kept off
            // it) — rounds, and dropping it in `group_commit` or `forget`. Between runs its
            // statements stay prepared, reset and idle (no lock, no open read), which SQLite
            // allows beside sqlx's own; and they keep the handle alive: `sqlite3_close`
            // refuses a connection with statements left.
            let db = unsafe { rusqlite::Connection::from_handle(raw) }?;
            db.set_prepared_statement_cache_capacity(STATEMENTS);
            &kept.insert(Kept { raw: raw as usize, db }).db
        }
    })
}

/// Finalize the kept statements (before the writer's pool closes its connection: sqlx's close
/// fails on a connection with statements left), with the handle locked as in a round.
async fn forget(writer: &SqlitePool, kept: &mut Option<Kept>) {
    if kept.is_none() {
        return;
    }
    match writer.acquire().await {
        Ok(mut conn) => {
            let handle = conn.lock_handle().await;
            *kept = None;
            drop(handle);
        }
        // Closed already: its close could not succeed with our statements left, so the
        // handle is still open and nothing else uses it.
        Err(_) => *kept = None,
    }
}

/// The round's writes, in one transaction if they can; else each in its own.
fn run_jobs(db: &rusqlite::Connection, jobs: &[GroupJob]) -> Vec<Result<GroupDone>> {
    if jobs.is_empty() {
        return Vec::new();
    }
    match run_group(db, jobs) {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(_) if jobs.len() > 1 => jobs
            .iter()
            .map(|job| run_group(db, std::slice::from_ref(job)).map(|mut d| d.remove(0)))
            .collect(),
        Err(e) => vec![Err(e)],
    }
}

/// `jobs` in one transaction: all committed, or none (the first error).
///
/// Inbound batches go first, every waiting one of a lane (live, bulk) as one multi-row batch:
/// concurrent webhook deliveries and polled pages share one insert per table, as well as the
/// commit. The round's jobs come from callers each waiting for its own answer, so any order
/// among them is one they could have run in.
fn run_group(db: &rusqlite::Connection, jobs: &[GroupJob]) -> Result<Vec<GroupDone>> {
    // Dropped without a commit, the transaction rolls back.
    let tx = rusqlite::Transaction::new_unchecked(db, rusqlite::TransactionBehavior::Immediate)?;
    let mut ingested: Vec<Option<GroupDone>> = jobs.iter().map(|_| None).collect();
    for lane in [false, true] {
        let mine: Vec<(usize, &[NewEvent])> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, job)| match &job.work {
                GroupWork::Ingest { events, bulk } if *bulk == lane => Some((i, events.as_slice())),
                _ => None,
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        let events: Vec<&NewEvent> = mine.iter().flat_map(|(_, evs)| evs.iter()).collect();
        let mut outcomes = Ledger::ingest_in(&tx, &events, lane)?.into_iter();
        for (i, evs) in mine {
            ingested[i] = Some(GroupDone {
                outcomes: outcomes.by_ref().take(evs.len()).collect(),
                ..Default::default()
            });
        }
    }
    let mut done = Vec::with_capacity(jobs.len());
    for (job, ingested) in jobs.iter().zip(ingested) {
        done.push(match &job.work {
            // Answered by its lane's batch above.
            GroupWork::Ingest { .. } => {
                ingested.ok_or_else(|| LedgerError::WriteFailed("an inbound batch missed its lane".into()))?
            }
            GroupWork::Claim(c) => GroupDone {
                claims: claim_in(&tx, c)?,
                ..Default::default()
            },
            GroupWork::Apply { cs, now_ms } => GroupDone {
                ids: apply_in(&tx, cs, *now_ms)?,
                ..Default::default()
            },
            GroupWork::Release { claim, owner } => {
                release_in(&tx, claim, owner)?;
                GroupDone::default()
            }
            GroupWork::BackfillPage(page) => GroupDone {
                page: Ledger::backfill_page_in(&tx, page)?,
                ..Default::default()
            },
        });
    }
    tx.commit()?;
    Ok(done)
}

impl Ledger {
    /// Hand `work` to the group commit and wait until it is committed (or failed).
    pub(super) async fn grouped(&self, work: GroupWork) -> Result<GroupDone> {
        let stopped = || LedgerError::WriteFailed("the ledger's group commit has stopped".into());
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.group
            .send(GroupMsg::Write(GroupJob { work, reply }))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A worker's read of its own record (or of the write gate's flags), run by the group
    /// thread on the writer's connection before its next transaction: it sees every committed
    /// write, as a read of its own on the writer did.
    pub(super) async fn hot<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let stopped = || {
            LedgerError::WriteFailed(
                "the ledger's group commit did not answer (stopped, or its writer was unavailable: see the log)".into(),
            )
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job: HotRead = Box::new(move |db| {
            let _ = reply.send(read(db));
        });
        self.group.send(GroupMsg::Read(job)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// [`Ledger::claim_lane`] inside the group's transaction.
fn claim_in(db: &rusqlite::Connection, c: &ClaimRequest) -> Result<Vec<Claim>> {
    let ClaimRequest {
        owner,
        n,
        now_ms,
        lease_ms,
        bulk_first,
    } = c;
    // Each lane is read in `ready_seq` order along `work_queue_claimable`; bulk-first takes
    // the bulk lane's head, then the live lane's. (An `ORDER BY ready_seq < ?5, ready_seq`
    // cannot use the index: it sorted the whole queue, 11 ms at 50,000 records.)
    let lane = |cond: &str| {
        format!(
            "SELECT * FROM (SELECT entity_key, ready_seq FROM work_queue \
             WHERE {cond} AND lease_until_ms <= ?3 AND not_before_ms <= ?3 ORDER BY ready_seq LIMIT ?4)"
        )
    };
    let pick = if *bulk_first {
        format!(
            "SELECT entity_key FROM (SELECT entity_key, ready_seq < ?5 AS live, ready_seq FROM ({} UNION ALL {})) \
             ORDER BY live, ready_seq LIMIT ?4",
            lane("ready_seq >= ?5"),
            lane("ready_seq < ?5")
        )
    } else {
        "SELECT entity_key FROM work_queue WHERE lease_until_ms <= ?3 AND not_before_ms <= ?3 \
         ORDER BY ready_seq LIMIT ?4"
            .to_string()
    };
    let sql = format!(
        "UPDATE work_queue SET lease_owner = ?1, lease_until_ms = ?2, replay_run = NULL WHERE entity_key IN ({pick}) \
         RETURNING entity_key, last_seq, replan, ready_seq >= ?5, failures, failing_since_ms"
    );
    let mut stmt = db.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![owner, now_ms + lease_ms, now_ms, n, BULK_SEQ_BASE], |r| {
        Ok(Claim {
            entity_key: r.get(0)?,
            last_seq: r.get(1)?,
            replan: r.get::<_, i64>(2)? != 0,
            bulk: r.get::<_, i64>(3)? != 0,
            failures: r.get(4)?,
            failing_since_ms: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// [`Ledger::release`] inside the group's transaction.
fn release_in(db: &rusqlite::Connection, claim: &Claim, owner: &str) -> Result<()> {
    let gone = db
        .prepare_cached(
            "DELETE FROM work_queue WHERE entity_key = ?1 AND last_seq = ?2 AND lease_owner = ?3 \
             AND replan = 0 \
             AND NOT EXISTS (SELECT 1 FROM inbox i INDEXED BY inbox_by_entity_state \
                             WHERE i.entity_key = ?1 AND i.state = 'pending' \
                             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.cause_inbox_id = i.id)) \
             AND NOT EXISTS (SELECT 1 FROM outbox WHERE entity_key = ?1 AND state = 'pending')",
        )?
        .execute(params![claim.entity_key, claim.last_seq, owner])?;
    if gone == 0 {
        db.prepare_cached(
            "UPDATE work_queue SET lease_owner = NULL, lease_until_ms = 0, parked_reason = NULL, \
             failures = 0, failing_since_ms = NULL WHERE entity_key = ?1 AND lease_owner = ?2",
        )?
        .execute(params![claim.entity_key, owner])?;
    }
    Ok(())
}

/// `?, ?, …` for `n` values.
pub(super) fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// [`Ledger::apply`] inside the group's transaction.
fn apply_in(db: &rusqlite::Connection, cs: &ChangeSet, now_ms: i64) -> Result<Vec<i64>> {
    // Events decided alike (state and reason) in one statement each.
    let mut alike: Vec<(&str, &str, Vec<i64>)> = Vec::new();
    for (id, state, reason) in &cs.event_states {
        let state = state.as_str();
        match alike.iter_mut().find(|(s, r, _)| *s == state && *r == reason) {
            Some((_, _, ids)) => ids.push(*id),
            None => alike.push((state, reason, vec![*id])),
        }
    }
    for (state, reason, ids) in &alike {
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE inbox SET state = ?, state_reason = ?, decided_at_ms = ? \
                 WHERE state = 'pending' AND id IN ({})",
                marks(chunk.len())
            );
            let mut values = vec![
                Sql::from(state.to_string()),
                Sql::from(reason.to_string()),
                Sql::from(now_ms),
            ];
            values.extend(chunk.iter().map(|id| Sql::from(*id)));
            db.prepare_cached(&sql)?.execute(params_from_iter(values))?;
        }
    }
    let mut op_ids = Vec::with_capacity(cs.new_ops.len());
    for op in &cs.new_ops {
        let values = serde_json::Value::Object(op.field_values.clone()).to_string();
        let id: Option<i64> = db
            .prepare_cached(
                "INSERT INTO outbox (entity_key, destination, op, target_id, idempotency_key, correlation_id, \
                 field_values, cause_inbox_id, created_at_ms, updated_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            )?
            .query_row(
                params![
                    cs.entity_key,
                    op.destination.as_str(),
                    op.op.as_str(),
                    op.target_id,
                    op.idempotency_key,
                    op.correlation_id,
                    values,
                    op.cause_inbox_id,
                    now_ms
                ],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = id {
            op_ids.push(id);
        }
    }
    for o in &cs.op_outcomes {
        db.prepare_cached(
            "UPDATE outbox SET state = ?2, attempts = attempts + 1, response_status = ?3, response = ?4, \
             result_id = COALESCE(?5, result_id), last_error = ?6, updated_at_ms = ?7, \
             done_at_ms = CASE WHEN ?2 = 'pending' THEN NULL ELSE ?7 END WHERE id = ?1",
        )?
        .execute(params![
            o.op_id,
            o.state,
            o.response_status.map(i64::from),
            o.response,
            o.result_id,
            o.error,
            now_ms
        ])?;
    }
    for chunk in cs.shadow.chunks(200) {
        // A field twice in one change set: the later row wins, as it would one by one.
        let sql = format!(
            "INSERT INTO shadow (entity_key, side, field, value, sync_seq, synced_at_ms) VALUES {} \
             ON CONFLICT (entity_key, side, field) DO UPDATE SET \
             value = excluded.value, sync_seq = excluded.sync_seq, synced_at_ms = excluded.synced_at_ms",
            vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut values = Vec::with_capacity(chunk.len() * 6);
        for s in chunk {
            values.extend([
                Sql::from(cs.entity_key.clone()),
                Sql::from(s.side.as_str().to_string()),
                Sql::from(s.field.clone()),
                Sql::from(s.value.clone()),
                Sql::from(s.sync_seq),
                Sql::from(now_ms),
            ]);
        }
        db.prepare_cached(&sql)?.execute(params_from_iter(values))?;
    }
    if let Some((object, crm_id, billing_id)) = &cs.identity {
        db.prepare_cached(
            "INSERT INTO identity_map (object, crm_id, billing_id, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (object, crm_id) DO UPDATE SET \
             billing_id = excluded.billing_id, updated_at_ms = excluded.updated_at_ms",
        )?
        .execute(params![object, crm_id, billing_id, now_ms])?;
    }
    for d in &cs.dead_letters {
        db.prepare_cached(
            "INSERT INTO dead_letters (outbox_id, entity_key, destination, error_class, error, request, \
             response, attempts, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            d.op_id,
            cs.entity_key,
            d.destination.as_str(),
            d.error_class,
            d.error,
            d.request,
            d.response,
            d.attempts,
            now_ms
        ])?;
    }
    let mut read_ids = Vec::with_capacity(cs.failed_reads.len());
    for (i, f) in cs.failed_reads.iter().enumerate() {
        // A read given up on: an operation that was never a write, dead-lettered at once, so
        // the dead-letter screen shows it with its error and a retry plans the record again.
        let key = format!(
            "{}:{}:{}:{now_ms}:{i}",
            f.op.as_str(),
            cs.entity_key,
            f.target_id.as_deref().unwrap_or("-")
        );
        let request = serde_json::json!({"op": f.op.as_str(), "target": f.target_id, "read": true}).to_string();
        let id: i64 = db
            .prepare_cached(
                "INSERT INTO outbox (entity_key, destination, op, target_id, idempotency_key, correlation_id, \
                 field_values, cause_inbox_id, state, attempts, last_error, response, created_at_ms, updated_at_ms, \
                 done_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, '', '{}', ?6, 'dead_lettered', ?7, ?8, ?9, ?10, ?10, ?10) \
                 RETURNING id",
            )?
            .query_row(
                params![
                    cs.entity_key,
                    f.destination.as_str(),
                    f.op.as_str(),
                    f.target_id,
                    key,
                    f.cause_inbox_id,
                    f.attempts,
                    f.error,
                    f.response,
                    now_ms
                ],
                |r| r.get(0),
            )?;
        read_ids.push(id);
        db.prepare_cached(
            "INSERT INTO dead_letters (outbox_id, entity_key, destination, error_class, error, request, \
             response, attempts, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            id,
            cs.entity_key,
            f.destination.as_str(),
            f.error_class,
            f.error,
            request,
            f.response,
            f.attempts,
            now_ms
        ])?;
    }
    if let Some(r) = &cs.review {
        db.prepare_cached(
            "INSERT INTO review_queue (entity_key, reason, fields, created_at_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (entity_key) WHERE resolved_at_ms IS NULL DO UPDATE SET reason = excluded.reason, \
             fields = excluded.fields",
        )?
        .execute(params![cs.entity_key, r.reason, r.fields.to_string(), now_ms])?;
    }
    for cause in &cs.settle_causes {
        db.prepare_cached(
            "UPDATE inbox SET state = 'applied', decided_at_ms = ?2 WHERE id = ?1 AND state = 'pending' \
             AND NOT EXISTS (SELECT 1 FROM outbox WHERE cause_inbox_id = ?1 AND state = 'pending')",
        )?
        .execute(params![cause, now_ms])?;
    }
    if let Some(replan) = cs.replan {
        db.prepare_cached("UPDATE work_queue SET replan = ?2 WHERE entity_key = ?1")?
            .execute(params![cs.entity_key, i64::from(replan)])?;
    }
    for chunk in cs.audit.chunks(100) {
        let sql = format!(
            "INSERT INTO audit (at_ms, entity_key, inbox_id, outbox_id, actor, action, rule, contract_version, detail) \
             VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut values = Vec::with_capacity(chunk.len() * 9);
        for a in chunk {
            let outbox_id = match (a.outbox_id, op_ids.first()) {
                (Some(id), _) => Some(id),
                (None, Some(first)) if a.action.starts_with("plan") => Some(*first),
                // A read given up: its audit row belongs to its dead-lettered operation (the
                // dead letter's history shows it).
                (None, _) if a.action == "dead_letter" => read_ids.first().copied(),
                _ => None,
            };
            values.extend([
                Sql::from(now_ms),
                Sql::from(cs.entity_key.clone()),
                Sql::from(a.inbox_id),
                Sql::from(outbox_id),
                Sql::from(a.actor.clone()),
                Sql::from(a.action.clone()),
                Sql::from(a.rule.clone()),
                Sql::from(cs.contract_version.clone()),
                Sql::from(a.detail.to_string()),
            ]);
        }
        db.prepare_cached(&sql)?.execute(params_from_iter(values))?;
    }
    Ok(op_ids)
}

/// An outbox row, as [`OP_COLUMNS`] lists its columns.
pub(super) fn op_from_row(r: &rusqlite::Row<'_>) -> Result<super::OutboxOp> {
    Ok(super::OutboxOp {
        id: r.get(0)?,
        entity_key: r.get(1)?,
        destination: side_of(&r.get::<_, String>(2)?)?,
        op: super::OpKind::read(&r.get::<_, String>(3)?)?,
        target_id: r.get(4)?,
        idempotency_key: r.get(5)?,
        correlation_id: r.get(6)?,
        field_values: super::json_map(&r.get::<_, String>(7)?)?,
        cause_inbox_id: r.get(8)?,
        state: r.get(9)?,
        attempts: r.get(10)?,
        result_id: r.get(11)?,
    })
}

/// The columns [`op_from_row`] reads, in its order.
pub(super) const OP_COLUMNS: &str = "id, entity_key, destination, op, target_id, idempotency_key, \
    correlation_id, field_values, cause_inbox_id, state, attempts, result_id";

/// Every row `sql` returns for `params`, each through `f` (the statement cached for the round).
pub(super) fn rows<T>(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = db.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}
