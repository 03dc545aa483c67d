//! The ledger's domain words as types: what an outbox operation does, and the state of an
//! inbound event. Each is stored as its name (the same strings as before these types), so
//! nothing in the file changes; an unknown name read back is corrupt data, said so.

use serde::{Serialize, Serializer};

use super::{LedgerError, Result};

/// What an outbox operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    CreateCustomer,
    UpdateCustomer,
    /// Move a customer's live subscription to another price (the plan a CRM user requested).
    ChangePlan,
    UpdateContact,
    UpdateCompany,
    /// Reads the engine gave up on: dead-lettered at once, never sent (`ChangeSet::failed_reads`).
    ReadCustomer,
    ReadContact,
    ReadCompany,
    ReadBillingSummary,
}

impl OpKind {
    pub const ALL: [OpKind; 9] = [
        OpKind::CreateCustomer,
        OpKind::UpdateCustomer,
        OpKind::ChangePlan,
        OpKind::UpdateContact,
        OpKind::UpdateCompany,
        OpKind::ReadCustomer,
        OpKind::ReadContact,
        OpKind::ReadCompany,
        OpKind::ReadBillingSummary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::CreateCustomer => "create_customer",
            OpKind::UpdateCustomer => "update_customer",
            OpKind::ChangePlan => "change_plan",
            OpKind::UpdateContact => "update_contact",
            OpKind::UpdateCompany => "update_company",
            OpKind::ReadCustomer => "read_customer",
            OpKind::ReadContact => "read_contact",
            OpKind::ReadCompany => "read_company",
            OpKind::ReadBillingSummary => "read_billing_summary",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Read back from the ledger: an unknown name is corrupt data.
    pub(crate) fn read(s: &str) -> Result<OpKind> {
        OpKind::parse(s).ok_or_else(|| LedgerError::Corrupt {
            what: "outbox.op",
            detail: s.to_string(),
        })
    }

    /// A CRM record update (coalesced into batch calls).
    pub fn is_crm_update(self) -> bool {
        matches!(self, OpKind::UpdateContact | OpKind::UpdateCompany)
    }
}

/// Serialised as the name the ledger stores (`as_str`): one spelling of each.
impl Serialize for OpKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of an inbound event (DESIGN.md invariant 4; `duplicate` is not a row state:
/// duplicates are deliveries of an event the inbox holds, kept in their own table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventState {
    Pending,
    Applied,
    Echo,
    Superseded,
    Conflicted,
    DeadLettered,
}

impl EventState {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Applied => "applied",
            EventState::Echo => "echo",
            EventState::Superseded => "superseded",
            EventState::Conflicted => "conflicted",
            EventState::DeadLettered => "dead_lettered",
        }
    }
}

impl Serialize for EventState {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for EventState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_itself_and_serialises_as_its_stored_name() {
        for k in OpKind::ALL {
            assert_eq!(OpKind::read(k.as_str()).ok(), Some(k));
            assert_eq!(serde_json::to_value(k).ok(), Some(serde_json::Value::from(k.as_str())));
        }
        assert!(OpKind::read("update_everything").is_err());
    }

    /// The inbox's CHECK constraint (the first migration) accepts exactly these states.
    #[test]
    fn event_states_are_the_ones_the_inbox_accepts() {
        let ledger_sql = include_str!("../../migrations/20261127000001_ledger.sql");
        let states = [
            EventState::Pending,
            EventState::Applied,
            EventState::Echo,
            EventState::Superseded,
            EventState::Conflicted,
            EventState::DeadLettered,
        ];
        let list = states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(ledger_sql.contains(&format!("CHECK (state IN ({list}))")), "{list}");
        for s in states {
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::Value::from(s.as_str())));
        }
    }
}
