//! Stripe-compatible billing simulator: customers, events, webhook endpoints, search,
//! idempotency keys, form-encoded bodies and Stripe's error shapes. Prices, subscriptions,
//! invoices, credit notes and the billing cycle live in `subs`.

mod subs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::webhooks::Payload;
use super::{rand_id, Api, Core, LoggedRequest, Outcome, Reply, Req, SimError};

const API_VERSION: &str = "2024-06-20";
const IDEMPOTENCY_TTL_S: i64 = 24 * 3600;
const MAX_METADATA_KEYS: usize = 50;

/// Handle to the billing simulator. Cheap to clone.
#[derive(Clone)]
pub struct BillingSim {
    inner: Arc<Billing>,
}

pub(crate) struct Billing {
    core: Core,
    api_key: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    customers: HashMap<String, Value>,
    /// Customer ids in creation order.
    order: Vec<String>,
    /// Customers by email, in creation order (a number per customer): the list endpoint's
    /// `email=` filter looks them up instead of scanning every customer (Stripe indexes it;
    /// a scan made the simulator a sixth of the apply benchmark's CPU).
    by_email: HashMap<String, std::collections::BTreeMap<u64, String>>,
    /// Each customer's creation number, for `by_email`, and the next one.
    created_no: HashMap<String, u64>,
    next_no: u64,
    /// Events in creation order.
    events: Vec<Value>,
    endpoints: Vec<Endpoint>,
    idempotency: HashMap<String, Saved>,
    /// Prices, subscriptions, invoices, credit notes.
    ledger: subs::Ledger,
    /// How long events stay listable (Stripe: 30 days); `None` until set = 30 days.
    event_retention_s: Option<i64>,
}

impl State {
    /// Move customer `id` from `old` email to `new` in `by_email`.
    fn index_email(&mut self, id: &str, old: Option<&str>, new: Option<&str>) {
        let Some(&no) = self.created_no.get(id) else { return };
        if let Some(old) = old {
            if let Some(m) = self.by_email.get_mut(old) {
                m.remove(&no);
                if m.is_empty() {
                    self.by_email.remove(old);
                }
            }
        }
        if let Some(new) = new {
            self.by_email
                .entry(new.to_string())
                .or_default()
                .insert(no, id.to_string());
        }
    }
}

struct Endpoint {
    object: Value,
    url: String,
    secret: String,
    enabled: Vec<String>,
}

struct Saved {
    fingerprint: String,
    request_id: String,
    status: u16,
    body: Value,
    at_s: i64,
}

/// The request that caused a change: `(req_…, idempotency key)`; `None` id = dashboard.
type Cause = (Option<String>, Option<String>);

fn err(status: u16, typ: &str, code: Option<&str>, message: String, param: Option<&str>) -> Reply {
    Reply::json(
        status,
        json!({ "error": { "type": typ, "code": code, "message": message, "param": param } }),
    )
}

fn invalid(message: String, param: &str) -> Reply {
    err(
        400,
        "invalid_request_error",
        Some("parameter_invalid"),
        message,
        Some(param),
    )
}

fn missing(kind: &str, id: &str, param: &str) -> Reply {
    err(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        format!("No such {kind}: '{id}'"),
        Some(param),
    )
}

/// `a[b]` → `("a", Some("b"))`, `a[]` → `("a", Some(""))`, `a` → `("a", None)`.
fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('[') {
        Some((base, rest)) if rest.ends_with(']') => (base, Some(&rest[..rest.len() - 1])),
        _ => (key, None),
    }
}

