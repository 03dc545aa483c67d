//! The checked sync contract: what the rest of the engine reads. Built only by
//! `contract::compile`, which has already proven every invariant stated on these types
//! (numeric ranges included: code may add these to a Unix-ms clock without overflow).

use std::path::PathBuf;

/// Which of the two systems a field, write or event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Crm,
    Billing,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Crm => "crm",
            Side::Billing => "billing",
        }
    }
    pub fn other(self) -> Side {
        match self {
            Side::Crm => Side::Billing,
            Side::Billing => Side::Crm,
        }
    }
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "crm" => Some(Side::Crm),
            "billing" => Some(Side::Billing),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemKind {
    Hubspot,
    Stripe,
}

/// Where a secret comes from. The contract never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// Read from this environment variable.
    Env(String),
    /// Read from the OS keychain (service, account).
    Keychain { service: String, account: String },
}

#[derive(Debug, Clone)]
pub struct SystemConfig {
    pub kind: SystemKind,
    /// Base URL without a trailing slash, e.g. `https://api.stripe.com`.
    pub base_url: String,
    /// API credential (Stripe secret key / HubSpot private-app token).
    pub secret: SecretRef,
    /// Webhook signing secret (Stripe `whsec_…` / HubSpot app client secret).
    pub webhook_secret: Option<SecretRef>,
    /// 100..=120000.
    pub request_timeout_ms: u64,
    /// How changes reach the engine: signed webhooks, polling, or both (deduplicated).
    pub ingest: IngestMode,
    /// Time between poll passes (when polling): 100..=3600000.
    pub poll_interval_ms: u64,
    /// How far each poll window reaches back before the cursor (late-indexed changes):
    /// 1000..=86400000.
    pub poll_overlap_ms: u64,
}

/// How a system's changes are ingested (`ingest` in the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    Webhooks,
    Poll,
    Both,
}

impl IngestMode {
    pub fn polls(self) -> bool {
        matches!(self, IngestMode::Poll | IngestMode::Both)
    }
    pub fn webhooks(self) -> bool {
        matches!(self, IngestMode::Webhooks | IngestMode::Both)
    }
}

#[derive(Debug, Clone)]
pub struct Systems {
    pub crm: SystemConfig,
    pub billing: SystemConfig,
}

/// Who owns a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Crm,
    Billing,
    /// Both sides may edit; concurrent edits are settled by the rule.
    Shared(ConflictRule),
}

impl Owner {
    /// The owning side, if exactly one side owns the field.
    pub fn side(self) -> Option<Side> {
        match self {
            Owner::Crm => Some(Side::Crm),
            Owner::Billing => Some(Side::Billing),
            Owner::Shared(_) => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Owner::Crm => "crm",
            Owner::Billing => "billing",
            Owner::Shared(ConflictRule::Review) => "shared (review)",
            Owner::Shared(ConflictRule::LatestSyncTimestamp) => "shared (latest_sync_timestamp)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictRule {
    /// Send the record to the manual review queue.
    Review,
    /// The change the ledger sequenced last wins (the ledger's own stamp, never a provider clock).
    LatestSyncTimestamp,
}

/// What to do when the non-owning side edits an owned field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonOwnerRule {
    /// Write the owner's value back over the edit (audited).
    Revert,
    /// Leave the edit in place, audit it and put the record in review.
    Flag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmObject {
    Contact,
    Company,
}

impl CrmObject {
    pub fn as_str(self) -> &'static str {
        match self {
            CrmObject::Contact => "contact",
            CrmObject::Company => "company",
        }
    }
    /// The HubSpot object type in URLs (`/crm/v3/objects/contacts`).
    pub fn plural(self) -> &'static str {
        match self {
            CrmObject::Contact => "contacts",
            CrmObject::Company => "companies",
        }
    }
    /// The billing metadata key that carries the CRM id of a customer driftless created
    /// (the origin marker a lost create is found by).
    pub fn origin_key(self) -> &'static str {
        match self {
            CrmObject::Contact => "driftless_crm_contact_id",
            CrmObject::Company => "driftless_crm_company_id",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingObject {
    Customer,
    Subscription,
    Invoice,
    CreditNote,
}

impl BillingObject {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingObject::Customer => "customer",
            BillingObject::Subscription => "subscription",
            BillingObject::Invoice => "invoice",
            BillingObject::CreditNote => "credit_note",
        }
    }
}

/// How records of an object pair are matched, tried in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchRule {
    /// The ids stored in the identity map / on the records.
    StoredId,
    Email,
}

/// A parsed idempotency-key template such as `billing:create:{crm_contact_id}:{event_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    pub raw: String,
    pub parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Literal(String),
    /// A placeholder; validated to be one of `KeyTemplate::PLACEHOLDERS`.
    Var(String),
}

impl KeyTemplate {
    pub const PLACEHOLDERS: &'static [&'static str] = &[
        "crm_contact_id",
        "crm_company_id",
        "billing_customer_id",
        "event_id",
        "object",
        "op",
    ];

    /// Render with the given variables; a missing variable renders as `-`.
    pub fn render(&self, vars: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                KeyPart::Literal(s) => out.push_str(s),
                KeyPart::Var(v) => {
                    let val = vars.iter().find(|(k, _)| k == v).map(|(_, val)| *val);
                    out.push_str(val.unwrap_or("-"));
                }
            }
        }
        out
    }
}

