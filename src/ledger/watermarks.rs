//! Poll cursors (`watermarks`) and the reconciliation gaps a cursor older than the provider's
//! retention leaves behind. A watermark only moves forward, and only after everything before
//! it is durable in the inbox (the pollers call `advance_watermark` after the window's last
//! page was ingested).

use sqlx::Row;

use super::{Ledger, LedgerError, PollerStatus, ReconciliationGap, Result, WriteTx};
use crate::contract::Side;

/// Cursors the pollers own are named `poll:{source}:{stream}`.
pub const POLL_PREFIX: &str = "poll:";

fn parse_cursor(name: &str, raw: &str) -> Result<i64> {
    raw.trim().parse::<i64>().map_err(|_| LedgerError::Corrupt {
        what: "watermarks",
        detail: format!("cursor {name:?} is not a time in ms: {raw:?}"),
    })
}

fn gap_of(r: &sqlx::sqlite::SqliteRow) -> Result<ReconciliationGap> {
    Ok(ReconciliationGap {
        id: r.try_get(0)?,
        source: r.try_get(1)?,
        cursor: r.try_get(2)?,
        from_ms: r.try_get(3)?,
        to_ms: r.try_get(4)?,
        reason: r.try_get(5)?,
        recorded_at_ms: r.try_get(6)?,
        resolved_at_ms: r.try_get(7)?,
    })
}

/// A window of a poll cursor the pollers did not read (see [`Ledger::record_gap`]).
#[derive(Debug, Clone, Copy)]
pub struct Gap<'a> {
    /// The cursor's name (`poll:{source}:{stream}`).
    pub cursor: &'a str,
    pub source: Side,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: &'a str,
}

/// Why a window was not read, which decides whether its cursor moves past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// Older than the provider retains: the cursor moves to the window's end.
    Expired,
    /// Could not be paged through: the cursor stays.
    Unreadable,
}

const GAP_COLUMNS: &str = "id, source, cursor, from_ms, to_ms, reason, recorded_at_ms, resolved_at_ms";