/// Parameters accepted by customer create / update.
#[derive(Default)]
struct CustomerParams {
    scalars: Vec<(&'static str, Option<String>)>,
    clear_metadata: bool,
    metadata: Vec<(String, Option<String>)>,
}

fn parse_customer_params(pairs: &[(String, String)]) -> Result<CustomerParams, Reply> {
    let mut p = CustomerParams::default();
    for (key, val) in pairs {
        let (base, sub) = split_key(key);
        let scalar = ["email", "name", "description", "phone"]
            .into_iter()
            .find(|s| *s == base);
        match (base, sub, scalar) {
            (_, None, Some(field)) => {
                if field == "email" && !val.is_empty() && !valid_email(val) {
                    return Err(err(
                        400,
                        "invalid_request_error",
                        Some("email_invalid"),
                        format!("Invalid email address: {val}"),
                        Some("email"),
                    ));
                }
                p.scalars.retain(|(f, _)| *f != field);
                p.scalars.push((field, (!val.is_empty()).then(|| val.clone())));
            }
            (_, Some(_), Some(field)) => {
                return Err(invalid(format!("Invalid string: {key}={val}"), field));
            }
            ("metadata", sub, _) => parse_metadata(key, sub, val, &mut p.clear_metadata, &mut p.metadata)?,
            ("expand", Some(_), _) => {}
            _ => {
                return Err(err(
                    400,
                    "invalid_request_error",
                    Some("parameter_unknown"),
                    format!("Received unknown parameter: {key}"),
                    Some(key),
                ))
            }
        }
    }
    Ok(p)
}

/// One `metadata=` (clears all keys) or `metadata[k]=v` (an empty `v` deletes `k`) pair.
fn parse_metadata(
    key: &str,
    sub: Option<&str>,
    val: &str,
    clear: &mut bool,
    metadata: &mut Vec<(String, Option<String>)>,
) -> Result<(), Reply> {
    match sub {
        None if val.is_empty() => *clear = true,
        None => return Err(invalid("Invalid hash".into(), "metadata")),
        Some(k) => {
            if k.is_empty() || k.len() > 40 || k.contains(['[', ']']) {
                return Err(invalid(
                    format!("Invalid metadata key: '{k}' (1 to 40 characters)"),
                    key,
                ));
            }
            if val.len() > 500 {
                return Err(invalid("Metadata values can have up to 500 characters".into(), key));
            }
            metadata.retain(|(mk, _)| mk != k);
            metadata.push((k.to_string(), (!val.is_empty()).then(|| val.to_string())));
        }
    }
    Ok(())
}

/// Metadata after a change, and the previous values of the keys that changed.
type MetadataChange = (Map<String, Value>, Map<String, Value>);

/// Apply metadata changes to `old`: returns the new map and, for each changed key, its
/// previous value (`null` if it was absent), as `previous_attributes.metadata` shows it.
fn merge_metadata(
    old: &Map<String, Value>,
    clear: bool,
    changes: &[(String, Option<String>)],
) -> Result<MetadataChange, Reply> {
    let mut meta = if clear { Map::new() } else { old.clone() };
    for (k, v) in changes {
        match v {
            Some(v) => meta.insert(k.clone(), v.clone().into()),
            None => meta.remove(k),
        };
    }
    if meta.len() > MAX_METADATA_KEYS {
        return Err(invalid("Metadata can have up to 50 keys".into(), "metadata"));
    }
    let mut prev = Map::new();
    for k in old.keys().chain(meta.keys()) {
        if old.get(k) != meta.get(k) {
            prev.insert(k.clone(), old.get(k).cloned().unwrap_or(Value::Null));
        }
    }
    Ok((meta, prev))
}

fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn unknown_param(key: &str) -> Reply {
    err(
        400,
        "invalid_request_error",
        Some("parameter_unknown"),
        format!("Received unknown parameter: {key}"),
        Some(key),
    )
}

/// Check that every query key is one of `allowed` (or `expand[…]`, or `created[…]` when
/// `created` is allowed).
fn check_params(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), Reply> {
    for (key, _) in pairs {
        let (base, _) = split_key(key);
        if base != "expand" && !allowed.contains(&base) {
            return Err(unknown_param(key));
        }
    }
    Ok(())
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn parse_limit(pairs: &[(String, String)]) -> Result<usize, Reply> {
    match param(pairs, "limit") {
        None => Ok(10),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(invalid(
                format!("Invalid limit: must be an integer between 1 and 100, got '{v}'"),
                "limit",
            )),
        },
    }
}

/// `created=N` and `created[gt|gte|lt|lte]=N` filters.
fn created_filter(pairs: &[(String, String)]) -> Result<Vec<(String, i64)>, Reply> {
    let mut out = Vec::new();
    for (key, val) in pairs {
        let (base, sub) = split_key(key);
        if base != "created" {
            continue;
        }
        let op = sub.unwrap_or("eq");
        let n = val
            .parse::<i64>()
            .map_err(|_| invalid(format!("Invalid integer: {val}"), key))?;
        if !["eq", "gt", "gte", "lt", "lte"].contains(&op) {
            return Err(unknown_param(key));
        }
        out.push((op.to_string(), n));
    }
    Ok(out)
}

fn created_matches(filters: &[(String, i64)], obj: &Value) -> bool {
    let c = obj["created"].as_i64().unwrap_or(0);
    filters.iter().all(|(op, n)| match op.as_str() {
        "gt" => c > *n,
        "gte" => c >= *n,
        "lt" => c < *n,
        "lte" => c <= *n,
        _ => c == *n,
    })
}

/// Cursor pagination over newest-first `items`.
fn paginate(items: Vec<&Value>, pairs: &[(String, String)], kind: &str, url: &str) -> Result<Value, Reply> {
    let limit = parse_limit(pairs)?;
    let find = |param_name: &str, id: &str| {
        items.iter().position(|v| v["id"] == id).ok_or_else(|| {
            err(
                400,
                "invalid_request_error",
                Some("resource_missing"),
                format!("No such {kind}: '{id}'"),
                Some(param_name),
            )
        })
    };
    let (page, has_more): (Vec<&Value>, bool) = if let Some(id) = param(pairs, "starting_after") {
        let i = find("starting_after", id)?;
        let rest = &items[i + 1..];
        (rest.iter().take(limit).copied().collect(), rest.len() > limit)
    } else if let Some(id) = param(pairs, "ending_before") {
        let i = find("ending_before", id)?;
        let start = i.saturating_sub(limit);
        (items[start..i].to_vec(), start > 0)
    } else {
        (items.iter().take(limit).copied().collect(), items.len() > limit)
    };
    Ok(json!({ "object": "list", "data": page, "has_more": has_more, "url": url }))
}

// --- Search query language: `email:'x' AND metadata['k']:'v'` ---------------------------

#[derive(Debug, PartialEq)]
enum Clause {
    Field {
        field: String,
        substring: bool,
        value: String,
    },
    Meta {
        key: String,
        value: String,
    },
}

fn parse_search(q: &str) -> Result<Vec<Clause>, String> {
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    let quoted = |i: &mut usize| -> Result<String, String> {
        let quote = match chars.get(*i) {
            Some(&c @ ('\'' | '"')) => c,
            _ => return Err(format!("expected a quoted value at position {i}")),
        };
        *i += 1;
        let mut s = String::new();
        loop {
            match chars.get(*i) {
                None => return Err("unterminated quoted value".into()),
                Some('\\') => {
                    if let Some(&c) = chars.get(*i + 1) {
                        s.push(c);
                    }
                    *i += 2;
                }
                Some(&c) if c == quote => {
                    *i += 1;
                    return Ok(s);
                }
                Some(&c) => {
                    s.push(c);
                    *i += 1;
                }
            }
        }
    };
    let mut clauses = Vec::new();
    let mut conj: Option<bool> = None;
    while i <= chars.len() {
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
        let start = i;
        while chars.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
            i += 1;
        }
        let field: String = chars[start..i].iter().collect();
        let meta_key = if field == "metadata" && chars.get(i) == Some(&'[') {
            i += 1;
            let k = quoted(&mut i)?;
            if chars.get(i) != Some(&']') {
                return Err("expected `]` after metadata key".into());
            }
            i += 1;
            Some(k)
        } else {
            None
        };
        let substring = match chars.get(i) {
            Some(':') => false,
            Some('~') => true,
            _ => return Err(format!("expected `:` or `~` after `{field}`")),
        };
        i += 1;
        let value = quoted(&mut i)?;
        clauses.push(match meta_key {
            Some(key) if !substring => Clause::Meta { key, value },
            Some(_) => return Err("metadata supports only exact match `:`".into()),
            None if ["email", "name", "phone"].contains(&field.as_str()) => {
                if substring && value.chars().count() < 3 {
                    return Err("substring match needs at least 3 characters".into());
                }
                Clause::Field {
                    field,
                    substring,
                    value,
                }
            }
            None => return Err(format!("unsupported search field `{field}`")),
        });
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let word: String = chars[i..].iter().take(3).collect::<String>().to_ascii_uppercase();
        let is_and = if word == "AND" {
            i += 3;
            true
        } else if word.starts_with("OR") {
            i += 2;
            false
        } else {
            return Err(format!("expected AND or OR at position {i}"));
        };
        if conj.is_some_and(|c| c != is_and) {
            return Err("mixing AND and OR is not supported".into());
        }
        conj = Some(is_and);
    }
    if clauses.is_empty() {
        return Err("empty query".into());
    }
    if conj == Some(false) {
        // Encode OR as a marker: callers check `any` instead of `all`.
        clauses.push(Clause::Field {
            field: "__or".into(),
            substring: false,
            value: String::new(),
        });
    }
    Ok(clauses)
}

