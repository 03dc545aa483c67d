//! Rate budgets: one token bucket per destination, sized by the contract, that also
//! remembers a provider's `Retry-After` so every worker waits it out, not just the one
//! that was told.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::contract::RateLimit;

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Budget {
    rate_per_sec: f64,
    burst: f64,
    state: Mutex<State>,
}

impl Budget {
    pub fn new(limit: &RateLimit) -> Budget {
        let burst = f64::from(limit.burst.max(1));
        Budget {
            rate_per_sec: limit.requests_per_second.max(0.001),
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
                blocked_until: None,
            }),
        }
    }

    /// Wait for one request's worth of budget; returns how long we waited.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                if let Some(until) = s.blocked_until {
                    if until > now {
                        until - now
                    } else {
                        s.blocked_until = None;
                        continue;
                    }
                } else {
                    let elapsed = now.duration_since(s.last).as_secs_f64();
                    s.tokens = (s.tokens + elapsed * self.rate_per_sec).min(self.burst);
                    s.last = now;
                    if s.tokens >= 1.0 {
                        s.tokens -= 1.0;
                        return start.elapsed();
                    }
                    Duration::from_secs_f64((1.0 - s.tokens) / self.rate_per_sec)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The provider asked us to back off: nobody sends to it before `after` has passed.
    pub async fn block_for(&self, after: Duration) {
        let mut s = self.state.lock().await;
        let until = Instant::now() + after;
        if s.blocked_until.map_or(true, |u| u < until) {
            s.blocked_until = Some(until);
        }
        s.tokens = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_after_burst_and_honours_block() {
        let b = Budget::new(&RateLimit {
            requests_per_second: 10.0,
            burst: 2,
            daily_cap: None,
        });
        assert_eq!(b.acquire().await, Duration::ZERO);
        assert_eq!(b.acquire().await, Duration::ZERO);
        let waited = b.acquire().await;
        assert!(waited >= Duration::from_millis(99), "{waited:?}");
        b.block_for(Duration::from_secs(2)).await;
        let waited = b.acquire().await;
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
    }
}
