//! Accepting and serving connections. Each connection is served with hyper directly (not
//! `axum::serve`) so that a handler can reset its own TCP connection: SO_LINGER 0, then drop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post, put};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::Service;

use super::{Shared, cloud, control};

/// Lets a handler reset the connection it is answering on.
pub(crate) struct ConnCtl {
    /// A duplicate of the connection's socket, to set SO_LINGER on while hyper owns the stream.
    twin: Mutex<Option<socket2::Socket>>,
    reset: Notify,
}

impl ConnCtl {
    /// Makes the connection end with a TCP reset and no response: the serving task drops it.
    pub fn reset(&self) {
        if let Some(twin) = self.twin.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // Zero linger turns the close into an RST; closing the twin alone closes nothing.
            if let Err(e) = twin.set_linger(Some(Duration::ZERO)) {
                tracing::warn!("fault server: cannot set SO_LINGER for a reset: {e}");
            }
        }
        self.reset.notify_one();
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/_kiln/requests", get(control::requests))
        .route("/_kiln/objects", get(control::objects))
        .route("/_kiln/stats", get(control::stats))
        .route("/_kiln/keys", get(control::keys))
        .route("/_kiln/faults", post(control::push_faults))
        .route("/_kiln/rates", get(control::rates).put(control::set_rates))
        .route("/_kiln/token", put(control::set_token))
        .route("/{collection}", any(cloud::collection))
        .route("/{collection}/{id}", any(cloud::item))
        .with_state(shared)
}

/// Serves until the task is aborted; dropping the JoinSet then aborts every connection.
pub(crate) async fn serve(listener: TcpListener, shared: Shared) {
    let app = router(shared);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, app.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("fault server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, app: Router) {
    let twin = socket2::SockRef::from(&stream).try_clone().ok();
    let ctl = Arc::new(ConnCtl {
        twin: Mutex::new(twin),
        reset: Notify::new(),
    });
    let for_requests = ctl.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(for_requests.clone());
        app.clone().call(req)
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!("fault server: connection ended: {e}");
            }
        }
        // Returning drops the connection and so closes the socket, with the linger set above.
        _ = ctl.reset.notified() => {}
    }
}
