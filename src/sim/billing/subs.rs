//! Prices, subscriptions, invoices, credit notes and the billing cycle of the billing
//! simulator, on Stripe's wire format (objects, list filters, `expand[]`, events with
//! `previous_attributes`). Everything runs under the billing state lock and, for API calls,
//! inside the same idempotency envelope, fault injection and request log as customers.
//!
//! Money model: one currency (usd), monthly licensed prices, no tax, no proration. A
//! subscription's first invoice is created and paid at creation; later ones come from the
//! billing cycle, which fails a seeded fraction of payments (subscription `past_due`,
//! customer `delinquent`). A credit note reduces an open invoice or credits the customer's
//! balance, which the next invoice consumes.

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use super::super::clock::add_months;
use super::super::{rand_id, Reply, Req, SimError};
use super::{
    check_params, created_filter, created_matches, err, invalid, merge_metadata, missing, paginate, param,
    parse_metadata, split_key, unknown_param, Billing, BillingSim, Cause, State,
};

const CURRENCY: &str = "usd";
const DEFAULT_FAILURE_RATE: f64 = 0.1;
/// Periods one cycle call bills per subscription at most (the clock may jump far ahead).
const MAX_PERIODS_PER_CYCLE: u32 = 24;
const MAX_ITEMS: usize = 20;
/// The seeded plans: (lookup key, product name, monthly amount in cents).
const PLANS: [(&str, &str, i64); 3] = [
    ("basic", "Basic", 1000),
    ("pro", "Pro", 5000),
    ("enterprise", "Enterprise", 20000),
];
const CREDIT_REASONS: [&str; 4] = ["duplicate", "fraudulent", "order_change", "product_unsatisfactory"];
const SUB_STATUSES: [&str; 9] = [
    "active",
    "all",
    "canceled",
    "ended",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "trialing",
    "unpaid",
];
const INVOICE_STATUSES: [&str; 5] = ["draft", "open", "paid", "uncollectible", "void"];

/// The billing objects beyond customers.
pub(super) struct Ledger {
    products: Vec<Value>,
    prices: Vec<Value>,
    subs: HashMap<String, Value>,
    /// Subscription ids in creation order.
    sub_order: Vec<String>,
    /// Periods started so far per subscription: period `n` ends at anchor + `n` months.
    periods: HashMap<String, u32>,
    invoices: HashMap<String, Value>,
    invoice_order: Vec<String>,
    credit_notes: HashMap<String, Value>,
    credit_note_order: Vec<String>,
    failure_rate: f64,
    /// Draws one value per cycle invoice: the seeded payment failures.
    rng: ChaCha8Rng,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            products: Vec::new(),
            prices: Vec::new(),
            subs: HashMap::new(),
            sub_order: Vec::new(),
            periods: HashMap::new(),
            invoices: HashMap::new(),
            invoice_order: Vec::new(),
            credit_notes: HashMap::new(),
            credit_note_order: Vec::new(),
            failure_rate: DEFAULT_FAILURE_RATE,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }
}

fn ordered<'a>(map: &'a HashMap<String, Value>, order: &'a [String]) -> impl DoubleEndedIterator<Item = &'a Value> {
    order.iter().filter_map(move |id| map.get(id))
}

impl Ledger {
    /// A ledger with the three seeded plans.
    pub(super) fn new(seed: u64, now: i64) -> Ledger {
        let mut l = Ledger {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x2545_f491_4f6c_dd1d),
            ..Ledger::default()
        };
        for (key, name, amount) in PLANS {
            let product_id = rand_id("prod_", 14);
            let price_id = rand_id("price_", 24);
            l.products.push(json!({
                "id": product_id, "object": "product", "active": true, "created": now,
                "default_price": price_id, "description": null, "images": [], "livemode": false,
                "marketing_features": [], "metadata": {}, "name": name, "package_dimensions": null,
                "shippable": null, "statement_descriptor": null, "tax_code": null, "type": "service",
                "unit_label": null, "updated": now, "url": null,
            }));
            l.prices.push(json!({
                "id": price_id, "object": "price", "active": true, "billing_scheme": "per_unit",
                "created": now, "currency": CURRENCY, "custom_unit_amount": null, "livemode": false,
                "lookup_key": key, "metadata": {}, "nickname": name, "product": product_id,
                "recurring": { "aggregate_usage": null, "interval": "month", "interval_count": 1,
                               "meter": null, "trial_period_days": null, "usage_type": "licensed" },
                "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null,
                "type": "recurring", "unit_amount": amount, "unit_amount_decimal": amount.to_string(),
            }));
        }
        l
    }

    pub(super) fn state_json(&self, out: &mut Value) {
        out["products"] = self.products.clone().into();
        out["prices"] = self.prices.clone().into();
        out["subscriptions"] = ordered(&self.subs, &self.sub_order).cloned().collect();
        out["invoices"] = ordered(&self.invoices, &self.invoice_order).cloned().collect();
        out["credit_notes"] = ordered(&self.credit_notes, &self.credit_note_order).cloned().collect();
    }

    fn price(&self, id: &str) -> Option<&Value> {
        self.prices.iter().find(|p| p["id"] == id)
    }

    fn price_by_lookup(&self, key: &str) -> Option<&Value> {
        self.prices.iter().find(|p| p["lookup_key"] == key)
    }

    fn fresh_id(map: &HashMap<String, Value>, prefix: &str, len: usize) -> String {
        let mut id = rand_id(prefix, len);
        for _ in 0..8 {
            if !map.contains_key(&id) {
                break;
            }
            id = rand_id(prefix, len);
        }
        id
    }
}

/// What one billing cycle did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CycleStats {
    pub invoices: usize,
    pub paid: usize,
    pub failed: usize,
    /// Subscriptions that reached the end of a period with `cancel_at_period_end`.
    pub ended: usize,
}

/// How an invoice got paid.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// A (simulated) card charge: `attempt_count` + 1 and `invoice.payment_succeeded`.
    Charge,
    /// `paid_out_of_band=true`.
    OutOfBand,
    /// Nothing left to collect (customer credit or credit notes covered it).
    Nothing,
}

// --- Parameters ----------------------------------------------------------------------------

/// `items[0][price]` → `["items", "0", "price"]`; `expand[]` → `["expand", ""]`.
fn key_parts(key: &str) -> Vec<&str> {
    match key.split_once('[') {
        Some((base, rest)) => {
            let rest = rest.strip_suffix(']').unwrap_or(rest);
            std::iter::once(base).chain(rest.split("][")).collect()
        }
        None => vec![key],
    }
}

fn parse_bool(key: &str, val: &str) -> Result<bool, Reply> {
    match val {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(format!("Invalid boolean: {val}"), key)),
    }
}

fn parse_int(key: &str, val: &str) -> Result<i64, Reply> {
    val.parse::<i64>()
        .map_err(|_| invalid(format!("Invalid integer: {val}"), key))
}

fn one_of(key: &str, val: &str, allowed: &[&str]) -> Result<(), Reply> {
    if allowed.contains(&val) {
        Ok(())
    } else {
        Err(invalid(
            format!("Invalid {key}: must be one of {}", allowed.join(", ")),
            key,
        ))
    }
}

fn missing_param(name: &str) -> Reply {
    err(
        400,
        "invalid_request_error",
        Some("parameter_missing"),
        format!("Missing required param: {name}."),
        Some(name),
    )
}

/// A referenced object (in a parameter, not the URL) that does not exist: 400.
fn no_such(kind: &str, id: &str, param_name: &str) -> Reply {
    err(
        400,
        "invalid_request_error",
        Some("resource_missing"),
        format!("No such {kind}: '{id}'"),
        Some(param_name),
    )
}

/// An operation the object's state does not allow.
fn state_error(message: impl Into<String>) -> Reply {
    err(400, "invalid_request_error", None, message.into(), None)
}

fn unsupported(key: &str) -> Reply {
    invalid(format!("The parameter {key} is not supported by the simulator"), key)
}

#[derive(Default)]
struct ItemParams {
    id: Option<String>,
    price: Option<String>,
    quantity: Option<u64>,
    deleted: bool,
    clear_metadata: bool,
    metadata: Vec<(String, Option<String>)>,
}

