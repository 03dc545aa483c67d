//! Stripe connector: form-encoded requests, `Idempotency-Key` on every POST, `metadata[...]`,
//! Stripe's error JSON and retry headers (`Retry-After`, `Stripe-Should-Retry`).

use std::time::Duration;

use serde_json::Value;

use super::{
    clip, retry_after_ms, transport_error, BillingApi, BoxFuture, ConnResult, ConnectorError, EventPage, Fields,
    IdForm, ListPage, RemoteRecord,
};

const SYSTEM: &str = "billing";

/// The longest id Stripe makes (its documented ceiling for object ids).
pub const MAX_ID_LEN: usize = 255;

/// Whether `id` is a Stripe object id with this prefix: the prefix, then one or more ASCII
/// letters and digits, at most `MAX_ID_LEN` in all. That is what Stripe makes (`cus_` + 14,
/// `sub_` + 24), what localstripe makes (prefix + 14 letters and digits) and what the billing
/// simulator makes (`cus_` + 14, `sub_` + 24).
pub fn is_stripe_id(prefix: &str, id: &str) -> bool {
    id.len() <= MAX_ID_LEN
        && id
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A billing customer id (`cus_…`): checked before any request names it.
pub const CUSTOMER_ID: IdForm = IdForm {
    system: SYSTEM,
    what: "billing customer id",
    expected: "a Stripe id (expected cus_ followed by letters and digits, 255 characters at most)",
    check: |id| is_stripe_id("cus_", id),
};

/// A billing subscription id (`sub_…`).
pub const SUBSCRIPTION_ID: IdForm = IdForm {
    system: SYSTEM,
    what: "billing subscription id",
    expected: "a Stripe id (expected sub_ followed by letters and digits, 255 characters at most)",
    check: |id| is_stripe_id("sub_", id),
};

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    timeout_ms: u64,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("StripeClient")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl StripeClient {
    pub fn new(base_url: &str, api_key: String, timeout_ms: u64) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms.min(5_000)))
            .build()
            .map_err(|e| ConnectorError::Transport {
                system: SYSTEM,
                detail: e.to_string(),
            })?;
        Ok(StripeClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            timeout_ms,
        })
    }

    /// Form pairs for a customer write: `email=…`, `metadata[k]=…` (an empty value deletes).
    fn form(fields: &Fields) -> Vec<(String, String)> {
        fields
            .iter()
            .filter(|(path, _)| path.as_str() != "id")
            .map(|(path, value)| {
                let key = match path.strip_prefix("metadata.") {
                    Some(k) => format!("metadata[{k}]"),
                    None => path.clone(),
                };
                (key, value.clone().unwrap_or_default())
            })
            .collect()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> ConnResult<Value> {
        let resp = req
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|e| transport_error(SYSTEM, self.timeout_ms, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| transport_error(SYSTEM, self.timeout_ms, e))?;
        classify(status, &headers, &body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }
}

/// What one Stripe answer means: the JSON of a 2xx, else the error its status, Stripe's error
/// object and `Stripe-Should-Retry` / `Retry-After` make it. Pure (no I/O): `send` hands every
/// response here, and the fuzz target `connector_stripe_responses` calls it directly.
pub fn classify(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> ConnResult<Value> {
    let should_retry = super::headers::stripe_should_retry(headers);
    if (200..300).contains(&status) {
        return serde_json::from_str::<Value>(body).map_err(|e| ConnectorError::Garbage {
            system: SYSTEM,
            status,
            detail: format!("body is not JSON: {e}"),
            body: clip(body),
        });
    }
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err
        .and_then(|e| e.get("code").or_else(|| e.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("no error message")
        .to_string();
    let body = clip(body);
    Err(match status {
        // Stripe-Should-Retry: false overrides the status: this request must not be sent
        // again (it becomes a dead letter with this reason), whatever the 429 says.
        429 if should_retry == Some(false) => ConnectorError::Rejected {
            system: SYSTEM,
            status,
            code: "should_not_retry".into(),
            message: format!("429 {code} with Stripe-Should-Retry: false (Stripe says not to retry): {message}"),
            body,
        },
        429 => ConnectorError::RateLimited {
            system: SYSTEM,
            retry_after_ms: retry_after_ms(headers),
            body,
        },
        401 | 403 => ConnectorError::Auth {
            system: SYSTEM,
            status,
            body,
        },
        s if s >= 500 && should_retry != Some(false) => ConnectorError::Server {
            system: SYSTEM,
            status,
            body,
        },
        _ if should_retry == Some(true) => ConnectorError::Server {
            system: SYSTEM,
            status,
            body,
        },
        _ if err.is_none() => ConnectorError::Garbage {
            system: SYSTEM,
            status,
            detail: "error response without Stripe's error object".into(),
            body,
        },
        _ => ConnectorError::Rejected {
            system: SYSTEM,
            status,
            code,
            message,
            body,
        },
    })
}

/// A successful answer that is not what Stripe sends.
fn garbage(detail: impl Into<String>, v: &Value) -> ConnectorError {
    ConnectorError::Garbage {
        system: SYSTEM,
        status: 200,
        detail: detail.into(),
        body: clip(&v.to_string()),
    }
}

/// The `data` array of a list or search answer.
fn data_of(v: &Value) -> ConnResult<&Vec<Value>> {
    v.get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| garbage("list without data", v))
}

/// Flatten a Stripe customer into contract paths.
pub fn customer_record(v: &Value) -> ConnResult<RemoteRecord> {
    let garbage = |detail: &str| garbage(detail, v);
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| garbage("customer without an id"))?;
    let mut fields = Fields::new();
    for attr in ["email", "name", "phone", "description"] {
        let val = v.get(attr).and_then(Value::as_str).filter(|s| !s.is_empty());
        fields.insert(attr.to_string(), val.map(str::to_string));
    }
    if let Some(d) = v.get("delinquent").and_then(Value::as_bool) {
        fields.insert("delinquent".into(), Some(d.to_string()));
    }
    if let Some(meta) = v.get("metadata").and_then(Value::as_object) {
        for (k, val) in meta {
            let s = match val {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::String(_) | Value::Null => None,
                other => Some(other.to_string()),
            };
            fields.insert(format!("metadata.{k}"), s);
        }
    }
    Ok(RemoteRecord {
        id: id.to_string(),
        fields,
    })
}

/// Major units with two decimals ("50.00") from cents.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

fn date_of(secs: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(secs, 0).map(|d| d.format("%Y-%m-%d").to_string())
}

fn time_of(secs: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(secs, 0).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Flatten a subscription into the paths the contract maps.
pub fn subscription_record(v: &Value) -> ConnResult<RemoteRecord> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| garbage("subscription without an id", v))?;
    let items = v
        .get("items")
        .and_then(|i| i.get("data"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut mrr_cents: i64 = 0;
    let mut plan = None;
    for it in &items {
        let price = it.get("price");
        let amount = price
            .and_then(|p| p.get("unit_amount"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let qty = it.get("quantity").and_then(Value::as_i64).unwrap_or(1);
        let interval = price
            .and_then(|p| p.get("recurring"))
            .and_then(|r| r.get("interval"))
            .and_then(Value::as_str)
            .unwrap_or("month");
        let count = price
            .and_then(|p| p.get("recurring"))
            .and_then(|r| r.get("interval_count"))
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(1);
        // Amounts and quantities are outside numbers: saturating, never an overflow.
        let total = amount.saturating_mul(qty);
        let per_year = |n: i64| total.saturating_mul(n) / count.saturating_mul(12);
        let monthly = match interval {
            "year" => per_year(1),
            "week" => per_year(52),
            "day" => per_year(365),
            _ => total / count,
        };
        mrr_cents = mrr_cents.saturating_add(monthly);
        if plan.is_none() {
            plan = price
                .and_then(|p| p.get("lookup_key").or_else(|| p.get("id")))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }
    let status = v.get("status").and_then(Value::as_str).map(str::to_string);
    let live = !matches!(status.as_deref(), Some("canceled") | Some("incomplete_expired"));
    let mut fields = Fields::new();
    fields.insert("status".into(), status);
    fields.insert("plan".into(), plan);
    fields.insert("mrr".into(), Some(money(if live { mrr_cents } else { 0 })));
    fields.insert(
        "next_invoice_date".into(),
        v.get("current_period_end")
            .and_then(Value::as_i64)
            .filter(|_| live)
            .and_then(date_of),
    );
    fields.insert(
        "cancel_at_period_end".into(),
        Some(
            v.get("cancel_at_period_end")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        ),
    );
    Ok(RemoteRecord {
        id: id.to_string(),
        fields,
    })
}

/// A customer's invoices summarised (`BillingApi::invoice_summary`): `amount_remaining`, the
/// open invoices' sum (saturating), and `last_payment_at`.
pub fn invoice_summary_record(customer_id: &str, invoices: &[Value]) -> RemoteRecord {
    let mut remaining: i64 = 0;
    let mut last_paid: Option<i64> = None;
    for inv in invoices {
        if inv.get("status").and_then(Value::as_str) == Some("open") {
            // An outside number: saturating, never an overflow.
            remaining = remaining.saturating_add(inv.get("amount_remaining").and_then(Value::as_i64).unwrap_or(0));
        }
        let paid_at = inv
            .get("status_transitions")
            .and_then(|t| t.get("paid_at"))
            .and_then(Value::as_i64);
        if let Some(p) = paid_at {
            last_paid = Some(last_paid.map_or(p, |l: i64| l.max(p)));
        }
    }
    let mut fields = Fields::new();
    fields.insert("amount_remaining".into(), Some(money(remaining)));
    fields.insert("last_payment_at".into(), last_paid.and_then(time_of));
    RemoteRecord {
        id: customer_id.to_string(),
        fields,
    }
}

/// One page of `GET /v1/events`: the raw events (each must have an id) and `has_more`.
pub fn event_page(v: &Value) -> ConnResult<EventPage> {
    let events = data_of(v)?.clone();
    if let Some(bad) = events.iter().find(|e| e.get("id").and_then(Value::as_str).is_none()) {
        return Err(garbage("an event without an id", bad));
    }
    Ok(EventPage {
        events,
        has_more: v.get("has_more").and_then(Value::as_bool) == Some(true),
    })
}

/// One page of `GET /v1/customers`: the customers and the cursor of the next page (the last
/// customer's id when `has_more`).
pub fn customer_list_page(v: &Value) -> ConnResult<ListPage> {
    let records = data_of(v)?
        .iter()
        .map(customer_record)
        .collect::<ConnResult<Vec<_>>>()?;
    let has_more = v.get("has_more").and_then(Value::as_bool) == Some(true);
    let next = records.last().filter(|_| has_more).map(|r| r.id.clone());
    Ok(ListPage { records, next })
}

/// The customers of a list or search answer.
pub fn customer_page(v: &Value) -> ConnResult<Vec<RemoteRecord>> {
    data_of(v)?.iter().map(customer_record).collect()
}

impl StripeClient {
    /// One page of customers (a list or a search result).
    async fn customer_page(&self, req: reqwest::RequestBuilder) -> ConnResult<Vec<RemoteRecord>> {
        customer_page(&self.send(req).await?)
    }

    /// The customer's current subscription: the newest not canceled, else the newest.
    async fn current_subscription(&self, customer_id: &str) -> ConnResult<Option<Value>> {
        let subs = self
            .list_all("/v1/subscriptions", &[("customer", customer_id), ("status", "all")], 10)
            .await?;
        let live = subs
            .iter()
            .position(|s| s.get("status").and_then(Value::as_str) != Some("canceled"));
        Ok(match live {
            Some(i) => subs.into_iter().nth(i),
            None => subs.into_iter().next(),
        })
    }

    async fn list_all(&self, path: &str, query: &[(&str, &str)], max_pages: usize) -> ConnResult<Vec<Value>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..max_pages {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("limit", "100"));
            if let Some(a) = &after {
                q.push(("starting_after", a));
            }
            let v = self.send(self.http.get(self.url(path)).query(&q)).await?;
            let data = data_of(&v)?.clone();
            after = data
                .last()
                .and_then(|d| d.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            out.extend(data);
            if v.get("has_more").and_then(Value::as_bool) != Some(true) || after.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

impl BillingApi for StripeClient {
    fn subscription_summary<'a>(&'a self, customer_id: &'a str) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move {
            CUSTOMER_ID.validate(customer_id)?;
            match self.current_subscription(customer_id).await? {
                Some(s) => subscription_record(&s),
                None => Ok(RemoteRecord {
                    id: format!("{customer_id}:no-subscription"),
                    fields: ["status", "plan", "mrr", "next_invoice_date", "cancel_at_period_end"]
                        .iter()
                        .map(|k| (k.to_string(), None))
                        .collect(),
                }),
            }
        })
    }

    fn invoice_summary<'a>(&'a self, customer_id: &'a str) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move {
            CUSTOMER_ID.validate(customer_id)?;
            let invoices = self.list_all("/v1/invoices", &[("customer", customer_id)], 10).await?;
            Ok(invoice_summary_record(customer_id, &invoices))
        })
    }

    fn change_plan<'a>(
        &'a self,
        customer_id: &'a str,
        idempotency_key: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move {
            CUSTOMER_ID.validate(customer_id)?;
            let refuse = |code: &str, message: String| ConnectorError::Rejected {
                system: SYSTEM,
                status: 0,
                code: code.into(),
                message,
                body: String::new(),
            };
            let plan = fields
                .get("plan")
                .cloned()
                .flatten()
                .ok_or_else(|| refuse("no_plan", "a plan change needs a plan (the price's lookup key)".into()))?;
            let sub = self
                .current_subscription(customer_id)
                .await?
                .filter(|s| {
                    !matches!(
                        s.get("status").and_then(Value::as_str),
                        Some("canceled") | Some("incomplete_expired")
                    )
                })
                .ok_or_else(|| {
                    refuse(
                        "no_live_subscription",
                        format!("customer {customer_id} has no live subscription whose plan could change"),
                    )
                })?;
            let sub_id = sub.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            // Checked before the plan lookup: an id Stripe would never make (empty, or with a
            // `/` in it) must not become `POST /v1/subscriptions` (a create) or another path.
            let sub_path = format!("/v1/subscriptions/{}", SUBSCRIPTION_ID.segment(&sub_id)?);
            let item = sub
                .get("items")
                .and_then(|i| i.get("data"))
                .and_then(|d| d.get(0))
                .cloned()
                .unwrap_or(Value::Null);
            let on_plan = item
                .get("price")
                .and_then(|p| p.get("lookup_key"))
                .and_then(Value::as_str);
            if on_plan == Some(plan.as_str()) {
                return subscription_record(&sub);
            }
            let item_id = item
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| garbage(format!("subscription {sub_id} has no item"), &sub))?;
            let prices = self
                .send(self.http.get(self.url("/v1/prices")).query(&[
                    ("lookup_keys[]", plan.as_str()),
                    ("active", "true"),
                    ("limit", "1"),
                ]))
                .await?;
            let price_id = prices
                .get("data")
                .and_then(|d| d.get(0))
                .and_then(|p| p.get("id"))
                .and_then(Value::as_str)
                .ok_or_else(|| refuse("unknown_plan", format!("no active price has the lookup key {plan:?}")))?;
            let mut form = vec![
                ("items[0][id]".to_string(), item_id.to_string()),
                ("items[0][price]".to_string(), price_id.to_string()),
            ];
            form.extend(
                Self::form(fields)
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("metadata[")),
            );
            let req = self
                .http
                .post(self.url(&sub_path))
                .header("Idempotency-Key", idempotency_key)
                .form(&form);
            subscription_record(&self.send(req).await?)
        })
    }

    fn get_customer<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>> {
        Box::pin(async move {
            let path = format!("/v1/customers/{}", CUSTOMER_ID.segment(id)?);
            match self.send(self.http.get(self.url(&path))).await {
                Ok(v) if v.get("deleted").and_then(Value::as_bool) == Some(true) => Ok(None),
                Ok(v) => customer_record(&v).map(Some),
                Err(ConnectorError::Rejected { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn create_customer<'a>(
        &'a self,
        idempotency_key: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move {
            let req = self
                .http
                .post(self.url("/v1/customers"))
                .header("Idempotency-Key", idempotency_key)
                .form(&Self::form(fields));
            customer_record(&self.send(req).await?)
        })
    }

    fn update_customer<'a>(
        &'a self,
        id: &'a str,
        idempotency_key: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move {
            let path = format!("/v1/customers/{}", CUSTOMER_ID.segment(id)?);
            let req = self
                .http
                .post(self.url(&path))
                .header("Idempotency-Key", idempotency_key)
                .form(&Self::form(fields));
            customer_record(&self.send(req).await?)
        })
    }

    fn customers_by_metadata<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, ConnResult<Vec<RemoteRecord>>> {
        Box::pin(async move {
            // Search query values are quoted; the ids we put there are digits, but escape anyway.
            let query = format!(
                "metadata['{key}']:'{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            );
            let req = self
                .http
                .get(self.url("/v1/customers/search"))
                .query(&[("query", query.as_str()), ("limit", "100")]);
            self.customer_page(req).await
        })
    }

    fn list_events<'a>(
        &'a self,
        created_gte: i64,
        created_lte: i64,
        starting_after: Option<&'a str>,
    ) -> BoxFuture<'a, ConnResult<EventPage>> {
        Box::pin(async move {
            let (gte, lte) = (created_gte.to_string(), created_lte.to_string());
            let mut q: Vec<(&str, &str)> = vec![("created[gte]", &gte), ("created[lte]", &lte), ("limit", "100")];
            if let Some(a) = starting_after {
                q.push(("starting_after", a));
            }
            event_page(&self.send(self.http.get(self.url("/v1/events")).query(&q)).await?)
        })
    }

    fn list_customers<'a>(&'a self, starting_after: Option<&'a str>) -> BoxFuture<'a, ConnResult<ListPage>> {
        Box::pin(async move {
            let mut q: Vec<(&str, &str)> = vec![("limit", "100")];
            if let Some(a) = starting_after {
                q.push(("starting_after", a));
            }
            customer_list_page(&self.send(self.http.get(self.url("/v1/customers")).query(&q)).await?)
        })
    }

    fn customers_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, ConnResult<Vec<RemoteRecord>>> {
        Box::pin(async move {
            let req = self
                .http
                .get(self.url("/v1/customers"))
                .query(&[("email", email), ("limit", "100")]);
            self.customer_page(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encodes_metadata_and_clears_with_empty_value() {
        let mut f = Fields::new();
        f.insert("email".into(), Some("a@b.test".into()));
        f.insert("metadata.lifecycle_stage".into(), None);
        f.insert("id".into(), Some("cus_1".into()));
        let pairs = StripeClient::form(&f);
        assert_eq!(
            pairs,
            vec![
                ("email".to_string(), "a@b.test".to_string()),
                ("metadata[lifecycle_stage]".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn subscription_flattens_plan_mrr_and_dates() {
        let v = serde_json::json!({"id": "sub_1", "status": "active", "current_period_end": 1_800_000_000,
            "cancel_at_period_end": true,
            "items": {"data": [{"quantity": 2, "price": {"lookup_key": "pro", "unit_amount": 5000,
                "recurring": {"interval": "month", "interval_count": 1}}}]}});
        let r = subscription_record(&v).unwrap();
        assert_eq!(r.get("plan"), Some("pro"));
        assert_eq!(r.get("mrr"), Some("100.00"));
        assert_eq!(r.get("next_invoice_date"), Some("2027-01-15"));
        assert_eq!(r.get("cancel_at_period_end"), Some("true"));
        let yearly = serde_json::json!({"id": "sub_2", "status": "canceled",
            "items": {"data": [{"price": {"unit_amount": 120000, "recurring": {"interval": "year"}}}]}});
        assert_eq!(subscription_record(&yearly).unwrap().get("mrr"), Some("0.00"));
        assert_eq!(money(-5), "-0.05");
    }

    #[test]
    fn extreme_amounts_saturate_instead_of_overflowing() {
        // Found by the connector_stripe_responses fuzz target: open invoices whose
        // amount_remaining sum past i64 (attempt to add with overflow).
        let inv = |remaining: i64| serde_json::json!({"id": "in_1", "status": "open", "amount_remaining": remaining});
        let r = invoice_summary_record("cus_1", &[inv(i64::MIN), inv(-500)]);
        assert_eq!(r.get("amount_remaining"), Some("-92233720368547758.08"));
        let r = invoice_summary_record("cus_1", &[inv(i64::MAX), inv(1)]);
        assert_eq!(r.get("amount_remaining"), Some("92233720368547758.07"));
        // The same in a subscription's MRR: price × quantity × 52 / 12, summed over items.
        let item = |amount: i64, qty: i64, interval: &str, count: i64| {
            serde_json::json!({"quantity": qty, "price": {"unit_amount": amount,
                "recurring": {"interval": interval, "interval_count": count}}})
        };
        for (amount, qty, interval, count) in [
            (i64::MAX, 2, "week", 1),
            (i64::MAX, i64::MAX, "day", i64::MAX),
            (i64::MIN, 3, "month", 1),
            (4900, 3, "year", i64::MAX),
        ] {
            let v = serde_json::json!({"id": "sub_1", "status": "active",
                "items": {"data": [item(amount, qty, interval, count), item(i64::MAX, 1, "month", 1)]}});
            assert!(subscription_record(&v).is_ok(), "{v}");
        }
    }

    #[test]
    fn records_with_an_empty_id_are_garbage() {
        for v in [
            serde_json::json!({"id": ""}),
            serde_json::json!({"id": "", "object": "customer"}),
        ] {
            assert_eq!(customer_record(&v).unwrap_err().class(), "garbage");
            assert_eq!(subscription_record(&v).unwrap_err().class(), "garbage");
        }
    }

    #[test]
    fn customer_without_id_is_garbage() {
        let err = customer_record(&serde_json::json!({"email": "x"})).unwrap_err();
        assert_eq!(err.class(), "garbage");
    }
}
