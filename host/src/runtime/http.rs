//! The `kiln:plugin/http` import: outgoing HTTP on a plugin's behalf, only to origins on its
//! allow-list, with bounded sizes and a timeout no later than the call's deadline.

use std::time::{Duration, Instant};

use url::Url;

use super::bindings::resource::kiln::plugin::http::{Header, Host, HttpError, Request, Response};
use super::host_state::HostState;

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Host for HostState {
    async fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        Ok(self.send_checked(req).await)
    }
}

impl HostState {
    async fn send_checked(&mut self, req: Request) -> Result<Response, HttpError> {
        let plugin = self.plugin.clone();
        let max_body = plugin.limits.max_http_body_bytes as usize;
        let method = req.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported method {:?}",
                req.method
            )));
        }
        let url = Url::parse(&req.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL {:?}: {e}", req.url)))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(HttpError::InvalidRequest(format!(
                "{url}: only http and https URLs"
            )));
        }
        // Checked before anything touches the network, so a denied request costs nothing.
        plugin
            .allow_http
            .check(&url)
            .map_err(|why| HttpError::Denied(format!("plugin '{}': {why}", plugin.name)))?;
        let origin = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        if !self.origins.contains(&origin) {
            self.origins.push(origin);
        }
        if req.body.as_ref().is_some_and(|b| b.len() > max_body) {
            return Err(HttpError::InvalidRequest(format!(
                "request body of {} bytes is over the limit of {max_body} bytes",
                req.body.as_ref().map_or(0, Vec::len)
            )));
        }

        let now = Instant::now();
        let left = self.deadline.saturating_duration_since(now);
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(left))
            .unwrap_or(left);
        if timeout.is_zero() {
            return Err(HttpError::Timeout(format!(
                "{method} {url}: the call's deadline has passed"
            )));
        }

        let method_v = reqwest::Method::from_bytes(method.as_bytes()).expect("checked above");
        let mut builder = plugin.http.request(method_v, url.clone()).timeout(timeout);
        let credential = plugin.credentials.as_ref().map(|c| c.header());
        for h in &req.headers {
            // The host's credential wins over a header of the same name from the plugin.
            if credential
                .as_ref()
                .is_some_and(|(name, _)| name.as_str().eq_ignore_ascii_case(&h.name))
            {
                continue;
            }
            builder = builder.header(h.name.as_str(), h.value.as_str());
        }
        if let Some((name, value)) = credential {
            builder = builder.header(name, value);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let request = builder
            .build()
            .map_err(|e| HttpError::InvalidRequest(format!("{method} {url}: {e}")))?;

        let mut resp = plugin
            .http
            .execute(request)
            .await
            .map_err(|e| map_error(&method, &url, e))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| Header {
                name: k.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        if resp.content_length().is_some_and(|n| n as usize > max_body) {
            return Err(too_large(&method, &url, max_body));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| map_error(&method, &url, e))?
        {
            if body.len() + chunk.len() > max_body {
                return Err(too_large(&method, &url, max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn too_large(method: &str, url: &Url, max: usize) -> HttpError {
    HttpError::ResponseTooLarge(format!(
        "{method} {url}: response body over the limit of {max} bytes"
    ))
}

fn map_error(method: &str, url: &Url, e: reqwest::Error) -> HttpError {
    // The source chain says what really happened (refused, reset, DNS); reqwest's own text is
    // only "error sending request".
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let text = format!("{method} {url}: {text}");
    if e.is_timeout() {
        HttpError::Timeout(text)
    } else if e.is_builder() {
        HttpError::InvalidRequest(text)
    } else {
        HttpError::Connection(text)
    }
}
