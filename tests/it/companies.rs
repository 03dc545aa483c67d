//! A contract that also maps CRM companies to billing customers: a company gets its own
//! customer (origin marker `driftless_crm_company_id`), the billing id is written back to the
//! company, owned fields propagate and a non-owner edit is reverted — beside the contacts,
//! over real HTTP against the simulators.

use std::time::Duration;

use driftless::contract::{self, DEFAULT_CONTRACT};
use driftless::drill::wait_quiescent;
use driftless::sim::FaultProfile;

use crate::support::{demo_with, eventually, meta, prop, synced_contact};

const ACCOUNT: &str = r#"
[objects.account]
crm = "company"
billing = "customer"
match = ["stored_id"]
create_in = "billing"
idempotency_key = "billing:create-company:{crm_company_id}:{event_id}"

[[objects.account.fields]]
name = "company_name"
crm = "name"
billing = "name"
owner = "crm"

[[objects.account.fields]]
name = "company_domain"
crm = "domain"
billing = "metadata.domain"
owner = "crm"

[[objects.account.fields]]
name = "company_billing_id"
crm = "billing_customer_id"
billing = "id"
owner = "billing"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_mapped_by_the_contract_gets_one_customer_and_stays_in_sync() {
    let text = DEFAULT_CONTRACT.replacen(
        "[objects.subscription]",
        &format!("{ACCOUNT}\n[objects.subscription]"),
        1,
    );
    let c = contract::compile("companies", &text).expect("contract with companies is valid");
    let d = demo_with(c, FaultProfile::parse("timeout=0.2,hang_ms=1200").expect("profile")).await;
    let sims = d.running.sims.clone().expect("sims");
    let e = d.running.engine.clone();

    // Contacts still sync as before.
    let (_contact, contact_cus) = synced_contact(&d, "buyer@acme.test").await;

    let company = sims
        .crm
        .create_company(&[("name", "Acme Ltd"), ("domain", "acme.test")]);
    let synced = eventually(30, "the company's billing id written back", || {
        let sims = sims.clone();
        let company = company.clone();
        async move {
            sims.crm
                .companies()
                .into_iter()
                .find(|c| c["id"] == company.as_str())
                .and_then(|c| prop(&c, "billing_customer_id").map(str::to_string))
        }
    })
    .await;
    assert_ne!(synced, contact_cus, "the company has its own customer");
    let cus = sims
        .billing
        .customers()
        .into_iter()
        .find(|c| c["id"] == synced.as_str())
        .expect("the customer exists");
    assert_eq!(cus["name"], "Acme Ltd");
    assert_eq!(meta(&cus, "domain"), Some("acme.test"));
    assert_eq!(meta(&cus, "driftless_crm_company_id"), Some(company.as_str()));
    assert_eq!(meta(&cus, "driftless_crm_contact_id"), None);

    // The CRM owns the name: an edit there propagates; an edit in billing is reverted.
    sims.crm
        .edit_company(&company, &[("name", "Acme Group")])
        .expect("edit company");
    eventually(20, "the new name in billing", || {
        let sims = sims.clone();
        let synced = synced.clone();
        async move {
            sims.billing
                .customers()
                .into_iter()
                .find(|c| c["id"] == synced.as_str() && c["name"] == "Acme Group")
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);
    // A person edits the name in billing (through the API; a fault may eat the response,
    // the edit is committed either way).
    let _ = reqwest::Client::new()
        .post(format!("{}/v1/customers/{synced}", sims.billing.base_url()))
        .bearer_auth(sims.billing.api_key())
        .form(&[("name", "Acme (typo)")])
        .send()
        .await;
    eventually(20, "the billing edit reverted", || {
        let sims = sims.clone();
        let synced = synced.clone();
        async move {
            sims.billing
                .customers()
                .into_iter()
                .find(|c| c["id"] == synced.as_str() && c["name"] == "Acme Group")
        }
    })
    .await;
    assert!(wait_quiescent(&d.running, Duration::from_secs(30)).await);

    // One customer per CRM record, despite responses lost after the write (timeout faults).
    let customers = sims.billing.customers();
    let for_company = customers
        .iter()
        .filter(|c| meta(c, "driftless_crm_company_id") == Some(company.as_str()))
        .count();
    assert_eq!(for_company, 1);
    assert_eq!(customers.len(), 2, "one for the contact, one for the company");
    let t = e.record_timeline(&company).await.expect("timeline by company id");
    assert!(t.record.starts_with("account:crm:"), "{}", t.record);
    assert!(t
        .entries
        .iter()
        .any(|x| x.rule.as_deref() == Some("non_owner_edit:revert")));
    let st = e.status().await.expect("status");
    assert_eq!(st.ledger.events["pending"], 0);
    assert_eq!(st.ledger.dead_letter_depth, 0);
    d.running.shutdown().await;
}
