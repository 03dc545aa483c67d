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
    /// on`, `migration finish`, from any process) unparks held records at once, and a record
    /// held just before is not parked ([`Ledger::park_held`]); the recheck is a safety net.
    /// It is long so that a paused backlog rests: with a short one every held record was
    /// claimed, offered to the gate and parked again every second of a pause.
    pub recheck_ms: i64,
}

pub const PAUSED: WriteHold = WriteHold {
    reason: "paused",
    recheck_ms: 60_000,
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
    /// `object` are held, read (a fresh read transaction) right before the write so a flag set
    /// a moment ago by another process (the CLI) stops the very next write. A pause wins over
    /// a migration freeze (writes into the authoritative system of an active migration; an
    /// unknown `object`, e.g. a CRM batch call, is frozen by any migration of the
    /// destination), which wins over observe mode.
    pub async fn write_hold(&self, destination: &str, object: Option<&str>) -> Result<Option<WriteHold>> {
        let (destination, object) = (destination.to_string(), object.map(str::to_string));
        self.hot(move |db| {
            let keys = super::group::rows(
                db,
                "SELECT key FROM control_flags WHERE value = 'on' AND key IN (?1, ?2, ?3)",
                [
                    format!("{PAUSE_PREFIX}global"),
                    format!("{PAUSE_PREFIX}{destination}"),
                    OBSERVE_KEY.to_string(),
                ],
                |r| Ok(r.get::<_, String>(0)?),
            )?;
            if keys.iter().any(|k| k.starts_with(PAUSE_PREFIX)) {
                return Ok(Some(PAUSED));
            }
            let frozen = super::group::rows(
                db,
                "SELECT id FROM migrations_mode WHERE finished_at_ms IS NULL AND authority = ?1 \
                 AND (object IS NULL OR ?2 IS NULL OR object = ?2) LIMIT 1",
                rusqlite::params![destination, object],
                |r| Ok(r.get::<_, i64>(0)?),
            )?;
            Ok(if !frozen.is_empty() {
                Some(MIGRATION_FREEZE)
            } else if keys.iter().any(|k| k == OBSERVE_KEY) {
                Some(OBSERVING)
            } else {
                None
            })
        })
        .await
    }

    /// Park a record whose write the gate held, until `hold`'s recheck — unless the hold was
    /// lifted in the meantime. Lifting a hold (resume, `writes on`, `migration finish`) unparks
    /// the records parked for it, but a write held a moment before could be parked just after
    /// (a CRM batch of 100 takes a while to hand back): checked in the same statement, so such
    /// a record is claimable at once instead of waiting out its recheck.
    pub async fn park_held(&self, entity_key: &str, owner: &str, hold: WriteHold, now_ms: i64) -> Result<()> {
        let still_held = match hold.reason {
            r if r == MIGRATION_FREEZE.reason => "EXISTS (SELECT 1 FROM migrations_mode WHERE finished_at_ms IS NULL)",
            r if r == OBSERVING.reason => "EXISTS (SELECT 1 FROM control_flags WHERE key = ?5 AND value = 'on')",
            _ => "EXISTS (SELECT 1 FROM control_flags WHERE key >= ?6 AND key < ?7 AND value = 'on')",
        };
        let sql = format!(
            "UPDATE work_queue SET lease_owner = NULL, lease_until_ms = 0, \
               not_before_ms = CASE WHEN {still_held} THEN ?3 ELSE 0 END, \
               parked_reason = CASE WHEN {still_held} THEN ?4 ELSE NULL END \
             WHERE entity_key = ?1 AND lease_owner = ?2"
        );
        // Pause keys are `pause:<scope>`: the range `pause:` .. `pause;` holds exactly them.
        let pause_end = format!("{}{}", PAUSE_PREFIX.trim_end_matches(':'), ';');
        sqlx::query(&sql)
            .bind(entity_key)
            .bind(owner)
            .bind(now_ms + hold.recheck_ms)
            .bind(hold.reason)
            .bind(OBSERVE_KEY)
            .bind(PAUSE_PREFIX)
            .bind(pause_end)
            .execute(&self.writer)
            .await?;
        Ok(())
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

    #[tokio::test]
    async fn a_write_held_just_before_a_resume_is_claimable_at_once_not_after_its_recheck() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let other = Ledger::open(&dir.path().join("l.db")).await.expect("open");
        let events: Vec<super::super::NewEvent> = (0..3)
            .map(|i| super::super::NewEvent {
                source: crate::contract::Side::Crm,
                event_id: format!("e{i}"),
                via: "webhook",
                event_type: "contact.propertyChange".into(),
                object_type: "contact".into(),
                object_id: i.to_string(),
                identity_object: "customer".into(),
                entity_key: format!("customer:crm:{i}"),
                billing_id: None,
                payload: "{}".into(),
                received_at_ms: 1,
            })
            .collect();
        l.ingest(events).await.unwrap();
        other.set_pause("crm", None, "cli", 1).await.unwrap();
        other.set_observe(None, "cli", 1).await.unwrap();
        let claims = l.claim("w", 3, 10, 1_000).await.unwrap();
        assert_eq!(claims.len(), 3);
        // Still paused / observing: parked until the recheck.
        l.park_held(&claims[0].entity_key, "w", PAUSED, 10).await.unwrap();
        l.park_held(&claims[1].entity_key, "w", OBSERVING, 10).await.unwrap();
        assert!(l.claim("w", 3, 20, 1_000).await.unwrap().is_empty(), "both parked");
        assert_eq!(
            l.status().await.unwrap().held_writes["crm"],
            0,
            "no writes planned here"
        );
        // The pause and observe mode lifted by another process while the third record's
        // write was on its way to being held: it is not parked for a second.
        other.clear_pause("crm", None, "cli", 30).await.unwrap();
        other.clear_observe(None, "cli", 30).await.unwrap();
        l.park_held(&claims[2].entity_key, "w", PAUSED, 40).await.unwrap();
        let again = l.claim("w", 3, 41, 100_000).await.unwrap();
        assert_eq!(
            again.len(),
            3,
            "resume unparked the first two; the third was never parked"
        );
        // A pause of another scope still holds a paused write until its recheck.
        other.set_pause("billing", None, "cli", 50).await.unwrap();
        l.park_held(&again[0].entity_key, "w", PAUSED, 60).await.unwrap();
        assert!(l.claim("w", 3, 61, 1_000).await.unwrap().is_empty(), "parked");
        assert_eq!(l.claim("w", 3, 60 + PAUSED.recheck_ms, 1_000).await.unwrap().len(), 1);
    }
}
