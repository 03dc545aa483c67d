//! HubSpot CRM v3 connector: contacts read/update, custom properties, HubSpot's error JSON
//! (`category`, `correlationId`, `message`) and 429s with `policyName`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::contract::CrmObject;

use super::{
    clip, retry_after_ms, transport_error, BoxFuture, ConnResult, ConnectorError, CrmApi, Fields, PropertyDef,
    RemoteRecord,
};

const SYSTEM: &str = "crm";

#[derive(Clone)]
pub struct HubspotClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
    timeout_ms: u64,
    /// Where the `X-HubSpot-RateLimit-*` headers of every response go (the CRM budget).
    rates: std::sync::Arc<std::sync::RwLock<Option<std::sync::Arc<dyn crate::budget::RateObserver>>>>,
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
        let mut rates = crate::budget::RateHeaders::from_hubspot(&headers);
        let body = resp
            .text()
            .await
            .map_err(|e| transport_error(SYSTEM, self.timeout_ms, e))?;
        if status == 429 && field_of(&body, "policyName").as_deref() == Some("DAILY") {
            // The daily limit is spent: nothing more until the reset.
            rates.daily_remaining = Some(0);
        }
        self.observe(&rates);
        if (200..300).contains(&status) {
            if body.trim().is_empty() {
                return Ok((status, Value::Null));
            }
            return serde_json::from_str::<Value>(&body)
                .map(|v| (status, v))
                .map_err(|e| ConnectorError::Garbage {
                    system: SYSTEM,
                    status,
                    detail: format!("body is not JSON: {e}"),
                    body: clip(&body),
                });
        }
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let body_c = clip(&body);
        Err(match status {
            // HubSpot sends no Retry-After as a rule. Its rate-limit headers are the guidance:
            // with the window full, the next slot frees about interval / max from now. With
            // neither, the budget halves its rate (AIMD).
            429 => ConnectorError::RateLimited {
                system: SYSTEM,
                retry_after_ms: retry_after_ms(&headers).or_else(|| rates.slot_ms()),
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
}

/// A top-level string of a JSON error body.
fn field_of(body: &str, key: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

impl HubspotClient {
    fn observe(&self, h: &crate::budget::RateHeaders) {
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
        Some(Value::String(s)) => s.clone(),
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

impl CrmApi for HubspotClient {
    fn observe_rates(&self, observer: std::sync::Arc<dyn crate::budget::RateObserver>) {
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
            let req = self
                .http
                .get(self.url(&format!("/crm/v3/objects/{}/{id}", kind.plural())))
                .query(&[("properties", properties.join(",")), ("archived", "false".into())]);
            match self.send(req).await {
                Ok((_, v)) => contact_record(&v).map(Some),
                Err(ConnectorError::Rejected { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn update_record<'a>(
        &'a self,
        kind: CrmObject,
        id: &'a str,
        fields: &'a Fields,
    ) -> BoxFuture<'a, ConnResult<RemoteRecord>> {
        Box::pin(async move {
            let props: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone().unwrap_or_default())))
                .collect();
            let req = self
                .http
                .patch(self.url(&format!("/crm/v3/objects/{}/{id}", kind.plural())))
                .json(&json!({ "properties": props }));
            let (_, v) = self.send(req).await?;
            contact_record(&v)
        })
    }

    fn ensure_properties<'a>(&'a self, defs: &'a [PropertyDef]) -> BoxFuture<'a, ConnResult<Vec<String>>> {
        Box::pin(async move {
            let mut created = Vec::new();
            for def in defs {
                let get = self
                    .http
                    .get(self.url(&format!("/crm/v3/properties/{}/{}", def.object.plural(), def.name)));
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

    #[test]
    fn object_without_properties_is_garbage() {
        assert_eq!(contact_record(&json!({"id": "1"})).unwrap_err().class(), "garbage");
    }
}
