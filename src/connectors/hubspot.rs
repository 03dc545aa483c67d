//! HubSpot CRM v3 connector: contacts read/update, custom properties, HubSpot's error JSON
//! (`category`, `correlationId`, `message`) and 429s with `policyName`; the batch endpoints
//! (`batch/read`, `batch/update`, `batch/upsert`, at most 100 inputs a call) with one outcome
//! per record: 200 all done, 207 with per-record `errors` (tied to inputs by
//! `objectWriteTraceId` or `context.ids`), or a whole-call failure given to every record.

use std::time::Duration;

use serde_json::{json, Value};

use crate::contract::CrmObject;

use super::{
    clip, retry_after_ms, transport_error, BatchItem, BatchItemError, BatchUpdate, BatchUpsert, BoxFuture, ConnResult,
    ConnectorError, CrmApi, Fields, IdForm, ListPage, ModifiedSearch, PropertyDef, RemoteRecord, SearchPage,
    CRM_BATCH_MAX,
};

const SYSTEM: &str = "crm";

/// The most digits a HubSpot record id has (a 64-bit number).
pub const MAX_ID_DIGITS: usize = 20;
/// The longest CRM property name sent in a URL (HubSpot documents no limit for CRM property
/// names that we found; this bound is generous and keeps paths short).
pub const MAX_PROPERTY_NAME: usize = 100;

/// Whether `id` is a HubSpot record id: decimal digits (HubSpot's ids are numbers, sent as
/// strings; the CRM simulator's are numbers from 1001, Prism's examples `512`), at most
/// `MAX_ID_DIGITS`.
pub fn is_record_id(id: &str) -> bool {
    (1..=MAX_ID_DIGITS).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `name` is a HubSpot property's internal name: lowercase letters, digits and `_`,
/// at most `MAX_PROPERTY_NAME`.
pub fn is_property_name(name: &str) -> bool {
    (1..=MAX_PROPERTY_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

const RECORD_EXPECTED: &str = "a HubSpot record id (expected decimal digits, 20 at most)";

/// A CRM contact id: checked before any request names it.
pub const CONTACT_ID: IdForm = IdForm {
    system: SYSTEM,
    what: "crm contact id",
    expected: RECORD_EXPECTED,
    check: is_record_id,
};

/// A CRM company id.
pub const COMPANY_ID: IdForm = IdForm {
    system: SYSTEM,
    what: "crm company id",
    expected: RECORD_EXPECTED,
    check: is_record_id,
};

/// A CRM property name in a URL (`/crm/v3/properties/{type}/{name}`).
pub const PROPERTY_NAME: IdForm = IdForm {
    system: SYSTEM,
    what: "crm property name",
    expected: "a HubSpot property name (expected lowercase letters, digits and _, 100 characters at most)",
    check: is_property_name,
};

/// The id form of a record of `kind`.
pub fn record_id_form(kind: CrmObject) -> &'static IdForm {
    match kind {
        CrmObject::Contact => &CONTACT_ID,
        CrmObject::Company => &COMPANY_ID,
    }
}

#[derive(Clone)]
pub struct HubspotClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
    timeout_ms: u64,
    /// Where the `X-HubSpot-RateLimit-*` headers of every response go (the CRM budget).
    rates: std::sync::Arc<std::sync::RwLock<Option<std::sync::Arc<dyn super::headers::RateObserver>>>>,
}

impl std::fmt::Debug for HubspotClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubspotClient")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl HubspotClient {
    pub fn new(base_url: &str, token: String, timeout_ms: u64) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms.min(5_000)))
            .build()
            .map_err(|e| ConnectorError::Transport {
                system: SYSTEM,
                detail: e.to_string(),
            })?;
        Ok(HubspotClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            timeout_ms,
            rates: Default::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> ConnResult<(u16, Value)> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| transport_error(SYSTEM, self.timeout_ms, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut rates = super::headers::RateHeaders::from_hubspot(&headers);
        let body = resp
            .text()
            .await
            .map_err(|e| transport_error(SYSTEM, self.timeout_ms, e))?;
        if status == 429 && field_of(&body, "policyName").as_deref() == Some("DAILY") {
            // The daily limit is spent: nothing more until the reset.
            rates.daily_remaining = Some(0);
        }
        self.observe(&rates);
        classify(status, &headers, &body).map(|v| (status, v))
    }
}

