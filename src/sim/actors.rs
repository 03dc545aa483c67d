//! Simulated humans: salespeople editing contacts in the CRM UI and finance editing
//! customers in the billing dashboard, and finance running subscriptions, plan changes,
//! cancellations, credit notes and billing cycles. Seeded, so a seed replays the same edits.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::clock::add_months;
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
const PLAN_KEYS: [&str; 3] = ["basic", "pro", "enterprise"];
const CREDIT_REASONS: [&str; 3] = ["order_change", "product_unsatisfactory", "duplicate"];
/// Demo: wall-clock seconds (actor ticks) per simulated billing month.
const DEMO_TICKS_PER_CYCLE: u64 = 30;

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

/// What `run_billing_activity` does: finance at work in the billing dashboard.
#[derive(Clone, Debug, PartialEq)]
pub struct BillingActivity {
    /// Start a subscription (random plan) for every engine-created customer (one with
    /// `metadata.driftless_crm_contact_id`) that has never had one.
    pub subscriptions: bool,
    /// Per live subscription and round: probability of a plan change.
    pub plan_changes: f64,
    /// Per live subscription and round: probability of a cancellation (half now, half at
    /// period end).
    pub cancellations: f64,
    /// Per live subscription and round: probability of a credit note on its latest invoice.
    pub credit_notes: f64,
    /// Billing cycles to run; each advances the simulated clock a month first. One round of
    /// edits precedes each cycle (one round when `cycles` is 0).
    pub cycles: usize,
}