#[derive(Default)]
struct SubParams {
    customer: Option<String>,
    items: BTreeMap<usize, ItemParams>,
    clear_metadata: bool,
    metadata: Vec<(String, Option<String>)>,
    cancel_at_period_end: Option<bool>,
    description: Option<Option<String>>,
    expand: Vec<String>,
}

/// Parameters of subscription create (`create`) or update.
fn parse_sub_params(pairs: &[(String, String)], create: bool) -> Result<SubParams, Reply> {
    let mut p = SubParams::default();
    for (key, val) in pairs {
        let parts = key_parts(key);
        match parts.as_slice() {
            ["customer"] if create => p.customer = Some(val.clone()),
            ["items", idx, field @ ..] => {
                let i = idx
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < MAX_ITEMS)
                    .ok_or_else(|| invalid(format!("Invalid array index in {key}"), key))?;
                let item = p.items.entry(i).or_default();
                match field {
                    ["price"] | ["plan"] => item.price = Some(val.clone()),
                    ["id"] if !create => item.id = Some(val.clone()),
                    ["deleted"] if !create => item.deleted = parse_bool(key, val)?,
                    ["clear_usage"] if !create => {
                        parse_bool(key, val)?;
                    }
                    ["quantity"] => {
                        item.quantity = Some(
                            val.parse::<u64>()
                                .ok()
                                .filter(|q| *q <= 1_000_000)
                                .ok_or_else(|| invalid(format!("Invalid quantity: {val}"), key))?,
                        )
                    }
                    ["metadata"] => parse_metadata(key, None, val, &mut item.clear_metadata, &mut item.metadata)?,
                    ["metadata", k] => {
                        parse_metadata(key, Some(*k), val, &mut item.clear_metadata, &mut item.metadata)?
                    }
                    _ => return Err(unknown_param(key)),
                }
            }
            ["metadata"] => parse_metadata(key, None, val, &mut p.clear_metadata, &mut p.metadata)?,
            ["metadata", k] => parse_metadata(key, Some(*k), val, &mut p.clear_metadata, &mut p.metadata)?,
            ["cancel_at_period_end"] => p.cancel_at_period_end = Some(parse_bool(key, val)?),
            ["description"] => p.description = Some((!val.is_empty()).then(|| val.clone())),
            ["proration_behavior"] => one_of(key, val, &["always_invoice", "create_prorations", "none"])?,
            ["payment_behavior"] => one_of(
                key,
                val,
                &[
                    "allow_incomplete",
                    "default_incomplete",
                    "error_if_incomplete",
                    "pending_if_incomplete",
                ],
            )?,
            ["collection_method"] => one_of(key, val, &["charge_automatically"])?,
            ["billing_cycle_anchor"] if !create => one_of(key, val, &["unchanged"])?,
            ["proration_date"] if !create => {
                parse_int(key, val)?;
            }
            ["off_session"] => {
                parse_bool(key, val)?;
            }
            ["default_payment_method"] | ["default_source"] => {}
            ["expand", _] => p.expand.push(val.clone()),
            ["trial_period_days" | "trial_end" | "coupon" | "promotion_code" | "add_invoice_items", ..] => {
                return Err(unsupported(key))
            }
            _ => return Err(unknown_param(key)),
        }
    }
    Ok(p)
}

fn expand_params(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| split_key(k).0 == "expand")
        .map(|(_, v)| v.clone())
        .collect()
}

/// Only `expand[…]` and the listed keys.
fn only(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), Reply> {
    for (key, _) in pairs {
        let base = split_key(key).0;
        if base != "expand" && !allowed.contains(&base) {
            return Err(unknown_param(key));
        }
    }
    Ok(())
}

// --- Objects -------------------------------------------------------------------------------

fn list_json(data: Vec<Value>, url: String) -> Value {
    let n = data.len();
    json!({ "object": "list", "data": data, "has_more": false, "total_count": n, "url": url })
}

/// `a` with `b`'s keys added (big objects are built in parts: `json!` recurses per key).
fn merged(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, (cents % 100).abs())
}

fn item_json(sub_id: &str, price: &Value, quantity: u64, metadata: Map<String, Value>, now: i64) -> Value {
    json!({
        "id": rand_id("si_", 14), "object": "subscription_item", "billing_thresholds": null,
        "created": now, "discounts": [], "metadata": metadata, "price": price, "quantity": quantity,
        "subscription": sub_id, "tax_rates": [],
    })
}

fn amount_of(item: &Value) -> i64 {
    let q = item["quantity"].as_i64().unwrap_or(1);
    item["price"]["unit_amount"].as_i64().unwrap_or(0).saturating_mul(q)
}

fn cancellation_details(reason: Option<&str>) -> Value {
    json!({ "comment": null, "feedback": null, "reason": reason })
}

// --- Expansion -----------------------------------------------------------------------------

/// Expand one dotted path (`latest_invoice`, `data.customer`, `items.data.price.product`).
fn expand_path(st: &State, v: &mut Value, path: &str, depth: usize) {
    if depth > 4 {
        return;
    }
    if v["object"] == "list" {
        if let (Some(rest), Some(data)) = (path.strip_prefix("data."), v["data"].as_array_mut()) {
            for x in data {
                expand_path(st, x, rest, depth + 1);
            }
        }
        return;
    }
    let (field, rest) = match path.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (path, None),
    };
    if let Some(id) = v.get(field).and_then(Value::as_str).map(str::to_string) {
        let id = id.as_str();
        let found = match field {
            "customer" => st.customers.get(id),
            "latest_invoice" | "invoice" => st.ledger.invoices.get(id),
            "subscription" => st.ledger.subs.get(id),
            "product" => st.ledger.products.iter().find(|p| p["id"] == id),
            _ => None,
        };
        match found {
            Some(obj) => v[field] = obj.clone(),
            None => return,
        }
    }
    if let (Some(rest), Some(inner)) = (rest, v.get_mut(field)) {
        if inner.is_object() {
            expand_path(st, inner, rest, depth + 1);
        }
    }
}

fn expanded(st: &State, mut v: Value, paths: &[String]) -> Value {
    for p in paths {
        expand_path(st, &mut v, p, 0);
    }
    v
}

// --- The simulator's billing logic -----------------------------------------------------------

impl Billing {
    /// Set customer fields the API does not take (balance, delinquent); emits
    /// `customer.updated` with `previous_attributes` when something changed.
    fn set_customer(&self, st: &mut State, id: &str, changes: &[(&str, Value)], cause: &Cause) {
        let Some(cus) = st.customers.get_mut(id) else {
            return;
        };
        let mut prev = Map::new();
        for (k, v) in changes {
            if cus[*k] != *v {
                prev.insert(k.to_string(), cus[*k].clone());
                cus[*k] = v.clone();
            }
        }
        if prev.is_empty() {
            return;
        }
        let obj = cus.clone();
        self.emit(st, "customer.updated", &obj, Some(prev.into()), cause.clone());
    }

    /// Replace a subscription and emit `customer.subscription.updated` with `prev`.
    fn put_sub(&self, st: &mut State, sub: Value, prev: Map<String, Value>, cause: &Cause) {
        let id = sub["id"].as_str().unwrap_or_default().to_string();
        st.ledger.subs.insert(id, sub.clone());
        if !prev.is_empty() {
            self.emit(
                st,
                "customer.subscription.updated",
                &sub,
                Some(prev.into()),
                cause.clone(),
            );
        }
    }

    fn put_invoice(&self, st: &mut State, inv: Value, typ: &str, prev: Option<Map<String, Value>>, cause: &Cause) {
        let id = inv["id"].as_str().unwrap_or_default().to_string();
        st.ledger.invoices.insert(id, inv.clone());
        self.emit(st, typ, &inv, prev.map(Value::from), cause.clone());
    }

