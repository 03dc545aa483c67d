//! Connectors: the engine's only way to talk to the two systems. One trait per side, so a
//! Salesforce or Chargebee connector is an addition. These share no wire code with `sim/`
//! (the simulators are an independent oracle).

pub mod headers;
pub mod hubspot;
#[cfg(test)]
mod id_tests;
#[cfg(test)]
mod rate_tests;
pub mod stripe;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::contract::CrmObject;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Field values keyed by the destination's own path (CRM property name, or a billing
/// attribute / `metadata.<key>`). `None` clears the field.
pub type Fields = BTreeMap<String, Option<String>>;

/// A record as read from a system, flattened to the paths the contract maps.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteRecord {
    pub id: String,
    pub fields: Fields,
}

impl RemoteRecord {
    pub fn get(&self, path: &str) -> Option<&str> {
        if path == "id" {
            return Some(&self.id);
        }
        self.fields.get(path).and_then(|v| v.as_deref())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    #[error("{system}: no response within {timeout_ms} ms; the request may or may not have been applied")]
    Timeout { system: &'static str, timeout_ms: u64 },
    #[error("{system}: could not connect: {detail}")]
    Transport { system: &'static str, detail: String },
    #[error("{system}: rate limited (429){}", retry_after_ms.map(|ms| format!(", retry after {ms} ms")).unwrap_or_default())]
    RateLimited {
        system: &'static str,
        retry_after_ms: Option<u64>,
        body: String,
    },
    #[error("{system}: server error {status}")]
    Server {
        system: &'static str,
        status: u16,
        body: String,
    },
    #[error("{system}: credentials refused ({status}); check the API key the contract names")]
    Auth {
        system: &'static str,
        status: u16,
        body: String,
    },
    #[error("{system}: request rejected ({status} {code}): {message}")]
    Rejected {
        system: &'static str,
        status: u16,
        code: String,
        message: String,
        body: String,
    },
    #[error("{system}: answered with something that is not its API ({status}): {detail}")]
    Garbage {
        system: &'static str,
        status: u16,
        detail: String,
        body: String,
    },
    /// An id (or property name) that is not of the form its system gives them, refused before
    /// anything is sent: it would otherwise reach a request URL (`x/../../v1/charges` typed
    /// into a CRM field). `what` names the value (`billing customer id`), `expected` the form.
    #[error("{what} {} is not {expected}", quoted(id))]
    InvalidId {
        system: &'static str,
        what: &'static str,
        id: String,
        expected: &'static str,
    },
}

/// A value for a message: in double quotes, control characters and quotes escaped, at most
/// 100 characters (then `…`).
fn quoted(s: &str) -> String {
    const MAX: usize = 100;
    let mut out = String::from("\"");
    for c in s.chars().take(MAX) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out.push('"');
    out
}

impl ConnectorError {
    /// Worth retrying with the same idempotency key.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ConnectorError::Timeout { .. }
                | ConnectorError::Transport { .. }
                | ConnectorError::RateLimited { .. }
                | ConnectorError::Server { .. }
                | ConnectorError::Garbage { .. }
        )
    }

    /// Which system answered (or failed to): `crm` or `billing`.
    pub fn system(&self) -> &'static str {
        match self {
            ConnectorError::Timeout { system, .. }
            | ConnectorError::Transport { system, .. }
            | ConnectorError::RateLimited { system, .. }
            | ConnectorError::Server { system, .. }
            | ConnectorError::Auth { system, .. }
            | ConnectorError::Rejected { system, .. }
            | ConnectorError::Garbage { system, .. }
            | ConnectorError::InvalidId { system, .. } => system,
        }
    }

