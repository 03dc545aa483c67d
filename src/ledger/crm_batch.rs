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
            "UPDATE work_queue SET lease_owner = ?1, lease_until_ms = ?2, replay_run = NULL WHERE entity_key IN ( \
               SELECT w.entity_key FROM work_queue w JOIN outbox o ON o.entity_key = w.entity_key \
               WHERE w.lease_until_ms <= ?3 AND w.not_before_ms <= ?3 AND o.state = 'pending' AND o.op = ?4 \
                 AND o.id = (SELECT MIN(o2.id) FROM outbox o2 WHERE o2.entity_key = w.entity_key AND o2.state = 'pending') \
               ORDER BY w.ready_seq LIMIT ?5) \
             RETURNING entity_key, last_seq, replan, ready_seq >= ?6",
        )
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(op)
        .bind(n)
        .bind(super::BULK_SEQ_BASE)
        .fetch_all(&self.writer)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Claim {
                    entity_key: r.try_get(0)?,
                    last_seq: r.try_get(1)?,
                    replan: r.try_get::<i64, _>(2)? != 0,
                    bulk: r.try_get::<i64, _>(3)? != 0,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn op(dest: Side, name: &str, key: &str) -> NewOp {
        NewOp {
            destination: dest,
            op: name.into(),
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
        l.ingest(&events).await.unwrap();
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
            .claim_first_op("lane", "update_company", 10, 30, 1000)
            .await
            .unwrap()
            .is_empty());
        let mut got: Vec<String> = l
            .claim_first_op("lane", "update_contact", 10, 30, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.entity_key)
            .collect();
        got.sort();
        assert_eq!(got, [keys[0], keys[2]]);
        // Leased now: neither the lane nor a worker gets them again.
        assert!(l
            .claim_first_op("lane", "update_contact", 10, 30, 1000)
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
