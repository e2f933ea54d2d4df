//! Bearer-token auth, so that tests can see a client refresh its credentials after a 401: when
//! the server has a token, a cloud request without `Authorization: Bearer <token>` is refused
//! before anything else happens to it (no fault consumed, no object created).

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How a request fared against the server's token; recorded only while a token is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// It carried the current token.
    Ok,
    /// It carried no `Authorization` header.
    Missing,
    /// It carried another token (e.g. one rotated away), another scheme, or an unreadable header.
    Wrong,
}

impl Auth {
    pub fn is_ok(self) -> bool {
        self == Auth::Ok
    }
}

/// None when no token is required. The comparison is plain, not constant-time: this is a test
/// server on 127.0.0.1, not a guard.
pub(crate) fn check(token: Option<&str>, headers: &HeaderMap) -> Option<Auth> {
    let token = token?;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Some(Auth::Missing);
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 7235), the token is not.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    Some(match presented {
        Some(t) if !t.is_empty() && t == token => Auth::Ok,
        _ => Auth::Wrong,
    })
}

/// The answer to a request that failed [`check`]: the same for a missing and a wrong token, as
/// real clouds do, so that a client cannot tell an expired token from none.
pub(crate) fn rejection() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "unauthorized: missing or expired token"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn only_the_current_bearer_token_passes() {
        let none = HeaderMap::new();
        assert_eq!(check(None, &none), None);
        assert_eq!(check(None, &with("Bearer x")), None);
        assert_eq!(check(Some("t1"), &none), Some(Auth::Missing));
        assert_eq!(check(Some("t1"), &with("Bearer t1")), Some(Auth::Ok));
        assert_eq!(check(Some("t1"), &with("bearer t1")), Some(Auth::Ok));
        for wrong in [
            "Bearer t2",
            "Bearer T1",
            "Basic t1",
            "t1",
            "Bearer ",
            "Bearer",
        ] {
            assert_eq!(
                check(Some("t1"), &with(wrong)),
                Some(Auth::Wrong),
                "{wrong}"
            );
        }
    }
}
