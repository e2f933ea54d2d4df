//! The cloud's requests: wait out the latency, check the token, pick a fault, handle the request
//! (unless the fault strikes first), record what the client gets, then answer or strike.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth;
use super::fault::{Fault, FaultSpec};
use super::objects::Handled;
use super::record::Entry;
use super::server::ConnCtl;
use super::{Shared, lock};

pub(crate) async fn collection(
    State(shared): State<Shared>,
    Extension(conn): Extension<Arc<ConnCtl>>,
    Path(collection): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    handle(&shared, &conn, &collection, None, req).await
}

pub(crate) async fn item(
    State(shared): State<Shared>,
    Extension(conn): Extension<Arc<ConnCtl>>,
    Path((collection, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    handle(&shared, &conn, &collection, Some(&id), req).await
}

struct Req<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

/// What the client gets, decided under the lock and delivered after it.
enum Outcome {
    Answer(Handled),
    Strike(Fault),
    Unauthorized,
}

/// What the log records of a request, and what to send.
struct Decided {
    status: Option<u16>,
    fault: Option<FaultSpec>,
    created: Option<String>,
    outcome: Outcome,
}

async fn handle(
    shared: &Shared,
    conn: &ConnCtl,
    collection: &str,
    id: Option<&str>,
    req: Req<'_>,
) -> Response {
    if collection == "_kiln" {
        // An unknown control path: neither a collection nor faulted.
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such control endpoint"})),
        )
            .into_response();
    }
    // Outside the lock, so that concurrent requests wait side by side as on a real cloud.
    let latency = lock(shared).injector.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = req.method.as_str();
    let key = req
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    let x_headers = req
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-"))
        .filter_map(|(name, v)| Some((name.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let outcome = {
        let mut state = lock(shared);
        let auth = auth::check(state.token.as_deref(), req.headers);
        let d = if auth.is_some_and(|a| !a.is_ok()) {
            // Refused before the injector is asked: a scripted fault waits for a request that
            // gets in.
            Decided {
                status: Some(401),
                fault: None,
                created: None,
                outcome: Outcome::Unauthorized,
            }
        } else {
            decide(&mut state, method, collection, id, key, req.body)
        };
        state.log.push(Entry {
            method,
            path: req.uri.path(),
            key,
            status: d.status,
            fault: d.fault,
            created: d.created,
            auth,
            x_headers,
        });
        d.outcome
    };
    match outcome {
        Outcome::Answer(handled) => answer(handled),
        Outcome::Strike(fault) => strike(fault, conn).await,
        Outcome::Unauthorized => auth::rejection(),
    }
}

/// Picks the fault and handles the request unless the fault strikes first.
fn decide(
    state: &mut super::State,
    method: &str,
    collection: &str,
    id: Option<&str>,
    key: Option<&str>,
    body: &[u8],
) -> Decided {
    match state.injector.next(method) {
        Some(f) if f.fault != Fault::Pass => {
            // A fault after handling lets the request take effect (e.g. create the object).
            let created = if f.after {
                state
                    .objects
                    .handle(method, collection, id, key, body)
                    .created
            } else {
                None
            };
            Decided {
                status: status_of(f.fault),
                fault: Some(f),
                created,
                outcome: Outcome::Strike(f.fault),
            }
        }
        _ => {
            let h = state.objects.handle(method, collection, id, key, body);
            Decided {
                status: Some(h.status),
                fault: None,
                created: h.created.clone(),
                outcome: Outcome::Answer(h),
            }
        }
    }
}

/// The status the client gets from a fault; none when it gets no response.
fn status_of(fault: Fault) -> Option<u16> {
    match fault {
        Fault::Status(code) => Some(code),
        Fault::Throttle { .. } => Some(429),
        Fault::Hang | Fault::Reset | Fault::Pass => None,
    }
}

fn answer(h: Handled) -> Response {
    let status = StatusCode::from_u16(h.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match h.body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    }
}

async fn strike(fault: Fault, conn: &ConnCtl) -> Response {
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(json!({"error": format!("injected {code}")}))).into_response()
        }
        Fault::Throttle { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_secs.to_string())],
            Json(json!({"error": "injected 429: slow down"})),
        )
            .into_response(),
        Fault::Hang => std::future::pending().await,
        // Answered as usual by `decide`, never struck.
        Fault::Pass => StatusCode::OK.into_response(),
        Fault::Reset => {
            conn.reset();
            // The connection task drops this request with the connection.
            std::future::pending().await
        }
    }
}
