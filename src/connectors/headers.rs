//! What providers tell us about their limits, parsed from response headers: `Retry-After`
//! (seconds or an HTTP date), Stripe's `Stripe-Should-Retry`, and HubSpot's
//! `X-HubSpot-RateLimit-*` family (sent on every response, not only on 429s).

use reqwest::header::HeaderMap;

/// Connectors call this with the rate-limit headers of every response (the rate budgets
/// implement it).
pub trait RateObserver: Send + Sync {
    fn observe(&self, h: &RateHeaders);
}

/// HubSpot's rate-limit headers of one response. Each is optional: OAuth apps get no daily
/// figures, and some endpoints send none at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Requests allowed per interval (`X-HubSpot-RateLimit-Max`).
    pub max: Option<u64>,
    /// Requests left in the current interval (`X-HubSpot-RateLimit-Remaining`).
    pub remaining: Option<u64>,
    /// The rolling interval (`X-HubSpot-RateLimit-Interval-Milliseconds`, 10 000 today).
    pub interval_ms: Option<u64>,
    /// Requests allowed per day (`X-HubSpot-RateLimit-Daily`).
    pub daily: Option<u64>,
    /// Requests left today (`X-HubSpot-RateLimit-Daily-Remaining`).
    pub daily_remaining: Option<u64>,
}

impl RateHeaders {
    pub fn is_empty(&self) -> bool {
        *self == RateHeaders::default()
    }

    /// With the interval's quota used up (`Remaining: 0`), how long until a slot frees in a
    /// rolling window used evenly: interval / max.
    pub fn slot_ms(&self) -> Option<u64> {
        match (self.remaining, self.max, self.interval_ms) {
            (Some(0), Some(max), Some(iv)) if max > 0 => Some((iv / max).max(1)),
            _ => None,
        }
    }

    /// Read HubSpot's headers; a header that is absent or not a whole number is ignored.
    pub fn from_hubspot(h: &HeaderMap) -> RateHeaders {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        RateHeaders {
            max: num("x-hubspot-ratelimit-max"),
            remaining: num("x-hubspot-ratelimit-remaining"),
            interval_ms: num("x-hubspot-ratelimit-interval-milliseconds").filter(|ms| *ms > 0),
            daily: num("x-hubspot-ratelimit-daily"),
            daily_remaining: num("x-hubspot-ratelimit-daily-remaining"),
        }
    }
}

/// `Retry-After` in milliseconds: delta-seconds (`"2"`, fractions tolerated) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), measured from `now_ms` (wall clock, Unix ms). A date
/// in the past means "now" (0). Anything else is ignored.
pub fn retry_after_ms(h: &HeaderMap, now_ms: i64) -> Option<u64> {
    let s = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some((secs * 1000.0).min(MAX_RETRY_AFTER_MS as f64) as u64);
        }
        return None;
    }
    let at = chrono::DateTime::parse_from_rfc2822(s).ok()?;
    let wait = at.timestamp_millis().saturating_sub(now_ms);
    Some(u64::try_from(wait).unwrap_or(0).min(MAX_RETRY_AFTER_MS))
}

/// The longest wait a `Retry-After` is taken at (a day): an absurd one would otherwise
/// overflow the times it is added to, and no provider asks for longer.
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 60 * 60 * 1000;

/// Stripe's `Stripe-Should-Retry`: `Some(true)` / `Some(false)` when sent, `None` otherwise.
pub fn stripe_should_retry(h: &HeaderMap) -> Option<bool> {
    match h.get("stripe-should-retry")?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        // 2015-10-21T07:28:00Z
        let now = 1_445_412_480_000;
        assert_eq!(retry_after_ms(&headers(&[("Retry-After", "2")]), now), Some(2_000));
        assert_eq!(retry_after_ms(&headers(&[("Retry-After", " 0.5 ")]), now), Some(500));
        assert_eq!(
            retry_after_ms(&headers(&[("Retry-After", "Wed, 21 Oct 2015 07:28:03 GMT")]), now),
            Some(3_000)
        );
        // A date already past: retry now.
        assert_eq!(
            retry_after_ms(&headers(&[("Retry-After", "Wed, 21 Oct 2015 07:27:00 GMT")]), now),
            Some(0)
        );
        assert_eq!(retry_after_ms(&headers(&[("Retry-After", "soon")]), now), None);
        // An absurd wait is capped at a day (added to times, it would overflow).
        assert_eq!(
            retry_after_ms(&headers(&[("Retry-After", "1e300")]), now),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            retry_after_ms(&headers(&[("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")]), now),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(retry_after_ms(&headers(&[("Retry-After", "-3")]), now), None);
        assert_eq!(retry_after_ms(&headers(&[]), now), None);
    }

    #[test]
    fn stripe_should_retry_is_tri_state() {
        assert_eq!(
            stripe_should_retry(&headers(&[("Stripe-Should-Retry", "true")])),
            Some(true)
        );
        assert_eq!(
            stripe_should_retry(&headers(&[("Stripe-Should-Retry", "false")])),
            Some(false)
        );
        assert_eq!(stripe_should_retry(&headers(&[("Stripe-Should-Retry", "maybe")])), None);
        assert_eq!(stripe_should_retry(&headers(&[])), None);
    }

    #[test]
    fn hubspot_headers_are_read_leniently() {
        let h = headers(&[
            ("X-HubSpot-RateLimit-Max", "190"),
            ("X-HubSpot-RateLimit-Remaining", "12"),
            ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
            ("X-HubSpot-RateLimit-Daily", "625000"),
            ("X-HubSpot-RateLimit-Daily-Remaining", "abc"),
        ]);
        assert_eq!(
            RateHeaders::from_hubspot(&h),
            RateHeaders {
                max: Some(190),
                remaining: Some(12),
                interval_ms: Some(10_000),
                daily: Some(625_000),
                daily_remaining: None,
            }
        );
        assert!(RateHeaders::from_hubspot(&headers(&[])).is_empty());
        assert_eq!(RateHeaders::from_hubspot(&h).slot_ms(), None, "12 remaining: no wait");
        let full = RateHeaders {
            remaining: Some(0),
            ..RateHeaders::from_hubspot(&h)
        };
        assert_eq!(full.slot_ms(), Some(52), "10 000 ms / 190");
        let zero = headers(&[("X-HubSpot-RateLimit-Interval-Milliseconds", "0")]);
        assert_eq!(RateHeaders::from_hubspot(&zero).interval_ms, None);
    }
}
