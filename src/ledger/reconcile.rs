//! Reconciliation runs (issue 6): the run row with its paging checkpoint, the billing
//! customers a run has seen (for the rules across pages) and the mismatches it found. A page's
//! findings and the cursor past it are written in one transaction, so a crashed or cancelled
//! run resumes at the next unread page.

use sqlx::Row;

use super::{Ledger, LedgerError, Result, WriteTx};
pub use crate::api::{MismatchRow, NewMismatch, ReconRunRow};

/// A billing customer a run paged through.
#[derive(Debug, Clone)]
pub struct SeenCustomer {
    pub billing_id: String,
    pub origin_key: Option<String>,
    pub origin_value: Option<String>,
    pub fields: serde_json::Value,
}

/// One page's worth of progress.
#[derive(Debug, Clone, Default)]
pub struct ReconPage<'a> {
    pub phase: &'a str,
    pub next_cursor: Option<&'a str>,
    pub compared: i64,
    pub seen: &'a [SeenCustomer],
    pub mismatches: &'a [NewMismatch],
    /// The CRM records of the page as counterparts: (origin key, CRM id, billing id the
    /// record is linked to or names). Seen customers with that billing id or carrying that
    /// origin marker are marked matched (durably, with the checkpoint).
    pub matched: &'a [(String, String, Option<String>)],
}

/// A billing customer a run saw that no CRM record of the run linked to or named.
#[derive(Debug, Clone, PartialEq)]
pub struct UnmatchedCustomer {
    pub billing_id: String,
    pub origin_key: Option<String>,
    pub origin_value: Option<String>,
    /// The identity map's link of this billing id: (object, CRM id).
    pub linked: Option<(String, String)>,
}

const RUN_COLUMNS: &str = "id, started_at_ms, finished_at_ms, window_days, trigger, state, phase, cursor, \
                           pages_read, compared, duration_ms, log, error, \
                           (SELECT COUNT(DISTINCT entity_key) FROM recon_mismatches m WHERE m.run_id = recon_runs.id AND m.kind != 'missed_event')";

fn run_of(r: &sqlx::sqlite::SqliteRow) -> Result<ReconRunRow> {
    let log: String = r.try_get(11)?;
    Ok(ReconRunRow {
        id: r.try_get(0)?,
        started_at_ms: r.try_get(1)?,
        finished_at_ms: r.try_get(2)?,
        window_days: r.try_get(3)?,
        trigger: r.try_get(4)?,
        state: r.try_get(5)?,
        phase: r.try_get(6)?,
        cursor: r.try_get(7)?,
        pages_read: r.try_get(8)?,
        compared: r.try_get(9)?,
        duration_ms: r.try_get(10)?,
        log: serde_json::from_str(&log).unwrap_or_default(),
        error: r.try_get(12)?,
        mismatched_records: r.try_get(13)?,
    })
}