fn clause_matches(c: &Clause, cus: &Value) -> bool {
    match c {
        Clause::Meta { key, value } => cus["metadata"][key].as_str() == Some(value.as_str()),
        Clause::Field {
            field,
            substring,
            value,
        } => {
            let have = cus[field.as_str()].as_str().unwrap_or("").to_lowercase();
            let want = value.to_lowercase();
            if *substring {
                have.contains(&want)
            } else {
                have == want
            }
        }
    }
}

// --- The simulator ------------------------------------------------------------------------

impl BillingSim {
    pub(crate) fn new(core: Core, api_key: String) -> BillingSim {
        let ledger = subs::Ledger::new(core.seed, core.clock.now_s());
        let inner = Arc::new(Billing {
            core,
            api_key,
            state: Mutex::new(State {
                ledger,
                ..State::default()
            }),
        });
        Core::serve(inner.clone());
        BillingSim { inner }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    pub fn base_url(&self) -> String {
        self.inner.core.base_url()
    }

    pub fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    /// Register a webhook endpoint for all events; returns its `whsec_` signing secret.
    pub fn register_webhook(&self, url: &str) -> String {
        let mut st = self.inner.lock();
        self.inner.add_endpoint(&mut st, url, vec!["*".into()])["secret"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A "dashboard" edit by a human: emits `customer.updated` with `request.id = null`.
    /// Empty metadata values delete the key.
    pub fn edit_customer(&self, id: &str, email: Option<&str>, metadata: &[(&str, &str)]) -> Result<(), SimError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(e) = email {
            pairs.push(("email".into(), e.into()));
        }
        pairs.extend(metadata.iter().map(|(k, v)| (format!("metadata[{k}]"), v.to_string())));
        let params = parse_customer_params(&pairs)
            .map_err(|r| SimError::InvalidEdit(r.body["error"]["message"].as_str().unwrap_or("invalid").into()))?;
        let mut st = self.inner.lock();
        self.inner
            .update_customer(&mut st, id, &params, (None, None))
            .map(|_| ())
            .map_err(|_| SimError::UnknownRecord {
                kind: "customer",
                id: id.into(),
            })
    }

    /// Ids of the customers whose `metadata[key]` is set, oldest first (ids only: cheap at
    /// scale, for actors picking a record per edit).
    pub fn customer_ids_with_metadata(&self, key: &str) -> Vec<String> {
        let st = self.inner.lock();
        st.order
            .iter()
            .filter(|id| st.customers.get(*id).is_some_and(|c| c["metadata"][key].is_string()))
            .cloned()
            .collect()
    }

    /// Remove a customer outright with no event and no webhook: drift made behind the
    /// engine's back (reconciliation tests).
    pub fn remove_customer_silently(&self, id: &str) -> Result<(), SimError> {
        let mut st = self.inner.lock();
        let Some(gone) = st.customers.remove(id) else {
            return Err(SimError::UnknownRecord {
                kind: "customer",
                id: id.into(),
            });
        };
        st.order.retain(|x| x != id);
        st.index_email(id, gone["email"].as_str(), None);
        st.created_no.remove(id);
        Ok(())
    }

    /// All customers, full Stripe objects, oldest first.
    pub fn customers(&self) -> Vec<Value> {
        let st = self.inner.lock();
        st.order.iter().filter_map(|id| st.customers.get(id).cloned()).collect()
    }

    /// All events, oldest first.
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().events.clone()
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.inner.core.request_log()
    }

    pub fn suppress_webhooks(&self, on: bool) {
        self.inner.core.hooks.suppress(on);
    }

    /// Move the simulators' shared clock forward (expires idempotency keys after 24 h).
    pub fn advance_clock(&self, secs: i64) {
        self.inner.core.clock.advance(secs);
    }

    /// The simulators' shared clock (object timestamps, event retention).
    pub fn clock(&self) -> Arc<super::SimClock> {
        self.inner.core.clock.clone()
    }

    /// How long `/v1/events` keeps events (Stripe: 30 days); older ones are gone.
    pub fn set_event_retention_secs(&self, secs: i64) {
        self.inner.lock().event_retention_s = Some(secs.max(0));
    }

    pub fn set_faults(&self, f: super::FaultProfile) {
        self.inner.core.faults.set(f);
    }

    /// Re-deliver up to `n` recent webhooks (a storm).
    pub fn storm(&self, n: usize) {
        self.inner.core.hooks.storm(n);
    }
}

impl Billing {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `created` (unix s) of the oldest event `/v1/events` still lists.
    fn oldest_retained_event(&self, st: &State) -> i64 {
        const STRIPE_EVENT_RETENTION_S: i64 = 30 * 86_400;
        self.core.clock.now_s() - st.event_retention_s.unwrap_or(STRIPE_EVENT_RETENTION_S)
    }