    /// A stable class for dead letters and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            ConnectorError::Timeout { .. } => "timeout",
            ConnectorError::Transport { .. } => "transport",
            ConnectorError::RateLimited { .. } => "rate_limited",
            ConnectorError::Server { .. } => "server",
            ConnectorError::Auth { .. } => "auth",
            ConnectorError::Rejected { .. } | ConnectorError::InvalidId { .. } => "validation",
            ConnectorError::Garbage { .. } => "garbage",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::RateLimited { .. } => Some(429),
            ConnectorError::Server { status, .. }
            | ConnectorError::Auth { status, .. }
            | ConnectorError::Rejected { status, .. }
            | ConnectorError::Garbage { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn body(&self) -> Option<&str> {
        match self {
            ConnectorError::RateLimited { body, .. }
            | ConnectorError::Server { body, .. }
            | ConnectorError::Auth { body, .. }
            | ConnectorError::Rejected { body, .. }
            | ConnectorError::Garbage { body, .. } => Some(body),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::RateLimited { retry_after_ms, .. } => retry_after_ms.map(Duration::from_millis),
            _ => None,
        }
    }
}

pub type ConnResult<T> = Result<T, ConnectorError>;

/// One page of Stripe's `/v1/events` list (raw events, parsed by `ingest::stripe`).
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<serde_json::Value>,
    pub has_more: bool,
}

/// A CRM search for records of one type modified in `[from_ms, to_ms]` (both inclusive),
/// oldest first.
#[derive(Debug, Clone, Copy)]
pub struct ModifiedSearch<'a> {
    pub kind: CrmObject,
    pub from_ms: i64,
    pub to_ms: i64,
    pub properties: &'a [String],
    /// The paging cursor of the previous page.
    pub after: Option<&'a str>,
    pub limit: u32,
}

/// One page of a CRM search.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    /// Every match of the search (HubSpot's `total`), not only this page's.
    pub total: u64,
    pub results: Vec<RemoteRecord>,
    pub next_after: Option<String>,
}

/// One page of a full listing (cursor pagination): the records and the cursor of the next
/// page (`None`: this was the last page). Reconciliation and backfill page with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListPage {
    pub records: Vec<RemoteRecord>,
    pub next: Option<String>,
}

/// The billing side (Stripe today).
pub trait BillingApi: Send + Sync {
    fn get_customer<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>>;
    fn create_customer<'a>(
        &'a self,
        idempotency_key: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>>;
    fn update_customer<'a>(
        &'a self,
        id: &'a str,
        idempotency_key: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>>;
    /// Customers whose `metadata[key]` is exactly `value` (Stripe's search; its index may
    /// lag writes by up to a minute, so the idempotency key stays the first protection).
    fn customers_by_metadata<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, ConnResult<Vec<RemoteRecord>>>;
    /// Customers whose email is exactly `email`, newest first.
    fn customers_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, ConnResult<Vec<RemoteRecord>>>;
    /// One page of events created in `[created_gte, created_lte]` (unix seconds), 100 per
    /// page, continuing after the event id `starting_after`.
    fn list_events<'a>(
        &'a self,
        created_gte: i64,
        created_lte: i64,
        starting_after: Option<&'a str>,
    ) -> BoxFuture<'a, ConnResult<EventPage>>;
    /// One page (100) of every customer, newest first (`GET /v1/customers`), continuing after
    /// the customer id `starting_after`.
    fn list_customers<'a>(&'a self, starting_after: Option<&'a str>) -> BoxFuture<'a, ConnResult<ListPage>>;
    /// The customer's current subscription, flattened to `status`, `plan`, `mrr`,
    /// `next_invoice_date`, `cancel_at_period_end`; an empty record when it has none.
    fn subscription_summary<'a>(&'a self, customer_id: &'a str) -> BoxFuture<'a, ConnResult<RemoteRecord>>;
    /// The customer's invoices summarised: `amount_remaining` (open invoices, net of credit
    /// notes) and `last_payment_at`. Delinquency is on the customer record itself.
    fn invoice_summary<'a>(&'a self, customer_id: &'a str) -> BoxFuture<'a, ConnResult<RemoteRecord>>;
    /// Move the customer's current subscription to the price whose lookup key is
    /// `fields["plan"]` (other `metadata.*` fields are set on the subscription). Refused as a
    /// validation error when the customer has no live subscription or no such price exists;
    /// a subscription already on that plan is returned unchanged.
    fn change_plan<'a>(
        &'a self,
        customer_id: &'a str,
        idempotency_key: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>>;
    /// Hand the rate-limit headers of every response to `observer` (the destination's budget).
    fn observe_rates(&self, _observer: std::sync::Arc<dyn headers::RateObserver>) {}
}

/// A custom CRM property the contract needs.
#[derive(Debug, Clone)]
pub struct PropertyDef {
    /// The object type the property belongs to.
    pub object: CrmObject,
    pub name: String,
    pub label: String,
}