/// What one HubSpot answer means: the JSON of a 2xx (`null` for an empty body), else the
/// error its status and HubSpot's error JSON (`category`, `message`) make it; a 429's wait
/// comes from `Retry-After` or the rate-limit headers. Pure (no I/O): `send` hands every
/// response here, and the fuzz target `connector_hubspot_responses` calls it directly.
pub fn classify(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> ConnResult<Value> {
    if (200..300).contains(&status) {
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str::<Value>(body).map_err(|e| ConnectorError::Garbage {
            system: SYSTEM,
            status,
            detail: format!("body is not JSON: {e}"),
            body: clip(body),
        });
    }
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let body_c = clip(body);
    Err(match status {
        // HubSpot sends no Retry-After as a rule. Its rate-limit headers are the guidance:
        // with the window full, the next slot frees about interval / max from now. With
        // neither, the budget halves its rate (AIMD).
        429 => ConnectorError::RateLimited {
            system: SYSTEM,
            retry_after_ms: retry_after_ms(headers)
                .or_else(|| super::headers::RateHeaders::from_hubspot(headers).slot_ms()),
            body: body_c,
        },
        401 | 403 => ConnectorError::Auth {
            system: SYSTEM,
            status,
            body: body_c,
        },
        s if s >= 500 => ConnectorError::Server {
            system: SYSTEM,
            status,
            body: body_c,
        },
        _ if parsed.is_none() => ConnectorError::Garbage {
            system: SYSTEM,
            status,
            detail: "error response is not HubSpot's error JSON".into(),
            body: body_c,
        },
        _ => ConnectorError::Rejected {
            system: SYSTEM,
            status,
            code: field("category").unwrap_or_else(|| "UNKNOWN".into()),
            message: field("message").unwrap_or_else(|| "no error message".into()),
            body: body_c,
        },
    })
}

/// The custom CRM properties driftless needs, per object type the contract maps (HubSpot's
/// standard properties are not created).
pub fn required_properties(contract: &crate::contract::Contract) -> Vec<PropertyDef> {
    use crate::contract::CrmObject;
    const STANDARD_CONTACT: &[&str] = &["email", "firstname", "lastname", "lifecyclestage", "phone", "company"];
    const STANDARD_COMPANY: &[&str] = &[
        "name",
        "domain",
        "phone",
        "industry",
        "city",
        "country",
        "lifecyclestage",
    ];
    let mut defs: Vec<PropertyDef> = Vec::new();
    let mut push = |object: CrmObject, name: &str, label: String| {
        if !defs.iter().any(|d| d.object == object && d.name == name) {
            defs.push(PropertyDef {
                object,
                name: name.to_string(),
                label,
            });
        }
    };
    for o in &contract.objects {
        push(o.crm, "driftless_correlation_id", "driftless correlation id".into());
        push(o.crm, "driftless_origin", "driftless origin".into());
        let standard = match o.crm {
            CrmObject::Contact => STANDARD_CONTACT,
            CrmObject::Company => STANDARD_COMPANY,
        };
        for f in &o.fields {
            if !standard.contains(&f.crm.as_str()) {
                push(o.crm, &f.crm, f.name.replace('_', " "));
            }
        }
    }
    defs
}

/// A 200/207 answer of a batch endpoint: its results and its per-record errors.
#[derive(Debug, Default)]
pub struct BatchAnswer {
    pub results: Vec<Value>,
    pub errors: Vec<ItemError>,
}

/// One entry of a batch answer's `errors`, with the inputs it names.
#[derive(Debug)]
pub struct ItemError {
    /// `context.ids`: the inputs' ids (record ids, or the unique property's values).
    pub ids: Vec<String>,
    /// `context.objectWriteTraceId` (or the error's own `objectWriteTraceId`).
    pub trace_ids: Vec<String>,
    pub error: ConnectorError,
}

/// Parse a 2xx batch answer (`BatchResponseSimplePublicObject[WithErrors]`).
pub fn batch_answer(status: u16, v: &Value) -> ConnResult<BatchAnswer> {
    let Some(results) = v.get("results").and_then(Value::as_array) else {
        return Err(ConnectorError::Garbage {
            system: SYSTEM,
            status,
            detail: "batch answer without `results`".into(),
            body: clip(&v.to_string()),
        });
    };
    let strings = |x: Option<&Value>| -> Vec<String> {
        match x {
            Some(Value::Array(a)) => a.iter().filter_map(scalar).collect(),
            Some(other) => scalar(other).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let errors = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    let context = e.get("context");
                    let mut trace_ids = strings(context.and_then(|c| c.get("objectWriteTraceId")));
                    trace_ids.extend(strings(e.get("objectWriteTraceId")));
                    let category = e.get("category").and_then(Value::as_str).unwrap_or("UNKNOWN");
                    let message = e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no error message")
                        .to_string();
                    ItemError {
                        ids: strings(context.and_then(|c| c.get("ids"))),
                        trace_ids,
                        error: item_error(category, message, clip(&e.to_string())),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(BatchAnswer {
        results: results.clone(),
        errors,
    })
}

/// A per-record error of a 207 answer, classed like a whole answer with that category.
fn item_error(category: &str, message: String, body: String) -> ConnectorError {
    match category {
        "RATE_LIMITS" => ConnectorError::RateLimited {
            system: SYSTEM,
            retry_after_ms: Some(1_000),
            body,
        },
        "INTERNAL_ERROR" | "SERVICE_UNAVAILABLE" | "TIMEOUT" => ConnectorError::Server {
            system: SYSTEM,
            status: 500,
            body,
        },
        _ => ConnectorError::Rejected {
            system: SYSTEM,
            status: match category {
                "OBJECT_NOT_FOUND" => 404,
                "CONFLICT" => 409,
                _ => 400,
            },
            code: category.to_string(),
            message,
            body,
        },
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Which input (index in its chunk) an answer entry belongs to: its `objectWriteTraceId`
/// (we send each input's index), else its id through `by_id`.
fn input_of(trace: Option<&str>, id: Option<&str>, n: usize, by_id: &dyn Fn(&str) -> Option<usize>) -> Option<usize> {
    trace
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|i| *i < n)
        .or_else(|| id.and_then(by_id))
}

/// Share one chunk's answer out to its inputs: `result_key` names a result's input id,
/// `by_id` finds the input holding an id. Inputs the answer does not mention are `None`.
fn distribute<T>(
    answer: BatchAnswer,
    n: usize,
    result_key: &dyn Fn(&Value) -> Option<String>,
    by_id: &dyn Fn(&str) -> Option<usize>,
    parse: &dyn Fn(&Value) -> ConnResult<T>,
) -> Vec<Option<BatchItem<T>>> {
    let mut out: Vec<Option<BatchItem<T>>> = (0..n).map(|_| None).collect();
    for r in &answer.results {
        let trace = r.get("objectWriteTraceId").and_then(Value::as_str);
        let key = result_key(r);
        if let Some(i) = input_of(trace, key.as_deref(), n, by_id) {
            out[i] = Some(parse(r).map_err(|error| BatchItemError {
                error,
                whole_call: false,
            }));
        }
    }
    for e in answer.errors {
        let named: Vec<usize> = e
            .trace_ids
            .iter()
            .filter_map(|t| input_of(Some(t), None, n, by_id))
            .chain(e.ids.iter().filter_map(|id| by_id(id)))
            .collect();
        for i in named {
            out[i] = Some(Err(BatchItemError {
                error: e.error.clone(),
                whole_call: false,
            }));
        }
    }
    out
}

/// One outcome per id of a `batch/read` call (`ids` in the order sent): the record, or `None`
/// for one HubSpot cannot find (an `OBJECT_NOT_FOUND` error, or not mentioned at all).
pub fn read_outcomes(answer: BatchAnswer, ids: &[&str]) -> Vec<BatchItem<Option<RemoteRecord>>> {
    let by_id = |id: &str| ids.iter().position(|x| *x == id);
    let items = distribute(answer, ids.len(), &|r| r.get("id").and_then(scalar), &by_id, &|r| {
        contact_record(r).map(Some)
    });
    items
        .into_iter()
        .map(|item| match item {
            // A record HubSpot cannot find does not exist (or is archived).
            Some(Err(BatchItemError {
                error: ConnectorError::Rejected { status: 404, .. },
                ..
            })) => Ok(None),
            Some(x) => x,
            None => Ok(None),
        })
        .collect()
}

/// One outcome per input of a `batch/update` call (`ids` in the order sent; each input's
/// `objectWriteTraceId` is its index): the updated record, its own error, or an error saying
/// the answer did not mention it.
pub fn update_outcomes(answer: BatchAnswer, ids: &[&str]) -> Vec<BatchItem<RemoteRecord>> {
    let by_id = |id: &str| ids.iter().position(|x| *x == id);
    let items = distribute(
        answer,
        ids.len(),
        &|r| r.get("id").and_then(scalar),
        &by_id,
        &contact_record,
    );
    items
        .into_iter()
        .zip(ids)
        .map(|(item, id)| item.unwrap_or_else(|| Err(unanswered(&format!("record {id}")))))
        .collect()
}

/// One outcome per input of a `batch/upsert` call (in the order sent): the record and whether
/// HubSpot created it, matched by trace id or by the unique property's value (any case).
pub fn upsert_outcomes(answer: BatchAnswer, inputs: &[BatchUpsert]) -> Vec<BatchItem<(RemoteRecord, bool)>> {
    let by_id = |id: &str| inputs.iter().position(|x| x.id.eq_ignore_ascii_case(id));
    let key = |r: &Value| {
        let props = r.get("properties")?;
        inputs.iter().find_map(|u| props.get(&u.id_property).and_then(scalar))
    };
    let items = distribute(answer, inputs.len(), &key, &by_id, &|r| {
        let is_new = r.get("new").and_then(Value::as_bool).unwrap_or(false);
        contact_record(r).map(|rec| (rec, is_new))
    });
    items
        .into_iter()
        .zip(inputs)
        .map(|(item, u)| item.unwrap_or_else(|| Err(unanswered(&format!("{} {}", u.id_property, u.id)))))
        .collect()
}

/// Split a chunk of batch inputs into those whose record id is of `form` (to be sent, in
/// order) and, per input, its refusal when it is not (never sent).
fn screen<'c, I>(chunk: &'c [I], id: impl Fn(&I) -> &str, form: &IdForm) -> (Vec<&'c I>, Vec<Option<ConnectorError>>) {
    let mut sent = Vec::with_capacity(chunk.len());
    let refusals = chunk
        .iter()
        .map(|input| match form.validate(id(input)) {
            Ok(()) => {
                sent.push(input);
                None
            }
            Err(e) => Some(e),
        })
        .collect();
    (sent, refusals)
}

/// The chunk's outcomes in input order: each refused input's own `InvalidId`, the others the
/// call's outcomes in the order they were sent.
fn merge<T>(refusals: Vec<Option<ConnectorError>>, sent: Vec<BatchItem<T>>) -> Vec<BatchItem<T>> {
    let mut sent = sent.into_iter();
    refusals
        .into_iter()
        .map(|refusal| match refusal {
            Some(error) => Err(BatchItemError {
                error,
                whole_call: false,
            }),
            None => sent
                .next()
                .unwrap_or_else(|| Err(unanswered("a record sent in the call"))),
        })
        .collect()
}

/// The answer did not mention this input.
fn unanswered(what: &str) -> BatchItemError {
    BatchItemError {
        error: ConnectorError::Garbage {
            system: SYSTEM,
            status: 200,
            detail: format!("the batch answer has neither a result nor an error for {what}"),
            body: String::new(),
        },
        whole_call: false,
    }
}

fn properties_json(fields: &Fields) -> serde_json::Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone().unwrap_or_default())))
        .collect()
}

