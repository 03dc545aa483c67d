//! HubSpot CRM v3-compatible simulator: contacts (single, batch, search), the properties
//! API, HubSpot's error shapes and v3-signed webhooks.

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
const MAX_BATCH: usize = 100;
const MAX_SEARCH_LIMIT: usize = 200;
const MAX_SEARCH_RESULTS: usize = 10_000;
const CONTACTS: &str = "/crm/v3/objects/contacts";
const SYSTEM_PROPS: [&str; 3] = ["createdate", "lastmodifieddate", "hs_object_id"];
const DEFAULT_PROPS: [&str; 6] = [
    "email",
    "firstname",
    "lastname",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
];
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
    contacts: BTreeMap<u64, Contact>,
    next_id: u64,
    props: BTreeMap<String, Value>,
    target: Option<String>,
    next_event: u64,
}

#[derive(Clone)]
struct Contact {
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

fn standard_props() -> BTreeMap<String, Value> {
    let text = |n: &str, l: &str| prop_def(n, l, "string", "text", json!([]), true, false);
    let stages: Vec<Value> = LIFECYCLE
        .iter()
        .enumerate()
        .map(|(i, s)| json!({ "label": s, "value": s, "displayOrder": i, "hidden": false }))
        .collect();
    let defs = vec![
        text("email", "Email"),
        text("firstname", "First Name"),
        text("lastname", "Last Name"),
        text("phone", "Phone Number"),
        text("company", "Company Name"),
        prop_def(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            stages.into(),
            true,
            false,
        ),
        prop_def("createdate", "Create Date", "datetime", "date", json!([]), true, true),
        prop_def(
            "lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            json!([]),
            true,
            true,
        ),
        prop_def("hs_object_id", "Record ID", "number", "number", json!([]), true, true),
    ];
    defs.into_iter()
        .map(|d| (d["name"].as_str().unwrap_or_default().to_string(), d))
        .collect()
}

impl Contact {
    fn value(&self, name: &str) -> Option<String> {
        match name {
            "createdate" => Some(iso_ms(self.created_ms)),
            "lastmodifieddate" => Some(iso_ms(self.updated_ms)),
            "hs_object_id" => Some(self.id.to_string()),
            _ => self.props.get(name).cloned(),
        }
    }

