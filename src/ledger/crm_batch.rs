//! The CRM write batcher's SQL: claim records whose next write is a CRM update, so one batch
//! call can carry a backlog (e.g. after a pause is lifted) instead of what the workers
//! happen to hand over at the same instant.

use sqlx::Row;

use super::{Claim, Ledger, Result};

impl Ledger {
    /// Lease up to `n` claimable records (not leased, not parked) whose oldest pending write
    /// is operation `op` (per-record order: nothing earlier is open), oldest ready first.
    pub async fn claim_first_op(
        &self,
        owner: &str,
        op: &str,
        n: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claim>> {
        let rows = sqlx::query(
            "UPDATE work_queue SET lease_owner = ?1, lease_until_ms = ?2 WHERE entity_key IN ( \
               SELECT w.entity_key FROM work_queue w JOIN outbox o ON o.entity_key = w.entity_key \
               WHERE w.lease_until_ms <= ?3 AND w.not_before_ms <= ?3 AND o.state = 'pending' AND o.op = ?4 \
                 AND o.id = (SELECT MIN(o2.id) FROM outbox o2 WHERE o2.entity_key = w.entity_key AND o2.state = 'pending') \
               ORDER BY w.ready_seq LIMIT ?5) \
             RETURNING entity_key, last_seq, replan",
        )
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(op)
        .bind(n)
        .fetch_all(&self.writer)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Claim {
                    entity_key: r.try_get(0)?,
                    last_seq: r.try_get(1)?,
                    replan: r.try_get::<i64, _>(2)? != 0,
                })
            })
            .collect()
    }
}
