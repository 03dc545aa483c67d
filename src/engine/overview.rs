//! The overview: health with reasons, the status counters, and per-minute charts over the
//! last hour read back from the ledger's rollups (so they survive restarts).

use std::collections::BTreeMap;

use super::{Engine, EngineError};
use crate::api::{
    Alert, Chart, Health, HealthState, Overview, Point, ReconciliationSummary, Series, Status, SystemInfo, SystemsInfo,
};
use crate::contract::{Side, SystemKind};

const WINDOW_MINUTES: i64 = 60;
/// A system is called unreachable when its last request failed to connect or timed out
/// within this long and nothing has succeeded since.
const UNREACHABLE_WINDOW_MS: i64 = 60_000;

impl Engine {
    /// Everything the overview screen shows.
    pub async fn overview(&self) -> Result<Overview, EngineError> {
        let inner = &self.inner;
        let now = inner.now_ms();
        let status = self.status().await?;
        let since_minute = now / 60_000 - WINDOW_MINUTES + 1;
        let mut charts = Vec::new();
        let chart = |id: &str, title: &str, unit: &str, series: Vec<Series>| Chart {
            id: id.into(),
            title: title.into(),
            unit: unit.into(),
            series,
        };
        let lag_p50 = self.series("lag_p50_ms", since_minute, 1.0).await?;
        let lag_p95 = self.series("lag_p95_ms", since_minute, 1.0).await?;
        charts.push(chart(
            "lag",
            "Sync lag (event received → applied)",
            "ms",
            vec![named("p50", lag_p50.get("")), named("p95", lag_p95.get(""))],
        ));
        let dedupe = self.series("dedupe_drops", since_minute, 1.0).await?;
        let echo = self.series("echo_drops", since_minute, 1.0).await?;
        charts.push(chart(
            "drops",
            "Dedupe and echo drops",
            "per minute",
            vec![named("dedupe", dedupe.get("")), named("echo", Some(&sum_labels(&echo)))],
        ));
        let rl = self.series("rate_limited", since_minute, 1.0).await?;
        charts.push(chart(
            "rate_limited",
            "429s per destination",
            "per minute",
            by_side(&rl),
        ));
        let wait = self.series("rate_wait_ms", since_minute, 0.001).await?;
        charts.push(chart(
            "rate_wait",
            "Time waiting on rate limits",
            "s per minute",
            by_side(&wait),
        ));
        let q = self.series("queue_depth", since_minute, 1.0).await?;
        charts.push(chart(
            "queue_depth",
            "Open writes per destination",
            "writes",
            by_side(&q),
        ));
        let errors = self.series("errors", since_minute, 1.0).await?;
        let writes = self.series("writes", since_minute, 1.0).await?;
        let rate: Vec<Series> = ["crm", "billing"]
            .iter()
            .map(|side| {
                let e = errors.get(*side).cloned().unwrap_or_default();
                let w = writes.get(*side).cloned().unwrap_or_default();
                let mut minutes: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
                for p in &e {
                    minutes.entry(p.t_ms).or_default().0 += p.v;
                }
                for p in &w {
                    minutes.entry(p.t_ms).or_default().1 += p.v;
                }
                let points = minutes
                    .into_iter()
                    .map(|(t_ms, (e, w))| Point {
                        t_ms,
                        v: if e + w > 0.0 { e / (e + w) } else { 0.0 },
                    })
                    .collect();
                Series {
                    label: (*side).into(),
                    points,
                }
            })
            .collect();
        charts.push(chart(
            "error_rate",
            "Error rate (failed / attempted writes)",
            "ratio",
            rate,
        ));
        let dl = self.series("dead_letter_depth", since_minute, 1.0).await?;
        let rv = self.series("review_depth", since_minute, 1.0).await?;
        charts.push(chart(
            "backlog",
            "Dead letters and review queue",
            "records",
            vec![named("dead letters", dl.get("")), named("review", rv.get(""))],
        ));

        let systems = SystemsInfo {
            demo: inner.demo,
            crm: self.system_info(Side::Crm, now),
            billing: self.system_info(Side::Billing, now),
        };
        let (mut health, mut alerts) = self.health(&status, &systems, &errors, &writes, now);
        let reconciliation = self.reconciliation_summary().await?;
        if let Some(reason) = reconciliation.1 {
            alerts.push(alert("mismatch_rate", &reason, "reconciliation", ""));
            health.reasons.push(reason);
            if health.state == HealthState::Running {
                health.state = HealthState::Degraded;
            }
        }
        Ok(Overview {
            generated_at_ms: now,
            health,
            status,
            charts,
            reconciliation: reconciliation.0,
            systems,
            alerts,
        })
    }