    fn to_json(&self, sel: &Sel) -> Value {
        let names: Vec<String> = match sel {
            Sel::Default => DEFAULT_PROPS.iter().map(|s| s.to_string()).collect(),
            Sel::Named(v) => v
                .iter()
                .cloned()
                .chain(SYSTEM_PROPS.iter().map(|s| s.to_string()))
                .collect(),
            Sel::All => self
                .props
                .keys()
                .cloned()
                .chain(SYSTEM_PROPS.iter().map(|s| s.to_string()))
                .collect(),
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
fn known(sel: Sel, st: &State) -> Sel {
    match sel {
        Sel::Named(v) => Sel::Named(v.into_iter().filter(|n| st.props.contains_key(n)).collect()),
        other => other,
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
        s.trim().parse::<f64>().ok().or_else(|| {
            chrono::DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|d| d.timestamp_millis() as f64)
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
    fn matches(&self, c: &Contact) -> bool {
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
            ("NEQ", h) => h.map_or(true, |h| cmp(h) != Ordering::Equal),
            ("NOT_IN", h) => h.map_or(true, |h| {
                !self.values.iter().any(|v| cmp_values(h, v) == Ordering::Equal)
            }),
            ("NOT_CONTAINS_TOKEN", h) => h.map_or(true, |h| !token(h)),
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
            contacts: BTreeMap::new(),
            next_id: 1001,
            props: standard_props(),
            target: None,
            next_event: (chrono::Utc::now().timestamp_millis().max(0) as u64) * 1000,
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
        let mut st = self.inner.lock();
        let changes = self.inner.ui_changes(&st, None, props);
        self.inner.create(&mut st, changes, Source::Ui).id.to_string()
    }

    /// A salesperson edits a contact in the UI (`changeSource: CRM_UI`).
    pub fn edit_contact(&self, id: &str, props: &[(&str, &str)]) -> Result<(), SimError> {
        let mut st = self.inner.lock();
        let unknown = || SimError::UnknownRecord {
            kind: "contact",
            id: id.into(),
        };
        let num = id.parse::<u64>().map_err(|_| unknown())?;
        if !st.contacts.contains_key(&num) {
            return Err(unknown());
        }
        let obj: Map<String, Value> = props.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        let changes = self.inner.validate(&st, &Value::Object(obj), Some(num)).map_err(|r| {
            SimError::InvalidEdit(r.body["message"].as_str().unwrap_or("invalid properties").to_string())
        })?;
        self.inner.update(&mut st, num, changes, Source::Ui);
        Ok(())
    }

    /// All contacts with every property set, oldest first.
    pub fn contacts(&self) -> Vec<Value> {
        self.inner
            .lock()
            .contacts
            .values()
            .map(|c| c.to_json(&Sel::All))
            .collect()
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
}

impl Crm {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ui_changes(&self, st: &State, id: Option<u64>, props: &[(&str, &str)]) -> Changes {
        let mut out = Changes::new();
        for (k, v) in props {
            let one = json!({ *k: v });
            match self.validate(st, &one, id) {
                Ok(c) => out.extend(c),
                Err(r) => tracing::warn!(property = %k, error = %r.body["message"], "sim UI edit dropped"),
            }
        }
        out
    }

    fn email_owner(st: &State, email: &str) -> Option<u64> {
        st.contacts
            .values()
            .find(|c| c.props.get("email").is_some_and(|e| e.eq_ignore_ascii_case(email)))
            .map(|c| c.id)
    }

    /// Validate a `properties` object for contact `id` (None = new contact).
    fn validate(&self, st: &State, props: &Value, id: Option<u64>) -> Result<Changes, Reply> {
        let Some(obj) = props.as_object() else {
            return Err(validation("`properties` must be an object of property name to value"));
        };
        let mut errs: Vec<(String, &str, String)> = Vec::new();
        let mut out = Changes::new();
        for (name, raw) in obj {
            let Some(def) = st.props.get(name) else {
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
            if let Some(v) = &value {
                let bad = match def["type"].as_str().unwrap_or("string") {
                    "enumeration" => {
                        let opts: Vec<&str> = def["options"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|o| o["value"].as_str()).collect())
                            .unwrap_or_default();
                        v.split(';').any(|part| !opts.contains(&part)).then(|| {
                            (
                                "INVALID_OPTION",
                                format!("{v} was not one of the allowed options: {}", opts.join(", ")),
                            )
                        })
                    }
                    "number" => v
                        .parse::<f64>()
                        .is_err()
                        .then(|| ("INVALID_INTEGER", format!("{v} is not a valid number"))),
                    "bool" => (v != "true" && v != "false")
                        .then(|| ("INVALID_BOOLEAN", format!("{v} is not a valid boolean"))),
                    _ if name == "email" && !valid_email(v) => {
                        Some(("INVALID_EMAIL", format!("Email address {v} is invalid")))
                    }
                    _ => None,
                };
                if let Some((code, msg)) = bad {
                    errs.push((name.clone(), code, msg));
                    continue;
                }
            }
            let value = if name == "email" {
                value.map(|v| v.to_lowercase())
            } else {
                value
            };
            out.push((name.clone(), value));
        }
        if !errs.is_empty() {
            return Err(invalid_props(&errs));
        }
        if let Some(Some(email)) = out.iter().find(|(k, _)| k == "email").map(|(_, v)| v) {
            if let Some(owner) = Self::email_owner(st, email).filter(|o| Some(*o) != id) {
                return Err(hs_err(
                    409,
                    "CONFLICT",
                    format!("Contact already exists. Existing ID: {owner}"),
                ));
            }
        }
        Ok(out)
    }

    fn event(&self, st: &mut State, id: u64, kind: &str, prop: Option<(&str, &str)>, source: Source) -> Value {
        st.next_event += 1;
        let (change_source, source_id) = match source {
            Source::Api => ("INTEGRATION", APP_ID.to_string()),
            Source::Ui => ("CRM_UI", "userId:9870001".to_string()),
        };
        let mut ev = json!({
            "eventId": st.next_event,
            "subscriptionId": if prop.is_some() { SUB_PROPERTY_CHANGE } else { SUB_CREATION },
            "portalId": PORTAL_ID, "appId": APP_ID, "occurredAt": self.core.clock.now_ms(),
            "subscriptionType": kind, "attemptNumber": 0, "objectId": id,
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

    fn create(&self, st: &mut State, changes: Changes, source: Source) -> Contact {
        let id = st.next_id;
        st.next_id += 1;
        let now = self.core.clock.now_ms();
        let props: BTreeMap<String, String> = changes.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let c = Contact {
            id,
            props,
            created_ms: now,
            updated_ms: now,
        };
        st.contacts.insert(id, c.clone());
        let mut events = vec![self.event(st, id, "contact.creation", None, source)];
        for (k, v) in &c.props {
            events.push(self.event(st, id, "contact.propertyChange", Some((k, v)), source));
        }
        self.send(st, events);
        c
    }

    /// Apply changes; returns the contact and whether anything changed.
    fn update(&self, st: &mut State, id: u64, changes: Changes, source: Source) -> Option<(Contact, bool)> {
        let now = self.core.clock.now_ms();
        let c = st.contacts.get_mut(&id)?;
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
            .map(|(k, v)| self.event(st, id, "contact.propertyChange", Some((k, v)), source))
            .collect();
        self.send(st, events);
        Some((c, !changed.is_empty()))
    }

    /// Resolve `{id}` with an optional `idProperty` (e.g. email).
    fn resolve(st: &State, id: &str, id_property: Option<&str>) -> Option<u64> {
        match id_property {
            None | Some("hs_object_id") => id.parse::<u64>().ok().filter(|n| st.contacts.contains_key(n)),
            Some("email") => Self::email_owner(st, id),
            Some(p) => st
                .contacts
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

    fn missing_ids_error(ids: Vec<String>) -> Value {
        json!({
            "status": "error", "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
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
        let mut st = self.lock();
        let now = self.core.clock.now_ms();
        let r: Result<(Reply, bool), Reply> = match (req.method.as_str(), &seg[..]) {
            ("POST", ["crm", "v3", "objects", "contacts"]) => body().and_then(|b| {
                let changes = self.validate(&st, &b["properties"], None)?;
                let c = self.create(&mut st, changes, Source::Api);
                Ok((Reply::json(201, c.to_json(&Sel::All)), true))
            }),
            ("GET", ["crm", "v3", "objects", "contacts"]) => {
                let limit = match req.query_param("limit").map(str::parse::<usize>) {
                    None => Ok(10),
                    Some(Ok(n)) if (1..=100).contains(&n) => Ok(n),
                    _ => Err(validation("limit must be an integer between 1 and 100")),
                };
                let after = match req.query_param("after").map(str::parse::<u64>) {
                    None => Ok(0),
                    Some(Ok(n)) => Ok(n),
                    Some(Err(_)) => Err(validation("after must be a paging cursor returned by a previous page")),
                };
                limit.and_then(|limit| {
                    let after = after?;
                    let sel = known(sel_from_query(req), &st);
                    let page: Vec<&Contact> = st.contacts.range(after..).take(limit + 1).map(|(_, c)| c).collect();
                    let mut body = json!({
                        "results": page.iter().take(limit).map(|c| c.to_json(&sel)).collect::<Vec<_>>(),
                    });
                    if let Some(next) = page.get(limit) {
                        body["paging"] = json!({ "next": {
                            "after": next.id.to_string(),
                            "link": format!("{}{CONTACTS}?after={}", self.core.base_url(), next.id),
                        }});
                    }
                    Ok((Reply::json(200, body), false))
                })
            }
            ("GET", ["crm", "v3", "objects", "contacts", id]) => {
                match Self::resolve(&st, id, req.query_param("idProperty")) {
                    Some(n) => Ok((
                        Reply::json(200, st.contacts[&n].to_json(&known(sel_from_query(req), &st))),
                        false,
                    )),
                    None => Err(not_found()),
                }
            }
            ("PATCH", ["crm", "v3", "objects", "contacts", id]) => body().and_then(|b| {
                let n = Self::resolve(&st, id, req.query_param("idProperty")).ok_or_else(not_found)?;
                let changes = self.validate(&st, &b["properties"], Some(n))?;
                let (c, changed) = self.update(&mut st, n, changes, Source::Api).ok_or_else(not_found)?;
                Ok((Reply::json(200, c.to_json(&Sel::All)), changed))
            }),
            ("POST", ["crm", "v3", "objects", "contacts", "batch", op]) => {
                body().and_then(|b| self.batch(&mut st, op, &b, now))
            }
            ("POST", ["crm", "v3", "objects", "contacts", "search"]) => {
                body().and_then(|b| self.search(&st, &b)).map(|r| (r, false))
            }
            ("GET", ["crm", "v3", "properties", "contacts"]) => {
                let all: Vec<&Value> = st.props.values().collect();
                Ok((Reply::json(200, json!({ "results": all })), false))
            }
            ("GET", ["crm", "v3", "properties", "contacts", name]) => st
                .props
                .get(*name)
                .map(|p| (Reply::json(200, p.clone()), false))
                .ok_or_else(not_found),
            ("POST", ["crm", "v3", "properties", "contacts"]) => body().and_then(|b| {
                let def = Self::new_property(&b, now)?;
                let name = def["name"].as_str().unwrap_or_default().to_string();
                if st.props.contains_key(&name) {
                    return Err(hs_err(
                        409,
                        "OBJECT_ALREADY_EXISTS",
                        format!("A property named '{name}' already exists."),
                    ));
                }
                st.props.insert(name, def.clone());
                Ok((Reply::json(201, def), true))
            }),
            _ => Err(hs_err(
                404,
                "OBJECT_NOT_FOUND",
                format!("No route for {} {}", req.method, req.path),
            )),
        };
        r.unwrap_or_else(|e| (e, false))
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

    fn batch(&self, st: &mut State, op: &str, b: &Value, started: i64) -> Result<(Reply, bool), Reply> {
        let inputs = Self::batch_inputs(b)?;
        let now = self.core.clock.now_ms();
        let id_of = |i: &Value| scalar(&i["id"]).ok_or_else(|| validation("each input needs an `id`"));
        let mut seen = std::collections::HashSet::new();
        match op {
            "read" => {
                let sel = known(sel_from_body(b), st);
                let id_prop = b["idProperty"].as_str();
                let (mut results, mut missing) = (Vec::new(), Vec::new());
                for i in inputs {
                    let id = id_of(i)?;
                    match Self::resolve(st, &id, id_prop) {
                        Some(n) => results.push(st.contacts[&n].to_json(&sel)),
                        None => missing.push(id),
                    }
                }
                let errors = if missing.is_empty() {
                    vec![]
                } else {
                    vec![Self::missing_ids_error(missing)]
                };
                Ok((Self::batch_reply(200, results, errors, started, now), false))
            }
            "create" => {
                let mut all = Vec::new();
                for i in inputs {
                    let changes = self.validate(st, &i["properties"], None)?;
                    if let Some((_, Some(e))) = changes.iter().find(|(k, _)| k == "email") {
                        if !seen.insert(e.clone()) {
                            return Err(hs_err(409, "CONFLICT", format!("Duplicate email in batch input: {e}")));
                        }
                    }
                    all.push(changes);
                }
                let results: Vec<Value> = all
                    .into_iter()
                    .map(|c| self.create(st, c, Source::Api).to_json(&Sel::All))
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
                    match Self::resolve(st, &id, i["idProperty"].as_str()) {
                        Some(n) => plan.push((n, self.validate(st, &i["properties"], Some(n))?)),
                        None => missing.push(id),
                    }
                }
                let mut applied = false;
                let results: Vec<Value> = plan
                    .into_iter()
                    .filter_map(|(n, ch)| self.update(st, n, ch, Source::Api))
                    .map(|(c, changed)| {
                        applied |= changed;
                        c.to_json(&Sel::All)
                    })
                    .collect();
                let errors = if missing.is_empty() {
                    vec![]
                } else {
                    vec![Self::missing_ids_error(missing)]
                };
                Ok((Self::batch_reply(200, results, errors, started, now), applied))
            }
            "upsert" => {
                let mut plan = Vec::new();
                for i in inputs {
                    let id = id_of(i)?;
                    let id_prop = i["idProperty"].as_str().unwrap_or("hs_object_id");
                    let unique = st.props.get(id_prop).is_some_and(|d| d["hasUniqueValue"] == true);
                    if !unique {
                        return Err(validation(format!(
                            "idProperty '{id_prop}' must be a property with unique values (e.g. email)"
                        )));
                    }
                    let key = if id_prop == "email" {
                        id.to_lowercase()
                    } else {
                        id.clone()
                    };
                    if !seen.insert(key.clone()) {
                        return Err(validation(format!("Duplicate IDs found in batch input: [{id}]")));
                    }
                    let existing = Self::resolve(st, &key, Some(id_prop));
                    let mut changes = self.validate(st, &i["properties"], existing)?;
                    if existing.is_none() && !changes.iter().any(|(k, _)| k == id_prop) {
                        changes.push((id_prop.to_string(), Some(key)));
                    }
                    plan.push((existing, changes));
                }
                let mut applied = false;
                let mut results = Vec::new();
                for (existing, changes) in plan {
                    let (c, is_new) = match existing {
                        Some(n) => match self.update(st, n, changes, Source::Api) {
                            Some((c, changed)) => {
                                applied |= changed;
                                (c, false)
                            }
                            None => continue,
                        },
                        None => {
                            applied = true;
                            (self.create(st, changes, Source::Api), true)
                        }
                    };
                    let mut j = c.to_json(&Sel::All);
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

    fn search(&self, st: &State, b: &Value) -> Result<Reply, Reply> {
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
        if offset >= MAX_SEARCH_RESULTS {
            return Err(validation(format!(
                "after must be less than {MAX_SEARCH_RESULTS}; narrow the search instead"
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
                if !st.props.contains_key(&prop) {
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
        let mut hits: Vec<&Contact> = st
            .contacts
            .values()
            .filter(|c| parsed.is_empty() || parsed.iter().any(|g| g.iter().all(|f| f.matches(c))))
            .filter(|c| {
                query.as_ref().map_or(true, |q| {
                    ["email", "firstname", "lastname", "phone", "company"]
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
        let sel = known(sel_from_body(b), st);
        let results: Vec<Value> = hits.iter().skip(offset).take(limit).map(|c| c.to_json(&sel)).collect();
        let mut body = json!({ "total": hits.len(), "results": results });
        let next = offset + limit;
        if next < hits.len() && next < MAX_SEARCH_RESULTS && limit > 0 {
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
        let contacts: Vec<Value> = st.contacts.values().map(|c| c.to_json(&Sel::All)).collect();
        let props: Vec<&Value> = st.props.values().collect();
        json!({ "contacts": contacts, "properties": props, "webhook_target": st.target })
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
        let c = Contact {
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
