//! Operator operations' SQL: dead letters (list, blast radius, retry, discard), the record
//! timeline, un-drop.

use std::collections::{BTreeMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Ledger, Result, WriteTx};
use crate::api::{BlastRadius, Change, DeadLetter, DeadLetterFilter, ReviewField, ReviewItem, TimelineEntry};

/// The record's contract object: the part of the queue key before the first `:`.
pub(super) fn object_of(key: &str) -> String {
    key.split(':').next().unwrap_or_default().to_string()
}

/// Push the WHERE clause a dead-letter filter means.
pub(super) fn push_filter(qb: &mut QueryBuilder<'_, Sqlite>, f: &DeadLetterFilter, now_ms: i64) {
    qb.push(" WHERE 1 = 1");
    if !f.include_resolved {
        qb.push(" AND d.resolved_at_ms IS NULL");
    }
    if let Some(d) = &f.destination {
        qb.push(" AND d.destination = ").push_bind(d.clone());
    }
    if let Some(c) = &f.error_class {
        qb.push(" AND d.error_class = ").push_bind(c.clone());
    }
    if let Some(o) = &f.object {
        qb.push(" AND d.entity_key LIKE ").push_bind(format!("{o}:%"));
    }
    if let Some(a) = f.min_age_ms {
        qb.push(" AND d.created_at_ms <= ").push_bind(now_ms.saturating_sub(a));
    }
    if let Some(a) = f.max_age_ms {
        qb.push(" AND d.created_at_ms >= ").push_bind(now_ms.saturating_sub(a));
    }
    if let Some(t) = f.text.as_ref().filter(|t| !t.is_empty()) {
        let like = format!("%{t}%");
        qb.push(" AND (d.error LIKE ")
            .push_bind(like.clone())
            .push(" OR d.entity_key LIKE ")
            .push_bind(like.clone())
            .push(" OR d.request LIKE ")
            .push_bind(like)
            .push(")");
    }
    if !f.ids.is_empty() {
        qb.push(" AND d.id IN (");
        let mut sep = qb.separated(", ");
        for id in &f.ids {
            sep.push_bind(*id);
        }
        qb.push(")");
    }
}

/// An invoice amount carried by a write, if any (`amount_remaining`, `amount_due`, `amount`).
pub(super) fn amount_of(request: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(request).ok()?;
    let fields = v.get("fields")?;
    ["invoice_balance", "amount_remaining", "amount_due", "amount"]
        .iter()
        .find_map(|k| fields.get(*k))
        .and_then(|x| match x {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.parse::<f64>().ok().map(|f| f as i64),
            _ => None,
        })
}

