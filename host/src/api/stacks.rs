//! `/v1/...`: stacks, their resources, events, outputs and graph, template validation,
//! resource types and engines. Each handler is the HTTP face of one `Service` operation.

use axum::Json as Reply;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::body::{Json, OptionalJson, Query};
use crate::service::requests::{CancelStack, CreateStack, UpdateStack, ValidateTemplate};
use crate::service::{ApiError, Caller};

type Result<T> = std::result::Result<T, ApiError>;
type Created = (StatusCode, Reply<Value>);

fn accepted(stack: crate::service::wire::Stack) -> Created {
    (StatusCode::ACCEPTED, Reply(json!({ "stack": stack })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    project: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Reply<Value>> {
    let stacks = s.service.list(&caller, q.project.as_deref()).await?;
    Ok(Reply(json!({ "stacks": stacks })))
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateStack>,
) -> Result<Created> {
    let stack = s.service.create(&caller, req).await?;
    Ok((StatusCode::CREATED, Reply(json!({ "stack": stack }))))
}

#[derive(Deserialize)]
pub struct ShowQuery {
    outputs: Option<bool>,
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Reply<Value>> {
    let shown = s
        .service
        .show(&caller, &stack, q.outputs.unwrap_or(true))
        .await?;
    Ok(Reply(json!(shown)))
}

pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
    Json(req): Json<UpdateStack>,
) -> Result<Created> {
    Ok(accepted(s.service.update(&caller, &stack, req).await?))
}

/// Heat's PATCH: an update that starts from what the stack was made from.
pub async fn patch(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
    OptionalJson(mut req): OptionalJson<UpdateStack>,
) -> Result<Created> {
    req.existing = true;
    Ok(accepted(s.service.update(&caller, &stack, req).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
) -> Result<Created> {
    Ok(accepted(s.service.delete(&caller, &stack).await?))
}

pub async fn preview(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
    Json(req): Json<UpdateStack>,
) -> Result<Reply<Value>> {
    Ok(Reply(json!(s.service.preview(&caller, &stack, req).await?)))
}

pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
    OptionalJson(req): OptionalJson<CancelStack>,
) -> Result<Created> {
    Ok(accepted(s.service.cancel(&caller, &stack, req).await?))
}

pub async fn check(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
) -> Result<Created> {
    Ok(accepted(s.service.check(&caller, &stack).await?))
}

pub async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
) -> Result<Created> {
    Ok(accepted(s.service.resume(&caller, &stack).await?))
}

pub async fn resources(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
) -> Result<Reply<Value>> {
    let resources = s.service.resources(&caller, &stack).await?;
    Ok(Reply(json!({ "resources": resources })))
}

pub async fn resource(
    State(s): State<AppState>,
    caller: Caller,
    Path((stack, name)): Path<(String, String)>,
) -> Result<Reply<Value>> {
    let resource = s.service.resource(&caller, &stack, &name).await?;
    Ok(Reply(json!({ "resource": resource })))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

pub async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Reply<Value>> {
    let page = s
        .service
        .events(&caller, &stack, q.after.unwrap_or(0), q.limit)
        .await?;
    Ok(Reply(json!(page)))
}

pub async fn outputs(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
) -> Result<Reply<Value>> {
    let outputs = s.service.outputs(&caller, &stack).await?;
    Ok(Reply(json!({ "outputs": outputs })))
}

pub async fn graph(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
) -> Result<Reply<Value>> {
    Ok(Reply(json!(s.service.graph(&caller, &stack).await?)))
}

pub async fn validate(
    State(s): State<AppState>,
    _caller: Caller,
    Json(req): Json<ValidateTemplate>,
) -> Result<Reply<Value>> {
    Ok(Reply(s.service.validate(&req).await?))
}

pub async fn resource_types(State(s): State<AppState>, _caller: Caller) -> Reply<Value> {
    Reply(json!({ "resource_types": s.service.resource_types() }))
}

pub async fn engines(State(s): State<AppState>, caller: Caller) -> Result<Reply<Value>> {
    let engines = s.service.engines(&caller).await?;
    Ok(Reply(json!({ "engines": engines })))
}