impl Default for BillingActivity {
    fn default() -> Self {
        BillingActivity {
            subscriptions: true,
            plan_changes: 0.2,
            cancellations: 0.05,
            credit_notes: 0.1,
            cycles: 1,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BillingActivityReport {
    pub subscriptions_started: usize,
    pub plan_changes: usize,
    pub cancellations: usize,
    pub credit_notes: usize,
    /// Failed invoices finance collected by hand (clearing delinquency).
    pub invoices_collected: usize,
    pub cycles: usize,
    /// Invoices the cycles created, and how many of their payments failed.
    pub invoices: usize,
    pub payments_failed: usize,
    /// Subscriptions that ended at period end during the cycles.
    pub subscriptions_ended: usize,
}

/// Finance in the billing dashboard. Every decision draws a fixed number of values, so a
/// seed replays the same actions given the same records.
struct Finance {
    rng: ChaCha8Rng,
}

impl Finance {
    fn new(seed: u64) -> Finance {
        Finance {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xf17a_7ce0_0b11_1e55),
        }
    }

    /// Start a subscription for each engine-created customer that never had one.
    fn start_missing(&mut self, sims: &Simulators) -> usize {
        let had: HashSet<String> = sims
            .billing
            .subscriptions()
            .iter()
            .filter_map(|s| s["customer"].as_str().map(str::to_string))
            .collect();
        let mut started = 0;
        for c in sims.billing.customers() {
            let pick = self.rng.gen_range(0..PLAN_KEYS.len());
            let Some(id) = c["id"].as_str() else { continue };
            if !c["metadata"]["driftless_crm_contact_id"].is_string() || had.contains(id) {
                continue;
            }
            if sims.billing.start_subscription(id, PLAN_KEYS[pick]).is_ok() {
                started += 1;
            }
        }
        started
    }

    /// Live subscriptions (active or past_due, not already ending), oldest first.
    fn live(sims: &Simulators) -> Vec<Value> {
        sims.billing
            .subscriptions()
            .into_iter()
            .filter(|s| (s["status"] == "active" || s["status"] == "past_due") && s["cancel_at_period_end"] != true)
            .collect()
    }

    /// One action on one subscription: `r` = [cancel?, change?, credit?, plan pick,
    /// at period end?, credit share].
    fn act(&mut self, sims: &Simulators, sub: &Value, a: &BillingActivity, report: &mut BillingActivityReport) {
        let r: [f64; 6] = std::array::from_fn(|_| self.rng.gen::<f64>());
        let Some(id) = sub["id"].as_str() else { return };
        if r[0] < a.cancellations {
            if sims.billing.cancel_subscription(id, r[4] < 0.5).is_ok() {
                report.cancellations += 1;
            }
            return;
        }
        if r[1] < a.plan_changes {
            let current = sub["items"]["data"][0]["price"]["lookup_key"].as_str().unwrap_or("");
            let others: Vec<&str> = PLAN_KEYS.iter().copied().filter(|k| *k != current).collect();
            let pick = ((r[3] * others.len() as f64) as usize).min(others.len().saturating_sub(1));
            if let Some(plan) = others.get(pick) {
                if sims.billing.change_plan(id, plan).is_ok() {
                    report.plan_changes += 1;
                }
            }
        }
        if r[2] < a.credit_notes {
            let inv = sub["latest_invoice"].as_str().and_then(|i| sims.billing.invoice(i));
            if let Some(inv) = inv {
                let n = |k: &str| inv[k].as_i64().unwrap_or(0);
                let creditable = match inv["status"].as_str() {
                    Some("open") => n("amount_remaining"),
                    Some("paid") => n("amount_paid") - n("post_payment_credit_notes_amount"),
                    _ => 0,
                };
                // A quarter, half, three quarters or all of what is creditable.
                let amount = (creditable * (1 + (r[5] * 4.0) as i64).min(4) / 4).max(1);
                let reason = CREDIT_REASONS[((r[3] * 3.0) as usize).min(2)];
                let id = inv["id"].as_str().unwrap_or_default();
                if creditable > 0 && sims.billing.issue_credit_note(id, amount, reason).is_ok() {
                    report.credit_notes += 1;
                }
            }
        }
    }

    /// Collect each failed open invoice with probability 1/2 (the customer fixed the card).
    fn collect(&mut self, sims: &Simulators, report: &mut BillingActivityReport) {
        let failed: Vec<String> = sims
            .billing
            .invoices()
            .iter()
            .filter(|i| i["status"] == "open" && i["attempt_count"].as_i64().unwrap_or(0) > 0)
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect();
        for id in failed {
            if self.rng.gen_bool(0.5) && sims.billing.pay_invoice(&id).is_ok() {
                report.invoices_collected += 1;
            }
        }
    }

    fn round(&mut self, sims: &Simulators, a: &BillingActivity, report: &mut BillingActivityReport) {
        self.collect(sims, report);
        for sub in Finance::live(sims) {
            self.act(sims, &sub, a, report);
        }
    }
}

/// Advance the shared clock to `target` (unix seconds) if it is behind.
fn advance_clock_to(sims: &Simulators, target: i64) {
    let clock = &sims.billing.core().clock;
    let now = clock.now_s();
    if target > now {
        clock.advance(target - now);
    }
}

/// Finance at work: subscriptions for engine-created customers, then per round plan
/// changes, cancellations, credit notes and collections, each round followed by a billing
/// cycle one simulated month later. Deterministic for a seed and the same starting records
/// (record ids aside).
pub async fn run_billing_activity(sims: &Simulators, seed: u64, activity: BillingActivity) -> BillingActivityReport {
    let mut f = Finance::new(seed);
    let mut report = BillingActivityReport::default();
    if activity.subscriptions {
        report.subscriptions_started = f.start_missing(sims);
    }
    let base = sims.billing.core().clock.now_s();
    for k in 0..activity.cycles.max(1) {
        tokio::task::yield_now().await;
        f.round(sims, &activity, &mut report);
        if k < activity.cycles {
            advance_clock_to(sims, add_months(base, u32::try_from(k + 1).unwrap_or(u32::MAX)));
            let s = sims.billing.cycle_stats();
            report.cycles += 1;
            report.invoices += s.invoices;
            report.payments_failed += s.failed;
            report.subscriptions_ended += s.ended;
        }
    }
    report
}

/// Sales asks for plan changes on the CRM side: sets `requested_plan` (basic, pro or
/// enterprise) on `n` random contacts, as UI edits. The property is the engine's to create;
/// until it exists the edits are rejected. Returns the edits applied.
pub async fn run_plan_requests(sims: &Simulators, seed: u64, n: usize) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x91a7_5e11_0000_0001);
    let ids: Vec<String> = sims
        .crm
        .contacts()
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect();
    let mut applied = 0;
    for _ in 0..n {
        let (pick, plan) = (rng.gen::<u64>(), PLAN_KEYS[rng.gen_range(0..PLAN_KEYS.len())]);
        tokio::task::yield_now().await;
        if ids.is_empty() {
            continue;
        }
        let id = &ids[(pick % ids.len() as u64) as usize];
        if sims.crm.edit_contact(id, &[("requested_plan", plan)]).is_ok() {
            applied += 1;
        }
    }
    applied
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
        let listed: Vec<String>;
        let ids: &[String] = if self.ids.is_empty() {
            listed = sims
                .crm
                .contacts()
                .iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect();
            &listed
        } else {
            &self.ids
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
        let mut ours: Vec<String> = sims.billing.customer_ids_with_metadata("driftless_crm_contact_id");
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
/// ~1 s, a billing edit every ~5 s, and a storm now and then per the fault profile. Finance
/// starts a subscription for each new engine-created customer, now and then changes a plan,
/// cancels, issues a credit note or collects a failed invoice; sales now and then requests
/// a plan change on a contact; every ~30 s the simulated clock jumps a month and the billing
/// cycle runs.
pub fn spawn_background_actors(sims: &Simulators, seed: u64) -> tokio::task::JoinHandle<()> {
    let sims = sims.clone();
    tokio::spawn(async move {
        let mut a = Actor::new(seed, "demo");
        let mut f = Finance::new(seed);
        let demo = BillingActivity {
            subscriptions: true,
            plan_changes: 0.5,
            cancellations: 0.15,
            credit_notes: 0.35,
            cycles: 0,
        };
        let mut ignored = BillingActivityReport::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut t: u64 = 0;
        while !sims.crm.core().stopping() {
            tick.tick().await;
            if t.is_multiple_of(3) {
                a.new_contact(&sims);
            }
            a.crm_edit(&sims);
            if t % 5 == 4 {
                a.billing_edit(&sims);
            }
            a.maybe_storm(&sims);
            f.demo_tick(&sims, t, &demo, &mut ignored);
            t += 1;
        }
    })
}

impl Finance {
    /// One second of the demo's billing activity.
    fn demo_tick(&mut self, sims: &Simulators, t: u64, demo: &BillingActivity, report: &mut BillingActivityReport) {
        self.start_missing(sims);
        let (act, collect, request, pick) = (
            self.rng.gen::<f64>(),
            self.rng.gen::<f64>(),
            self.rng.gen::<f64>(),
            self.rng.gen::<u64>(),
        );
        if act < 0.2 {
            let live = Finance::live(sims);
            if !live.is_empty() {
                let sub = &live[(pick % live.len() as u64) as usize];
                self.act(sims, sub, demo, report);
            }
        }
        if collect < 0.1 {
            self.collect(sims, report);
        }
        if request < 0.05 {
            let contacts = sims.crm.contacts();
            if !contacts.is_empty() {
                let c = &contacts[(pick % contacts.len() as u64) as usize];
                let plan = PLAN_KEYS[(pick % PLAN_KEYS.len() as u64) as usize];
                if let Some(id) = c["id"].as_str() {
                    // Rejected until the engine has created the property.
                    let _ = sims.crm.edit_contact(id, &[("requested_plan", plan)]);
                }
            }
        }
        if t % DEMO_TICKS_PER_CYCLE == DEMO_TICKS_PER_CYCLE - 1 {
            let now = sims.billing.core().clock.now_s();
            advance_clock_to(sims, add_months(now, 1));
            sims.billing.run_billing_cycle();
        }
    }
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
