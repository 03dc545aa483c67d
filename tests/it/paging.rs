//! Full listings with cursor pagination (`BillingApi::list_customers`,
//! `CrmApi::list_records`) against the simulators over HTTP: every record exactly once,
//! across page boundaries, and the mapped properties requested come back.

use std::collections::BTreeSet;

use driftless::connectors::hubspot::HubspotClient;
use driftless::connectors::stripe::StripeClient;
use driftless::connectors::{BillingApi, CrmApi};
use driftless::contract::CrmObject;
use driftless::sim::{SimConfig, Simulators};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_listings_page_through_every_record_once() {
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators start");
    let http = reqwest::Client::new();
    for i in 0..230 {
        let r = http
            .post(format!("{}/v1/customers", sims.billing.base_url()))
            .bearer_auth(sims.billing.api_key())
            .form(&[("email", format!("page{i}@example.test"))])
            .send()
            .await
            .expect("billing simulator answers");
        assert!(r.status().is_success(), "customer created: {}", r.status());
        sims.crm
            .create_contact(&[("email", &format!("page{i}@example.test")), ("firstname", "P")]);
    }

    let billing =
        StripeClient::new(&sims.billing.base_url(), sims.billing.api_key().to_string(), 5_000).expect("client");
    let mut ids = BTreeSet::new();
    let (mut after, mut pages) = (None::<String>, 0);
    loop {
        let page = billing.list_customers(after.as_deref()).await.expect("page");
        pages += 1;
        assert!(page.records.len() <= 100);
        for r in &page.records {
            assert!(ids.insert(r.id.clone()), "customer {} listed twice", r.id);
            assert!(r.get("email").is_some_and(|e| e.starts_with("page")));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!((ids.len(), pages), (230, 3));

    let crm = HubspotClient::new(&sims.crm.base_url(), sims.crm.token().to_string(), 5_000).expect("client");
    let props = vec!["email".to_string(), "firstname".to_string()];
    let mut ids = BTreeSet::new();
    let (mut after, mut pages) = (None::<String>, 0);
    loop {
        let page = crm
            .list_records(CrmObject::Contact, &props, after.as_deref())
            .await
            .expect("page");
        pages += 1;
        for r in &page.records {
            assert!(ids.insert(r.id.clone()), "contact {} listed twice", r.id);
            assert_eq!(r.get("firstname"), Some("P"));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!((ids.len(), pages), (230, 3));
    sims.shutdown().await;
}