    fn create_subscription(&self, st: &mut State, p: &SubParams, cause: &Cause) -> Result<Value, Reply> {
        let cus_id = p.customer.as_deref().ok_or_else(|| missing_param("customer"))?;
        if !st.customers.contains_key(cus_id) {
            return Err(no_such("customer", cus_id, "customer"));
        }
        if p.items.is_empty() {
            return Err(missing_param("items"));
        }
        let now = self.core.clock.now_s();
        let sub_id = Ledger::fresh_id(&st.ledger.subs, "sub_", 24);
        let mut items = Vec::new();
        for (i, ip) in &p.items {
            let name = format!("items[{i}][price]");
            let price_id = ip.price.as_deref().ok_or_else(|| missing_param(&name))?;
            let price = st
                .ledger
                .price(price_id)
                .ok_or_else(|| no_such("price", price_id, &name))?;
            if items.iter().any(|it: &Value| it["price"]["id"] == price_id) {
                return Err(invalid(
                    "Cannot add multiple subscription items with the same price".into(),
                    &name,
                ));
            }
            let (meta, _) = merge_metadata(&Map::new(), ip.clear_metadata, &ip.metadata)?;
            items.push(item_json(&sub_id, price, ip.quantity.unwrap_or(1), meta, now));
        }
        let (meta, _) = merge_metadata(&Map::new(), p.clear_metadata, &p.metadata)?;
        let period_end = add_months(now, 1);
        let cancel = p.cancel_at_period_end.unwrap_or(false);
        let head = json!({
            "id": sub_id, "object": "subscription", "application": null,
            "application_fee_percent": null, "automatic_tax": { "enabled": false, "liability": null },
            "billing_cycle_anchor": now, "billing_cycle_anchor_config": null,
            "billing_thresholds": null, "cancel_at": if cancel { Some(period_end) } else { None },
            "cancel_at_period_end": cancel, "canceled_at": if cancel { Some(now) } else { None },
            "cancellation_details": cancellation_details(cancel.then_some("cancellation_requested")),
            "collection_method": "charge_automatically", "created": now, "currency": CURRENCY,
        });
        let mut sub = merged(
            head,
            json!({
                "current_period_end": period_end, "current_period_start": now, "customer": cus_id,
                "days_until_due": null, "default_payment_method": null, "default_source": null,
                "default_tax_rates": [], "description": p.description.clone().flatten(), "discount": null,
                "discounts": [], "ended_at": null,
                "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
                "items": list_json(items, format!("/v1/subscription_items?subscription={sub_id}")),
            }),
        );
        sub = merged(
            sub,
            json!({
                "latest_invoice": null, "livemode": false, "metadata": meta,
                "next_pending_invoice_item_invoice": null, "on_behalf_of": null, "pause_collection": null,
                "payment_settings": { "payment_method_options": null, "payment_method_types": null,
                                      "save_default_payment_method": "off" },
                "pending_invoice_item_interval": null, "pending_setup_intent": null, "pending_update": null,
                "schedule": null, "start_date": now, "status": "active", "test_clock": null,
                "transfer_data": null, "trial_end": null,
                "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
                "trial_start": null,
            }),
        );
        let inv_id = self.draft_invoice(st, &sub, "subscription_create", (now, now), (now, period_end));
        sub["latest_invoice"] = inv_id.clone().into();
        st.ledger.subs.insert(sub_id.clone(), sub.clone());
        st.ledger.sub_order.push(sub_id.clone());
        st.ledger.periods.insert(sub_id.clone(), 1);
        self.emit(st, "customer.subscription.created", &sub, None, cause.clone());
        self.announce_draft(st, &inv_id, cause);
        if self.finalize(st, &inv_id, cause) {
            self.settle(st, &inv_id, Settle::Charge, cause);
        }
        Ok(st.ledger.subs.get(&sub_id).cloned().unwrap_or(sub))
    }

    fn update_subscription(
        &self,
        st: &mut State,
        id: &str,
        p: &SubParams,
        cause: &Cause,
    ) -> Result<(Value, bool), Reply> {
        let sub = st
            .ledger
            .subs
            .get(id)
            .cloned()
            .ok_or_else(|| missing("subscription", id, "subscription_exposed_id"))?;
        if sub["status"] == "canceled"
            && (!p.items.is_empty() || p.cancel_at_period_end.is_some() || p.description.is_some())
        {
            return Err(state_error(
                "A canceled subscription can only update its cancellation_details and metadata.",
            ));
        }
        let now = self.core.clock.now_s();
        let mut new = sub.clone();
        let mut prev = Map::new();
        if !p.items.is_empty() {
            let mut items: Vec<Value> = sub["items"]["data"].as_array().cloned().unwrap_or_default();
            for (i, ip) in &p.items {
                let price = match &ip.price {
                    Some(pid) => {
                        let name = format!("items[{i}][price]");
                        let price = st.ledger.price(pid).ok_or_else(|| no_such("price", pid, &name))?;
                        Some(price.clone())
                    }
                    None => None,
                };
                match &ip.id {
                    Some(si) => {
                        let pos = items
                            .iter()
                            .position(|it| it["id"] == si.as_str())
                            .ok_or_else(|| no_such("subscription_item", si, &format!("items[{i}][id]")))?;
                        if ip.deleted {
                            items.remove(pos);
                            continue;
                        }
                        let item = &mut items[pos];
                        if let Some(price) = price {
                            item["price"] = price;
                        }
                        if let Some(q) = ip.quantity {
                            item["quantity"] = q.into();
                        }
                        let old = item["metadata"].as_object().cloned().unwrap_or_default();
                        item["metadata"] = merge_metadata(&old, ip.clear_metadata, &ip.metadata)?.0.into();
                    }
                    None => {
                        let name = format!("items[{i}][price]");
                        let price = price.ok_or_else(|| missing_param(&name))?;
                        if items.iter().any(|it| it["price"]["id"] == price["id"]) {
                            return Err(invalid(
                                "Cannot add multiple subscription items with the same price".into(),
                                &name,
                            ));
                        }
                        let (meta, _) = merge_metadata(&Map::new(), ip.clear_metadata, &ip.metadata)?;
                        items.push(item_json(id, &price, ip.quantity.unwrap_or(1), meta, now));
                    }
                }
            }
            if items.is_empty() {
                return Err(invalid("A subscription must have at least one item".into(), "items"));
            }
            let list = list_json(items, format!("/v1/subscription_items?subscription={id}"));
            if list != sub["items"] {
                prev.insert("items".into(), sub["items"].clone());
                new["items"] = list;
            }
        }
        if let Some(c) = p.cancel_at_period_end.filter(|c| sub["cancel_at_period_end"] != *c) {
            for k in [
                "cancel_at",
                "cancel_at_period_end",
                "canceled_at",
                "cancellation_details",
            ] {
                prev.insert(k.into(), sub[k].clone());
            }
            new["cancel_at_period_end"] = c.into();
            new["cancel_at"] = if c {
                sub["current_period_end"].clone()
            } else {
                Value::Null
            };
            new["canceled_at"] = if c { now.into() } else { Value::Null };
            new["cancellation_details"] = cancellation_details(c.then_some("cancellation_requested"));
        }
        if let Some(d) = &p.description {
            let d = Value::from(d.clone());
            if sub["description"] != d {
                prev.insert("description".into(), sub["description"].clone());
                new["description"] = d;
            }
        }
        let old_meta = sub["metadata"].as_object().cloned().unwrap_or_default();
        let (meta, meta_prev) = merge_metadata(&old_meta, p.clear_metadata, &p.metadata)?;
        if !meta_prev.is_empty() {
            prev.insert("metadata".into(), meta_prev.into());
            new["metadata"] = meta.into();
        }
        let changed = !prev.is_empty();
        self.put_sub(st, new.clone(), prev, cause);
        Ok((new, changed))
    }

    /// `DELETE /v1/subscriptions/{id}`: cancel now. A canceled subscription is "gone" for
    /// this endpoint (404), as in Stripe.
    fn cancel_now(&self, st: &mut State, id: &str, cause: &Cause) -> Result<Value, Reply> {
        let not_found = || missing("subscription", id, "subscription_exposed_id");
        let sub = st.ledger.subs.get(id).cloned().ok_or_else(not_found)?;
        if sub["status"] == "canceled" {
            return Err(not_found());
        }
        let now = self.core.clock.now_s();
        let mut new = sub;
        new["status"] = "canceled".into();
        new["canceled_at"] = now.into();
        new["ended_at"] = now.into();
        new["cancellation_details"] = cancellation_details(Some("cancellation_requested"));
        st.ledger.subs.insert(id.to_string(), new.clone());
        self.emit(st, "customer.subscription.deleted", &new, None, cause.clone());
        Ok(new)
    }

