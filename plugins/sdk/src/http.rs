//! Outgoing HTTP over the host's `kiln:plugin/http` import, and the mapping of HTTP outcomes to
//! [`PluginError`] kinds.
//!
//! ```ignore
//! let resp = Request::post(&url)
//!     .header("Idempotency-Key", &ctx.idempotency_key)
//!     .json(&body)
//!     .send()?            // host-side failures (denied, timeout, ...) become PluginErrors
//!     .error_for_status()?; // 4xx/5xx become PluginErrors of the matching kind
//! let created: Value = resp.json()?;
//! ```
//!
//! The host checks each URL against the plugin's allow-list and bounds each request by the
//! call's deadline; there is nothing to configure here beyond an optional shorter timeout.

use serde_json::Value;

use crate::bindings::resource::kiln::plugin::http;
use crate::error::{conflict, fatal, invalid, not_found, throttled, transient, unauthorized};
use crate::types::PluginError;

pub use http::{Header, HttpError, Request, Response};

impl Request {
    /// A request with no headers, body or timeout.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout_ms: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header (names are case-insensitive; a repeated name sends both).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Sets a raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and `Content-Type: application/json` (unless already set).
    pub fn json(mut self, body: &Value) -> Self {
        if !self
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("content-type"))
        {
            self = self.header("Content-Type", "application/json");
        }
        self.body(body.to_string())
    }

    /// A per-request timeout, shorter than the call's deadline.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sends the request through the host and waits for the whole response. Any status code is
    /// a response; use [`Response::error_for_status`] to turn failures into errors.
    pub fn send(&self) -> Result<Response, HttpError> {
        http::send(self)
    }
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; an empty body is `null`. A non-JSON body is a `fatal` error.
    pub fn json(&self) -> Result<Value, PluginError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            fatal(format!(
                "HTTP {} response is not valid JSON: {e}",
                self.status
            ))
            .with_status(self.status)
        })
    }

    /// `Ok(self)` for 1xx-3xx, else the error [`status_error`] maps the status to.
    pub fn error_for_status(self) -> Result<Self, PluginError> {
        match status_error(&self) {
            None => Ok(self),
            Some(e) => Err(e),
        }
    }
}

/// Maps a 4xx/5xx response to an error of the right kind (status included); `None` otherwise.
///
/// 5xx → `transient`; 429 → `throttled` (with `Retry-After` in delta-seconds, when present);
/// 401 → `unauthorized`; 404 → `not-found`; 409 → `conflict`; any other 4xx → `invalid`.
/// The message quotes the start of the body, where servers put their reason.
pub fn status_error(resp: &Response) -> Option<PluginError> {
    let status = resp.status;
    if status < 400 {
        return None;
    }
    let text = resp.text();
    let snippet: String = text.trim().chars().take(300).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    let error = match status {
        429 => throttled(
            message,
            resp.header("retry-after").and_then(parse_retry_after),
        ),
        401 => unauthorized(message),
        404 => not_found(message),
        409 => conflict(message),
        400..=499 => invalid(message),
        _ => transient(message),
    };
    Some(error.with_status(status))
}

/// Parses a `Retry-After` value given in delta-seconds into milliseconds. An HTTP-date (or
/// anything else) gives `None`: the policy's own backoff then applies.
pub fn parse_retry_after(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| secs.saturating_mul(1000))
}

/// Host-side failures: `denied` is `fatal` with the host's message verbatim (it names the URL
/// and the rule); `invalid-request` is `invalid`; `timeout` and `connection` are `transient`;
/// `response-too-large` is `fatal`.
impl From<HttpError> for PluginError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(m) => fatal(m),
            HttpError::InvalidRequest(m) => invalid(format!("invalid HTTP request: {m}")),
            HttpError::Timeout(m) => transient(format!("HTTP timeout: {m}")),
            HttpError::Connection(m) => transient(format!("HTTP connection failed: {m}")),
            HttpError::ResponseTooLarge(m) => fatal(format!("HTTP response too large: {m}")),
        }
    }
}

impl HttpError {
    /// The kind as the WIT spells it: `denied`, `invalid-request`, `timeout`, `connection` or
    /// `response-too-large`.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Denied(_) => "denied",
            HttpError::InvalidRequest(_) => "invalid-request",
            HttpError::Timeout(_) => "timeout",
            HttpError::Connection(_) => "connection",
            HttpError::ResponseTooLarge(_) => "response-too-large",
        }
    }

    /// The host's message.
    pub fn message(&self) -> &str {
        match self {
            HttpError::Denied(m)
            | HttpError::InvalidRequest(m)
            | HttpError::Timeout(m)
            | HttpError::Connection(m)
            | HttpError::ResponseTooLarge(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn statuses_map_to_kinds() {
        let kind = |s| status_error(&resp(s, &[], "")).map(|e| (e.kind(), e.status()));
        assert_eq!(kind(200), None);
        assert_eq!(kind(302), None);
        assert_eq!(kind(500), Some(("transient", Some(500))));
        assert_eq!(kind(503), Some(("transient", Some(503))));
        assert_eq!(kind(401), Some(("unauthorized", Some(401))));
        assert_eq!(kind(404), Some(("not-found", Some(404))));
        assert_eq!(kind(409), Some(("conflict", Some(409))));
        assert_eq!(kind(400), Some(("invalid", Some(400))));
        assert_eq!(kind(422), Some(("invalid", Some(422))));
    }

    #[test]
    fn throttled_carries_retry_after() {
        let e = status_error(&resp(429, &[("Retry-After", "7")], "slow down")).unwrap();
        assert_eq!(
            (e.kind(), e.retry_after_ms(), e.status()),
            ("throttled", Some(7000), Some(429))
        );
        assert_eq!(e.message(), "HTTP 429: slow down");
        let e = status_error(&resp(
            429,
            &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
            "",
        ));
        assert_eq!(e.unwrap().retry_after_ms(), None);
    }

    #[test]
    fn host_errors_map_to_kinds() {
        let e = PluginError::from(HttpError::Denied(
            "http://x/ is not allowed by rule r".into(),
        ));
        assert_eq!(
            (e.kind(), e.message()),
            ("fatal", "http://x/ is not allowed by rule r")
        );
        assert_eq!(
            PluginError::from(HttpError::Timeout("t".into())).kind(),
            "transient"
        );
        assert_eq!(
            PluginError::from(HttpError::Connection("c".into())).kind(),
            "transient"
        );
        assert_eq!(
            PluginError::from(HttpError::InvalidRequest("i".into())).kind(),
            "invalid"
        );
        assert_eq!(
            PluginError::from(HttpError::ResponseTooLarge("l".into())).kind(),
            "fatal"
        );
    }

    #[test]
    fn request_builder_and_response_accessors() {
        let r = Request::put("http://h/x")
            .header("A", "1")
            .json(&serde_json::json!({"k": 1}))
            .timeout_ms(5);
        assert_eq!(r.method, "PUT");
        assert_eq!(r.headers[1].name, "Content-Type");
        assert_eq!(r.body.as_deref(), Some(&br#"{"k":1}"#[..]));
        assert_eq!(r.timeout_ms, Some(5));
        let ok = resp(201, &[("Location", "/x/1")], r#"{"id": 1}"#);
        assert_eq!(ok.header("location"), Some("/x/1"));
        assert_eq!(ok.json().unwrap()["id"], 1);
        assert!(resp(204, &[], "").json().unwrap().is_null());
        assert_eq!(resp(200, &[], "<html>").json().unwrap_err().kind(), "fatal");
    }
}
