//! Stripe connector: form-encoded requests, `Idempotency-Key` on every POST, `metadata[...]`,
//! Stripe's error JSON and retry headers (`Retry-After`, `Stripe-Should-Retry`).

use std::time::Duration;

use serde_json::Value;

use super::{
    clip, retry_after_ms, transport_error, BillingApi, BoxFuture, ConnResult, ConnectorError, Fields, RemoteRecord,
};

const SYSTEM: &str = "billing";

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
        let should_retry = headers
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v == "true");
        if (200..300).contains(&status) {
            return serde_json::from_str::<Value>(&body).map_err(|e| ConnectorError::Garbage {
                system: SYSTEM,
                status,
                detail: format!("body is not JSON: {e}"),
                body: clip(&body),
            });
        }
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
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
        let body = clip(&body);
        Err(match status {
            429 => ConnectorError::RateLimited {
                system: SYSTEM,
                retry_after_ms: retry_after_ms(&headers),
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

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }
}

/// Flatten a Stripe customer into contract paths.
pub fn customer_record(v: &Value) -> ConnResult<RemoteRecord> {
    let garbage = |detail: &str| ConnectorError::Garbage {
        system: SYSTEM,
        status: 200,
        detail: detail.to_string(),
        body: clip(&v.to_string()),
    };
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| garbage("customer without an id"))?;
    let mut fields = Fields::new();
    for attr in ["email", "name", "phone", "description"] {
        let val = v.get(attr).and_then(Value::as_str).filter(|s| !s.is_empty());
        fields.insert(attr.to_string(), val.map(str::to_string));
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

impl BillingApi for StripeClient {
    fn get_customer<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ConnResult<Option<RemoteRecord>>> {
        Box::pin(async move {
            match self.send(self.http.get(self.url(&format!("/v1/customers/{id}")))).await {
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
            let req = self
                .http
                .post(self.url(&format!("/v1/customers/{id}")))
                .header("Idempotency-Key", idempotency_key)
                .form(&Self::form(fields));
            customer_record(&self.send(req).await?)
        })
    }

    fn customers_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, ConnResult<Vec<RemoteRecord>>> {
        Box::pin(async move {
            let req = self
                .http
                .get(self.url("/v1/customers"))
                .query(&[("email", email), ("limit", "100")]);
            let v = self.send(req).await?;
            let data = v
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| ConnectorError::Garbage {
                    system: SYSTEM,
                    status: 200,
                    detail: "list without data".into(),
                    body: clip(&v.to_string()),
                })?;
            data.iter().map(customer_record).collect()
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
    fn customer_without_id_is_garbage() {
        let err = customer_record(&serde_json::json!({"email": "x"})).unwrap_err();
        assert_eq!(err.class(), "garbage");
    }
}