impl Ledger {
    /// Dead letters matching a filter, newest first, with the total count.
    pub async fn dead_letters(&self, f: &DeadLetterFilter, now_ms: i64) -> Result<(i64, Vec<DeadLetter>)> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT COUNT(*) FROM dead_letters d");
        push_filter(&mut qb, f, now_ms);
        let total: i64 = qb.build_query_scalar().fetch_one(&self.reader).await?;
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(super::dead_letters::COLUMNS);
        push_filter(&mut qb, f, now_ms);
        qb.push(" ORDER BY d.id DESC LIMIT ")
            .push_bind(f.limit.unwrap_or(500).clamp(1, 100_000))
            .push(" OFFSET ")
            .push_bind(f.offset.unwrap_or(0).max(0));
        let rows = qb.build().fetch_all(&self.reader).await?;
        let items = rows
            .iter()
            .map(super::dead_letters::dead_letter)
            .collect::<Result<Vec<_>>>()?;
        Ok((total, items))
    }

    /// One dead letter's stored request and response.
    pub async fn dead_letter_payloads(&self, id: i64) -> Result<Option<(String, Option<String>, Option<i64>)>> {
        let row = sqlx::query(
            "SELECT d.request, d.response, o.cause_inbox_id FROM dead_letters d JOIN outbox o ON o.id = d.outbox_id WHERE d.id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    /// What a bulk action on the filtered set would touch.
    pub async fn blast_radius(&self, f: &DeadLetterFilter, now_ms: i64) -> Result<BlastRadius> {
        let items = self.all_dead_letters(f, now_ms).await?;
        let mut by_destination: BTreeMap<String, i64> = BTreeMap::new();
        let mut records = HashSet::new();
        let mut amount = 0;
        for d in &items {
            *by_destination.entry(d.destination.clone()).or_default() += 1;
            records.insert(d.record.clone());
            amount += d.amount_cents.unwrap_or(0);
        }
        Ok(BlastRadius {
            dead_letters: items.len() as i64,
            records: records.len() as i64,
            amount_cents: amount,
            by_destination,
        })
    }

    /// Resolve the filtered dead letters. `retry`: their records are planned again from the
    /// systems' current state (a fresh read, so nothing stale is written); otherwise they are
    /// discarded. Audited with the operator and reason. Returns the records touched.
    pub async fn resolve_dead_letters(
        &self,
        f: &DeadLetterFilter,
        retry: bool,
        reason: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<String>> {
        let mut all = f.clone();
        all.include_resolved = false;
        let items = self.all_dead_letters(&all, now_ms).await?;
        let mut tx = self.begin().await?;
        let resolution = if retry {
            format!("retried by {by}: {reason}")
        } else {
            format!("discarded by {by}: {reason}")
        };
        let mut records: Vec<String> = Vec::new();
        for d in &items {
            sqlx::query(
                "UPDATE dead_letters SET resolved_at_ms = ?2, resolution = ?3 WHERE id = ?1 AND resolved_at_ms IS NULL",
            )
            .bind(d.id)
            .bind(now_ms)
            .bind(&resolution)
            .execute(&mut *tx)
            .await?;
            Self::audit_operator(
                &mut tx,
                now_ms,
                Some(&d.record),
                None,
                by,
                if retry {
                    "dead_letter_retry"
                } else {
                    "dead_letter_discard"
                },
                serde_json::json!({"dead_letter": d.id, "reason": reason, "idempotency_key": d.idempotency_key}),
            )
            .await?;
            if !records.contains(&d.record) {
                records.push(d.record.clone());
            }
        }
        if retry {
            for key in &records {
                Self::enqueue_replan(&mut tx, key).await?;
            }
        }
        tx.commit().await?;
        Ok(records)
    }

    /// Put a record in the queue with its "plan again" mark (replay, retry, review resolution).
    pub(super) async fn enqueue_replan(tx: &mut WriteTx, key: &str) -> Result<()> {
        Self::enqueue_replan_lane(tx, key, false).await
    }

    /// Queue a record to be planned again; `bulk` work queues behind all live work (a record
    /// already queued keeps its place).
    async fn enqueue_replan_lane(tx: &mut WriteTx, key: &str, bulk: bool) -> Result<()> {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM inbox")
            .fetch_one(&mut **tx)
            .await?;
        let ready = if bulk { seq + super::BULK_SEQ_BASE } else { seq };
        sqlx::query(
            "INSERT INTO work_queue (entity_key, ready_seq, last_seq, replan) VALUES (?1, ?3, ?2, 1) \
             ON CONFLICT (entity_key) DO UPDATE SET replan = 1, not_before_ms = 0, replay_run = NULL",
        )
        .bind(key)
        .bind(seq)
        .bind(ready)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The writes already holding any of these idempotency keys: key -> (outbox id, state).
    pub async fn writes_by_key(&self, keys: &[String]) -> Result<std::collections::HashMap<String, (i64, String)>> {
        let mut out = std::collections::HashMap::new();
        for key in keys {
            let row = sqlx::query("SELECT id, state FROM outbox WHERE idempotency_key = ?1")
                .bind(key)
                .fetch_optional(&self.reader)
                .await?;
            if let Some(r) = row {
                out.insert(key.clone(), (r.try_get(0)?, r.try_get(1)?));
            }
        }
        Ok(out)
    }

    /// Records with inbound events received in `[from_ms, to_ms)`.
    pub async fn records_with_events_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT entity_key FROM inbox WHERE received_at_ms >= ?1 AND received_at_ms < ?2 ORDER BY entity_key",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.reader)
        .await?)
    }

    /// What a plan without a new event (a follow-up, a replay, a retry) hangs off: the record's
    /// latest write — (its cause, a tag naming it) — or else its latest event.
    pub async fn last_cause(&self, key: &str) -> Result<Option<(i64, String)>> {
        let key = key.to_string();
        self.hot(move |db| {
            let op = super::group::rows(
                db,
                "SELECT cause_inbox_id, id FROM outbox WHERE entity_key = ?1 AND cause_inbox_id IS NOT NULL \
                 ORDER BY id DESC LIMIT 1",
                [&key],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            if let Some((cause, op_id)) = op.into_iter().next() {
                return Ok(Some((cause, format!("after-op-{op_id}"))));
            }
            let ev = super::group::rows(
                db,
                "SELECT id, source || ':' || event_id FROM inbox WHERE entity_key = ?1 ORDER BY id DESC LIMIT 1",
                [&key],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )?;
            Ok(ev
                .into_iter()
                .next()
                .map(|(id, tag)| (id, format!("replan-{tag}-{id}"))))
        })
        .await
    }

    /// Find a record's queue key by CRM id, billing id (identity map) or email (shadow).
    pub async fn find_record(&self, query: &str) -> Result<Option<String>> {
        let q = query.trim();
        if q.contains(':') {
            let hit: Option<String> = sqlx::query_scalar("SELECT entity_key FROM inbox WHERE entity_key = ?1 LIMIT 1")
                .bind(q)
                .fetch_optional(&self.reader)
                .await?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        let by_billing: Option<String> =
            sqlx::query_scalar("SELECT object || ':crm:' || crm_id FROM identity_map WHERE billing_id = ?1 LIMIT 1")
                .bind(q)
                .fetch_optional(&self.reader)
                .await?;
        if by_billing.is_some() {
            return Ok(by_billing);
        }
        let by_crm: Option<String> = sqlx::query_scalar(
            "SELECT entity_key FROM inbox WHERE entity_key = 'customer:crm:' || ?1 OR entity_key LIKE '%:crm:' || ?1 LIMIT 1",
        )
        .bind(q)
        .fetch_optional(&self.reader)
        .await?;
        if by_crm.is_some() {
            return Ok(by_crm);
        }
        let by_email: Option<String> = sqlx::query_scalar(
            "SELECT entity_key FROM shadow WHERE field = 'email' AND lower(value) = lower(?1) ORDER BY sync_seq DESC LIMIT 1",
        )
        .bind(q)
        .fetch_optional(&self.reader)
        .await?;
        if by_email.is_some() {
            return Ok(by_email);
        }
        // Not synced yet: an email we tried to write, or one a CRM event carried.
        let by_write: Option<String> = sqlx::query_scalar(
            "SELECT entity_key FROM outbox WHERE lower(json_extract(field_values, '$.email')) = lower(?1) \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(q)
        .fetch_optional(&self.reader)
        .await?;
        if by_write.is_some() {
            return Ok(by_write);
        }
        Ok(sqlx::query_scalar(
            "SELECT entity_key FROM inbox WHERE source = 'crm' AND json_extract(payload, '$.propertyName') = 'email' \
             AND lower(json_extract(payload, '$.propertyValue')) = lower(?1) ORDER BY id DESC LIMIT 1",
        )
        .bind(q)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// The causal chain of one record: events with their fate, duplicates, decisions with
    /// rule and contract version, writes with idempotency key, correlation id and response.
    pub async fn timeline(&self, key: &str) -> Result<Vec<TimelineEntry>> {
        let mut out = Vec::new();
        let rows = sqlx::query(
            "SELECT id, source, event_id, event_type, received_at_ms, state, state_reason, payload, via FROM inbox \
             WHERE entity_key = ?1 ORDER BY id",
        )
        .bind(key)
        .fetch_all(&self.reader)
        .await?;
        let mut inbox_ids = Vec::new();
        for r in rows {
            let id: i64 = r.try_get(0)?;
            inbox_ids.push(id);
            let source: String = r.try_get(1)?;
            let event_id: String = r.try_get(2)?;
            let typ: String = r.try_get(3)?;
            let reason: Option<String> = r.try_get(6)?;
            let via: String = r.try_get(8)?;
            out.push(TimelineEntry {
                at_ms: r.try_get(4)?,
                kind: "event".into(),
                id,
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
            });
        }
        let dups = sqlx::query(
            "SELECT d.id, d.inbox_id, d.received_at_ms, d.via, i.source, i.event_id FROM inbox_duplicates d \
             JOIN inbox i ON i.id = d.inbox_id WHERE i.entity_key = ?1 ORDER BY d.id",
        )
        .bind(key)
        .fetch_all(&self.reader)
        .await?;
        for r in dups {
            let original: i64 = r.try_get(1)?;
            let source: String = r.try_get(4)?;
            let event_id: String = r.try_get(5)?;
            let via: String = r.try_get(3)?;
            out.push(TimelineEntry {
                at_ms: r.try_get(2)?,
                kind: "duplicate".into(),
                id: r.try_get(0)?,
                side: Some(source.clone()),
                summary: format!("{source} {event_id} delivered again via {via}: dropped as a duplicate"),
                state: Some("duplicate".into()),
                rule: Some("dedupe".into()),
                contract_version: None,
                idempotency_key: None,
                correlation_id: None,
                // The event this delivery repeats: un-dropping acts on it.
                detail: Some(serde_json::json!({"original_inbox_id": original, "event_id": event_id}).to_string()),
            });
        }
        let audits = sqlx::query(
            "SELECT id, at_ms, actor, action, rule, contract_version, detail FROM audit WHERE entity_key = ?1 ORDER BY id",
        )
        .bind(key)
        .fetch_all(&self.reader)
        .await?;
        for r in audits {
            let actor: String = r.try_get(2)?;
            let action: String = r.try_get(3)?;
            let detail: Option<String> = r.try_get(6)?;
            let outcome = detail
                .as_deref()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                .and_then(|v| {
                    v.get("outcome")
                        .or_else(|| v.get("reason"))
                        .and_then(|o| o.as_str().map(str::to_string))
                })
                .unwrap_or_default();
            out.push(TimelineEntry {
                at_ms: r.try_get(1)?,
                kind: if actor == "engine" {
                    "decision".into()
                } else {
                    "operator".into()
                },
                id: r.try_get(0)?,
                side: None,
                summary: format!(
                    "{actor}: {action}{}",
                    if outcome.is_empty() {
                        String::new()
                    } else {
                        format!(" — {outcome}")
                    }
                ),
                state: None,
                rule: r.try_get(4)?,
                contract_version: r.try_get(5)?,
                idempotency_key: None,
                correlation_id: None,
                detail,
            });
        }
        let writes = sqlx::query(
            "SELECT id, destination, op, target_id, idempotency_key, correlation_id, field_values, state, attempts, \
             response_status, response, last_error, created_at_ms FROM outbox WHERE entity_key = ?1 ORDER BY id",
        )
        .bind(key)
        .fetch_all(&self.reader)
        .await?;
        for r in writes {
            let dest: String = r.try_get(1)?;
            let op: String = r.try_get(2)?;
            let target: Option<String> = r.try_get(3)?;
            let attempts: i64 = r.try_get(8)?;
            let status: Option<i64> = r.try_get(9)?;
            let response: Option<String> = r.try_get(10)?;
            let error: Option<String> = r.try_get(11)?;
            let values: String = r.try_get(6)?;
            out.push(TimelineEntry {
                at_ms: r.try_get(12)?,
                kind: "write".into(),
                id: r.try_get(0)?,
                side: Some(dest.clone()),
                summary: format!(
                    "{op} on {dest}{} — {attempts} attempt(s){}",
                    target.map(|t| format!(" {t}")).unwrap_or_default(),
                    status.map(|s| format!(", last status {s}")).unwrap_or_default()
                ),
                state: Some(r.try_get(7)?),
                rule: None,
                contract_version: None,
                idempotency_key: Some(r.try_get(4)?),
                correlation_id: Some(r.try_get(5)?),
                detail: Some(
                    serde_json::json!({"values": serde_json::from_str::<serde_json::Value>(&values).ok(),
                        "response": response, "error": error})
                    .to_string(),
                ),
            });
        }
        out.sort_by_key(|e| (e.at_ms, e.id));
        Ok(out)
    }

    /// Requeue a dropped event (echo or duplicate) on an operator's word: the event is pending
    /// again and its record is planned afresh. Returns the record key.
    pub async fn undrop(&self, inbox_id: i64, by: &str, reason: &str, now_ms: i64) -> Result<Option<String>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT entity_key, state FROM inbox WHERE id = ?1")
            .bind(inbox_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key: String = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        sqlx::query(
            "UPDATE inbox SET state = 'pending', state_reason = ?2, decided_at_ms = NULL WHERE id = ?1 \
             AND state IN ('echo', 'superseded', 'applied') \
             AND NOT EXISTS (SELECT 1 FROM outbox WHERE cause_inbox_id = ?1)",
        )
        .bind(inbox_id)
        .bind(format!("un-dropped by {by}: {reason}"))
        .execute(&mut *tx)
        .await?;
        Self::enqueue_replan(&mut tx, &key).await?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            Some(&key),
            Some(inbox_id),
            by,
            "undrop",
            serde_json::json!({"reason": reason, "was": state}),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(key))
    }

    /// Open review items, oldest first, with their fields and the record's recent changes.
    pub async fn open_reviews(&self, limit: i64) -> Result<Vec<ReviewItem>> {
        let rows = sqlx::query(
            "SELECT id, entity_key, reason, fields, created_at_ms FROM review_queue WHERE resolved_at_ms IS NULL ORDER BY id LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key: String = r.try_get(1)?;
            let fields: String = r.try_get(3)?;
            let fields: Vec<ReviewField> = serde_json::from_str(&fields).unwrap_or_default();
            let changes = self.recent_changes(&key, 20).await?;
            out.push(ReviewItem {
                id: r.try_get(0)?,
                record: key,
                reason: r.try_get(2)?,
                created_at_ms: r.try_get(4)?,
                fields,
                changes,
            });
        }
        Ok(out)
    }

    /// One open review item.
    pub async fn open_review(&self, id: i64) -> Result<Option<ReviewItem>> {
        Ok(self.open_reviews(100_000).await?.into_iter().find(|r| r.id == id))
    }

    /// The record's latest inbound changes, newest first.
    async fn recent_changes(&self, key: &str, limit: i64) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT source, received_at_ms, event_id, payload FROM inbox WHERE entity_key = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(key)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                let side: String = r.try_get(0)?;
                let payload: String = r.try_get(3)?;
                let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
                let (what, source) = describe_change(&side, &v);
                Ok(Change {
                    side,
                    at_ms: r.try_get(1)?,
                    event_id: r.try_get(2)?,
                    what,
                    source,
                })
            })
            .collect()
    }

    /// Settle a review: its writes are queued (with their idempotency keys), the item is
    /// closed with the operator's reason, and the record is planned again afterwards.
    pub async fn resolve_review(
        &self,
        id: i64,
        ops: &[super::NewOp],
        resolution: &serde_json::Value,
        by: &str,
        now_ms: i64,
    ) -> Result<Option<String>> {
        let mut tx = self.begin().await?;
        let key: Option<String> =
            sqlx::query_scalar("SELECT entity_key FROM review_queue WHERE id = ?1 AND resolved_at_ms IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(key) = key else { return Ok(None) };
        for op in ops {
            sqlx::query(
                "INSERT INTO outbox (entity_key, destination, op, target_id, idempotency_key, correlation_id, \
                 field_values, cause_inbox_id, lane, created_at_ms, updated_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'review', ?9, ?9) ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&key)
            .bind(op.destination.as_str())
            .bind(op.op.as_str())
            .bind(&op.target_id)
            .bind(&op.idempotency_key)
            .bind(&op.correlation_id)
            .bind(serde_json::Value::Object(op.field_values.clone()).to_string())
            .bind(op.cause_inbox_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE review_queue SET resolved_at_ms = ?2, resolution = ?3 WHERE id = ?1")
            .bind(id)
            .bind(now_ms)
            .bind(resolution.to_string())
            .execute(&mut *tx)
            .await?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            Some(&key),
            None,
            by,
            "review_resolved",
            resolution.clone(),
        )
        .await?;
        Self::enqueue_replan(&mut tx, &key).await?;
        tx.commit().await?;
        Ok(Some(key))
    }
}

/// One line for a person: what an inbound event changed, and who it says did it.
fn describe_change(side: &str, v: &serde_json::Value) -> (String, Option<String>) {
    if side == "crm" {
        let prop = v.get("propertyName").and_then(|p| p.as_str());
        let what = match prop {
            Some(p) => format!(
                "{p} = {}",
                v.get("propertyValue").map(|x| x.to_string()).unwrap_or_default()
            ),
            None => v
                .get("subscriptionType")
                .and_then(|t| t.as_str())
                .unwrap_or("change")
                .to_string(),
        };
        return (what, v.get("changeSource").and_then(|s| s.as_str()).map(str::to_string));
    }
    let typ = v.get("type").and_then(|t| t.as_str()).unwrap_or("event");
    let obj = v.get("data").and_then(|d| d.get("object"));
    let mut parts = Vec::new();
    if let Some(prev) = v
        .get("data")
        .and_then(|d| d.get("previous_attributes"))
        .and_then(|p| p.as_object())
    {
        for (k, old) in prev {
            if k == "metadata" {
                for (mk, mold) in old.as_object().into_iter().flatten() {
                    let new = obj.and_then(|o| o.get("metadata")).and_then(|m| m.get(mk));
                    parts.push(format!(
                        "metadata.{mk}: {mold} -> {}",
                        new.map(|n| n.to_string()).unwrap_or_default()
                    ));
                }
            } else {
                let new = obj.and_then(|o| o.get(k));
                parts.push(format!(
                    "{k}: {old} -> {}",
                    new.map(|n| n.to_string()).unwrap_or_default()
                ));
            }
        }
    }
    let what = if parts.is_empty() {
        typ.to_string()
    } else {
        format!("{typ}: {}", parts.join(", "))
    };
    let source = match v.get("request").and_then(|r| r.get("id")) {
        Some(serde_json::Value::Null) | None => Some("dashboard".to_string()),
        Some(_) => Some("api".to_string()),
    };
    (what, source)
}
