//! One serving engine per ledger: an exclusive lock on `<ledger>.lock`, held for the life of
//! `driftless serve` (or the desktop app). The operating system drops it when the process
//! ends, however it ends (`kill -9` included), so a crashed engine never leaves a stale lock.
//!
//! Two engines on one ledger would split its queue, each with its own in-memory rate budget
//! (together up to twice the contract's rate) and its own scheduled reconciliation. The lock
//! file holds who has it (process id, host, start time, console address), so the second is
//! refused with a message naming the first. CLI commands (`status`, `pause`, operator
//! commands) take no lock: they are meant to run beside the server.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{LedgerError, Result, Unwritable};

/// Who holds a ledger, as written into its lock file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_at: String,
    /// Where its console answers (e.g. `http://127.0.0.1:8417`).
    pub console: String,
}

impl Holder {
    /// This process, serving its console at `console`.
    pub fn this_process(console: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            started_at: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            console: console.to_string(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process {} on {}, serving since {}, console {}",
            self.pid, self.host, self.started_at, self.console
        )
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "this machine".into())
}

/// The lock file of the ledger at `ledger`.
pub fn lock_path(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct LedgerLock {
    file: File,
    path: PathBuf,
}

impl LedgerLock {
    /// Take the ledger's lock for `holder`, or say who has it.
    pub fn acquire(ledger: &Path, holder: &Holder) -> Result<LedgerLock> {
        let path = lock_path(ledger);
        let label = ledger.display().to_string();
        let io = |e: std::io::Error| match unwritable_io(&e) {
            Some(why) => LedgerError::OpenUnwritable {
                path: label.clone(),
                why,
                detail: format!("cannot create its lock file {}: {e}", path.display()),
            },
            None => LedgerError::Io {
                path: path.display().to_string(),
                source: e,
            },
        };
        // Never truncated before the lock is ours: the holder's details stay readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let by = serde_json::from_str::<Holder>(&text)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|_| "another process (its lock file names no holder)".into());
                return Err(LedgerError::InUse {
                    path: label,
                    holder: by,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let json = serde_json::to_string(holder).unwrap_or_default();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(json.as_bytes()))
            .and_then(|_| file.write_all(b"\n"))
            .map_err(io)?;
        Ok(LedgerLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LedgerLock {
    fn drop(&mut self) {
        // The holder's details go with the lock; the file stays (removing it could race a
        // process opening it to lock).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Whether an I/O error means the ledger's place cannot be written.
pub(crate) fn unwritable_io(e: &std::io::Error) -> Option<Unwritable> {
    match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => Some(Unwritable::ReadOnly),
        std::io::ErrorKind::StorageFull => Some(Unwritable::DiskFull),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named_and_may_take_it_once_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = dir.path().join("l.db");
        let first = Holder::this_process("http://127.0.0.1:1");
        let lock = LedgerLock::acquire(&ledger, &first).expect("first lock");
        let err = LedgerLock::acquire(&ledger, &Holder::this_process("http://127.0.0.1:2")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("http://127.0.0.1:1"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains(&ledger.display().to_string()), "{msg}");
        drop(lock);
        LedgerLock::acquire(&ledger, &Holder::this_process("http://127.0.0.1:2")).expect("free again");
    }
}
