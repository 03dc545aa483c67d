//! Operator operations: dead letters, the review queue, the record timeline, un-drop and replay. Each is one
//! engine function used by the CLI, the HTTP API and the desktop app alike.

use super::{worker, Engine, EngineError, Inner};
use crate::api::{
    BulkResult, DeadLetterFilter, DeadLetterList, ReplayPreview, ReplaySelector, ReplayWrite, ReviewItem,
    ReviewResolution, Timeline,
};
use crate::contract::Side;
use crate::ingest::parse_entity_key;

const SAMPLES_PER_KIND: usize = 5;
/// The most records a replay previews (each costs reads of both systems).
pub const PREVIEW_MAX: usize = 200;
/// Records previewed at once; their reads still wait in each budget's bulk lane.
const PREVIEW_CONCURRENCY: usize = 8;
/// How long a preview reads before it answers with what it has (the records it previewed).
const PREVIEW_TIME: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    pub async fn list_dead_letters(&self, f: &DeadLetterFilter) -> Result<DeadLetterList, EngineError> {
        let (total, items) = self.inner.ledger.dead_letters(f, self.inner.now_ms()).await?;
        Ok(DeadLetterList { total, items })
    }

    /// Retry the filtered dead letters: their records are planned again from current state.
    /// `dry_run` only reports the blast radius.
    pub async fn retry_dead_letters(
        &self,
        f: &DeadLetterFilter,
        dry_run: bool,
        reason: &str,
        by: &str,
    ) -> Result<BulkResult, EngineError> {
        self.bulk_dead_letters(f, dry_run, true, reason, by).await
    }

    /// Discard the filtered dead letters with a reason (required).
    pub async fn discard_dead_letters(
        &self,
        f: &DeadLetterFilter,
        dry_run: bool,
        reason: &str,
        by: &str,
    ) -> Result<BulkResult, EngineError> {
        self.bulk_dead_letters(f, dry_run, false, reason, by).await
    }

    async fn bulk_dead_letters(
        &self,
        f: &DeadLetterFilter,
        dry_run: bool,
        retry: bool,
        reason: &str,
        by: &str,
    ) -> Result<BulkResult, EngineError> {
        if !dry_run && reason.trim().is_empty() {
            return Err(EngineError::ReasonRequired);
        }
        let now = self.inner.now_ms();
        let radius = self.inner.ledger.blast_radius(f, now).await?;
        if !dry_run && radius.dead_letters > 0 {
            self.inner
                .ledger
                .resolve_dead_letters(f, retry, reason, by, now)
                .await?;
            self.inner.work.notify_waiters();
        }
        Ok(BulkResult {
            radius,
            applied: !dry_run,
        })
    }

    /// The causal timeline of a record found by email, CRM id, billing id or record key.
    pub async fn record_timeline(&self, query: &str) -> Result<Timeline, EngineError> {
        let key = self
            .inner
            .ledger
            .find_record(query)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no record matches {query:?}")))?;
        let (object, side, id) = parse_entity_key(&key).ok_or_else(|| EngineError::NotFound(key.clone()))?;
        let crm_id = (side == Side::Crm).then(|| id.to_string());
        let billing_id = match &crm_id {
            Some(c) => self.inner.ledger.billing_id_for(object, c).await?,
            None => Some(id.to_string()),
        };
        let entries = self.inner.ledger.timeline(&key).await?;
        Ok(Timeline {
            record: key,
            crm_id,
            billing_id,
            entries,
        })
    }

    /// Requeue a dropped event (echo, superseded or a duplicate's original) for a fresh decision.
    pub async fn undrop_event(&self, inbox_id: i64, reason: &str, by: &str) -> Result<String, EngineError> {
        if reason.trim().is_empty() {
            return Err(EngineError::ReasonRequired);
        }
        let key = self
            .inner
            .ledger
            .undrop(inbox_id, by, reason, self.inner.now_ms())
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no inbound event {inbox_id}")))?;
        self.inner.work.notify_waiters();
        Ok(key)
    }

    async fn replay_records(&self, sel: &ReplaySelector) -> Result<Vec<String>, EngineError> {
        let mut keys = Vec::new();
        if let Some(q) = &sel.record {
            let key = self
                .inner
                .ledger
                .find_record(q)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("no record matches {q:?}")))?;
            keys.push(key);
        }
        if !sel.dead_letter_ids.is_empty() {
            let f = DeadLetterFilter {
                ids: sel.dead_letter_ids.clone(),
                include_resolved: true,
                ..Default::default()
            };
            let (_, items) = self.inner.ledger.dead_letters(&f, self.inner.now_ms()).await?;
            keys.extend(items.into_iter().map(|d| d.record));
        }
        if sel.from_ms.is_some() || sel.to_ms.is_some() {
            let from = sel.from_ms.unwrap_or(0);
            let to = sel.to_ms.unwrap_or(i64::MAX);
            keys.extend(self.inner.ledger.records_with_events_between(from, to).await?);
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty()
            && sel.record.is_none()
            && sel.dead_letter_ids.is_empty()
            && sel.from_ms.is_none()
            && sel.to_ms.is_none()
        {
            return Err(EngineError::BadRequest(
                "choose a time range, a record or dead letters to replay".into(),
            ));
        }
        Ok(keys)
    }

    /// Replay: plan the selected records again from both systems' current state. The dry run
    /// returns the writes it would make (create / update / no-op / conflict); the run queues
    /// the records, so pause, budgets and idempotency keys apply as for live events.
    /// Replay a selection of records: the dry run previews their planned writes (at most
    /// [`PREVIEW_MAX`] of them, for at most `PREVIEW_TIME`), the run queues them all as bulk
    /// work.
    pub async fn replay(&self, sel: &ReplaySelector, dry_run: bool, by: &str) -> Result<ReplayPreview, EngineError> {
        let mut sel = sel.clone();
        if sel.from_ms.is_some() && sel.to_ms.is_none() {
            // "From then on" means up to now: pin it, so the run a preview leads to holds the
            // previewed records and the audit row names the range that ran.
            sel.to_ms = Some(self.inner.now_ms());
        }
        let keys = self.replay_records(&sel).await?;
        let selector = serde_json::to_string(&sel).ok();
        let mut p = self
            .replay_run_keys(&keys, dry_run, by, "replay", selector.as_deref(), &Default::default())
            .await?;
        p.selector = Some(sel);
        Ok(p)
    }

    /// Replay these record keys (replay's selection resolved, or the reconciler's repairs):
    /// the dry run previews their planned writes, the run queues them as bulk work. `causes`
    /// gives the preview the cause (inbox id, tag) of records whose event is not delivered
    /// yet (the reconciler's never-seen records), so it shows the keys the run will use.
    pub(crate) async fn replay_keys(
        &self,
        keys: &[String],
        dry_run: bool,
        by: &str,
        reason: &str,
        causes: &std::collections::BTreeMap<String, (i64, String)>,
    ) -> Result<ReplayPreview, EngineError> {
        self.replay_run_keys(keys, dry_run, by, reason, None, causes).await
    }

    /// [`Engine::replay_keys`]; the run is recorded as a replay run (progress, cancel) with
    /// the operator's selection.
    async fn replay_run_keys(
        &self,
        keys: &[String],
        dry_run: bool,
        by: &str,
        reason: &str,
        selector: Option<&str>,
        causes: &std::collections::BTreeMap<String, (i64, String)>,
    ) -> Result<ReplayPreview, EngineError> {
        use futures_util::StreamExt;
        let mut p = ReplayPreview {
            records: keys.len() as i64,
            ..Default::default()
        };
        let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
        // Each preview reads both systems, and an operator waits for the answer: previews go
        // several at a time, at most PREVIEW_MAX of them, for at most PREVIEW_TIME. Under a
        // billing quota that live sync already fills (the demo: 25 requests/s in use, the
        // preview's reads waiting in the bulk lane behind them, one by one) a time range of
        // ~30 records took 5-20 s; now the answer comes within PREVIEW_TIME with the counts
        // of the records previewed by then (`previewed`), and the run replays every selected
        // record.
        let sample = &keys[..keys.len().min(PREVIEW_MAX)];
        let inner: &Inner = &self.inner;
        let mut pending = Vec::with_capacity(sample.len());
        // A person waits for a preview: its reads take turns with live sync's (a bounded
        // number, for a bounded time) rather than waiting behind all of it as bulk work; the
        // run's own work is bulk.
        let lane = crate::budget::Lane::Live;
        for key in sample {
            let preview = worker::LANE.scope(
                std::cell::Cell::new(lane),
                super::load::preview(inner, key, causes.get(key).cloned()),
            );
            pending.push(async move { (key, preview.await) });
        }
        // In the order they finish: one slow record does not hold back those behind it.
        let mut stream = futures_util::stream::iter(pending).buffer_unordered(PREVIEW_CONCURRENCY);
        let deadline = tokio::time::Instant::now() + PREVIEW_TIME;
        let mut previews = Vec::with_capacity(sample.len());
        // The first record is always previewed, whatever it takes; the rest while time is left.
        while let Ok(Some(x)) = match previews.is_empty() {
            true => Ok(stream.next().await),
            false => tokio::time::timeout_at(deadline, stream.next()).await,
        } {
            previews.push(x);
        }
        p.previewed = previews.len() as i64;
        for (key, preview) in previews {
            let (plan, ops) = match preview {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(_) => {
                    p.unreadable += 1;
                    continue;
                }
            };
            let rules: Vec<String> = plan.decisions.iter().map(|d| d.rule.as_str().to_string()).collect();
            let keys: Vec<String> = ops.iter().map(|o| o.idempotency_key.clone()).collect();
            let used = self.inner.ledger.writes_by_key(&keys).await?;
            let mut rows: Vec<ReplayWrite> = plan
                .writes
                .iter()
                .zip(&ops)
                .map(|(w, op)| {
                    let key_used_by = used
                        .get(&op.idempotency_key)
                        .map(|(id, state)| format!("write {id} ({state})"));
                    if key_used_by.is_some() {
                        p.keys_already_used += 1;
                    }
                    ReplayWrite {
                        record: key.clone(),
                        kind: if w.create { "create".into() } else { "update".into() },
                        destination: Some(w.side.as_str().into()),
                        values: serde_json::to_string(&w.fields).ok(),
                        rules: rules.clone(),
                        idempotency_key: Some(op.idempotency_key.clone()),
                        key_used_by,
                    }
                })
                .collect();
            if plan.review.is_some() {
                rows.push(ReplayWrite {
                    record: key.clone(),
                    kind: "conflict".into(),
                    destination: None,
                    values: plan.review.clone(),
                    rules: rules.clone(),
                    idempotency_key: None,
                    key_used_by: None,
                });
            }
            if rows.is_empty() {
                rows.push(ReplayWrite {
                    record: key.clone(),
                    kind: "noop".into(),
                    destination: None,
                    values: None,
                    rules,
                    idempotency_key: None,
                    key_used_by: None,
                });
            }
            for r in rows {
                match r.kind.as_str() {
                    "create" => p.creates += 1,
                    "update" => p.updates += 1,
                    "conflict" => p.conflicts += 1,
                    _ => p.noops += 1,
                }
                let n = seen.entry(r.kind.clone()).or_default();
                if *n < SAMPLES_PER_KIND {
                    *n += 1;
                    p.samples.push(r);
                }
            }
        }
        if !dry_run {
            let pauses = self.inner.ledger.pauses().await?;
            if let Some(p) = pauses.first() {
                return Err(EngineError::Paused(p.scope.clone()));
            }
            let run = self
                .inner
                .ledger
                .replay_start(keys, by, reason, selector, self.inner.now_ms())
                .await?;
            self.inner.work.notify_waiters();
            p.queued = true;
            p.run_id = Some(run);
        }
        Ok(p)
    }

    /// Records waiting for a person, with each field side by side and who changed what when.
    pub async fn list_reviews(&self) -> Result<Vec<ReviewItem>, EngineError> {
        Ok(self.inner.ledger.open_reviews(10_000).await?)
    }

    /// Settle a conflicted record: per field take the CRM value, the billing value or a typed
    /// one. The writes are queued with idempotency keys (`review:{id}:{side}`) and audited with
    /// the operator's reason; pause and budgets apply as for any write.
    pub async fn resolve_review(&self, id: i64, res: &ReviewResolution, by: &str) -> Result<String, EngineError> {
        if res.reason.trim().is_empty() {
            return Err(EngineError::ReasonRequired);
        }
        let item = self
            .inner
            .ledger
            .open_review(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no open review item {id}")))?;
        let (object, side, rid) =
            parse_entity_key(&item.record).ok_or_else(|| EngineError::NotFound(item.record.clone()))?;
        let mapping = self
            .inner
            .contract
            .object(object)
            .ok_or_else(|| EngineError::BadRequest(format!("{object} is not in the contract")))?;
        let crm_id = (side == Side::Crm).then(|| rid.to_string());
        let billing_id = match &crm_id {
            Some(c) => self.inner.ledger.billing_id_for(object, c).await?,
            None => Some(rid.to_string()),
        };
        let mut crm_values = serde_json::Map::new();
        let mut billing_values = serde_json::Map::new();
        let mut plan_values = serde_json::Map::new();
        for ch in &res.choices {
            let f = self
                .inner
                .contract
                .contact_fields(mapping)
                .find(|f| f.name == ch.field)
                .ok_or_else(|| EngineError::BadRequest(format!("{} is not a field of {object}", ch.field)))?;
            let on_billing = self
                .inner
                .contract
                .objects
                .iter()
                .find(|o| o.fields.iter().any(|x| std::ptr::eq(x, f)))
                .map_or(crate::contract::BillingObject::Customer, |o| o.billing);
            let shown = item.fields.iter().find(|x| x.field == ch.field);
            let value = match ch.take.as_str() {
                "crm" => shown.and_then(|x| x.crm.clone()),
                "billing" => shown.and_then(|x| x.billing.clone()),
                "value" => ch.value.clone().filter(|v| !v.is_empty()),
                other => {
                    return Err(EngineError::BadRequest(format!(
                        "take must be crm, billing or value, not {other:?}"
                    )))
                }
            };
            let v = value.map_or(serde_json::Value::Null, serde_json::Value::String);
            if shown.map(|x| x.crm.clone()) != Some(v.as_str().map(str::to_string)) {
                crm_values.insert(f.crm.clone(), v.clone());
            }
            if shown.map(|x| x.billing.clone()) != Some(v.as_str().map(str::to_string)) {
                if f.billing == "id" {
                    return Err(EngineError::BadRequest(format!(
                        "{} is the billing id and cannot be written there",
                        f.name
                    )));
                }
                match on_billing {
                    crate::contract::BillingObject::Customer => {
                        billing_values.insert(f.billing.clone(), v);
                    }
                    crate::contract::BillingObject::Subscription if f.billing == "plan" && !v.is_null() => {
                        plan_values.insert(f.billing.clone(), v);
                    }
                    other => {
                        return Err(EngineError::BadRequest(format!(
                            "{} lives on the billing {} and billing does not accept that write; \
                             take the billing value instead",
                            f.name,
                            other.as_str()
                        )))
                    }
                }
            }
        }
        let cause = self.inner.ledger.last_cause(&item.record).await?.map(|(c, _)| c);
        let mut ops = Vec::new();
        if let (false, Some(cid)) = (crm_values.is_empty(), &crm_id) {
            ops.push(crate::decide::writes::update_op(
                mapping.crm,
                Side::Crm,
                cid,
                format!("review:{id}:crm"),
                crm_values,
                cause,
                uuid::Uuid::new_v4().to_string(),
            ));
        }
        if let (false, Some(bid)) = (billing_values.is_empty(), &billing_id) {
            ops.push(crate::decide::writes::update_op(
                mapping.crm,
                Side::Billing,
                bid,
                format!("review:{id}:billing"),
                billing_values,
                cause,
                uuid::Uuid::new_v4().to_string(),
            ));
        }
        if let (false, Some(bid)) = (plan_values.is_empty(), &billing_id) {
            let mut op = crate::decide::writes::update_op(
                mapping.crm,
                Side::Billing,
                bid,
                format!("review:{id}:plan"),
                plan_values,
                cause,
                uuid::Uuid::new_v4().to_string(),
            );
            op.op = crate::ledger::OpKind::ChangePlan;
            ops.push(op);
        }
        let resolution =
            serde_json::json!({"review": id, "choices": res.choices, "reason": res.reason, "writes": ops.len()});
        let key = self
            .inner
            .ledger
            .resolve_review(id, &ops, &resolution, by, self.inner.now_ms())
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("review item {id} was resolved meanwhile")))?;
        self.inner.work.notify_waiters();
        Ok(key)
    }
}
