//! Backfill runs and migration mode. A backfill page is made durable in one transaction with
//! its stream's cursor (`watermarks` row `backfill:{stream}`) and the run's counts, so the
//! cursor never gets ahead of what the inbox holds and a restart reads no finished page.

use sqlx::Row;

use super::group::GroupWork;
use super::{IngestOutcome, Ledger, LedgerError, NewEvent, Result};
use crate::api::{BackfillRun, MigrationMode, ValidationReport};

/// Backfill cursors are named `backfill:{stream}`, e.g. `backfill:crm:contacts`.
pub const BACKFILL_PREFIX: &str = "backfill:";

const RUN_COLUMNS: &str = "id, systems, state, streams_done, pages, records, accepted, duplicates, total_known, \
     error, started_by, started_at_ms, updated_at_ms, finished_at_ms, migration_id, validation";

fn run_of(r: &sqlx::sqlite::SqliteRow) -> Result<BackfillRun> {
    let done: String = r.try_get(3)?;
    let validation: Option<String> = r.try_get(15)?;
    let validation = match validation {
        Some(v) => Some(serde_json::from_str(&v).map_err(|e| LedgerError::Corrupt {
            what: "backfill_runs.validation",
            detail: e.to_string(),
        })?),
        None => None,
    };
    Ok(BackfillRun {
        id: r.try_get(0)?,
        systems: r.try_get(1)?,
        state: r.try_get(2)?,
        streams_done: done.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        pages: r.try_get(4)?,
        records: r.try_get(5)?,
        accepted: r.try_get(6)?,
        duplicates: r.try_get(7)?,
        total_known: r.try_get(8)?,
        error: r.try_get(9)?,
        started_by: r.try_get(10)?,
        started_at_ms: r.try_get(11)?,
        updated_at_ms: r.try_get(12)?,
        finished_at_ms: r.try_get(13)?,
        migration_id: r.try_get(14)?,
        validation,
    })
}

const MODE_COLUMNS: &str = "id, authority, object, reason, started_by, started_at_ms, finished_by, finished_at_ms";

fn mode_of(r: &sqlx::sqlite::SqliteRow) -> Result<MigrationMode> {
    Ok(MigrationMode {
        id: r.try_get(0)?,
        authority: r.try_get(1)?,
        object: r.try_get(2)?,
        reason: r.try_get(3)?,
        started_by: r.try_get(4)?,
        started_at_ms: r.try_get(5)?,
        finished_by: r.try_get(6)?,
        finished_at_ms: r.try_get(7)?,
        phases: Vec::new(),
    })
}

/// What starting a backfill found.
#[derive(Debug, Clone)]
pub struct BackfillStart {
    pub run: BackfillRun,
    /// An unfinished run (cancelled, or running when its process died) was resumed.
    pub resumed: bool,
}

/// One backfill page to make durable (see [`Ledger::backfill_page`]).
pub(super) struct PageRequest {
    run_id: i64,
    stream: String,
    events: Vec<NewEvent>,
    records: i64,
    next: Option<String>,
    now_ms: i64,
}

