//! The contract's rules, held over random histories: random events from both sides, random
//! records on both sides (or none), random shadows, identity links, summaries and migration
//! modes, each decided by `record` and checked against what the contract says must happen.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::connectors::ConnectorError;
use crate::connectors::Fields;
use crate::contract::default_contract;
use crate::ledger::{EventState, InboxEvent, OpKind};

const CRM_ID: &str = "101";
const BILLING_ID: &str = "cus_1";

#[test]
fn migration_authority_owns_the_covered_pair_except_its_identity_field() {
    let c = default_contract();
    let m = c.object("customer").expect("customer pair");
    let a: Authority = (Side::Billing, None);
    let owned = owners_under(m, Some(&a));
    assert!(owned.fields.iter().all(|f| f.owner == Owner::Billing));
    assert_eq!(
        m.fields.iter().find(|f| f.name == "email").map(|f| f.owner),
        Some(Owner::Crm)
    );
    let crm: Authority = (Side::Crm, None);
    let owned = owners_under(m, Some(&crm));
    assert_eq!(
        owned
            .fields
            .iter()
            .find(|f| f.name == "billing_customer_id")
            .map(|f| f.owner),
        Some(Owner::Billing),
        "the billing id stays billing's"
    );
    let other: Authority = (Side::Billing, Some("account".into()));
    assert!(matches!(owners_under(m, Some(&other)), Cow::Borrowed(_)));
    assert!(matches!(owners_under(m, None), Cow::Borrowed(_)));
}

/// One random situation a record can be in when its turn comes.
#[derive(Debug, Clone)]
struct Case {
    events: Vec<(Side, &'static str)>,
    echoes: usize,
    crm: Option<Fields>,
    billing: Option<Fields>,
    /// 0: no link; 1: linked to `BILLING_ID`; 2: linked to a customer that is gone.
    known: u8,
    /// 0: not looked up; 1: linked to this record; 2: linked to another record.
    linked_to: u8,
    /// The billing customer carries another record's origin marker.
    foreign_marker: bool,
    shadow: Vec<((Side, String), Option<String>)>,
    subscription: Option<(Option<&'static str>, &'static str)>,
    migration: u8,
    last_cause: bool,
}

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("a".to_string())),
        Just(Some("b".to_string())),
        Just(Some("".to_string())),
    ]
}

fn event() -> impl Strategy<Value = (Side, &'static str)> {
    prop_oneof![
        Just((Side::Crm, "contact.propertyChange")),
        Just((Side::Crm, "contact.creation")),
        Just((Side::Billing, "customer.updated")),
        Just((Side::Billing, "customer.created")),
        Just((Side::Billing, "customer.subscription.updated")),
        Just((Side::Billing, "invoice.paid")),
    ]
}

/// The CRM properties and billing paths the default contract maps onto a contact.
const CRM_PROPS: [&str; 6] = [
    "email",
    "lifecyclestage",
    "billing_customer_id",
    "plan",
    "subscription_status",
    "requested_plan",
];
const BILLING_PATHS: [&str; 3] = ["email", "metadata.lifecycle_stage", "name"];

fn fields(paths: &'static [&'static str]) -> impl Strategy<Value = Fields> {
    proptest::collection::vec(value(), paths.len())
        .prop_map(move |vs| paths.iter().map(|p| p.to_string()).zip(vs).collect::<BTreeMap<_, _>>())
}

fn case() -> impl Strategy<Value = Case> {
    let shadow_key = prop_oneof![
        Just((Side::Crm, "email".to_string())),
        Just((Side::Billing, "email".to_string())),
        Just((Side::Crm, "lifecycle_stage".to_string())),
        Just((Side::Billing, "lifecycle_stage".to_string())),
        Just((Side::Crm, "requested_plan".to_string())),
        Just((Side::Billing, "requested_plan".to_string())),
    ];
    let subscription = proptest::option::of((
        prop_oneof![Just(None), Just(Some("basic")), Just(Some("pro"))],
        prop_oneof![Just("active"), Just("canceled"), Just("past_due")],
    ));
    (
        proptest::collection::vec(event(), 0..5),
        0usize..3,
        proptest::option::weighted(0.9, fields(&CRM_PROPS)),
        proptest::option::weighted(0.8, fields(&BILLING_PATHS)),
        0u8..3,
        0u8..3,
        proptest::bool::weighted(0.15),
        proptest::collection::vec((shadow_key, value()), 0..6),
        subscription,
        0u8..3,
        any::<bool>(),
    )
        .prop_map(
            |(
                events,
                echoes,
                crm,
                billing,
                known,
                linked_to,
                foreign_marker,
                shadow,
                subscription,
                migration,
                last_cause,
            )| Case {
                events,
                echoes,
                crm,
                billing,
                known,
                linked_to,
                foreign_marker,
                shadow,
                subscription,
                migration,
                last_cause,
            },
        )
}

