//! The console API's edges: what a request must be before a handler sees it, and what every
//! refusal looks like (`{code, message}`, like every other error).
//!
//! - [`JsonBody`]: a state-changing route's body. `Content-Type: application/json` is required
//!   (a cross-origin form cannot send it without a CORS preflight, which this server never
//!   answers), the body is required (a body-less POST once paused everything with no reason),
//!   and unknown fields are refused (the request types say `deny_unknown_fields`: a misspelt
//!   `destination` instead of `scope` once paused *everything*).
//! - [`guard_origin`]: only loopback names and the public URL's host in `Host` (a DNS-rebinding
//!   page reaches the server under its own name), and no cross-origin `Origin`.
//! - [`json_errors`]: whatever answered an error in something other than JSON (axum's own
//!   rejections, the body limit's 413, a 405) answers `{code, message}` instead.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::api::ApiError;

/// An error answer: `{code, message}` with a status.
pub(crate) fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ApiError {
        code: code.into(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// A JSON request body, required, of a type that refuses unknown fields.
pub(crate) struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        if !is_json(req.headers()) {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the request body as JSON, with Content-Type: application/json",
            ));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rejection) => {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "bad_request"
                };
                return Err(refuse(status, code, rejection.body_text()));
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "body_required",
                "this route needs a JSON object as its body (`{}` where every field is optional)",
            ));
        }
        let bad = |e: serde_json::Error| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("request body: {}", plain_serde(&e)),
            )
        };
        // An object, always: serde would also read a struct from an array of its fields in
        // order (`[null, null]` resumed everything).
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
        if !value.is_object() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "request body: expected a JSON object",
            ));
        }
        T::deserialize(value).map(JsonBody).map_err(bad)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// serde's message without its Rust flavour ("invalid type: integer `5`, expected a string at
/// line 1 column 12" stays; nothing else is added).
fn plain_serde(e: &serde_json::Error) -> String {
    let s = e.to_string();
    if s.is_empty() {
        "not valid JSON".into()
    } else {
        s
    }
}

/// The hosts the console answers for: loopback names, and the public URL's host.
#[derive(Clone, Debug)]
pub(crate) struct Hosts {
    /// The public URL's host (lower case), if one is configured.
    public_host: Option<String>,
    /// The public URL's origin (`https://sync.example.com`), if one is configured.
    public_origin: Option<String>,
}

impl Hosts {
    pub(crate) fn new(public_url: Option<&str>) -> Hosts {
        let parsed = public_url.and_then(|u| reqwest::Url::parse(u).ok());
        Hosts {
            public_host: parsed
                .as_ref()
                .and_then(|u| u.host_str())
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase()),
            public_origin: parsed.map(|u| u.origin().ascii_serialization()),
        }
    }

    /// Whether a `Host` header names this server.
    fn allows_host(&self, host: &str) -> bool {
        let name = host_name(host);
        is_loopback_name(&name) || self.public_host.as_deref() == Some(name.as_str())
    }

    /// Whether an `Origin` header is this server's own origin (as `host` reached it, or the
    /// public URL's).
    fn allows_origin(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let own = format!("http://{}", host.trim().to_ascii_lowercase());
        origin == own || self.public_origin.as_deref() == Some(origin.as_str())
    }
}

/// The name part of a `Host` header (`[::1]:8417` → `::1`, `LocalHost:80` → `localhost`).
fn host_name(host: &str) -> String {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match h.rsplit_once(':') {
            Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
            _ => h,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The public URL's host, or why the URL cannot be one.
pub fn public_host(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("--public-url {url:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("--public-url {url:?} must start with https:// (or http://)"));
    }
    u.host_str()
        .map(|h| h.to_ascii_lowercase())
        .ok_or_else(|| format!("--public-url {url:?} has no host"))
}

/// Refuse a request whose `Host` is not this server's name, or that comes from another
/// origin. For the console and its API; webhooks are authenticated by their signatures.
pub(crate) async fn guard_origin(
    axum::extract::State(hosts): axum::extract::State<Hosts>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host.filter(|h| hosts.allows_host(h)) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this server answers only for 127.0.0.1, localhost and its --public-url; \
             open the console at the address driftless printed",
        );
    };
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(|o| hosts.allows_origin(o, &host));
        if !ok {
            return refuse(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "requests from another web page's origin are refused; use the console this server serves",
            );
        }
    }
    next.run(req).await
}

/// Any error answer that is not JSON becomes `{code, message}` (its headers kept).
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "server_error",
        _ => "bad_request",
    };
    let body = serde_json::to_vec(&ApiError {
        code: code.into(),
        message,
    })
    .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_read_without_ports_or_case() {
        assert_eq!(host_name("127.0.0.1:8417"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8417"), "::1");
        assert_eq!(host_name("LocalHost"), "localhost");
        assert_eq!(host_name("localhost.:80"), "localhost");
        assert_eq!(host_name("evil.example:8417"), "evil.example");
    }

    #[test]
    fn only_loopback_and_the_public_host_are_allowed() {
        let h = Hosts::new(Some("https://Sync.Example.com/base"));
        for ok in [
            "127.0.0.1:8417",
            "localhost",
            "[::1]:1",
            "127.1.2.3",
            "sync.example.com",
            "SYNC.example.com:443",
        ] {
            assert!(h.allows_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:8417",
            "",
            "example.com",
        ] {
            assert!(!h.allows_host(bad), "{bad}");
        }
        assert!(h.allows_origin("http://127.0.0.1:8417", "127.0.0.1:8417"));
        assert!(h.allows_origin("https://sync.example.com", "sync.example.com"));
        assert!(!h.allows_origin("http://evil.example", "127.0.0.1:8417"));
        assert!(!h.allows_origin("null", "127.0.0.1:8417"));
        assert!(!h.allows_origin("http://127.0.0.1:9999", "127.0.0.1:8417"));
        let none = Hosts::new(None);
        assert!(!none.allows_host("sync.example.com"));
    }
}
