//! HubSpot CRM v3-compatible simulator: contacts and companies (single, batch, search), the
//! properties API per object type, HubSpot's error shapes and v3-signed webhooks. One generic
//! record store serves both object types; `Kind` holds what differs between them.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};

use super::clock::iso_ms;
use super::webhooks::Payload;
use super::{Api, Core, LoggedRequest, Outcome, Reply, Req, SimError};

const PORTAL_ID: u64 = 62515;
const APP_ID: u64 = 1160452;
const SUB_CREATION: u64 = 2_000_001;
const SUB_PROPERTY_CHANGE: u64 = 2_000_002;
const SUB_COMPANY_CREATION: u64 = 2_000_003;
const SUB_COMPANY_PROPERTY_CHANGE: u64 = 2_000_004;
const MAX_BATCH: usize = 100;
const MAX_SEARCH_LIMIT: usize = 200;
const MAX_SEARCH_RESULTS: usize = 10_000;
const SEARCHES_PER_SECOND: usize = 4;
const CONTACTS: &str = "/crm/v3/objects/contacts";
const COMPANIES: &str = "/crm/v3/objects/companies";
const DEFAULT_PROPS: [&str; 6] = [
    "email",
    "firstname",
    "lastname",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
];
const COMPANY_DEFAULT_PROPS: [&str; 5] = ["name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"];
const LIFECYCLE: [&str; 8] = [
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
];

/// Handle to the CRM simulator. Cheap to clone.
#[derive(Clone)]
pub struct CrmSim {
    inner: Arc<Crm>,
}

pub(crate) struct Crm {
    core: Core,
    token: String,
    secret: String,
    state: Mutex<State>,
}

struct State {
    contacts: Store,
    companies: Store,
    target: Option<String>,
    next_event: u64,
    /// Search results reachable by paging (HubSpot: 10,000; smaller in tests).
    search_cap: usize,
    /// Search requests allowed per second (HubSpot: 4); `None` = unlimited.
    search_rate: Option<usize>,
    recent_searches: std::collections::VecDeque<std::time::Instant>,
}

/// The records and property definitions of one object type.
struct Store {
    records: BTreeMap<u64, Record>,
    next_id: u64,
    props: BTreeMap<String, Value>,
}

impl State {
    fn store(&self, kind: Kind) -> &Store {
        match kind {
            Kind::Contact => &self.contacts,
            Kind::Company => &self.companies,
        }
    }

    fn store_mut(&mut self, kind: Kind) -> &mut Store {
        match kind {
            Kind::Contact => &mut self.contacts,
            Kind::Company => &mut self.companies,
        }
    }
}

/// A CRM object type and what differs between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Contact,
    Company,
}

impl Kind {
    /// `contacts` / `companies` (or their object type ids `0-1` / `0-2`) in a URL.
    fn from_segment(s: &str) -> Option<Kind> {
        match s {
            "contacts" | "contact" | "0-1" => Some(Kind::Contact),
            "companies" | "company" | "0-2" => Some(Kind::Company),
            _ => None,
        }
    }

    /// The webhook `subscriptionType` prefix.
    fn name(self) -> &'static str {
        match self {
            Kind::Contact => "contact",
            Kind::Company => "company",
        }
    }

    fn upper(self) -> &'static str {
        match self {
            Kind::Contact => "CONTACT",
            Kind::Company => "COMPANY",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Contact => CONTACTS,
            Kind::Company => COMPANIES,
        }
    }

    /// The last-modified property: contacts use `lastmodifieddate`, companies
    /// `hs_lastmodifieddate`.
    fn modified_prop(self) -> &'static str {
        match self {
            Kind::Contact => "lastmodifieddate",
            Kind::Company => "hs_lastmodifieddate",
        }
    }

    /// Always returned, whatever properties were asked for.
    fn system_props(self) -> [&'static str; 3] {
        ["createdate", self.modified_prop(), "hs_object_id"]
    }

    fn default_props(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => &DEFAULT_PROPS,
            Kind::Company => &COMPANY_DEFAULT_PROPS,
        }
    }

    /// Properties the free-text search `query` looks in.
    fn query_props(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => &["email", "firstname", "lastname", "phone", "company"],
            Kind::Company => &["name", "domain", "website", "phone"],
        }
    }

    /// Webhook subscription ids: (creation, propertyChange).
    fn subscription_ids(self) -> (u64, u64) {
        match self {
            Kind::Contact => (SUB_CREATION, SUB_PROPERTY_CHANGE),
            Kind::Company => (SUB_COMPANY_CREATION, SUB_COMPANY_PROPERTY_CHANGE),
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::Contact => "contactinformation",
            Kind::Company => "companyinformation",
        }
    }

    fn new_store(self) -> Store {
        Store {
            records: BTreeMap::new(),
            next_id: match self {
                Kind::Contact => 1001,
                Kind::Company => 5_000_001,
            },
            props: standard_props(self),
        }
    }
}

#[derive(Clone)]
struct Record {
    kind: Kind,
    id: u64,
    props: BTreeMap<String, String>,
    created_ms: i64,
    updated_ms: i64,
}

/// Which properties to return.
enum Sel {
    Default,
    Named(Vec<String>),
    All,
}

/// Who made a change, for webhook `changeSource`.
#[derive(Clone, Copy)]
enum Source {
    Api,
    Ui,
}

type Changes = Vec<(String, Option<String>)>;

fn hs_err(status: u16, category: &str, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        json!({
            "status": "error", "message": message.into(),
            "correlationId": uuid::Uuid::new_v4().to_string(), "category": category,
        }),
    )
}

fn validation(message: impl Into<String>) -> Reply {
    hs_err(400, "VALIDATION_ERROR", message)
}

fn not_found() -> Reply {
    hs_err(404, "OBJECT_NOT_FOUND", "resource not found")
}

/// HubSpot's "Property values were not valid" error for a list of (property, code, message).
fn invalid_props(errs: &[(String, &str, String)]) -> Reply {
    let detail: Vec<Value> = errs
        .iter()
        .map(|(name, code, msg)| json!({ "isValid": false, "message": msg, "error": code, "name": name }))
        .collect();
    let mut r = validation(format!("Property values were not valid: {}", Value::from(detail)));
    r.body["errors"] = errs
        .iter()
        .map(|(name, code, msg)| json!({ "message": msg, "code": code, "context": { "propertyName": [name] } }))
        .collect::<Vec<_>>()
        .into();
    r
}

fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((l, d)) => !l.is_empty() && d.contains('.') && !d.starts_with('.') && !s.contains(char::is_whitespace),
        None => false,
    }
}

fn prop_def(name: &str, label: &str, typ: &str, field: &str, options: Value, hubspot: bool, read_only: bool) -> Value {
    json!({
        "name": name, "label": label, "type": typ, "fieldType": field, "groupName": "contactinformation",
        "description": "", "options": options, "displayOrder": -1, "calculated": false,
        "externalOptions": false, "hasUniqueValue": name == "email", "hidden": false,
        "hubspotDefined": hubspot, "formField": !read_only, "archived": false,
        "createdAt": "2020-01-01T00:00:00.000Z", "updatedAt": "2020-01-01T00:00:00.000Z",
        "modificationMetadata": { "archivable": !hubspot, "readOnlyDefinition": hubspot, "readOnlyValue": read_only },
    })
}

/// A batch result carries its input's `objectWriteTraceId`, as HubSpot's do.
fn with_trace(mut result: Value, trace: Option<Value>) -> Value {
    if let Some(t) = trace.filter(Value::is_string) {
        result["objectWriteTraceId"] = t;
    }
    result
}

fn standard_props(kind: Kind) -> BTreeMap<String, Value> {
    let text = |n: &str, l: &str| prop_def(n, l, "string", "text", json!([]), true, false);
    let number = |n: &str, l: &str| prop_def(n, l, "number", "number", json!([]), true, false);
    let stages: Vec<Value> = LIFECYCLE
        .iter()
        .enumerate()
        .map(|(i, s)| json!({ "label": s, "value": s, "displayOrder": i, "hidden": false }))
        .collect();
    let lifecycle = prop_def(
        "lifecyclestage",
        "Lifecycle Stage",
        "enumeration",
        "radio",
        stages.into(),
        true,
        false,
    );
    let mut defs = match kind {
        Kind::Contact => vec![
            text("email", "Email"),
            text("firstname", "First Name"),
            text("lastname", "Last Name"),
            text("phone", "Phone Number"),
            text("company", "Company Name"),
        ],
        Kind::Company => vec![
            text("name", "Name"),
            text("domain", "Company Domain Name"),
            text("website", "Website URL"),
            text("phone", "Phone Number"),
            text("city", "City"),
            text("description", "Description"),
            number("numberofemployees", "Number of Employees"),
            number("annualrevenue", "Annual Revenue"),
        ],
    };
    defs.extend([
        lifecycle,
        prop_def("createdate", "Create Date", "datetime", "date", json!([]), true, true),
        prop_def(
            kind.modified_prop(),
            "Last Modified Date",
            "datetime",
            "date",
            json!([]),
            true,
            true,
        ),
        prop_def("hs_object_id", "Record ID", "number", "number", json!([]), true, true),
    ]);
    defs.into_iter()
        .map(|mut d| {
            d["groupName"] = kind.group().into();
            (d["name"].as_str().unwrap_or_default().to_string(), d)
        })
        .collect()
}

impl Record {
    fn value(&self, name: &str) -> Option<String> {
        match name {
            "createdate" => Some(iso_ms(self.created_ms)),
            "hs_object_id" => Some(self.id.to_string()),
            n if n == self.kind.modified_prop() => Some(iso_ms(self.updated_ms)),
            _ => self.props.get(name).cloned(),
        }
    }

    fn to_json(&self, sel: &Sel) -> Value {
        let system = self.kind.system_props().map(str::to_string);
        let names: Vec<String> = match sel {
            Sel::Default => self.kind.default_props().iter().map(|s| s.to_string()).collect(),
            Sel::Named(v) => v.iter().cloned().chain(system).collect(),
            Sel::All => self.props.keys().cloned().chain(system).collect(),
        };
        let props: Map<String, Value> = names.into_iter().map(|n| (n.clone(), self.value(&n).into())).collect();
        json!({
            "id": self.id.to_string(), "properties": props, "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.updated_ms), "archived": false,
        })
    }
}

fn sel_from_query(req: &Req) -> Sel {
    let names: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "properties")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        Sel::Default
    } else {
        Sel::Named(names)
    }
}

fn sel_from_body(body: &Value) -> Sel {
    let names: Vec<String> = body["properties"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if names.is_empty() {
        Sel::Default
    } else {
        Sel::Named(names)
    }
}

/// Requested properties that do not exist are ignored, as HubSpot does.
fn known(sel: Sel, store: &Store) -> Sel {
    match sel {
        Sel::Named(v) => Sel::Named(v.into_iter().filter(|n| store.props.contains_key(n)).collect()),
        other => other,
    }
}

/// A `date` value as HubSpot stores it (`YYYY-MM-DD`): from that form, from epoch
/// milliseconds at midnight UTC, or from an ISO timestamp at midnight UTC.
fn normalize_date(v: &str) -> Result<String, String> {
    let v = v.trim();
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.format("%Y-%m-%d").to_string());
    }
    let ms = v
        .parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|d| d.timestamp_millis())
        })
        .ok_or_else(|| format!("{v} is not a valid date (use YYYY-MM-DD or epoch milliseconds)"))?;
    if ms.rem_euclid(86_400_000) != 0 {
        return Err(format!("{v} is not at midnight UTC; date values must be"));
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| format!("{v} is out of range"))
}

/// A `datetime` value as HubSpot returns it (ISO 8601 with milliseconds, UTC): from epoch
/// milliseconds, an ISO 8601 timestamp, or a `YYYY-MM-DD` date (midnight UTC).
fn normalize_datetime(v: &str) -> Result<String, String> {
    let v = v.trim();
    let ms = v
        .parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|d| d.timestamp_millis())
        })
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp_millis())
        })
        .ok_or_else(|| format!("{v} is not a valid datetime (use epoch milliseconds or ISO 8601)"))?;
    if chrono::DateTime::from_timestamp_millis(ms).is_none() {
        return Err(format!("{v} is out of range"));
    }
    Ok(iso_ms(ms))
}