impl Ledger {
    /// Start a backfill of `systems`, or resume the unfinished one (a run left `running` by
    /// a process that died, `cancelled`, or `failed` on a provider error) at its cursors: one
    /// unfinished run at a time. Audited.
    pub async fn backfill_start(
        &self,
        systems: &str,
        by: &str,
        migration_id: Option<i64>,
        now_ms: i64,
    ) -> Result<BackfillStart> {
        let mut tx = self.begin().await?;
        let open: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, systems FROM backfill_runs WHERE state IN ('running', 'cancelled', 'failed') \
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let (id, resumed) = match open {
            Some((id, open_systems)) => {
                if open_systems != systems {
                    return Err(LedgerError::Conflict(format!(
                        "backfill run {id} of {open_systems} is unfinished: resume it with --system {open_systems}, \
                         or let it finish first"
                    )));
                }
                sqlx::query(
                    "UPDATE backfill_runs SET state = 'running', error = NULL, updated_at_ms = ?2 WHERE id = ?1",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                (id, true)
            }
            None => {
                // A fresh run starts every stream from its first page.
                sqlx::query("DELETE FROM watermarks WHERE name LIKE 'backfill:%'")
                    .execute(&mut *tx)
                    .await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO backfill_runs (systems, state, started_by, started_at_ms, updated_at_ms, migration_id) \
                     VALUES (?1, 'running', ?2, ?3, ?3, ?4) RETURNING id",
                )
                .bind(systems)
                .bind(by)
                .bind(now_ms)
                .bind(migration_id)
                .fetch_one(&mut *tx)
                .await?;
                (id, false)
            }
        };
        Self::audit_operator(
            &mut tx,
            now_ms,
            None,
            None,
            by,
            if resumed { "backfill_resume" } else { "backfill_start" },
            serde_json::json!({ "run": id, "systems": systems, "migration": migration_id }),
        )
        .await?;
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM backfill_runs WHERE id = ?1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let run = run_of(&row)?;
        tx.commit().await?;
        Ok(BackfillStart { run, resumed })
    }

