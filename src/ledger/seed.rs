//! A large synthetic history, for measuring the engine and its console on a ledger at scale
//! (`driftless dev seed-ledger`, the perf suite's `scale` section). Set-based SQL through the
//! real migrated schema, shaped like what ingest, the workers and dead letters write.

use super::{Ledger, Result};

/// What [`Ledger::seed_history`] added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedSummary {
    pub events: i64,
    pub pending: i64,
    pub duplicates: i64,
    pub writes: i64,
    pub dead_letters: i64,
    pub audit: i64,
    pub records: i64,
}

/// The queue key of seeded record `r` (1-based): `customer:crm:scale-NNNNNNN`.
pub fn seeded_record(r: i64) -> String {
    format!("customer:crm:scale-{r:07}")
}

const DAY_MS: i64 = 86_400_000;

impl Ledger {
    /// Add `events` inbound events spread over `records` customer records (keys from
    /// [`seeded_record`]) and the last 30 days before `now_ms`, with what the engine would
    /// have written for them:
    ///
    /// - inbox: two CRM events (HubSpot property changes) for each billing one (Stripe
    ///   `customer.updated`), one in ten polled; 2% dropped as echoes, 2% superseded, 0.25% dead
    ///   lettered, the newest `min(200, events / 1000)` still pending (their records queued),
    ///   the rest applied;
    /// - inbox_duplicates: a repeated delivery for one event in twenty;
    /// - outbox: one write to the other side for one applied event in four (idempotency key
    ///   and correlation id as the default contract renders them), done, or dead-lettered for
    ///   the dead-lettered events (about 1% of writes), each of those with an open dead letter;
    /// - audit: a `decide` row per decided real event, `write_applied` / `dead_letter` per write;
    /// - identity_map and shadow (email and name on both sides) per record;
    /// - metric_samples for the last hour (what the overview charts read).
    ///
    /// A few big statements in one transaction: a million events take seconds in release.
    pub async fn seed_history(&self, events: i64, records: i64, now_ms: i64) -> Result<SeedSummary> {
        let n = events.clamp(0, 50_000_000);
        let r = records.clamp(1, 10_000_000);
        let pending = (n / 1000).min(200);
        let step = (30 * DAY_MS / n.max(1)).max(1);
        let start = now_ms - 30 * DAY_MS;
        let mut tx = self.begin().await?;
        let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM inbox")
            .fetch_one(&mut *tx)
            .await?;
        let cv: String = sqlx::query_scalar(
            "SELECT COALESCE((SELECT value FROM control_flags WHERE key = 'contract_version'), 'seed')",
        )
        .fetch_one(&mut *tx)
        .await?;
        // Record r gets events r, r + R, r + 2R, ...; ids follow time.
        sqlx::query(
            "WITH RECURSIVE s(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM s WHERE j < ?1), \
             h AS (SELECT j, (j * 2654435761) % 1000003 AS h FROM s), \
             e AS (SELECT j, ((j - 1) % ?2) + 1 AS r, ?3 + j * ?4 AS t, j % 3 = 0 AS billing, \
                CASE WHEN j > ?1 - ?5 THEN 'pending' WHEN h % 400 = 2 THEN 'dead_lettered' \
                     WHEN h % 50 = 0 THEN 'echo' WHEN h % 50 = 1 THEN 'superseded' ELSE 'applied' END AS state \
                FROM h) \
             INSERT INTO inbox (id, source, event_id, via, event_type, object_type, object_id, entity_key, payload, \
                received_at_ms, state, state_reason, decided_at_ms) \
             SELECT ?6 + j, \
                CASE WHEN billing THEN 'billing' ELSE 'crm' END, \
                CASE WHEN billing THEN printf('evt_scale%d_%d', ?6, j) ELSE printf('%d', 9000000000 + ?6 + j) END, \
                CASE WHEN j % 10 = 0 THEN 'poll' ELSE 'webhook' END, \
                CASE WHEN billing THEN 'customer.updated' ELSE 'contact.propertyChange' END, \
                CASE WHEN billing THEN 'customer' ELSE 'contact' END, \
                CASE WHEN billing THEN printf('cus_scale%07d', r) ELSE printf('scale-%07d', r) END, \
                printf('customer:crm:scale-%07d', r), \
                CASE WHEN billing THEN printf('{\"id\":\"evt_scale%d_%d\",\"object\":\"event\",\"type\":\"customer.updated\",\"created\":%d,\"data\":{\"object\":{\"id\":\"cus_scale%07d\",\"object\":\"customer\",\"email\":\"scale%07d@example.test\",\"name\":\"Scale %d\"}}}', ?6, j, t / 1000, r, r, j) \
                     ELSE printf('{\"eventId\":%d,\"subscriptionType\":\"contact.propertyChange\",\"objectId\":\"scale-%07d\",\"propertyName\":\"%s\",\"propertyValue\":\"scale%07d-%d\",\"occurredAt\":%d}', 9000000000 + ?6 + j, r, CASE j % 2 WHEN 0 THEN 'firstname' ELSE 'email' END, r, j, t) END, \
                t, state, \
                CASE state WHEN 'echo' THEN 'values match our latest write' WHEN 'superseded' THEN printf('coalesced into event %d', ?6 + j + ?2) \
                     WHEN 'dead_lettered' THEN 'its write was dead-lettered' END, \
                CASE WHEN state = 'pending' THEN NULL ELSE t + 20 + (j % 180) END \
             FROM e",
        )
        .bind(n)
        .bind(r)
        .bind(start)
        .bind(step)
        .bind(pending)
        .bind(base)
        .execute(&mut *tx)
        .await?;
        // The inbox's per-state counts: its insert paths add what they insert (migration 16).
        sqlx::query(
            "UPDATE ledger_counts SET n = n + (SELECT COUNT(*) FROM inbox WHERE id > ?1 AND state = ledger_counts.key) \
             WHERE tbl = 'inbox'",
        )
        .bind(base)
        .execute(&mut *tx)
        .await?;
        let duplicates = sqlx::query(
            "INSERT INTO inbox_duplicates (inbox_id, via, received_at_ms) \
             SELECT id, CASE WHEN id % 40 = 7 THEN 'poll' ELSE 'webhook' END, received_at_ms + 1500 \
             FROM inbox WHERE id > ?1 AND id % 20 = 7 ORDER BY id",
        )
        .bind(base)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        // One write per four decided real events, to the other side.
        let writes = sqlx::query(
            "INSERT INTO outbox (entity_key, destination, op, target_id, idempotency_key, correlation_id, field_values, \
                cause_inbox_id, lane, state, attempts, last_error, response_status, response, result_id, \
                created_at_ms, updated_at_ms, done_at_ms) \
             SELECT i.entity_key, \
                CASE i.source WHEN 'crm' THEN 'billing' ELSE 'crm' END, \
                CASE i.source WHEN 'crm' THEN 'update_customer' ELSE 'update_contact' END, \
                CASE i.source WHEN 'crm' THEN 'cus_' || replace(substr(i.entity_key, 14), '-', '') ELSE substr(i.entity_key, 14) END, \
                CASE i.source WHEN 'crm' THEN 'billing:update:' || substr(i.entity_key, 14) || ':' || i.event_id \
                     ELSE 'crm:invoice:cus_' || replace(substr(i.entity_key, 14), '-', '') || ':' || i.event_id END, \
                printf('drl-%016x', i.id * 2654435761), \
                CASE i.source WHEN 'crm' THEN json_object('email', replace(substr(i.entity_key, 14), '-', '') || '@example.test') \
                     ELSE json_object('invoice_balance', (i.id % 997) * 100) END, \
                i.id, 'live', \
                CASE i.state WHEN 'dead_lettered' THEN 'dead_lettered' ELSE 'done' END, \
                CASE i.state WHEN 'dead_lettered' THEN 8 ELSE 1 END, \
                CASE i.state WHEN 'dead_lettered' THEN 'seeded failure' END, \
                CASE WHEN i.state <> 'dead_lettered' THEN 200 \
                     ELSE CASE (i.id / 400) % 4 WHEN 0 THEN 400 WHEN 1 THEN 503 WHEN 2 THEN 401 ELSE 404 END END, \
                CASE WHEN i.state = 'dead_lettered' THEN '{\"error\":{\"message\":\"seeded\"}}' \
                     ELSE '{\"id\":\"' || CASE i.source WHEN 'crm' THEN 'cus_' || replace(substr(i.entity_key, 14), '-', '') \
                     ELSE substr(i.entity_key, 14) END || '\"}' END, \
                CASE WHEN i.state = 'dead_lettered' THEN NULL WHEN i.source = 'crm' THEN 'cus_' || replace(substr(i.entity_key, 14), '-', '') \
                     ELSE substr(i.entity_key, 14) END, \
                i.decided_at_ms - 15, i.decided_at_ms, i.decided_at_ms \
             FROM inbox i WHERE i.id > ?1 AND (i.state = 'dead_lettered' \
                OR (i.state = 'applied' AND ((i.id - ?1) * 2654435761 % 1000003) % 4 = 2)) ORDER BY i.id",
        )
        .bind(base)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        let dead_letters = sqlx::query(
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
                o.response, o.attempts, o.updated_at_ms \
             FROM outbox o WHERE o.cause_inbox_id > ?1 AND o.state = 'dead_lettered' ORDER BY o.id",
        )
        .bind(base)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        // The audit trail in time order: the decision on each real event, then each write's fate.
        let audit = sqlx::query(
            "INSERT INTO audit (at_ms, entity_key, inbox_id, outbox_id, actor, action, rule, contract_version, detail) \
             SELECT at_ms, entity_key, inbox_id, outbox_id, 'engine', action, rule, ?2, detail FROM ( \
               SELECT i.decided_at_ms - 20 AS at_ms, i.entity_key, i.id AS inbox_id, o.id AS outbox_id, 'decide' AS action, \
                  CASE i.source WHEN 'crm' THEN 'owner:crm' ELSE 'owner:billing' END AS rule, \
                  json_object('field', CASE i.source WHEN 'crm' THEN 'email' ELSE 'invoice_balance' END, \
                     'outcome', CASE WHEN o.id IS NULL THEN 'in sync' ELSE 'write ' || o.destination END) AS detail, \
                  i.id * 3 AS ord \
               FROM inbox i LEFT JOIN outbox o ON o.cause_inbox_id = i.id \
               WHERE i.id > ?1 AND i.state IN ('applied', 'dead_lettered') \
               UNION ALL \
               SELECT o.done_at_ms, o.entity_key, o.cause_inbox_id, o.id, \
                  CASE o.state WHEN 'done' THEN 'write_applied' ELSE 'dead_letter' END, \
                  CASE o.state WHEN 'done' THEN NULL ELSE 'retry:' || d.error_class END, \
                  CASE o.state WHEN 'done' THEN json_object('destination', o.destination, 'op', o.op, 'target', o.target_id, \
                     'idempotency_key', o.idempotency_key, 'correlation_id', o.correlation_id, 'attempt', 1) \
                  ELSE json_object('dead_letter', d.id, 'error', d.error, 'outcome', d.error_class) END, \
                  o.cause_inbox_id * 3 + 1 \
               FROM outbox o LEFT JOIN dead_letters d ON d.outbox_id = o.id WHERE o.cause_inbox_id > ?1 \
             ) ORDER BY ord",
        )
        .bind(base)
        .bind(&cv)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        sqlx::query(
            "WITH RECURSIVE s(r) AS (SELECT 1 UNION ALL SELECT r + 1 FROM s WHERE r < ?1) \
             INSERT INTO identity_map (object, crm_id, billing_id, created_at_ms, updated_at_ms) \
             SELECT 'customer', printf('scale-%07d', r), printf('cus_scale%07d', r), ?2, ?2 FROM s WHERE true \
             ON CONFLICT (object, crm_id) DO NOTHING",
        )
        .bind(r.min(n.max(1)))
        .bind(start)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "WITH RECURSIVE s(r) AS (SELECT 1 UNION ALL SELECT r + 1 FROM s WHERE r < ?1), \
             k AS (SELECT r, printf('customer:crm:scale-%07d', r) AS key FROM s), \
             v AS (SELECT k.r, k.key, (SELECT MAX(id) FROM inbox WHERE entity_key = k.key) AS seq FROM k) \
             INSERT INTO shadow (entity_key, side, field, value, sync_seq, synced_at_ms) \
             SELECT v.key, side.s, field.f, \
                CASE field.f WHEN 'email' THEN printf('scale%07d@example.test', v.r) ELSE printf('Scale %d', v.r) END, \
                v.seq, ?2 \
             FROM v, (SELECT 'crm' AS s UNION ALL SELECT 'billing') side, (SELECT 'email' AS f UNION ALL SELECT 'name') field \
             WHERE v.seq IS NOT NULL \
             ON CONFLICT (entity_key, side, field) DO UPDATE SET sync_seq = excluded.sync_seq",
        )
        .bind(r.min(n.max(1)))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO work_queue (entity_key, ready_seq, last_seq) \
             SELECT entity_key, MIN(id), MAX(id) FROM inbox WHERE id > ?1 AND state = 'pending' GROUP BY entity_key \
             ON CONFLICT (entity_key) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), \
                ready_seq = min(ready_seq, excluded.ready_seq)",
        )
        .bind(base)
        .execute(&mut *tx)
        .await?;
        // The overview's charts: an hour of per-minute rollups.
        sqlx::query(
            "WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i < 59), \
             names(name, labels, base) AS (VALUES ('lag_p50_ms', '', 180), ('lag_p95_ms', '', 900), \
                ('dedupe_drops', '', 30), ('echo_drops', 'crm', 12), ('echo_drops', 'billing', 6), \
                ('rate_limited', 'crm', 1), ('rate_limited', 'billing', 0), ('rate_wait_ms', 'crm', 1200), \
                ('rate_wait_ms', 'billing', 0), ('queue_depth', 'crm', 4), ('queue_depth', 'billing', 3), \
                ('errors', 'crm', 1), ('errors', 'billing', 1), ('writes', 'crm', 60), ('writes', 'billing', 110), \
                ('dead_letter_depth', '', ?2), ('review_depth', '', 0), ('records_queued', '', 20)) \
             INSERT INTO metric_samples (name, labels, minute, value) \
             SELECT name, labels, ?1 / 60000 - i, base + (i * 7) % 5 FROM names, m WHERE true \
             ON CONFLICT (name, labels, minute) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms)
        .bind(dead_letters)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SeedSummary {
            events: n,
            pending,
            duplicates,
            writes,
            dead_letters,
            audit,
            records: r.min(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeadLetterFilter;
    use crate::ledger::LedgerTable;

    #[tokio::test]
    async fn a_seeded_history_counts_right_and_the_console_reads_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let now = 1_800_000_000_000;
        let s = l.seed_history(20_000, 500, now).await.unwrap();
        assert_eq!((s.events, s.pending, s.records), (20_000, 20, 500));
        assert_eq!(l.count(LedgerTable::Inbox).await.unwrap(), 20_000);
        assert_eq!(s.duplicates, 1_000, "one in twenty");
        assert_eq!(l.count(LedgerTable::InboxDuplicates).await.unwrap(), 1_000);
        assert_eq!(l.count(LedgerTable::Outbox).await.unwrap(), s.writes);
        assert!((4_000..=5_500).contains(&s.writes), "about one in four: {s:?}");
        assert!((25..=80).contains(&s.dead_letters), "about one event in 400: {s:?}");
        assert_eq!(l.count(LedgerTable::DeadLetters).await.unwrap(), s.dead_letters);
        assert_eq!(l.count(LedgerTable::Audit).await.unwrap(), s.audit);
        assert_eq!(
            l.count(LedgerTable::WorkQueue).await.unwrap(),
            20,
            "the pending events' records"
        );

        let st = l.status_at(now).await.unwrap();
        assert_eq!(st.distinct_events, 20_000);
        assert_eq!(st.events["pending"], 20);
        assert!((300..=500).contains(&st.events["echo"]), "{:?}", st.events);
        assert!((300..=500).contains(&st.events["superseded"]), "{:?}", st.events);
        assert_eq!(st.events["dead_lettered"], s.dead_letters);
        assert_eq!(st.events["duplicate"], 1_000);
        // The seeder counts its own rows per state (it bypasses the insert path's count).
        let census = l.event_census().await.unwrap();
        assert_eq!(census.mismatches(), Vec::<String>::new(), "seeded counters vs rows");
        assert_eq!(census.counted, st.events);
        assert_eq!(st.dead_letter_depth, s.dead_letters);
        assert_eq!(st.queue_depth, 20);
        assert_eq!(
            st.writes["billing"].dead_lettered + st.writes["crm"].dead_lettered,
            s.dead_letters
        );
        assert!(st.lag_ms.samples > 0);

        let (total, page) = l
            .dead_letters(
                &DeadLetterFilter {
                    limit: Some(10),
                    ..Default::default()
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!((total, page.len()), (s.dead_letters, 10));
        assert!(page[0].record.starts_with("customer:crm:scale-"));

        let key = seeded_record(7);
        assert_eq!(l.find_record(&key).await.unwrap().as_deref(), Some(key.as_str()));
        assert_eq!(
            l.find_record("cus_scale0000007").await.unwrap().as_deref(),
            Some(key.as_str())
        );
        let t = l.timeline(&key).await.unwrap();
        let kinds = |k: &str| t.iter().filter(|e| e.kind == k).count();
        assert_eq!(kinds("event"), 40, "20,000 events over 500 records");
        assert!(kinds("decision") > 0 && kinds("write") > 0, "{t:?}");
        assert!(t.windows(2).all(|w| (w[0].at_ms, w[0].id) <= (w[1].at_ms, w[1].id)));
        // Writes carry the contract's key shapes and are unique across a second seeding.
        let s2 = l.seed_history(1_000, 500, now).await.unwrap();
        assert_eq!(l.count(LedgerTable::Inbox).await.unwrap(), 21_000);
        assert_eq!(l.count(LedgerTable::Outbox).await.unwrap(), s.writes + s2.writes);
    }
}