/// Everything a decision borrows, owned.
struct World {
    contract: Contract,
    real: Vec<InboxEvent>,
    echoes: Vec<(i64, String)>,
    crm: Option<RemoteRecord>,
    billing: Option<RemoteRecord>,
    known: Option<String>,
    linked_to: Option<String>,
    shadow: Shadow,
    summaries: Option<Summaries>,
    migration: Option<Authority>,
    last_cause: Option<(i64, String)>,
}

impl World {
    fn of(case: &Case) -> World {
        let mut next = 10;
        let mut id = || {
            next += 1;
            next
        };
        let echoes = (0..case.echoes)
            .map(|_| (id(), "our own write, seen again".to_string()))
            .collect();
        let real = case
            .events
            .iter()
            .map(|(source, ty)| {
                let n = id();
                InboxEvent {
                    id: n,
                    source: *source,
                    event_id: format!("ev{n}"),
                    event_type: ty.to_string(),
                    object_id: match source {
                        Side::Crm => CRM_ID.into(),
                        Side::Billing => BILLING_ID.into(),
                    },
                    payload: r#"{"propertyName":"email"}"#.into(),
                    received_at_ms: n * 1000,
                }
            })
            .collect();
        let crm = case.crm.clone().map(|fields| RemoteRecord {
            id: CRM_ID.into(),
            fields,
        });
        let billing = case.billing.clone().map(|mut fields| {
            if case.foreign_marker {
                fields.insert("metadata.driftless_crm_contact_id".into(), Some("202".into()));
            }
            RemoteRecord {
                id: BILLING_ID.into(),
                fields,
            }
        });
        let summaries = case.subscription.map(|(plan, status)| Summaries {
            subscription: Some(RemoteRecord {
                id: "sub_1".into(),
                fields: [
                    ("plan".to_string(), plan.map(str::to_string)),
                    ("status".to_string(), Some(status.to_string())),
                ]
                .into_iter()
                .collect(),
            }),
            invoices: None,
        });
        World {
            contract: default_contract(),
            real,
            echoes,
            crm,
            billing,
            known: match case.known {
                1 => Some(BILLING_ID.into()),
                2 => Some("cus_gone".into()),
                _ => None,
            },
            linked_to: match case.linked_to {
                1 => Some(CRM_ID.into()),
                2 => Some("202".into()),
                _ => None,
            },
            shadow: case.shadow.iter().cloned().collect(),
            summaries,
            migration: match case.migration {
                1 => Some((Side::Crm, None)),
                2 => Some((Side::Billing, None)),
                _ => None,
            },
            last_cause: case.last_cause.then(|| (3, "crm:ev3".to_string())),
        }
    }

    fn inputs(&self) -> RecordInputs<'_> {
        let mapping = self
            .contract
            .object("customer")
            .expect("the default contract maps customers");
        // The billing customer as this record sees it: the linked one, or (no link yet) the one
        // its CRM billing id names. A link to a customer that is gone reads nothing.
        let billing = match self.known.as_deref() {
            Some(BILLING_ID) | None => self.billing.as_ref(),
            Some(_) => None,
        };
        RecordInputs {
            contract: &self.contract,
            mapping,
            key: "customer:101",
            crm_id: Some(CRM_ID),
            real: &self.real,
            echoes: &self.echoes,
            last_cause: self.last_cause.as_ref().map(|(id, tag)| (*id, tag.as_str())),
            crm: self.crm.as_ref(),
            billing,
            known_billing_id: self.known.as_deref(),
            billing_linked_to: self.linked_to.as_deref(),
            shadow: &self.shadow,
            summaries: self.summaries.as_ref(),
            migration: self.migration.as_ref(),
        }
    }
}

fn decide(w: &World) -> Decision {
    let mut n = 0;
    record(&w.inputs(), &mut || {
        n += 1;
        format!("corr-{n}")
    })
}

