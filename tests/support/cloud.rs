//! A fake REST cloud on 127.0.0.1 for the `http-resource` plugin: a collection of JSON objects
//! that honours `Idempotency-Key`, records every request, and injects scripted faults.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

/// What to do instead of answering the next request.
#[derive(Debug, Clone)]
pub enum Inject {
    Status(u16),
    Throttle {
        retry_after_secs: u64,
    },
    /// Never answer (the client's timeout must end it).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct CloudState {
    objects: Mutex<BTreeMap<String, Value>>,
    keys: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<Inject>>,
    next_id: Mutex<u64>,
}

pub struct FakeCloud {
    pub addr: SocketAddr,
    state: Arc<CloudState>,
}

impl FakeCloud {
    pub async fn start() -> Self {
        let state = Arc::new(CloudState::default());
        let app = Router::new()
            .route("/items", any(collection))
            .route("/items/{id}", any(item))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    /// The collection URL.
    pub fn url(&self) -> String {
        format!("http://{}/items", self.addr)
    }

    /// The allow-list rule admitting this server.
    pub fn rule(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn inject(&self, fault: Inject) {
        self.state.faults.lock().unwrap().push_back(fault);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn object(&self, id: &str) -> Option<Value> {
        self.state.objects.lock().unwrap().get(id).cloned()
    }

    pub fn objects(&self) -> usize {
        self.state.objects.lock().unwrap().len()
    }

    /// Changes an object behind the plugin's back (drift).
    pub fn set_field(&self, id: &str, key: &str, value: Value) {
        self.state.objects.lock().unwrap().get_mut(id).unwrap()[key] = value;
    }
}

fn key_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Records the request and returns the injected fault's response, if one is queued.
async fn intercept(
    state: &CloudState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    let fault = state.faults.lock().unwrap().pop_front();
    let (status, response) = match fault {
        None => return None,
        Some(Inject::Hang) => {
            record(state, method, path, headers, 0);
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(Inject::Status(code)) => {
            let s = StatusCode::from_u16(code).unwrap();
            (
                code,
                (s, axum::Json(json!({"error": format!("injected {code}")}))).into_response(),
            )
        }
        Some(Inject::Throttle { retry_after_secs }) => (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                axum::Json(json!({"error": "slow down"})),
            )
                .into_response(),
        ),
    };
    record(state, method, path, headers, status);
    Some(response)
}

fn record(state: &CloudState, method: &Method, path: &str, headers: &HeaderMap, status: u16) {
    state.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.to_string(),
        idempotency_key: key_of(headers),
        status,
    });
}

async fn collection(
    State(state): State<Arc<CloudState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = intercept(&state, &method, "/items", &headers).await {
        return r;
    }
    if method != Method::POST {
        record(&state, &method, "/items", &headers, 405);
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) else {
        record(&state, &Method::POST, "/items", &headers, 400);
        return (StatusCode::BAD_REQUEST, "body must be a JSON object").into_response();
    };
    // A repeated key returns the object made the first time: the API honours idempotency.
    if let Some(key) = key_of(&headers)
        && let Some(id) = state.keys.lock().unwrap().get(&key).cloned()
    {
        record(&state, &Method::POST, "/items", &headers, 200);
        let existing = state
            .objects
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or(Value::Null);
        return (StatusCode::OK, axum::Json(existing)).into_response();
    }
    let id = {
        let mut n = state.next_id.lock().unwrap();
        *n += 1;
        format!("obj-{n}")
    };
    obj.insert("id".into(), Value::String(id.clone()));
    state
        .objects
        .lock()
        .unwrap()
        .insert(id.clone(), Value::Object(obj.clone()));
    if let Some(key) = key_of(&headers) {
        state.keys.lock().unwrap().insert(key, id);
    }
    record(&state, &Method::POST, "/items", &headers, 201);
    (StatusCode::CREATED, axum::Json(Value::Object(obj))).into_response()
}

async fn item(
    State(state): State<Arc<CloudState>>,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/items/{id}");
    if let Some(r) = intercept(&state, &method, &path, &headers).await {
        return r;
    }
    let mut objects = state.objects.lock().unwrap();
    let (status, response) = match (method.as_str(), objects.get_mut(&id)) {
        (_, None) => (
            404,
            (StatusCode::NOT_FOUND, "no such object").into_response(),
        ),
        ("GET", Some(o)) => (200, axum::Json(o.clone()).into_response()),
        ("DELETE", Some(_)) => {
            objects.remove(&id);
            (204, StatusCode::NO_CONTENT.into_response())
        }
        ("PUT" | "PATCH", Some(o)) => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(new)) => {
                if method == Method::PUT {
                    *o = json!({"id": id});
                }
                for (k, v) in new {
                    o[&k] = v;
                }
                o["id"] = Value::String(id.clone());
                (200, axum::Json(o.clone()).into_response())
            }
            _ => (
                400,
                (StatusCode::BAD_REQUEST, "body must be a JSON object").into_response(),
            ),
        },
        _ => (405, StatusCode::METHOD_NOT_ALLOWED.into_response()),
    };
    drop(objects);
    record(&state, &method, &path, &headers, status);
    response
}
