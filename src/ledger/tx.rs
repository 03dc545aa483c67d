//! The writer's transactions outside the group-commit thread (console and CLI operations,
//! runs, watermarks): `BEGIN IMMEDIATE … COMMIT` issued as plain statements on a connection
//! checked out of the writer pool, with a rollback on every way out that is not a commit.
//!
//! Why not `sqlx::Transaction`: sqlx counts a connection's transaction depth itself and only
//! lowers the count when its `COMMIT` or `ROLLBACK` statement succeeds. When the disk is full,
//! SQLite's failed `COMMIT` rolls the transaction back on its own, sqlx's `ROLLBACK` then fails
//! ("no transaction is active"), and the count stays at one on the pool's only writer: every
//! later `begin` failed with "attempted to call begin_with at non-zero transaction depth" until
//! a restart — the pause button dead after the disk had room again. Here nothing is counted:
//! after any failure the connection is rolled back if SQLite still holds a transaction open
//! (`sqlite3_get_autocommit`), and only then goes back to the pool.

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection};

use super::trouble::Trouble;
use super::Result;

/// A write transaction on the writer's connection. Derefs to the connection, so statements
/// run on `&mut *tx`. Dropped without [`WriteTx::commit`], it is rolled back before the
/// connection returns to the pool.
pub(crate) struct WriteTx {
    conn: Option<PoolConnection<Sqlite>>,
    trouble: std::sync::Arc<Trouble>,
}

impl WriteTx {
    pub(super) async fn begin(mut conn: PoolConnection<Sqlite>, trouble: std::sync::Arc<Trouble>) -> Result<WriteTx> {
        // A connection someone left inside a transaction (it cannot happen through this type,
        // but a rollback that failed for a reason of its own would) is cleaned first.
        clean(&mut conn).await;
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            let e = super::LedgerError::from(e);
            trouble.failed(&e);
            return Err(e);
        }
        Ok(WriteTx {
            conn: Some(conn),
            trouble,
        })
    }

    /// Commit. On failure the transaction is rolled back (if SQLite did not already) and the
    /// connection goes back clean.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => {
                self.trouble.succeeded();
                Ok(())
            }
            Err(e) => {
                let e = super::LedgerError::from(e);
                self.trouble.failed(&e);
                clean(&mut conn).await;
                Err(e)
            }
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        // `conn` is only taken by `commit` (which consumes self) and `drop`.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a WriteTx is used after its commit"),
        }
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("a WriteTx is used after its commit"),
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Dropped without a commit (an error left the function early, or the caller was
        // cancelled): roll back before the connection is anyone else's. The connection moves
        // into the task, so the pool hands it out again only after the rollback ran.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    clean(&mut conn).await;
                    drop(conn);
                });
            }
            Err(_) => {
                // No runtime (the process is ending): the connection is not reused.
                conn.close_on_drop();
            }
        }
    }
}

/// Roll back whatever transaction SQLite still holds open on `conn` (none: nothing to do).
async fn clean(conn: &mut PoolConnection<Sqlite>) {
    if in_transaction(conn).await {
        if let Err(e) = sqlx::query("ROLLBACK").execute(&mut **conn).await {
            tracing::error!(error = %e, "the ledger could not roll back a failed transaction");
        }
    }
}

/// Whether SQLite has a transaction open on `conn` (`sqlite3_get_autocommit` is 0).
async fn in_transaction(conn: &mut PoolConnection<Sqlite>) -> bool {
    match conn.lock_handle().await {
        Ok(mut h) => {
            let raw = h.as_raw_handle().as_ptr();
            // SAFETY: the handle is locked away from sqlx's worker for this call, and
            // `sqlite3_get_autocommit` only reads the connection's flag.
            unsafe { rusqlite::ffi::sqlite3_get_autocommit(raw) == 0 }
        }
        // The connection is gone; the pool will open a new one.
        Err(_) => false,
    }
}
