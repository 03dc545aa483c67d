//! Migration mode: billing declared authoritative for the customer pair. Writes into billing
//! are frozen at the write gate (nothing reaches the billing simulator), billing's values win
//! on the CRM, each phase (a backfill) gets a validation report, and `finish` restores normal
//! ownership and lets the frozen writes out. Real HTTP against the simulators on 127.0.0.1.

use std::time::Duration;

use serde_json::Value;

use driftless::contract;
use driftless::engine::backfill::BackfillOptions;
use driftless::sim::{SimConfig, Simulators};

use crate::backfill::{audit_actions, converged, create_contacts, engine_on, quiet};
use crate::support::{eventually, meta, prop};

fn contact(sims: &Simulators, id: &str) -> Value {
    sims.crm
        .contacts()
        .into_iter()
        .find(|c| c["id"] == id)
        .expect("contact exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_authority_freezes_writes_into_billing_its_values_win_and_finish_restores_ownership() {
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators start");
    const N: usize = 20;
    let ids = create_contacts(&sims, "mig", N);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let engine = engine_on(&ledger, contract::default_contract(), &sims).await;
    engine.start();
    let run = engine
        .backfill("both", "test", BackfillOptions::default())
        .await
        .expect("initial backfill");
    assert_eq!(run.state, "done");
    eventually(60, "initial load converged", || {
        let sims = sims.clone();
        async move { converged(&sims, N).then_some(()) }
    })
    .await;
    quiet(&engine).await;

    // Bad requests are refused with a specific error.
    let e = engine.migration_start("erp", None, "x", "test").await;
    assert!(e.is_err_and(|e| e.to_string().contains("crm or billing")));
    let e = engine.migration_start("billing", Some("nope"), "x", "test").await;
    assert!(e.is_err_and(|e| e.to_string().contains("no object")));
    let e = engine.migration_start("billing", None, " ", "test").await;
    assert!(e.is_err(), "a reason is required");

    let mode = engine
        .migration_start("billing", Some("customer"), "switching billing provider", "test")
        .await
        .expect("migration starts");
    let again = engine.migration_start("crm", None, "twice", "test").await;
    assert!(again.is_err_and(|e| e.code() == "conflict"), "one mode at a time");
    let st = engine.ledger().status().await.expect("status");
    assert_eq!(st.migration.as_ref().map(|m| m.id), Some(mode.id), "visible in status");

    // Behind the engine's back: a CRM edit of a field CRM normally owns, a billing edit of
    // one, and a new contact (it needs a billing customer: a write into billing).
    let cus1 = prop(&contact(&sims, &ids[1]), "billing_customer_id")
        .expect("linked")
        .to_string();
    sims.crm
        .edit_contact(&ids[0], &[("email", "edited-in-crm@example.test")])
        .expect("crm edit");
    sims.billing
        .edit_customer(&cus1, None, &[("lifecycle_stage", "customer")])
        .expect("billing edit");
    let newcomer = sims
        .crm
        .create_contact(&[("email", "newcomer@example.test"), ("lifecyclestage", "lead")]);
    let billing_writes = crate::support::applied_writes(&sims).0;

    let phase = engine
        .migration_phase("both", "test", Duration::from_secs(60))
        .await
        .expect("phase");
    assert_eq!((phase.state.as_str(), phase.migration_id), ("done", Some(mode.id)));
    // Billing's values won on the CRM, and no write reached billing.
    assert_eq!(prop(&contact(&sims, &ids[0]), "email"), Some("mig0@example.test"));
    assert_eq!(prop(&contact(&sims, &ids[1]), "lifecyclestage"), Some("customer"));
    assert_eq!(
        crate::support::applied_writes(&sims).0,
        billing_writes,
        "writes into billing are frozen"
    );
    assert_eq!(sims.billing.customers().len(), N);
    let st = engine.ledger().status().await.expect("status");
    assert_eq!(st.held_writes.get("billing"), Some(&1), "the newcomer's create is held");
    // The phase's validation report.
    let v = phase.validation.expect("validation report");
    assert_eq!(
        (
            v.object.as_str(),
            v.crm_records,
            v.billing_records,
            v.linked,
            v.unlinked_crm,
            v.unlinked_billing
        ),
        ("customer", N as i64 + 1, N as i64, N as i64, 1, 0),
        "{v:?}"
    );
    assert_eq!((v.sampled, v.mismatched_fields), (N as i64, 0), "{v:?}");
    let status = engine.migration_status().await.expect("status").expect("active");
    assert_eq!(status.phases.len(), 1);
    // A drifted field shows up in a fresh report, owned by the authority.
    let cus2 = prop(&contact(&sims, &ids[2]), "billing_customer_id")
        .expect("linked")
        .to_string();
    sims.billing
        .edit_customer(&cus2, Some("drifted@example.test"), &[])
        .expect("billing edit");
    let drift = engine.validation_report("customer").await.expect("report");
    assert_eq!(drift.mismatched_fields, 1, "{drift:?}");
    assert_eq!(
        (drift.mismatches[0].field.as_str(), drift.mismatches[0].owner.as_str()),
        ("email", "billing")
    );

    // Finish: normal ownership, the frozen create goes out.
    let done = engine.migration_finish("test", Some("cut over")).await.expect("finish");
    assert_eq!(done.id, mode.id);
    assert!(engine.migration_finish("test", None).await.is_err(), "nothing active");
    assert!(engine.ledger().status().await.expect("status").migration.is_none());
    eventually(60, "the held create written once the freeze is lifted", || {
        let sims = sims.clone();
        let newcomer = newcomer.clone();
        async move {
            let customers = sims.billing.customers();
            let mine = customers
                .iter()
                .filter(|b| meta(b, "driftless_crm_contact_id") == Some(newcomer.as_str()))
                .count();
            (mine == 1).then_some(())
        }
    })
    .await;
    // CRM owns email again: a CRM edit flows to billing, and billing's drifted email is
    // reverted to CRM's.
    sims.crm
        .edit_contact(&ids[3], &[("email", "after-finish@example.test")])
        .expect("crm edit");
    engine
        .backfill("both", "test", BackfillOptions::default())
        .await
        .expect("catch-up");
    eventually(60, "CRM's email reaches billing again", || {
        let sims = sims.clone();
        async move { converged(&sims, N + 1).then_some(()) }
    })
    .await;
    quiet(&engine).await;
    let cus3 = prop(&contact(&sims, &ids[3]), "billing_customer_id")
        .expect("linked")
        .to_string();
    let c3 = sims
        .billing
        .customers()
        .into_iter()
        .find(|c| c["id"] == cus3.as_str())
        .expect("customer");
    assert_eq!(c3["email"].as_str(), Some("after-finish@example.test"));
    let c2 = sims
        .billing
        .customers()
        .into_iter()
        .find(|c| c["id"] == cus2.as_str())
        .expect("customer");
    assert_eq!(
        c2["email"].as_str(),
        Some("mig2@example.test"),
        "drift reverted to CRM's value"
    );
    engine.shutdown().await;
    assert_eq!(
        audit_actions(&ledger, "migration_").await,
        vec!["migration_start", "migration_finish"],
        "audited"
    );
    sims.shutdown().await;
}
