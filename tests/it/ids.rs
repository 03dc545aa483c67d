//! Record ids reach the providers' URLs only in their own form (issue 19, item 3): a
//! `billing_customer_id` typed as `x/../../v1/charges` in the CRM must not become an
//! authenticated `GET /v1/v1/charges`. Over real HTTP against the simulators, judged from
//! their request logs.

use std::time::Duration;

use driftless::connectors::stripe::StripeClient;
use driftless::connectors::{BillingApi, ConnectorError, Fields};
use driftless::sim::{FaultProfile, SimConfig, Simulators};

use crate::support::{demo, eventually};

const TRAVERSAL: &str = "x/../../v1/charges";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_billing_connector_sends_nothing_for_a_malformed_id_and_still_reads_a_real_one() {
    let sims = Simulators::start(SimConfig::default()).await.expect("simulators start");
    let c = StripeClient::new(&sims.billing.base_url(), sims.billing.api_key().to_string(), 2_000).expect("client");
    let fields: Fields = [("email".to_string(), Some("ada@example.test".to_string()))].into();
    let created = c.create_customer("create-ada", &fields).await.expect("create");
    let before = sims.billing.request_log().len();

    for id in [TRAVERSAL, "cus_1/../../v1/charges", "..", "", "cus_a?limit=1"] {
        let e = c.get_customer(id).await.expect_err("refused");
        assert!(matches!(&e, ConnectorError::InvalidId { .. }), "{e:?}");
        assert_eq!((e.class(), e.retryable(), e.status()), ("validation", false, None));
        let e = c.update_customer(id, "k", &fields).await.expect_err("refused");
        assert!(matches!(&e, ConnectorError::InvalidId { .. }), "{e:?}");
    }
    assert_eq!(
        sims.billing.request_log().len(),
        before,
        "nothing sent: {:?}",
        &sims.billing.request_log()[before..]
    );

    let got = c.get_customer(&created.id).await.expect("read").expect("exists");
    assert_eq!(got.get("email"), Some("ada@example.test"));
    let log = sims.billing.request_log();
    let last = log.last().expect("logged");
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.status),
        ("GET", format!("/v1/customers/{}", created.id).as_str(), 200)
    );
    sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billing_id_typed_into_the_crm_as_a_path_never_reaches_the_billing_api() {
    let d = demo(FaultProfile::none()).await;
    let sims = d.running.sims.clone().expect("sims");
    let contact = sims.crm.create_contact(&[
        ("email", "mallory@example.test"),
        ("lifecyclestage", "lead"),
        ("billing_customer_id", TRAVERSAL),
    ]);
    // The worker reads the contact and takes its billing id: refused before sending (a read
    // error of class validation), or, without the check, sent as a path.
    let engine = d.running.engine.clone();
    let billing = sims.billing.clone();
    let sent = || {
        billing
            .request_log()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    };
    eventually(20, "the billing id refused (or sent)", || {
        let refused = engine
            .metrics()
            .totals()
            .into_iter()
            .any(|(name, label, n)| name == "read_errors" && label == "validation" && n >= 1.0);
        let leaked = sent().iter().any(|r| r.contains("charges"));
        async move { (refused || leaked).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = sent();
    assert!(
        sent.iter().all(|r| !r.contains("charges") && !r.contains("..")),
        "the billing API saw: {sent:?}"
    );
    assert!(sims.billing.customers().is_empty(), "no customer made for it");
    // A validation dead letter naming the field and the record, at once (not retried): the
    // fix is the CRM's value, and retrying the dead letter plans the record again.
    let dl = eventually(20, "a dead letter for the malformed id", || {
        let engine = engine.clone();
        async move {
            engine
                .list_dead_letters(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        }
    })
    .await;
    assert_eq!(dl.error_class, "validation", "{dl:?}");
    assert_eq!(dl.attempts, 1, "{dl:?}");
    assert_eq!(dl.record, format!("customer:crm:{contact}"));
    assert!(
        dl.error.contains(&format!("contact {contact}'s billing_customer_id")) && dl.error.contains(TRAVERSAL),
        "{}",
        dl.error
    );
    let status = engine.status().await.expect("status");
    assert_eq!(
        status.ledger.events.get("pending").copied().unwrap_or(0),
        0,
        "{status:?}"
    );
    d.running.shutdown().await;
}
