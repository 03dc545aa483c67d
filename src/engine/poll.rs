//! Durable pollers, for systems whose webhooks cannot reach the engine (the laptop case).
//! They feed the same inbox as the webhook receivers, through [`Engine::ingest`], so
//! durability, dedupe on (source, event id) and the worker pipeline are shared.
//!
//! - Stripe: `/v1/events` with `created[gte]` = watermark − overlap and `created[lte]` = the
//!   window's end, `limit=100`, `starting_after` paging (newest first on Stripe; the poller
//!   does not depend on the order). Every page is durable before the next is read; the
//!   watermark (`watermarks`) moves to the window's end only after its last page, so a crash
//!   between pages re-reads the window (duplicates are counted drops) and loses nothing.
//!   Stripe keeps events 30 days: an older cursor records a reconciliation gap (ledger),
//!   shows `reconciliation_needed` in `status`, and restarts at the oldest retained time.
//! - HubSpot: `POST /crm/v3/objects/{type}/search` per mapped object type, last-modified
//!   GTE/LTE the window, ascending, `limit=100`, `after` paging. A window whose `total`
//!   exceeds the 10,000-result cap (HubSpot refuses paging past it) is split in halves until
//!   each half fits. Searches are spaced to 4 requests/s by their own limiter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Engine, EngineError, Inner};
use crate::connectors::hubspot::modified_property;
use crate::connectors::{ConnResult, ConnectorError, ModifiedSearch};
use crate::contract::{CrmObject, Side};
use crate::ingest;
use crate::ledger::{Gap, GapKind, NewEvent};

/// The Stripe events cursor.
pub const BILLING_CURSOR: &str = "poll:billing:events";
/// Stripe keeps events for 30 days.
pub const STRIPE_EVENT_RETENTION_MS: i64 = 30 * 86_400_000;
/// Events within this much of the retention edge may vanish while a window is paged: a
/// cursor that close to the edge is treated as expired (reconciling a little more is
/// harmless; losing events silently is not).
pub const RETENTION_MARGIN_MS: i64 = 3_600_000;
/// A billing window covers at most a day, so a long catch-up re-reads at most a day on a crash.
const MAX_BILLING_WINDOW_MS: i64 = 86_400_000;
/// HubSpot's search refuses paging past this many results.
pub const HUBSPOT_SEARCH_CAP: u64 = 10_000;
const SEARCH_PAGE: u32 = 100;
/// HubSpot allows 4 search requests per second per account.
const SEARCH_SPACING: Duration = Duration::from_millis(250);
/// Attempts per request before the pass gives up (the window is re-read next pass).
const MAX_TRIES: u32 = 8;
/// Bounds on one pass, so a misbehaving provider cannot keep a pass going forever.
const MAX_PAGES_PER_WINDOW: usize = 100_000;
const MAX_BILLING_WINDOWS_PER_PASS: usize = 64;
const MAX_SPLITS: usize = 4_096;
/// Times a window is read again because it shrank while paged (then the overlap covers it).
const MAX_REREADS: usize = 3;

/// The HubSpot search cursor of one object type.
pub fn crm_cursor(kind: CrmObject) -> String {
    format!("poll:crm:{}", kind.plural())
}

/// What one poll pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PollReport {
    /// Windows read to the end (split halves count one each).
    pub windows: usize,
    /// Windows split because their total exceeded the search cap.
    pub splits: usize,
    /// Requests sent, including retries.
    pub requests: usize,
    pub rate_limited: usize,
    /// Windows read again from the start because records left them while they were paged.
    pub rereads: usize,
    pub pages: usize,
    /// Events (or record versions) read.
    pub events: usize,
    pub accepted: usize,
    pub duplicates: usize,
    /// Items that could not be turned into events (logged, counted, skipped).
    pub malformed: usize,
    /// The cursor after the pass, per cursor name.
    pub watermarks: Vec<(String, i64)>,
    /// A cursor found older than the provider's retention: the gap recorded (from, to).
    pub expired: Option<(i64, i64)>,
}

