//! Webhook delivery queue: signs and POSTs events, injects duplicate / reorder / storm
//! faults, and retries failed deliveries with capped backoff until delivered or shutdown.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::faults::FaultEngine;

const MAX_HUBSPOT_BATCH: usize = 100;
const RECENT_CAP: usize = 64;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One deliverable unit, signed at send time.
#[derive(Clone, Debug)]
pub enum Payload {
    /// One Stripe event to one endpoint, signed with the endpoint's `whsec_` secret.
    Stripe { secret: String, event: Value },
    /// HubSpot events for one target, sent as a JSON array, signed with the app secret.
    HubSpot { secret: String, events: Vec<Value> },
}

#[derive(Clone, Debug)]
struct Item {
    url: String,
    payload: Payload,
    attempt: u32,
}

#[derive(Default)]
struct State {
    items: BTreeMap<(Instant, u64), Item>,
    recent: VecDeque<(String, Payload)>,
    seq: u64,
}

pub struct WebhookQueue {
    state: Mutex<State>,
    notify: Notify,
    rng: Mutex<ChaCha8Rng>,
    faults: Arc<FaultEngine>,
    client: reqwest::Client,
    suppressed: AtomicBool,
    in_flight: AtomicUsize,
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Backoff before retry number `attempt` (1-based): 100 ms doubling, capped at 2 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.saturating_sub(1).min(8)).min(2000))
}

impl WebhookQueue {
    pub fn new(seed: u64, faults: Arc<FaultEngine>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .build()
            .unwrap_or_default();
        WebhookQueue {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            faults,
            client,
            suppressed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn suppress(&self, on: bool) {
        self.suppressed.store(on, Ordering::Relaxed);
    }

    /// Deliveries queued, waiting for a retry, or on the wire.
    pub fn pending(&self) -> usize {
        self.lock().items.len() + self.in_flight.load(Ordering::Relaxed)
    }

    fn push(&self, st: &mut State, due: Instant, item: Item) {
        st.seq += 1;
        let seq = st.seq;
        st.items.insert((due, seq), item);
    }

    /// Queue a new event for delivery, applying the duplicate and reorder faults.
    pub fn enqueue(&self, url: &str, payload: Payload) {
        if self.suppressed.load(Ordering::Relaxed) {
            return;
        }
        let p = self.faults.profile();
        let (reorder, dup, d1, d2) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let max = p.webhook_delay_ms.max(50);
            (
                rng.gen::<f64>() < p.reorder_webhook,
                rng.gen::<f64>() < p.duplicate_webhook,
                rng.gen_range(1..=max),
                rng.gen_range(1..=max),
            )
        };
        let now = Instant::now();
        let due = if reorder { now + Duration::from_millis(d1) } else { now };
        let item = Item {
            url: url.to_string(),
            payload,
            attempt: 0,
        };
        let mut st = self.lock();
        if dup {
            self.push(&mut st, due + Duration::from_millis(d2), item.clone());
        }
        st.recent.push_back((item.url.clone(), item.payload.clone()));
        if st.recent.len() > RECENT_CAP {
            st.recent.pop_front();
        }
        self.push(&mut st, due, item);
        drop(st);
        self.notify.notify_one();
    }

    /// A webhook storm: re-deliver up to `n` recent events, staggered over a few ms.
    pub fn storm(&self, n: usize) {
        if self.suppressed.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        let recent: Vec<_> = st.recent.iter().rev().take(n).cloned().collect();
        for (i, (url, payload)) in recent.into_iter().enumerate() {
            let due = now + Duration::from_millis(i as u64 * 5);
            self.push(
                &mut st,
                due,
                Item {
                    url,
                    payload,
                    attempt: 0,
                },
            );
        }
        drop(st);
        self.notify.notify_one();
    }

    /// Take the next due delivery (merging due HubSpot items for the same target into one
    /// batch), or say how long to wait.
    fn take_due(&self) -> Result<Item, Option<Duration>> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some((&key, _)) = st.items.iter().next() else {
            return Err(None);
        };
        if key.0 > now {
            return Err(Some(key.0 - now));
        }
        let Some(mut first) = st.items.remove(&key) else {
            return Err(None);
        };
        if let Payload::HubSpot { events, .. } = &mut first.payload {
            let mergeable: Vec<_> = st
                .items
                .iter()
                .take_while(|(k, _)| k.0 <= now)
                .filter(|(_, it)| it.url == first.url && matches!(it.payload, Payload::HubSpot { .. }))
                .map(|(k, _)| *k)
                .collect();
            for k in mergeable {
                let fits = matches!(&st.items[&k].payload, Payload::HubSpot { events: e, .. } if events.len() + e.len() <= MAX_HUBSPOT_BATCH);
                if !fits {
                    break;
                }
                if let Some(Item {
                    payload: Payload::HubSpot { events: more, .. },
                    attempt,
                    ..
                }) = st.items.remove(&k)
                {
                    events.extend(more);
                    first.attempt = first.attempt.max(attempt);
                }
            }
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(first)
    }

    async fn send(&self, item: &Item) -> bool {
        let req = match &item.payload {
            Payload::Stripe { secret, event } => {
                let body = event.to_string();
                let t = chrono::Utc::now().timestamp();
                let sig = hex::encode(hmac_sha256(secret.as_bytes(), format!("{t}.{body}").as_bytes()));
                self.client
                    .post(&item.url)
                    .header("Content-Type", "application/json; charset=utf-8")
                    .header("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                    .header("Stripe-Signature", format!("t={t},v1={sig}"))
                    .body(body)
            }
            Payload::HubSpot { secret, events } => {
                let events: Vec<Value> = events
                    .iter()
                    .map(|e| {
                        let mut e = e.clone();
                        e["attemptNumber"] = item.attempt.into();
                        e
                    })
                    .collect();
                let body = Value::from(events).to_string();
                let ts = chrono::Utc::now().timestamp_millis().to_string();
                let msg = format!("POST{}{}{}", item.url, body, ts);
                let sig =
                    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret.as_bytes(), msg.as_bytes()));
                self.client
                    .post(&item.url)
                    .header("Content-Type", "application/json")
                    .header("User-Agent", "HubSpot Connect 2.0 (http://dev.hubspot.com/)")
                    .header("X-HubSpot-Signature-v3", sig)
                    .header("X-HubSpot-Signature-Version", "v3")
                    .header("X-HubSpot-Request-Timestamp", ts)
                    .body(body)
            }
        };
        match req.send().await {
            Ok(r) => r.status().is_success(),
            Err(e) => {
                tracing::debug!(url = %item.url, error = %e, "webhook delivery failed");
                false
            }
        }
    }