/// A top-level string of a JSON error body.
fn field_of(body: &str, key: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

impl HubspotClient {
    fn observe(&self, h: &super::headers::RateHeaders) {
        if h.is_empty() {
            return;
        }
        let observer = self.rates.read().ok().and_then(|g| g.clone());
        if let Some(o) = observer {
            o.observe(h);
        }
    }
}

/// Flatten a HubSpot `SimplePublicObject` into property paths.
pub fn contact_record(v: &Value) -> ConnResult<RemoteRecord> {
    let garbage = |detail: &str| ConnectorError::Garbage {
        system: SYSTEM,
        status: 200,
        detail: detail.to_string(),
        body: clip(&v.to_string()),
    };
    let id = match v.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(garbage("object without an id")),
    };
    let props = v
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| garbage("object without properties"))?;
    let fields = props
        .iter()
        .map(|(k, val)| {
            let s = match val {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::String(_) | Value::Null => None,
                other => Some(other.to_string()),
            };
            (k.clone(), s)
        })
        .collect();
    Ok(RemoteRecord { id, fields })
}

/// One page of `GET /crm/v3/objects/{type}`: the records and the `paging.next.after` cursor.
pub fn list_page(status: u16, v: &Value) -> ConnResult<ListPage> {
    let Some(results) = v.get("results").and_then(Value::as_array) else {
        return Err(ConnectorError::Garbage {
            system: SYSTEM,
            status,
            detail: "list answer without `results`".into(),
            body: clip(&v.to_string()),
        });
    };
    let records = results.iter().map(contact_record).collect::<ConnResult<Vec<_>>>()?;
    // A next page without a cursor would restart the listing at its first page.
    let next = match v.pointer("/paging/next") {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.get("after")
                .and_then(scalar)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| ConnectorError::Garbage {
                    system: SYSTEM,
                    status,
                    detail: "list answer with paging.next but no after cursor".into(),
                    body: clip(&v.to_string()),
                })?,
        ),
    };
    Ok(ListPage { records, next })
}

