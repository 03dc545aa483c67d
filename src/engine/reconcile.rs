//! The reconciler (issue 6): the backstop for everything webhooks and pollers miss.
//!
//! A run pages through every billing customer, then every CRM record of each object pair the
//! engine syncs record by record, with cursor pagination in the **bulk** lane of each
//! destination's budget. After each page its findings and the cursor past it are written to
//! the ledger in one transaction (`ledger/reconcile.rs`), so a crashed or cancelled run resumes
//! at the next unread page. Billing customers are remembered per run (ids, origin markers,
//! fields) so the CRM pages and the rules across objects need no second read of them.
//!
//! Compared, for each linked pair (identity map, else the CRM record's billing id property):
//! the customer mapping's fields, and the subscription and invoice summaries' billing-owned
//! fields. Rules across objects: a CRM record whose billing id does not exist in billing;
//! invoice balance zero in billing while the CRM shows one; CRM lifecycle `customer` while the
//! customer has no live subscription; two billing customers carrying one origin marker; a CRM
//! record without a billing counterpart where the contract creates one; and
//! `missing_crm_counterpart`: a billing customer of a synced mapping that no CRM record of the
//! run linked to (identity map or billing id property) or named (its origin marker). A
//! customer belongs to a synced mapping when the identity map links it to a CRM record or it
//! carries an origin marker (the engine made it for a CRM record), or — every customer — when
//! a customer mapping has `create_in = "crm"`; other customers (made in billing, never synced)
//! are not reported. Each CRM page marks the customers it matched in the page's transaction
//! (`recon_seen.matched`), so a resumed run still knows them; the rules phase reports the rest
//! under the record's queue key (`{object}:crm:{id}` when linked or marked, else
//! `{object}:billing:{customer}`) and counts them as compared.
//!
//! A field mismatch whose owner's value differs from the ledger's last synced value, with no
//! event from the owner waiting in the inbox, is a change no webhook or poll delivered: it is
//! reported as a missed event naming the cursor (or webhooks) that should have carried it.
//!
//! Repairs go through replay (`Engine::replay_keys`): the dry run previews the records' planned
//! writes, the repair queues them, so the pause gate, idempotency keys and audit apply. A CRM
//! record no event ever delivered is delivered by the repair as a snapshot event first; the
//! dry run plans it from that same snapshot (read, not ingested), so its preview shows the
//! idempotency keys the repair will use. The
//! engine never creates CRM records, so a `missing_crm_counterpart` record is replayed only
//! when the ledger has a cause for it (its events: the worker re-reads both sides and records
//! its decision, e.g. the CRM record is gone); one the ledger never heard of goes to the review
//! queue instead (shown in the preview as a `conflict`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::pager::{self, Listing};
use super::{Engine, EngineError};
use crate::api::{ReconRepairAsk, ReconRunSummary, ReconcileReport, ReplayPreview};
use crate::connectors::hubspot::modified_property as last_modified_prop;
use crate::connectors::RemoteRecord;
use crate::contract::schedule::Schedule;
use crate::contract::{BillingObject, CrmObject, IngestMode, ObjectMapping, Owner, Side};
use crate::ingest::entity_key;
use crate::ledger::reconcile::SeenCustomer;
use crate::ledger::reconcile::{NewMismatch, ReconPage, ReconRunRow};
use crate::reconcile::{
    norm, parse_time_ms, recon_csv_row, rules, same, seen_customer, zero, ReconcileRequest, Repair, RECON_CSV_HEADER,
    RECON_CSV_PAGE,
};

const DAY_MS: i64 = 86_400_000;

/// One run at a time in this process (the scheduler and an operator's run would otherwise
/// continue the same checkpoint twice).
static ONE_RUN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a run's lease lasts without a page being checkpointed (renewed before every
/// page); a crashed process's run can be continued by another after it.
const LEASE_MS: i64 = 120_000;

/// This process's name on run leases.
fn lease_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| format!("pid{}:{}", std::process::id(), uuid::Uuid::new_v4().simple()))
}