    /// The last finished reconciliation, and a health reason when its mismatch rate is over
    /// the contract's `alerts.mismatch_rate`.
    async fn reconciliation_summary(&self) -> Result<(ReconciliationSummary, Option<String>), EngineError> {
        let Some(r) = self.last_reconciliation().await? else {
            return Ok((
                ReconciliationSummary {
                    last_run: None,
                    message: "no reconciliation run yet".into(),
                },
                None,
            ));
        };
        let message = format!(
            "run {}: {} records compared, {} mismatched ({:.2}%, threshold {:.2}%), {} missed events",
            r.run.id,
            r.compared,
            r.mismatched_records,
            100.0 * r.mismatch_rate,
            100.0 * r.alert_threshold,
            r.missed_events
        );
        let reason = r.over_threshold.then(|| {
            format!(
                "reconciliation mismatch rate {:.2}% is over the {:.2}% threshold (run {}; `driftless reconcile --dry-run` previews the repairs)",
                100.0 * r.mismatch_rate,
                100.0 * r.alert_threshold,
                r.run.id
            )
        });
        Ok((
            ReconciliationSummary {
                last_run: Some(r.run.summary()),
                message,
            },
            reason,
        ))
    }

    async fn series(
        &self,
        name: &str,
        since_minute: i64,
        scale: f64,
    ) -> Result<BTreeMap<String, Vec<Point>>, EngineError> {
        let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for (labels, minute, v) in self.inner.ledger.metric_series(name, since_minute).await? {
            out.entry(labels).or_default().push(Point {
                t_ms: minute * 60_000,
                v: v * scale,
            });
        }
        Ok(out)
    }

    fn system_info(&self, side: Side, now: i64) -> SystemInfo {
        let cfg = self.inner.contract.system(side);
        let last = self.inner.last_failure(side);
        let unreachable = last.as_ref().is_some_and(|(at, _)| now - at < UNREACHABLE_WINDOW_MS);
        SystemInfo {
            kind: match cfg.kind {
                SystemKind::Hubspot => "hubspot".into(),
                SystemKind::Stripe => "stripe".into(),
            },
            base_url: cfg.base_url.clone(),
            reachable: !unreachable,
            last_error: last.map(|(_, e)| e),
        }
    }

    fn health(
        &self,
        status: &Status,
        systems: &SystemsInfo,
        errors: &BTreeMap<String, Vec<Point>>,
        writes: &BTreeMap<String, Vec<Point>>,
        now: i64,
    ) -> (Health, Vec<Alert>) {
        let alerts = &self.inner.contract.alerts;
        let mut reasons = Vec::new();
        let mut crossed = Vec::new();
        for p in &status.ledger.paused {
            let scope = if p.scope == "global" {
                "all outbound writes".to_string()
            } else {
                format!("writes to {}", p.scope)
            };
            reasons.push(format!(
                "{scope} paused by {}: {}",
                p.set_by,
                p.reason.as_deref().unwrap_or("no reason given")
            ));
        }
        let paused = !reasons.is_empty();
        // The ledger itself first: nothing else works while it cannot be written.
        if let Some(ep) = self.inner.ledger.unwritable() {
            let since = chrono::DateTime::from_timestamp_millis(ep.since_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "a moment ago".into());
            let m = format!(
                "ledger unwritable ({}) since {since}: {} writes refused, webhooks answered 503 \
                 (the senders retry), sync waiting; {}",
                ep.why.label(),
                ep.failures,
                ep.why.remedy()
            );
            crossed.push(alert("ledger_unwritable", &m, "overview", ""));
            reasons.insert(0, m);
        }
        let observing = status.ledger.observe.is_some();
        if let Some(o) = &status.ledger.observe {
            let held: i64 = status.ledger.held_writes.values().sum();
            reasons.push(format!(
                "observe mode (set by {}): events are ingested and planned, nothing is written; \
                 {held} planned writes held; `driftless writes on` sends them",
                o.set_by
            ));
        }
        for (name, s) in [("CRM", &systems.crm), ("billing", &systems.billing)] {
            if !s.reachable {
                let m = format!("{name} unreachable: {}", s.last_error.as_deref().unwrap_or("no answer"));
                crossed.push(alert(
                    &format!("unreachable:{}", name.to_lowercase()),
                    &m,
                    "overview",
                    "",
                ));
                reasons.push(m);
            }
        }
        // Rate pressure, from the budgets themselves: a daily cap reached holds every write.
        for b in &status.budgets {
            if b.daily_exhausted {
                let m = format!(
                    "{}: {}",
                    b.destination,
                    b.blocked_reason.as_deref().unwrap_or("daily cap reached")
                );
                crossed.push(alert(&format!("daily_cap:{}", b.destination), &m, "overview", ""));
                reasons.push(m);
            }
        }
        let l = &status.ledger;
        if l.lag_ms.samples > 0 && l.lag_ms.p95 as u64 > alerts.lag_p95_ms {
            let m = format!(
                "sync lag p95 {} ms is over the {} ms threshold",
                l.lag_ms.p95, alerts.lag_p95_ms
            );
            crossed.push(alert("lag_p95", &m, "overview", ""));
            reasons.push(m);
        }
        for p in l.pollers.iter().filter(|p| p.state != "ok") {
            let m = p.message.clone().unwrap_or_else(|| format!("{}: {}", p.name, p.state));
            crossed.push(alert(&format!("poller:{}", p.name), &m, "reconciliation", ""));
            reasons.push(m);
        }
        if l.dead_letter_depth as u64 > alerts.dead_letters {
            let m = format!(
                "{} dead letters waiting (threshold {})",
                l.dead_letter_depth, alerts.dead_letters
            );
            crossed.push(alert("dead_letters", &m, "dead-letters", ""));
            reasons.push(m);
        }
        if l.review_depth as u64 > alerts.review_depth {
            let m = format!(
                "{} records waiting for review (threshold {})",
                l.review_depth, alerts.review_depth
            );
            crossed.push(alert("review_depth", &m, "review", ""));
            reasons.push(m);
        }
        let recent = now / 60_000 * 60_000 - 5 * 60_000;
        let total = |m: &BTreeMap<String, Vec<Point>>| -> f64 {
            m.values().flatten().filter(|p| p.t_ms >= recent).map(|p| p.v).sum()
        };
        let (e, w) = (total(errors), total(writes));
        if e + w >= 20.0 && e / (e + w) > alerts.error_rate {
            let m = format!(
                "error rate {:.1}% over the last 5 minutes (threshold {:.1}%)",
                100.0 * e / (e + w),
                100.0 * alerts.error_rate
            );
            crossed.push(alert("error_rate", &m, "dead-letters", ""));
            reasons.push(m);
        }
        let state = if paused {
            HealthState::Paused
        } else if observing {
            HealthState::Observing
        } else if reasons.is_empty() {
            HealthState::Running
        } else {
            HealthState::Degraded
        };
        // Migration mode is deliberate, not a fault: shown first, without changing the state.
        if let Some(m) = &l.migration {
            reasons.insert(
                0,
                format!(
                    "migration mode (started by {}: {}): {} authoritative for {}; writes into {} frozen \
                     until `driftless migration finish`",
                    m.started_by,
                    m.reason,
                    m.authority,
                    m.object.as_deref().unwrap_or("every object"),
                    m.authority
                ),
            );
        }
        (Health { state, reasons }, crossed)
    }
}

