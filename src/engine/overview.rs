//! The overview: health with reasons, the status counters, and per-minute charts over the
//! last hour read back from the ledger's rollups (so they survive restarts).

use std::collections::BTreeMap;

use super::{Engine, EngineError};
use crate::api::{
    Chart, Health, HealthState, Overview, Point, ReconciliationSummary, Series, Status, SystemInfo, SystemsInfo,
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
        let mut health = self.health(&status, &systems, &errors, &writes, now);
        let reconciliation = self.reconciliation_summary().await?;
        if let Some(reason) = reconciliation.1 {
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
    ) -> Health {
        let alerts = &self.inner.contract.alerts;
        let mut reasons = Vec::new();
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
                reasons.push(format!(
                    "{name} unreachable: {}",
                    s.last_error.as_deref().unwrap_or("no answer")
                ));
            }
        }
        // Rate pressure, from the budgets themselves: a daily cap reached holds every write.
        for b in &status.budgets {
            if b.daily_exhausted {
                reasons.push(format!(
                    "{}: {}",
                    b.destination,
                    b.blocked_reason.as_deref().unwrap_or("daily cap reached")
                ));
            }
        }
        let l = &status.ledger;
        if l.lag_ms.samples > 0 && l.lag_ms.p95 as u64 > alerts.lag_p95_ms {
            reasons.push(format!(
                "sync lag p95 {} ms is over the {} ms threshold",
                l.lag_ms.p95, alerts.lag_p95_ms
            ));
        }
        for p in l.pollers.iter().filter(|p| p.state != "ok") {
            reasons.push(p.message.clone().unwrap_or_else(|| format!("{}: {}", p.name, p.state)));
        }
        if l.dead_letter_depth as u64 > alerts.dead_letters {
            reasons.push(format!(
                "{} dead letters waiting (threshold {})",
                l.dead_letter_depth, alerts.dead_letters
            ));
        }
        if l.review_depth as u64 > alerts.review_depth {
            reasons.push(format!(
                "{} records waiting for review (threshold {})",
                l.review_depth, alerts.review_depth
            ));
        }
        let recent = now / 60_000 * 60_000 - 5 * 60_000;
        let total = |m: &BTreeMap<String, Vec<Point>>| -> f64 {
            m.values().flatten().filter(|p| p.t_ms >= recent).map(|p| p.v).sum()
        };
        let (e, w) = (total(errors), total(writes));
        if e + w >= 20.0 && e / (e + w) > alerts.error_rate {
            reasons.push(format!(
                "error rate {:.1}% over the last 5 minutes (threshold {:.1}%)",
                100.0 * e / (e + w),
                100.0 * alerts.error_rate
            ));
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
        Health { state, reasons }
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