    /// The delivery loop; runs until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match self.take_due() {
                Ok(mut item) => {
                    let ok = tokio::select! {
                        ok = self.send(&item) => ok,
                        _ = shutdown.changed() => false,
                    };
                    if !ok {
                        item.attempt += 1;
                        let due = Instant::now() + backoff(item.attempt);
                        let mut st = self.lock();
                        self.push(&mut st, due, item);
                    }
                    self.in_flight.fetch_sub(1, Ordering::Relaxed);
                }
                Err(wait) => {
                    let wait = wait.unwrap_or(Duration::from_secs(3600));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.notify.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(6), Duration::from_secs(2));
        assert_eq!(backoff(1000), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn duplicates_and_merging() {
        let faults = Arc::new(FaultEngine::new(
            1,
            super::super::FaultProfile::parse("dup=1").expect("ok"),
        ));
        let q = WebhookQueue::new(1, faults);
        for i in 0..3 {
            let ev = serde_json::json!({ "eventId": i });
            q.enqueue(
                "http://127.0.0.1:9/x",
                Payload::HubSpot {
                    secret: "s".into(),
                    events: vec![ev],
                },
            );
        }
        assert_eq!(q.pending(), 6);
        let first = q.take_due().expect("due now");
        match first.payload {
            Payload::HubSpot { events, .. } => assert_eq!(events.len(), 3),
            Payload::Stripe { .. } => panic!("wrong kind"),
        }
        q.storm(2);
        assert_eq!(q.pending(), 3 + 1 + 2);
    }
}
