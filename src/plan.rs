//! The planner: a pure function from (current CRM record, current billing record, shadow,
//! contract) to the writes that make them agree, with the rule behind every decision.
//! No I/O here, so property tests can drive it with arbitrary histories.

use std::collections::BTreeMap;

use crate::connectors::{Fields, RemoteRecord};
use crate::contract::{ConflictRule, NonOwnerRule, ObjectMapping, Owner, Side};

/// Last synced value of one field on one side; `None` in the map means never synced.
pub type Shadow = BTreeMap<(Side, String), Option<String>>;

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWrite {
    /// The contract object whose fields this write carries.
    pub object: String,
    pub side: Side,
    /// Create the record on `side` (only billing customers in this version).
    pub create: bool,
    /// Destination paths -> values.
    pub fields: Fields,
    /// Contract field -> value both sides hold once this write succeeds.
    pub settles: Vec<(String, Option<String>)>,
}

/// The rule a decision was made under. Recorded in the audit log by its stable name
/// (`owner:crm`, `non_owner_edit:revert`, `shared:review`, …): scripts and the console read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The owner's value is written to the other side.
    Owner(Side),
    /// The non-owner edited an owned field: the owner's value is written back.
    NonOwnerRevert,
    /// The non-owner edited an owned field: kept, and the record goes to review.
    NonOwnerFlag,
    /// A shared field changed on one side only: that side wins.
    SharedOneSideChanged,
    /// A shared field changed on both sides: the ledger's later event wins.
    SharedLatestSyncTimestamp,
    /// A shared field changed on both sides: a person decides.
    SharedReview,
    /// The CRM record is gone.
    MissingCrm,
    /// The billing counterpart is missing and the contract does not create it.
    MissingBilling,
    /// The billing counterpart is missing: created in billing.
    CreateInBilling,
    /// A write to a billing object billing does not accept: a person decides.
    UnsupportedWrite,
    /// The CRM's billing id names a customer that belongs to another record.
    BillingIdTaken,
    /// The billing customer the identity map links is gone.
    BillingMissing,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Owner(Side::Crm) => "owner:crm",
            Rule::Owner(Side::Billing) => "owner:billing",
            Rule::NonOwnerRevert => "non_owner_edit:revert",
            Rule::NonOwnerFlag => "non_owner_edit:flag",
            Rule::SharedOneSideChanged => "shared:one_side_changed",
            Rule::SharedLatestSyncTimestamp => "shared:latest_sync_timestamp",
            Rule::SharedReview => "shared:review",
            Rule::MissingCrm => "missing:crm",
            Rule::MissingBilling => "missing:billing",
            Rule::CreateInBilling => "create_in:billing",
            Rule::UnsupportedWrite => "unsupported_write",
            Rule::BillingIdTaken => "billing_id_taken",
            Rule::BillingMissing => "billing_missing",
        }
    }

    /// Whether a decision under this rule leaves the field to a person (its review item lists
    /// the field).
    pub fn for_review(self) -> bool {
        matches!(
            self,
            Rule::NonOwnerFlag | Rule::SharedReview | Rule::UnsupportedWrite | Rule::BillingIdTaken
        )
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    pub field: String,
    pub rule: Rule,
    pub crm: Option<String>,
    pub billing: Option<String>,
    pub last_synced: Option<String>,
    pub outcome: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
    /// Fields already equal on both sides: record them as synced now.
    pub in_sync: Vec<(String, Option<String>)>,
    pub decisions: Vec<Decision>,
    /// Why the record needs a person, if it does.
    pub review: Option<String>,
}

/// What the planner knows beyond the two records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequencing {
    /// Ledger sequence (inbox id) of the newest event from each side in this decision.
    pub crm_seq: Option<i64>,
    pub billing_seq: Option<i64>,
}

fn path_of(side: Side, f: &crate::contract::FieldMapping) -> &str {
    match side {
        Side::Crm => &f.crm,
        Side::Billing => &f.billing,
    }
}

fn writable(side: Side, path: &str) -> bool {
    !(side == Side::Billing && path == "id")
}

