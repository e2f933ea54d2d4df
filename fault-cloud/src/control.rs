//! The control endpoints under `/_kiln/`: read the record, queue faults, replace the mix, rotate
//! the token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fault::FaultSpec;
use super::injector::Mix;
use super::{Shared, lock};

pub(crate) async fn requests(State(shared): State<Shared>) -> Response {
    Json(lock(&shared).log.records().to_vec()).into_response()
}

pub(crate) async fn objects(State(shared): State<Shared>) -> Response {
    Json(lock(&shared).objects.by_collection()).into_response()
}

pub(crate) async fn stats(State(shared): State<Shared>) -> Response {
    Json(lock(&shared).stats()).into_response()
}

pub(crate) async fn keys(State(shared): State<Shared>) -> Response {
    Json(lock(&shared).log.keys().clone()).into_response()
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.to_string()})),
    )
        .into_response()
}

/// Body: a JSON array of faults, e.g. `["503", "429:2", "reset", "after:hang"]`.
pub(crate) async fn push_faults(State(shared): State<Shared>, body: Bytes) -> Response {
    let faults: Vec<FaultSpec> = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("expected a JSON array of faults: {e}")),
    };
    let mut state = lock(&shared);
    for f in &faults {
        state.injector.push(*f);
    }
    Json(json!({"queued": faults.len(), "pending": state.injector.queued()})).into_response()
}

pub(crate) async fn rates(State(shared): State<Shared>) -> Response {
    Json(lock(&shared).injector.mix()).into_response()
}

/// Body: a [`Mix`], e.g. `{"rates": {"503": 0.2}, "only_methods": ["POST"], "seed": 7}`.
pub(crate) async fn set_rates(State(shared): State<Shared>, body: Bytes) -> Response {
    let mix = match serde_json::from_slice::<Mix>(&body)
        .map_err(|e| e.to_string())
        .and_then(|m| m.validated().map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => return bad_request(format!("bad mix: {e}")),
    };
    let mut state = lock(&shared);
    state.injector.set_mix(mix);
    Json(state.injector.mix()).into_response()
}

/// Body: `{"token": "abc"}` to require (or rotate to) a token, `{"token": null}` to require none.
/// The answer says only whether one is required: the token is never sent back.
pub(crate) async fn set_token(State(shared): State<Shared>, body: Bytes) -> Response {
    const EXPECTED: &str = r#"expected {"token": "..."} or {"token": null}"#;
    // By hand, not serde: a missing field must not read as null and quietly turn auth off.
    let token = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) if o.len() == 1 => match o.get("token") {
            Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
            Some(Value::String(_)) => return bad_request("the token is empty"),
            Some(Value::Null) => None,
            _ => return bad_request(EXPECTED),
        },
        Ok(_) => return bad_request(EXPECTED),
        Err(e) => return bad_request(format!("{EXPECTED}: {e}")),
    };
    let required = token.is_some();
    lock(&shared).token = token;
    Json(json!({"required": required})).into_response()
}
