//! Rate budgets: one per destination, sized by the contract (provider defaults: Stripe 100/s
//! live, 25/s test; HubSpot 100 or 190 per 10 s by tier, plus its daily cap), that
//!
//! - paces requests with a token bucket whose rate adapts (AIMD): a 429 without guidance
//!   halves it, every quiet second wins back 5 % of the configured rate;
//! - honours a provider's `Retry-After`: the request that was told waits it out; every caller
//!   waits it out too once 429s are not isolated (at least [`QUOTA_MIN_429`] and
//!   [`QUOTA_SHARE`] of the requests of the last [`SHARE_WINDOW`]) — an account over its
//!   quota answers many requests 429, while a stray 429 (a provider's momentary hiccup, a
//!   lock on one object) holding every caller for a second would stall all live work;
//! - listens to HubSpot's `X-HubSpot-RateLimit-*` headers on every response: the interval
//!   quota (`Max` / interval) caps the rate, and the bucket never holds more than the window's
//!   `Remaining` — so the budget slows to what is left before hitting the wall (a rolling
//!   window at full use always shows a small `Remaining`; halving there would waste half the
//!   quota), `Remaining: 0` waits one slot, `Daily-Remaining: 0` waits for the daily reset;
//! - enforces the contract's daily cap (reset at 00:00 UTC): once reached, callers wait —
//!   nothing is dropped — and the state says so;
//! - serves two priority lanes: [`Lane::Live`] (webhook/poll-driven work) before
//!   [`Lane::Bulk`] (replay, bulk resolutions, backfill, reconciliation repairs). When both
//!   wait, live goes first, but one grant in [`LIVE_SHARE`]` + 1` is reserved for bulk, so bulk
//!   always progresses.
//!
//! Pollers and backfill take budget with `engine.budget(side).acquire(Lane::…)` before each
//! request, and report a 429 with [`Budget::on_rate_limited`]; connectors hand the headers of
//! every response to [`RateObserver::observe`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use crate::connectors::headers::{RateHeaders, RateObserver};

use crate::api::BudgetStatus;
use crate::clock::Clock;
use crate::contract::RateLimit;

/// Which queue a request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Work caused by a live event (webhook or poller): goes first.
    Live,
    /// Replay, bulk review resolutions, backfill, reconciliation repairs.
    Bulk,
}

impl Lane {
    fn idx(self) -> usize {
        match self {
            Lane::Live => 0,
            Lane::Bulk => 1,
        }
    }
}

/// While both lanes wait, live gets this many grants in a row, then bulk gets one.
pub const LIVE_SHARE: u32 = 9;
/// Over this window the budget compares its 429s with its requests.
const SHARE_WINDOW: Duration = Duration::from_secs(10);
/// A `Retry-After` holds every caller once at least this many of the window's requests…
pub const QUOTA_MIN_429: u64 = 3;
/// …and at least this share of them were answered 429.
pub const QUOTA_SHARE: f64 = 0.10;
/// A 429 without guidance (no `Retry-After`): everybody waits this long, and the rate halves.
const NO_GUIDANCE_WAIT: Duration = Duration::from_millis(500);
/// Multiplicative decrease on a 429 without guidance, at most once per this long (a burst of
/// 429s from requests already in flight is one signal, not several).
const DECREASE_EVERY: Duration = Duration::from_secs(1);
/// Additive increase: the share of the configured rate won back per second without a 429.
const RECOVERY_PER_SEC: f64 = 0.05;
/// The adaptive rate never drops below this share of the configured rate.
const MIN_SHARE: f64 = 0.05;
/// Aim this far under a provider's announced interval quota: responses (and so `Remaining`)
/// trail the requests in flight, and a rolling window used at exactly its quota turns every
/// burst into 429s.
const PROVIDER_HEADROOM: f64 = 0.03;
/// A deferred waiter re-checks at least this often (it is also woken on every grant).
const DEFER_CHECK: Duration = Duration::from_millis(50);
/// Waits for the daily reset are taken in slices this long, so a changed clock or a new
/// day is noticed.
const DAILY_SLICE: Duration = Duration::from_secs(60);
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone)]
struct Block {
    until: Instant,
    reason: String,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    /// The AIMD rate, <= configured.
    rate: f64,
    /// The provider's own interval quota (HubSpot `Max` / interval), when it told us.
    provider_rate: Option<f64>,
    /// The bucket's capacity under a provider's rolling window: a burst plus the paced rate
    /// over one interval must stay within `Max`, so at most the headroom.
    provider_burst: Option<f64>,
    blocked: Option<Block>,
    waiting: [u64; 2],
    /// Consecutive live grants while bulk was waiting.
    live_streak: u32,
    /// UTC day (days since the epoch) the daily counter belongs to.
    day: i64,
    daily_used: u64,
    /// The provider's daily limit and whether it said none is left today.
    provider_daily: Option<u64>,
    provider_daily_exhausted: bool,
    recent_429: VecDeque<Instant>,
    /// Requests granted and answered 429 per second of the last [`SHARE_WINDOW`]: (second
    /// started, granted, 429s), oldest first.
    share: VecDeque<(Instant, u64, u64)>,
    last_decrease: Option<Instant>,
    granted: u64,
    rate_limited: u64,
}