/// Check a non-empty value against its property definition; returns the value as stored,
/// or `(error code, message)`.
fn check_value(kind: Kind, name: &str, def: &Value, v: &str) -> Result<String, (&'static str, String)> {
    match def["type"].as_str().unwrap_or("string") {
        "enumeration" => {
            let opts: Vec<&str> = def["options"]
                .as_array()
                .map(|a| a.iter().filter_map(|o| o["value"].as_str()).collect())
                .unwrap_or_default();
            if v.split(';').any(|part| !opts.contains(&part)) {
                return Err((
                    "INVALID_OPTION",
                    format!("{v} was not one of the allowed options: {}", opts.join(", ")),
                ));
            }
            Ok(v.to_string())
        }
        "number" => match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(v.trim().to_string()),
            _ => Err(("INVALID_INTEGER", format!("{v} is not a valid number"))),
        },
        "bool" => match v.trim().to_ascii_lowercase().as_str() {
            b @ ("true" | "false") => Ok(b.to_string()),
            _ => Err(("INVALID_BOOLEAN", format!("{v} is not a valid boolean"))),
        },
        "date" => normalize_date(v).map_err(|m| ("INVALID_DATE", m)),
        "datetime" => normalize_datetime(v).map_err(|m| ("INVALID_DATETIME", m)),
        _ if kind == Kind::Contact && name == "email" && !valid_email(v) => {
            Err(("INVALID_EMAIL", format!("Email address {v} is invalid")))
        }
        _ => Ok(v.to_string()),
    }
}

/// A filter value given as a JSON string, number or bool.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Compare as numbers (or timestamps, ISO or epoch ms) when both sides allow, else as
/// case-insensitive strings.
fn cmp_values(a: &str, b: &str) -> Ordering {
    let num = |s: &str| {
        let s = s.trim();
        s.parse::<f64>()
            .ok()
            .or_else(|| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|d| d.timestamp_millis() as f64)
            })
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|d| d.and_utc().timestamp_millis() as f64)
            })
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

struct Filter {
    prop: String,
    op: String,
    value: Option<String>,
    high: Option<String>,
    values: Vec<String>,
}

impl Filter {
    fn matches(&self, c: &Record) -> bool {
        let have = c.value(&self.prop);
        let want = self.value.as_deref().unwrap_or("");
        let cmp = |h: &str| cmp_values(h, want);
        let token = |h: &str| {
            let w = want.trim_matches('*').to_lowercase();
            h.to_lowercase()
                .split(|ch: char| !ch.is_alphanumeric() && ch != '@' && ch != '.')
                .any(|t| t.contains(&w))
                || h.to_lowercase().contains(&w)
        };
        match (self.op.as_str(), have.as_deref()) {
            ("HAS_PROPERTY", h) => h.is_some(),
            ("NOT_HAS_PROPERTY", h) => h.is_none(),
            ("NEQ", h) => h.is_none_or(|h| cmp(h) != Ordering::Equal),
            ("NOT_IN", h) => h.is_none_or(|h| !self.values.iter().any(|v| cmp_values(h, v) == Ordering::Equal)),
            ("NOT_CONTAINS_TOKEN", h) => h.is_none_or(|h| !token(h)),
            (_, None) => false,
            ("EQ", Some(h)) => cmp(h) == Ordering::Equal,
            ("GT", Some(h)) => cmp(h) == Ordering::Greater,
            ("GTE", Some(h)) => cmp(h) != Ordering::Less,
            ("LT", Some(h)) => cmp(h) == Ordering::Less,
            ("LTE", Some(h)) => cmp(h) != Ordering::Greater,
            ("BETWEEN", Some(h)) => {
                cmp(h) != Ordering::Less
                    && self
                        .high
                        .as_deref()
                        .is_some_and(|hi| cmp_values(h, hi) != Ordering::Greater)
            }
            ("IN", Some(h)) => self.values.iter().any(|v| cmp_values(h, v) == Ordering::Equal),
            ("CONTAINS_TOKEN", Some(h)) => token(h),
            _ => false,
        }
    }
}

const OPERATORS: [&str; 13] = [
    "EQ",
    "NEQ",
    "GT",
    "GTE",
    "LT",
    "LTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
];