    /// A draft invoice for the subscription's current items; no event yet. `period` is the
    /// invoice's (Stripe looks back one period), `service` the lines' period.
    fn draft_invoice(
        &self,
        st: &mut State,
        sub: &Value,
        reason: &str,
        period: (i64, i64),
        service: (i64, i64),
    ) -> String {
        let now = self.core.clock.now_s();
        let id = Ledger::fresh_id(&st.ledger.invoices, "in_", 24);
        let sub_id = sub["id"].as_str().unwrap_or_default();
        let lines: Vec<Value> = sub["items"]["data"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|it| {
                        let amount = amount_of(it);
                        let q = it["quantity"].as_i64().unwrap_or(1);
                        let name = it["price"]["nickname"].as_str().unwrap_or("Plan");
                        let unit = it["price"]["unit_amount"].as_i64().unwrap_or(0);
                        json!({
                            "id": rand_id("il_", 24), "object": "line_item", "amount": amount,
                            "amount_excluding_tax": amount, "currency": CURRENCY,
                            "description": format!("{q} × {name} (at {} / month)", dollars(unit)),
                            "discount_amounts": [], "discountable": true, "discounts": [], "invoice": id,
                            "livemode": false, "metadata": {},
                            "period": { "start": service.0, "end": service.1 },
                            "plan": null, "price": it["price"], "proration": false,
                            "proration_details": { "credited_items": null }, "quantity": q,
                            "subscription": sub_id, "subscription_item": it["id"], "tax_amounts": [],
                            "tax_rates": [], "type": "subscription",
                            "unit_amount_excluding_tax": unit.to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let total: i64 = lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
        let cus_id = sub["customer"].as_str().unwrap_or_default();
        let cus = st.customers.get(cus_id).cloned().unwrap_or(Value::Null);
        let head = json!({
            "id": id, "object": "invoice", "account_country": "US", "account_name": "driftless simulator",
            "account_tax_ids": null, "amount_due": total, "amount_paid": 0, "amount_remaining": total,
            "amount_shipping": 0, "application": null, "application_fee_amount": null,
            "attempt_count": 0, "attempted": false, "auto_advance": true,
            "automatic_tax": { "enabled": false, "liability": null, "status": null },
            "billing_reason": reason, "charge": null, "collection_method": "charge_automatically",
        });
        let inv = merged(
            head,
            json!({
                "created": now, "currency": CURRENCY, "custom_fields": null, "customer": cus_id,
                "customer_address": null, "customer_email": cus["email"], "customer_name": cus["name"],
                "customer_phone": cus["phone"], "customer_shipping": null, "customer_tax_exempt": "none",
                "customer_tax_ids": [], "default_payment_method": null, "default_source": null,
            }),
        );
        let inv = merged(
            inv,
            json!({
                "default_tax_rates": [], "description": null, "discount": null, "discounts": [],
                "due_date": null, "effective_at": null, "ending_balance": null, "footer": null,
                "from_invoice": null, "hosted_invoice_url": null, "invoice_pdf": null,
                "issuer": { "type": "self" }, "last_finalization_error": null, "latest_revision": null,
                "lines": list_json(lines, format!("/v1/invoices/{id}/lines")), "livemode": false,
            }),
        );
        let inv = merged(
            inv,
            json!({
                "metadata": {}, "next_payment_attempt": null, "number": null, "on_behalf_of": null,
                "paid": false, "paid_out_of_band": false, "payment_intent": null,
                "payment_settings": { "default_mandate": null, "payment_method_options": null,
                                      "payment_method_types": null },
                "period_end": period.1, "period_start": period.0, "post_payment_credit_notes_amount": 0,
                "pre_payment_credit_notes_amount": 0, "quote": null, "receipt_number": null,
                "rendering": null, "shipping_cost": null, "shipping_details": null, "starting_balance": 0,
            }),
        );
        let inv = merged(
            inv,
            json!({
                "statement_descriptor": null, "status": "draft",
                "status_transitions": { "finalized_at": null, "marked_uncollectible_at": null,
                                        "paid_at": null, "voided_at": null },
                "subscription": sub_id, "subscription_details": { "metadata": sub["metadata"] },
                "subtotal": total, "subtotal_excluding_tax": total, "tax": null, "test_clock": null,
                "total": total, "total_discount_amounts": [], "total_excluding_tax": total,
                "total_tax_amounts": [], "transfer_data": null, "webhooks_delivered_at": null,
            }),
        );
        st.ledger.invoices.insert(id.clone(), inv);
        st.ledger.invoice_order.push(id.clone());
        id
    }

    fn announce_draft(&self, st: &mut State, inv_id: &str, cause: &Cause) {
        if let Some(inv) = st.ledger.invoices.get(inv_id).cloned() {
            self.emit(st, "invoice.created", &inv, None, cause.clone());
        }
    }

    /// Finalize a draft: apply the customer's credit balance, number it, open it. Returns
    /// whether there is anything to collect (if not, it is marked paid here).
    fn finalize(&self, st: &mut State, inv_id: &str, cause: &Cause) -> bool {
        let Some(mut inv) = st.ledger.invoices.get(inv_id).cloned() else {
            return false;
        };
        let now = self.core.clock.now_s();
        let cus_id = inv["customer"].as_str().unwrap_or_default().to_string();
        let total = inv["total"].as_i64().unwrap_or(0);
        let (balance, number) = match st.customers.get_mut(&cus_id) {
            Some(cus) => {
                let seq = cus["next_invoice_sequence"].as_i64().unwrap_or(1);
                cus["next_invoice_sequence"] = (seq + 1).into();
                let prefix = cus["invoice_prefix"].as_str().unwrap_or("SIM").to_string();
                (cus["balance"].as_i64().unwrap_or(0), format!("{prefix}-{seq:04}"))
            }
            None => (0, rand_id("SIM-", 8)),
        };
        // A negative balance is credit: it pays (part of) the invoice.
        let applied = if balance < 0 { (-balance).min(total) } else { 0 };
        let due = total - applied;
        inv["starting_balance"] = balance.into();
        inv["ending_balance"] = (balance + applied).into();
        inv["amount_due"] = due.into();
        inv["amount_remaining"] = due.into();
        inv["number"] = number.into();
        inv["status"] = "open".into();
        inv["effective_at"] = now.into();
        inv["webhooks_delivered_at"] = now.into();
        inv["status_transitions"]["finalized_at"] = now.into();
        inv["hosted_invoice_url"] = format!("https://invoice.stripe.com/i/sim/{inv_id}").into();
        if applied > 0 {
            self.set_customer(st, &cus_id, &[("balance", (balance + applied).into())], cause);
        }
        self.put_invoice(st, inv, "invoice.finalized", None, cause);
        if due == 0 {
            self.settle(st, inv_id, Settle::Nothing, cause);
            return false;
        }
        true
    }

    /// Mark an open invoice paid, then clear dunning state.
    fn settle(&self, st: &mut State, inv_id: &str, how: Settle, cause: &Cause) {
        let Some(mut inv) = st.ledger.invoices.get(inv_id).cloned() else {
            return;
        };
        let now = self.core.clock.now_s();
        let due = inv["amount_due"].as_i64().unwrap_or(0);
        inv["status"] = "paid".into();
        inv["paid"] = true.into();
        inv["amount_paid"] = due.into();
        inv["amount_remaining"] = 0.into();
        inv["next_payment_attempt"] = Value::Null;
        inv["status_transitions"]["paid_at"] = now.into();
        match how {
            Settle::Charge => {
                inv["attempted"] = true.into();
                inv["attempt_count"] = (inv["attempt_count"].as_i64().unwrap_or(0) + 1).into();
                inv["charge"] = rand_id("ch_", 24).into();
                inv["receipt_number"] = format!("{}-{}", rand_id("", 4), rand_id("", 4)).into();
            }
            Settle::OutOfBand => inv["paid_out_of_band"] = true.into(),
            Settle::Nothing => {}
        }
        self.put_invoice(st, inv.clone(), "invoice.paid", None, cause);
        if how == Settle::Charge {
            self.emit(st, "invoice.payment_succeeded", &inv, None, cause.clone());
        }
        self.refresh_dunning(st, &inv, cause);
    }

    fn fail_payment(&self, st: &mut State, inv_id: &str, cause: &Cause) {
        let Some(mut inv) = st.ledger.invoices.get(inv_id).cloned() else {
            return;
        };
        inv["attempted"] = true.into();
        inv["attempt_count"] = (inv["attempt_count"].as_i64().unwrap_or(0) + 1).into();
        inv["charge"] = rand_id("ch_", 24).into();
        self.put_invoice(st, inv.clone(), "invoice.payment_failed", None, cause);
        self.refresh_dunning(st, &inv, cause);
    }

    /// Recompute the subscription's `past_due` and the customer's `delinquent` from their
    /// open invoices with a failed payment attempt.
    fn refresh_dunning(&self, st: &mut State, inv: &Value, cause: &Cause) {
        let failing = |i: &Value| i["status"] == "open" && i["attempt_count"].as_i64().unwrap_or(0) > 0;
        if let Some(sub) = inv["subscription"]
            .as_str()
            .and_then(|s| st.ledger.subs.get(s))
            .cloned()
        {
            let status = sub["status"].as_str().unwrap_or_default();
            if status == "active" || status == "past_due" {
                let past_due = st
                    .ledger
                    .invoices
                    .values()
                    .any(|i| i["subscription"] == sub["id"] && failing(i));
                let want = if past_due { "past_due" } else { "active" };
                if status != want {
                    let mut prev = Map::new();
                    prev.insert("status".into(), status.into());
                    let mut new = sub.clone();
                    new["status"] = want.into();
                    self.put_sub(st, new, prev, cause);
                }
            }
        }
        let cus_id = inv["customer"].as_str().unwrap_or_default();
        let delinquent = st
            .ledger
            .invoices
            .values()
            .any(|i| i["customer"] == cus_id && failing(i));
        self.set_customer(st, cus_id, &[("delinquent", delinquent.into())], cause);
    }

    fn pay_invoice(&self, st: &mut State, id: &str, pairs: &[(String, String)], cause: &Cause) -> Result<Value, Reply> {
        let mut how = Settle::Charge;
        for (key, val) in pairs {
            match split_key(key) {
                ("paid_out_of_band", None) => {
                    if parse_bool(key, val)? {
                        how = Settle::OutOfBand;
                    }
                }
                ("forgive" | "off_session", None) => {
                    parse_bool(key, val)?;
                }
                ("payment_method" | "source", None) | ("expand", Some(_)) => {}
                ("mandate", None) => {}
                _ => return Err(unknown_param(key)),
            }
        }
        let inv = st
            .ledger
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| missing("invoice", id, "invoice"))?;
        match inv["status"].as_str().unwrap_or_default() {
            "paid" => return Err(state_error("Invoice is already paid")),
            "void" => return Err(state_error("This invoice has been voided and can no longer be paid.")),
            // A draft is finalized first; with nothing left to collect it is paid already.
            "draft" if !self.finalize(st, id, cause) => {
                return Ok(st.ledger.invoices.get(id).cloned().unwrap_or(inv));
            }
            _ => {}
        }
        self.settle(st, id, how, cause);
        Ok(st.ledger.invoices.get(id).cloned().unwrap_or(inv))
    }

    fn void_invoice(&self, st: &mut State, id: &str, cause: &Cause) -> Result<Value, Reply> {
        let mut inv = st
            .ledger
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| missing("invoice", id, "invoice"))?;
        let status = inv["status"].as_str().unwrap_or_default();
        if status != "open" && status != "uncollectible" {
            return Err(state_error(format!(
                "You can only void invoices that are open or uncollectible; this one is {status}."
            )));
        }
        inv["status"] = "void".into();
        inv["next_payment_attempt"] = Value::Null;
        inv["status_transitions"]["voided_at"] = self.core.clock.now_s().into();
        self.put_invoice(st, inv.clone(), "invoice.voided", None, cause);
        self.refresh_dunning(st, &inv, cause);
        Ok(inv)
    }

    fn create_credit_note(&self, st: &mut State, pairs: &[(String, String)], cause: &Cause) -> Result<Value, Reply> {
        let (mut invoice, mut amount, mut credit, mut oob, mut reason, mut memo) = (None, None, None, None, None, None);
        let (mut clear, mut metadata) = (false, Vec::new());
        for (key, val) in pairs {
            match split_key(key) {
                ("invoice", None) => invoice = Some(val.clone()),
                ("amount", None) => amount = Some(parse_int(key, val)?),
                ("credit_amount", None) => credit = Some(parse_int(key, val)?),
                ("out_of_band_amount", None) => oob = Some(parse_int(key, val)?),
                ("reason", None) => {
                    one_of(key, val, &CREDIT_REASONS)?;
                    reason = Some(val.clone());
                }
                ("memo", None) => memo = (!val.is_empty()).then(|| val.clone()),
                ("metadata", sub) => parse_metadata(key, sub, val, &mut clear, &mut metadata)?,
                ("expand", Some(_)) => {}
                ("lines" | "refund" | "refund_amount" | "shipping_cost" | "effective_at", _) => {
                    return Err(unsupported(key))
                }
                _ => return Err(unknown_param(key)),
            }
        }
        let inv_id = invoice.ok_or_else(|| missing_param("invoice"))?;
        let mut inv = st
            .ledger
            .invoices
            .get(&inv_id)
            .cloned()
            .ok_or_else(|| no_such("invoice", &inv_id, "invoice"))?;
        let status = inv["status"].as_str().unwrap_or_default().to_string();
        let pre = match status.as_str() {
            "open" => true,
            "paid" => false,
            s => {
                return Err(state_error(format!(
                    "Credit notes can only be issued for open or paid invoices; this one is {s}."
                )))
            }
        };
        let amount = amount
            .or_else(|| {
                (!pre)
                    .then(|| credit.unwrap_or(0) + oob.unwrap_or(0))
                    .filter(|a| *a > 0)
            })
            .ok_or_else(|| missing_param("amount"))?;
        let creditable = if pre {
            inv["amount_remaining"].as_i64().unwrap_or(0)
        } else {
            inv["amount_paid"].as_i64().unwrap_or(0) - inv["post_payment_credit_notes_amount"].as_i64().unwrap_or(0)
        };
        if amount <= 0 || amount > creditable {
            return Err(invalid(
                format!(
                    "The credit note amount ({amount}) must be positive and at most the invoice's remaining creditable amount ({creditable})."
                ),
                "amount",
            ));
        }
        if pre && (credit.is_some() || oob.is_some()) {
            return Err(invalid(
                "credit_amount and out_of_band_amount apply to paid invoices only".into(),
                if credit.is_some() {
                    "credit_amount"
                } else {
                    "out_of_band_amount"
                },
            ));
        }
        let oob = oob.unwrap_or(0);
        let credit = if pre { 0 } else { credit.unwrap_or(amount - oob) };
        if !pre && (credit < 0 || oob < 0 || credit + oob != amount) {
            return Err(invalid(
                format!("credit_amount ({credit}) and out_of_band_amount ({oob}) must add up to amount ({amount})"),
                "amount",
            ));
        }
        let (meta, _) = merge_metadata(&Map::new(), clear, &metadata)?;
        let now = self.core.clock.now_s();
        let cus_id = inv["customer"].as_str().unwrap_or_default().to_string();
        let id = Ledger::fresh_id(&st.ledger.credit_notes, "cn_", 24);
        let seq = st
            .ledger
            .credit_notes
            .values()
            .filter(|c| c["invoice"] == inv_id.as_str())
            .count()
            + 1;
        let number = format!("{}-CN-{seq:02}", inv["number"].as_str().unwrap_or("SIM"));
        let line = json!({
            "id": rand_id("cnli_", 24), "object": "credit_note_line_item", "amount": amount,
            "amount_excluding_tax": amount, "description": memo.clone().unwrap_or_else(|| "Credit".into()),
            "discount_amount": 0, "discount_amounts": [], "livemode": false, "quantity": 1,
            "tax_amounts": [], "tax_rates": [], "type": "custom_line_item", "unit_amount": amount,
            "unit_amount_decimal": amount.to_string(), "unit_amount_excluding_tax": amount.to_string(),
        });
        let head = json!({
            "id": id, "object": "credit_note", "amount": amount, "amount_shipping": 0, "created": now,
            "currency": CURRENCY, "customer": cus_id,
            "customer_balance_transaction": (credit > 0).then(|| rand_id("cbtxn_", 24)),
            "discount_amount": 0, "discount_amounts": [], "effective_at": now, "invoice": inv_id,
        });
        let cn = merged(
            head,
            json!({
                "lines": list_json(vec![line], format!("/v1/credit_notes/{id}/lines")), "livemode": false,
                "memo": memo, "metadata": meta, "number": number,
                "out_of_band_amount": (oob > 0).then_some(oob),
                "pdf": format!("https://pay.stripe.com/credit_notes/sim/{id}/pdf"), "pretax_credit_amounts": [],
                "reason": reason, "refund": null, "shipping_cost": null, "status": "issued", "subtotal": amount,
                "subtotal_excluding_tax": amount, "tax_amounts": [], "total": amount,
                "total_excluding_tax": amount, "type": if pre { "pre_payment" } else { "post_payment" },
                "voided_at": null,
            }),
        );
        st.ledger.credit_notes.insert(id.clone(), cn.clone());
        st.ledger.credit_note_order.push(id);
        self.emit(st, "credit_note.created", &cn, None, cause.clone());
        let mut prev = Map::new();
        if pre {
            for k in ["amount_due", "amount_remaining", "pre_payment_credit_notes_amount"] {
                prev.insert(k.into(), inv[k].clone());
                inv[k] = (inv[k].as_i64().unwrap_or(0) + if k.starts_with("pre") { amount } else { -amount }).into();
            }
        } else {
            let k = "post_payment_credit_notes_amount";
            prev.insert(k.into(), inv[k].clone());
            inv[k] = (inv[k].as_i64().unwrap_or(0) + amount).into();
        }
        let settled = pre && inv["amount_remaining"] == 0;
        self.put_invoice(st, inv, "invoice.updated", Some(prev), cause);
        if settled {
            self.settle(st, &inv_id, Settle::Nothing, cause);
        }
        if credit > 0 {
            let balance = st
                .customers
                .get(&cus_id)
                .and_then(|c| c["balance"].as_i64())
                .unwrap_or(0);
            self.set_customer(st, &cus_id, &[("balance", (balance - credit).into())], cause);
        }
        Ok(cn)
    }

    /// Renew every active / past_due subscription whose period ended by now: a new period,
    /// a finalized invoice, then a charge that fails with the seeded probability.
    /// Subscriptions set to cancel at period end end instead.
    pub(super) fn billing_cycle(&self, st: &mut State) -> CycleStats {
        let mut stats = CycleStats::default();
        let now = self.core.clock.now_s();
        let cause: Cause = (None, None);
        let ids = st.ledger.sub_order.clone();
        for id in ids {
            for _ in 0..MAX_PERIODS_PER_CYCLE {
                let Some(sub) = st.ledger.subs.get(&id).cloned() else {
                    break;
                };
                let status = sub["status"].as_str().unwrap_or_default();
                let end = sub["current_period_end"].as_i64().unwrap_or(i64::MAX);
                if !(status == "active" || status == "past_due") || end > now {
                    break;
                }
                if sub["cancel_at_period_end"] == true {
                    let mut new = sub;
                    new["status"] = "canceled".into();
                    new["ended_at"] = end.into();
                    st.ledger.subs.insert(id.clone(), new.clone());
                    self.emit(st, "customer.subscription.deleted", &new, None, cause.clone());
                    stats.ended += 1;
                    break;
                }
                let n = st.ledger.periods.get(&id).copied().unwrap_or(1);
                let anchor = sub["billing_cycle_anchor"].as_i64().unwrap_or(end);
                let next_end = add_months(anchor, n + 1).max(end + 1);
                let start = sub["current_period_start"].as_i64().unwrap_or(end);
                let inv_id = self.draft_invoice(st, &sub, "subscription_cycle", (start, end), (end, next_end));
                st.ledger.periods.insert(id.clone(), n + 1);
                let mut prev = Map::new();
                let mut new = sub.clone();
                for (k, v) in [
                    ("current_period_start", Value::from(end)),
                    ("current_period_end", next_end.into()),
                    ("latest_invoice", inv_id.clone().into()),
                ] {
                    prev.insert(k.into(), sub[k].clone());
                    new[k] = v;
                }
                self.put_sub(st, new, prev, &cause);
                self.announce_draft(st, &inv_id, &cause);
                let fails = st.ledger.rng.gen::<f64>() < st.ledger.failure_rate;
                stats.invoices += 1;
                if !self.finalize(st, &inv_id, &cause) {
                    stats.paid += 1;
                } else if fails {
                    self.fail_payment(st, &inv_id, &cause);
                    stats.failed += 1;
                } else {
                    self.settle(st, &inv_id, Settle::Charge, &cause);
                    stats.paid += 1;
                }
            }
        }
        stats
    }

    // --- HTTP routes ---------------------------------------------------------------------

    /// GET routes for prices, products, subscriptions, invoices and credit notes; `None`
    /// for paths that are not ours.
    pub(super) fn get_ledger(&self, st: &State, q: &[(String, String)], seg: &[&str]) -> Option<Result<Value, Reply>> {
        let l = &st.ledger;
        let expand = expand_params(q);
        let one = |found: Option<&Value>, kind: &str, id: &str, param_name: &str| -> Result<Value, Reply> {
            check_params(q, &[])?;
            found.cloned().ok_or_else(|| missing(kind, id, param_name))
        };
        let r = match seg {
            ["v1", "prices"] => list_prices(l, q),
            ["v1", "prices", id] => one(l.price(id), "price", id, "price"),
            ["v1", "products"] => only(q, &["active", "limit", "starting_after", "ending_before"])
                .and_then(|_| paginate(l.products.iter().rev().collect(), q, "product", "/v1/products")),
            ["v1", "products", id] => one(l.products.iter().find(|p| p["id"] == *id), "product", id, "id"),
            ["v1", "subscriptions"] => list_subscriptions(l, q),
            ["v1", "subscriptions", id] => one(l.subs.get(*id), "subscription", id, "subscription_exposed_id"),
            ["v1", "subscription_items"] => list_subscription_items(l, q),
            ["v1", "invoices"] => list_invoices(l, q),
            ["v1", "invoices", id] => one(l.invoices.get(*id), "invoice", id, "invoice"),
            ["v1", "invoices", id, "lines"] => list_lines(l.invoices.get(*id), q, "invoice", id),
            ["v1", "credit_notes"] => list_credit_notes(l, q),
            ["v1", "credit_notes", id] => one(l.credit_notes.get(*id), "credit_note", id, "id"),
            ["v1", "credit_notes", id, "lines"] => list_lines(l.credit_notes.get(*id), q, "credit_note", id),
            _ => return None,
        };
        Some(r.map(|v| expanded(st, v, &expand)))
    }

    /// POST / DELETE routes (inside the idempotency envelope); `None` for paths that are not
    /// ours. Ok = (object, whether state changed).
    pub(super) fn write_ledger(
        &self,
        st: &mut State,
        req: &Req,
        seg: &[&str],
        pairs: &[(String, String)],
        cause: Cause,
    ) -> Option<Result<(Value, bool), Reply>> {
        let cause = &cause;
        let expand = expand_params(pairs);
        let r = match (req.method.as_str(), seg) {
            ("POST", ["v1", "subscriptions"]) => parse_sub_params(pairs, true)
                .and_then(|p| self.create_subscription(st, &p, cause))
                .map(|v| (v, true)),
            ("POST", ["v1", "subscriptions", id]) => {
                parse_sub_params(pairs, false).and_then(|p| self.update_subscription(st, id, &p, cause))
            }
            ("DELETE", ["v1", "subscriptions", id]) => check_cancel_params(pairs)
                .and_then(|_| self.cancel_now(st, id, cause))
                .map(|v| (v, true)),
            ("POST", ["v1", "invoices", id, "pay"]) => self.pay_invoice(st, id, pairs, cause).map(|v| (v, true)),
            ("POST", ["v1", "invoices", id, "void"]) => only(pairs, &[])
                .and_then(|_| self.void_invoice(st, id, cause))
                .map(|v| (v, true)),
            ("POST", ["v1", "credit_notes"]) => self.create_credit_note(st, pairs, cause).map(|v| (v, true)),
            _ => return None,
        };
        Some(r.map(|(v, applied)| (expanded(st, v, &expand), applied)))
    }

    /// `POST /_sim/billing_cycle` (optional body `{"advance_months": N}` moves the clock
    /// first) and `POST /_sim/payment_failure_rate` (`{"rate": 0.25}`).
    pub(super) fn admin_ledger(&self, req: &Req) -> Option<Reply> {
        let body = serde_json::from_slice::<Value>(&req.body).unwrap_or(Value::Null);
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/_sim/billing_cycle") => {
                if let Some(n) = body["advance_months"].as_u64() {
                    let n = u32::try_from(n.min(120)).unwrap_or(120);
                    let now = self.core.clock.now_s();
                    self.core.clock.advance(add_months(now, n) - now);
                }
                let s = self.billing_cycle(&mut self.lock());
                Some(Reply::json(
                    200,
                    json!({ "ok": true, "invoices": s.invoices, "paid": s.paid, "failed": s.failed,
                            "ended": s.ended, "now": self.core.clock.now_s() }),
                ))
            }
            ("POST", "/_sim/payment_failure_rate") => Some(match body["rate"].as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => {
                    self.lock().ledger.failure_rate = r;
                    Reply::json(200, json!({ "ok": true, "rate": r }))
                }
                _ => Reply::json(400, json!({ "error": "expected {\"rate\": 0..1}" })),
            }),
            _ => None,
        }
    }
}

