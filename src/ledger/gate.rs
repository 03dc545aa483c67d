//! The write gate: may a destination be written right now? Pauses (per scope) and observe
//! mode (global: ingest and plan, write nothing) are control flags; [`Ledger::write_hold`] is
//! the one place that reads them for the engine's writes.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Ledger, LedgerStatus, PauseFlag, Result, PAUSE_PREFIX};

const OBSERVE_KEY: &str = "observe";

/// Why a write is held, and when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteHold {
    /// `paused` or `observing`: the work queue's `parked_reason`.
    pub reason: &'static str,
    /// Park the record this long before checking again. Turning writes on (resume, `writes
    /// on`) unparks held records at once; the recheck is a safety net.
    pub recheck_ms: i64,
}

pub const PAUSED: WriteHold = WriteHold {
    reason: "paused",
    recheck_ms: 1_000,
};
pub const OBSERVING: WriteHold = WriteHold {
    reason: "observing",
    recheck_ms: 60_000,
};
/// Migration mode freezes writes into the authoritative system (`migration finish` unparks).
pub const MIGRATION_FREEZE: WriteHold = WriteHold {
    reason: "migration_freeze",
    recheck_ms: 60_000,
};

impl Ledger {
    /// Whether writes to `destination` (`crm` or `billing`) of a record of contract object
    /// `object` are held, read on the writer connection right before the write so a flag set
    /// a moment ago by another process (the CLI) stops the very next write. A pause wins over
    /// a migration freeze (writes into the authoritative system of an active migration; an
    /// unknown `object`, e.g. a CRM batch call, is frozen by any migration of the
    /// destination), which wins over observe mode.
    pub async fn write_hold(&self, destination: &str, object: Option<&str>) -> Result<Option<WriteHold>> {
        let keys: Vec<String> =
            sqlx::query_scalar("SELECT key FROM control_flags WHERE value = 'on' AND key IN (?1, ?2, ?3)")
                .bind(format!("{PAUSE_PREFIX}global"))
                .bind(format!("{PAUSE_PREFIX}{destination}"))
                .bind(OBSERVE_KEY)
                .fetch_all(&self.writer)
                .await?;
        if keys.iter().any(|k| k.starts_with(PAUSE_PREFIX)) {
            return Ok(Some(PAUSED));
        }
        let frozen: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM migrations_mode WHERE finished_at_ms IS NULL AND authority = ?1 \
             AND (object IS NULL OR ?2 IS NULL OR object = ?2) LIMIT 1",
        )
        .bind(destination)
        .bind(object)
        .fetch_optional(&self.writer)
        .await?;
        Ok(if frozen.is_some() {
            Some(MIGRATION_FREEZE)
        } else if keys.iter().any(|k| k == OBSERVE_KEY) {
            Some(OBSERVING)
        } else {
            None
        })
    }

    /// Observe mode on: ingest and plan, write nothing. Audited.
    pub async fn set_observe(&self, reason: Option<&str>, by: &str, now_ms: i64) -> Result<()> {
        self.flag_on(
            OBSERVE_KEY,
            reason,
            by,
            now_ms,
            "writes_off",
            serde_json::json!({ "reason": reason }),
        )
        .await
    }

    /// Observe mode off: held records become claimable at once. `false`: it was not on.
    pub async fn clear_observe(&self, reason: Option<&str>, by: &str, now_ms: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM control_flags WHERE key = ?1")
            .bind(OBSERVE_KEY)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE work_queue SET not_before_ms = 0, parked_reason = NULL WHERE parked_reason = ?1")
            .bind(OBSERVING.reason)
            .execute(&mut *tx)
            .await?;
        Self::audit_operator(
            &mut tx,
            now_ms,
            None,
            None,
            by,
            "writes_on",
            serde_json::json!({ "reason": reason }),
        )
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Observe mode and the planned writes held by it or by a pause, into a status.
    pub(super) async fn gate_status(&self, st: &mut LedgerStatus) -> Result<()> {
        let row = sqlx::query("SELECT reason, set_by, set_at_ms FROM control_flags WHERE key = ?1 AND value = 'on'")
            .bind(OBSERVE_KEY)
            .fetch_optional(&self.reader)
            .await?;
        st.observe = match row {
            Some(r) => Some(PauseFlag {
                scope: "global".into(),
                reason: r.try_get(0)?,
                set_by: r.try_get(1)?,
                set_at_ms: r.try_get(2)?,
            }),
            None => None,
        };
        st.held_writes = self.held_writes().await?;
        Ok(())
    }

    /// Planned writes per destination whose record is parked by observe mode or a pause:
    /// what would go out when writes are turned on.
    pub async fn held_writes(&self) -> Result<BTreeMap<String, i64>> {
        let mut out: BTreeMap<String, i64> = ["crm", "billing"].iter().map(|d| (d.to_string(), 0)).collect();
        let rows = sqlx::query(
            // From the parked records to their open writes (CROSS JOIN keeps that order), not a
            // scan of every write.
            "SELECT o.destination, COUNT(*) FROM work_queue w CROSS JOIN outbox o ON o.entity_key = w.entity_key \
             WHERE o.state = 'pending' AND w.parked_reason IN (?1, ?2, ?3) GROUP BY o.destination",
        )
        .bind(OBSERVING.reason)
        .bind(PAUSED.reason)
        .bind(MIGRATION_FREEZE.reason)
        .fetch_all(&self.reader)
        .await?;
        for r in rows {
            out.insert(r.try_get(0)?, r.try_get(1)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_gate_for_pause_and_observe_a_pause_wins_and_a_fresh_ledger_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let other = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        for d in ["crm", "billing"] {
            assert_eq!(l.write_hold(d, None).await.unwrap(), None, "a fresh ledger writes");
        }
        other.set_observe(Some("new account"), "connect", 1).await.unwrap();
        assert_eq!(l.write_hold("billing", None).await.unwrap(), Some(OBSERVING));
        l.set_pause("crm", None, "cli", 2).await.unwrap();
        assert_eq!(l.write_hold("crm", None).await.unwrap(), Some(PAUSED));
        assert_eq!(l.write_hold("billing", None).await.unwrap(), Some(OBSERVING));
        let st = l.status().await.unwrap();
        assert_eq!(st.observe.as_ref().map(|o| o.set_by.as_str()), Some("connect"));
        assert_eq!(st.held_writes.get("billing"), Some(&0));
        assert!(other.clear_observe(None, "cli", 3).await.unwrap());
        assert!(!other.clear_observe(None, "cli", 4).await.unwrap());
        assert_eq!(l.write_hold("billing", None).await.unwrap(), None);
        assert_eq!(l.write_hold("crm", None).await.unwrap(), Some(PAUSED));
        assert!(l.status().await.unwrap().observe.is_none());
    }

    #[tokio::test]
    async fn a_migration_freezes_writes_into_its_authority_for_its_object_in_the_same_gate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let other = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        other
            .migration_start("billing", Some("customer"), "provider switch", "cli", 1)
            .await
            .unwrap();
        assert_eq!(
            l.write_hold("billing", Some("customer")).await.unwrap(),
            Some(MIGRATION_FREEZE)
        );
        assert_eq!(
            l.write_hold("billing", None).await.unwrap(),
            Some(MIGRATION_FREEZE),
            "unknown object: frozen"
        );
        assert_eq!(
            l.write_hold("billing", Some("account")).await.unwrap(),
            None,
            "another object"
        );
        assert_eq!(
            l.write_hold("crm", Some("customer")).await.unwrap(),
            None,
            "towards CRM flows"
        );
        l.set_observe(None, "cli", 2).await.unwrap();
        assert_eq!(
            l.write_hold("billing", Some("customer")).await.unwrap(),
            Some(MIGRATION_FREEZE)
        );
        assert_eq!(l.write_hold("crm", Some("customer")).await.unwrap(), Some(OBSERVING));
        l.set_pause("billing", None, "cli", 3).await.unwrap();
        assert_eq!(
            l.write_hold("billing", Some("customer")).await.unwrap(),
            Some(PAUSED),
            "a pause wins"
        );
        assert!(other.migration_finish("cli", None, 4).await.unwrap().is_some());
        assert!(other.migration_finish("cli", None, 5).await.unwrap().is_none());
        l.clear_observe(None, "cli", 6).await.unwrap();
        assert_eq!(l.write_hold("crm", Some("customer")).await.unwrap(), None);
        assert!(l.status().await.unwrap().migration.is_none());
    }
}
