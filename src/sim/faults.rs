//! Fault profiles and the seeded per-request fault decisions.

use std::collections::VecDeque;
use std::sync::{Mutex, RwLock};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::SimError;

/// What can go wrong, and how often. Probabilities are in `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultProfile {
    /// Probability a webhook is delivered twice (the second copy later).
    pub duplicate_webhook: f64,
    /// Probability a webhook is held back and delivered after later ones.
    pub reorder_webhook: f64,
    /// Max extra delay for held-back (and duplicated) webhooks.
    pub webhook_delay_ms: u64,
    /// Probability an API request gets 429 with `Retry-After: 1`.
    pub rate_limit: f64,
    /// Probability a request starts a 5xx burst of `burst_len` requests.
    pub server_error: f64,
    pub burst_len: u32,
    /// Probability a mutating request is applied and its response withheld for `hang_ms`.
    pub timeout_after_commit: f64,
    pub hang_ms: u64,
    /// Probability a response is delayed by `slow_ms`.
    pub slow: f64,
    pub slow_ms: u64,
    /// Probability per actor tick of a webhook storm (harmless re-deliveries).
    pub storm: f64,
    /// A real server-side quota, requests per second (0: none). Over it, the simulator
    /// answers 429 the way its provider does (see [`FaultEngine::take_quota`]).
    pub quota_per_sec: f64,
}

impl FaultProfile {
    pub fn none() -> Self {
        FaultProfile {
            duplicate_webhook: 0.0,
            reorder_webhook: 0.0,
            webhook_delay_ms: 0,
            rate_limit: 0.0,
            server_error: 0.0,
            burst_len: 0,
            timeout_after_commit: 0.0,
            hang_ms: 0,
            slow: 0.0,
            slow_ms: 0,
            storm: 0.0,
            quota_per_sec: 0.0,
        }
    }

    /// Moderate: every kind of fault on at a few percent.
    pub fn default_profile() -> Self {
        FaultProfile {
            duplicate_webhook: 0.05,
            reorder_webhook: 0.05,
            webhook_delay_ms: 2000,
            rate_limit: 0.03,
            server_error: 0.01,
            burst_len: 3,
            timeout_after_commit: 0.02,
            hang_ms: 2000,
            slow: 0.03,
            slow_ms: 150,
            storm: 0.02,
            quota_per_sec: 0.0,
        }
    }

    /// Heavier: the demo's "bad day".
    pub fn chaos() -> Self {
        FaultProfile {
            duplicate_webhook: 0.2,
            reorder_webhook: 0.15,
            webhook_delay_ms: 3000,
            rate_limit: 0.1,
            server_error: 0.04,
            burst_len: 4,
            timeout_after_commit: 0.05,
            hang_ms: 3000,
            slow: 0.1,
            slow_ms: 300,
            storm: 0.1,
            quota_per_sec: 0.0,
        }
    }

    /// `none` | `default` | `chaos` | a comma list of `key=value` applied on top of `none`
    /// (a bare preset name inside the list switches the base, e.g. `default,429=0.2`).
    pub fn parse(s: &str) -> Result<Self, SimError> {
        let bad = |msg: String| SimError::BadFaultProfile(msg);
        let s = s.trim();
        if s.is_empty() {
            return Err(bad("empty fault profile".into()));
        }
        let mut p = FaultProfile::none();
        for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((key, val)) = tok.split_once('=') else {
                p = match tok {
                    "none" => FaultProfile::none(),
                    "default" => FaultProfile::default_profile(),
                    "chaos" => FaultProfile::chaos(),
                    _ => return Err(bad(format!("`{tok}`: expected none, default, chaos or key=value"))),
                };
                continue;
            };
            let (key, val) = (key.trim(), val.trim());
            let prob = || -> Result<f64, SimError> {
                match val.parse::<f64>() {
                    Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
                    _ => Err(bad(format!("`{key}`: expected a probability 0..1, got `{val}`"))),
                }
            };
            let int = || -> Result<u64, SimError> {
                val.parse::<u64>()
                    .map_err(|_| bad(format!("`{key}`: expected a whole number, got `{val}`")))
            };
            match key {
                "dup" | "duplicate" | "duplicate_webhook" => p.duplicate_webhook = prob()?,
                "reorder" | "reorder_webhook" => p.reorder_webhook = prob()?,
                "delay" | "delay_ms" | "webhook_delay_ms" => p.webhook_delay_ms = int()?,
                "429" | "rate_limit" => p.rate_limit = prob()?,
                "5xx" | "server_error" => p.server_error = prob()?,
                "burst" | "burst_len" => {
                    p.burst_len = u32::try_from(int()?).map_err(|_| bad(format!("`{key}`: too large")))?
                }
                "timeout" | "timeout_after_commit" => p.timeout_after_commit = prob()?,
                "hang_ms" => p.hang_ms = int()?,
                "slow" => p.slow = prob()?,
                "slow_ms" => p.slow_ms = int()?,
                "storm" => p.storm = prob()?,
                "quota" | "quota_per_sec" => {
                    p.quota_per_sec = match val.parse::<f64>() {
                        Ok(v) if v.is_finite() && v >= 0.0 => v,
                        _ => return Err(bad(format!("`{key}`: expected requests per second >= 0, got `{val}`"))),
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "unknown key `{key}` (known: dup, reorder, delay_ms, 429, 5xx, burst, \
                         timeout, hang_ms, slow, slow_ms, storm, quota)"
                    )))
                }
            }
        }
        if p.server_error > 0.0 && p.burst_len == 0 {
            p.burst_len = 1;
        }
        Ok(p)
    }
}