/// Poller state shared by the engine's tasks.
pub(crate) struct PollState {
    /// The search result cap windows are split under (HubSpot: 10,000).
    search_cap: AtomicU64,
    /// When the last search request was sent (the 4/s limiter).
    last_search: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for PollState {
    fn default() -> Self {
        PollState {
            search_cap: AtomicU64::new(HUBSPOT_SEARCH_CAP),
            last_search: tokio::sync::Mutex::new(None),
        }
    }
}

impl PollState {
    /// Wait for the search limiter's next slot.
    async fn search_slot(&self) {
        let mut last = self.last_search.lock().await;
        if let Some(t) = *last {
            let next = t + SEARCH_SPACING;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
        *last = Some(Instant::now());
    }
}

impl Engine {
    /// One poll pass for `side`: Stripe events, or HubSpot search for every mapped CRM
    /// object type. Runs whatever the contract's `ingest` mode (an operator's "poll now").
    pub async fn poll_now(&self, side: Side) -> Result<PollReport, EngineError> {
        let mut report = PollReport::default();
        match side {
            Side::Billing => poll_billing(self, &mut report).await?,
            Side::Crm => {
                let mut kinds: Vec<CrmObject> = Vec::new();
                for o in &self.inner.contract.objects {
                    if !kinds.contains(&o.crm) {
                        kinds.push(o.crm);
                    }
                }
                for kind in kinds {
                    poll_crm(self, kind, &mut report).await?;
                }
            }
        }
        Ok(report)
    }