// --- List endpoints ------------------------------------------------------------------------

fn list_prices(l: &Ledger, q: &[(String, String)]) -> Result<Value, Reply> {
    only(
        q,
        &[
            "active",
            "currency",
            "product",
            "type",
            "lookup_keys",
            "created",
            "recurring",
            "limit",
            "starting_after",
            "ending_before",
        ],
    )?;
    let created = created_filter(q)?;
    let keys: Vec<&str> = q
        .iter()
        .filter(|(k, _)| split_key(k).0 == "lookup_keys")
        .map(|(_, v)| v.as_str())
        .collect();
    if keys.len() > 10 {
        return Err(invalid("At most 10 lookup_keys are allowed".into(), "lookup_keys"));
    }
    let items: Vec<&Value> = l
        .prices
        .iter()
        .rev()
        .filter(|p| keys.is_empty() || keys.iter().any(|k| p["lookup_key"] == *k))
        .filter(|p| param(q, "active").is_none_or(|a| p["active"].as_bool() == a.parse::<bool>().ok()))
        .filter(|p| param(q, "currency").is_none_or(|c| p["currency"] == c))
        .filter(|p| param(q, "product").is_none_or(|c| p["product"] == c))
        .filter(|p| param(q, "type").is_none_or(|c| p["type"] == c))
        .filter(|p| created_matches(&created, p))
        .collect();
    paginate(items, q, "price", "/v1/prices")
}