/// The CRM side (HubSpot today).
pub trait CrmApi: Send + Sync {
    /// A contact or company with the given properties; `None` when it does not exist.
    fn get_record<'a>(
        &'a self,
        kind: CrmObject,
        id: &'a str,
        properties: &'a [String],
    ) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>>;
    fn update_record<'a>(
        &'a self,
        kind: CrmObject,
        id: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>>;
    /// One page (100) of every record of `kind` (`GET /crm/v3/objects/{type}`), with these
    /// properties, continuing at the paging cursor `after`.
    fn list_records<'a>(
        &'a self,
        kind: CrmObject,
        properties: &'a [String],
        after: Option<&'a str>,
    ) -> BoxFuture<'a, ConnResult<ListPage>>;
    /// One page of records modified in a window (search on the last-modified property).
    fn search_modified<'a>(&'a self, q: ModifiedSearch<'a>) -> BoxFuture<'a, ConnResult<SearchPage>>;
    /// Create the custom properties that do not exist yet; returns the names created.
    fn ensure_properties<'a>(&'a self, defs: &'a [PropertyDef]) -> BoxFuture<'a, ConnResult<Vec<String>>>;
    /// Read many records by id (HubSpot `batch/read`, up to 100 per call, larger inputs
    /// split). One outcome per id, in input order; `Ok(None)` when the record does not exist.
    fn batch_read<'a>(
        &'a self,
        kind: CrmObject,
        ids: &'a [String],
        properties: &'a [String],
    ) -> BoxFuture<'a, Vec<BatchItem<Option<RemoteRecord>>>>;
    /// Update many records by id (HubSpot `batch/update`). One outcome per input, in order.
    fn batch_update<'a>(
        &'a self,
        kind: CrmObject,
        inputs: &'a [BatchUpdate],
    ) -> BoxFuture<'a, Vec<BatchItem<RemoteRecord>>>;
    /// Create or update many records by a unique property (HubSpot `batch/upsert`, e.g. by
    /// `email` for contacts). One outcome per input, in order: the record and whether it is new.
    fn batch_upsert<'a>(
        &'a self,
        kind: CrmObject,
        inputs: &'a [BatchUpsert],
    ) -> BoxFuture<'a, Vec<BatchItem<(RemoteRecord, bool)>>>;
    /// Hand the rate-limit headers of every response to `observer` (the destination's budget).
    fn observe_rates(&self, _observer: std::sync::Arc<dyn headers::RateObserver>) {}
}

/// One record of a batch update.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchUpdate {
    pub id: String,
    pub fields: Fields,
}

/// One record of a batch upsert: `id` is the value of the unique property `id_property`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchUpsert {
    pub id: String,
    pub id_property: String,
    pub fields: Fields,
}

/// Why one record of a batch call has no result.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct BatchItemError {
    pub error: ConnectorError,
    /// The whole call failed (429, 5xx, transport, or a 4xx refusing the whole batch, e.g.
    /// one unknown property): this record itself may be fine.
    pub whole_call: bool,
}

/// One record's outcome in a batch call.
pub type BatchItem<T> = Result<T, BatchItemError>;

/// HubSpot's batch endpoints take at most this many inputs per call.
pub const CRM_BATCH_MAX: usize = 100;

/// One URL path segment that carries a value, percent-encoded: every byte outside RFC 3986's
/// unreserved set (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, so `/`, `?`, `#`, `%`, spaces and
/// non-ASCII text stay inside the segment instead of changing the path. A segment of only
/// dots is the one thing encoding cannot neutralise (URL parsers read `%2E` as a dot and
/// resolve `.`/`..`), which is why every value is also checked against its system's id form
/// before it gets here.
pub fn path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The form of an id a system gives its records, checked before the id is sent anywhere.
#[derive(Debug, Clone, Copy)]
pub struct IdForm {
    pub system: &'static str,
    /// What the value is, for messages: `billing customer id`.
    pub what: &'static str,
    /// The form, for messages: `a Stripe id (expected cus_ followed by letters and digits)`.
    pub expected: &'static str,
    /// Whether a value is of the form.
    pub check: fn(&str) -> bool,
}

