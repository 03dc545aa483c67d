use super::*;
use crate::contract::{BillingObject, CrmObject, FieldMapping, KeyTemplate, MatchRule};
use proptest::prelude::*;

fn mapping(owner: Owner, rule: NonOwnerRule) -> ObjectMapping {
    ObjectMapping {
        name: "customer".into(),
        crm: CrmObject::Contact,
        billing: BillingObject::Customer,
        match_on: vec![MatchRule::StoredId],
        create_in: Some(Side::Billing),
        idempotency_key: KeyTemplate {
            raw: "k".into(),
            parts: vec![],
        },
        fields: vec![FieldMapping {
            name: "f".into(),
            crm: "f_crm".into(),
            billing: "metadata.f".into(),
            owner,
            on_non_owner_edit: rule,
        }],
    }
}

fn rec(id: &str, path: &str, v: &Option<String>) -> RemoteRecord {
    let mut fields = Fields::new();
    fields.insert(path.to_string(), v.clone());
    RemoteRecord { id: id.into(), fields }
}

fn val() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("a".to_string())),
        Just(Some("b".to_string())),
        Just(Some("c".to_string()))
    ]
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![
        Just(Owner::Crm),
        Just(Owner::Billing),
        Just(Owner::Shared(ConflictRule::Review)),
        Just(Owner::Shared(ConflictRule::LatestSyncTimestamp))
    ]
}

proptest! {
    /// Random states on both sides x ownership rules: after the planned writes, the record
    /// obeys the contract — both sides agree on the winner's value, the owner's value when
    /// one side owns the field — or the record is in review with nothing written for it.
    #[test]
    fn merged_result_obeys_the_contract(
        owner in owner(),
        flag in any::<bool>(),
        c in val(), b in val(),
        sc in proptest::option::of(val()), sb in proptest::option::of(val()),
        crm_seq in proptest::option::of(1i64..100), billing_seq in proptest::option::of(1i64..100),
    ) {
        let rule = if flag { NonOwnerRule::Flag } else { NonOwnerRule::Revert };
        let m = mapping(owner, rule);
        let crm = rec("1", "f_crm", &c);
        let billing = rec("cus_1", "metadata.f", &b);
        let mut shadow = Shadow::new();
        if let Some(v) = &sc { shadow.insert((Side::Crm, "f".into()), v.clone()); }
        if let Some(v) = &sb { shadow.insert((Side::Billing, "f".into()), v.clone()); }
        let p = plan(&m, Some(&crm), Some(&billing), &shadow, Sequencing { crm_seq, billing_seq });
        // At most one write per destination, never to both.
        prop_assert!(p.writes.len() <= 1);
        if c == b {
            prop_assert!(p.writes.is_empty(), "equal values need no write");
            prop_assert!(p.review.is_none());
            return Ok(());
        }
        let (mut fc, mut fb) = (c.clone(), b.clone());
        for w in &p.writes {
            prop_assert!(!w.create);
            match w.side {
                Side::Crm => fc = w.fields.get("f_crm").cloned().flatten(),
                Side::Billing => fb = w.fields.get("metadata.f").cloned().flatten(),
            }
        }
        match p.review {
            Some(_) => prop_assert!(p.writes.is_empty(), "a field in review is not written"),
            None => {
                prop_assert_eq!(&fc, &fb, "both sides agree after the writes");
                match owner {
                    Owner::Crm => prop_assert_eq!(&fb, &c),
                    Owner::Billing => prop_assert_eq!(&fc, &b),
                    Owner::Shared(_) => {
                        // Never synced counts as changed, unless that side is empty.
                        let crm_changed = sc.as_ref().map_or(c.is_some(), |s| *s != c);
                        let billing_changed = sb.as_ref().map_or(b.is_some(), |s| *s != b);
                        if crm_changed && !billing_changed { prop_assert_eq!(&fb, &c); }
                        if billing_changed && !crm_changed { prop_assert_eq!(&fc, &b); }
                    }
                }
            }
        }
        // Every non-trivial decision names its rule.
        prop_assert!(p.decisions.iter().all(|d| !d.rule.as_str().is_empty()));
    }

    /// The ledger's sequence, never a provider clock, settles a shared conflict.
    #[test]
    fn latest_sync_timestamp_uses_the_ledger_sequence(crm_seq in 1i64..1000, billing_seq in 1i64..1000) {
        prop_assume!(crm_seq != billing_seq);
        let m = mapping(Owner::Shared(ConflictRule::LatestSyncTimestamp), NonOwnerRule::Revert);
        let crm = rec("1", "f_crm", &Some("x".into()));
        let billing = rec("cus_1", "metadata.f", &Some("y".into()));
        let mut shadow = Shadow::new();
        shadow.insert((Side::Crm, "f".into()), Some("old".into()));
        shadow.insert((Side::Billing, "f".into()), Some("old".into()));
        let p = plan(&m, Some(&crm), Some(&billing), &shadow, Sequencing { crm_seq: Some(crm_seq), billing_seq: Some(billing_seq) });
        let w = &p.writes[0];
        if crm_seq > billing_seq {
            prop_assert_eq!(w.side, Side::Billing);
        } else {
            prop_assert_eq!(w.side, Side::Crm);
        }
    }
}

