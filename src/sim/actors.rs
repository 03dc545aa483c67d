//! Simulated humans: salespeople editing contacts in the CRM UI and finance editing
//! customers in the billing dashboard. Seeded, so a seed replays the same edits.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Simulators;

const FIRST_NAMES: [&str; 8] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Radia", "Linus"];
const STAGES: [&str; 6] = [
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
];
const STORM_SIZE: usize = 10;

/// What `run_actors` does.
#[derive(Clone, Debug)]
pub struct ActorPlan {
    pub seed: u64,
    /// Contacts to create first.
    pub records: usize,
    /// Random edits after that.
    pub edits: usize,
    /// 0 = as fast as possible.
    pub edits_per_sec: f64,
    /// Fraction of edits made by finance in billing.
    pub billing_edit_share: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActorReport {
    pub contacts_created: usize,
    pub crm_edits: usize,
    pub billing_edits: usize,
    /// Finance edits skipped because no engine-created billing customer existed yet.
    pub billing_edits_skipped: usize,
}

struct Actor {
    rng: ChaCha8Rng,
    seed: u64,
    prefix: &'static str,
    /// Contact ids we created, with their index `n` (for unique emails).
    ids: Vec<String>,
    edits: usize,
}

impl Actor {
    fn new(seed: u64, prefix: &'static str) -> Actor {
        Actor {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            prefix,
            ids: Vec::new(),
            edits: 0,
        }
    }

    fn new_contact(&mut self, sims: &Simulators) {
        let n = self.ids.len();
        let email = format!("{}{n}.{}@example.test", self.prefix, self.seed);
        let name = FIRST_NAMES[self.rng.gen_range(0..FIRST_NAMES.len())];
        let stage = STAGES[self.rng.gen_range(0..2)];
        let id = sims
            .crm
            .create_contact(&[("email", &email), ("firstname", name), ("lifecyclestage", stage)]);
        self.ids.push(id);
    }

    /// A salesperson changes a contact's email or lifecycle stage.
    fn crm_edit(&mut self, sims: &Simulators) -> bool {
        let (pick, email_edit, stage) = (
            self.rng.gen::<u64>(),
            self.rng.gen_bool(0.5),
            self.rng.gen_range(0..STAGES.len()),
        );
        self.edits += 1;
        let ids = if self.ids.is_empty() {
            sims.crm
                .contacts()
                .iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        } else {
            self.ids.clone()
        };
        if ids.is_empty() {
            return false;
        }
        let i = (pick % ids.len() as u64) as usize;
        let email = format!("{}{i}.{}.e{}@example.test", self.prefix, self.seed, self.edits);
        let props: [(&str, &str); 1] = if email_edit {
            [("email", email.as_str())]
        } else {
            [("lifecyclestage", STAGES[stage])]
        };
        sims.crm.edit_contact(&ids[i], &props).is_ok()
    }

    /// Finance changes the email of a customer the engine created. `None` = no such customer.
    fn billing_edit(&mut self, sims: &Simulators) -> Option<bool> {
        let pick = self.rng.gen::<u64>();
        self.edits += 1;
        let mut ours: Vec<String> = sims
            .billing
            .customers()
            .iter()
            .filter(|c| c["metadata"]["driftless_crm_contact_id"].is_string())
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect();
        if ours.is_empty() {
            return None;
        }
        ours.sort();
        let id = &ours[(pick % ours.len() as u64) as usize];
        let email = format!("finance{}.{}.{}@example.test", self.edits, self.prefix, self.seed);
        Some(sims.billing.edit_customer(id, Some(&email), &[]).is_ok())
    }

    fn maybe_storm(&mut self, sims: &Simulators) {
        let p = sims.crm.core().faults.profile().storm;
        if self.rng.gen::<f64>() < p {
            sims.crm.storm(STORM_SIZE);
            sims.billing.storm(STORM_SIZE);
        }
    }
}

/// Create `records` contacts, then make `edits` random edits. Returns when done.
pub async fn run_actors(sims: &Simulators, plan: ActorPlan) -> ActorReport {
    let mut a = Actor::new(plan.seed, "user");
    let mut report = ActorReport::default();
    for _ in 0..plan.records {
        a.new_contact(sims);
        report.contacts_created += 1;
        tokio::task::yield_now().await;
    }
    let gap = (plan.edits_per_sec > 0.0).then(|| Duration::from_secs_f64((1.0 / plan.edits_per_sec).min(3600.0)));
    for _ in 0..plan.edits {
        match gap {
            Some(g) => tokio::time::sleep(g).await,
            None => tokio::task::yield_now().await,
        }
        if a.rng.gen::<f64>() < plan.billing_edit_share {
            match a.billing_edit(sims) {
                Some(true) => report.billing_edits += 1,
                Some(false) => {}
                None => report.billing_edits_skipped += 1,
            }
        } else if a.crm_edit(sims) {
            report.crm_edits += 1;
        }
        a.maybe_storm(sims);
    }
    report
}

/// The demo: until the simulators shut down, a new contact every ~3 s, a CRM edit every
/// ~1 s, a billing edit every ~5 s, and a storm now and then per the fault profile.
pub fn spawn_background_actors(sims: &Simulators, seed: u64) -> tokio::task::JoinHandle<()> {
    let sims = sims.clone();
    tokio::spawn(async move {
        let mut a = Actor::new(seed, "demo");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut t: u64 = 0;
        while !sims.crm.core().stopping() {
            tick.tick().await;
            if t % 3 == 0 {
                a.new_contact(&sims);
            }
            a.crm_edit(&sims);
            if t % 5 == 4 {
                a.billing_edit(&sims);
            }
            a.maybe_storm(&sims);
            t += 1;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::SimConfig;
    use super::*;

    #[tokio::test]
    async fn actors_are_deterministic_and_emails_unique() {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let sims = Simulators::start(SimConfig::default()).await.expect("start");
            let plan = ActorPlan {
                seed: 9,
                records: 20,
                edits: 60,
                edits_per_sec: 0.0,
                billing_edit_share: 0.3,
            };
            let report = run_actors(&sims, plan).await;
            assert_eq!(report.contacts_created, 20);
            assert_eq!(report.billing_edits, 0);
            assert_eq!(report.crm_edits + report.billing_edits_skipped, 60);
            let contacts = sims.crm.contacts();
            let mut emails: Vec<String> = contacts
                .iter()
                .filter_map(|c| c["properties"]["email"].as_str().map(str::to_string))
                .collect();
            let n = emails.len();
            emails.sort();
            emails.dedup();
            assert_eq!(emails.len(), n);
            let props: Vec<_> = contacts.iter().map(|c| c["properties"].clone()).collect();
            seen.push((report, props));
            sims.shutdown().await;
        }
        let strip = |v: &Vec<serde_json::Value>| -> Vec<(String, String)> {
            v.iter()
                .map(|p| {
                    (
                        p["email"].as_str().unwrap_or("").into(),
                        p["lifecyclestage"].as_str().unwrap_or("").into(),
                    )
                })
                .collect()
        };
        assert_eq!(seen[0].0, seen[1].0);
        assert_eq!(strip(&seen[0].1), strip(&seen[1].1));
    }
}