/// The faults chosen for one API request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Decision {
    pub rate_limit: bool,
    /// 500 or 503 when the request falls in a 5xx burst.
    pub server_error: Option<u16>,
    pub slow_ms: Option<u64>,
    /// Hang for this long after committing (mutating requests only).
    pub hang_ms: Option<u64>,
}

/// How a simulator's quota counts, as its provider does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QuotaShape {
    /// Stripe: a token bucket holding one second's worth.
    PerSecondBucket,
    /// HubSpot: at most `quota × window` requests in any rolling window (10 s).
    Rolling { window_ms: u64 },
}

/// One request's standing against the quota (for the provider's headers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuotaAnswer {
    pub allowed: bool,
    /// Requests allowed per interval, left in it, and the interval.
    pub max: u64,
    pub remaining: u64,
    pub interval_ms: u64,
    /// Requests today: the simulators' daily limit and what is left of it.
    pub daily: u64,
    pub daily_remaining: u64,
}

/// The simulators' daily limit shown in headers (HubSpot's Free/Starter figure).
pub const SIM_DAILY_LIMIT: u64 = 250_000;

#[derive(Default)]
struct QuotaState {
    tokens: f64,
    last: Option<tokio::time::Instant>,
    log: VecDeque<tokio::time::Instant>,
    day_used: u64,
}

/// Seeded decision maker. Every request draws the same number of values, so the same seed
/// and the same request sequence give the same decisions whatever the profile.
pub struct FaultEngine {
    profile: RwLock<FaultProfile>,
    state: Mutex<(ChaCha8Rng, u32)>,
    quota: Mutex<QuotaState>,
}

impl FaultEngine {
    pub fn new(seed: u64, profile: FaultProfile) -> Self {
        FaultEngine {
            profile: RwLock::new(profile),
            state: Mutex::new((ChaCha8Rng::seed_from_u64(seed), 0)),
            quota: Mutex::new(QuotaState::default()),
        }
    }

    /// Count one request against the profile's quota (`None` when there is none). A refused
    /// request still counts toward the day (as HubSpot counts it) but not the interval.
    pub fn take_quota(&self, shape: QuotaShape) -> Option<QuotaAnswer> {
        let per_sec = self.profile().quota_per_sec;
        if per_sec <= 0.0 {
            return None;
        }
        let now = tokio::time::Instant::now();
        let mut q = self.quota.lock().unwrap_or_else(|e| e.into_inner());
        q.day_used += 1;
        let (allowed, max, remaining, interval_ms) = match shape {
            QuotaShape::PerSecondBucket => {
                let cap = per_sec.max(1.0);
                let elapsed = q.last.map_or(cap / per_sec, |l| now.duration_since(l).as_secs_f64());
                q.tokens = (q.tokens + elapsed * per_sec).min(cap);
                q.last = Some(now);
                let allowed = q.tokens >= 1.0;
                if allowed {
                    q.tokens -= 1.0;
                }
                (allowed, cap as u64, q.tokens.max(0.0) as u64, 1_000)
            }
            QuotaShape::Rolling { window_ms } => {
                let window = std::time::Duration::from_millis(window_ms);
                while q.log.front().is_some_and(|t| now.duration_since(*t) >= window) {
                    q.log.pop_front();
                }
                let max = ((per_sec * window_ms as f64 / 1000.0).round() as u64).max(1);
                let allowed = (q.log.len() as u64) < max;
                if allowed {
                    q.log.push_back(now);
                }
                (allowed, max, max - q.log.len() as u64, window_ms)
            }
        };
        Some(QuotaAnswer {
            allowed,
            max,
            remaining,
            interval_ms,
            daily: SIM_DAILY_LIMIT,
            daily_remaining: SIM_DAILY_LIMIT.saturating_sub(q.day_used),
        })
    }