    fn add_endpoint(&self, st: &mut State, url: &str, enabled: Vec<String>) -> Value {
        let secret = rand_id("whsec_", 32);
        let object = json!({
            "id": rand_id("we_", 24), "object": "webhook_endpoint", "api_version": null,
            "application": null, "created": self.core.clock.now_s(), "description": null,
            "enabled_events": enabled, "livemode": false, "metadata": {}, "status": "enabled",
            "url": url,
        });
        st.endpoints.push(Endpoint {
            object: object.clone(),
            url: url.into(),
            secret: secret.clone(),
            enabled,
        });
        let mut with_secret = object;
        with_secret["secret"] = secret.into();
        with_secret
    }

    fn emit(&self, st: &mut State, typ: &str, object: &Value, prev: Option<Value>, cause: Cause) {
        let targets: Vec<(String, String)> = st
            .endpoints
            .iter()
            .filter(|e| e.enabled.iter().any(|t| t == "*" || t == typ))
            .map(|e| (e.url.clone(), e.secret.clone()))
            .collect();
        let mut data = json!({ "object": object });
        if let Some(p) = prev {
            data["previous_attributes"] = p;
        }
        let event = json!({
            "id": rand_id("evt_", 24), "object": "event", "api_version": API_VERSION,
            "created": self.core.clock.now_s(), "data": data, "livemode": false,
            "pending_webhooks": targets.len(),
            "request": { "id": cause.0, "idempotency_key": cause.1 }, "type": typ,
        });
        st.events.push(event.clone());
        for (url, secret) in targets {
            self.core.hooks.enqueue(
                &url,
                Payload::Stripe {
                    secret,
                    event: event.clone(),
                },
            );
        }
    }