    /// The cursor (next page) of a backfill stream, if a page of it was made durable.
    pub async fn backfill_cursor(&self, stream: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT cursor FROM watermarks WHERE name = ?1")
            .bind(format!("{BACKFILL_PREFIX}{stream}"))
            .fetch_optional(&self.writer)
            .await?)
    }

    /// Make one page durable: its events into the inbox (new records queued as bulk work),
    /// the stream's cursor moved to `next` (the stream marked done when `None`) and the
    /// run's counts — one transaction (the group commit's). Refused when the run is no
    /// longer running (cancelled from another process): nothing of the page is kept.
    pub async fn backfill_page(
        &self,
        run_id: i64,
        stream: &str,
        events: &[NewEvent],
        records: i64,
        next: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<(usize, usize)>> {
        let page = PageRequest {
            run_id,
            stream: stream.to_string(),
            events: events.to_vec(),
            records,
            next: next.map(str::to_string),
            now_ms,
        };
        Ok(self.grouped(GroupWork::BackfillPage(Box::new(page))).await?.page)
    }

    /// [`Ledger::backfill_page`] inside the group's transaction.
    pub(super) fn backfill_page_in(db: &rusqlite::Connection, p: &PageRequest) -> Result<Option<(usize, usize)>> {
        let state = super::group::rows(db, "SELECT state FROM backfill_runs WHERE id = ?1", [p.run_id], |r| {
            Ok(r.get::<_, String>(0)?)
        })?;
        if state.first().map(String::as_str) != Some("running") {
            return Ok(None);
        }
        let events: Vec<&NewEvent> = p.events.iter().collect();
        let outcomes = Self::ingest_in(db, &events, true)?;
        let accepted = outcomes
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Inserted(_)))
            .count();
        let duplicates = outcomes.len() - accepted;
        let name = format!("{BACKFILL_PREFIX}{}", p.stream);
        match &p.next {
            Some(cursor) => {
                db.prepare_cached(
                    "INSERT INTO watermarks (name, cursor, updated_at_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, updated_at_ms = excluded.updated_at_ms",
                )?
                .execute(rusqlite::params![name, cursor, p.now_ms])?;
            }
            None => {
                db.prepare_cached("DELETE FROM watermarks WHERE name = ?1")?
                    .execute([&name])?;
                db.prepare_cached(
                    "UPDATE backfill_runs SET streams_done = CASE WHEN streams_done = '' THEN ?2 \
                     ELSE streams_done || ',' || ?2 END WHERE id = ?1",
                )?
                .execute(rusqlite::params![p.run_id, p.stream])?;
            }
        }
        db.prepare_cached(
            "UPDATE backfill_runs SET pages = pages + 1, records = records + ?2, accepted = accepted + ?3, \
             duplicates = duplicates + ?4, updated_at_ms = ?5 WHERE id = ?1",
        )?
        .execute(rusqlite::params![
            p.run_id,
            p.records,
            accepted as i64,
            duplicates as i64,
            p.now_ms
        ])?;
        Ok(Some((accepted, duplicates)))
    }

    /// Add a provider-reported total of `stream` to the run, once per stream and run (a
    /// stream restarted before its first page was durable does not count twice).
    pub async fn backfill_add_total(&self, run_id: i64, stream: &str, total: i64, now_ms: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let first = sqlx::query(
            "INSERT INTO watermarks (name, cursor, updated_at_ms) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(format!("{BACKFILL_PREFIX}{stream}#total"))
        .bind(total.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if first > 0 {
            sqlx::query("UPDATE backfill_runs SET total_known = COALESCE(total_known, 0) + ?2 WHERE id = ?1")
                .bind(run_id)
                .bind(total)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// End a running run: `done` or `failed` (with the error). Audited.
    pub async fn backfill_finish(&self, run_id: i64, state: &str, error: Option<&str>, now_ms: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE backfill_runs SET state = ?2, error = ?3, updated_at_ms = ?4, \
             finished_at_ms = CASE WHEN ?2 = 'done' THEN ?4 ELSE finished_at_ms END \
             WHERE id = ?1 AND state = 'running'",
        )
        .bind(run_id)
        .bind(state)
        .bind(error)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            None,
            None,
            "engine",
            "backfill_end",
            serde_json::json!({ "run": run_id, "state": state, "error": error }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancel the running backfill (from any process: the run stops before its next page;
    /// start again resumes it at its cursor). Returns the run cancelled, if one was running.
    pub async fn backfill_cancel(&self, by: &str, now_ms: i64) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE backfill_runs SET state = 'cancelled', updated_at_ms = ?1 WHERE state = 'running' RETURNING id",
        )
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            Self::audit_operator(
                &mut tx,
                now_ms,
                None,
                None,
                by,
                "backfill_cancel",
                serde_json::json!({ "run": id }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// A backfill run by id.
    pub async fn backfill_run(&self, id: i64) -> Result<Option<BackfillRun>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM backfill_runs WHERE id = ?1"))
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(run_of).transpose()
    }

    /// Backfill events received since `since_ms` that no worker has decided yet: records a
    /// backfill listed that are not synced.
    pub async fn backfill_unsynced(&self, since_ms: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox WHERE state = 'pending' AND via = 'backfill' AND received_at_ms >= ?1",
        )
        .bind(since_ms)
        .fetch_one(&self.reader)
        .await?)
    }

    /// The latest backfill run.
    pub async fn latest_backfill(&self) -> Result<Option<BackfillRun>> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM backfill_runs ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(run_of).transpose()
    }

    /// Store a phase's validation report on its run.
    pub async fn backfill_validation(&self, run_id: i64, report: &ValidationReport) -> Result<()> {
        let json = serde_json::to_string(report).map_err(|e| LedgerError::Corrupt {
            what: "validation report",
            detail: e.to_string(),
        })?;
        sqlx::query("UPDATE backfill_runs SET validation = ?2 WHERE id = ?1")
            .bind(run_id)
            .bind(json)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------------- migration mode

    /// Enter migration mode: `authority` (`crm` or `billing`) wins for `object` (or every
    /// object); writes into it are frozen by the write gate. One mode at a time. Audited.
    pub async fn migration_start(
        &self,
        authority: &str,
        object: Option<&str>,
        reason: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<MigrationMode> {
        let mut tx = self.begin().await?;
        let active: Option<i64> =
            sqlx::query_scalar("SELECT id FROM migrations_mode WHERE finished_at_ms IS NULL LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = active {
            return Err(LedgerError::Conflict(format!(
                "migration {id} is active: finish it first (`driftless migration finish`)"
            )));
        }
        let row = sqlx::query(&format!(
            "INSERT INTO migrations_mode (authority, object, reason, started_by, started_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {MODE_COLUMNS}"
        ))
        .bind(authority)
        .bind(object)
        .bind(reason)
        .bind(by)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let mode = mode_of(&row)?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            None,
            None,
            by,
            "migration_start",
            serde_json::json!({ "migration": mode.id, "authority": authority, "object": object, "reason": reason }),
        )
        .await?;
        tx.commit().await?;
        Ok(mode)
    }

    /// Leave migration mode: normal ownership again, frozen writes become claimable at once.
    /// Returns the mode finished, if one was active. Audited.
    pub async fn migration_finish(&self, by: &str, reason: Option<&str>, now_ms: i64) -> Result<Option<MigrationMode>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE migrations_mode SET finished_by = ?1, finished_at_ms = ?2 WHERE finished_at_ms IS NULL \
             RETURNING {MODE_COLUMNS}"
        ))
        .bind(by)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mode = mode_of(&row)?;
        sqlx::query("UPDATE work_queue SET not_before_ms = 0, parked_reason = NULL WHERE parked_reason = ?1")
            .bind(super::gate::MIGRATION_FREEZE.reason)
            .execute(&mut *tx)
            .await?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            None,
            None,
            by,
            "migration_finish",
            serde_json::json!({ "migration": mode.id, "reason": reason }),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(mode))
    }

    /// The active migration mode with its phases (read on the writer, so a mode started a
    /// moment ago by another process is seen).
    pub async fn migration_active(&self) -> Result<Option<MigrationMode>> {
        self.migration_one("WHERE finished_at_ms IS NULL LIMIT 1").await
    }

    /// The active migration's authority and object, for the planner.
    pub async fn migration_authority(&self) -> Result<Option<(crate::contract::Side, Option<String>)>> {
        let row = self
            .hot(|db| {
                let found = super::group::rows(
                    db,
                    "SELECT authority, object FROM migrations_mode WHERE finished_at_ms IS NULL LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
                )?;
                Ok(found.into_iter().next())
            })
            .await?;
        row.map(|(a, o)| {
            crate::contract::Side::parse(&a)
                .map(|s| (s, o))
                .ok_or_else(|| LedgerError::Corrupt {
                    what: "migrations_mode.authority",
                    detail: a,
                })
        })
        .transpose()
    }

    /// The latest migration (active or finished) with its phases.
    pub async fn migration_latest(&self) -> Result<Option<MigrationMode>> {
        self.migration_one("ORDER BY id DESC LIMIT 1").await
    }

    /// One migration mode (chosen by `tail`, a fixed SQL suffix) with its phases, read on the
    /// writer.
    async fn migration_one(&self, tail: &'static str) -> Result<Option<MigrationMode>> {
        let row = sqlx::query(&format!("SELECT {MODE_COLUMNS} FROM migrations_mode {tail}"))
            .fetch_optional(&self.writer)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut mode = mode_of(&row)?;
        mode.phases = self.migration_phases(mode.id).await?;
        Ok(Some(mode))
    }

    async fn migration_phases(&self, id: i64) -> Result<Vec<BackfillRun>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM backfill_runs WHERE migration_id = ?1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(run_of).collect()
    }

    /// Records with work the engine can do now: queued, not held by a pause, observe mode or
    /// a migration freeze.
    pub async fn workable_queue_depth(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM work_queue WHERE parked_reason IS NULL OR parked_reason NOT IN (?1, ?2, ?3)",
        )
        .bind(super::gate::PAUSED.reason)
        .bind(super::gate::OBSERVING.reason)
        .bind(super::gate::MIGRATION_FREEZE.reason)
        .fetch_one(&self.writer)
        .await?)
    }

    /// Identity links of `object`: (CRM id, billing id).
    pub async fn identity_links(&self, object: &str) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT crm_id, billing_id FROM identity_map WHERE object = ?1 AND billing_id IS NOT NULL ORDER BY crm_id",
        )
        .bind(object)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The latest backfill run and the active migration, into a status.
    pub(super) async fn backfill_status(&self, st: &mut crate::api::LedgerStatus) -> Result<()> {
        st.backfill = self.latest_backfill().await?;
        st.migration = self.migration_active().await?;
        Ok(())
    }
}