    /// The result cap CRM search windows are split under (HubSpot's is 10,000; a test
    /// against a simulator with a smaller cap sets it to match).
    pub fn set_search_cap(&self, cap: u64) {
        self.inner.poll.search_cap.store(cap.max(1), Ordering::Relaxed);
    }
}

/// The background poller of one side: a pass every `poll_interval_ms` until shutdown. A
/// pass cut short by shutdown or an error leaves the watermark where it was.
pub(super) async fn run(engine: Engine, side: Side) {
    let inner = engine.inner.clone();
    let cfg = match side {
        Side::Crm => &inner.contract.systems.crm,
        Side::Billing => &inner.contract.systems.billing,
    };
    let interval = Duration::from_millis(cfg.poll_interval_ms);
    let mut stop = inner.shutdown_rx();
    while !inner.stopping() {
        let started = Instant::now();
        let pass = tokio::select! {
            r = engine.poll_now(side) => Some(r),
            _ = stop.changed() => None,
        };
        match pass {
            None | Some(Err(EngineError::Stopped)) => break,
            Some(Ok(r)) => {
                tracing::debug!(
                    side = side.as_str(),
                    ?r,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "poll pass"
                );
            }
            Some(Err(e)) => {
                inner.metrics.add("poll_errors", side.as_str(), 1.0);
                tracing::warn!(side = side.as_str(), error = %e, "poll pass failed; the window is read again next pass");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Send one request with retries: 429s wait `Retry-After` (1 s without one), 5xx, timeouts
/// and transport errors back off; anything else ends the pass.
async fn with_retries<T, F, Fut>(inner: &Inner, side: Side, report: &mut PollReport, mut f: F) -> ConnResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ConnResult<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        report.requests += 1;
        inner.metrics.add("poll_requests", side.as_str(), 1.0);
        match f().await {
            Ok(v) => {
                inner.note_outcome(side, None);
                return Ok(v);
            }
            Err(e) if e.retryable() && attempt < MAX_TRIES => {
                inner.note_outcome(side, Some(&e));
                let wait = match &e {
                    ConnectorError::RateLimited { .. } => {
                        report.rate_limited += 1;
                        match side {
                            // Stripe's limit is the account's: the billing budget holds every
                            // caller (and counts it for the 429 chart).
                            Side::Billing => inner.note_rate_limited(side, e.retry_after()),
                            // HubSpot's search limit (4/s) is its own, paced by the poller's
                            // limiter; the general CRM budget is not slowed by it.
                            Side::Crm => {
                                inner.metrics.add("rate_limited", side.as_str(), 1.0);
                                e.retry_after().unwrap_or(Duration::from_secs(1))
                            }
                        }
                    }
                    _ => Duration::from_millis((100u64 << attempt.min(6)).min(5_000)),
                };
                tracing::debug!(side = side.as_str(), error = %e, wait_ms = wait.as_millis() as u64, "poll request retried");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                inner.note_outcome(side, Some(&e));
                return Err(e);
            }
        }
    }
}

/// Make a page's events durable (the ledger's group commit).
async fn make_durable(engine: &Engine, events: Vec<NewEvent>, report: &mut PollReport) -> Result<(), EngineError> {
    if events.is_empty() {
        return Ok(());
    }
    let r = engine.ingest(events).await?;
    report.accepted += r.accepted;
    report.duplicates += r.duplicates;
    Ok(())
}

async fn poll_billing(engine: &Engine, report: &mut PollReport) -> Result<(), EngineError> {
    let inner = &engine.inner;
    let overlap = inner.contract.systems.billing.poll_overlap_ms as i64;
    let now = inner.now_ms();
    let oldest = now - STRIPE_EVENT_RETENTION_MS + RETENTION_MARGIN_MS;
    let mut wm = match inner.ledger.watermark(BILLING_CURSOR).await? {
        Some(w) => w,
        // First pass: from now (minus the overlap); history is the reconciler's job.
        None => {
            inner
                .ledger
                .advance_watermark(BILLING_CURSOR, now - overlap, now)
                .await?
        }
    };
    if wm < oldest {
        let reason = format!(
            "Stripe keeps events for 30 days; the cursor was {} days old",
            (now - wm) / 86_400_000
        );
        tracing::warn!(cursor = BILLING_CURSOR, from_ms = wm, to_ms = oldest, %reason,
            "poll cursor older than the provider retains: gap recorded for reconciliation, polling restarts at the oldest retained event");
        inner
            .ledger
            .record_gap(
                &Gap {
                    cursor: BILLING_CURSOR,
                    source: Side::Billing,
                    from_ms: wm,
                    to_ms: oldest,
                    reason: &reason,
                },
                GapKind::Expired,
                now,
            )
            .await?;
        inner.metrics.add("poll_cursor_expired", "billing", 1.0);
        report.expired = Some((wm, oldest));
        wm = oldest;
    }
    for _ in 0..MAX_BILLING_WINDOWS_PER_PASS {
        let start = (wm - overlap).max(oldest);
        let end = now.min(wm.max(start) + MAX_BILLING_WINDOW_MS);
        let (gte, lte) = (start.div_euclid(1000), end.div_euclid(1000));
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES_PER_WINDOW {
            let after_id = after.as_deref();
            let page = with_retries(inner, Side::Billing, report, || async move {
                inner.acquire(Side::Billing, crate::budget::Lane::Live).await;
                inner.billing.list_events(gte, lte, after_id).await
            })
            .await?;
            report.pages += 1;
            report.events += page.events.len();
            let received = inner.now_ms();
            let mut events = Vec::with_capacity(page.events.len());
            for v in &page.events {
                match ingest::stripe::event_from_value(v, "poll", received, &inner.routes) {
                    Ok(e) => events.push(e),
                    Err(why) => {
                        report.malformed += 1;
                        inner.metrics.add("poll_malformed", "billing", 1.0);
                        tracing::warn!(event = ?v.get("id"), %why, "polled Stripe event skipped");
                    }
                }
            }
            make_durable(engine, events, report).await?;
            after = page
                .events
                .last()
                .and_then(|e| e.get("id"))
                .and_then(|i| i.as_str())
                .map(str::to_string);
            if !page.has_more || after.is_none() {
                break;
            }
        }
        report.windows += 1;
        wm = inner
            .ledger
            .advance_watermark(BILLING_CURSOR, end, inner.now_ms())
            .await?;
        if end >= now {
            break;
        }
    }
    report.watermarks.push((BILLING_CURSOR.to_string(), wm));
    Ok(())
}

/// The properties a CRM search asks for: every property the contract maps on that object
/// type, the origin tags and the last-modified property.
fn search_properties(inner: &Inner, kind: CrmObject) -> Vec<String> {
    let mut props: Vec<String> = Vec::new();
    let mut push = |p: &str| {
        if !props.iter().any(|x| x == p) {
            props.push(p.to_string());
        }
    };
    for o in inner.contract.objects.iter().filter(|o| o.crm == kind) {
        for f in &o.fields {
            push(&f.crm);
        }
    }
    push("driftless_origin");
    push("driftless_correlation_id");
    push(modified_property(kind));
    props
}

async fn poll_crm(engine: &Engine, kind: CrmObject, report: &mut PollReport) -> Result<(), EngineError> {
    let inner = &engine.inner;
    let cursor = crm_cursor(kind);
    let overlap = inner.contract.systems.crm.poll_overlap_ms as i64;
    let now = inner.now_ms();
    let wm = match inner.ledger.watermark(&cursor).await? {
        Some(w) => w,
        None => inner.ledger.advance_watermark(&cursor, now - overlap, now).await?,
    };
    let props = search_properties(inner, kind);
    let modified = modified_property(kind);
    let cap = inner.poll.search_cap.load(Ordering::Relaxed);
    // Older halves first; the watermark moves only once the whole window is durable.
    let mut stack: Vec<(i64, i64)> = vec![(wm - overlap, now)];
    let mut splits = 0usize;
    while let Some((from, to)) = stack.pop() {
        let mut after: Option<String> = None;
        let mut read = 0u64;
        let mut first_total = 0u64;
        let mut rereads = 0usize;
        let mut page_no = 0usize;
        while page_no < MAX_PAGES_PER_WINDOW {
            let q = ModifiedSearch {
                kind,
                from_ms: from,
                to_ms: to,
                properties: &props,
                after: after.as_deref(),
                limit: SEARCH_PAGE,
            };
            let page = with_retries(inner, Side::Crm, report, || async move {
                inner.poll.search_slot().await;
                inner.crm.search_modified(q).await
            })
            .await?;
            if page_no == 0 && page.total > cap && to > from && splits < MAX_SPLITS {
                let mid = from + (to - from) / 2;
                stack.push((mid + 1, to));
                stack.push((from, mid));
                splits += 1;
                report.splits += 1;
                break;
            }
            if page_no == 0 && page.total > cap {
                // One millisecond (or the split budget) cannot be narrowed further: read what
                // search pages through and leave the window to the reconciler.
                let reason = format!(
                    "{} {} modified in [{from}, {to}] ms, more than the {cap} results search pages through",
                    page.total,
                    kind.plural()
                );
                tracing::error!(object = kind.as_str(), from, to, %reason, "poll window recorded for reconciliation");
                inner.metrics.add("poll_truncated", kind.as_str(), 1.0);
                inner
                    .ledger
                    .record_gap(
                        &Gap {
                            cursor: &cursor,
                            source: Side::Crm,
                            from_ms: from,
                            to_ms: to,
                            reason: &reason,
                        },
                        GapKind::Unreadable,
                        inner.now_ms(),
                    )
                    .await?;
            }
            if page_no == 0 {
                first_total = page.total;
            } else if page.total < first_total && rereads < MAX_REREADS {
                // Records left the window while it was paged (modified again, so now past
                // `to`): the offsets behind them shifted and a record may have been skipped.
                // Read the window again from its start; what was read already dedupes.
                rereads += 1;
                report.rereads += 1;
                first_total = 0;
                after = None;
                read = 0;
                page_no = 0;
                continue;
            }
            page_no += 1;
            report.pages += 1;
            report.events += page.results.len();
            read += page.results.len() as u64;
            let received = inner.now_ms();
            let mut events = Vec::with_capacity(page.results.len());
            for r in &page.results {
                match ingest::poll::crm_snapshot_event(kind, r, modified, received, &inner.routes) {
                    Ok(e) => events.push(e),
                    Err(why) => {
                        report.malformed += 1;
                        inner.metrics.add("poll_malformed", "crm", 1.0);
                        tracing::warn!(%why, "polled CRM record skipped");
                    }
                }
            }
            make_durable(engine, events, report).await?;
            match page.next_after {
                Some(a) if read < cap => after = Some(a),
                _ => {
                    report.windows += 1;
                    break;
                }
            }
        }
    }
    let wm = inner.ledger.advance_watermark(&cursor, now, inner.now_ms()).await?;
    report.watermarks.push((cursor, wm));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::connectors::{BoxFuture, CrmApi, Fields, Offline, PropertyDef, RemoteRecord, SearchPage};
    use crate::engine::{EngineConfig, SystemClock, WebhookSecrets};

    /// A CRM where 25 contacts share one last-modified millisecond `at`.
    struct SameMillisecond {
        at: i64,
    }

    impl CrmApi for SameMillisecond {
        fn get_record<'a>(
            &'a self,
            _: CrmObject,
            _: &'a str,
            _: &'a [String],
        ) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>> {
            Box::pin(async { Ok(None) })
        }
        fn update_record<'a>(
            &'a self,
            _: CrmObject,
            _: &'a str,
            _: &'a Fields,
        ) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
            Box::pin(async { unreachable!("the poller never writes") })
        }
        fn search_modified<'a>(&'a self, q: ModifiedSearch<'a>) -> BoxFuture<'a, ConnResult<SearchPage>> {
            Box::pin(async move {
                if !(q.from_ms..=q.to_ms).contains(&self.at) {
                    return Ok(SearchPage::default());
                }
                let results = (0..25)
                    .map(|i| {
                        let mut fields = Fields::new();
                        fields.insert("lastmodifieddate".into(), Some(self.at.to_string()));
                        RemoteRecord {
                            id: i.to_string(),
                            fields,
                        }
                    })
                    .collect();
                Ok(SearchPage {
                    total: 25,
                    results,
                    next_after: None,
                })
            })
        }
        fn batch_read<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [String],
            _: &'a [String],
        ) -> BoxFuture<'a, Vec<crate::connectors::BatchItem<Option<RemoteRecord>>>> {
            Box::pin(async { unreachable!("the poller never batch-reads") })
        }
        fn batch_update<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [crate::connectors::BatchUpdate],
        ) -> BoxFuture<'a, Vec<crate::connectors::BatchItem<RemoteRecord>>> {
            Box::pin(async { unreachable!("the poller never writes") })
        }
        fn batch_upsert<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [crate::connectors::BatchUpsert],
        ) -> BoxFuture<'a, Vec<crate::connectors::BatchItem<(RemoteRecord, bool)>>> {
            Box::pin(async { unreachable!("the poller never writes") })
        }
        fn list_records<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [String],
            _: Option<&'a str>,
        ) -> BoxFuture<'a, ConnResult<crate::connectors::ListPage>> {
            Box::pin(async { unreachable!("the poller never lists") })
        }
        fn ensure_properties<'a>(&'a self, _: &'a [PropertyDef]) -> BoxFuture<'a, ConnResult<Vec<String>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    /// 150 contacts in the window; from the second request on, contact 50 has been modified
    /// again (it left the window), so offset paging would skip contact 100.
    struct ShrinksWhilePaged {
        at: i64,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl CrmApi for ShrinksWhilePaged {
        fn get_record<'a>(
            &'a self,
            _: CrmObject,
            _: &'a str,
            _: &'a [String],
        ) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>> {
            Box::pin(async { Ok(None) })
        }
        fn update_record<'a>(
            &'a self,
            _: CrmObject,
            _: &'a str,
            _: &'a Fields,
        ) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
            Box::pin(async { unreachable!("the poller never writes") })
        }
        fn search_modified<'a>(&'a self, q: ModifiedSearch<'a>) -> BoxFuture<'a, ConnResult<SearchPage>> {
            Box::pin(async move {
                let call = self.calls.fetch_add(1, Ordering::SeqCst);
                let ids: Vec<usize> = (0..150).filter(|i| call == 0 || *i != 50).collect();
                let offset: usize = q.after.and_then(|a| a.parse().ok()).unwrap_or(0);
                let end = (offset + q.limit as usize).min(ids.len());
                let results = ids[offset.min(end)..end]
                    .iter()
                    .map(|i| {
                        let mut fields = Fields::new();
                        fields.insert("lastmodifieddate".into(), Some(self.at.to_string()));
                        RemoteRecord {
                            id: i.to_string(),
                            fields,
                        }
                    })
                    .collect();
                Ok(SearchPage {
                    total: ids.len() as u64,
                    results,
                    next_after: (end < ids.len()).then(|| end.to_string()),
                })
            })
        }
        fn batch_read<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [String],
            _: &'a [String],
        ) -> BoxFuture<'a, Vec<crate::connectors::BatchItem<Option<RemoteRecord>>>> {
            Box::pin(async { unreachable!("the poller never batch-reads") })
        }
        fn batch_update<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [crate::connectors::BatchUpdate],
        ) -> BoxFuture<'a, Vec<crate::connectors::BatchItem<RemoteRecord>>> {
            Box::pin(async { unreachable!("the poller never writes") })
        }
        fn batch_upsert<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [crate::connectors::BatchUpsert],
        ) -> BoxFuture<'a, Vec<crate::connectors::BatchItem<(RemoteRecord, bool)>>> {
            Box::pin(async { unreachable!("the poller never writes") })
        }
        fn list_records<'a>(
            &'a self,
            _: CrmObject,
            _: &'a [String],
            _: Option<&'a str>,
        ) -> BoxFuture<'a, ConnResult<crate::connectors::ListPage>> {
            Box::pin(async { unreachable!("the poller never lists") })
        }
        fn ensure_properties<'a>(&'a self, _: &'a [PropertyDef]) -> BoxFuture<'a, ConnResult<Vec<String>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    async fn engine_with(dir: &std::path::Path, crm: Arc<dyn CrmApi>) -> Engine {
        let mut contract = crate::contract::default_contract();
        contract.systems.crm.poll_overlap_ms = 1_000;
        Engine::open(EngineConfig {
            ledger: dir.join("l.db"),
            contract,
            crm,
            billing: Arc::new(Offline {
                system: "billing",
                why: "not polled here".into(),
            }),
            webhook_secrets: WebhookSecrets::default(),
            workers: 1,
            clock: Arc::new(SystemClock),
            demo: false,
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_window_that_shrinks_while_paged_is_read_again_so_no_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let at = chrono::Utc::now().timestamp_millis() - 500;
        let crm = Arc::new(ShrinksWhilePaged {
            at,
            calls: Default::default(),
        });
        let engine = engine_with(dir.path(), crm).await;
        let r = engine.poll_now(Side::Crm).await.unwrap();
        assert_eq!(r.rereads, 1, "{r:?}");
        assert_eq!(r.accepted, 150, "contact 100 was not skipped: {r:?}");
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn a_millisecond_over_the_cap_is_read_as_far_as_possible_and_recorded_for_reconciliation() {
        let dir = tempfile::tempdir().unwrap();
        let at = chrono::Utc::now().timestamp_millis() - 500;
        let engine = engine_with(dir.path(), Arc::new(SameMillisecond { at })).await;
        engine.set_search_cap(10);
        let r = engine.poll_now(Side::Crm).await.unwrap();
        assert_eq!(r.accepted, 25, "what search returns is still ingested: {r:?}");
        assert!(r.splits > 8, "halved down to one millisecond: {r:?}");
        let gaps = engine.ledger().reconciliation_gaps(true).await.unwrap();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(
            (gaps[0].from_ms, gaps[0].to_ms, gaps[0].cursor.as_str()),
            (at, at, "poll:crm:contacts")
        );
        let wm = engine.ledger().watermark("poll:crm:contacts").await.unwrap().unwrap();
        assert!(wm > at, "the pass completed and moved the cursor");
        engine.shutdown().await;
    }
}