/// One destination's budget. Shared by every worker (and pollers) through `Arc`.
pub struct Budget {
    destination: &'static str,
    configured: f64,
    burst: f64,
    daily_cap: Option<u64>,
    source: String,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    wake: Notify,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("destination", &self.destination)
            .field("configured", &self.configured)
            .field("burst", &self.burst)
            .field("daily_cap", &self.daily_cap)
            .finish()
    }
}

enum Try {
    Granted,
    /// Wait this long (or until woken).
    Wait(Duration),
}

/// Counts the caller as waiting in its lane until dropped (also when the caller is cancelled).
struct Waiting<'a> {
    budget: &'a Budget,
    lane: Lane,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.budget.lock();
        s.waiting[self.lane.idx()] = s.waiting[self.lane.idx()].saturating_sub(1);
        drop(s);
        self.budget.wake.notify_waiters();
    }
}

impl Budget {
    /// A budget for `destination` (`crm` / `billing`), with `clock` the wall clock (Unix ms)
    /// used for the UTC day of the daily cap and for reporting blocked-until times.
    pub fn new(destination: &'static str, limit: &RateLimit, clock: Arc<dyn Clock>) -> Budget {
        let configured = limit.requests_per_second.max(0.001);
        let burst = f64::from(limit.burst.max(1));
        let day = clock.now_ms().div_euclid(DAY_MS);
        Budget {
            destination,
            configured,
            burst,
            daily_cap: limit.daily_cap,
            source: limit.source.clone(),
            clock,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
                rate: configured,
                provider_rate: None,
                provider_burst: None,
                blocked: None,
                waiting: [0, 0],
                live_streak: 0,
                day,
                daily_used: 0,
                provider_daily: None,
                provider_daily_exhausted: false,
                recent_429: VecDeque::new(),
                share: VecDeque::new(),
                last_decrease: None,
                granted: 0,
                rate_limited: 0,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn destination(&self) -> &'static str {
        self.destination
    }

    /// Wait for one request's worth of budget in `lane`; returns how long we waited.
    pub async fn acquire(&self, lane: Lane) -> Duration {
        let start = Instant::now();
        self.lock().waiting[lane.idx()] += 1;
        let _guard = Waiting { budget: self, lane };
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.try_acquire(lane) {
                Try::Granted => {
                    self.wake.notify_waiters();
                    return start.elapsed();
                }
                Try::Wait(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = &mut woken => {}
                    }
                }
            }
        }
    }

    /// The effective rate now: the AIMD rate under the provider's interval quota.
    fn effective(&self, s: &State) -> f64 {
        s.rate
            .min(s.provider_rate.unwrap_or(f64::INFINITY))
            .max(self.configured * MIN_SHARE)
            .max(0.001)
    }

    fn capacity(&self, s: &State) -> f64 {
        self.burst.min(s.provider_burst.unwrap_or(f64::INFINITY)).max(1.0)
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let elapsed = now.duration_since(s.last).as_secs_f64();
        let quiet = s
            .recent_429
            .back()
            .is_none_or(|t| now.duration_since(*t) >= DECREASE_EVERY);
        if quiet && s.rate < self.configured {
            s.rate = (s.rate + self.configured * RECOVERY_PER_SEC * elapsed).min(self.configured);
        }
        let eff = self.effective(s);
        s.tokens = (s.tokens + elapsed * eff).min(self.capacity(s));
        s.last = now;
    }

    /// Start a new UTC day when the clock has passed midnight.
    fn roll_day(&self, s: &mut State, wall_ms: i64) {
        let day = wall_ms.div_euclid(DAY_MS);
        if day != s.day {
            s.day = day;
            s.daily_used = 0;
            s.provider_daily_exhausted = false;
        }
    }

    fn daily_exhausted(&self, s: &State) -> bool {
        s.provider_daily_exhausted || self.daily_cap.is_some_and(|cap| s.daily_used >= cap)
    }

    fn try_acquire(&self, lane: Lane) -> Try {
        let now = Instant::now();
        let wall = self.clock.now_ms();
        let mut s = self.lock();
        self.roll_day(&mut s, wall);
        if self.daily_exhausted(&s) {
            let to_midnight = (s.day + 1) * DAY_MS - wall;
            let ms = u64::try_from(to_midnight).unwrap_or(0).max(1);
            return Try::Wait(Duration::from_millis(ms).min(DAILY_SLICE));
        }
        if let Some(b) = &s.blocked {
            if b.until > now {
                return Try::Wait(b.until - now);
            }
            s.blocked = None;
        }
        self.refill(&mut s, now);
        let bulk_turn = s.waiting[Lane::Bulk.idx()] > 0 && s.live_streak >= LIVE_SHARE;
        let live_waiting = s.waiting[Lane::Live.idx()] > 0;
        let defer = match lane {
            Lane::Bulk => live_waiting && !bulk_turn,
            Lane::Live => bulk_turn,
        };
        if s.tokens < 1.0 {
            let eff = self.effective(&s);
            return Try::Wait(Duration::from_secs_f64(((1.0 - s.tokens) / eff).max(0.0005)));
        }
        if defer {
            return Try::Wait(DEFER_CHECK);
        }
        s.tokens -= 1.0;
        s.daily_used += 1;
        s.granted += 1;
        share_slot(&mut s, now).1 += 1;
        match lane {
            Lane::Live if s.waiting[Lane::Bulk.idx()] > 0 => s.live_streak += 1,
            Lane::Live => s.live_streak = 0,
            Lane::Bulk => s.live_streak = 0,
        }
        Try::Granted
    }

    fn block(&self, s: &mut State, until: Instant, reason: String) {
        if s.blocked.as_ref().is_none_or(|b| b.until < until) {
            s.blocked = Some(Block { until, reason });
        }
        s.tokens = s.tokens.min(0.0);
    }

    /// The provider asked us to back off: nobody sends to it before `after` has passed.
    pub fn block_for(&self, after: Duration, reason: &str) {
        let now = Instant::now();
        let mut s = self.lock();
        self.block(&mut s, now + after, reason.to_string());
    }

    /// A request was answered 429 and the provider asks for a retry. With `retry_after`
    /// (guidance) the request waits it out, and so does every caller once 429s are not
    /// isolated ([`QUOTA_MIN_429`], [`QUOTA_SHARE`]); without guidance, the rate halves (at
    /// most once a second) and everyone waits a moment. Returns how long the request that was
    /// answered 429 waits.
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) -> Duration {
        let now = Instant::now();
        let mut s = self.lock();
        s.rate_limited += 1;
        share_slot(&mut s, now).2 += 1;
        let (granted, limited) = s.share.iter().fold((0, 0), |(g, l), (_, sg, sl)| (g + sg, l + sl));
        s.recent_429.push_back(now);
        while s
            .recent_429
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            s.recent_429.pop_front();
        }
        let wait = match retry_after {
            Some(d) => {
                let share = limited as f64 / granted.max(limited).max(1) as f64;
                if limited >= QUOTA_MIN_429 && share >= QUOTA_SHARE {
                    let reason = format!(
                        "429: Retry-After {} ms, held for every request ({limited} of the last {granted} requests answered 429)",
                        d.as_millis()
                    );
                    self.block(&mut s, now + d, reason);
                }
                d
            }
            None => {
                if s.last_decrease.is_none_or(|t| now.duration_since(t) >= DECREASE_EVERY) {
                    s.rate = (s.rate * 0.5).max(self.configured * MIN_SHARE);
                    s.last_decrease = Some(now);
                }
                let reason = format!("429 without Retry-After: rate lowered to {:.1}/s", s.rate);
                self.block(&mut s, now + NO_GUIDANCE_WAIT, reason);
                NO_GUIDANCE_WAIT
            }
        };
        drop(s);
        self.wake.notify_waiters();
        wait
    }

    /// What the budget looks like now (for `status` and the overview).
    pub fn snapshot(&self) -> BudgetStatus {
        let now = Instant::now();
        let wall = self.clock.now_ms();
        let mut s = self.lock();
        self.roll_day(&mut s, wall);
        while s
            .recent_429
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            s.recent_429.pop_front();
        }
        let to_wall = |at: Instant| wall + at.saturating_duration_since(now).as_millis() as i64;
        let (blocked_until_ms, blocked_reason) = if self.daily_exhausted(&s) {
            let used = match self.daily_cap {
                Some(cap) => format!("{}/{cap}", s.daily_used),
                None => format!("{} used", s.daily_used),
            };
            let who = if s.provider_daily_exhausted {
                "the provider's daily limit is used up"
            } else {
                "the contract's daily cap is reached"
            };
            (
                Some((s.day + 1) * DAY_MS),
                Some(format!("{who} ({used}); requests wait for 00:00 UTC")),
            )
        } else {
            match &s.blocked {
                Some(b) if b.until > now => (Some(to_wall(b.until)), Some(b.reason.clone())),
                _ => (None, None),
            }
        };
        BudgetStatus {
            destination: self.destination.to_string(),
            source: self.source.clone(),
            configured_per_sec: self.configured,
            burst: self.capacity(&s) as i64,
            current_per_sec: self.effective(&s),
            live_waiting: s.waiting[Lane::Live.idx()] as i64,
            bulk_waiting: s.waiting[Lane::Bulk.idx()] as i64,
            blocked_until_ms,
            blocked_reason,
            daily_used: s.daily_used as i64,
            daily_cap: self.daily_cap.or(s.provider_daily).map(|c| c as i64),
            daily_exhausted: self.daily_exhausted(&s),
            rate_limited_last_minute: s.recent_429.len() as i64,
            requests: s.granted as i64,
            rate_limited: s.rate_limited as i64,
        }
    }
}

