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
        tracing::warn!(error = %e, "could not store metric samples; they are lost for this minute");
    }
}

pub(super) async fn flusher(inner: Arc<Inner>) {
    let mut stop = inner.shutdown_rx();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => flush(&inner).await,
            _ = stop.changed() => break,
        }
    }
}
