//! The CRM write batcher's SQL: claim records whose next write is a CRM update, so one batch
//! call can carry a backlog (e.g. after a pause is lifted) instead of what the workers
//! happen to hand over at the same instant; and the bulk-lane updates parked to wait for a
//! full call ([`batch_wait_reason`]).

use sqlx::Row;

use super::{Claim, Ledger, Result};

impl Ledger {
    /// Lease up to `n` claimable records (not leased; not parked, or parked to wait for a
    /// batch of `op`) whose oldest pending write is operation `op` (per-record order: nothing
    /// earlier is open), oldest ready first.
    pub async fn claim_first_op(
        &self,
        owner: &str,
        op: super::OpKind,
        n: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claim>> {
        let rows = sqlx::query(
            // A record taken while it waited for a batch is no longer parked: handed back with
            // more work, it is claimable at once, not after its fallback.
            "UPDATE work_queue SET lease_owner = ?1, lease_until_ms = ?2, replay_run = NULL, \
               not_before_ms = 0, parked_reason = NULL WHERE entity_key IN ( \
               SELECT w.entity_key FROM work_queue w JOIN outbox o ON o.entity_key = w.entity_key \
               WHERE w.lease_until_ms <= ?3 AND (w.not_before_ms <= ?3 OR w.parked_reason = ?7) \
                 AND o.state = 'pending' AND o.op = ?4 \
                 AND o.id = (SELECT MIN(o2.id) FROM outbox o2 WHERE o2.entity_key = w.entity_key AND o2.state = 'pending') \
               ORDER BY w.ready_seq LIMIT ?5) \
             RETURNING entity_key, last_seq, replan, ready_seq >= ?6, failures, failing_since_ms",
        )
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(op.as_str())
        .bind(n)
        .bind(super::BULK_SEQ_BASE)
        .bind(batch_wait_reason(op))
        .fetch_all(&self.writer)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Claim {
                    entity_key: r.try_get(0)?,
                    last_seq: r.try_get(1)?,
                    replan: r.try_get::<i64, _>(2)? != 0,
                    bulk: r.try_get::<i64, _>(3)? != 0,
                    failures: r.try_get(4)?,
                    failing_since_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// The bulk-lane records parked to wait for a batch call of `op` (not leased): how many, when the
    /// longest-waiting one was parked (its `not_before_ms` less `fallback_ms`, the wait it was
    /// given), and whether other bulk work is in the queue, not parked (being processed or
    /// about to be: more updates may follow). Records held by a pause, a migration freeze or
    /// a retry's backoff do not count: nothing would come of waiting for them.
    pub async fn batch_waiting(&self, op: super::OpKind, now_ms: i64, fallback_ms: i64) -> Result<BatchWaiting> {
        let reason = batch_wait_reason(op);
        let row = sqlx::query(
            // The bulk lane is only walked when something waits (every half second, idle
            // or not, a paused backlog would otherwise be walked for nothing).
            "SELECT COUNT(*), MIN(not_before_ms), CASE WHEN COUNT(*) = 0 THEN 0 ELSE \
               EXISTS (SELECT 1 FROM work_queue WHERE ready_seq >= ?2 AND parked_reason IS NULL) END \
             FROM work_queue WHERE parked_reason = ?1 AND lease_until_ms <= ?3",
        )
        .bind(&reason)
        .bind(super::BULK_SEQ_BASE)
        .bind(now_ms)
        .fetch_one(&self.reader)
        .await?;
        Ok(BatchWaiting {
            count: row.try_get(0)?,
            oldest_parked_ms: row.try_get::<Option<i64>, _>(1)?.map(|t| t - fallback_ms),
            more_bulk_work: row.try_get::<i64, _>(2)? != 0,
        })
    }
}

pub(super) const BATCH_WAIT_PREFIX: &str = "waiting for a full CRM batch";

/// The `parked_reason` of a bulk-lane record whose next write, `op`, waits for a full batch.
pub fn batch_wait_reason(op: super::OpKind) -> String {
    format!("{BATCH_WAIT_PREFIX} ({})", op.as_str())
}

/// What [`Ledger::batch_waiting`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchWaiting {
    pub count: i64,
    pub oldest_parked_ms: Option<i64>,
    pub more_bulk_work: bool,
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn op(dest: Side, name: &str, key: &str) -> NewOp {
        NewOp {
            destination: dest,
            op: crate::ledger::OpKind::parse(name).expect("an operation kind"),
            target_id: Some("t".into()),
            idempotency_key: key.into(),
            correlation_id: format!("c-{key}"),
            field_values: serde_json::Map::new(),
            cause_inbox_id: None,
        }
    }

    #[tokio::test]
    async fn claim_first_op_takes_only_records_whose_next_write_is_that_op_and_not_leased_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let keys = ["customer:crm:1", "customer:crm:2", "customer:crm:3", "customer:crm:4"];
        let events: Vec<NewEvent> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| NewEvent {
                source: Side::Crm,
                event_id: format!("e{i}"),
                via: "webhook",
                event_type: "contact.propertyChange".into(),
                object_type: "contact".into(),
                object_id: (i + 1).to_string(),
                identity_object: "customer".into(),
                entity_key: key.to_string(),
                billing_id: None,
                payload: "{}".into(),
                received_at_ms: 1,
            })
            .collect();
        l.ingest(events).await.unwrap();
        let claims = l.claim("w", 10, 10, 1000).await.unwrap();
        assert_eq!(claims.len(), 4);
        // 1: a CRM update; 2: a billing write first, then a CRM update; 3: a CRM update;
        // 4: a CRM update, but the record stays leased by its worker.
        let plans = [
            vec![op(Side::Crm, "update_contact", "k1")],
            vec![
                op(Side::Billing, "update_customer", "k2a"),
                op(Side::Crm, "update_contact", "k2b"),
            ],
            vec![op(Side::Crm, "update_contact", "k3")],
            vec![op(Side::Crm, "update_contact", "k4")],
        ];
        for (key, ops) in keys.iter().zip(plans) {
            let cs = ChangeSet {
                entity_key: key.to_string(),
                new_ops: ops,
                ..Default::default()
            };
            l.apply(&cs, 20).await.unwrap();
        }
        for c in claims.iter().filter(|c| c.entity_key != keys[3]) {
            l.release(c, "w").await.unwrap();
        }
        assert!(l
            .claim_first_op("lane", OpKind::UpdateCompany, 10, 30, 1000)
            .await
            .unwrap()
            .is_empty());
        let mut got: Vec<String> = l
            .claim_first_op("lane", crate::ledger::OpKind::UpdateContact, 10, 30, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.entity_key)
            .collect();
        got.sort();
        assert_eq!(got, [keys[0], keys[2]]);
        // Leased now: neither the lane nor a worker gets them again.
        assert!(l
            .claim_first_op("lane", crate::ledger::OpKind::UpdateContact, 10, 30, 1000)
            .await
            .unwrap()
            .is_empty());
        let worker: Vec<String> = l
            .claim("w2", 10, 30, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.entity_key)
            .collect();
        assert_eq!(worker, [keys[1]]);
    }