/// The current second's counters in the share window (dropping seconds that left it).
fn share_slot(s: &mut State, now: Instant) -> &mut (Instant, u64, u64) {
    while s
        .share
        .front()
        .is_some_and(|(at, _, _)| now.duration_since(*at) >= SHARE_WINDOW)
    {
        s.share.pop_front();
    }
    let fresh = s
        .share
        .back()
        .is_none_or(|(at, _, _)| now.duration_since(*at) >= Duration::from_secs(1));
    if fresh {
        s.share.push_back((now, 0, 0));
    }
    // Just pushed when empty.
    let last = s.share.len() - 1;
    &mut s.share[last]
}

impl RateObserver for Budget {
    fn observe(&self, h: &RateHeaders) {
        if h.is_empty() {
            return;
        }
        let now = Instant::now();
        let wall = self.clock.now_ms();
        let mut s = self.lock();
        self.roll_day(&mut s, wall);
        let interval = h.interval_ms.map(Duration::from_millis);
        if let (Some(max), Some(iv)) = (h.max, interval) {
            if max > 0 {
                s.provider_rate = Some(max as f64 * (1.0 - PROVIDER_HEADROOM) / iv.as_secs_f64());
                s.provider_burst = Some(max as f64 * PROVIDER_HEADROOM);
                s.tokens = s.tokens.min(self.capacity(&s));
            }
        }
        if let Some(rem) = h.remaining {
            // Never hold more than the provider says is left in its window: the bucket then
            // refills at the provider's own pace.
            s.tokens = s.tokens.min(rem as f64);
            if let (0, Some(max)) = (rem, h.max.filter(|m| *m > 0)) {
                // The window is full: the next slot frees about one slot-time from now.
                let slot = interval.unwrap_or(Duration::from_secs(10)).div_f64(max as f64);
                self.block(&mut s, now + slot, "X-HubSpot-RateLimit-Remaining is 0".into());
            }
        }
        if let Some(daily) = h.daily {
            s.provider_daily = Some(daily);
            if let Some(rem) = h.daily_remaining {
                s.daily_used = s.daily_used.max(daily.saturating_sub(rem));
            }
        }
        if h.daily_remaining == Some(0) {
            s.provider_daily_exhausted = true;
        }
        drop(s);
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