    fn create_customer(&self, st: &mut State, p: &CustomerParams, cause: Cause) -> Value {
        let mut id = rand_id("cus_", 14);
        for _ in 0..8 {
            if !st.customers.contains_key(&id) {
                break;
            }
            id = rand_id("cus_", 14);
        }
        let mut metadata = Map::new();
        for (k, v) in &p.metadata {
            if let Some(v) = v {
                metadata.insert(k.clone(), v.clone().into());
            }
        }
        let prefix: String = rand_id("", 8).to_uppercase();
        let mut cus = json!({
            "id": id, "object": "customer", "address": null, "balance": 0,
            "created": self.core.clock.now_s(), "currency": null, "default_source": null,
            "delinquent": false, "description": null, "discount": null, "email": null,
            "invoice_prefix": prefix,
            "invoice_settings": { "custom_fields": null, "default_payment_method": null,
                                  "footer": null, "rendering_options": null },
            "livemode": false, "metadata": metadata, "name": null, "next_invoice_sequence": 1,
            "phone": null, "preferred_locales": [], "shipping": null, "tax_exempt": "none",
            "test_clock": null,
        });
        for (f, v) in &p.scalars {
            cus[*f] = v.clone().into();
        }
        st.customers.insert(id.clone(), cus.clone());
        let no = st.next_no;
        st.next_no += 1;
        st.created_no.insert(id.clone(), no);
        st.index_email(&id, None, cus["email"].as_str());
        st.order.push(id);
        self.emit(st, "customer.created", &cus, None, cause);
        cus
    }

    /// Apply an update; returns the new object and whether anything changed.
    fn update_customer(
        &self,
        st: &mut State,
        id: &str,
        p: &CustomerParams,
        cause: Cause,
    ) -> Result<(Value, bool), Reply> {
        let Some(cus) = st.customers.get(id) else {
            return Err(missing("customer", id, "id"));
        };
        let mut new = cus.clone();
        let mut prev = Map::new();
        for (f, v) in &p.scalars {
            let v = Value::from(v.clone());
            if new[*f] != v {
                prev.insert(f.to_string(), new[*f].clone());
                new[*f] = v;
            }
        }
        let old_meta = cus["metadata"].as_object().cloned().unwrap_or_default();
        let (meta, meta_prev) = merge_metadata(&old_meta, p.clear_metadata, &p.metadata)?;
        if !meta_prev.is_empty() {
            prev.insert("metadata".into(), meta_prev.into());
        }
        new["metadata"] = meta.into();
        if prev.is_empty() {
            return Ok((new, false));
        }
        let old_email = st
            .customers
            .insert(id.to_string(), new.clone())
            .map(|c| c["email"].clone());
        let old_email = old_email.as_ref().and_then(Value::as_str);
        if old_email != new["email"].as_str() {
            st.index_email(id, old_email, new["email"].as_str());
        }
        self.emit(st, "customer.updated", &new, Some(prev.into()), cause);
        Ok((new, true))
    }