impl CrmSim {
    pub(crate) fn new(core: Core, token: String, secret: String) -> CrmSim {
        let state = State {
            contacts: Kind::Contact.new_store(),
            companies: Kind::Company.new_store(),
            target: None,
            next_event: (chrono::Utc::now().timestamp_millis().max(0) as u64) * 1000,
            search_cap: MAX_SEARCH_RESULTS,
            search_rate: Some(SEARCHES_PER_SECOND),
            recent_searches: Default::default(),
        };
        let inner = Arc::new(Crm {
            core,
            token,
            secret,
            state: Mutex::new(state),
        });
        Core::serve(inner.clone());
        CrmSim { inner }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    pub fn base_url(&self) -> String {
        self.inner.core.base_url()
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    pub fn webhook_secret(&self) -> &str {
        &self.inner.secret
    }

    /// Where webhooks go (the HubSpot app's target URL).
    pub fn set_webhook_target(&self, url: &str) {
        self.inner.lock().target = Some(url.to_string());
    }

    /// A salesperson creates a contact in the UI (`changeSource: CRM_UI`). Unknown or
    /// invalid properties, and an email another contact already has, are dropped.
    pub fn create_contact(&self, props: &[(&str, &str)]) -> String {
        self.inner.ui_create(Kind::Contact, props)
    }

    /// A salesperson edits a contact in the UI (`changeSource: CRM_UI`).
    pub fn edit_contact(&self, id: &str, props: &[(&str, &str)]) -> Result<(), SimError> {
        self.inner.ui_edit(Kind::Contact, id, props)
    }

    /// Delete a contact outright with no event and no webhook: drift made behind the
    /// engine's back (reconciliation tests).
    pub fn remove_contact_silently(&self, id: &str) -> Result<(), SimError> {
        let mut st = self.inner.lock();
        let removed = id
            .parse::<u64>()
            .ok()
            .and_then(|n| st.store_mut(Kind::Contact).records.remove(&n));
        match removed {
            Some(_) => Ok(()),
            None => Err(SimError::UnknownRecord {
                kind: Kind::Contact.name(),
                id: id.into(),
            }),
        }
    }

    /// All contacts with every property set, oldest first.
    pub fn contacts(&self) -> Vec<Value> {
        self.inner.all(Kind::Contact)
    }

    /// A salesperson creates a company in the UI (`changeSource: CRM_UI`). Unknown or
    /// invalid properties are dropped.
    pub fn create_company(&self, props: &[(&str, &str)]) -> String {
        self.inner.ui_create(Kind::Company, props)
    }

    /// A salesperson edits a company in the UI (`changeSource: CRM_UI`).
    pub fn edit_company(&self, id: &str, props: &[(&str, &str)]) -> Result<(), SimError> {
        self.inner.ui_edit(Kind::Company, id, props)
    }

    /// All companies with every property set, oldest first.
    pub fn companies(&self) -> Vec<Value> {
        self.inner.all(Kind::Company)
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.inner.core.request_log()
    }

    pub fn suppress_webhooks(&self, on: bool) {
        self.inner.core.hooks.suppress(on);
    }

    pub fn set_faults(&self, f: super::FaultProfile) {
        self.inner.core.faults.set(f);
    }

    /// Re-deliver up to `n` recent webhooks (a storm).
    pub fn storm(&self, n: usize) {
        self.inner.core.hooks.storm(n);
    }

    /// How many search results paging can reach (HubSpot: 10,000); `after` at or past it is
    /// refused with 400.
    pub fn set_search_cap(&self, cap: usize) {
        self.inner.lock().search_cap = cap.max(1);
    }

    /// Search requests allowed per rolling second before 429 (HubSpot: 4); `None` = unlimited.
    pub fn set_search_rate_limit(&self, per_second: Option<usize>) {
        self.inner.lock().search_rate = per_second;
    }
}

impl Crm {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ui_create(&self, kind: Kind, props: &[(&str, &str)]) -> String {
        let mut st = self.lock();
        let changes = self.ui_changes(&st, kind, None, props);
        self.create(&mut st, kind, changes, Source::Ui).id.to_string()
    }

    fn ui_edit(&self, kind: Kind, id: &str, props: &[(&str, &str)]) -> Result<(), SimError> {
        let mut st = self.lock();
        let unknown = || SimError::UnknownRecord {
            kind: kind.name(),
            id: id.into(),
        };
        let num = id.parse::<u64>().map_err(|_| unknown())?;
        if !st.store(kind).records.contains_key(&num) {
            return Err(unknown());
        }
        let obj: Map<String, Value> = props.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        let changes = self.validate(&st, kind, &Value::Object(obj), Some(num)).map_err(|r| {
            SimError::InvalidEdit(r.body["message"].as_str().unwrap_or("invalid properties").to_string())
        })?;
        self.update(&mut st, kind, num, changes, Source::Ui);
        Ok(())
    }

    fn all(&self, kind: Kind) -> Vec<Value> {
        self.lock()
            .store(kind)
            .records
            .values()
            .map(|c| c.to_json(&Sel::All))
            .collect()
    }

    fn ui_changes(&self, st: &State, kind: Kind, id: Option<u64>, props: &[(&str, &str)]) -> Changes {
        let mut out = Changes::new();
        for (k, v) in props {
            let one = json!({ *k: v });
            match self.validate(st, kind, &one, id) {
                Ok(c) => out.extend(c),
                Err(r) => tracing::warn!(property = %k, error = %r.body["message"], "sim UI edit dropped"),
            }
        }
        out
    }

    fn email_owner(store: &Store, email: &str) -> Option<u64> {
        store
            .records
            .values()
            .find(|c| c.props.get("email").is_some_and(|e| e.eq_ignore_ascii_case(email)))
            .map(|c| c.id)
    }

    /// Validate a `properties` object for record `id` (None = new record).
    fn validate(&self, st: &State, kind: Kind, props: &Value, id: Option<u64>) -> Result<Changes, Reply> {
        let store = st.store(kind);
        let Some(obj) = props.as_object() else {
            return Err(validation("`properties` must be an object of property name to value"));
        };
        let mut errs: Vec<(String, &str, String)> = Vec::new();
        let mut out = Changes::new();
        for (name, raw) in obj {
            let Some(def) = store.props.get(name) else {
                errs.push((
                    name.clone(),
                    "PROPERTY_DOESNT_EXIST",
                    format!("Property \"{name}\" does not exist"),
                ));
                continue;
            };
            if def["modificationMetadata"]["readOnlyValue"] == true {
                errs.push((
                    name.clone(),
                    "READ_ONLY_VALUE",
                    format!("{name} is a read only property; its value cannot be set."),
                ));
                continue;
            }
            let value = match raw {
                Value::Null => None,
                Value::Array(_) | Value::Object(_) => {
                    errs.push((
                        name.clone(),
                        "INVALID_TYPE",
                        format!("{raw} is not a valid value for {name}"),
                    ));
                    continue;
                }
                v => scalar(v).filter(|s| !s.is_empty()),
            };
            let value = match value.map(|v| check_value(kind, name, def, &v)).transpose() {
                Ok(v) => v,
                Err((code, msg)) => {
                    errs.push((name.clone(), code, msg));
                    continue;
                }
            };
            let value = if kind == Kind::Contact && name == "email" {
                value.map(|v| v.to_lowercase())
            } else {
                value
            };
            out.push((name.clone(), value));
        }
        if !errs.is_empty() {
            return Err(invalid_props(&errs));
        }
        if kind == Kind::Contact {
            if let Some(Some(email)) = out.iter().find(|(k, _)| k == "email").map(|(_, v)| v) {
                if let Some(owner) = Self::email_owner(store, email).filter(|o| Some(*o) != id) {
                    return Err(hs_err(
                        409,
                        "CONFLICT",
                        format!("Contact already exists. Existing ID: {owner}"),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn event(&self, st: &mut State, kind: Kind, id: u64, prop: Option<(&str, &str)>, source: Source) -> Value {
        st.next_event += 1;
        let (change_source, source_id) = match source {
            Source::Api => ("INTEGRATION", APP_ID.to_string()),
            Source::Ui => ("CRM_UI", "userId:9870001".to_string()),
        };
        let (sub_creation, sub_change) = kind.subscription_ids();
        let subscription_type = match prop {
            Some(_) => format!("{}.propertyChange", kind.name()),
            None => format!("{}.creation", kind.name()),
        };
        let mut ev = json!({
            "eventId": st.next_event,
            "subscriptionId": if prop.is_some() { sub_change } else { sub_creation },
            "portalId": PORTAL_ID, "appId": APP_ID, "occurredAt": self.core.clock.now_ms(),
            "subscriptionType": subscription_type, "attemptNumber": 0, "objectId": id,
            "changeSource": change_source, "sourceId": source_id,
        });
        if let Some((name, value)) = prop {
            ev["propertyName"] = name.into();
            ev["propertyValue"] = value.into();
        }
        ev
    }

    fn send(&self, st: &State, events: Vec<Value>) {
        let Some(url) = &st.target else { return };
        for ev in events {
            self.core.hooks.enqueue(
                url,
                Payload::HubSpot {
                    secret: self.secret.clone(),
                    events: vec![ev],
                },
            );
        }
    }

    fn create(&self, st: &mut State, kind: Kind, changes: Changes, source: Source) -> Record {
        let now = self.core.clock.now_ms();
        let store = st.store_mut(kind);
        let id = store.next_id;
        store.next_id += 1;
        let props: BTreeMap<String, String> = changes.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let c = Record {
            kind,
            id,
            props,
            created_ms: now,
            updated_ms: now,
        };
        store.records.insert(id, c.clone());
        let mut events = vec![self.event(st, kind, id, None, source)];
        for (k, v) in &c.props {
            events.push(self.event(st, kind, id, Some((k, v)), source));
        }
        self.send(st, events);
        c
    }

    /// Apply changes; returns the record and whether anything changed.
    fn update(&self, st: &mut State, kind: Kind, id: u64, changes: Changes, source: Source) -> Option<(Record, bool)> {
        let now = self.core.clock.now_ms();
        let c = st.store_mut(kind).records.get_mut(&id)?;
        let mut changed = Vec::new();
        for (k, v) in changes {
            if c.props.get(&k) != v.as_ref() {
                match &v {
                    Some(v) => c.props.insert(k.clone(), v.clone()),
                    None => c.props.remove(&k),
                };
                changed.push((k, v.unwrap_or_default()));
            }
        }
        if !changed.is_empty() {
            c.updated_ms = now.max(c.updated_ms + 1);
        }
        let c = c.clone();
        let events: Vec<Value> = changed
            .iter()
            .map(|(k, v)| self.event(st, kind, id, Some((k, v)), source))
            .collect();
        self.send(st, events);
        Some((c, !changed.is_empty()))
    }

    /// Resolve `{id}` with an optional `idProperty` (e.g. email).
    fn resolve(store: &Store, kind: Kind, id: &str, id_property: Option<&str>) -> Option<u64> {
        match id_property {
            None | Some("hs_object_id") => id.parse::<u64>().ok().filter(|n| store.records.contains_key(n)),
            Some("email") if kind == Kind::Contact => Self::email_owner(store, id),
            Some(p) => store
                .records
                .values()
                .find(|c| c.props.get(p).map(String::as_str) == Some(id))
                .map(|c| c.id),
        }
    }

    fn batch_inputs(body: &Value) -> Result<&Vec<Value>, Reply> {
        let inputs = body["inputs"]
            .as_array()
            .ok_or_else(|| validation("`inputs` is required and must be an array"))?;
        if inputs.len() > MAX_BATCH {
            return Err(validation(format!(
                "Batch input must have at most {MAX_BATCH} inputs, got {}",
                inputs.len()
            )));
        }
        Ok(inputs)
    }

    fn batch_reply(status: u16, results: Vec<Value>, errors: Vec<Value>, started: i64, now: i64) -> Reply {
        let mut body = json!({
            "status": "COMPLETE", "results": results, "startedAt": iso_ms(started), "completedAt": iso_ms(now),
        });
        if !errors.is_empty() {
            body["numErrors"] = errors.len().into();
            body["errors"] = errors.into();
        }
        Reply::json(if body.get("errors").is_some() { 207 } else { status }, body)
    }

    fn missing_ids_error(kind: Kind, ids: Vec<String>) -> Value {
        json!({
            "status": "error", "category": "OBJECT_NOT_FOUND",
            "message": format!(
                "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                kind.upper()
            ),
            "context": { "ids": ids },
        })
    }

    fn route(&self, req: &Req) -> (Reply, bool) {
        let seg = req.segments();
        let body = || -> Result<Value, Reply> {
            serde_json::from_slice::<Value>(&req.body).map_err(|e| {
                validation(format!(
                    "Invalid input JSON on line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ))
            })
        };
        let no_route = || {
            hs_err(
                404,
                "OBJECT_NOT_FOUND",
                format!("No route for {} {}", req.method, req.path),
            )
        };
        let (kind, rest) = match &seg[..] {
            ["crm", "v3", "objects" | "properties", obj, rest @ ..] => match Kind::from_segment(obj) {
                Some(k) => (k, rest),
                None => return (no_route(), false),
            },
            _ => return (no_route(), false),
        };
        let properties_api = seg.get(2) == Some(&"properties");
        let mut st = self.lock();
        let now = self.core.clock.now_ms();
        let r: Result<(Reply, bool), Reply> = match (req.method.as_str(), properties_api, rest) {
            ("POST", false, []) => body().and_then(|b| {
                let changes = self.validate(&st, kind, &b["properties"], None)?;
                let c = self.create(&mut st, kind, changes, Source::Api);
                Ok((Reply::json(201, c.to_json(&Sel::All)), true))
            }),
            ("GET", false, []) => self.list(&st, kind, req).map(|r| (r, false)),
            ("GET", false, [id]) => {
                let store = st.store(kind);
                match Self::resolve(store, kind, id, req.query_param("idProperty")) {
                    Some(n) => Ok((
                        Reply::json(200, store.records[&n].to_json(&known(sel_from_query(req), store))),
                        false,
                    )),
                    None => Err(not_found()),
                }
            }
            ("PATCH", false, [id]) => body().and_then(|b| {
                let n = Self::resolve(st.store(kind), kind, id, req.query_param("idProperty")).ok_or_else(not_found)?;
                let changes = self.validate(&st, kind, &b["properties"], Some(n))?;
                let (c, changed) = self
                    .update(&mut st, kind, n, changes, Source::Api)
                    .ok_or_else(not_found)?;
                Ok((Reply::json(200, c.to_json(&Sel::All)), changed))
            }),
            ("POST", false, ["batch", op]) => body().and_then(|b| self.batch(&mut st, kind, op, &b, now)),
            ("POST", false, ["search"]) => {
                if Self::search_limited(&mut st) {
                    return (self.rate_limited(), false);
                }
                let cap = st.search_cap;
                body()
                    .and_then(|b| self.search(st.store(kind), kind, &b, cap))
                    .map(|r| (r, false))
            }
            ("GET", true, []) => {
                let all: Vec<&Value> = st.store(kind).props.values().collect();
                Ok((Reply::json(200, json!({ "results": all })), false))
            }
            ("GET", true, [name]) => st
                .store(kind)
                .props
                .get(*name)
                .map(|p| (Reply::json(200, p.clone()), false))
                .ok_or_else(not_found),
            ("POST", true, []) => body().and_then(|b| {
                let def = Self::new_property(&b, now)?;
                let name = def["name"].as_str().unwrap_or_default().to_string();
                let props = &mut st.store_mut(kind).props;
                if props.contains_key(&name) {
                    return Err(hs_err(
                        409,
                        "OBJECT_ALREADY_EXISTS",
                        format!("A property named '{name}' already exists."),
                    ));
                }
                props.insert(name, def.clone());
                Ok((Reply::json(201, def), true))
            }),
            ("PATCH", true, [name]) => body().and_then(|b| {
                let def = st.store_mut(kind).props.get_mut(*name).ok_or_else(not_found)?;
                Self::patch_property(def, &b, now)?;
                Ok((Reply::json(200, def.clone()), true))
            }),
            _ => Err(no_route()),
        };
        r.unwrap_or_else(|e| (e, false))
    }

    fn list(&self, st: &State, kind: Kind, req: &Req) -> Result<Reply, Reply> {
        let limit = match req.query_param("limit").map(str::parse::<usize>) {
            None => 10,
            Some(Ok(n)) if (1..=100).contains(&n) => n,
            _ => return Err(validation("limit must be an integer between 1 and 100")),
        };
        let after = match req.query_param("after").map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(validation("after must be a paging cursor returned by a previous page")),
        };
        let store = st.store(kind);
        let sel = known(sel_from_query(req), store);
        let page: Vec<&Record> = store.records.range(after..).take(limit + 1).map(|(_, c)| c).collect();
        let mut body = json!({
            "results": page.iter().take(limit).map(|c| c.to_json(&sel)).collect::<Vec<_>>(),
        });
        if let Some(next) = page.get(limit) {
            body["paging"] = json!({ "next": {
                "after": next.id.to_string(),
                "link": format!("{}{}?after={}", self.core.base_url(), kind.path(), next.id),
            }});
        }
        Ok(Reply::json(200, body))
    }

    /// `PATCH /crm/v3/properties/{object}/{name}`: label, description, options, group.
    fn patch_property(def: &mut Value, b: &Value, now: i64) -> Result<(), Reply> {
        if def["modificationMetadata"]["readOnlyDefinition"] == true {
            return Err(validation(format!(
                "Property '{}' is HubSpot-defined; its definition cannot be changed",
                def["name"].as_str().unwrap_or_default()
            )));
        }
        if b.get("type").is_some_and(|t| *t != def["type"]) {
            return Err(validation("A property's type cannot be changed once it has values"));
        }
        if b.get("options").is_some_and(|o| !o.is_array()) {
            return Err(validation("`options` must be an array"));
        }
        for k in [
            "label",
            "description",
            "groupName",
            "fieldType",
            "options",
            "displayOrder",
            "hidden",
        ] {
            if let Some(v) = b.get(k) {
                def[k] = v.clone();
            }
        }
        def["updatedAt"] = iso_ms(now).into();
        Ok(())
    }

    fn new_property(b: &Value, now: i64) -> Result<Value, Reply> {
        let field = |k: &str| {
            b[k].as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| validation(format!("Property definition is missing required field `{k}`")))
        };
        let (name, label, typ, field_type, group) = (
            field("name")?,
            field("label")?,
            field("type")?,
            field("fieldType")?,
            field("groupName")?,
        );
        let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return Err(validation(format!(
                "Property name '{name}' is invalid: use lowercase letters, digits and underscores, starting with a letter"
            )));
        }
        if !["string", "number", "date", "datetime", "enumeration", "bool"].contains(&typ) {
            return Err(validation(format!("Property type '{typ}' is invalid")));
        }
        let options = b.get("options").cloned().unwrap_or_else(|| json!([]));
        if !options.is_array() {
            return Err(validation("`options` must be an array"));
        }
        let mut def = prop_def(name, label, typ, field_type, options, false, false);
        def["groupName"] = group.into();
        def["description"] = b["description"].as_str().unwrap_or("").into();
        def["hasUniqueValue"] = b["hasUniqueValue"].as_bool().unwrap_or(false).into();
        def["createdAt"] = iso_ms(now).into();
        def["updatedAt"] = iso_ms(now).into();
        Ok(def)
    }

    fn batch(&self, st: &mut State, kind: Kind, op: &str, b: &Value, started: i64) -> Result<(Reply, bool), Reply> {
        let inputs = Self::batch_inputs(b)?;
        let now = self.core.clock.now_ms();
        let id_of = |i: &Value| scalar(&i["id"]).ok_or_else(|| validation("each input needs an `id`"));
        let mut seen = std::collections::HashSet::new();
        match op {
            "read" => {
                let store = st.store(kind);
                let sel = known(sel_from_body(b), store);
                let id_prop = b["idProperty"].as_str();
                let (mut results, mut missing) = (Vec::new(), Vec::new());
                for i in inputs {
                    let id = id_of(i)?;
                    match Self::resolve(store, kind, &id, id_prop) {
                        Some(n) => results.push(store.records[&n].to_json(&sel)),
                        None => missing.push(id),
                    }
                }
                let errors = if missing.is_empty() {
                    vec![]
                } else {
                    vec![Self::missing_ids_error(kind, missing)]
                };
                Ok((Self::batch_reply(200, results, errors, started, now), false))
            }
            "create" => {
                let mut all = Vec::new();
                for i in inputs {
                    let changes = self.validate(st, kind, &i["properties"], None)?;
                    let email = changes.iter().find(|(k, _)| kind == Kind::Contact && k == "email");
                    if let Some((_, Some(e))) = email {
                        if !seen.insert(e.clone()) {
                            return Err(hs_err(409, "CONFLICT", format!("Duplicate email in batch input: {e}")));
                        }
                    }
                    all.push(changes);
                }
                let results: Vec<Value> = all
                    .into_iter()
                    .map(|c| self.create(st, kind, c, Source::Api).to_json(&Sel::All))
                    .collect();
                let applied = !results.is_empty();
                Ok((Self::batch_reply(201, results, vec![], started, now), applied))
            }
            "update" => {
                let mut plan = Vec::new();
                let mut missing = Vec::new();
                for i in inputs {
                    let id = id_of(i)?;
                    if !seen.insert(id.clone()) {
                        return Err(validation(format!("Duplicate IDs found in batch input: [{id}]")));
                    }
                    match Self::resolve(st.store(kind), kind, &id, i["idProperty"].as_str()) {
                        Some(n) => plan.push((
                            n,
                            self.validate(st, kind, &i["properties"], Some(n))?,
                            i.get("objectWriteTraceId").cloned(),
                        )),
                        None => missing.push(id),
                    }
                }
                let mut applied = false;
                let results: Vec<Value> = plan
                    .into_iter()
                    .filter_map(|(n, ch, trace)| Some((self.update(st, kind, n, ch, Source::Api)?, trace)))
                    .map(|((c, changed), trace)| {
                        applied |= changed;
                        with_trace(c.to_json(&Sel::All), trace)
                    })
                    .collect();
                let errors = if missing.is_empty() {
                    vec![]
                } else {
                    vec![Self::missing_ids_error(kind, missing)]
                };
                Ok((Self::batch_reply(200, results, errors, started, now), applied))
            }
            "upsert" => {
                let mut plan = Vec::new();
                for i in inputs {
                    let id = id_of(i)?;
                    let id_prop = i["idProperty"].as_str().unwrap_or("hs_object_id");
                    let unique = st
                        .store(kind)
                        .props
                        .get(id_prop)
                        .is_some_and(|d| d["hasUniqueValue"] == true);
                    if !unique {
                        return Err(validation(format!(
                            "idProperty '{id_prop}' must be a property with unique values (e.g. email)"
                        )));
                    }
                    let key = if kind == Kind::Contact && id_prop == "email" {
                        id.to_lowercase()
                    } else {
                        id.clone()
                    };
                    if !seen.insert(key.clone()) {
                        return Err(validation(format!("Duplicate IDs found in batch input: [{id}]")));
                    }
                    let existing = Self::resolve(st.store(kind), kind, &key, Some(id_prop));
                    let mut changes = self.validate(st, kind, &i["properties"], existing)?;
                    if existing.is_none() && !changes.iter().any(|(k, _)| k == id_prop) {
                        changes.push((id_prop.to_string(), Some(key)));
                    }
                    plan.push((existing, changes, i.get("objectWriteTraceId").cloned()));
                }
                let mut applied = false;
                let mut results = Vec::new();
                for (existing, changes, trace) in plan {
                    let (c, is_new) = match existing {
                        Some(n) => match self.update(st, kind, n, changes, Source::Api) {
                            Some((c, changed)) => {
                                applied |= changed;
                                (c, false)
                            }
                            None => continue,
                        },
                        None => {
                            applied = true;
                            (self.create(st, kind, changes, Source::Api), true)
                        }
                    };
                    let mut j = with_trace(c.to_json(&Sel::All), trace);
                    j["new"] = is_new.into();
                    results.push(j);
                }
                Ok((Self::batch_reply(200, results, vec![], started, now), applied))
            }
            _ => Err(hs_err(
                404,
                "OBJECT_NOT_FOUND",
                format!("Unknown batch operation `{op}`"),
            )),
        }
    }

    /// The search endpoints' own limit: `search_rate` requests per rolling second.
    fn search_limited(st: &mut State) -> bool {
        let Some(rate) = st.search_rate else {
            return false;
        };
        let now = std::time::Instant::now();
        while st
            .recent_searches
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1))
        {
            st.recent_searches.pop_front();
        }
        if st.recent_searches.len() >= rate {
            return true;
        }
        st.recent_searches.push_back(now);
        false
    }

    fn search(&self, store: &Store, kind: Kind, b: &Value, cap: usize) -> Result<Reply, Reply> {
        let limit = match &b["limit"] {
            Value::Null => 10,
            v => match v.as_u64() {
                Some(n) if (n as usize) <= MAX_SEARCH_LIMIT => n as usize,
                _ => {
                    return Err(validation(format!(
                        "limit must be an integer at most {MAX_SEARCH_LIMIT}, got {v}"
                    )))
                }
            },
        };
        let offset = match scalar(&b["after"]) {
            None => 0,
            Some(a) if a.is_empty() => 0,
            Some(a) => a
                .parse::<usize>()
                .map_err(|_| validation(format!("invalid paging cursor `after`: {a}")))?,
        };
        if offset >= cap {
            return Err(validation(format!(
                "after must be less than {cap}; narrow the search instead"
            )));
        }
        let groups = b["filterGroups"].as_array().cloned().unwrap_or_default();
        if groups.len() > 5 {
            return Err(validation("At most 5 filterGroups are allowed"));
        }
        let mut parsed: Vec<Vec<Filter>> = Vec::new();
        for g in &groups {
            let filters = g["filters"].as_array().cloned().unwrap_or_default();
            if filters.len() > 6 {
                return Err(validation("At most 6 filters per filterGroup are allowed"));
            }
            let mut out = Vec::new();
            for f in filters {
                let prop = f["propertyName"].as_str().unwrap_or_default().to_string();
                let op = f["operator"].as_str().unwrap_or_default().to_string();
                if !store.props.contains_key(&prop) {
                    return Err(validation(format!(
                        "There was a problem with the request. Property '{prop}' does not exist"
                    )));
                }
                if !OPERATORS.contains(&op.as_str()) {
                    return Err(validation(format!("Unknown filter operator '{op}'")));
                }
                let values: Vec<String> = f["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(scalar).collect())
                    .unwrap_or_default();
                out.push(Filter {
                    prop,
                    op,
                    value: scalar(&f["value"]),
                    high: scalar(&f["highValue"]),
                    values,
                });
            }
            parsed.push(out);
        }
        let query = b["query"].as_str().map(str::to_lowercase).filter(|q| !q.is_empty());
        let mut hits: Vec<&Record> = store
            .records
            .values()
            .filter(|c| parsed.is_empty() || parsed.iter().any(|g| g.iter().all(|f| f.matches(c))))
            .filter(|c| {
                query.as_ref().is_none_or(|q| {
                    kind.query_props()
                        .iter()
                        .any(|p| c.props.get(*p).is_some_and(|v| v.to_lowercase().contains(q.as_str())))
                })
            })
            .collect();
        let sorts: Vec<(String, bool)> = b["sorts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| match s {
                        Value::String(s) => Some(match s.strip_prefix('-') {
                            Some(p) => (p.to_string(), true),
                            None => (s.clone(), false),
                        }),
                        o => Some((o["propertyName"].as_str()?.to_string(), o["direction"] == "DESCENDING")),
                    })
                    .collect()
            })
            .unwrap_or_default();
        hits.sort_by(|x, y| {
            for (p, desc) in &sorts {
                let o = match (x.value(p), y.value(p)) {
                    (Some(a), Some(b)) => cmp_values(&a, &b),
                    (a, b) => a.is_some().cmp(&b.is_some()).reverse(),
                };
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.id.cmp(&y.id)
        });
        let sel = known(sel_from_body(b), store);
        let results: Vec<Value> = hits.iter().skip(offset).take(limit).map(|c| c.to_json(&sel)).collect();
        let mut body = json!({ "total": hits.len(), "results": results });
        let next = offset + limit;
        if next < hits.len() && next < cap && limit > 0 {
            body["paging"] = json!({ "next": { "after": next.to_string() } });
        }
        Ok(Reply::json(200, body))
    }
}

impl Api for Crm {
    fn core(&self) -> &Core {
        &self.core
    }

    fn authorized(&self, req: &Req) -> bool {
        req.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == self.token)
    }

    fn unauthorized(&self) -> Reply {
        hs_err(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        )
    }

    fn is_mutating(&self, req: &Req) -> bool {
        let p = req.path.trim_end_matches('/');
        match req.method.as_str() {
            "PATCH" | "DELETE" => true,
            "POST" => !(p.ends_with("/search") || p.ends_with("/batch/read")),
            _ => false,
        }
    }

    fn rate_limited(&self) -> Reply {
        Reply::json(
            429,
            json!({
                "status": "error", "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT", "correlationId": uuid::Uuid::new_v4().to_string(),
                "policyName": "SECONDLY", "groupName": "publicapi:private-app:secondly",
            }),
        )
        .with_header("Retry-After", "1")
        .with_header("X-HubSpot-RateLimit-Secondly-Remaining", "0")
    }

    fn quota_shape(&self) -> super::faults::QuotaShape {
        super::faults::QuotaShape::Rolling { window_ms: 10_000 }
    }

    /// HubSpot's 429 for the ten-second rolling limit (no `Retry-After`: clients pace from
    /// the `X-HubSpot-RateLimit-*` headers).
    fn over_quota(&self, _q: &super::faults::QuotaAnswer) -> Reply {
        Reply::json(
            429,
            json!({
                "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT", "correlationId": uuid::Uuid::new_v4().to_string(),
                "policyName": "TEN_SECONDLY_ROLLING", "groupName": "publicapi:private-app:ten_secondly_rolling",
            }),
        )
    }

    fn quota_headers(&self, q: &super::faults::QuotaAnswer) -> Vec<(&'static str, String)> {
        vec![
            ("X-HubSpot-RateLimit-Max", q.max.to_string()),
            ("X-HubSpot-RateLimit-Remaining", q.remaining.to_string()),
            ("X-HubSpot-RateLimit-Interval-Milliseconds", q.interval_ms.to_string()),
            ("X-HubSpot-RateLimit-Daily", q.daily.to_string()),
            ("X-HubSpot-RateLimit-Daily-Remaining", q.daily_remaining.to_string()),
        ]
    }

    fn server_error(&self, status: u16) -> Reply {
        hs_err(status, "INTERNAL_ERROR", "Internal error (simulated)")
    }

    fn handle(&self, req: &Req) -> Outcome {
        let correlation_id = serde_json::from_slice::<Value>(&req.body).ok().and_then(|b| {
            let mut ids: Vec<String> = std::iter::once(&b)
                .chain(b["inputs"].as_array().into_iter().flatten())
                .filter_map(|v| v["properties"]["driftless_correlation_id"].as_str().map(str::to_string))
                .collect();
            ids.dedup();
            (!ids.is_empty()).then(|| ids.join(","))
        });
        let (reply, applied) = self.route(req);
        Outcome {
            reply,
            applied,
            idempotency_key: None,
            replayed: false,
            correlation_id,
        }
    }

    fn admin(&self, req: &Req) -> Option<Reply> {
        if (req.method.as_str(), req.path.as_str()) != ("POST", "/_sim/webhook_target") {
            return None;
        }
        let url = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_string));
        Some(match url {
            Some(u) => {
                self.lock().target = Some(u);
                Reply::json(200, json!({ "ok": true }))
            }
            None => Reply::json(400, json!({ "error": "expected {\"url\": \"…\"}" })),
        })
    }

    fn state_json(&self) -> Value {
        let st = self.lock();
        let records = |k: Kind| -> Vec<Value> { st.store(k).records.values().map(|c| c.to_json(&Sel::All)).collect() };
        let props = |k: Kind| -> Vec<&Value> { st.store(k).props.values().collect() };
        json!({
            "contacts": records(Kind::Contact), "properties": props(Kind::Contact),
            "companies": records(Kind::Company), "company_properties": props(Kind::Company),
            "webhook_target": st.target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_comparison() {
        assert_eq!(cmp_values("10", "9"), Ordering::Greater);
        assert_eq!(cmp_values("A@x.com", "a@X.com"), Ordering::Equal);
        assert_eq!(cmp_values("2024-01-01T00:00:00.000Z", "1704067200000"), Ordering::Equal);
        assert_eq!(
            cmp_values("2024-01-01T00:00:01.000Z", "1704067200000"),
            Ordering::Greater
        );
    }

    #[test]
    fn filters() {
        let c = Record {
            kind: Kind::Contact,
            id: 5,
            props: [("email".to_string(), "a@b.co".to_string())].into(),
            created_ms: 1000,
            updated_ms: 2000,
        };
        let f = |op: &str, prop: &str, v: Option<&str>| Filter {
            prop: prop.into(),
            op: op.into(),
            value: v.map(str::to_string),
            high: None,
            values: vec!["x@y.z".into(), "A@B.CO".into()],
        };
        assert!(f("EQ", "email", Some("A@b.co")).matches(&c));
        assert!(f("HAS_PROPERTY", "email", None).matches(&c));
        assert!(f("NOT_HAS_PROPERTY", "firstname", None).matches(&c));
        assert!(f("NEQ", "firstname", Some("x")).matches(&c));
        assert!(f("GT", "lastmodifieddate", Some("1999")).matches(&c));
        assert!(!f("GT", "lastmodifieddate", Some("2000")).matches(&c));
        assert!(f("IN", "email", None).matches(&c));
        assert!(!f("LT", "firstname", Some("z")).matches(&c));
    }
}
