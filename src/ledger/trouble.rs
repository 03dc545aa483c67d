//! Whether the ledger can be written right now, and why not: the disk is full, the file or
//! its directory is read-only, the disk fails. Every write path reports here — the
//! group-commit thread's rounds and [`super::tx::WriteTx`]'s commits — so health can say
//! "degraded: ledger unwritable (disk full) since 12:03:04" and the log says it once when it
//! starts, a summary a minute while it lasts, and once when it ends, instead of a line per
//! failed claim (32 workers made ~65 lines a second).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::LedgerError;

/// Why the ledger cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    DiskFull,
    ReadOnly,
    DiskError,
}

impl Unwritable {
    /// In words, for health reasons and the log.
    pub fn label(self) -> &'static str {
        match self {
            Unwritable::DiskFull => "disk full",
            Unwritable::ReadOnly => "read-only",
            Unwritable::DiskError => "disk I/O error",
        }
    }

    /// What an operator does about it.
    pub fn remedy(self) -> &'static str {
        match self {
            Unwritable::DiskFull => "free space on the ledger's disk",
            Unwritable::ReadOnly => "make the ledger file and its directory writable",
            Unwritable::DiskError => "check the ledger's disk",
        }
    }

    /// From an SQLite result code (primary or extended).
    pub(crate) fn from_code(code: i32) -> Option<Unwritable> {
        match code & 0xff {
            13 => Some(Unwritable::DiskFull),       // SQLITE_FULL
            8 => Some(Unwritable::ReadOnly),        // SQLITE_READONLY
            10 | 14 => Some(Unwritable::DiskError), // SQLITE_IOERR, SQLITE_CANTOPEN
            _ => None,
        }
    }
}

impl LedgerError {
    /// Whether this failure means the ledger cannot be written (and which way), as opposed to a
    /// failure of one statement.
    pub fn unwritable(&self) -> Option<Unwritable> {
        match self {
            LedgerError::Sql(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .and_then(|c| c.parse::<i32>().ok())
                .and_then(Unwritable::from_code),
            LedgerError::Native(rusqlite::Error::SqliteFailure(f, _)) => Unwritable::from_code(f.extended_code),
            _ => None,
        }
    }
}

/// An episode of failed writes.
#[derive(Debug, Clone)]
pub struct Episode {
    pub why: Unwritable,
    /// When the first write of the episode failed (unix ms).
    pub since_ms: i64,
    /// Writes refused since.
    pub failures: u64,
    /// The last error, as SQLite said it.
    pub last_error: String,
}

#[derive(Debug, Default)]
struct State {
    episode: Option<Episode>,
    started: Option<Instant>,
    last_summary: Option<Instant>,
    failures_at_summary: u64,
}

/// The ledger's writability, shared by every clone of the ledger.
#[derive(Debug)]
pub struct Trouble {
    path: String,
    state: Mutex<State>,
}

/// How often a lasting episode is summarised in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

impl Trouble {
    pub fn new(path: String) -> Trouble {
        Trouble {
            path,
            state: Mutex::new(State::default()),
        }
    }

    /// The episode going on, if any.
    pub fn current(&self) -> Option<Episode> {
        self.state.lock().ok().and_then(|s| s.episode.clone())
    }

    /// A write failed: start or extend an episode when the failure means the ledger cannot be
    /// written. Returns whether it did (callers then need not log the failure themselves).
    pub fn failed(&self, e: &LedgerError) -> bool {
        let Some(why) = e.unwritable() else {
            return false;
        };
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        let now = Instant::now();
        match &mut s.episode {
            Some(ep) => {
                ep.failures += 1;
                ep.why = why;
                ep.last_error = e.to_string();
                let due = s.last_summary.is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY);
                if due {
                    let lasted = s.started.map(|t| now.duration_since(t).as_secs()).unwrap_or(0);
                    let (failures, since_last) = match &s.episode {
                        Some(ep) => (ep.failures, ep.failures - s.failures_at_summary),
                        None => (0, 0),
                    };
                    tracing::warn!(
                        ledger = %self.path,
                        reason = why.label(),
                        seconds = lasted,
                        refused = failures,
                        refused_last_minute = since_last,
                        "the ledger is still unwritable ({}): {} writes refused in {} s; {}",
                        why.label(),
                        failures,
                        lasted,
                        why.remedy()
                    );
                    s.last_summary = Some(now);
                    s.failures_at_summary = failures;
                }
            }
            None => {
                tracing::error!(
                    ledger = %self.path,
                    reason = why.label(),
                    error = %e,
                    "the ledger cannot be written ({}): webhooks are refused with 503 and sync waits until it can; \
                     nothing already accepted is lost; {}. Further failures are counted, not logged",
                    why.label(),
                    why.remedy()
                );
                s.episode = Some(Episode {
                    why,
                    since_ms: chrono::Utc::now().timestamp_millis(),
                    failures: 1,
                    last_error: e.to_string(),
                });
                s.started = Some(now);
                s.last_summary = Some(now);
                s.failures_at_summary = 1;
            }
        }
        true
    }

    /// A write committed: an episode going on is over.
    pub fn succeeded(&self) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if let Some(ep) = s.episode.take() {
            let lasted = s.started.map(|t| t.elapsed().as_secs()).unwrap_or(0);
            tracing::warn!(
                ledger = %self.path,
                "the ledger is writable again after {} s ({}; {} writes were refused)",
                lasted,
                ep.why.label(),
                ep.failures
            );
            *s = State::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> LedgerError {
        LedgerError::Native(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(13),
            Some("database or disk is full".into()),
        ))
    }

    #[test]
    fn an_episode_counts_failures_and_ends_on_success() {
        let t = Trouble::new("x.db".into());
        assert!(t.current().is_none());
        assert!(!t.failed(&LedgerError::Conflict("not a disk problem".into())));
        assert!(t.current().is_none());
        for _ in 0..5 {
            assert!(t.failed(&full()));
        }
        let ep = t.current().expect("an episode");
        assert_eq!(ep.why, Unwritable::DiskFull);
        assert_eq!(ep.failures, 5);
        t.succeeded();
        assert!(t.current().is_none());
    }

    #[test]
    fn sqlite_codes_map_to_reasons() {
        assert_eq!(Unwritable::from_code(13), Some(Unwritable::DiskFull));
        assert_eq!(Unwritable::from_code(8 | (1 << 8)), Some(Unwritable::ReadOnly));
        assert_eq!(Unwritable::from_code(10 | (3 << 8)), Some(Unwritable::DiskError));
        assert_eq!(Unwritable::from_code(19), None); // SQLITE_CONSTRAINT
    }
}