    #[tokio::test]
    async fn bulk_updates_waiting_for_a_batch_are_counted_taken_by_the_lane_and_freed_by_a_live_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let keys = ["customer:crm:1", "customer:crm:2", "customer:crm:3"];
        let event = |i: usize, id: &str| NewEvent {
            source: Side::Crm,
            event_id: id.to_string(),
            via: "backfill",
            event_type: "contact.snapshot".into(),
            object_type: "contact".into(),
            object_id: (i + 1).to_string(),
            identity_object: "customer".into(),
            entity_key: keys[i].to_string(),
            billing_id: None,
            payload: "{}".into(),
            received_at_ms: 1,
        };
        let bulk: Vec<NewEvent> = (0..3).map(|i| event(i, &format!("b{i}"))).collect();
        l.grouped(super::super::group::GroupWork::Ingest {
            events: bulk,
            bulk: true,
        })
        .await
        .unwrap();
        let claims = l.claim("w", 10, 10, 1000).await.unwrap();
        assert!(claims.iter().all(|c| c.bulk), "{claims:?}");
        let reason = batch_wait_reason(crate::ledger::OpKind::UpdateContact);
        for (i, c) in claims.iter().enumerate() {
            let cs = ChangeSet {
                entity_key: c.entity_key.clone(),
                new_ops: vec![op(Side::Crm, "update_contact", &format!("k{i}"))],
                ..Default::default()
            };
            l.apply(&cs, 20).await.unwrap();
            if c.entity_key == keys[2] {
                l.release(c, "w").await.unwrap();
            } else {
                l.park(&c.entity_key, "w", 20 + 60_000, &reason).await.unwrap();
            }
        }
        // Two wait for a call; the third is still bulk work to come.
        let w = l
            .batch_waiting(crate::ledger::OpKind::UpdateContact, 30, 60_000)
            .await
            .unwrap();
        assert_eq!(
            w,
            BatchWaiting {
                count: 2,
                oldest_parked_ms: Some(20),
                more_bulk_work: true
            }
        );
        assert_eq!(
            l.batch_waiting(OpKind::UpdateCompany, 30, 60_000).await.unwrap().count,
            0
        );
        // A live event for the first: claimable by a worker at once, in the live lane.
        l.ingest(vec![event(0, "live")]).await.unwrap();
        let mut worker = l.claim("w", 10, 30, 1000).await.unwrap();
        worker.sort_by(|a, b| a.entity_key.cmp(&b.entity_key));
        let got: Vec<(&str, bool)> = worker.iter().map(|c| (c.entity_key.as_str(), c.bulk)).collect();
        assert_eq!(got, [(keys[0], false), (keys[2], true)]);
        // The lane takes the one still waiting (parked, but for it); a leased one is not counted.
        let w = l
            .batch_waiting(crate::ledger::OpKind::UpdateContact, 30, 60_000)
            .await
            .unwrap();
        assert_eq!(w.count, 1, "{w:?}");
        let lane = l
            .claim_first_op("lane", crate::ledger::OpKind::UpdateContact, 100, 30, 1000)
            .await
            .unwrap();
        assert_eq!(
            lane.iter().map(|c| c.entity_key.as_str()).collect::<Vec<_>>(),
            [keys[1]]
        );
        assert_eq!(
            l.batch_waiting(crate::ledger::OpKind::UpdateContact, 30, 60_000)
                .await
                .unwrap()
                .count,
            0
        );
        // Handed back with work left (its write still open): a worker takes it at once, not
        // after the wait it was parked with.
        l.release(&lane[0], "lane").await.unwrap();
        let again = l.claim("w2", 10, 40, 1000).await.unwrap();
        assert_eq!(
            again.iter().map(|c| c.entity_key.as_str()).collect::<Vec<_>>(),
            [keys[1]]
        );
    }

    #[tokio::test]
    async fn status_reports_records_per_crm_write_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        assert_eq!(l.status().await.unwrap().crm_write_calls, CrmWriteCalls::default());
        let s = |n: &str, m: i64, v: f64| (n.to_string(), "contact".to_string(), m, v);
        l.add_metric_samples(&[s("crm_write_calls", 1, 3.0), s("crm_write_records", 1, 201.0)])
            .await
            .unwrap();
        l.add_metric_samples(&[s("crm_write_calls", 2, 1.0), s("crm_write_records", 2, 99.0)])
            .await
            .unwrap();
        l.max_metric_samples(&[s("crm_write_call_max", 1, 100.0)])
            .await
            .unwrap();
        l.max_metric_samples(&[s("crm_write_call_max", 1, 7.0), s("crm_write_call_max", 2, 99.0)])
            .await
            .unwrap();
        let c = l.status().await.unwrap().crm_write_calls;
        assert_eq!((c.records, c.calls, c.max_records), (300, 4, 100));
        assert!((c.mean_records - 75.0).abs() < 1e-9, "{c:?}");
    }
}