    fn get(&self, req: &Req, seg: &[&str]) -> Reply {
        let st = self.lock();
        let q = &req.query;
        let result = match seg {
            ["v1", "customers"] => check_params(q, &["limit", "starting_after", "ending_before", "email", "created"])
                .and_then(|_| created_filter(q))
                .and_then(|created| {
                    let ids: Box<dyn Iterator<Item = &String>> = match param(q, "email") {
                        Some(e) => Box::new(st.by_email.get(e).into_iter().flat_map(|m| m.values().rev())),
                        None => Box::new(st.order.iter().rev()),
                    };
                    let items: Vec<&Value> = ids
                        .filter_map(|id| st.customers.get(id))
                        .filter(|c| created_matches(&created, c))
                        .collect();
                    paginate(items, q, "customer", "/v1/customers")
                }),
            ["v1", "customers", "search"] => {
                check_params(q, &["query", "limit", "page"]).and_then(|_| self.search(&st, q))
            }
            ["v1", "customers", id] => check_params(q, &[]).and_then(|_| {
                st.customers
                    .get(*id)
                    .cloned()
                    .ok_or_else(|| missing("customer", id, "id"))
            }),
            ["v1", "events"] => check_params(
                q,
                &[
                    "limit",
                    "starting_after",
                    "ending_before",
                    "type",
                    "types",
                    "created",
                    "delivery_success",
                ],
            )
            .and_then(|_| created_filter(q))
            .and_then(|created| {
                let types: Vec<&str> = q
                    .iter()
                    .filter(|(k, _)| k == "type" || split_key(k).0 == "types")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let type_ok = |t: &str| {
                    types.is_empty()
                        || types.iter().any(|p| match p.strip_suffix('*') {
                            Some(prefix) => t.starts_with(prefix),
                            None => t == *p,
                        })
                };
                let oldest = self.oldest_retained_event(&st);
                let items: Vec<&Value> = st
                    .events
                    .iter()
                    .rev()
                    .filter(|e| e["created"].as_i64().unwrap_or(0) >= oldest)
                    .filter(|e| type_ok(e["type"].as_str().unwrap_or("")))
                    .filter(|e| created_matches(&created, e))
                    .collect();
                paginate(items, q, "event", "/v1/events")
            }),
            ["v1", "events", id] => st
                .events
                .iter()
                .filter(|e| e["created"].as_i64().unwrap_or(0) >= self.oldest_retained_event(&st))
                .find(|e| e["id"] == *id)
                .cloned()
                .ok_or_else(|| missing("event", id, "id")),
            ["v1", "webhook_endpoints"] => {
                let items: Vec<&Value> = st.endpoints.iter().rev().map(|e| &e.object).collect();
                paginate(items, q, "webhook_endpoint", "/v1/webhook_endpoints")
            }
            _ => self.get_ledger(&st, q, seg).unwrap_or_else(|| Err(unrecognized(req))),
        };
        result.map_or_else(|e| e, |v| Reply::json(200, v))
    }

    fn search(&self, st: &State, q: &[(String, String)]) -> Result<Value, Reply> {
        let query = param(q, "query").ok_or_else(|| {
            err(
                400,
                "invalid_request_error",
                Some("parameter_missing"),
                "Missing required param: query.".into(),
                Some("query"),
            )
        })?;
        let mut clauses = parse_search(query).map_err(|m| invalid(format!("Invalid search query: {m}"), "query"))?;
        let any = clauses
            .last()
            .is_some_and(|c| matches!(c, Clause::Field { field, .. } if field == "__or"));
        if any {
            clauses.pop();
        }
        let limit = parse_limit(q)?;
        let offset = match param(q, "page") {
            None => 0,
            Some(p) => p
                .strip_prefix("page_")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| invalid(format!("Invalid page token: {p}"), "page"))?,
        };
        let hits: Vec<&Value> = st
            .order
            .iter()
            .rev()
            .filter_map(|id| st.customers.get(id))
            .filter(|c| {
                if any {
                    clauses.iter().any(|cl| clause_matches(cl, c))
                } else {
                    clauses.iter().all(|cl| clause_matches(cl, c))
                }
            })
            .collect();
        let page: Vec<&Value> = hits.iter().skip(offset).take(limit).copied().collect();
        let has_more = hits.len() > offset + limit;
        Ok(json!({
            "object": "search_result", "data": page, "has_more": has_more,
            "next_page": has_more.then(|| format!("page_{}", offset + limit)),
            "url": "/v1/customers/search",
        }))
    }

