//! Fault profiles and the seeded per-request fault decisions.

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
                _ => {
                    return Err(bad(format!(
                        "unknown key `{key}` (known: dup, reorder, delay_ms, 429, 5xx, burst, \
                         timeout, hang_ms, slow, slow_ms, storm)"
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

/// Seeded decision maker. Every request draws the same number of values, so the same seed
/// and the same request sequence give the same decisions whatever the profile.
pub struct FaultEngine {
    profile: RwLock<FaultProfile>,
    state: Mutex<(ChaCha8Rng, u32)>,
}

impl FaultEngine {
    pub fn new(seed: u64, profile: FaultProfile) -> Self {
        FaultEngine {
            profile: RwLock::new(profile),
            state: Mutex::new((ChaCha8Rng::seed_from_u64(seed), 0)),
        }
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

    #[test]
    fn bursts_last_burst_len() {
        let e = FaultEngine::new(1, FaultProfile::parse("5xx=1,burst=3").expect("valid"));
        assert!((0..10).all(|_| e.decide(false).server_error.is_some()));
    }
}
