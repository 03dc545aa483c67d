//! The Dead letters screen's SQL: one dead letter's full context (the write as sent, the
//! response, the engine's decisions about it, the events behind it), keyset pages for the CSV
//! export, and the seeding used to measure the table at scale (`driftless dev seed-dead-letters`).

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::ops::{amount_of, object_of, push_filter};
use super::{Ledger, Result};
use crate::api::{DeadLetter, DeadLetterFilter, TimelineEntry};

/// The columns every dead-letter read selects, in the order [`dead_letter`] reads them.
pub(super) const COLUMNS: &str = "SELECT d.id, d.entity_key, d.destination, o.op, d.error_class, d.error, d.attempts, \
     o.idempotency_key, d.created_at_ms, d.resolved_at_ms, d.resolution, d.request \
     FROM dead_letters d JOIN outbox o ON o.id = d.outbox_id";

pub(super) fn dead_letter(r: &SqliteRow) -> Result<DeadLetter> {
    let key: String = r.try_get(1)?;
    let request: String = r.try_get(11)?;
    Ok(DeadLetter {
        id: r.try_get(0)?,
        object: object_of(&key),
        record: key,
        destination: r.try_get(2)?,
        op: r.try_get(3)?,
        error_class: r.try_get(4)?,
        error: r.try_get(5)?,
        attempts: r.try_get(6)?,
        idempotency_key: r.try_get(7)?,
        created_at_ms: r.try_get(8)?,
        resolved_at_ms: r.try_get(9)?,
        resolution: r.try_get(10)?,
        amount_cents: amount_of(&request),
    })
}

/// One dead letter with what the detail drawer shows.
pub struct DeadLetterRow {
    pub dead_letter: DeadLetter,
    pub request: String,
    pub response: Option<String>,
    pub outbox_id: i64,
    pub write_state: String,
    pub response_status: Option<i64>,
    pub correlation_id: String,
    pub cause_inbox_id: Option<i64>,
}

