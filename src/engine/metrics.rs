//! Engine signals: counters accumulated in memory and flushed as per-minute rollups into the
//! ledger (so charts survive restarts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Inner;

#[derive(Debug, Default)]
pub struct Metrics {
    pending: Mutex<HashMap<(String, String), f64>>,
    totals: Mutex<HashMap<(String, String), f64>>,
    /// Per-minute maxima (e.g. the most records one CRM call carried).
    maxima: Mutex<HashMap<(String, String), f64>>,
}

impl Metrics {
    /// Add `v` to counter `name{labels}`.
    pub fn add(&self, name: &str, labels: &str, v: f64) {
        if v == 0.0 {
            return;
        }
        let key = (name.to_string(), labels.to_string());
        for m in [&self.pending, &self.totals] {
            let mut g = match m.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *g.entry(key.clone()).or_insert(0.0) += v;
        }
    }

    /// Raise gauge `name{labels}` to at least `v` for this minute.
    pub fn max(&self, name: &str, labels: &str, v: f64) {
        let mut g = match self.maxima.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let e = g.entry((name.to_string(), labels.to_string())).or_insert(v);
        *e = e.max(v);
    }

    /// Totals since this process started.
    pub fn totals(&self) -> Vec<(String, String, f64)> {
        let g = match self.totals.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut v: Vec<_> = g.iter().map(|((n, l), v)| (n.clone(), l.clone(), *v)).collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    fn take(&self) -> HashMap<(String, String), f64> {
        let mut g = match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::take(&mut *g)
    }
}

pub(super) async fn flush(inner: &Inner) {
    let minute = inner.now_ms() / 60_000;
    let samples: Vec<(String, String, i64, f64)> = inner
        .metrics
        .take()
        .into_iter()
        .map(|((n, l), v)| (n, l, minute, v))
        .collect();
    if let Err(e) = inner.ledger.add_metric_samples(&samples).await {
        if !inner.ledger.explains(&e) {
            tracing::warn!(error = %e, "could not store metric samples; they are lost for this minute");
        }
    }
    let maxima: Vec<(String, String, i64, f64)> = {
        let mut g = match inner.metrics.maxima.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::take(&mut *g)
            .into_iter()
            .map(|((n, l), v)| (n, l, minute, v))
            .collect()
    };
    if let Err(e) = inner.ledger.max_metric_samples(&maxima).await {
        if !inner.ledger.explains(&e) {
            tracing::warn!(error = %e, "could not store metric maxima; they are lost for this minute");
        }
    }
    // Gauges: the last sample of each minute stands for the minute.
    match inner.ledger.gauges(minute * 60_000).await {
        Ok(g) => {
            let mut set = vec![
                (
                    "queue_depth".to_string(),
                    "crm".to_string(),
                    minute,
                    g.open_writes_crm as f64,
                ),
                (
                    "queue_depth".to_string(),
                    "billing".to_string(),
                    minute,
                    g.open_writes_billing as f64,
                ),
                (
                    "records_queued".to_string(),
                    String::new(),
                    minute,
                    g.queue_depth as f64,
                ),
                (
                    "dead_letter_depth".to_string(),
                    String::new(),
                    minute,
                    g.dead_letter_depth as f64,
                ),
                ("review_depth".to_string(), String::new(), minute, g.review_depth as f64),
            ];
            if g.lag.samples > 0 {
                set.push(("lag_p50_ms".to_string(), String::new(), minute, g.lag.p50 as f64));
                set.push(("lag_p95_ms".to_string(), String::new(), minute, g.lag.p95 as f64));
            }
            if let Err(e) = inner.ledger.set_metric_samples(&set).await {
                if !inner.ledger.explains(&e) {
                    tracing::warn!(error = %e, "could not store gauge samples");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not sample gauges"),
    }
}

pub(super) async fn flusher(inner: Arc<Inner>) {
    let mut stop = inner.shutdown_rx();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => flush(&inner).await,
            _ = stop.changed() => break,
        }
    }
}