impl IdForm {
    /// `Ok` for a value of the form; else the `InvalidId` error naming it.
    pub fn validate(&self, id: &str) -> ConnResult<()> {
        if (self.check)(id) {
            Ok(())
        } else {
            Err(ConnectorError::InvalidId {
                system: self.system,
                what: self.what,
                id: clip(id),
                expected: self.expected,
            })
        }
    }

    /// The value checked and percent-encoded for a URL path segment.
    pub fn segment(&self, id: &str) -> ConnResult<String> {
        self.validate(id).map(|()| path_segment(id))
    }
}

/// Turn a reqwest failure into a connector error.
pub(crate) fn transport_error(system: &'static str, timeout_ms: u64, e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::Timeout { system, timeout_ms }
    } else {
        ConnectorError::Transport {
            system,
            detail: e.to_string(),
        }
    }
}

/// Parse `Retry-After` (delta-seconds or an HTTP date) into milliseconds from now.
pub(crate) fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers::retry_after_ms(headers, chrono::Utc::now().timestamp_millis())
}

/// Keep error bodies short in the ledger and logs.
pub(crate) fn clip(body: &str) -> String {
    const MAX: usize = 4000;
    if body.len() <= MAX {
        body.to_string()
    } else {
        let mut end = MAX;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &body[..end])
    }
}

/// Stands in for a system the process has no credentials for (CLI commands that only need
/// the ledger): every call fails with a clear transport error.
#[derive(Debug, Clone)]
pub struct Offline {
    pub system: &'static str,
    pub why: String,
}

impl Offline {
    fn err(&self) -> ConnectorError {
        ConnectorError::Transport {
            system: self.system,
            detail: self.why.clone(),
        }
    }
    fn whole_call(&self) -> BatchItemError {
        BatchItemError {
            error: self.err(),
            whole_call: true,
        }
    }
}

impl BillingApi for Offline {
    fn get_customer<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn create_customer<'a>(&'a self, _: &'a str, _: &'a Fields) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn update_customer<'a>(&'a self, _: &'a str, _: &'a str, _: &'a Fields) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn customers_by_email<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ConnResult<Vec<RemoteRecord>>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn list_customers<'a>(&'a self, _: Option<&'a str>) -> BoxFuture<'a, ConnResult<ListPage>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn list_events<'a>(&'a self, _: i64, _: i64, _: Option<&'a str>) -> BoxFuture<'a, ConnResult<EventPage>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn customers_by_metadata<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, ConnResult<Vec<RemoteRecord>>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn subscription_summary<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn invoice_summary<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn change_plan<'a>(&'a self, _: &'a str, _: &'a str, _: &'a Fields) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move { Err(self.err()) })
    }
}

impl CrmApi for Offline {
    fn get_record<'a>(
        &'a self,
        _: CrmObject,
        _: &'a str,
        _: &'a [String],
    ) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn update_record<'a>(&'a self, _: CrmObject, _: &'a str, _: &'a Fields) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn list_records<'a>(
        &'a self,
        _: CrmObject,
        _: &'a [String],
        _: Option<&'a str>,
    ) -> BoxFuture<'a, ConnResult<ListPage>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn search_modified<'a>(&'a self, _: ModifiedSearch<'a>) -> BoxFuture<'a, ConnResult<SearchPage>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn ensure_properties<'a>(&'a self, _: &'a [PropertyDef]) -> BoxFuture<'a, ConnResult<Vec<String>>> {
        Box::pin(async move { Err(self.err()) })
    }
    fn batch_read<'a>(
        &'a self,
        _: CrmObject,
        ids: &'a [String],
        _: &'a [String],
    ) -> BoxFuture<'a, Vec<BatchItem<Option<RemoteRecord>>>> {
        Box::pin(async move { ids.iter().map(|_| Err(self.whole_call())).collect() })
    }
    fn batch_update<'a>(
        &'a self,
        _: CrmObject,
        inputs: &'a [BatchUpdate],
    ) -> BoxFuture<'a, Vec<BatchItem<RemoteRecord>>> {
        Box::pin(async move { inputs.iter().map(|_| Err(self.whole_call())).collect() })
    }
    fn batch_upsert<'a>(
        &'a self,
        _: CrmObject,
        inputs: &'a [BatchUpsert],
    ) -> BoxFuture<'a, Vec<BatchItem<(RemoteRecord, bool)>>> {
        Box::pin(async move { inputs.iter().map(|_| Err(self.whole_call())).collect() })
    }
}
