//! Request bodies and query strings whose errors say where the problem is: the field's path
//! (`template.text`), line and column, as JSON errors with a stable code; 413 past
//! `api.max_body_bytes`, 415 for a body that is not JSON.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::service::{ApiError, Location};

/// A JSON body of type `T`. An empty body is `T`'s default when `T` has one
/// (`OptionalJson`), else an error.
pub struct Json<T>(pub T);

/// A JSON body that may be left out entirely (`POST .../cancel` with no options).
pub struct OptionalJson<T>(pub T);

async fn bytes_of<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), ApiError> {
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        });
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                "payload_too_large",
                "the request body is larger than this server takes (api.max_body_bytes)",
            )
        } else {
            ApiError::new("invalid_body", rejection.body_text())
        }
    })?;
    if !bytes.is_empty() && json != Some(true) {
        return Err(ApiError::new(
            "unsupported_media_type",
            "the request body must be JSON (Content-Type: application/json)",
        ));
    }
    Ok((json.is_some(), bytes))
}

/// Parses `bytes` as `T`, naming the field that is wrong.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let shown = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        ApiError::new("invalid_body", format!("request body: {shown}{inner}")).with_location(
            Location {
                path: (path != ".").then_some(path),
                line: Some(inner.line() as u32),
                column: Some(inner.column() as u32),
                file: None,
            },
        )
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (_, bytes) = bytes_of(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::new(
                "invalid_body",
                "a JSON request body is required (see /openapi.json)",
            ));
        }
        parse(&bytes).map(Json)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (_, bytes) = bytes_of(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// A query string of type `T`; a bad value names its parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::new(
                    "invalid_query",
                    format!("query parameter {path}: {}", e.inner()),
                )
                .with_location(Location {
                    path: Some(path),
                    ..Location::default()
                })
            })
    }
}