impl Ledger {
    /// The watermark (unix ms) of cursor `name`, if it was ever advanced.
    pub async fn watermark(&self, name: &str) -> Result<Option<i64>> {
        let raw: Option<String> = sqlx::query_scalar("SELECT cursor FROM watermarks WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.writer)
            .await?;
        raw.map(|r| parse_cursor(name, &r)).transpose()
    }

    /// Move cursor `name` forward to `to_ms` (never backward). Returns the stored watermark.
    pub async fn advance_watermark(&self, name: &str, to_ms: i64, now_ms: i64) -> Result<i64> {
        let mut tx = self.begin().await?;
        Self::advance_in(&mut tx, name, to_ms, now_ms).await?;
        let raw: String = sqlx::query_scalar("SELECT cursor FROM watermarks WHERE name = ?1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        parse_cursor(name, &raw)
    }

    async fn advance_in(tx: &mut WriteTx, name: &str, to_ms: i64, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO watermarks (name, cursor, updated_at_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, updated_at_ms = excluded.updated_at_ms \
             WHERE CAST(excluded.cursor AS INTEGER) >= CAST(watermarks.cursor AS INTEGER)",
        )
        .bind(name)
        .bind(to_ms.to_string())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Record a window `[from_ms, to_ms]` of cursor `gap.cursor` the pollers did not read,
    /// for the reconciler, with an audit row (action `poll_cursor_expired` or
    /// `poll_window_unreadable`) — one transaction. [`GapKind::Expired`]: the provider no
    /// longer keeps the window, so the cursor also moves (forward only) to `to_ms`, the
    /// oldest retained time; [`GapKind::Unreadable`] (e.g. more records modified in one
    /// millisecond than search pages through): the cursor is not moved. Recording the same
    /// gap twice records and audits it once.
    pub async fn record_gap(&self, gap: &Gap<'_>, kind: GapKind, now_ms: i64) -> Result<()> {
        let Gap {
            cursor,
            source,
            from_ms,
            to_ms,
            reason,
        } = *gap;
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO reconciliation_gaps (source, cursor, from_ms, to_ms, reason, recorded_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (cursor, from_ms, to_ms) DO NOTHING",
        )
        .bind(source.as_str())
        .bind(cursor)
        .bind(from_ms)
        .bind(to_ms.max(from_ms))
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted > 0 {
            let action = match kind {
                GapKind::Expired => "poll_cursor_expired",
                GapKind::Unreadable => "poll_window_unreadable",
            };
            sqlx::query(
                "INSERT INTO audit (at_ms, entity_key, actor, action, rule, detail) \
                 VALUES (?1, NULL, 'engine', ?2, 'provider_limit', ?3)",
            )
            .bind(now_ms)
            .bind(action)
            .bind(
                serde_json::json!({
                    "cursor": cursor, "source": source.as_str(), "from_ms": from_ms, "to_ms": to_ms,
                    "reason": reason, "next": "reconciliation of the gap",
                })
                .to_string(),
            )
            .execute(&mut *tx)
            .await?;
        }
        if kind == GapKind::Expired {
            Self::advance_in(&mut tx, cursor, to_ms, now_ms).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reconciliation gaps, oldest first; only unresolved ones when `open_only`.
    pub async fn reconciliation_gaps(&self, open_only: bool) -> Result<Vec<ReconciliationGap>> {
        let sql = if open_only {
            format!("SELECT {GAP_COLUMNS} FROM reconciliation_gaps WHERE resolved_at_ms IS NULL ORDER BY id")
        } else {
            format!("SELECT {GAP_COLUMNS} FROM reconciliation_gaps ORDER BY id")
        };
        let rows = sqlx::query(&sql).fetch_all(&self.reader).await?;
        rows.iter().map(gap_of).collect()
    }

    /// The reconciler covered a gap. Returns whether it was open.
    pub async fn resolve_gap(&self, id: i64, now_ms: i64) -> Result<bool> {
        let r =
            sqlx::query("UPDATE reconciliation_gaps SET resolved_at_ms = ?2 WHERE id = ?1 AND resolved_at_ms IS NULL")
                .bind(id)
                .bind(now_ms)
                .execute(&self.writer)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every poll cursor with its lag at `now_ms` and its open gaps.
    pub async fn poller_status(&self, now_ms: i64) -> Result<Vec<PollerStatus>> {
        let rows =
            sqlx::query("SELECT name, cursor, updated_at_ms FROM watermarks WHERE name LIKE 'poll:%' ORDER BY name")
                .fetch_all(&self.reader)
                .await?;
        let gaps = self.reconciliation_gaps(true).await?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get(0)?;
            let raw: String = r.try_get(1)?;
            let watermark_ms = parse_cursor(&name, &raw)?;
            let source = name
                .strip_prefix(POLL_PREFIX)
                .and_then(|s| s.split(':').next())
                .unwrap_or_default()
                .to_string();
            let mine: Vec<ReconciliationGap> = gaps.iter().filter(|g| g.cursor == name).cloned().collect();
            let (state, message) = match mine.first() {
                None => ("ok", None),
                Some(g) => (
                    "reconciliation_needed",
                    Some(format!(
                        "{name}: the cursor was older than the provider retains; changes between {} and {} \
                         can no longer be polled and wait for reconciliation ({} gap(s))",
                        iso(g.from_ms),
                        iso(g.to_ms),
                        mine.len()
                    )),
                ),
            };
            out.push(PollerStatus {
                name,
                source,
                watermark_ms,
                updated_at_ms: r.try_get(2)?,
                lag_ms: (now_ms - watermark_ms).max(0),
                state: state.into(),
                message,
                gaps: mine,
            });
        }
        Ok(out)
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watermarks_only_move_forward_and_an_expired_cursor_records_one_gap() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).await.unwrap();
        let name = "poll:billing:events";
        assert_eq!(l.watermark(name).await.unwrap(), None);
        assert_eq!(l.advance_watermark(name, 1_000, 5).await.unwrap(), 1_000);
        assert_eq!(
            l.advance_watermark(name, 500, 6).await.unwrap(),
            1_000,
            "never backward"
        );
        assert_eq!(l.advance_watermark(name, 2_000, 7).await.unwrap(), 2_000);
        let st = l.poller_status(2_500).await.unwrap();
        assert_eq!((st.len(), st[0].lag_ms, st[0].state.as_str()), (1, 500, "ok"));
        assert_eq!(st[0].source, "billing");

        for _ in 0..2 {
            let gap = Gap {
                cursor: name,
                source: Side::Billing,
                from_ms: 2_000,
                to_ms: 9_000,
                reason: "older than 30 days",
            };
            l.record_gap(&gap, GapKind::Expired, 10_000).await.unwrap();
        }
        assert_eq!(l.watermark(name).await.unwrap(), Some(9_000));
        let gaps = l.reconciliation_gaps(true).await.unwrap();
        assert_eq!(gaps.len(), 1, "the same gap is recorded once");
        assert_eq!((gaps[0].from_ms, gaps[0].to_ms), (2_000, 9_000));
        let st = l.poller_status(9_500).await.unwrap();
        assert_eq!(st[0].state, "reconciliation_needed");
        assert!(st[0].message.as_deref().unwrap_or_default().contains("reconciliation"));
        let audits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE action = 'poll_cursor_expired'")
            .fetch_one(&l.reader)
            .await
            .unwrap();
        assert_eq!(audits, 1);
        assert!(l.resolve_gap(gaps[0].id, 11_000).await.unwrap());
        assert!(!l.resolve_gap(gaps[0].id, 11_000).await.unwrap());
        assert_eq!(l.poller_status(9_500).await.unwrap()[0].state, "ok");
        assert_eq!(l.reconciliation_gaps(false).await.unwrap().len(), 1);
    }
}