impl Ledger {
    /// One dead letter (resolved or not) with its write's request, response and state.
    pub async fn dead_letter_row(&self, id: i64) -> Result<Option<DeadLetterRow>> {
        let sql = COLUMNS.replacen(
            " FROM dead_letters",
            ", d.response, o.id, o.state, o.response_status, o.correlation_id, o.cause_inbox_id FROM dead_letters",
            1,
        ) + " WHERE d.id = ?1";
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(DeadLetterRow {
            dead_letter: dead_letter(&r)?,
            request: r.try_get(11)?,
            response: r.try_get(12)?,
            outbox_id: r.try_get(13)?,
            write_state: r.try_get(14)?,
            response_status: r.try_get(15)?,
            correlation_id: r.try_get(16)?,
            cause_inbox_id: r.try_get(17)?,
        }))
    }

    /// The engine's and operators' audit entries about one write (its retries, the dead
    /// letter, a retry or discard of it), oldest first.
    pub async fn write_history(&self, outbox_id: i64, dead_letter_id: i64) -> Result<Vec<TimelineEntry>> {
        let like = format!("%\"dead_letter\":{dead_letter_id}%");
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, rule, contract_version, detail FROM audit \
             WHERE outbox_id = ?1 OR (action IN ('dead_letter_retry', 'dead_letter_discard') AND detail LIKE ?2) \
             ORDER BY id",
        )
        .bind(outbox_id)
        .bind(like)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let actor: String = r.try_get(2)?;
                let action: String = r.try_get(3)?;
                Ok(TimelineEntry {
                    at_ms: r.try_get(1)?,
                    kind: if actor == "engine" {
                        "decision".into()
                    } else {
                        "operator".into()
                    },
                    id: r.try_get(0)?,
                    side: None,
                    summary: format!("{actor}: {action}"),
                    state: None,
                    rule: r.try_get(4)?,
                    contract_version: r.try_get(5)?,
                    idempotency_key: None,
                    correlation_id: None,
                    detail: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// The inbound events behind a dead letter: the event that caused the write and the
    /// record's other events that were dead-lettered, oldest first.
    pub async fn events_behind(&self, record: &str, cause: Option<i64>) -> Result<Vec<TimelineEntry>> {
        let rows = sqlx::query(
            "SELECT id, source, event_id, event_type, received_at_ms, state, state_reason, payload, via FROM inbox \
             WHERE id = ?2 OR (entity_key = ?1 AND state = 'dead_lettered') ORDER BY id LIMIT 200",
        )
        .bind(record)
        .bind(cause.unwrap_or(-1))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let source: String = r.try_get(1)?;
                let event_id: String = r.try_get(2)?;
                let typ: String = r.try_get(3)?;
                let via: String = r.try_get(8)?;
                let reason: Option<String> = r.try_get(6)?;
                Ok(TimelineEntry {
                    at_ms: r.try_get(4)?,
                    kind: "event".into(),
                    id: r.try_get(0)?,
                    side: Some(source.clone()),
                    summary: format!(
                        "{source} {typ} {event_id} via {via}{}",
                        reason.map(|r| format!(" — {r}")).unwrap_or_default()
                    ),
                    state: Some(r.try_get(5)?),
                    rule: None,
                    contract_version: None,
                    idempotency_key: None,
                    correlation_id: None,
                    detail: Some(r.try_get(7)?),
                })
            })
            .collect()
    }

    /// A page of the filtered dead letters, newest first, strictly older (by id) than `before`
    /// — keyset paging for exports, steady however far in.
    pub async fn dead_letters_before(
        &self,
        f: &DeadLetterFilter,
        before: Option<i64>,
        limit: i64,
        now_ms: i64,
    ) -> Result<Vec<DeadLetter>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(COLUMNS);
        push_filter(&mut qb, f, now_ms);
        if let Some(b) = before {
            qb.push(" AND d.id < ").push_bind(b);
        }
        qb.push(" ORDER BY d.id DESC LIMIT ").push_bind(limit.clamp(1, 10_000));
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(dead_letter).collect()
    }

    /// Every dead letter a filter selects (its limit/offset ignored), newest first, read in
    /// keyset pages — what bulk actions and their blast radius apply to, however many.
    pub async fn all_dead_letters(&self, f: &DeadLetterFilter, now_ms: i64) -> Result<Vec<DeadLetter>> {
        let mut out: Vec<DeadLetter> = Vec::new();
        loop {
            let page = self
                .dead_letters_before(f, out.last().map(|d| d.id), 10_000, now_ms)
                .await?;
            let n = page.len();
            out.extend(page);
            if n < 10_000 {
                return Ok(out);
            }
        }
    }

    /// Add `n` synthetic open dead letters (with their dead-lettered writes) for measuring
    /// the console at scale: record keys `customer:crm:seed-NNNNNN`, spread over both
    /// destinations, the four error classes and the last 30 days; every fifth carries an
    /// invoice amount. One statement per table, so 100,000 take about a second.
    /// Returns how many were added.
    pub async fn seed_dead_letters(&self, n: i64, now_ms: i64) -> Result<i64> {
        let n = n.clamp(0, 10_000_000);
        let mut tx = self.begin().await?;
        let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1) \
             INSERT INTO outbox (id, entity_key, destination, op, target_id, idempotency_key, correlation_id, \
                field_values, lane, state, attempts, last_error, response_status, response, created_at_ms, updated_at_ms) \
             SELECT ?2 + i, printf('customer:crm:seed-%06d', i), \
                CASE i % 2 WHEN 0 THEN 'billing' ELSE 'crm' END, \
                CASE i % 2 WHEN 0 THEN 'update_customer' ELSE 'update_contact' END, \
                printf('seed-%06d', i), printf('seed:%d:%06d', ?2, i), printf('seed-corr-%06d', i), \
                CASE WHEN i % 5 = 0 THEN printf('{\"email\":\"seed%06d@example.test\",\"invoice_balance\":%d}', i, (i % 997) * 100) \
                     ELSE printf('{\"email\":\"seed%06d@example.test\"}', i) END, \
                'live', 'dead_lettered', 8, 'seeded failure', \
                CASE i % 4 WHEN 0 THEN 400 WHEN 1 THEN 503 WHEN 2 THEN 401 ELSE 404 END, \
                '{\"message\":\"seeded\"}', ?3 - ((?1 - i) * ?4), ?3 - ((?1 - i) * ?4) \
             FROM s",
        )
        .bind(n)
        .bind(base)
        .bind(now_ms)
        .bind((30 * 86_400_000 / n.max(1)).max(1))
        .execute(&mut *tx)
        .await?;
        let added = sqlx::query(
            "INSERT INTO dead_letters (outbox_id, entity_key, destination, error_class, error, request, response, \
                attempts, created_at_ms) \
             SELECT o.id, o.entity_key, o.destination, \
                CASE o.response_status WHEN 400 THEN 'validation' WHEN 503 THEN 'exhausted' WHEN 401 THEN 'auth' ELSE 'not_found' END, \
                CASE o.response_status WHEN 400 THEN 'validation: field rejected by ' || o.destination \
                     WHEN 503 THEN 'exhausted: ' || o.destination || ' answered 503 eight times' \
                     WHEN 401 THEN 'auth: ' || o.destination || ' refused the key' \
                     ELSE 'not_found: ' || o.target_id || ' is gone from ' || o.destination END, \
                json_object('op', o.op, 'target', o.target_id, 'idempotency_key', o.idempotency_key, \
                    'correlation_id', o.correlation_id, 'fields', json(o.field_values)), \
                o.response, o.attempts, o.created_at_ms \
             FROM outbox o WHERE o.id > ?1 ORDER BY o.id",
        )
        .bind(base)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(added as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seeded_dead_letters_list_page_and_open_with_their_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let now = 1_800_000_000_000;
        assert_eq!(l.seed_dead_letters(5_000, now).await.unwrap(), 5_000);
        let (total, first) = l
            .dead_letters(
                &DeadLetterFilter {
                    limit: Some(50),
                    ..Default::default()
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!((total, first.len()), (5_000, 50));
        assert!(first.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        // Filters narrow the seeded set the way the screen's filters do.
        let billing = DeadLetterFilter {
            destination: Some("billing".into()),
            error_class: Some("validation".into()),
            ..Default::default()
        };
        let (n, _) = l.dead_letters(&billing, now).await.unwrap();
        assert_eq!(n, 1_250, "every fourth seeded row is a billing validation error");
        // Keyset pages walk the whole filtered set exactly once.
        let mut seen = Vec::new();
        let mut before = None;
        for _ in 0..10 {
            let page = l.dead_letters_before(&billing, before, 500, now).await.unwrap();
            if page.is_empty() {
                break;
            }
            before = page.last().map(|d| d.id);
            seen.extend(page.into_iter().map(|d| d.id));
        }
        assert_eq!(seen.len(), 1_250);
        seen.dedup();
        assert_eq!(seen.len(), 1_250);
        // Every fifth carries an invoice amount; the radius adds them up.
        let r = l.blast_radius(&DeadLetterFilter::default(), now).await.unwrap();
        assert_eq!((r.dead_letters, r.records), (5_000, 5_000));
        // Bulk actions see the whole set, past one keyset page (10,000) and past the 100,000
        // a single list answer may hold.
        l.seed_dead_letters(10_001, now).await.unwrap();
        let all = l.all_dead_letters(&DeadLetterFilter::default(), now).await.unwrap();
        assert_eq!(all.len(), 15_001);
        assert!(all.windows(2).all(|w| w[0].id > w[1].id));
        assert!(r.amount_cents > 0);
        let r = l.blast_radius(&DeadLetterFilter::default(), now).await.unwrap();
        assert_eq!(r.dead_letters, 15_001);
        let row = l.dead_letter_row(first[0].id).await.unwrap().expect("a row");
        assert_eq!(row.dead_letter, first[0]);
        assert_eq!(row.write_state, "dead_lettered");
        assert!(
            row.request.contains(&row.dead_letter.idempotency_key),
            "{}",
            row.request
        );
        assert!(l.dead_letter_row(999_999).await.unwrap().is_none());
    }
}