/// Decide what to write so both records obey the contract.
pub fn plan(
    object: &ObjectMapping,
    crm: Option<&RemoteRecord>,
    billing: Option<&RemoteRecord>,
    shadow: &Shadow,
    seq: Sequencing,
) -> Plan {
    let mut out = Plan::default();
    let Some(crm) = crm else {
        out.decisions.push(Decision {
            field: "*".into(),
            rule: Rule::MissingCrm,
            crm: None,
            billing: billing.map(|b| b.id.clone()),
            last_synced: None,
            outcome: "no CRM record to sync from; nothing written".into(),
        });
        return out;
    };
    let Some(billing) = billing else {
        if object.create_in == Some(Side::Billing) {
            let mut fields = Fields::new();
            let mut settles = Vec::new();
            for f in &object.fields {
                if !writable(Side::Billing, &f.billing) || f.owner == Owner::Billing {
                    continue;
                }
                let v = crm.get(&f.crm).map(str::to_string);
                if v.is_some() {
                    fields.insert(f.billing.clone(), v.clone());
                }
                settles.push((f.name.clone(), v));
            }
            out.decisions.push(Decision {
                field: "*".into(),
                rule: Rule::CreateInBilling,
                crm: Some(crm.id.clone()),
                billing: None,
                last_synced: None,
                outcome: "create the billing counterpart".into(),
            });
            out.writes.push(PlannedWrite {
                object: object.name.clone(),
                side: Side::Billing,
                create: true,
                fields,
                settles,
            });
        } else {
            out.decisions.push(Decision {
                field: "*".into(),
                rule: Rule::MissingBilling,
                crm: Some(crm.id.clone()),
                billing: None,
                last_synced: None,
                outcome: "no billing counterpart and the contract creates none".into(),
            });
        }
        return out;
    };

    let mut per_side: BTreeMap<Side, PlannedWrite> = BTreeMap::new();
    let mut reviews: Vec<String> = Vec::new();
    for f in &object.fields {
        let c = crm.get(&f.crm).map(str::to_string);
        let b = billing.get(&f.billing).map(str::to_string);
        if c == b {
            out.in_sync.push((f.name.clone(), c));
            continue;
        }
        let sc = shadow.get(&(Side::Crm, f.name.clone()));
        let sb = shadow.get(&(Side::Billing, f.name.clone()));
        // Never synced counts as changed, except that an empty side of a never-synced shared
        // field has nothing to defend: the first value on either side is a one-sided change.
        let first_empty = |synced: Option<&Option<String>>, v: &Option<String>| {
            synced.is_none() && v.is_none() && matches!(f.owner, Owner::Shared(_))
        };
        let crm_changed = sc.map_or(!first_empty(sc, &c), |s| *s != c);
        let billing_changed = sb.map_or(!first_empty(sb, &b), |s| *s != b);
        let last_synced = sc.or(sb).cloned().flatten();
        let decision = |rule: Rule, outcome: String| Decision {
            field: f.name.clone(),
            rule,
            crm: c.clone(),
            billing: b.clone(),
            last_synced: last_synced.clone(),
            outcome,
        };
        // Who wins, and under which rule.
        let (winner, rule) = match f.owner {
            Owner::Crm | Owner::Billing => {
                let owner = f.owner.side().unwrap_or(Side::Crm);
                let non_owner_changed = match owner {
                    Side::Crm => billing_changed && !crm_changed,
                    Side::Billing => crm_changed && !billing_changed,
                };
                if non_owner_changed && f.on_non_owner_edit == NonOwnerRule::Flag {
                    let d = decision(
                        Rule::NonOwnerFlag,
                        format!(
                            "{} edited a field {} owns; left in place for review",
                            owner.other().as_str(),
                            owner.as_str()
                        ),
                    );
                    reviews.push(format!("{}: non-owner edit on {}", f.name, owner.other().as_str()));
                    out.decisions.push(d);
                    continue;
                }
                let rule = if non_owner_changed {
                    Rule::NonOwnerRevert
                } else {
                    Rule::Owner(owner)
                };
                (owner, rule)
            }
            Owner::Shared(rule) => {
                let side = match (crm_changed, billing_changed) {
                    (true, false) => Some((Side::Crm, Rule::SharedOneSideChanged)),
                    (false, true) => Some((Side::Billing, Rule::SharedOneSideChanged)),
                    _ => match rule {
                        ConflictRule::Review => None,
                        ConflictRule::LatestSyncTimestamp => match (seq.crm_seq, seq.billing_seq) {
                            (Some(cs), Some(bs)) if cs > bs => Some((Side::Crm, Rule::SharedLatestSyncTimestamp)),
                            (Some(cs), Some(bs)) if bs > cs => Some((Side::Billing, Rule::SharedLatestSyncTimestamp)),
                            (Some(_), None) => Some((Side::Crm, Rule::SharedLatestSyncTimestamp)),
                            (None, Some(_)) => Some((Side::Billing, Rule::SharedLatestSyncTimestamp)),
                            _ => None,
                        },
                    },
                };
                match side {
                    Some((s, r)) => (s, r),
                    None => {
                        out.decisions.push(decision(
                            Rule::SharedReview,
                            "both sides changed since the last sync; sent to review".into(),
                        ));
                        reviews.push(format!("{}: changed on both sides", f.name));
                        continue;
                    }
                }
            }
        };
        let target = winner.other();
        let target_path = path_of(target, f);
        if !writable(target, target_path) {
            out.decisions.push(decision(
                rule,
                format!(
                    "{} cannot be written on {}; sent to review",
                    target_path,
                    target.as_str()
                ),
            ));
            reviews.push(format!(
                "{}: {} is read-only on {}",
                f.name,
                target_path,
                target.as_str()
            ));
            continue;
        }
        let value = if winner == Side::Crm { c.clone() } else { b.clone() };
        out.decisions.push(decision(
            rule,
            format!("write {} := {:?} on {}", target_path, value, target.as_str()),
        ));
        let w = per_side.entry(target).or_insert_with(|| PlannedWrite {
            object: object.name.clone(),
            side: target,
            create: false,
            fields: Fields::new(),
            settles: Vec::new(),
        });
        w.fields.insert(target_path.to_string(), value.clone());
        w.settles.push((f.name.clone(), value));
    }
    out.writes.extend(per_side.into_values());
    if !reviews.is_empty() {
        out.review = Some(reviews.join("; "));
    }
    out
}

#[cfg(test)]
mod tests;
