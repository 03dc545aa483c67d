//! Backfill (initial load and catch-up) and migration mode.
//!
//! A backfill pages through every CRM record of each mapped object type
//! (`GET /crm/v3/objects/{type}`, `after`) and every billing customer (`GET /v1/customers`,
//! `starting_after`), 100 per page, in the budgets' **bulk** lane. Each page becomes inbox
//! events with deterministic ids — a CRM record version `backfill:{object}:{id}:{modified}`,
//! a customer `backfill:customer:{id}:{hash of its fields}` — made durable in one ledger
//! transaction with the stream's cursor and the run's counts (`Ledger::backfill_page`), and
//! queued as bulk work (live events go first). So:
//! - a restart (crash, cancel) continues at the first unfinished page: no finished page is
//!   read again;
//! - a second run over unchanged records only finds duplicates: nothing is planned, nothing is
//!   written;
//! - the workers plan each record from both systems' current state, as for live events
//!   (creates, links, idempotency keys, pause, observe and migration freeze all apply).
//!
//! Migration mode declares one system authoritative for an object (or all) until finished:
//! the write gate freezes writes into it (`Ledger::write_hold`, `migration_freeze`) and the
//! planner takes it as the owner of the pair's fields ([`owners_under`], the one place).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::pager::{self, Listing};
use super::{Engine, EngineError, Inner};
use crate::api::{BackfillProgress, BackfillRun, FieldMismatch, MigrationMode, ValidationReport};
use crate::budget::Lane;
use crate::connectors::hubspot::modified_property;
use crate::connectors::{ModifiedSearch, RemoteRecord};
use crate::contract::{BillingObject, CrmObject, Side};
use crate::ingest;
use crate::ledger::NewEvent;

pub use crate::ingest::{is_backfill_event, CUSTOMER_BACKFILLED};
/// Records per page (both providers' list maximum).
pub const PAGE_SIZE: i64 = 100;
/// Linked pairs compared field by field in a validation report.
const VALIDATION_SAMPLE: usize = 200;
const MISMATCH_EXAMPLES: usize = 20;

pub use crate::decide::{owners_under, Authority};

/// Which systems a backfill reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Systems {
    Crm,
    Billing,
    Both,
}