impl Ledger {
    /// Start a run.
    pub async fn recon_start(&self, window_days: i64, trigger: &str, now_ms: i64) -> Result<ReconRunRow> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO recon_runs (started_at_ms, window_days, trigger) VALUES (?1, ?2, ?3) RETURNING id",
        )
        .bind(now_ms)
        .bind(window_days)
        .bind(trigger)
        .fetch_one(&self.writer)
        .await?;
        self.recon_run(id).await?.ok_or_else(|| LedgerError::Corrupt {
            what: "recon_runs",
            detail: format!("run {id} vanished after insert"),
        })
    }

    /// The unfinished run a crash or cancel left behind, if any.
    pub async fn recon_unfinished(&self) -> Result<Option<ReconRunRow>> {
        let r = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE state = 'running' ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&self.writer)
        .await?;
        r.as_ref().map(run_of).transpose()
    }

    pub async fn recon_run(&self, id: i64) -> Result<Option<ReconRunRow>> {
        let r = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM recon_runs WHERE id = ?1"))
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        r.as_ref().map(run_of).transpose()
    }

    /// The newest finished run.
    pub async fn recon_last_finished(&self) -> Result<Option<ReconRunRow>> {
        let r = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE state = 'finished' ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&self.reader)
        .await?;
        r.as_ref().map(run_of).transpose()
    }

    /// Take (or renew) the lease on a run for `owner` until `until_ms`. `false` when another
    /// owner holds an unexpired lease.
    pub async fn recon_lease(&self, run_id: i64, owner: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE recon_runs SET lease_owner = ?2, lease_until_ms = ?4 \
             WHERE id = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until_ms <= ?3)",
        )
        .bind(run_id)
        .bind(owner)
        .bind(now_ms)
        .bind(until_ms)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Give up `owner`'s lease on a run (it stopped resumably: cancelled or failed).
    pub async fn recon_release(&self, run_id: i64, owner: &str) -> Result<()> {
        sqlx::query("UPDATE recon_runs SET lease_owner = NULL, lease_until_ms = 0 WHERE id = ?1 AND lease_owner = ?2")
            .bind(run_id)
            .bind(owner)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Record one compared page: what was seen, the mismatches and the cursor past the page,
    /// in one transaction.
    pub async fn recon_page(&self, run_id: i64, page: &ReconPage<'_>, now_ms: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        for s in page.seen {
            sqlx::query(
                "INSERT INTO recon_seen (run_id, billing_id, origin_key, origin_value, fields) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (run_id, billing_id) DO NOTHING",
            )
            .bind(run_id)
            .bind(&s.billing_id)
            .bind(&s.origin_key)
            .bind(&s.origin_value)
            .bind(s.fields.to_string())
            .execute(&mut *tx)
            .await?;
        }
        // Two statements, so each uses an index (the key; the origin index).
        for (origin_key, crm_id, billing_id) in page.matched {
            if let Some(b) = billing_id {
                sqlx::query("UPDATE recon_seen SET matched = 1 WHERE run_id = ?1 AND billing_id = ?2 AND matched = 0")
                    .bind(run_id)
                    .bind(b)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE recon_seen SET matched = 1 WHERE run_id = ?1 AND origin_value = ?3 AND origin_key = ?2 AND matched = 0",
            )
            .bind(run_id)
            .bind(origin_key)
            .bind(crm_id)
            .execute(&mut *tx)
            .await?;
        }
        Self::insert_mismatches(&mut tx, run_id, page.mismatches, now_ms).await?;
        sqlx::query(
            "UPDATE recon_runs SET phase = ?2, cursor = ?3, pages_read = pages_read + 1, \
             compared = compared + ?4 WHERE id = ?1",
        )
        .bind(run_id)
        .bind(page.phase)
        .bind(page.next_cursor)
        .bind(page.compared)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_mismatches(tx: &mut WriteTx, run_id: i64, ms: &[NewMismatch], now_ms: i64) -> Result<()> {
        for m in ms {
            sqlx::query(
                "INSERT INTO recon_mismatches (run_id, entity_key, kind, name, crm_value, billing_value, owner, detail, first_seen_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, COALESCE((SELECT p.first_seen_ms FROM recon_mismatches p \
                   WHERE p.entity_key = ?2 AND p.kind = ?3 AND p.name = ?4 AND p.run_id = \
                   (SELECT MAX(id) FROM recon_runs WHERE id < ?1 AND state = 'finished')), ?9)) \
                 ON CONFLICT (run_id, entity_key, kind, name) DO NOTHING",
            )
            .bind(run_id)
            .bind(&m.entity_key)
            .bind(&m.kind)
            .bind(&m.name)
            .bind(&m.crm_value)
            .bind(&m.billing_value)
            .bind(&m.owner)
            .bind(&m.detail)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Record mismatches found outside a page (the rules over everything seen), add
    /// `compared` records (billing-only customers the rules examined), and move the run to
    /// `phase`. A run already in `phase` (a resume after this committed) counts nothing twice.
    pub async fn recon_phase(
        &self,
        run_id: i64,
        phase: &str,
        compared: i64,
        ms: &[NewMismatch],
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        Self::insert_mismatches(&mut tx, run_id, ms, now_ms).await?;
        sqlx::query(
            "UPDATE recon_runs SET compared = compared + CASE WHEN phase = ?2 THEN 0 ELSE ?3 END, \
             phase = ?2, cursor = NULL WHERE id = ?1",
        )
        .bind(run_id)
        .bind(phase)
        .bind(compared)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn recon_note(&self, run_id: i64, note: &str) -> Result<()> {
        sqlx::query("UPDATE recon_runs SET log = json_insert(log, '$[#]', ?2) WHERE id = ?1")
            .bind(run_id)
            .bind(note)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Close a run (`finished` or `failed`); the seen customers are dropped.
    pub async fn recon_finish(
        &self,
        run_id: i64,
        state: &str,
        error: Option<&str>,
        duration_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE recon_runs SET state = ?2, error = ?3, duration_ms = ?4, finished_at_ms = ?5, \
             lease_owner = NULL, lease_until_ms = 0 WHERE id = ?1",
        )
        .bind(run_id)
        .bind(state)
        .bind(error)
        .bind(duration_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM recon_seen WHERE run_id = ?1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A billing customer the run saw, by id: its fields.
    pub async fn recon_seen(&self, run_id: i64, billing_id: &str) -> Result<Option<serde_json::Value>> {
        let raw: Option<String> =
            sqlx::query_scalar("SELECT fields FROM recon_seen WHERE run_id = ?1 AND billing_id = ?2")
                .bind(run_id)
                .bind(billing_id)
                .fetch_optional(&self.writer)
                .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Billing customers the run saw carrying origin marker `key` = `value`.
    pub async fn recon_by_origin(&self, run_id: i64, key: &str, value: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT billing_id FROM recon_seen WHERE run_id = ?1 AND origin_key = ?2 AND origin_value = ?3 ORDER BY billing_id",
        )
        .bind(run_id)
        .bind(key)
        .bind(value)
        .fetch_all(&self.writer)
        .await?)
    }

    /// Seen customers no CRM page marked matched, with their identity link if any.
    pub async fn recon_unmatched(&self, run_id: i64) -> Result<Vec<UnmatchedCustomer>> {
        let rows = sqlx::query(
            "SELECT s.billing_id, s.origin_key, s.origin_value, \
               (SELECT i.object FROM identity_map i WHERE i.billing_id = s.billing_id ORDER BY i.object LIMIT 1), \
               (SELECT i.crm_id FROM identity_map i WHERE i.billing_id = s.billing_id ORDER BY i.object LIMIT 1) \
             FROM recon_seen s WHERE s.run_id = ?1 AND s.matched = 0 ORDER BY s.billing_id",
        )
        .bind(run_id)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| {
                let object: Option<String> = r.try_get(3)?;
                let crm_id: Option<String> = r.try_get(4)?;
                Ok(UnmatchedCustomer {
                    billing_id: r.try_get(0)?,
                    origin_key: r.try_get(1)?,
                    origin_value: r.try_get(2)?,
                    linked: object.zip(crm_id),
                })
            })
            .collect()
    }

    /// Origin markers two or more seen customers carry: (key, value, billing ids).
    pub async fn recon_duplicate_origins(&self, run_id: i64) -> Result<Vec<(String, String, Vec<String>)>> {
        let rows = sqlx::query(
            "SELECT origin_key, origin_value, group_concat(billing_id, ',') FROM \
             (SELECT origin_key, origin_value, billing_id FROM recon_seen WHERE run_id = ?1 AND origin_value IS NOT NULL ORDER BY billing_id) \
             GROUP BY origin_key, origin_value HAVING COUNT(*) > 1 ORDER BY origin_value",
        )
        .bind(run_id)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| {
                let ids: String = r.try_get(2)?;
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    ids.split(',').map(str::to_string).collect(),
                ))
            })
            .collect()
    }

    /// A run's mismatches, in the order found.
    pub async fn recon_mismatches(&self, run_id: i64) -> Result<Vec<MismatchRow>> {
        let rows = sqlx::query(
            "SELECT entity_key, kind, name, crm_value, billing_value, owner, detail, first_seen_ms \
             FROM recon_mismatches WHERE run_id = ?1 ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MismatchRow {
                    m: NewMismatch {
                        entity_key: r.try_get(0)?,
                        kind: r.try_get(1)?,
                        name: r.try_get(2)?,
                        crm_value: r.try_get(3)?,
                        billing_value: r.try_get(4)?,
                        owner: r.try_get(5)?,
                        detail: r.try_get(6)?,
                    },
                    first_seen_ms: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// Finished runs, newest first (at most `limit`).
    pub async fn recon_finished_runs(&self, limit: i64) -> Result<Vec<ReconRunRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE state = 'finished' ORDER BY id DESC LIMIT ?1"
        ))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(run_of).collect()
    }

    /// One page of a run's mismatches in the order found, after mismatch id `after` (for
    /// exports that stream): (mismatch id, row).
    pub async fn recon_mismatch_page(&self, run_id: i64, after: i64, limit: i64) -> Result<Vec<(i64, MismatchRow)>> {
        let rows = sqlx::query(
            "SELECT entity_key, kind, name, crm_value, billing_value, owner, detail, first_seen_ms, id \
             FROM recon_mismatches WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(8)?,
                    MismatchRow {
                        m: NewMismatch {
                            entity_key: r.try_get(0)?,
                            kind: r.try_get(1)?,
                            name: r.try_get(2)?,
                            crm_value: r.try_get(3)?,
                            billing_value: r.try_get(4)?,
                            owner: r.try_get(5)?,
                            detail: r.try_get(6)?,
                        },
                        first_seen_ms: r.try_get(7)?,
                    },
                ))
            })
            .collect()
    }

    /// Inbound events from `source` about this record ever recorded (any state).
    pub async fn deliveries(&self, entity_key: &str, source: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE entity_key = ?1 AND source = ?2")
                .bind(entity_key)
                .bind(source)
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// Inbound events from `source` about this record still waiting for a decision.
    pub async fn pending_deliveries(&self, entity_key: &str, source: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox INDEXED BY inbox_by_entity_state \
                 WHERE entity_key = ?1 AND source = ?2 AND state = 'pending'",
        )
        .bind(entity_key)
        .bind(source)
        .fetch_one(&self.reader)
        .await?)
    }

    /// Put records in the review queue (a reconciliation found them; a person decides).
    /// Records already waiting stay as they are. Returns how many were added.
    pub async fn send_to_review(
        &self,
        items: &[(String, String, serde_json::Value)],
        by: &str,
        now_ms: i64,
    ) -> Result<usize> {
        let mut tx = self.begin().await?;
        let mut added = 0;
        for (key, reason, fields) in items {
            let n = sqlx::query(
                "INSERT INTO review_queue (entity_key, reason, fields, created_at_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .bind(reason)
            .bind(fields.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                added += 1;
                sqlx::query(
                    "INSERT INTO audit (at_ms, entity_key, actor, action, rule, detail) VALUES (?1, ?2, ?3, 'reconcile_review', 'reconciliation', ?4)",
                )
                .bind(now_ms)
                .bind(key)
                .bind(by)
                .bind(serde_json::json!({"reason": reason}).to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(added)
    }
}

impl ReconRunRow {
    /// The figures `status` and the overview show. The mismatch rate counts records with a
    /// field or rule mismatch per record compared (missed events are reported apart).
    pub fn summary(&self) -> crate::api::ReconciliationRun {
        crate::api::ReconciliationRun {
            finished_at_ms: self.finished_at_ms.unwrap_or(self.started_at_ms),
            compared: self.compared,
            mismatched: self.mismatched_records,
            mismatch_rate: if self.compared > 0 {
                self.mismatched_records as f64 / self.compared as f64
            } else {
                0.0
            },
        }
    }
}