    /// POST handling inside the idempotency envelope. Returns (reply, applied).
    fn post(&self, st: &mut State, req: &Req, pairs: &[(String, String)], cause: Cause) -> (Reply, bool) {
        let seg = req.segments();
        let result = match seg.as_slice() {
            _ if req.method != "POST" => self
                .write_ledger(st, req, &seg, pairs, cause)
                .unwrap_or_else(|| Err(unrecognized(req))),
            ["v1", "customers"] => parse_customer_params(pairs).map(|p| {
                let c = self.create_customer(st, &p, cause);
                (c, true)
            }),
            ["v1", "customers", "search"] => Err(unrecognized(req)),
            ["v1", "customers", id] => {
                parse_customer_params(pairs).and_then(|p| self.update_customer(st, id, &p, cause))
            }
            ["v1", "webhook_endpoints"] => {
                let mut url = None;
                let mut enabled = Vec::new();
                let mut bad = None;
                for (k, v) in pairs {
                    match split_key(k) {
                        ("url", None) => url = Some(v.clone()),
                        ("enabled_events", Some(_)) => enabled.push(v.clone()),
                        ("description" | "api_version" | "expand", _) | ("metadata", Some(_)) => {}
                        _ => bad = Some(unknown_param(k)),
                    }
                }
                match (bad, url) {
                    (Some(e), _) => Err(e),
                    (None, None) => Err(err(
                        400,
                        "invalid_request_error",
                        Some("parameter_missing"),
                        "Missing required param: url.".into(),
                        Some("url"),
                    )),
                    (None, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                        Err(invalid(format!("Invalid URL: {u}"), "url"))
                    }
                    (None, Some(_)) if enabled.is_empty() => Err(err(
                        400,
                        "invalid_request_error",
                        Some("parameter_missing"),
                        "Missing required param: enabled_events.".into(),
                        Some("enabled_events"),
                    )),
                    (None, Some(u)) => Ok((self.add_endpoint(st, &u, enabled), true)),
                }
            }
            _ => self
                .write_ledger(st, req, &seg, pairs, cause)
                .unwrap_or_else(|| Err(unrecognized(req))),
        };
        match result {
            Ok((v, applied)) => (Reply::json(200, v), applied),
            Err(e) => (e, false),
        }
    }
}

fn unrecognized(req: &Req) -> Reply {
    err(
        404,
        "invalid_request_error",
        None,
        format!("Unrecognized request URL ({} {}).", req.method, req.path),
        None,
    )
}

impl Api for Billing {
    fn core(&self) -> &Core {
        &self.core
    }

    fn authorized(&self, req: &Req) -> bool {
        let Some(auth) = req.header("authorization") else {
            return false;
        };
        if let Some(key) = auth.strip_prefix("Bearer ") {
            return key.trim() == self.api_key;
        }
        auth.strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|d| String::from_utf8(d).ok())
            .is_some_and(|s| s.split(':').next() == Some(self.api_key.as_str()))
    }

    fn unauthorized(&self) -> Reply {
        err(
            401,
            "invalid_request_error",
            None,
            "Invalid API Key provided. You did not provide a valid API key in the Authorization header (Bearer auth)."
                .into(),
            None,
        )
    }

    fn is_mutating(&self, req: &Req) -> bool {
        (req.method == "POST" || req.method == "DELETE") && req.path != "/v1/customers/search"
    }

    fn rate_limited(&self) -> Reply {
        err(
            429,
            "invalid_request_error",
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits."
                .into(),
            None,
        )
        .with_header("Retry-After", "1")
        .with_header("Stripe-Should-Retry", "true")
        .with_header("Request-Id", rand_id("req_", 14))
    }

    /// Stripe's rate limiter: the same error object, without `Retry-After` (clients back
    /// off on their own).
    fn over_quota(&self, _q: &super::faults::QuotaAnswer) -> Reply {
        err(
            429,
            "invalid_request_error",
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits."
                .into(),
            None,
        )
        .with_header("Request-Id", rand_id("req_", 14))
    }

    fn server_error(&self, status: u16) -> Reply {
        err(
            status,
            "api_error",
            None,
            "An unknown error occurred while processing your request (simulated).".into(),
            None,
        )
        .with_header("Stripe-Should-Retry", "true")
        .with_header("Request-Id", rand_id("req_", 14))
    }

    fn handle(&self, req: &Req) -> Outcome {
        let request_id = rand_id("req_", 14);
        let seg = req.segments();
        let mut out: Outcome = match req.method.as_str() {
            "GET" => self.get(req, &seg).into(),
            "POST" | "DELETE" => self.handle_post(req, &request_id),
            _ => unrecognized(req).into(),
        };
        out.reply = std::mem::replace(&mut out.reply, Reply::json(0, Value::Null))
            .with_header("Request-Id", request_id)
            .with_header("Stripe-Version", API_VERSION);
        out
    }

    fn admin(&self, req: &Req) -> Option<Reply> {
        self.admin_ledger(req)
    }

    fn state_json(&self) -> Value {
        let st = self.lock();
        let customers: Vec<&Value> = st.order.iter().filter_map(|id| st.customers.get(id)).collect();
        let endpoints: Vec<&Value> = st.endpoints.iter().map(|e| &e.object).collect();
        let mut out = json!({ "customers": customers, "events": st.events, "webhook_endpoints": endpoints });
        st.ledger.state_json(&mut out);
        out
    }
}