/// The owner of CRM property `prop` across every mapping onto a contact (`None`: the contract
/// does not map it). Migration mode covers the customer pair; the billing objects mirrored
/// onto it (subscription, invoices) stay billing's.
fn crm_owner(w: &World, prop: &str) -> Option<Owner> {
    w.contract
        .objects
        .iter()
        .filter(|m| m.crm == crate::contract::CrmObject::Contact)
        .find_map(|m| {
            let m = match m.billing {
                crate::contract::BillingObject::Customer => owners_under(m, w.migration.as_ref()),
                _ => Cow::Borrowed(m),
            };
            m.fields.iter().find(|f| f.crm == prop).map(|f| f.owner)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Every new event is given exactly one fate — echo, superseded, applied, conflicted — or,
    /// the newest only, is left pending as the cause of the writes planned for it.
    #[test]
    fn every_event_is_fated_once_or_causes_the_writes(case in case()) {
        let w = World::of(&case);
        let d = decide(&w);
        let cs = &d.changes;
        let mut seen = std::collections::BTreeSet::new();
        for (id, _, why) in &cs.event_states {
            prop_assert!(seen.insert(*id), "event {id} fated twice");
            prop_assert!(!why.is_empty(), "event {id} fated without a reason");
        }
        for (id, _) in &w.echoes {
            prop_assert!(cs.event_states.iter().any(|(e, s, _)| e == id && *s == EventState::Echo));
        }
        let Some(newest) = w.real.last() else {
            prop_assert!(!d.has_real);
            prop_assert!(cs.event_states.len() == w.echoes.len(), "only the echoes are fated");
            return Ok(());
        };
        prop_assert!(d.has_real);
        prop_assert_eq!(d.cause_id, Some(newest.id));
        for ev in &w.real[..w.real.len() - 1] {
            prop_assert!(cs.event_states.iter().any(|(e, s, _)| *e == ev.id && *s == EventState::Superseded));
        }
        let fated = cs.event_states.iter().any(|(e, _, _)| *e == newest.id);
        if !fated {
            prop_assert!(!cs.new_ops.is_empty(), "the newest event is neither fated nor the cause of a write");
            prop_assert!(cs.review.is_none());
        }
        if !cs.new_ops.is_empty() && cs.review.is_none() {
            // It stays pending until its writes settle (`settle_causes`), never applied early.
            prop_assert!(!fated, "the newest event was fated while its writes are still to be made");
        }
        for op in &cs.new_ops {
            prop_assert_eq!(op.cause_inbox_id, Some(newest.id));
        }
    }

    /// Nothing is ever written to a field on the side that owns it (under migration mode, the
    /// authority owns the pair); a plan change is the only write to a subscription and carries
    /// only the plan; creates go to the side the contract names.
    #[test]
    fn no_write_lands_on_the_owner_side(case in case()) {
        let w = World::of(&case);
        let d = decide(&w);
        let customer = w.contract.object("customer").expect("customer");
        let customer = owners_under(customer, w.migration.as_ref());
        for op in &d.changes.new_ops {
            let keys = op.field_values.keys().filter(|k| !k.starts_with("metadata.driftless") && *k != "driftless_correlation_id");
            match op.op {
                OpKind::ChangePlan => {
                    prop_assert_eq!(op.destination, Side::Billing);
                    prop_assert_eq!(keys.map(String::as_str).collect::<Vec<_>>(), vec!["plan"]);
                    prop_assert_eq!(op.target_id.as_deref(), Some(BILLING_ID));
                }
                OpKind::CreateCustomer | OpKind::UpdateCustomer => {
                    prop_assert_eq!(op.destination, Side::Billing);
                    if op.op == OpKind::CreateCustomer {
                        prop_assert!(w.billing.is_none() || w.known.is_none());
                        prop_assert_eq!(customer.create_in, Some(Side::Billing));
                    }
                    for k in keys {
                        let f = customer.fields.iter().find(|f| f.billing == *k);
                        prop_assert!(f.is_some(), "a billing write of {} the contract does not map", k);
                        prop_assert_ne!(f.map(|f| f.owner), Some(Owner::Billing), "{} written to its owner, billing", k);
                    }
                }
                OpKind::UpdateContact => {
                    prop_assert_eq!(op.destination, Side::Crm);
                    prop_assert_eq!(op.target_id.as_deref(), Some(CRM_ID));
                    for k in keys {
                        let owner = crm_owner(&w, k);
                        prop_assert!(owner.is_some(), "a CRM write of {} the contract does not map", k);
                        prop_assert_ne!(owner, Some(Owner::Crm), "{} written to its owner, the CRM", k);
                    }
                }
                other => prop_assert!(false, "a contact's decision planned {}", other.as_str()),
            }
        }
    }

    /// Identity: a billing customer that belongs to another record (linked to it, or created
    /// for it) is never taken over; a linked customer that is gone is never silently replaced;
    /// either goes to review, conflicts the event that found it, and writes nothing.
    #[test]
    fn identity_is_never_taken_over_or_silently_replaced(case in case()) {
        let w = World::of(&case);
        let d = decide(&w);
        let cs = &d.changes;
        let i = w.inputs();
        let gone = i.known_billing_id.is_some() && i.billing.is_none();
        let taken = i.known_billing_id.is_none()
            && i.billing.is_some()
            && (w.linked_to.as_deref() == Some("202") || case.foreign_marker);
        let decided = !w.real.is_empty() || w.last_cause.is_some();
        if decided && (gone || taken) {
            prop_assert!(cs.review.is_some(), "no review for a customer that is gone or taken");
            prop_assert!(cs.new_ops.is_empty(), "wrote {:?}", cs.new_ops.iter().map(|o| o.op.as_str()).collect::<Vec<_>>());
            prop_assert!(cs.identity.is_none());
        }
        if let Some((object, crm, billing)) = &cs.identity {
            prop_assert_eq!(object.as_str(), "customer");
            prop_assert_eq!(crm.as_str(), CRM_ID);
            prop_assert_eq!(billing.as_str(), BILLING_ID);
            prop_assert!(!taken && w.known.is_none());
        }
    }

    /// A record sent to review has its event conflicted (with the reason), and a review holds
    /// no write on the fields in dispute.
    #[test]
    fn review_conflicts_the_event_that_caused_it(case in case()) {
        let w = World::of(&case);
        let d = decide(&w);
        let cs = &d.changes;
        if let (Some(review), Some(newest)) = (&cs.review, w.real.last()) {
            prop_assert!(!review.reason.is_empty());
            prop_assert!(cs.event_states.iter().any(|(e, s, _)| *e == newest.id && *s == EventState::Conflicted));
        }
        if cs.review.is_none() && !w.real.is_empty() {
            prop_assert!(!cs.event_states.iter().any(|(_, s, _)| *s == EventState::Conflicted));
        }
    }

    /// The same inputs give the same decision, to the idempotency key.
    #[test]
    fn the_decision_is_a_function_of_its_inputs(case in case()) {
        let w = World::of(&case);
        let a = decide(&w);
        let b = decide(&w);
        prop_assert_eq!(format!("{:?}", a), format!("{:?}", b));
        // And the keys do not depend on the correlation ids handed out.
        let other = record(&w.inputs(), &mut || "another".to_string());
        let keys = |d: &Decision| d.changes.new_ops.iter().map(|o| o.idempotency_key.clone()).collect::<Vec<_>>();
        prop_assert_eq!(keys(&a), keys(&other));
    }
}

/// One rule for every failed request, a write or a read: a rate limit waits uncounted until the
/// record has been failing an hour; a retryable failure is retried until `max_attempts`; one
/// not worth retrying is given up at once, with its own class.
#[test]
fn a_failed_request_waits_retries_or_is_given_up() {
    let rate_limited = ConnectorError::RateLimited {
        system: "billing",
        retry_after_ms: Some(1000),
        body: String::new(),
    };
    let server = ConnectorError::Server {
        system: "billing",
        status: 503,
        body: String::new(),
    };
    let auth = ConnectorError::Auth {
        system: "billing",
        status: 401,
        body: String::new(),
    };
    assert_eq!(after_failure(&rate_limited, 7, 3, false), AfterFailure::Wait);
    assert_eq!(
        after_failure(&rate_limited, 0, 3, true),
        AfterFailure::GiveUp {
            class: "rate_limited",
            attempts: 1
        }
    );
    assert_eq!(
        after_failure(&server, 0, 3, false),
        AfterFailure::Retry { attempts: 1, max: 3 }
    );
    assert_eq!(
        after_failure(&server, 1, 3, false),
        AfterFailure::Retry { attempts: 2, max: 3 }
    );
    assert_eq!(
        after_failure(&server, 2, 3, false),
        AfterFailure::GiveUp {
            class: "exhausted",
            attempts: 3
        }
    );
    assert_eq!(
        after_failure(&server, 0, 3, true),
        AfterFailure::GiveUp {
            class: "exhausted",
            attempts: 1
        }
    );
    assert_eq!(
        after_failure(&auth, 0, 3, false),
        AfterFailure::GiveUp {
            class: auth.class(),
            attempts: 1
        }
    );
    assert!(!failing_too_long(None, i64::MAX));
    assert!(!failing_too_long(Some(0), GIVE_UP_AFTER_MS - 1));
    assert!(failing_too_long(Some(0), GIVE_UP_AFTER_MS));
}
