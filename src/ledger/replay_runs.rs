//! Replay runs (what a replay queued: progress, cancel) and the audit log's listing.
//!
//! The cancel invariant: `work_queue.replay_run` is set only on a queue row a replay created
//! for a record that had no work queued, and is cleared by everything that adds work to the
//! row (`ingest_in`, `enqueue_replan_lane`) and by every claim (`claim_lane`,
//! `claim_first_op`). So a row still carrying the run's id holds nothing but that run's
//! not-yet-claimed "plan again" mark, and deleting it never drops live work.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Ledger, Result};
use crate::api::{AuditEntry, AuditFilter, ReplayRun};

impl Ledger {
    /// Queue these records to be planned again as one replay run (bulk work: live events go
    /// first), audited per record, in one transaction. Returns the run id.
    pub async fn replay_start(
        &self,
        keys: &[String],
        by: &str,
        reason: &str,
        selector: Option<&str>,
        now_ms: i64,
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO replay_runs (started_by, reason, selector, records, started_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(by)
        .bind(reason)
        .bind(selector)
        .bind(keys.len() as i64)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM inbox")
            .fetch_one(&mut *tx)
            .await?;
        for key in keys {
            // A new row is the run's alone; an existing one (live work, another replay) is
            // joined: the mark is added to it and the row no longer belongs to any run.
            let mine: Option<i64> = sqlx::query_scalar(
                "INSERT INTO work_queue (entity_key, ready_seq, last_seq, replan, replay_run) \
                 VALUES (?1, ?2, ?3, 1, ?4) \
                 ON CONFLICT (entity_key) DO UPDATE SET replan = 1, not_before_ms = 0, replay_run = NULL \
                 RETURNING replay_run",
            )
            .bind(key)
            .bind(seq + super::BULK_SEQ_BASE)
            .bind(seq)
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT OR IGNORE INTO replay_run_records (run_id, entity_key, joined) VALUES (?1, ?2, ?3)")
                .bind(run_id)
                .bind(key)
                .bind(i64::from(mine.is_none()))
                .execute(&mut *tx)
                .await?;
            Self::audit_operator(
                &mut tx,
                now_ms,
                Some(key),
                None,
                by,
                "replay",
                serde_json::json!({"reason": reason, "run": run_id}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(run_id)
    }

    /// A replay run with its progress (`None`: the latest). A running run whose records have
    /// no queued work left is marked done here.
    pub async fn replay_run(&self, id: Option<i64>, now_ms: i64) -> Result<Option<ReplayRun>> {
        let id: Option<i64> = match id {
            Some(id) => Some(id),
            None => {
                sqlx::query_scalar("SELECT MAX(id) FROM replay_runs")
                    .fetch_one(&self.writer)
                    .await?
            }
        };
        let Some(id) = id else { return Ok(None) };
        // A record seen without queued work has finished its replay; what is queued for it
        // later (a webhook's event) is live work, not the run's.
        sqlx::query(
            "UPDATE replay_run_records SET finished = 1 \
             WHERE run_id = ?1 AND finished = 0 AND cancelled = 0 \
               AND NOT EXISTS (SELECT 1 FROM work_queue w WHERE w.entity_key = replay_run_records.entity_key)",
        )
        .bind(id)
        .execute(&self.writer)
        .await?;
        let Some(mut run) = self.replay_run_row(id).await? else {
            return Ok(None);
        };
        if run.state == "running" && run.pending == 0 {
            sqlx::query(
                "UPDATE replay_runs SET state = 'done', finished_at_ms = ?2 WHERE id = ?1 AND state = 'running'",
            )
            .bind(id)
            .bind(now_ms)
            .execute(&self.writer)
            .await?;
            run = self.replay_run_row(id).await?.unwrap_or(run);
        }
        Ok(Some(run))
    }

    async fn replay_run_row(&self, id: i64) -> Result<Option<ReplayRun>> {
        let row = sqlx::query(
            "SELECT id, started_by, reason, selector, started_at_ms, state, finished_at_ms, cancelled_by, records, \
               (SELECT COUNT(*) FROM replay_run_records r WHERE r.run_id = ?1 AND r.cancelled = 0 AND r.finished = 0 \
                  AND EXISTS (SELECT 1 FROM work_queue w WHERE w.entity_key = r.entity_key)), \
               (SELECT COUNT(*) FROM replay_run_records r WHERE r.run_id = ?1 AND r.cancelled = 1), \
               (SELECT COUNT(*) FROM replay_run_records r WHERE r.run_id = ?1 AND r.joined = 1) \
             FROM replay_runs WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.writer)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let records: i64 = r.try_get(8)?;
        let pending: i64 = r.try_get(9)?;
        let cancelled: i64 = r.try_get(10)?;
        Ok(Some(ReplayRun {
            id: r.try_get(0)?,
            started_by: r.try_get(1)?,
            reason: r.try_get(2)?,
            selector: r.try_get(3)?,
            started_at_ms: r.try_get(4)?,
            state: r.try_get(5)?,
            finished_at_ms: r.try_get(6)?,
            cancelled_by: r.try_get(7)?,
            records,
            pending,
            done: (records - pending - cancelled).max(0),
            cancelled,
            joined: r.try_get(11)?,
        }))
    }

    /// Cancel a replay run: remove the queue rows holding only its not-yet-claimed work
    /// (records a worker already claimed, or whose work was joined by live work, finish), mark
    /// the run cancelled and audit it, in one transaction. `None`: no such run.
    pub async fn replay_cancel(&self, id: i64, by: &str, now_ms: i64) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM replay_runs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(state) = state else { return Ok(None) };
        if state != "running" {
            return Ok(Some(0));
        }
        let dropped: Vec<String> = sqlx::query_scalar(
            "DELETE FROM work_queue WHERE replay_run = ?1 AND lease_owner IS NULL \
               AND NOT EXISTS (SELECT 1 FROM inbox i INDEXED BY inbox_by_entity_state \
                               WHERE i.entity_key = work_queue.entity_key AND i.state = 'pending') \
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.entity_key = work_queue.entity_key AND o.state = 'pending') \
             RETURNING entity_key",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for key in &dropped {
            sqlx::query("UPDATE replay_run_records SET cancelled = 1 WHERE run_id = ?1 AND entity_key = ?2")
                .bind(id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE replay_runs SET state = 'cancelled', finished_at_ms = ?2, cancelled_by = ?3, dropped = ?4 \
             WHERE id = ?1",
        )
        .bind(id)
        .bind(now_ms)
        .bind(by)
        .bind(dropped.len() as i64)
        .execute(&mut *tx)
        .await?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            None,
            None,
            by,
            "replay_cancel",
            serde_json::json!({"run": id, "dropped": dropped.len()}),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(dropped.len() as i64))
    }

    /// Audit rows matching a filter (`record` already resolved to a key), newest first, with
    /// the total. `before_id` pages by key (the CSV export), `limit`/`offset` by position.
    pub async fn audit_list(
        &self,
        f: &AuditFilter,
        record: Option<&str>,
        before_id: Option<i64>,
        limit: i64,
        offset: i64,
        with_total: bool,
    ) -> Result<(i64, Vec<AuditEntry>)> {
        let total = if with_total {
            let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM audit a");
            push_audit_filter(&mut qb, f, record, None);
            qb.build_query_scalar::<i64>().fetch_one(&self.reader).await?
        } else {
            0
        };
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT a.id, a.at_ms, a.entity_key, a.inbox_id, a.outbox_id, a.actor, a.action, a.rule, \
             a.contract_version, a.detail FROM audit a",
        );
        push_audit_filter(&mut qb, f, record, before_id);
        qb.push(" ORDER BY a.id DESC LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = qb.build().fetch_all(&self.reader).await?;
        let items = rows
            .into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    record: r.try_get(2)?,
                    inbox_id: r.try_get(3)?,
                    outbox_id: r.try_get(4)?,
                    actor: r.try_get(5)?,
                    action: r.try_get(6)?,
                    rule: r.try_get(7)?,
                    contract_version: r.try_get(8)?,
                    detail: r.try_get(9)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((total, items))
    }
}

/// `%text%` for LIKE with `\` escaping the wildcards.
fn like_pattern(text: &str, prefix_only: bool) -> String {
    let esc = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    if prefix_only {
        format!("{esc}%")
    } else {
        format!("%{esc}%")
    }
}

fn push_audit_filter(qb: &mut QueryBuilder<'_, Sqlite>, f: &AuditFilter, record: Option<&str>, before_id: Option<i64>) {
    qb.push(" WHERE 1 = 1");
    let nonempty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(actor) = nonempty(&f.actor) {
        qb.push(" AND a.actor LIKE ")
            .push_bind(like_pattern(&actor, true))
            .push(" ESCAPE '\\'");
    }
    if let Some(action) = nonempty(&f.action) {
        qb.push(" AND a.action = ").push_bind(action);
    }
    if let Some(key) = record {
        qb.push(" AND a.entity_key = ").push_bind(key.to_string());
    }
    if let Some(text) = nonempty(&f.text) {
        let p = like_pattern(&text, false);
        qb.push(" AND (a.action LIKE ")
            .push_bind(p.clone())
            .push(" ESCAPE '\\' OR a.rule LIKE ")
            .push_bind(p.clone())
            .push(" ESCAPE '\\' OR a.entity_key LIKE ")
            .push_bind(p.clone())
            .push(" ESCAPE '\\' OR a.detail LIKE ")
            .push_bind(p)
            .push(" ESCAPE '\\')");
    }
    if let Some(from) = f.from_ms {
        qb.push(" AND a.at_ms >= ").push_bind(from);
    }
    if let Some(to) = f.to_ms {
        qb.push(" AND a.at_ms < ").push_bind(to);
    }
    if let Some(b) = before_id {
        qb.push(" AND a.id < ").push_bind(b);
    }
}

#[cfg(test)]
mod tests {
    use crate::contract::Side;
    use crate::ledger::{Ledger, NewEvent};

    fn ev(id: &str, key: &str) -> NewEvent {
        NewEvent {
            source: Side::Crm,
            event_id: id.to_string(),
            via: "webhook",
            event_type: "contact.propertyChange".into(),
            object_type: "contact".into(),
            object_id: "1".into(),
            identity_object: "customer".into(),
            entity_key: key.to_string(),
            billing_id: None,
            payload: "{}".into(),
            received_at_ms: 1,
        }
    }

    async fn queued(l: &Ledger, key: &str) -> bool {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM work_queue WHERE entity_key = ?1")
            .bind(key)
            .fetch_one(&l.reader)
            .await
            .unwrap()
            == 1
    }

    /// Cancel drops only the run's own unclaimed work: never a record whose queue row holds a
    /// webhook's event (queued before or after the replay), nor one a worker claimed.
    #[tokio::test]
    async fn cancel_drops_only_unclaimed_replay_work_never_live_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        // a: live work queued before the replay (joined); b: an event arrives after it;
        // c: claimed by a worker; d, e: replay only.
        l.ingest(vec![ev("a1", "customer:crm:a")]).await.unwrap();
        let keys: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|k| format!("customer:crm:{k}"))
            .collect();
        let run = l
            .replay_start(&keys, "operator:test", "replay", None, 10)
            .await
            .unwrap();
        l.ingest(vec![ev("b1", "customer:crm:b")]).await.unwrap();
        // A worker claims c (b, d and e are parked for now, so the claim cannot take them).
        sqlx::query(
            "UPDATE work_queue SET not_before_ms = 1000000 \
             WHERE entity_key IN ('customer:crm:b', 'customer:crm:d', 'customer:crm:e')",
        )
        .execute(&l.writer)
        .await
        .unwrap();
        let claims = l.claim("w", 10, 20, 60_000).await.unwrap();
        let mut claimed: Vec<&str> = claims.iter().map(|c| c.entity_key.as_str()).collect();
        claimed.sort();
        assert_eq!(claimed, ["customer:crm:a", "customer:crm:c"]);
        sqlx::query(
            "UPDATE work_queue SET not_before_ms = 0, lease_owner = NULL, lease_until_ms = 0 \
             WHERE entity_key <> 'customer:crm:c'",
        )
        .execute(&l.writer)
        .await
        .unwrap();
        let before = l.replay_run(Some(run), 30).await.unwrap().unwrap();
        assert_eq!((before.records, before.pending, before.joined), (5, 5, 1));
        let dropped = l.replay_cancel(run, "operator:test", 40).await.unwrap();
        assert_eq!(dropped, Some(2));
        assert!(
            queued(&l, "customer:crm:a").await,
            "live work queued before the replay stays"
        );
        assert!(
            queued(&l, "customer:crm:b").await,
            "an event that arrived after the replay stays"
        );
        assert!(queued(&l, "customer:crm:c").await, "a claimed record finishes");
        assert!(!queued(&l, "customer:crm:d").await);
        assert!(!queued(&l, "customer:crm:e").await);
        let after = l.replay_run(Some(run), 50).await.unwrap().unwrap();
        assert_eq!(after.state, "cancelled");
        assert_eq!((after.pending, after.cancelled, after.done), (3, 2, 0));
        let audit = l.audit_for("customer:crm:d").await.unwrap();
        assert_eq!(audit.iter().filter(|a| a.action == "replay").count(), 1);
        let (total, rows) = l
            .audit_list(
                &crate::api::AuditFilter {
                    action: Some("replay_cancel".into()),
                    ..Default::default()
                },
                None,
                None,
                10,
                0,
                true,
            )
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert!(rows[0].detail.as_deref().unwrap_or("").contains("\"dropped\":2"));
    }

    #[tokio::test]
    async fn a_run_is_done_when_its_records_have_no_queued_work_and_a_new_row_marks_only_fresh_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let keys = vec!["customer:crm:x".to_string()];
        let run = l
            .replay_start(&keys, "operator:test", "replay", Some("{}"), 10)
            .await
            .unwrap();
        let mark: Option<i64> =
            sqlx::query_scalar("SELECT replay_run FROM work_queue WHERE entity_key = 'customer:crm:x'")
                .fetch_one(&l.reader)
                .await
                .unwrap();
        assert_eq!(mark, Some(run));
        // A webhook event for the record takes the row out of the run's hands.
        l.ingest(vec![ev("x1", "customer:crm:x")]).await.unwrap();
        let mark: Option<i64> =
            sqlx::query_scalar("SELECT replay_run FROM work_queue WHERE entity_key = 'customer:crm:x'")
                .fetch_one(&l.reader)
                .await
                .unwrap();
        assert_eq!(mark, None);
        assert_eq!(l.replay_cancel(run, "t", 20).await.unwrap(), Some(0));
        assert!(queued(&l, "customer:crm:x").await);
        // Finished work: the row goes, the (cancelled) run counts it done.
        sqlx::query("DELETE FROM work_queue").execute(&l.writer).await.unwrap();
        let r = l.replay_run(None, 30).await.unwrap().unwrap();
        assert_eq!((r.id, r.pending, r.done), (run, 0, 1));
        let run2 = l
            .replay_start(&keys, "operator:test", "replay", None, 40)
            .await
            .unwrap();
        sqlx::query("DELETE FROM work_queue").execute(&l.writer).await.unwrap();
        let r2 = l.replay_run(Some(run2), 50).await.unwrap().unwrap();
        assert_eq!((r2.state.as_str(), r2.finished_at_ms), ("done", Some(50)));
        // A later event for the record is live work: the done run stays done, 1 of 1.
        l.ingest(vec![ev("x2", "customer:crm:x")]).await.unwrap();
        assert!(queued(&l, "customer:crm:x").await);
        let r2 = l.replay_run(Some(run2), 60).await.unwrap().unwrap();
        assert_eq!((r2.state.as_str(), r2.pending, r2.done), ("done", 0, 1));
        // Runs are counted apart: one whose record's work is gone is done while another
        // run's record is still queued.
        let run3 = l
            .replay_start(&["customer:crm:y".to_string()], "operator:test", "replay", None, 70)
            .await
            .unwrap();
        let run4 = l
            .replay_start(&keys, "operator:test", "replay", None, 71)
            .await
            .unwrap();
        sqlx::query("DELETE FROM work_queue WHERE entity_key = 'customer:crm:x'")
            .execute(&l.writer)
            .await
            .unwrap();
        let r = l.replay_run(Some(run4), 72).await.unwrap().unwrap();
        assert_eq!((r.state.as_str(), r.pending, r.done), ("done", 0, 1));
        let r = l.replay_run(Some(run3), 73).await.unwrap().unwrap();
        assert_eq!((r.state.as_str(), r.pending, r.done), ("running", 1, 0));
    }
}