    pub fn profile(&self) -> FaultProfile {
        self.profile
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn set(&self, p: FaultProfile) {
        match self.profile.write() {
            Ok(mut g) => *g = p,
            Err(e) => *e.into_inner() = p,
        }
    }

    pub fn decide(&self, mutating: bool) -> Decision {
        let p = self.profile();
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (rng, burst_left) = &mut *guard;
        let r: [f64; 5] = std::array::from_fn(|_| rng.gen::<f64>());
        let mut d = Decision::default();
        if r[0] < p.rate_limit {
            d.rate_limit = true;
            return d;
        }
        let status = if r[4] < 0.5 { 503 } else { 500 };
        if *burst_left > 0 {
            *burst_left -= 1;
            d.server_error = Some(status);
            return d;
        }
        if r[1] < p.server_error {
            *burst_left = p.burst_len.saturating_sub(1);
            d.server_error = Some(status);
            return d;
        }
        if r[2] < p.slow {
            d.slow_ms = Some(p.slow_ms);
        }
        if mutating && r[3] < p.timeout_after_commit {
            d.hang_ms = Some(p.hang_ms);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_presets_and_lists() {
        assert_eq!(FaultProfile::parse("none").ok(), Some(FaultProfile::none()));
        assert_eq!(FaultProfile::parse(" chaos ").ok(), Some(FaultProfile::chaos()));
        assert_eq!(
            FaultProfile::parse("default").ok(),
            Some(FaultProfile::default_profile())
        );
        let p = FaultProfile::parse(
            "dup=0.1,reorder=0.05,429=0.02,5xx=0.01,burst=3,timeout=0.01,hang_ms=1500,slow=0.02,slow_ms=200,storm=0.01",
        )
        .expect("valid");
        assert_eq!(p.duplicate_webhook, 0.1);
        assert_eq!(p.burst_len, 3);
        assert_eq!(p.hang_ms, 1500);
        assert_eq!(p.storm, 0.01);
        assert_eq!(p.webhook_delay_ms, 0);
        let p = FaultProfile::parse("default,429=0.5").expect("valid");
        assert_eq!(p.rate_limit, 0.5);
        assert_eq!(p.duplicate_webhook, 0.05);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = FaultProfile::parse("dup=0.1,bogus=1").unwrap_err().to_string();
        assert!(e.contains("unknown key `bogus`"), "{e}");
        let e = FaultProfile::parse("dup=2").unwrap_err().to_string();
        assert!(e.contains("probability"), "{e}");
        let e = FaultProfile::parse("hang_ms=-1").unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        assert!(FaultProfile::parse("").is_err());
        assert!(FaultProfile::parse("mild").is_err());
    }

    #[test]
    fn decisions_are_seeded() {
        let p = FaultProfile::chaos();
        let a = FaultEngine::new(7, p.clone());
        let b = FaultEngine::new(7, p);
        let da: Vec<_> = (0..200).map(|i| a.decide(i % 2 == 0)).collect();
        let db: Vec<_> = (0..200).map(|i| b.decide(i % 2 == 0)).collect();
        assert_eq!(da, db);
        assert!(da.iter().any(|d| d.rate_limit));
        assert!(da.iter().any(|d| d.server_error.is_some()));
        let none = FaultEngine::new(7, FaultProfile::none());
        assert!((0..100).all(|_| none.decide(true) == Decision::default()));
    }

    #[tokio::test(start_paused = true)]
    async fn quotas_refuse_over_the_limit_and_refill() {
        let e = FaultEngine::new(1, FaultProfile::parse("quota=5").expect("valid"));
        let bucket = |e: &FaultEngine| e.take_quota(QuotaShape::PerSecondBucket).expect("quota on");
        let got: Vec<bool> = (0..7).map(|_| bucket(&e).allowed).collect();
        assert_eq!(got, [true, true, true, true, true, false, false]);
        tokio::time::advance(std::time::Duration::from_millis(400)).await;
        assert!(bucket(&e).allowed);
        assert!(bucket(&e).allowed);
        assert!(!bucket(&e).allowed);

        let e = FaultEngine::new(1, FaultProfile::parse("quota=2").expect("valid"));
        let rolling = |e: &FaultEngine| {
            e.take_quota(QuotaShape::Rolling { window_ms: 10_000 })
                .expect("quota on")
        };
        let first = rolling(&e);
        assert_eq!((first.max, first.remaining, first.interval_ms), (20, 19, 10_000));
        for _ in 0..19 {
            assert!(rolling(&e).allowed);
        }
        let over = rolling(&e);
        assert!(!over.allowed);
        assert_eq!(over.remaining, 0);
        assert_eq!(over.daily_remaining, SIM_DAILY_LIMIT - 21);
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        assert!(rolling(&e).allowed);
        assert!(FaultEngine::new(1, FaultProfile::none())
            .take_quota(QuotaShape::PerSecondBucket)
            .is_none());
        assert!(FaultProfile::parse("quota=-1").is_err());
    }

    #[test]
    fn bursts_last_burst_len() {
        let e = FaultEngine::new(1, FaultProfile::parse("5xx=1,burst=3").expect("valid"));
        assert!((0..10).all(|_| e.decide(false).server_error.is_some()));
    }
}