fn list_subscriptions(l: &Ledger, q: &[(String, String)]) -> Result<Value, Reply> {
    only(
        q,
        &[
            "customer",
            "price",
            "status",
            "created",
            "collection_method",
            "limit",
            "starting_after",
            "ending_before",
        ],
    )?;
    let created = created_filter(q)?;
    let status = param(q, "status");
    if let Some(s) = status {
        one_of("status", s, &SUB_STATUSES)?;
    }
    let status_ok = |s: &Value| match status {
        None => *s != "canceled" && *s != "incomplete_expired",
        Some("all") => true,
        Some("ended") => *s == "canceled" || *s == "incomplete_expired",
        Some(want) => *s == want,
    };
    let items: Vec<&Value> = ordered(&l.subs, &l.sub_order)
        .rev()
        .filter(|s| status_ok(&s["status"]))
        .filter(|s| param(q, "customer").is_none_or(|c| s["customer"] == c))
        .filter(|s| param(q, "collection_method").is_none_or(|c| s["collection_method"] == c))
        .filter(|s| {
            param(q, "price").is_none_or(|p| {
                s["items"]["data"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|it| it["price"]["id"] == p))
            })
        })
        .filter(|s| created_matches(&created, s))
        .collect();
    paginate(items, q, "subscription", "/v1/subscriptions")
}

