//! Where time comes from: the system clock, or one a test or simulator drives. A leaf: it
//! knows nothing of the rest of the crate.

/// Where time comes from; tests and simulators pass their own.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}