/// The contract's schedule, as a background task of the engine: an unfinished run a crash
/// left is resumed at start; then a run whenever the schedule says the next one is due after
/// the last finished run (or after start when there is none): `nightly`/`hourly` a period
/// later, a cron expression at its next minute (UTC). `manual` runs nothing.
pub async fn scheduled(engine: Engine) {
    let inner = engine.inner.clone();
    let schedule = match Schedule::parse(&inner.contract.reconciliation.schedule) {
        Ok(Schedule::Manual) => return,
        Ok(s) => s,
        Err(why) => {
            // The contract compiler accepts only what this parser accepts.
            tracing::warn!(%why, "scheduled reconciliation not running");
            return;
        }
    };
    let started = inner.now_ms();
    let mut stop = inner.shutdown_rx();
    let mut resume = matches!(inner.ledger.recon_unfinished().await, Ok(Some(_)));
    while !inner.stopping() {
        let now = inner.now_ms();
        let due = if resume {
            now
        } else {
            let last = inner.ledger.recon_last_finished().await;
            match last.map(|r| r.map_or(started, |r| r.finished_at_ms.unwrap_or(r.started_at_ms))) {
                // `None` only for manual (returned above) or a cron expression that never
                // fires (e.g. 31 February): check again in a minute.
                Ok(after) => schedule.next_due(after).unwrap_or(now + 60_000),
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation schedule cannot read the ledger");
                    now + 60_000
                }
            }
        };
        if due > now {
            let wait = std::time::Duration::from_millis((due - now).min(60_000) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                _ = stop.changed() => break,
            }
        }
        resume = false;
        let req = ReconcileRequest {
            trigger: "schedule".into(),
            ..Default::default()
        };
        let r = tokio::select! {
            r = engine.reconcile(&req, "schedule") => r,
            _ = stop.changed() => break,
        };
        match r {
            Ok(r) => tracing::info!(
                run = r.run.id,
                compared = r.compared,
                mismatched = r.mismatched_records,
                "scheduled reconciliation"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "scheduled reconciliation failed; it resumes from its checkpoint");
                resume = true;
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
}

impl Engine {
    /// One reconciliation: resume the unfinished run or start one, compare, record, then
    /// preview / queue repairs and send records to review as asked.
    pub async fn reconcile(&self, req: &ReconcileRequest, by: &str) -> Result<ReconcileReport, EngineError> {
        let _one = ONE_RUN.lock().await;
        let inner = &self.inner;
        let ledger = &inner.ledger;
        let window_days = i64::from(req.window_days.unwrap_or(inner.contract.reconciliation.window_days));
        if !(1..=90).contains(&window_days) {
            return Err(EngineError::BadRequest(format!(
                "window must be 1 to 90 days, not {window_days}"
            )));
        }
        let clock = Instant::now();
        let (run, resumed) = match ledger.recon_unfinished().await? {
            Some(r) => (r, true),
            None => {
                let trigger = if req.trigger.is_empty() {
                    "cli"
                } else {
                    req.trigger.as_str()
                };
                let r = ledger.recon_start(window_days, trigger, inner.now_ms()).await?;
                (r, false)
            }
        };
        let run_id = run.id;
        let lease = |now: i64| ledger.recon_lease(run_id, lease_owner(), now, now + LEASE_MS);
        if !lease(inner.now_ms()).await? {
            return Err(EngineError::BadRequest(format!(
                "reconciliation run {run_id} is being continued by another process; try again when it \
                 finishes (or two minutes after that process stopped)"
            )));
        }
        let window_start = run.started_at_ms - run.window_days * DAY_MS;
        let mappings: Vec<&ObjectMapping> = inner.contract.objects.iter().filter(|m| m.syncs_customers()).collect();
        let mut phases: Vec<String> = vec!["billing".into()];
        phases.extend(mappings.iter().map(|m| format!("crm:{}", m.name)));
        phases.push("rules".into());
        let mut phase = run.phase.clone();
        let mut cursor = run.cursor.clone();
        let mut pages = 0u64;
        let mut complete = true;
        let step = |p: &str| -> String {
            let i = phases.iter().position(|x| x == p).unwrap_or(phases.len() - 1);
            phases.get(i + 1).cloned().unwrap_or_else(|| "done".into())
        };
        let paged: Result<(), EngineError> = async {
            while phase != "rules" && phase != "done" {
                if req.max_pages.is_some_and(|m| pages >= m) || inner.jobs.reconcile_cancelled() {
                    complete = false;
                    break;
                }
                if !lease(inner.now_ms()).await? {
                    return Err(EngineError::BadRequest(format!(
                        "reconciliation run {run_id} was taken over by another process"
                    )));
                }
                if phase == "billing" {
                    let page = pager::page(inner, Listing::BillingCustomers, cursor.as_deref()).await?;
                    let seen: Vec<SeenCustomer> = page.records.iter().map(|r| seen_customer(&mappings, r)).collect();
                    let next_phase = if page.next.is_some() {
                        phase.clone()
                    } else {
                        step(&phase)
                    };
                    let p = ReconPage {
                        phase: &next_phase,
                        next_cursor: page.next.as_deref(),
                        compared: 0,
                        seen: &seen,
                        mismatches: &[],
                        matched: &[],
                    };
                    ledger.recon_page(run_id, &p, inner.now_ms()).await?;
                    phase = next_phase;
                    cursor = page.next;
                } else {
                    let name = phase.trim_start_matches("crm:").to_string();
                    let Some(m) = mappings.iter().find(|m| m.name == name).copied() else {
                        phase = step(&phase);
                        cursor = None;
                        continue;
                    };
                    let mut props: Vec<String> = inner.contract.contact_fields(m).map(|f| f.crm.clone()).collect();
                    props.push(last_modified_prop(m.crm).to_string());
                    props.sort();
                    props.dedup();
                    let page = pager::page(inner, Listing::Crm(m.crm, &props), cursor.as_deref()).await?;
                    let mut found = Vec::new();
                    let mut matched = Vec::with_capacity(page.records.len());
                    for r in &page.records {
                        let bid = self.compare_record(run_id, m, r, window_start, &mut found).await?;
                        matched.push((m.crm.origin_key().to_string(), r.id.clone(), bid));
                    }
                    let next_phase = if page.next.is_some() {
                        phase.clone()
                    } else {
                        step(&phase)
                    };
                    let p = ReconPage {
                        phase: &next_phase,
                        next_cursor: page.next.as_deref(),
                        compared: page.records.len() as i64,
                        seen: &[],
                        mismatches: &found,
                        matched: &matched,
                    };
                    ledger.recon_page(run_id, &p, inner.now_ms()).await?;
                    phase = next_phase;
                    cursor = page.next;
                }
                pages += 1;
            }
            Ok(())
        }
        .await;
        if paged.is_err() || !complete {
            ledger.recon_release(run_id, lease_owner()).await?;
        }
        if let Err(e) = paged {
            let note = format!("stopped in phase {phase} after {pages} pages: {e}; the next run resumes here");
            ledger.recon_note(run_id, &note).await?;
            return Err(e);
        }
        let mut gaps_resolved = Vec::new();
        if complete {
            // Rules over everything seen: one origin marker on two billing customers.
            let mut found = Vec::new();
            for (key, value, ids) in ledger.recon_duplicate_origins(run_id).await? {
                let object = mappings
                    .iter()
                    .find(|m| m.crm.origin_key() == key)
                    .map_or("customer", |m| m.name.as_str());
                found.push(NewMismatch {
                    entity_key: entity_key(object, Side::Crm, &value),
                    kind: "rule".into(),
                    name: rules::DUPLICATE_ORIGIN.into(),
                    crm_value: Some(value.clone()),
                    billing_value: Some(ids.join(",")),
                    owner: None,
                    detail: Some(format!("{} billing customers carry {key}={value}", ids.len())),
                });
            }
            // Billing customers of a synced mapping that no CRM record of the run linked to
            // or named: their CRM counterpart is gone (or was never made).
            let creates_in_crm = mappings.iter().any(|m| m.create_in == Some(Side::Crm));
            let mut billing_only = 0i64;
            for u in ledger.recon_unmatched(run_id).await? {
                let by_origin = u
                    .origin_key
                    .as_deref()
                    .zip(u.origin_value.as_deref())
                    .and_then(|(k, v)| {
                        mappings
                            .iter()
                            .find(|m| m.crm.origin_key() == k)
                            .map(|m| (m.name.as_str(), v))
                    });
                let (key, crm, why) = match (&u.linked, by_origin) {
                    (Some((object, crm_id)), _) => (
                        entity_key(object, Side::Crm, crm_id),
                        Some(crm_id.clone()),
                        format!("linked to {object} CRM record {crm_id}, which the CRM no longer lists"),
                    ),
                    (None, Some((object, crm_id))) => (
                        entity_key(object, Side::Crm, crm_id),
                        Some(crm_id.to_string()),
                        format!("created for CRM record {crm_id} (origin marker), which the CRM does not list"),
                    ),
                    (None, None) if creates_in_crm => (
                        entity_key(&inner.routes.contact, Side::Billing, &u.billing_id),
                        None,
                        "the contract creates CRM records from billing and none exists for it".into(),
                    ),
                    // Not a customer the contract syncs from billing: out of scope.
                    (None, None) => continue,
                };
                billing_only += 1;
                found.push(NewMismatch {
                    entity_key: key,
                    kind: "rule".into(),
                    name: rules::MISSING_CRM_COUNTERPART.into(),
                    crm_value: crm,
                    billing_value: Some(u.billing_id.clone()),
                    owner: None,
                    detail: Some(format!(
                        "billing customer {} has no CRM counterpart: {why}",
                        u.billing_id
                    )),
                });
            }
            ledger
                .recon_phase(run_id, "done", billing_only, &found, inner.now_ms())
                .await?;
            // The run compared the current state of every record, which covers whatever a
            // poll window lost before the run started.
            for g in ledger.reconciliation_gaps(true).await? {
                if g.to_ms <= run.started_at_ms && ledger.resolve_gap(g.id, inner.now_ms()).await? {
                    gaps_resolved.push(g.id);
                }
            }
            if !gaps_resolved.is_empty() {
                ledger
                    .recon_note(run_id, &format!("resolved reconciliation gaps {gaps_resolved:?}"))
                    .await?;
            }
            let dur = run.duration_ms.unwrap_or(0) + clock.elapsed().as_millis() as i64;
            ledger
                .recon_finish(run_id, "finished", None, dur, inner.now_ms())
                .await?;
        }
        let run = ledger
            .recon_run(run_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {run_id}")))?;
        let mut report = self.report(run, resumed, complete, gaps_resolved).await?;

        if complete {
            self.act_on_findings(&mut report, req.dry_run, &req.repair, &req.review, by)
                .await?;
        }
        Ok(report)
    }

    /// What a finished run's findings lead to, once compared: the repair of the selected
    /// records (`repair`; every mismatched record for a dry run that selects none) — records
    /// never delivered get their snapshot event first, then replay queues them (or, dry run,
    /// previews their writes) — and the review queue for `review` and for billing-only
    /// customers the ledger never heard of. The one place this happens, for the CLI's
    /// `reconcile --repair` and the console's repair of the latest run.
    async fn act_on_findings(
        &self,
        report: &mut ReconcileReport,
        dry_run: bool,
        repair: &Repair,
        review: &[String],
        by: &str,
    ) -> Result<(), EngineError> {
        let run_id = report.run.id;
        let mismatched: BTreeSet<String> = report
            .mismatches
            .iter()
            .filter(|m| m.m.kind != "missed_event")
            .map(|m| m.m.entity_key.clone())
            .collect();
        let selected = match repair {
            Repair::None if dry_run => Some(mismatched.iter().cloned().collect::<Vec<_>>()),
            Repair::None => None,
            Repair::All => Some(mismatched.iter().cloned().collect()),
            Repair::Records(rs) => Some(self.resolve_keys(rs, &mismatched)?),
        };
        // A billing-only customer the ledger never heard of has no cause a replay could
        // plan from, and the engine creates no CRM record: a person decides (review).
        let crm_missing: BTreeSet<String> = report
            .mismatches
            .iter()
            .filter(|m| m.m.name == rules::MISSING_CRM_COUNTERPART)
            .map(|m| m.m.entity_key.clone())
            .collect();
        let mut to_review: Vec<String> = Vec::new();
        if let Some(keys) = selected {
            let mut replay = Vec::new();
            for k in keys {
                if crm_missing.contains(&k) && self.inner.ledger.last_cause(&k).await?.is_none() {
                    to_review.push(k);
                } else {
                    replay.push(k);
                }
            }
            let mut preview = if dry_run {
                self.preview_repair(&replay).await?
            } else {
                self.deliver_unseen(&replay).await?;
                self.replay_keys(&replay, false, by, "reconcile repair", &BTreeMap::new())
                    .await?
            };
            for k in &to_review {
                preview.records += 1;
                preview.conflicts += 1;
                if preview.samples.iter().filter(|w| w.kind == "conflict").count() >= 5 {
                    continue;
                }
                preview.samples.push(crate::api::ReplayWrite {
                    record: k.clone(),
                    kind: "conflict".into(),
                    destination: None,
                    values: Some("no CRM counterpart and no event to replay: sent to review".into()),
                    rules: vec![rules::MISSING_CRM_COUNTERPART.into()],
                    idempotency_key: None,
                    key_used_by: None,
                });
            }
            report.repair = Some(preview);
        }
        if !dry_run {
            to_review.extend(self.resolve_keys(review, &mismatched)?);
            to_review.sort();
            to_review.dedup();
        }
        if !to_review.is_empty() && !dry_run {
            let items: Vec<_> = to_review
                .iter()
                .map(|k| {
                    let found: Vec<_> = report.mismatches.iter().filter(|m| &m.m.entity_key == k).collect();
                    let reason = format!(
                        "reconciliation run {run_id}: {}",
                        found.iter().map(|m| m.m.name.as_str()).collect::<Vec<_>>().join(", ")
                    );
                    let fields = serde_json::Value::Array(
                        found
                            .iter()
                            .filter(|m| m.m.kind == "field")
                            .map(|m| serde_json::json!({"field": m.m.name, "crm": m.m.crm_value, "billing": m.m.billing_value, "owner": m.m.owner}))
                            .collect(),
                    );
                    (k.clone(), reason, fields)
                })
                .collect();
            report.sent_to_review = self
                .inner
                .ledger
                .send_to_review(&items, by, self.inner.now_ms())
                .await?;
        }
        Ok(())
    }

    /// Finished runs, newest first: at most `limit` (1 to 500; 100 when absent).
    pub async fn reconcile_runs(&self, limit: Option<i64>) -> Result<Vec<ReconRunSummary>, EngineError> {
        let limit = limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(EngineError::BadRequest(format!("limit must be 1 to 500, not {limit}")));
        }
        let runs = self.inner.ledger.recon_finished_runs(limit).await?;
        Ok(runs
            .into_iter()
            .map(|r| {
                let s = r.summary();
                ReconRunSummary {
                    id: r.id,
                    started_at_ms: r.started_at_ms,
                    finished_at_ms: s.finished_at_ms,
                    window_days: r.window_days,
                    trigger: r.trigger,
                    compared: s.compared,
                    mismatched: s.mismatched,
                    mismatch_rate: s.mismatch_rate,
                    duration_ms: r.duration_ms,
                }
            })
            .collect())
    }

    /// One run's report: its mismatches with both values, owner and first seen, by field and
    /// by rule.
    pub async fn reconcile_report(&self, run_id: i64) -> Result<ReconcileReport, EngineError> {
        let run = self
            .inner
            .ledger
            .recon_run(run_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("reconciliation run {run_id}")))?;
        let complete = run.state == "finished";
        self.report(run, false, complete, Vec::new()).await
    }

    /// Repair (or, dry run, preview the repair of) records a finished run found mismatched,
    /// or send them to review, without comparing again ([`Self::act_on_findings`]). Only the
    /// latest finished run: an older run's findings may be stale. Refused with `busy` while a
    /// run is going on in this process (its findings are about to replace these).
    pub async fn reconcile_repair(&self, ask: &ReconRepairAsk, by: &str) -> Result<ReconcileReport, EngineError> {
        let Ok(_one) = ONE_RUN.try_lock() else {
            return Err(EngineError::Busy(
                "a reconciliation is running; repair from its findings once it finishes".into(),
            ));
        };
        let latest = self.inner.ledger.recon_last_finished().await?;
        let run = match latest {
            Some(r) if r.id == ask.run_id => r,
            Some(r) => {
                return Err(EngineError::BadRequest(format!(
                    "run {} is not the latest finished reconciliation (run {} is): its findings may be \
                     stale; repair from run {}",
                    ask.run_id, r.id, r.id
                )))
            }
            None => {
                return Err(EngineError::BadRequest(format!(
                    "run {} is not a finished reconciliation; run one first",
                    ask.run_id
                )))
            }
        };
        if !ask.dry_run && ask.records.is_empty() && ask.review.is_empty() {
            return Err(EngineError::BadRequest(
                "choose the records to repair (or `all`) or to send to review".into(),
            ));
        }
        let mut report = self.report(run, false, true, Vec::new()).await?;
        let repair = Repair::from_args(&ask.records);
        self.act_on_findings(&mut report, ask.dry_run, &repair, &ask.review, by)
            .await?;
        Ok(report)
    }

    /// One page of a run's mismatches as CSV (the operations' paging contract): the lines
    /// after mismatch id `after`, the header on the first page, and the cursor of the next.
    /// Unknown run: `not_found`.
    pub async fn reconcile_csv_page(
        &self,
        run_id: i64,
        after: Option<i64>,
    ) -> Result<(String, Option<i64>), EngineError> {
        let mut out = String::new();
        if after.is_none() {
            if self.inner.ledger.recon_run(run_id).await?.is_none() {
                return Err(EngineError::NotFound(format!("reconciliation run {run_id}")));
            }
            out.push_str(RECON_CSV_HEADER);
        }
        let page = self
            .inner
            .ledger
            .recon_mismatch_page(run_id, after.unwrap_or(0), RECON_CSV_PAGE)
            .await?;
        for (_, m) in &page {
            out.push_str(&recon_csv_row(run_id, m));
        }
        let next = match page.last() {
            Some((id, _)) if page.len() as i64 == RECON_CSV_PAGE => Some(*id),
            _ => None,
        };
        Ok((out, next))
    }

    /// The dry run of a repair: the planned writes of these records, as the repair will plan
    /// them. A never-seen record's writes hang off the snapshot event the repair would deliver
    /// (`crm:{event id}`, the worker's cause tag for it), read now and not ingested, so the
    /// preview shows the idempotency keys the repair will use.
    async fn preview_repair(&self, keys: &[String]) -> Result<ReplayPreview, EngineError> {
        let mut causes = BTreeMap::new();
        for key in keys {
            if let Some(ev) = self.unseen_snapshot(key).await? {
                causes.insert(key.clone(), (0, format!("{}:{}", ev.source.as_str(), ev.event_id)));
            }
        }
        self.replay_keys(keys, true, "reconcile", "reconcile repair", &causes)
            .await
    }

    /// A CRM record the ledger never heard of (no event, no write: its changes were all
    /// missed) has no cause a replay could plan from: its current version as the snapshot
    /// event a poller would have made (same id, so a later poll of the same version dedupes),
    /// marked `via = reconcile`. `None` for other records (or one gone from the CRM).
    async fn unseen_snapshot(&self, key: &str) -> Result<Option<crate::ledger::NewEvent>, EngineError> {
        let inner = &self.inner;
        let Some((object, Side::Crm, id)) = crate::ingest::parse_entity_key(key) else {
            return Ok(None);
        };
        let Some(m) = inner.contract.object(object) else {
            return Ok(None);
        };
        if inner.ledger.last_cause(key).await?.is_some() {
            return Ok(None);
        }
        let modified = last_modified_prop(m.crm);
        let mut props: Vec<String> = inner.contract.contact_fields(m).map(|f| f.crm.clone()).collect();
        props.push(modified.to_string());
        let Some(record) = pager::bulk_read(inner, Side::Crm, || inner.crm.get_record(m.crm, id, &props)).await? else {
            return Ok(None);
        };
        match crate::ingest::poll::crm_snapshot_event(m.crm, &record, modified, inner.now_ms(), &inner.routes) {
            Ok(mut ev) => {
                ev.via = "reconcile";
                Ok(Some(ev))
            }
            Err(why) => {
                tracing::warn!(%why, record = %key, "reconciler could not deliver the record");
                Ok(None)
            }
        }
    }

    /// Deliver the never-seen records among `keys` to the inbox ([`Self::unseen_snapshot`]),
    /// so the replay that follows plans them from that event.
    async fn deliver_unseen(&self, keys: &[String]) -> Result<(), EngineError> {
        let mut events = Vec::new();
        for key in keys {
            events.extend(self.unseen_snapshot(key).await?);
        }
        if !events.is_empty() {
            self.ingest(events).await?;
        }
        Ok(())
    }

    /// Operator selections to record keys: a key as is, or a CRM id of a mismatched record.
    fn resolve_keys(&self, sel: &[String], mismatched: &BTreeSet<String>) -> Result<Vec<String>, EngineError> {
        let mut out = Vec::new();
        for s in sel {
            let key = mismatched
                .iter()
                .find(|k| *k == s || k.rsplit(':').next() == Some(s.as_str()))
                .cloned()
                .ok_or_else(|| {
                    EngineError::BadRequest(format!("{s:?} is not a record this reconciliation found mismatched"))
                })?;
            out.push(key);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The latest finished run's report (for `status`, the console and the overview).
    pub async fn last_reconciliation(&self) -> Result<Option<ReconcileReport>, EngineError> {
        match self.inner.ledger.recon_last_finished().await? {
            Some(run) => Ok(Some(self.report(run, false, true, Vec::new()).await?)),
            None => Ok(None),
        }
    }

    async fn report(
        &self,
        run: ReconRunRow,
        resumed: bool,
        complete: bool,
        gaps_resolved: Vec<i64>,
    ) -> Result<ReconcileReport, EngineError> {
        let mismatches = self.inner.ledger.recon_mismatches(run.id).await?;
        let mut by_field = BTreeMap::new();
        let mut by_rule = BTreeMap::new();
        let mut missed = 0;
        let mut keys = BTreeSet::new();
        for m in &mismatches {
            match m.m.kind.as_str() {
                "field" => *by_field.entry(m.m.name.clone()).or_insert(0) += 1,
                "rule" => *by_rule.entry(m.m.name.clone()).or_insert(0) += 1,
                _ => missed += 1,
            }
            if m.m.kind != "missed_event" {
                keys.insert(m.m.entity_key.clone());
            }
        }
        let compared = run.compared;
        let rate = if compared > 0 {
            keys.len() as f64 / compared as f64
        } else {
            0.0
        };
        let threshold = self.inner.contract.alerts.mismatch_rate;
        Ok(ReconcileReport {
            resumed,
            complete,
            compared,
            mismatched_records: keys.len() as i64,
            mismatch_rate: rate,
            alert_threshold: threshold,
            over_threshold: rate > threshold,
            by_field,
            by_rule,
            missed_events: missed,
            mismatches,
            gaps_resolved,
            repair: None,
            sent_to_review: 0,
            run,
        })
    }

    /// Compare one CRM record with its billing counterpart; push what disagrees. Returns the
    /// billing id the record is linked to or names (its counterpart, if billing has it).
    async fn compare_record(
        &self,
        run_id: i64,
        m: &ObjectMapping,
        r: &RemoteRecord,
        window_start: i64,
        out: &mut Vec<NewMismatch>,
    ) -> Result<Option<String>, EngineError> {
        let inner = &self.inner;
        let key = entity_key(&m.name, Side::Crm, &r.id);
        let id_prop = m.billing_id_property();
        let linked = inner.ledger.billing_id_for(&m.name, &r.id).await?;
        let billing_id = linked.clone().or_else(|| id_prop.and_then(|p| norm(r.get(p))));
        let rule = |name: &str, crm: Option<String>, billing: Option<String>, detail: String| NewMismatch {
            entity_key: key.clone(),
            kind: "rule".into(),
            name: name.into(),
            crm_value: crm,
            billing_value: billing,
            owner: None,
            detail: Some(detail),
        };
        // Cursor-gap detector, whole records: changed in the window, never delivered at all.
        let modified = r.get(last_modified_prop(m.crm)).and_then(parse_time_ms);
        if modified.is_some_and(|t| t >= window_start) && inner.ledger.deliveries(&key, "crm").await? == 0 {
            out.push(NewMismatch {
                entity_key: key.clone(),
                kind: "missed_event".into(),
                name: "record".into(),
                crm_value: r.get(last_modified_prop(m.crm)).map(str::to_string),
                billing_value: None,
                owner: None,
                detail: Some(format!(
                    "{} {} changed in the window and no webhook or poll event ever delivered it: missed by {}",
                    m.crm.as_str(),
                    r.id,
                    missed_by(inner.contract.system(Side::Crm).ingest, Side::Crm, m.crm)
                )),
            });
        }
        let Some(bid) = billing_id else {
            if m.create_in == Some(Side::Billing) {
                let found = inner.ledger.recon_by_origin(run_id, m.crm.origin_key(), &r.id).await?;
                if found.is_empty() {
                    out.push(rule(
                        rules::MISSING_COUNTERPART,
                        Some(r.id.clone()),
                        None,
                        "the contract creates a billing customer for this record and none exists".into(),
                    ));
                } else {
                    out.push(rule(
                        rules::UNLINKED_COUNTERPART,
                        Some(r.id.clone()),
                        Some(found.join(",")),
                        "billing customers carry this record's origin marker but are not linked to it".into(),
                    ));
                }
            }
            return Ok(None);
        };
        let Some(fields) = inner.ledger.recon_seen(run_id, &bid).await? else {
            out.push(rule(
                rules::BILLING_ID_MISSING,
                Some(bid.clone()),
                None,
                format!("billing customer {bid} does not exist in billing"),
            ));
            return Ok(Some(bid));
        };
        let shadow: BTreeMap<(Side, String), Option<String>> = inner
            .ledger
            .shadow(&key)
            .await?
            .into_iter()
            .map(|s| ((s.side, s.field), s.value))
            .collect();
        let mut diffs: Vec<(&crate::contract::FieldMapping, Option<String>, Option<String>)> = Vec::new();
        for f in &m.fields {
            let b = if f.billing == "id" {
                Some(bid.clone())
            } else {
                norm(fields.get(&f.billing).and_then(|v| v.as_str()))
            };
            let c = norm(r.get(&f.crm));
            if !same(&c, &b) {
                diffs.push((f, c, b));
            }
        }
        // The billing objects mirrored onto the record, read once per kind (bulk lane).
        let mut summaries: BTreeMap<&'static str, RemoteRecord> = BTreeMap::new();
        for o in inner.contract.billing_object_mappings(m) {
            let kind = o.billing.as_str();
            if !summaries.contains_key(kind) {
                let s = match o.billing {
                    BillingObject::Subscription => {
                        pager::bulk_read(inner, Side::Billing, || inner.billing.subscription_summary(&bid)).await?
                    }
                    _ => pager::bulk_read(inner, Side::Billing, || inner.billing.invoice_summary(&bid)).await?,
                };
                summaries.insert(kind, s);
            }
            let Some(s) = summaries.get(kind) else { continue };
            for f in o.fields.iter().filter(|f| f.owner == Owner::Billing) {
                // Delinquency lives on the customer record itself.
                let b = if f.billing == "delinquent" {
                    norm(fields.get("delinquent").and_then(|v| v.as_str())).or(Some("false".into()))
                } else {
                    norm(s.get(&f.billing))
                };
                let c = norm(r.get(&f.crm));
                if !same(&c, &b) {
                    diffs.push((f, c, b));
                }
            }
        }
        if let Some(inv) = summaries.get("invoice") {
            let b = norm(inv.get("amount_remaining"));
            let crm_prop = inner
                .contract
                .contact_fields(m)
                .find(|f| f.billing == "amount_remaining");
            if let Some(f) = crm_prop {
                let c = norm(r.get(&f.crm));
                if zero(&b) && !zero(&c) {
                    out.push(rule(
                        rules::INVOICE_PAID_CRM_BALANCE,
                        c,
                        b.or(Some("0.00".into())),
                        "no open balance in billing while the CRM shows one".into(),
                    ));
                }
            }
        }
        if let Some(sub) = summaries.get("subscription") {
            let lifecycle = inner.contract.contact_fields(m).find(|f| f.name == "lifecycle_stage");
            if let Some(f) = lifecycle {
                let status = norm(sub.get("status"));
                let live = status
                    .as_deref()
                    .is_some_and(|s| s != "canceled" && s != "incomplete_expired");
                if norm(r.get(&f.crm)).as_deref() == Some("customer") && !live {
                    out.push(rule(
                        rules::CUSTOMER_WITHOUT_SUBSCRIPTION,
                        Some("customer".into()),
                        Some(status.unwrap_or_else(|| "no subscription".into())),
                        "CRM lifecycle is customer while every subscription is canceled".into(),
                    ));
                }
            }
        }
        for (f, c, b) in diffs {
            out.push(NewMismatch {
                entity_key: key.clone(),
                kind: "field".into(),
                name: f.name.clone(),
                crm_value: c.clone(),
                billing_value: b.clone(),
                owner: Some(f.owner.label().into()),
                detail: None,
            });
            // Cursor-gap detector: the owner changed the field since the last sync and no
            // event from the owner is waiting: no webhook or poll delivered the change.
            let Some(owner) = f.owner.side() else { continue };
            let current = if owner == Side::Crm { &c } else { &b };
            let Some(synced) = shadow.get(&(owner, f.name.clone())) else {
                continue;
            };
            if same(current, synced) {
                continue;
            }
            if owner == Side::Crm && modified.is_some_and(|t| t < window_start) {
                continue;
            }
            if inner.ledger.pending_deliveries(&key, owner.as_str()).await? > 0 {
                continue;
            }
            out.push(NewMismatch {
                entity_key: key.clone(),
                kind: "missed_event".into(),
                name: f.name.clone(),
                crm_value: c,
                billing_value: b,
                owner: Some(f.owner.label().into()),
                detail: Some(format!(
                    "changed in {} since the last sync (last synced {:?}) and never delivered: missed by {}",
                    owner.as_str(),
                    synced,
                    missed_by(inner.contract.system(owner).ingest, owner, m.crm)
                )),
            });
        }
        Ok(Some(bid))
    }
}

/// The cursor or watermark that should have carried a change from `side`.
fn missed_by(mode: IngestMode, side: Side, kind: CrmObject) -> String {
    let cursor = match side {
        Side::Crm => crate::engine::poll::crm_cursor(kind),
        Side::Billing => crate::engine::poll::BILLING_CURSOR.to_string(),
    };
    match mode {
        IngestMode::Webhooks => format!("{} webhooks (no poll cursor: ingest = \"webhooks\")", side.as_str()),
        IngestMode::Poll => format!("poll cursor {cursor}"),
        IngestMode::Both => format!("{} webhooks and poll cursor {cursor}", side.as_str()),
    }
}
