//! Hostile conditions around the ledger (issue 19), each against a real `driftless serve`
//! process: a full disk and the write path after space returns, a read-only ledger, a file
//! that is not a ledger, and a second server on the same ledger. The disk tests mount a
//! small tmpfs of their own (and remove it); where mounting is not permitted they say so and
//! skip.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::ServeChild as Server;

async fn wait_for<F: std::future::Future<Output = bool>>(secs: u64, what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

async fn applied(s: &Server) -> i64 {
    let (_, v) = s.get("/api/status").await;
    v["events"]["applied"].as_i64().unwrap_or(-1)
}

async fn health_reasons(s: &Server) -> String {
    let (_, v) = s.get("/api/overview").await;
    v["health"]["reasons"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_health_logs_once_and_every_write_works_again_once_space_returns() {
    let Some(fs) = Tmpfs::mount("48m") else { return };
    let logs = tempfile::tempdir().expect("tempdir");
    let ledger = fs.path().join("ledger.db");
    let s = Server::start(&ledger, &logs.path().join("serve.log")).expect("serve starts");
    // The demo's actors edit records on both sides: wait for the sync to run.
    wait_for(60, "events applied", || async { applied(&s).await > 5 }).await;

    // Fill the disk to the last byte.
    let filler = fs.path().join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 256 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let mut byte = [0u8; 1];
    while f.write_all(&byte).is_ok() {
        byte[0] = 1;
    }
    drop(f);
    let full_at = Instant::now();
    wait_for(90, "health to name the full disk", || async {
        health_reasons(&s).await.contains("ledger unwritable (disk full)")
    })
    .await;
    let (_, o) = s.get("/api/overview").await;
    assert_eq!(o["health"]["state"], "degraded", "{}", o["health"]);
    // Console writes during the episode fail with a clear 503 (a commit SQLite refused: the
    // path that once left the writer unusable after space returned), or land where SQLite
    // still found room in its WAL; never a hang, never another answer.
    let mut refused = 0;
    for i in 0..20 {
        let (status, v) = s
            .post(
                "/api/pause_outbound",
                serde_json::json!({"scope": "crm", "reason": format!("disk full test {i}")}),
            )
            .await;
        assert!(
            status == 200 || (status == 503 && v["code"] == "ledger_error"),
            "{status} {v}"
        );
        if status == 503 {
            refused += 1;
            assert!(v["message"].as_str().unwrap_or("").contains("full"), "{v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused > 0, "no console write was refused while the disk was full");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = full_at.elapsed().as_secs_f64();

    // Space returns: every write path works again without a restart.
    std::fs::remove_file(&filler).expect("free space");
    wait_for(90, "health to clear the ledger reason", || async {
        !health_reasons(&s).await.contains("ledger unwritable")
    })
    .await;
    let (status, v) = s
        .post(
            "/api/pause_outbound",
            serde_json::json!({"scope": "billing", "reason": "after the disk was full"}),
        )
        .await;
    assert_eq!(status, 200, "pause after space returned: {v}");
    let (status, v) = s
        .post("/api/resume_outbound", serde_json::json!({"scope": "billing"}))
        .await;
    assert_eq!(status, 200, "resume after space returned: {v}");
    let (status, v) = s
        .post("/api/start_reconcile", serde_json::json!({"max_pages": 1}))
        .await;
    assert_eq!(status, 200, "start_reconcile after space returned: {v}");
    let before = applied(&s).await;
    wait_for(90, "sync to go on", || async { applied(&s).await > before }).await;

    let log = s.kill();
    let flood = log.lines().filter(|l| l.contains("claim failed")).count();
    assert_eq!(flood, 0, "per-claim failures were logged:\n{log}");
    let ledger_lines = log.lines().filter(|l| l.contains("ledger")).count();
    assert!(
        ledger_lines <= 12,
        "{ledger_lines} ledger lines in {during:.0} s of a full disk (once, then a summary a minute):\n{log}"
    );
    assert!(log.contains("the ledger cannot be written (disk full)"), "{log}");
    assert!(log.contains("the ledger is writable again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_ledger_is_refused_at_start_with_the_reason() {
    let Some(fs) = Tmpfs::mount("16m") else { return };
    let logs = tempfile::tempdir().expect("tempdir");
    let ledger = fs.path().join("ledger.db");
    let s = Server::start(&ledger, &logs.path().join("1.log")).expect("serve starts");
    s.kill();
    fs.remount("ro");
    let err = match Server::start(&ledger, &logs.path().join("2.log")) {
        Ok(s) => panic!("serve started on a read-only ledger: {}", s.kill()),
        Err(e) => e,
    };
    assert!(err.contains("cannot be written (read-only)"), "{err}");
    assert!(err.contains(&ledger.display().to_string()), "{err}");
    fs.remount("rw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_ledger_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, &bytes).expect("write");
    let err = Server::start(&garbage, &dir.path().join("g.log"))
        .err()
        .expect("refused");
    assert!(
        err.contains("is not a driftless ledger") && err.contains("not an SQLite database"),
        "{err}"
    );
    assert_eq!(std::fs::read(&garbage).expect("read"), bytes, "the file was changed");
    assert!(!dir.path().join("garbage.db-wal").exists());

    // Another program's SQLite database.
    let other = dir.path().join("notes.db");
    {
        let db = rusqlite::Connection::open(&other).expect("sqlite");
        db.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('keep me');",
        )
        .expect("notes");
    }
    let before = std::fs::read(&other).expect("read");
    let err = Server::start(&other, &dir.path().join("n.log")).err().expect("refused");
    assert!(err.contains("another program") && err.contains("notes"), "{err}");
    assert_eq!(std::fs::read(&other).expect("read"), before, "the database was changed");

    // A directory.
    let err = Server::start(dir.path(), &dir.path().join("d.log"))
        .err()
        .expect("refused");
    assert!(err.contains("is a directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_ledger_is_refused_naming_the_first_until_it_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let first = Server::start(&ledger, &dir.path().join("1.log")).expect("first serves");
    let pid = first.child.id();
    let err = Server::start(&ledger, &dir.path().join("2.log"))
        .err()
        .expect("second refused");
    assert!(err.contains("already served by another driftless"), "{err}");
    assert!(err.contains(&format!("process {pid}")), "{err}");
    assert!(err.contains(&first.base), "{err}");
    // The first goes on serving.
    assert_eq!(first.get("/api/status").await.0, 200);
    // Killed (no clean shutdown), its lock goes with it.
    first.kill();
    let again = Server::start(&ledger, &dir.path().join("3.log")).expect("serves after the first died");
    assert_eq!(again.get("/api/status").await.0, 200);
    again.kill();
}