/// One page of `POST /crm/v3/objects/{type}/search`: `total`, the records and the cursor.
pub fn search_page(status: u16, v: &Value) -> ConnResult<SearchPage> {
    let garbage = |detail: &str| ConnectorError::Garbage {
        system: SYSTEM,
        status,
        detail: detail.to_string(),
        body: clip(&v.to_string()),
    };
    let total = v
        .get("total")
        .and_then(Value::as_u64)
        .ok_or_else(|| garbage("search answer without a total"))?;
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| garbage("search answer without results"))?
        .iter()
        .map(contact_record)
        .collect::<ConnResult<Vec<_>>>()?;
    let next_after = v
        .get("paging")
        .and_then(|p| p.get("next"))
        .and_then(|n| n.get("after"))
        .and_then(|a| match a {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    Ok(SearchPage {
        total,
        results,
        next_after,
    })
}

/// The last-modified property HubSpot keeps on an object type.
pub fn modified_property(kind: CrmObject) -> &'static str {
    match kind {
        CrmObject::Contact => "lastmodifieddate",
        CrmObject::Company => "hs_lastmodifieddate",
    }
}

/// `PublicObjectSearchRequest` for a modified-in-window search: last-modified GTE/LTE (epoch
/// ms), sorted ascending on it, every field the spec requires (`after`, `filterGroups`,
/// `limit`, `properties`, `sorts`; `sorts` items are strings, ascending by default).
pub fn search_body(q: &ModifiedSearch<'_>) -> Value {
    let prop = modified_property(q.kind);
    let mut properties: Vec<String> = q.properties.to_vec();
    if !properties.iter().any(|p| p == prop) {
        properties.push(prop.to_string());
    }
    json!({
        "filterGroups": [{"filters": [
            {"propertyName": prop, "operator": "GTE", "value": q.from_ms.to_string()},
            {"propertyName": prop, "operator": "LTE", "value": q.to_ms.to_string()},
        ]}],
        "sorts": [prop],
        "properties": properties,
        "limit": q.limit,
        "after": q.after.unwrap_or("0"),
    })
}