fn list_subscription_items(l: &Ledger, q: &[(String, String)]) -> Result<Value, Reply> {
    only(q, &["subscription", "limit", "starting_after", "ending_before"])?;
    let sid = param(q, "subscription").ok_or_else(|| missing_param("subscription"))?;
    let sub = l
        .subs
        .get(sid)
        .ok_or_else(|| no_such("subscription", sid, "subscription"))?;
    let items: Vec<&Value> = sub["items"]["data"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    paginate(items, q, "subscription_item", "/v1/subscription_items")
}

fn list_invoices(l: &Ledger, q: &[(String, String)]) -> Result<Value, Reply> {
    only(
        q,
        &[
            "customer",
            "subscription",
            "status",
            "created",
            "collection_method",
            "limit",
            "starting_after",
            "ending_before",
        ],
    )?;
    let created = created_filter(q)?;
    if let Some(s) = param(q, "status") {
        one_of("status", s, &INVOICE_STATUSES)?;
    }
    let items: Vec<&Value> = ordered(&l.invoices, &l.invoice_order)
        .rev()
        .filter(|i| param(q, "status").is_none_or(|s| i["status"] == s))
        .filter(|i| param(q, "customer").is_none_or(|c| i["customer"] == c))
        .filter(|i| param(q, "subscription").is_none_or(|c| i["subscription"] == c))
        .filter(|i| param(q, "collection_method").is_none_or(|c| i["collection_method"] == c))
        .filter(|i| created_matches(&created, i))
        .collect();
    paginate(items, q, "invoice", "/v1/invoices")
}

fn list_credit_notes(l: &Ledger, q: &[(String, String)]) -> Result<Value, Reply> {
    only(
        q,
        &[
            "invoice",
            "customer",
            "created",
            "limit",
            "starting_after",
            "ending_before",
        ],
    )?;
    let created = created_filter(q)?;
    let items: Vec<&Value> = ordered(&l.credit_notes, &l.credit_note_order)
        .rev()
        .filter(|c| param(q, "invoice").is_none_or(|i| c["invoice"] == i))
        .filter(|c| param(q, "customer").is_none_or(|i| c["customer"] == i))
        .filter(|c| created_matches(&created, c))
        .collect();
    paginate(items, q, "credit_note", "/v1/credit_notes")
}

/// `GET /v1/invoices/{id}/lines`, `GET /v1/credit_notes/{id}/lines`.
fn list_lines(owner: Option<&Value>, q: &[(String, String)], kind: &str, id: &str) -> Result<Value, Reply> {
    only(q, &["limit", "starting_after", "ending_before"])?;
    let owner = owner.ok_or_else(|| missing(kind, id, kind))?;
    let lines: Vec<&Value> = owner["lines"]["data"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let url = owner["lines"]["url"].as_str().unwrap_or_default().to_string();
    paginate(lines, q, "line_item", &url)
}

/// `DELETE /v1/subscriptions/{id}` parameters (accepted, no effect).
fn check_cancel_params(pairs: &[(String, String)]) -> Result<(), Reply> {
    for (key, val) in pairs {
        match split_key(key) {
            ("invoice_now" | "prorate", None) => {
                parse_bool(key, val)?;
            }
            ("cancellation_details", Some("comment" | "feedback")) | ("expand", Some(_)) => {}
            _ => return Err(unknown_param(key)),
        }
    }
    Ok(())
}

// --- The in-process handle -------------------------------------------------------------------

fn edit_error(r: &Reply) -> SimError {
    SimError::InvalidEdit(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("invalid billing action")
            .to_string(),
    )
}

impl BillingSim {
    /// Run the billing cycle now (see [`BillingSim::advance_clock`]): every active or
    /// past_due subscription whose period ended gets a new period and an invoice, paid or
    /// failed with the seeded payment failure rate. Returns the number of invoices created.
    pub fn run_billing_cycle(&self) -> usize {
        self.cycle_stats().invoices
    }

    pub(crate) fn cycle_stats(&self) -> CycleStats {
        self.inner.billing_cycle(&mut self.inner.lock())
    }

    /// Probability (0..=1, default 0.1) that a billing-cycle charge fails. Seeded.
    pub fn set_payment_failure_rate(&self, rate: f64) {
        let rate = if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) };
        self.inner.lock().ledger.failure_rate = rate;
    }

    /// All subscriptions, full Stripe objects, oldest first.
    pub fn subscriptions(&self) -> Vec<Value> {
        let st = self.inner.lock();
        ordered(&st.ledger.subs, &st.ledger.sub_order).cloned().collect()
    }

    /// One invoice by id.
    pub fn invoice(&self, id: &str) -> Option<Value> {
        self.inner.lock().ledger.invoices.get(id).cloned()
    }

    /// All invoices, oldest first.
    pub fn invoices(&self) -> Vec<Value> {
        let st = self.inner.lock();
        ordered(&st.ledger.invoices, &st.ledger.invoice_order)
            .cloned()
            .collect()
    }

    /// All credit notes, oldest first.
    pub fn credit_notes(&self) -> Vec<Value> {
        let st = self.inner.lock();
        ordered(&st.ledger.credit_notes, &st.ledger.credit_note_order)
            .cloned()
            .collect()
    }

    /// The seeded prices (`basic`, `pro`, `enterprise`).
    pub fn prices(&self) -> Vec<Value> {
        self.inner.lock().ledger.prices.clone()
    }

    /// Finance starts a subscription in the dashboard (`request.id = null` on its events);
    /// its first invoice is paid at once. Returns the `sub_…` id.
    pub fn start_subscription(&self, customer: &str, lookup_key: &str) -> Result<String, SimError> {
        let mut st = self.inner.lock();
        if !st.customers.contains_key(customer) {
            return Err(SimError::UnknownRecord {
                kind: "customer",
                id: customer.into(),
            });
        }
        let price = st
            .ledger
            .price_by_lookup(lookup_key)
            .and_then(|p| p["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| SimError::UnknownRecord {
                kind: "price",
                id: lookup_key.into(),
            })?;
        let mut p = SubParams {
            customer: Some(customer.into()),
            ..SubParams::default()
        };
        p.items.insert(
            0,
            ItemParams {
                price: Some(price),
                ..ItemParams::default()
            },
        );
        let sub = self
            .inner
            .create_subscription(&mut st, &p, &(None, None))
            .map_err(|r| edit_error(&r))?;
        Ok(sub["id"].as_str().unwrap_or_default().to_string())
    }

    /// Finance moves a subscription to another plan (no proration).
    pub fn change_plan(&self, sub: &str, lookup_key: &str) -> Result<(), SimError> {
        let mut st = self.inner.lock();
        let unknown = |kind: &'static str, id: &str| SimError::UnknownRecord { kind, id: id.into() };
        let price = st
            .ledger
            .price_by_lookup(lookup_key)
            .and_then(|p| p["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| unknown("price", lookup_key))?;
        let item = st
            .ledger
            .subs
            .get(sub)
            .and_then(|s| s["items"]["data"][0]["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| unknown("subscription", sub))?;
        let mut p = SubParams::default();
        p.items.insert(
            0,
            ItemParams {
                id: Some(item),
                price: Some(price),
                ..ItemParams::default()
            },
        );
        self.inner
            .update_subscription(&mut st, sub, &p, &(None, None))
            .map(|_| ())
            .map_err(|r| edit_error(&r))
    }

    /// Finance cancels a subscription now, or at the end of its period.
    pub fn cancel_subscription(&self, sub: &str, at_period_end: bool) -> Result<(), SimError> {
        let mut st = self.inner.lock();
        if !st.ledger.subs.contains_key(sub) {
            return Err(SimError::UnknownRecord {
                kind: "subscription",
                id: sub.into(),
            });
        }
        let cause = (None, None);
        let r = if at_period_end {
            let p = SubParams {
                cancel_at_period_end: Some(true),
                ..SubParams::default()
            };
            self.inner.update_subscription(&mut st, sub, &p, &cause).map(|_| ())
        } else {
            self.inner.cancel_now(&mut st, sub, &cause).map(|_| ())
        };
        r.map_err(|r| edit_error(&r))
    }

    /// Finance issues a credit note of `amount` cents on an invoice; `reason` is one of
    /// Stripe's reasons or empty. Returns the `cn_…` id.
    pub fn issue_credit_note(&self, invoice: &str, amount: i64, reason: &str) -> Result<String, SimError> {
        let mut st = self.inner.lock();
        if !st.ledger.invoices.contains_key(invoice) {
            return Err(SimError::UnknownRecord {
                kind: "invoice",
                id: invoice.into(),
            });
        }
        let mut pairs = vec![
            ("invoice".to_string(), invoice.to_string()),
            ("amount".to_string(), amount.to_string()),
        ];
        if !reason.is_empty() {
            pairs.push(("reason".into(), reason.into()));
        }
        let cn = self
            .inner
            .create_credit_note(&mut st, &pairs, &(None, None))
            .map_err(|r| edit_error(&r))?;
        Ok(cn["id"].as_str().unwrap_or_default().to_string())
    }

    /// Finance collects an open invoice (e.g. the customer updated their card).
    pub fn pay_invoice(&self, invoice: &str) -> Result<(), SimError> {
        let mut st = self.inner.lock();
        self.inner
            .pay_invoice(&mut st, invoice, &[], &(None, None))
            .map(|_| ())
            .map_err(|r| match r.status {
                404 => SimError::UnknownRecord {
                    kind: "invoice",
                    id: invoice.into(),
                },
                _ => edit_error(&r),
            })
    }

    /// Finance voids an open invoice.
    pub fn void_invoice(&self, invoice: &str) -> Result<(), SimError> {
        let mut st = self.inner.lock();
        self.inner
            .void_invoice(&mut st, invoice, &(None, None))
            .map(|_| ())
            .map_err(|r| match r.status {
                404 => SimError::UnknownRecord {
                    kind: "invoice",
                    id: invoice.into(),
                },
                _ => edit_error(&r),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn key_parts_split_brackets() {
        assert_eq!(key_parts("items[0][price]"), vec!["items", "0", "price"]);
        assert_eq!(key_parts("expand[]"), vec!["expand", ""]);
        assert_eq!(key_parts("customer"), vec!["customer"]);
        assert_eq!(key_parts("items[1][metadata][k]"), vec!["items", "1", "metadata", "k"]);
    }

    #[test]
    fn subscription_params() {
        let p = parse_sub_params(
            &pairs(&[
                ("customer", "cus_1"),
                ("items[0][price]", "price_1"),
                ("items[0][quantity]", "2"),
                ("metadata[k]", "v"),
                ("cancel_at_period_end", "true"),
                ("proration_behavior", "none"),
                ("expand[]", "latest_invoice"),
            ]),
            true,
        )
        .ok()
        .expect("valid");
        assert_eq!(p.customer.as_deref(), Some("cus_1"));
        assert_eq!(p.items[&0].price.as_deref(), Some("price_1"));
        assert_eq!(p.items[&0].quantity, Some(2));
        assert_eq!(p.cancel_at_period_end, Some(true));
        assert_eq!(p.expand, vec!["latest_invoice".to_string()]);
        let e = parse_sub_params(&pairs(&[("items[0][id]", "si_1")]), true)
            .err()
            .expect("no item ids on create");
        assert_eq!(e.body["error"]["code"], "parameter_unknown");
        assert!(parse_sub_params(&pairs(&[("items[0][id]", "si_1")]), false).is_ok());
        assert!(parse_sub_params(&pairs(&[("customer", "cus_1")]), false).is_err());
        assert!(parse_sub_params(&pairs(&[("cancel_at_period_end", "yes")]), false).is_err());
        assert!(parse_sub_params(&pairs(&[("proration_behavior", "sometimes")]), false).is_err());
        assert!(parse_sub_params(&pairs(&[("items[x][price]", "p")]), true).is_err());
    }

    #[test]
    fn seeded_plans() {
        let l = Ledger::new(1, 1_700_000_000);
        let keys: Vec<_> = l.prices.iter().map(|p| p["lookup_key"].clone()).collect();
        assert_eq!(keys, vec!["basic", "pro", "enterprise"]);
        assert_eq!(
            l.price_by_lookup("pro").map(|p| p["unit_amount"].clone()),
            Some(json!(5000))
        );
        assert!(l
            .prices
            .iter()
            .all(|p| p["product"].as_str().is_some_and(|s| s.starts_with("prod_"))));
        assert_eq!(dollars(5000), "$50.00");
        assert_eq!(dollars(1234), "$12.34");
    }
}