/// One mapped field: a name, where it lives on each side, who owns it.
#[derive(Debug, Clone)]
pub struct FieldMapping {
    /// The contract's name for the field, e.g. `lifecycle_stage`.
    pub name: String,
    /// CRM property name, e.g. `lifecyclestage`.
    pub crm: String,
    /// Billing path: a top-level attribute (`email`, `id`) or `metadata.<key>`.
    pub billing: String,
    pub owner: Owner,
    pub on_non_owner_edit: NonOwnerRule,
}

#[derive(Debug, Clone)]
pub struct ObjectMapping {
    /// The contract's name for the pair, e.g. `customer`.
    pub name: String,
    pub crm: CrmObject,
    pub billing: BillingObject,
    pub match_on: Vec<MatchRule>,
    /// Side on which a missing counterpart is created, if any.
    pub create_in: Option<Side>,
    pub idempotency_key: KeyTemplate,
    pub fields: Vec<FieldMapping>,
}

#[derive(Debug, Clone)]
pub struct Dedupe {
    /// 1..=365.
    pub retention_days: u32,
}

#[derive(Debug, Clone)]
pub struct Reconciliation {
    /// `nightly`, `hourly`, `manual`, or a 5-field cron expression.
    pub schedule: String,
    /// 1..=90.
    pub window_days: u32,
}

#[derive(Debug, Clone)]
pub struct Retry {
    /// 1..=100.
    pub max_attempts: u32,
    /// 1..=3600000 (one hour).
    pub base_backoff_ms: u64,
    /// base_backoff_ms..=3600000 (one hour).
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Sustained requests per second allowed to this destination: 0.001..=10000.
    pub requests_per_second: f64,
    /// Burst size (token bucket capacity): 1..=10000.
    pub burst: u32,
    /// Optional daily cap on requests (reset at 00:00 UTC): 1..=1000000000.
    pub daily_cap: Option<u64>,
    /// How the figures were chosen, for `status` (e.g. `stripe test mode default`,
    /// `hubspot free_starter tier, requests_per_second from the contract`).
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    pub crm: RateLimit,
    pub billing: RateLimit,
}

#[derive(Debug, Clone)]
pub struct Alerts {
    /// 1..=86400000 (one day).
    pub lag_p95_ms: u64,
    /// 0..=1000000.
    pub dead_letters: u64,
    /// 0..=1000000.
    pub review_depth: u64,
    /// In (0, 1].
    pub error_rate: f64,
    /// In (0, 1].
    pub mismatch_rate: f64,
}

/// A validated contract.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Where it was loaded from (or `<embedded default>`).
    pub path: PathBuf,
    /// The first 16 hex digits of SHA-256 over the file's bytes; recorded with every decision.
    pub version: String,
    pub name: String,
    pub systems: Systems,
    pub objects: Vec<ObjectMapping>,
    pub dedupe: Dedupe,
    pub reconciliation: Reconciliation,
    pub retry: Retry,
    pub rate_limits: RateLimits,
    pub alerts: Alerts,
    /// Settings accepted but risky, located like problems (e.g. an `http://` base URL to a
    /// non-loopback host allowed by `allow_insecure_http`). `contract check` prints them and
    /// `serve` logs them at start.
    pub warnings: Vec<super::ContractProblem>,
}

impl ObjectMapping {
    /// The CRM property that carries the billing id (the field whose billing path is `id`).
    pub fn billing_id_property(&self) -> Option<&str> {
        self.fields.iter().find(|f| f.billing == "id").map(|f| f.crm.as_str())
    }

    /// Whether this pair is synced record by record: a CRM contact or company with a billing
    /// customer (subscriptions and invoices ride along with their customer).
    pub fn syncs_customers(&self) -> bool {
        self.billing == BillingObject::Customer
    }
}

impl Contract {
    pub fn object(&self, name: &str) -> Option<&ObjectMapping> {
        self.objects.iter().find(|o| o.name == name)
    }

    /// The objects other than the customer pair `m` that mirror that customer's billing
    /// objects (subscriptions, invoices) onto the same CRM record.
    pub fn billing_object_mappings<'a>(&'a self, m: &'a ObjectMapping) -> impl Iterator<Item = &'a ObjectMapping> {
        self.objects.iter().filter(move |o| {
            o.crm == m.crm && matches!(o.billing, BillingObject::Subscription | BillingObject::Invoice)
        })
    }

    /// Every field mapped onto a CRM record for the customer pair `m`: its own and those of
    /// the billing objects mirrored onto the same record.
    pub fn contact_fields<'a>(&'a self, m: &'a ObjectMapping) -> impl Iterator<Item = &'a FieldMapping> {
        m.fields
            .iter()
            .chain(self.billing_object_mappings(m).flat_map(|o| o.fields.iter()))
    }
    pub fn system(&self, side: Side) -> &SystemConfig {
        match side {
            Side::Crm => &self.systems.crm,
            Side::Billing => &self.systems.billing,
        }
    }
}