impl Systems {
    pub fn parse(s: &str) -> Result<Systems, EngineError> {
        match s {
            "crm" => Ok(Systems::Crm),
            "billing" => Ok(Systems::Billing),
            "both" => Ok(Systems::Both),
            other => Err(EngineError::BadRequest(format!(
                "unknown backfill system {other:?}: use crm, billing or both"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Systems::Crm => "crm",
            Systems::Billing => "billing",
            Systems::Both => "both",
        }
    }
    fn includes(self, side: Side) -> bool {
        matches!(
            (self, side),
            (Systems::Both, _) | (Systems::Crm, Side::Crm) | (Systems::Billing, Side::Billing)
        )
    }
}

/// One listing a backfill pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Crm(CrmObject),
    BillingCustomers,
}

impl Stream {
    fn name(self) -> String {
        match self {
            Stream::Crm(k) => format!("crm:{}", k.plural()),
            Stream::BillingCustomers => "billing:customers".into(),
        }
    }
    fn side(self) -> Side {
        self.listing(&[]).side()
    }
    /// The listing this stream pages through, asking for `props` (CRM records).
    fn listing(self, props: &[String]) -> Listing<'_> {
        match self {
            Stream::Crm(kind) => Listing::Crm(kind, props),
            Stream::BillingCustomers => Listing::BillingCustomers,
        }
    }
}

/// Options for a backfill run.
#[derive(Debug, Clone, Default)]
pub struct BackfillOptions {
    /// Stop (leaving the run `running`, as a crashed process would) after this many pages in
    /// this call: for tests and for operators who want to bound a session.
    pub max_pages: Option<usize>,
    /// The migration this run is a phase of.
    pub migration_id: Option<i64>,
}

fn streams(inner: &Inner, systems: Systems) -> Vec<Stream> {
    let mut out = Vec::new();
    if systems.includes(Side::Crm) {
        for o in &inner.contract.objects {
            if o.billing == BillingObject::Customer && !out.contains(&Stream::Crm(o.crm)) {
                out.push(Stream::Crm(o.crm));
            }
        }
    }
    if systems.includes(Side::Billing)
        && inner
            .contract
            .objects
            .iter()
            .any(|o| o.billing == BillingObject::Customer)
    {
        out.push(Stream::BillingCustomers);
    }
    out
}

/// The inbox event of one listed CRM record version.
fn crm_event(inner: &Inner, kind: CrmObject, r: &RemoteRecord, now: i64) -> Result<NewEvent, String> {
    let modified = modified_property(kind);
    let mut e = ingest::poll::crm_snapshot_event(kind, r, modified, now, &inner.routes)?;
    e.event_id = format!(
        "backfill:{}:{}:{}",
        kind.as_str(),
        r.id,
        r.get(modified).unwrap_or_default()
    );
    e.via = "backfill";
    Ok(e)
}

/// The inbox event of one listed billing customer (`ingest::stripe::backfilled_customer_event`).
fn customer_event(inner: &Inner, r: &RemoteRecord, now: i64) -> Result<NewEvent, String> {
    ingest::stripe::backfilled_customer_event(r, now, &inner.routes)
}

/// What a backfill's estimated finish is computed from.
#[derive(Debug, Clone, Copy, Default)]
struct EtaInput {
    now_ms: i64,
    /// Pages still to list (known totals only).
    pages_left: Option<i64>,
    /// Requests per second the listing gets (the CRM budget's current rate).
    list_rate: f64,
    /// Records listed and not yet applied by the workers.
    unsynced: i64,
    /// Records still to list (known totals only).
    left_to_list: i64,
    /// Records of this run the workers have applied, over `elapsed_ms`.
    synced: i64,
    elapsed_ms: i64,
    /// Records per second assumed before any was applied (the slower budget's rate).
    write_rate: f64,
}

/// The estimated finish (Unix ms) of a backfill: the later of the listing's end (pages left
/// at the listing's rate) and the workers' end (records to sync at the observed apply rate,
/// else `write_rate`). `None` when there is nothing left or no rate to estimate from.
fn estimate(i: &EtaInput) -> Option<i64> {
    let per_sec = |n: i64, rate: f64| (rate > 0.0).then(|| i.now_ms + (n as f64 / rate * 1000.0).ceil() as i64);
    let listed = i.pages_left.filter(|&n| n > 0).and_then(|n| per_sec(n, i.list_rate));
    let to_sync = i.unsynced + i.left_to_list;
    let apply_rate = if i.synced > 0 && i.elapsed_ms > 0 {
        i.synced as f64 * 1000.0 / i.elapsed_ms as f64
    } else {
        i.write_rate
    };
    let synced = (to_sync > 0).then(|| per_sec(to_sync, apply_rate)).flatten();
    listed.max(synced)
}

/// The properties a CRM listing asks for: every mapped property of that object type, the
/// origin tags and the last-modified property (the version in the event id).
fn crm_properties(inner: &Inner, kind: CrmObject) -> Vec<String> {
    let mut props: Vec<String> = Vec::new();
    for o in inner.contract.objects.iter().filter(|o| o.crm == kind) {
        for f in &o.fields {
            props.push(f.crm.clone());
        }
    }
    props.extend([
        "driftless_origin".to_string(),
        "driftless_correlation_id".to_string(),
        modified_property(kind).to_string(),
    ]);
    let mut seen = BTreeSet::new();
    props.retain(|p| seen.insert(p.clone()));
    props
}

/// HubSpot's count of records of `kind` (a search over all time, one result); `None` when the
/// search is refused (the listing does not depend on it).
async fn crm_total(inner: &Inner, kind: CrmObject) -> Option<i64> {
    inner.acquire(Side::Crm, Lane::Bulk).await;
    let props: Vec<String> = Vec::new();
    let q = ModifiedSearch {
        kind,
        from_ms: 0,
        to_ms: inner.now_ms() + 60_000,
        properties: &props,
        after: None,
        limit: 1,
    };
    match inner.crm.search_modified(q).await {
        Ok(p) => Some(p.total as i64),
        Err(e) => {
            tracing::debug!(error = %e, "backfill: no total for {}", kind.plural());
            None
        }
    }
}

impl Engine {
    /// Run a backfill of `systems` (`crm`, `billing`, `both`) to its end in this task, or
    /// resume the unfinished one. Returns the run as it ended: `done`, `cancelled` (by
    /// `backfill_cancel` from any process) or still `running` (stopped by `max_pages`).
    /// The records are planned and written by the engine's workers (this one's, or the
    /// server's on the same ledger), as bulk work.
    pub async fn backfill(&self, systems: &str, by: &str, opts: BackfillOptions) -> Result<BackfillRun, EngineError> {
        let systems = Systems::parse(systems)?;
        let inner = &self.inner;
        let start = inner
            .ledger
            .backfill_start(systems.as_str(), by, opts.migration_id, inner.now_ms())
            .await?;
        let run_id = start.run.id;
        tracing::info!(
            run = run_id,
            resumed = start.resumed,
            systems = systems.as_str(),
            "backfill"
        );
        let mut budget_pages = opts.max_pages.unwrap_or(usize::MAX);
        for stream in streams(inner, systems) {
            let name = stream.name();
            if start.run.streams_done.contains(&name) {
                continue;
            }
            let mut cursor = inner.ledger.backfill_cursor(&name).await?;
            let props = match stream {
                Stream::Crm(kind) => crm_properties(inner, kind),
                Stream::BillingCustomers => Vec::new(),
            };
            if let (Stream::Crm(kind), None) = (stream, &cursor) {
                if let Some(total) = crm_total(inner, kind).await {
                    inner
                        .ledger
                        .backfill_add_total(run_id, &name, total, inner.now_ms())
                        .await?;
                }
            }
            for _ in 0..pager::MAX_PAGES {
                if budget_pages == 0 {
                    return self.backfill_run(run_id).await;
                }
                if inner.stopping() {
                    return Err(EngineError::Stopped);
                }
                let page = match pager::page(inner, stream.listing(&props), cursor.as_deref()).await {
                    Ok(p) => p,
                    Err(e) => {
                        let msg = format!("{name}: {e}");
                        inner
                            .ledger
                            .backfill_finish(run_id, "failed", Some(&msg), inner.now_ms())
                            .await?;
                        return Err(e.into());
                    }
                };
                let now = inner.now_ms();
                let mut events = Vec::with_capacity(page.records.len());
                for r in &page.records {
                    let ev = match stream {
                        Stream::Crm(kind) => crm_event(inner, kind, r, now),
                        Stream::BillingCustomers => customer_event(inner, r, now),
                    };
                    match ev {
                        Ok(e) => events.push(e),
                        Err(why) => {
                            inner.metrics.add("backfill_malformed", stream.side().as_str(), 1.0);
                            tracing::warn!(stream = %name, record = %r.id, %why, "backfilled record skipped");
                        }
                    }
                }
                let durable = inner
                    .ledger
                    .backfill_page(
                        run_id,
                        &name,
                        &events,
                        page.records.len() as i64,
                        page.next.as_deref(),
                        now,
                    )
                    .await?;
                let Some((accepted, duplicates)) = durable else {
                    // Cancelled (from any process) while the page was read: nothing of it kept.
                    return self.backfill_run(run_id).await;
                };
                inner.metrics.add("backfill_pages", stream.side().as_str(), 1.0);
                inner.metrics.add("events_received", "", (accepted + duplicates) as f64);
                inner.metrics.add("dedupe_drops", "", duplicates as f64);
                inner
                    .metrics
                    .add("backfill_records", stream.side().as_str(), page.records.len() as f64);
                if accepted > 0 {
                    inner.work.notify_waiters();
                }
                budget_pages -= 1;
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        inner
            .ledger
            .backfill_finish(run_id, "done", None, inner.now_ms())
            .await?;
        self.backfill_run(run_id).await
    }

    async fn backfill_run(&self, id: i64) -> Result<BackfillRun, EngineError> {
        self.inner
            .ledger
            .backfill_run(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("backfill run {id}")))
    }

    /// Cancel the running backfill: it stops before its next page; `backfill` again resumes
    /// it at its cursor. `None`: none was running.
    pub async fn backfill_cancel(&self, by: &str) -> Result<Option<i64>, EngineError> {
        Ok(self.inner.ledger.backfill_cancel(by, self.inner.now_ms()).await?)
    }

    /// The latest run with its estimated finish (listing and syncing, see [`estimate`]).
    pub async fn backfill_progress(&self) -> Result<BackfillProgress, EngineError> {
        let inner = &self.inner;
        let run = inner.ledger.latest_backfill().await?;
        let mut p = BackfillProgress {
            run: run.clone(),
            ..Default::default()
        };
        let Some(run) = run else {
            return Ok(p);
        };
        // Only CRM listings report a total, and they are read first: while one is open, every
        // record counted so far is a CRM record.
        let open: Vec<Stream> = streams(inner, Systems::parse(&run.systems)?)
            .into_iter()
            .filter(|s| !run.streams_done.contains(&s.name()))
            .collect();
        let listing = matches!(run.state.as_str(), "running" | "cancelled");
        let crm_open = listing && open.iter().any(|s| matches!(s, Stream::Crm(_)));
        let billing_open = listing && open.contains(&Stream::BillingCustomers);
        let left_to_list = match run.total_known {
            Some(total) if crm_open => Some((total - run.records).max(0)),
            Some(_) if listing => Some(0),
            _ => None,
        };
        p.pages_left = left_to_list.map(|left| (left + PAGE_SIZE - 1) / PAGE_SIZE);
        let unsynced = inner.ledger.backfill_unsynced(run.started_at_ms).await?;
        let now = inner.now_ms();
        let rate = |side| inner.budget(side).snapshot().current_per_sec;
        let est = estimate(&EtaInput {
            now_ms: now,
            pages_left: p.pages_left,
            list_rate: rate(Side::Crm),
            unsynced,
            left_to_list: left_to_list.unwrap_or(0),
            synced: (run.accepted - unsynced).max(0),
            elapsed_ms: now - run.started_at_ms,
            write_rate: rate(Side::Crm).min(rate(Side::Billing)),
        });
        p.records_to_sync = Some(unsynced + left_to_list.unwrap_or(0));
        if let Some(eta) = est {
            p.eta_ms = Some(eta);
            p.eta_covers = Some(
                match (billing_open, left_to_list.is_some() || !listing) {
                    (true, true) => {
                        "the CRM listings and syncing every record listed; the billing customers' \
                                     listing (Stripe reports no total) and its records come after"
                    }
                    (true, false) | (false, false) => {
                        "syncing the records listed so far; listings without a total (Stripe) are not in it"
                    }
                    (false, true) => "every listing left and syncing every record",
                }
                .into(),
            );
        }
        Ok(p)
    }

    // ------------------------------------------------------------------- migration mode

    /// Enter migration mode (audited): `authority` wins for `object` (a contract object; all
    /// when `None`), writes into it are frozen until [`Engine::migration_finish`].
    pub async fn migration_start(
        &self,
        authority: &str,
        object: Option<&str>,
        reason: &str,
        by: &str,
    ) -> Result<MigrationMode, EngineError> {
        if reason.trim().is_empty() {
            return Err(EngineError::ReasonRequired);
        }
        let side = Side::parse(authority)
            .ok_or_else(|| EngineError::BadRequest(format!("unknown authority {authority:?}: use crm or billing")))?;
        if let Some(o) = object {
            if self.inner.contract.object(o).is_none() {
                let known: Vec<&str> = self.inner.contract.objects.iter().map(|m| m.name.as_str()).collect();
                return Err(EngineError::BadRequest(format!(
                    "the contract has no object {o:?} (objects: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(self
            .inner
            .ledger
            .migration_start(side.as_str(), object, reason, by, self.inner.now_ms())
            .await?)
    }

    /// The active migration (with its phases), else `None`.
    pub async fn migration_status(&self) -> Result<Option<MigrationMode>, EngineError> {
        Ok(self.inner.ledger.migration_active().await?)
    }

    /// Leave migration mode (audited): normal ownership again; frozen writes are planned
    /// again from current state. Errors when no mode is active.
    pub async fn migration_finish(&self, by: &str, reason: Option<&str>) -> Result<MigrationMode, EngineError> {
        let mode = self
            .inner
            .ledger
            .migration_finish(by, reason, self.inner.now_ms())
            .await?
            .ok_or_else(|| EngineError::BadRequest("no migration is active".into()))?;
        self.inner.work.notify_waiters();
        Ok(mode)
    }

    /// One migration phase: a backfill of `systems` recorded on the active migration, then
    /// (once it is done, and once the engine worked off the queue or `settle` passed) its
    /// validation report for the migration's object (the contact pair when the mode covers
    /// every object). Call again to resume a phase cut short.
    pub async fn migration_phase(&self, systems: &str, by: &str, settle: Duration) -> Result<BackfillRun, EngineError> {
        let mode = self
            .migration_status()
            .await?
            .ok_or_else(|| EngineError::BadRequest("no migration is active: `migration start` first".into()))?;
        let run = self
            .backfill(
                systems,
                by,
                BackfillOptions {
                    migration_id: Some(mode.id),
                    ..Default::default()
                },
            )
            .await?;
        if run.state != "done" {
            return Ok(run);
        }
        let deadline = std::time::Instant::now() + settle;
        while self.inner.ledger.workable_queue_depth().await? > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let object = match &mode.object {
            Some(o) => o.clone(),
            None => self.inner.routes.contact.clone(),
        };
        let report = self.validation_report(&object).await?;
        self.inner.ledger.backfill_validation(run.id, &report).await?;
        self.backfill_run(run.id).await
    }

    /// Validation of one customer-pair object: counts on each side (full listings, bulk
    /// lane), links through the identity map, and owned-field mismatches on a sample of
    /// linked pairs (owner: the migration's authority while one is active).
    pub async fn validation_report(&self, object: &str) -> Result<ValidationReport, EngineError> {
        let inner = &self.inner;
        let m = inner
            .contract
            .object(object)
            .filter(|m| m.billing == BillingObject::Customer)
            .ok_or_else(|| EngineError::BadRequest(format!("{object:?} is not a customer pair of the contract")))?;
        let migration = inner.ledger.migration_authority().await?;
        let m = owners_under(m, migration.as_ref());
        let props = crm_properties(inner, m.crm);
        let crm = pager::all(inner, Listing::Crm(m.crm, &props)).await?;
        let billing = pager::all(inner, Listing::BillingCustomers).await?;
        // Customers that belong to another object's records (a company's customer) are not
        // this object's.
        let mut others: BTreeSet<String> = BTreeSet::new();
        for o in inner.contract.objects.iter().filter(|o| o.name != m.name) {
            others.extend(inner.ledger.identity_links(&o.name).await?.into_iter().map(|(_, b)| b));
        }
        let billing: BTreeMap<String, RemoteRecord> = billing
            .into_iter()
            .filter(|r| !others.contains(&r.id))
            .map(|r| (r.id.clone(), r))
            .collect();
        let crm: BTreeMap<String, RemoteRecord> = crm.into_iter().map(|r| (r.id.clone(), r)).collect();
        let links: Vec<(String, String)> = inner
            .ledger
            .identity_links(&m.name)
            .await?
            .into_iter()
            .filter(|(c, b)| crm.contains_key(c) && billing.contains_key(b))
            .collect();
        let mut report = ValidationReport {
            object: m.name.clone(),
            crm_records: crm.len() as i64,
            billing_records: billing.len() as i64,
            linked: links.len() as i64,
            unlinked_crm: (crm.len() - links.len()) as i64,
            unlinked_billing: (billing.len() - links.len()) as i64,
            at_ms: inner.now_ms(),
            ..Default::default()
        };
        for (c, b) in links.iter().take(VALIDATION_SAMPLE) {
            report.sampled += 1;
            let (Some(cr), Some(br)) = (crm.get(c), billing.get(b)) else {
                continue;
            };
            for f in m.fields.iter().filter(|f| f.billing != "id") {
                let cv = cr.get(&f.crm).filter(|s| !s.trim().is_empty());
                let bv = br.get(&f.billing).filter(|s| !s.trim().is_empty());
                if !crate::reconcile::values_agree(cv, bv) {
                    report.mismatched_fields += 1;
                    if report.mismatches.len() < MISMATCH_EXAMPLES {
                        report.mismatches.push(FieldMismatch {
                            crm_id: c.clone(),
                            billing_id: b.clone(),
                            field: f.name.clone(),
                            crm: cv.map(str::to_string),
                            billing: bv.map(str::to_string),
                            owner: f.owner.label().to_string(),
                        });
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_covers_listing_and_syncing() {
        let base = EtaInput {
            now_ms: 1_000_000,
            list_rate: 10.0,
            write_rate: 5.0,
            ..Default::default()
        };
        assert_eq!(estimate(&base), None, "nothing left");
        // Listing only: 20 pages at 10/s.
        let listing = EtaInput {
            pages_left: Some(20),
            ..base
        };
        assert_eq!(estimate(&listing), Some(1_002_000));
        // Nothing applied yet: 300 records at the budget's 5/s outlast the listing.
        let early = EtaInput {
            unsynced: 100,
            left_to_list: 200,
            ..listing
        };
        assert_eq!(estimate(&early), Some(1_060_000));
        // Observed: 100 applied in 10 s (10/s) replaces the budget guess.
        let observed = EtaInput {
            synced: 100,
            elapsed_ms: 10_000,
            ..early
        };
        assert_eq!(estimate(&observed), Some(1_030_000));
        // Listing done, the workers still syncing: the estimate is theirs alone.
        let syncing = EtaInput {
            pages_left: None,
            unsynced: 40,
            left_to_list: 0,
            synced: 100,
            elapsed_ms: 10_000,
            ..base
        };
        assert_eq!(estimate(&syncing), Some(1_004_000));
        // No rate at all: no estimate.
        assert_eq!(
            estimate(&EtaInput {
                write_rate: 0.0,
                ..syncing
            }),
            Some(1_004_000),
            "the observed rate needs no budget"
        );
        assert_eq!(
            estimate(&EtaInput {
                synced: 0,
                write_rate: 0.0,
                ..syncing
            }),
            None
        );
    }

    #[test]
    fn systems_are_named() {
        assert!(Systems::parse("everything").is_err());
        assert!(Systems::parse("both").is_ok());
    }

    #[tokio::test]
    async fn listed_records_become_events_keyed_by_record_and_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(crate::engine::EngineConfig {
            ledger: dir.path().join("l.db"),
            contract: crate::contract::default_contract(),
            crm: std::sync::Arc::new(crate::connectors::Offline {
                system: "crm",
                why: "not read here".into(),
            }),
            billing: std::sync::Arc::new(crate::connectors::Offline {
                system: "billing",
                why: "not read here".into(),
            }),
            webhook_secrets: crate::engine::WebhookSecrets::default(),
            workers: 1,
            clock: std::sync::Arc::new(crate::engine::SystemClock),
            demo: false,
        })
        .await
        .expect("engine");
        let inner = &engine.inner;
        let mut fields = crate::connectors::Fields::new();
        fields.insert("email".into(), Some("a@b.test".into()));
        fields.insert("metadata.driftless_crm_contact_id".into(), Some("7".into()));
        let cus = RemoteRecord {
            id: "cus_1".into(),
            fields: fields.clone(),
        };
        let a = customer_event(inner, &cus, 1).expect("event");
        let b = customer_event(inner, &cus, 2).expect("event");
        assert_eq!(a.event_id, b.event_id, "the same customer, the same event");
        assert!(is_backfill_event(&a.event_id) && a.event_id.starts_with("backfill:customer:cus_1:"));
        assert_eq!(
            (a.entity_key.as_str(), a.via),
            ("customer:crm:7", "backfill"),
            "routed by its CRM id"
        );
        fields.insert("email".into(), Some("c@d.test".into()));
        let changed = customer_event(
            inner,
            &RemoteRecord {
                id: "cus_1".into(),
                fields,
            },
            3,
        )
        .expect("event");
        assert_ne!(changed.event_id, a.event_id, "a changed customer is a new event");

        let mut props = crate::connectors::Fields::new();
        props.insert("lastmodifieddate".into(), Some("2026-11-27T10:00:00.000Z".into()));
        let contact = RemoteRecord {
            id: "7".into(),
            fields: props,
        };
        let e = crm_event(inner, CrmObject::Contact, &contact, 1).expect("event");
        assert_eq!(e.event_id, "backfill:contact:7:2026-11-27T10:00:00.000Z");
        assert!(ingest::poll::is_snapshot(
            &serde_json::from_str(&e.payload).expect("json")
        ));
        let unversioned = RemoteRecord {
            id: "8".into(),
            fields: Default::default(),
        };
        assert!(crm_event(inner, CrmObject::Contact, &unversioned, 1).is_err());
        engine.shutdown().await;
    }
}
