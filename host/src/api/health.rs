//! What operators and their tools probe: liveness, readiness (the database answers and its
//! schema is this build's), Prometheus metrics and the OpenAPI document. No token needed.

use axum::Json as Reply;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use crate::service::ApiError;

/// The process is up and serving.
pub async fn healthz() -> Reply<Value> {
    Reply(json!({ "status": "ok" }))
}

/// Ready to take requests: the database is reachable and migrated to this build's schema.
pub async fn readyz(State(s): State<AppState>) -> Result<Reply<Value>, ApiError> {
    let store = s.service.store();
    let not_ready = |why: String| ApiError::new("not_ready", why);
    let (applied, expected) = store
        .schema_version()
        .await
        .map_err(|e| not_ready(format!("the database is not reachable: {e}")))?;
    if applied != expected {
        return Err(not_ready(format!(
            "the database schema is at migration {applied}, this build needs {expected}"
        )));
    }
    let database = match store.dialect() {
        crate::store::Dialect::Sqlite => "sqlite",
        crate::store::Dialect::Postgres => "postgres",
    };
    Ok(Reply(
        json!({ "status": "ready", "database": database, "migrations": applied }),
    ))
}

/// Every metric of this process, with the queue and engine gauges read from the database now.
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse + use<> {
    crate::metrics::scrape(s.service.store()).await
}

pub async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], super::OPENAPI)
}