impl HubspotClient {
    /// Make one batch call for the screened inputs `sent` (none: no call); a call that fails
    /// as a whole gives its error to each of them.
    async fn send_screened<'s, I, T, F, Fut>(&self, sent: &'s [&'s I], call: F) -> Vec<BatchItem<T>>
    where
        F: FnOnce(&'s [&'s I]) -> Fut,
        Fut: std::future::Future<Output = ConnResult<Vec<BatchItem<T>>>>,
    {
        if sent.is_empty() {
            return Vec::new();
        }
        match call(sent).await {
            Ok(items) => items,
            Err(error) => sent
                .iter()
                .map(|_| {
                    Err(BatchItemError {
                        error: error.clone(),
                        whole_call: true,
                    })
                })
                .collect(),
        }
    }

    /// One call to `POST /crm/v3/objects/{type}/batch/{op}`.
    async fn batch_call(&self, kind: CrmObject, op: &str, body: &Value) -> ConnResult<BatchAnswer> {
        let mut req = self
            .http
            .post(self.url(&format!("/crm/v3/objects/{}/batch/{op}", kind.plural())));
        if op == "read" {
            req = req.query(&[("archived", "false")]);
        }
        let (status, v) = self.send(req.json(body)).await?;
        batch_answer(status, &v)
    }

    /// Split `n` inputs into calls of at most 100; `call(range)` makes one call; a call that
    /// fails as a whole gives its error to each of its inputs.
    async fn chunked<T, F, Fut>(&self, n: usize, mut call: F) -> Vec<BatchItem<T>>
    where
        F: FnMut(std::ops::Range<usize>) -> Fut,
        Fut: std::future::Future<Output = ConnResult<Vec<BatchItem<T>>>>,
    {
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let end = (start + CRM_BATCH_MAX).min(n);
            match call(start..end).await {
                Ok(items) => out.extend(items),
                Err(error) => out.extend((start..end).map(|_| {
                    Err(BatchItemError {
                        error: error.clone(),
                        whole_call: true,
                    })
                })),
            }
            start = end;
        }
        out
    }
}

