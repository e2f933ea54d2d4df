//! The cloud's requests: pick a fault, handle the request (unless the fault strikes first),
//! record what the client gets, then answer or strike.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::fault::Fault;
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
    let method = req.method.as_str();
    let key = req
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    let outcome = {
        let mut state = lock(shared);
        let fault = state.injector.next(method);
        let (status, created, outcome) = match fault {
            Some(f) => {
                // A fault after handling lets the request take effect (e.g. create the object).
                let created = if f.after {
                    let h = state.objects.handle(method, collection, id, key, req.body);
                    h.created
                } else {
                    None
                };
                (status_of(f.fault), created, Err(f.fault))
            }
            None => {
                let h = state.objects.handle(method, collection, id, key, req.body);
                (Some(h.status), h.created.clone(), Ok(h))
            }
        };
        state.log.push(Entry {
            method,
            path: req.uri.path(),
            key,
            status,
            fault,
            created,
        });
        outcome
    };
    match outcome {
        Ok(handled) => answer(handled),
        Err(fault) => strike(fault, conn).await,
    }
}

/// The status the client gets from a fault; none when it gets no response.
fn status_of(fault: Fault) -> Option<u16> {
    match fault {
        Fault::Status(code) => Some(code),
        Fault::Throttle { .. } => Some(429),
        Fault::Hang | Fault::Reset => None,
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
        Fault::Reset => {
            conn.reset();
            // The connection task drops this request with the connection.
            std::future::pending().await
        }
    }
}