impl Billing {
    /// POST (and DELETE) inside the idempotency envelope. DELETE parameters may come in the
    /// query string, as Stripe's clients send them.
    fn handle_post(&self, req: &Req, request_id: &str) -> Outcome {
        let pairs = match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&req.body) {
            Ok(p) if req.method == "DELETE" => req.query.iter().cloned().chain(p).collect(),
            Ok(p) => p,
            Err(_) => {
                return invalid(
                    "Invalid request body: expected application/x-www-form-urlencoded".into(),
                    "body",
                )
                .into()
            }
        };
        let correlation_id = param(&pairs, "metadata[driftless_correlation_id]").map(str::to_string);
        let key = req.header("idempotency-key").map(str::to_string);
        let mut st = self.lock();
        let now = self.core.clock.now_s();
        st.idempotency.retain(|_, s| now - s.at_s < IDEMPOTENCY_TTL_S);
        let mut out = Outcome {
            reply: Reply::json(0, Value::Null),
            applied: false,
            idempotency_key: key.clone(),
            replayed: false,
            correlation_id,
        };
        let fingerprint = {
            let mut sorted = pairs.clone();
            sorted.sort();
            format!(
                "{} {} {}",
                req.method,
                req.path,
                serde_urlencoded::to_string(&sorted).unwrap_or_default()
            )
        };
        if let Some(k) = &key {
            if k.len() > 255 {
                out.reply = invalid(
                    "Idempotency-Key must be at most 255 characters".into(),
                    "Idempotency-Key",
                );
                return out;
            }
            if let Some(saved) = st.idempotency.get(k) {
                out.reply = if saved.fingerprint == fingerprint {
                    out.replayed = true;
                    Reply::json(saved.status, saved.body.clone())
                        .with_header("Idempotent-Replayed", "true")
                        .with_header("Original-Request", saved.request_id.clone())
                        .with_header("Idempotency-Key", k.clone())
                } else {
                    err(
                        400,
                        "idempotency_error",
                        None,
                        format!(
                            "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request."
                        ),
                        None,
                    )
                };
                return out;
            }
        }
        let (reply, applied) = self.post(&mut st, req, &pairs, (Some(request_id.to_string()), key.clone()));
        out.applied = applied;
        out.reply = reply;
        if let Some(k) = key {
            // Stripe saves results once an endpoint began executing; not validation failures.
            if out.reply.status != 400 {
                st.idempotency.insert(
                    k.clone(),
                    Saved {
                        fingerprint,
                        request_id: request_id.to_string(),
                        status: out.reply.status,
                        body: out.reply.body.clone(),
                        at_s: now,
                    },
                );
            }
            out.reply =
                std::mem::replace(&mut out.reply, Reply::json(0, Value::Null)).with_header("Idempotency-Key", k);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_grammar() {
        let c = parse_search("metadata['driftless_crm_contact_id']:'42' AND email:\"a@b.c\"").expect("ok");
        assert_eq!(
            c,
            vec![
                Clause::Meta {
                    key: "driftless_crm_contact_id".into(),
                    value: "42".into()
                },
                Clause::Field {
                    field: "email".into(),
                    substring: false,
                    value: "a@b.c".into()
                },
            ]
        );
        assert!(parse_search("email:'it\\'s'").is_ok());
        assert!(parse_search("foo:'x'").is_err());
        assert!(parse_search("email:'x").is_err());
        assert!(parse_search("email:'x' AND name:'y' OR phone:'z'").is_err());
        assert!(parse_search("").is_err());
    }

    #[test]
    fn customer_params() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        let p = parse_customer_params(&pairs(&[
            ("email", "a@b.co"),
            ("metadata[k]", "v"),
            ("metadata[gone]", ""),
        ]))
        .ok()
        .expect("valid");
        assert_eq!(p.scalars, vec![("email", Some("a@b.co".to_string()))]);
        assert_eq!(p.metadata, vec![("k".into(), Some("v".into())), ("gone".into(), None)]);
        let e = parse_customer_params(&pairs(&[("emial", "x")])).err().expect("unknown");
        assert_eq!(e.body["error"]["param"], "emial");
        let e = parse_customer_params(&pairs(&[("email[x]", "y")]))
            .err()
            .expect("not a string");
        assert_eq!(e.body["error"]["param"], "email");
        assert!(parse_customer_params(&pairs(&[("email", "nope")])).is_err());
    }
}