/// The alerts in `now` not in `seen` (to notify once per crossing); `seen` becomes the ids in
/// `now`, so an alert that clears and crosses again is notified again.
pub fn newly_crossed(seen: &mut std::collections::BTreeSet<String>, now: &[Alert]) -> Vec<Alert> {
    let fresh: Vec<Alert> = now.iter().filter(|a| !seen.contains(&a.id)).cloned().collect();
    *seen = now.iter().map(|a| a.id.clone()).collect();
    fresh
}

fn alert(id: &str, message: &str, screen: &str, params: &str) -> Alert {
    Alert {
        id: id.into(),
        message: message.into(),
        screen: screen.into(),
        params: params.into(),
    }
}

fn named(label: &str, points: Option<&Vec<Point>>) -> Series {
    Series {
        label: label.into(),
        points: points.cloned().unwrap_or_default(),
    }
}

fn by_side(m: &BTreeMap<String, Vec<Point>>) -> Vec<Series> {
    ["crm", "billing"].iter().map(|s| named(s, m.get(*s))).collect()
}

/// One series summing every label's points per minute.
fn sum_labels(m: &BTreeMap<String, Vec<Point>>) -> Vec<Point> {
    let mut minutes: BTreeMap<i64, f64> = BTreeMap::new();
    for p in m.values().flatten() {
        *minutes.entry(p.t_ms).or_default() += p.v;
    }
    minutes.into_iter().map(|(t_ms, v)| Point { t_ms, v }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_new_once_per_crossing() {
        let mut seen = std::collections::BTreeSet::new();
        let a = alert("dead_letters", "3 dead letters", "dead-letters", "");
        let b = alert("lag_p95", "lag", "overview", "");
        assert_eq!(newly_crossed(&mut seen, std::slice::from_ref(&a)), vec![a.clone()]);
        assert!(
            newly_crossed(&mut seen, std::slice::from_ref(&a)).is_empty(),
            "still crossed: not again"
        );
        assert_eq!(newly_crossed(&mut seen, &[a.clone(), b.clone()]), vec![b.clone()]);
        assert!(newly_crossed(&mut seen, &[]).is_empty());
        assert_eq!(
            newly_crossed(&mut seen, std::slice::from_ref(&a)),
            vec![a],
            "cleared, then crossed again"
        );
    }
}
