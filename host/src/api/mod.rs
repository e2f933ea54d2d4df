//! The REST API (axum), served by `kiln api` and `kiln serve`: the stack operations of
//! `service`, for callers identified by bearer tokens, plus health, readiness, metrics, the
//! OpenAPI document and the web view. Every error is JSON (`service::ApiError`).

mod auth;
mod body;
mod health;
mod rate_limit;
mod stacks;
mod stream;
pub mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tracing::Instrument;

pub use auth::{Auth, AuthError};

use crate::service::{ApiError, Service};

/// The OpenAPI 3.1 document served at `/openapi.json` (a test keeps it in step with
/// `routes()` and validates it).
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub auth: Arc<Auth>,
    /// Turns true when the server shuts down, so that event streams end and let it.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Builds the router and, beside it, the list of its operations: the two cannot disagree.
struct Routes {
    router: Router<AppState>,
    list: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(mut self, method: &'static str, path: &'static str, m: MethodRouter<AppState>) -> Self {
        self.list.push((method, path));
        self.router = self.router.route(path, m);
        self
    }

    fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("GET", path, axum::routing::get(h))
    }

    fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("POST", path, axum::routing::post(h))
    }

    fn put<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("PUT", path, axum::routing::put(h))
    }

    fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("PATCH", path, axum::routing::patch(h))
    }

    fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("DELETE", path, axum::routing::delete(h))
    }
}

fn build() -> Routes {
    let r = Routes {
        router: Router::new(),
        list: Vec::new(),
    };
    let r = r
        .get("/healthz", health::healthz)
        .get("/readyz", health::readyz)
        .get("/metrics", health::metrics)
        .get("/openapi.json", health::openapi);
    let r = r
        .get("/v1/stacks", stacks::list)
        .post("/v1/stacks", stacks::create)
        .get("/v1/stacks/{stack}", stacks::show)
        .put("/v1/stacks/{stack}", stacks::update)
        .patch("/v1/stacks/{stack}", stacks::patch)
        .delete("/v1/stacks/{stack}", stacks::delete)
        .post("/v1/stacks/{stack}/preview", stacks::preview)
        .post("/v1/stacks/{stack}/cancel", stacks::cancel)
        .post("/v1/stacks/{stack}/check", stacks::check)
        .post("/v1/stacks/{stack}/resume", stacks::resume)
        .get("/v1/stacks/{stack}/resources", stacks::resources)
        .get("/v1/stacks/{stack}/resources/{resource}", stacks::resource)
        .get("/v1/stacks/{stack}/events", stacks::events)
        .get("/v1/stacks/{stack}/events/stream", stream::events)
        .get("/v1/stacks/{stack}/outputs", stacks::outputs)
        .get("/v1/stacks/{stack}/graph", stacks::graph)
        .post("/v1/validate", stacks::validate)
        .get("/v1/resource_types", stacks::resource_types)
        .get("/v1/engines", stacks::engines);
    let mut r = r;
    // The web view's static files (api/ui.rs); a test requests each one.
    r.list.extend_from_slice(UI_ROUTES);
    r.router = r.router.merge(ui::router());
    r
}

/// What `ui::router` serves.
const UI_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/ui/index.html"),
    ("GET", "/ui/app.js"),
    ("GET", "/ui/style.css"),
];

/// Every operation the API serves, as (METHOD, path template).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    build().list
}

/// The whole API, ready to serve.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    build()
        .router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::new("no_route", "no such route: see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        "method_not_allowed",
        "this route does not take that method: see /openapi.json",
    )
}

/// Each request gets a span (method, route and the stack it names) and is counted in the
/// metrics by route template, never by raw path (which would grow without bound).
async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let stack = route
        .starts_with("/v1/stacks/{stack}")
        .then(|| req.uri().path().split('/').nth(3).map(str::to_string))
        .flatten()
        .unwrap_or_default();
    let span = tracing::info_span!("http", %method, %route, stack = %stack);
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    crate::metrics::observe_http(&method, &route, status, started.elapsed().as_secs_f64());
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, "request failed");
        } else {
            tracing::debug!(status, "request");
        }
    });
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = axum::http::StatusCode::from_u16(self.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after_secs = self.retry_after_secs;
        let mut response =
            (status, axum::Json(serde_json::json!({ "error": self }))).into_response();
        if let Some(secs) = retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if status == axum::http::StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"kiln\""),
            );
        }
        response
    }
}

/// The state of a running API: the service, the callers it knows, and the shutdown signal.
pub fn state(
    service: Service,
    auth: Auth,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> AppState {
    AppState {
        service,
        auth: Arc::new(auth),
        stopping,
    }
}

/// Serves the API on `listener` until `shutdown` resolves; requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    max_body_bytes: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, max_body_bytes))
        .with_graceful_shutdown(shutdown)
        .await
}