impl CrmApi for HubspotClient {
    fn batch_read<'a>(
        &'a self,
        kind: CrmObject,
        ids: &'a [String],
        properties: &'a [String],
    ) -> BoxFuture<'a, Vec<BatchItem<Option<RemoteRecord>>>> {
        Box::pin(self.chunked(ids.len(), move |range| async move {
            let (sent, refusals) = screen(&ids[range], |id| id.as_str(), record_id_form(kind));
            let outcomes = self
                .send_screened(&sent, |sent| async move {
                    let body = json!({
                        "inputs": sent.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                        "properties": properties,
                        "propertiesWithHistory": [],
                    });
                    let answer = self.batch_call(kind, "read", &body).await?;
                    let sent_ids: Vec<&str> = sent.iter().map(|id| id.as_str()).collect();
                    Ok(read_outcomes(answer, &sent_ids))
                })
                .await;
            Ok(merge(refusals, outcomes))
        }))
    }

    fn batch_update<'a>(
        &'a self,
        kind: CrmObject,
        inputs: &'a [BatchUpdate],
    ) -> BoxFuture<'a, Vec<BatchItem<RemoteRecord>>> {
        Box::pin(self.chunked(inputs.len(), move |range| async move {
            let (sent, refusals) = screen(&inputs[range], |u| u.id.as_str(), record_id_form(kind));
            let outcomes = self
                .send_screened(&sent, |sent| async move {
                    let body = json!({
                        "inputs": sent.iter().enumerate().map(|(i, u)| json!({
                            "id": u.id,
                            "objectWriteTraceId": i.to_string(),
                            "properties": properties_json(&u.fields),
                        })).collect::<Vec<_>>(),
                    });
                    let answer = self.batch_call(kind, "update", &body).await?;
                    let sent_ids: Vec<&str> = sent.iter().map(|u| u.id.as_str()).collect();
                    Ok(update_outcomes(answer, &sent_ids))
                })
                .await;
            Ok(merge(refusals, outcomes))
        }))
    }

    fn batch_upsert<'a>(
        &'a self,
        kind: CrmObject,
        inputs: &'a [BatchUpsert],
    ) -> BoxFuture<'a, Vec<BatchItem<(RemoteRecord, bool)>>> {
        Box::pin(self.chunked(inputs.len(), move |range| async move {
            let chunk = &inputs[range];
            let body = json!({
                "inputs": chunk.iter().enumerate().map(|(i, u)| {
                    let mut props = properties_json(&u.fields);
                    // The unique value is also set as a property, so a new record carries it
                    // and each result names its input.
                    props.entry(u.id_property.clone()).or_insert_with(|| Value::String(u.id.clone()));
                    json!({
                        "id": u.id,
                        "idProperty": u.id_property,
                        "objectWriteTraceId": i.to_string(),
                        "properties": props,
                    })
                }).collect::<Vec<_>>(),
            });
            let answer = self.batch_call(kind, "upsert", &body).await?;
            Ok(upsert_outcomes(answer, chunk))
        }))
    }

    fn observe_rates(&self, observer: std::sync::Arc<dyn super::headers::RateObserver>) {
        if let Ok(mut g) = self.rates.write() {
            *g = Some(observer);
        }
    }

    fn get_record<'a>(
        &'a self,
        kind: CrmObject,
        id: &'a str,
        properties: &'a [String],
    ) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>> {
        Box::pin(async move {
            let path = format!(
                "/crm/v3/objects/{}/{}",
                kind.plural(),
                record_id_form(kind).segment(id)?
            );
            let req = self
                .http
                .get(self.url(&path))
                .query(&[("properties", properties.join(",")), ("archived", "false".into())]);
            match self.send(req).await {
                Ok((_, v)) => contact_record(&v).map(Some),
                Err(ConnectorError::Rejected { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn list_records<'a>(
        &'a self,
        kind: CrmObject,
        properties: &'a [String],
        after: Option<&'a str>,
    ) -> BoxFuture<'a, ConnResult<ListPage>> {
        Box::pin(async move {
            let mut q: Vec<(&str, String)> = vec![
                ("limit", "100".into()),
                ("properties", properties.join(",")),
                ("archived", "false".into()),
            ];
            if let Some(a) = after {
                q.push(("after", a.to_string()));
            }
            let req = self
                .http
                .get(self.url(&format!("/crm/v3/objects/{}", kind.plural())))
                .query(&q);
            let (status, v) = self.send(req).await?;
            list_page(status, &v)
        })
    }

    fn update_record<'a>(
        &'a self,
        kind: CrmObject,
        id: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move {
            let path = format!(
                "/crm/v3/objects/{}/{}",
                kind.plural(),
                record_id_form(kind).segment(id)?
            );
            let props = properties_json(fields);
            let req = self.http.patch(self.url(&path)).json(&json!({ "properties": props }));
            let (_, v) = self.send(req).await?;
            contact_record(&v)
        })
    }

    fn search_modified<'a>(&'a self, q: ModifiedSearch<'a>) -> BoxFuture<'a, ConnResult<SearchPage>> {
        Box::pin(async move {
            let body = search_body(&q);
            let req = self
                .http
                .post(self.url(&format!("/crm/v3/objects/{}/search", q.kind.plural())))
                .json(&body);
            let (status, v) = self.send(req).await?;
            search_page(status, &v)
        })
    }

    fn ensure_properties<'a>(&'a self, defs: &'a [PropertyDef]) -> BoxFuture<'a, ConnResult<Vec<String>>> {
        Box::pin(async move {
            let mut created = Vec::new();
            // Every name is checked before the first request: a bad one sends nothing.
            for def in defs {
                PROPERTY_NAME.validate(&def.name)?;
            }
            for def in defs {
                let path = format!(
                    "/crm/v3/properties/{}/{}",
                    def.object.plural(),
                    PROPERTY_NAME.segment(&def.name)?
                );
                let get = self.http.get(self.url(&path));
                match self.send(get).await {
                    Ok(_) => continue,
                    Err(ConnectorError::Rejected { status: 404, .. }) => {}
                    Err(e) => return Err(e),
                }
                let body = json!({
                    "name": def.name,
                    "label": def.label,
                    "type": "string",
                    "fieldType": "text",
                    "groupName": match def.object {
                        CrmObject::Contact => "contactinformation",
                        CrmObject::Company => "companyinformation",
                    },
                    "description": "Maintained by driftless",
                });
                let post = self
                    .http
                    .post(self.url(&format!("/crm/v3/properties/{}", def.object.plural())))
                    .json(&body);
                match self.send(post).await {
                    Ok(_) => created.push(def.name.clone()),
                    Err(ConnectorError::Rejected { status: 409, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(created)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_record_flattens_properties_and_blank_is_none() {
        let v = json!({"id": "12", "properties": {"email": "a@b.test", "lifecyclestage": ""}});
        let r = contact_record(&v).unwrap();
        assert_eq!(r.id, "12");
        assert_eq!(r.get("email"), Some("a@b.test"));
        assert_eq!(r.get("lifecyclestage"), None);
    }

    /// A loopback HubSpot stand-in answering batch calls with canned answers, in order, and
    /// recording each request (path, body).
    struct Canned {
        base: String,
        seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
        _server: tokio::task::JoinHandle<()>,
    }

    async fn canned(answers: Vec<(u16, Value)>) -> Canned {
        use axum::http::{StatusCode, Uri};
        let queue = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(answers)));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (q, log) = (queue.clone(), seen.clone());
        let app = axum::Router::new().fallback(move |uri: Uri, body: axum::body::Bytes| {
            let (q, log) = (q.clone(), log.clone());
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push((uri.path().to_string(), body));
                let (status, answer) = q
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((500, json!({"message": "no answer left"})));
                (StatusCode::from_u16(status).unwrap(), axum::Json(answer))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Canned {
            base,
            seen,
            _server: server,
        }
    }

    fn client(c: &Canned) -> HubspotClient {
        HubspotClient::new(&c.base, "pat-test".into(), 5_000).unwrap()
    }

    fn updates(ids: &[&str]) -> Vec<BatchUpdate> {
        ids.iter()
            .map(|id| BatchUpdate {
                id: id.to_string(),
                fields: [("lifecyclestage".to_string(), Some("customer".to_string()))].into(),
            })
            .collect()
    }

    fn obj(id: &str) -> Value {
        json!({"id": id, "properties": {"lifecyclestage": "customer"}, "createdAt": "2026-01-01T00:00:00Z",
               "updatedAt": "2026-01-01T00:00:00Z", "archived": false})
    }

    fn ok_body(results: Vec<Value>) -> Value {
        json!({"status": "COMPLETE", "results": results, "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:01Z"})
    }

    #[tokio::test]
    async fn batch_update_207_gives_each_record_its_own_outcome() {
        let mut body = ok_body(vec![obj("3"), obj("1")]);
        body["numErrors"] = 1.into();
        body["errors"] = json!([{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some CONTACT objects",
                                 "context": {"ids": ["2"]}, "errors": [], "links": {}}]);
        let c = canned(vec![(207, body)]).await;
        let out = client(&c)
            .batch_update(CrmObject::Contact, &updates(&["1", "2", "3"]))
            .await;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().id, "1");
        assert_eq!(out[2].as_ref().unwrap().id, "3");
        let e = out[1].as_ref().unwrap_err();
        assert!(!e.whole_call);
        assert_eq!((e.error.class(), e.error.status()), ("validation", Some(404)));
        let seen = c.seen.lock().unwrap();
        assert_eq!(seen[0].0, "/crm/v3/objects/contacts/batch/update");
        assert_eq!(
            seen[0].1["inputs"][1],
            json!({"id": "2", "objectWriteTraceId": "1", "properties": {"lifecyclestage": "customer"}})
        );
    }

    #[tokio::test]
    async fn batch_results_are_tied_to_inputs_by_object_write_trace_id() {
        let mut a = obj("900");
        a["objectWriteTraceId"] = "1".into();
        let mut body = ok_body(vec![a]);
        body["errors"] =
            json!([{"category": "VALIDATION_ERROR", "message": "bad value", "context": {"objectWriteTraceId": ["0"]}}]);
        let c = canned(vec![(207, body)]).await;
        let out = client(&c).batch_update(CrmObject::Company, &updates(&["7", "8"])).await;
        assert_eq!(out[0].as_ref().unwrap_err().error.status(), Some(400));
        assert_eq!(out[1].as_ref().unwrap().id, "900");
    }

    #[tokio::test]
    async fn whole_call_failures_reach_every_record_and_keep_their_class() {
        let refused = json!({"status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid",
                             "correlationId": "c-1"});
        let c = canned(vec![
            (400, refused),
            (429, json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "category": "RATE_LIMITS", "policyName": "TEN_SECONDLY_ROLLING"})),
            (502, json!({"message": "bad gateway"})),
        ])
        .await;
        let hs = client(&c);
        for (class, retryable) in [("validation", false), ("rate_limited", true), ("server", true)] {
            let out = hs.batch_update(CrmObject::Contact, &updates(&["1", "2"])).await;
            for item in &out {
                let e = item.as_ref().unwrap_err();
                assert!(e.whole_call, "{e:?}");
                assert_eq!((e.error.class(), e.error.retryable()), (class, retryable));
            }
        }
    }

    #[tokio::test]
    async fn a_result_missing_from_the_answer_is_an_error_for_that_record_only() {
        let c = canned(vec![(200, ok_body(vec![obj("1")]))]).await;
        let out = client(&c).batch_update(CrmObject::Contact, &updates(&["1", "2"])).await;
        assert!(out[0].is_ok());
        let e = out[1].as_ref().unwrap_err();
        assert!(!e.whole_call && e.error.retryable(), "{e:?}");
    }

    #[tokio::test]
    async fn more_than_100_inputs_are_split_into_calls_of_at_most_100() {
        let ids: Vec<String> = (1..=250).map(|i| i.to_string()).collect();
        let answer = |r: std::ops::RangeInclusive<usize>| (200, ok_body(r.map(|i| obj(&i.to_string())).collect()));
        let c = canned(vec![
            answer(1..=100),
            (503, json!({"message": "unavailable"})),
            answer(201..=250),
        ])
        .await;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let out = client(&c).batch_update(CrmObject::Contact, &updates(&refs)).await;
        let sizes: Vec<usize> = c
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b["inputs"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(out.len(), 250);
        assert!(out[..100].iter().all(Result::is_ok));
        assert!(out[100..200]
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.whole_call && e.error.class() == "server")));
        assert_eq!(out[249].as_ref().unwrap().id, "250");
    }

    #[tokio::test]
    async fn batch_read_maps_missing_records_to_none() {
        let mut body = ok_body(vec![obj("5")]);
        body["errors"] = json!([{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some CONTACT objects, they may be deleted or not exist.", "context": {"ids": ["6"]}}]);
        let c = canned(vec![(207, body)]).await;
        let ids = vec!["5".to_string(), "6".to_string()];
        let out = client(&c)
            .batch_read(CrmObject::Contact, &ids, &["lifecyclestage".to_string()])
            .await;
        assert_eq!(
            out[0].as_ref().unwrap().as_ref().unwrap().get("lifecyclestage"),
            Some("customer")
        );
        assert_eq!(out[1].as_ref().unwrap(), &None);
        let seen = c.seen.lock().unwrap();
        assert_eq!(seen[0].0, "/crm/v3/objects/contacts/batch/read");
        assert_eq!(
            seen[0].1,
            json!({"inputs": [{"id": "5"}, {"id": "6"}], "properties": ["lifecyclestage"], "propertiesWithHistory": []})
        );
    }

    #[tokio::test]
    async fn batch_upsert_matches_results_by_unique_value_and_reports_new_records() {
        let mut a = obj("11");
        a["properties"]["email"] = "B@Example.test".into();
        a["new"] = true.into();
        let mut b = obj("10");
        b["properties"]["email"] = "a@example.test".into();
        b["new"] = false.into();
        let c = canned(vec![(200, ok_body(vec![a, b]))]).await;
        let inputs: Vec<BatchUpsert> = ["a@example.test", "b@example.test"]
            .iter()
            .map(|e| BatchUpsert {
                id: e.to_string(),
                id_property: "email".into(),
                fields: [("lifecyclestage".to_string(), Some("lead".to_string()))].into(),
            })
            .collect();
        let out = client(&c).batch_upsert(CrmObject::Contact, &inputs).await;
        let (ra, new_a) = out[0].as_ref().unwrap();
        let (rb, new_b) = out[1].as_ref().unwrap();
        assert_eq!(
            (ra.id.as_str(), *new_a, rb.id.as_str(), *new_b),
            ("10", false, "11", true)
        );
        let seen = c.seen.lock().unwrap();
        assert_eq!(seen[0].0, "/crm/v3/objects/contacts/batch/upsert");
        assert_eq!(
            seen[0].1["inputs"][0],
            json!({"id": "a@example.test", "idProperty": "email", "objectWriteTraceId": "0",
            "properties": {"email": "a@example.test", "lifecyclestage": "lead"}})
        );
    }

    #[test]
    fn an_empty_id_or_a_next_page_without_a_cursor_is_garbage() {
        // Found by the connector_hubspot_responses fuzz target: `"id": ""` made a record
        // with an empty id (a queue key `customer:crm:`).
        assert_eq!(
            contact_record(&json!({"id": "", "properties": {}}))
                .unwrap_err()
                .class(),
            "garbage"
        );
        assert_eq!(contact_record(&json!({"id": 7, "properties": {}})).unwrap().id, "7");
        let page = |paging: Value| json!({"results": [{"id": "7", "properties": {}}], "paging": paging});
        for paging in [
            json!({"next": {}}),
            json!({"next": {"after": ""}}),
            json!({"next": {"after": null}}),
        ] {
            assert_eq!(list_page(200, &page(paging)).unwrap_err().class(), "garbage");
        }
        assert_eq!(
            list_page(200, &page(json!({"next": {"after": "NTI1Cg%3D%3D"}})))
                .unwrap()
                .next
                .as_deref(),
            Some("NTI1Cg%3D%3D")
        );
        assert_eq!(list_page(200, &page(json!({}))).unwrap().next, None);
    }

    #[test]
    fn object_without_properties_is_garbage() {
        assert_eq!(contact_record(&json!({"id": "1"})).unwrap_err().class(), "garbage");
    }
}
