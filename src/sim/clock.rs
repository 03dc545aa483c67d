//! The simulators' shared clock: wall time plus an offset that tests move forward.

use std::sync::atomic::{AtomicI64, Ordering};

/// Wall-clock time shifted by `advance`. Object timestamps and idempotency-key expiry
/// follow this clock; webhook signature timestamps use real time (as the providers do).
#[derive(Debug, Default)]
pub struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    pub fn advance(&self, secs: i64) {
        self.offset_ms.fetch_add(secs.saturating_mul(1000), Ordering::Relaxed);
    }
}

/// `ts` (unix seconds) plus `n` calendar months, clamped to the month's last day the way
/// Stripe bills monthly (Jan 31 + 1 month = Feb 28/29).
pub fn add_months(ts: i64, n: u32) -> i64 {
    chrono::DateTime::from_timestamp(ts, 0)
        .and_then(|d| d.checked_add_months(chrono::Months::new(n)))
        .map_or(ts.saturating_add(i64::from(n) * 30 * 86_400), |d| d.timestamp())
}

/// HubSpot-style ISO 8601 timestamp with milliseconds, e.g. `2024-01-02T03:04:05.678Z`.
pub fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_forward() {
        let c = SimClock::default();
        let a = c.now_s();
        c.advance(3600);
        assert!(c.now_s() >= a + 3600);
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        // 2024-01-31T00:00:00Z + 1 month = 2024-02-29, + 2 months = 2024-03-31.
        assert_eq!(add_months(1_706_659_200, 1), 1_709_164_800);
        assert_eq!(add_months(1_706_659_200, 2), 1_711_843_200);
    }
}