#[test]
fn first_sync_of_a_shared_field_takes_the_only_value_instead_of_calling_it_a_conflict() {
    let m = mapping(Owner::Shared(ConflictRule::Review), NonOwnerRule::Revert);
    let crm = rec("1", "f_crm", &None);
    let billing = rec("cus_1", "metadata.f", &Some("basic".into()));
    let p = plan(&m, Some(&crm), Some(&billing), &Shadow::new(), Sequencing::default());
    assert!(p.review.is_none(), "{p:?}");
    assert_eq!(p.writes.len(), 1);
    assert_eq!(p.writes[0].side, Side::Crm);
    assert_eq!(p.writes[0].fields.get("f_crm"), Some(&Some("basic".into())));
    assert_eq!(p.decisions[0].rule.as_str(), "shared:one_side_changed");
    // Both sides holding different values before any sync is a real conflict.
    let crm = rec("1", "f_crm", &Some("pro".into()));
    let p = plan(&m, Some(&crm), Some(&billing), &Shadow::new(), Sequencing::default());
    assert!(p.review.is_some());
}

#[test]
fn missing_billing_counterpart_is_created_with_crm_owned_fields_only() {
    let mut m = mapping(Owner::Crm, NonOwnerRule::Revert);
    m.fields.push(FieldMapping {
        name: "billing_customer_id".into(),
        crm: "billing_customer_id".into(),
        billing: "id".into(),
        owner: Owner::Billing,
        on_non_owner_edit: NonOwnerRule::Revert,
    });
    let crm = rec("1", "f_crm", &Some("v".into()));
    let p = plan(&m, Some(&crm), None, &Shadow::new(), Sequencing::default());
    assert_eq!(p.writes.len(), 1);
    assert!(p.writes[0].create);
    assert_eq!(p.writes[0].fields.get("metadata.f"), Some(&Some("v".into())));
    assert!(!p.writes[0].fields.contains_key("id"));
}

#[test]
fn non_owner_edit_is_reverted_or_flagged_per_rule() {
    let mut shadow = Shadow::new();
    shadow.insert((Side::Crm, "f".into()), Some("a".into()));
    shadow.insert((Side::Billing, "f".into()), Some("a".into()));
    let crm = rec("1", "f_crm", &Some("a".into()));
    let billing = rec("cus_1", "metadata.f", &Some("edited".into()));
    let p = plan(
        &mapping(Owner::Crm, NonOwnerRule::Revert),
        Some(&crm),
        Some(&billing),
        &shadow,
        Sequencing::default(),
    );
    assert_eq!(p.decisions[0].rule.as_str(), "non_owner_edit:revert");
    assert_eq!(p.writes[0].fields.get("metadata.f"), Some(&Some("a".into())));
    let p = plan(
        &mapping(Owner::Crm, NonOwnerRule::Flag),
        Some(&crm),
        Some(&billing),
        &shadow,
        Sequencing::default(),
    );
    assert!(p.writes.is_empty());
    assert!(p.review.is_some());
}
