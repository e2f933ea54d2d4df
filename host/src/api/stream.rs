//! `GET /v1/stacks/{stack}/events/stream`: server-sent events. Every event as it is written
//! (`event: event`, with its id, so a reconnecting EventSource resumes after the last one it
//! saw via `Last-Event-ID`), and the stack (`event: stack`) at the start and whenever its
//! action or status changes, after the events that led to it. It reads the database like every other client,
//! so any API process can serve any stack's stream; it ends when the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;

use super::AppState;
use super::body::Query;
use crate::model::{Action, Status};
use crate::service::{ApiError, Caller, wire};
use crate::store::StackRow;

/// How often a stream looks for new events.
const POLL: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
pub struct StreamQuery {
    after: Option<i64>,
}

pub async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Path(stack): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let row = s.service.find(&caller, &stack).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let follow = Follow {
        state: s,
        stack_id: row.id.clone(),
        after: resume.or(q.after).unwrap_or(0),
        shown: None,
        queue: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok(event), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Follow {
    state: AppState,
    stack_id: String,
    /// The last event sent.
    after: i64,
    /// What the stack looked like when last sent.
    shown: Option<(Action, Status, i64, String)>,
    queue: VecDeque<Event>,
}

impl Follow {
    /// The next message, waiting for one; None when the server is stopping.
    async fn next(&mut self) -> Option<Event> {
        let mut stopping = self.state.stopping.clone();
        loop {
            if *stopping.borrow() {
                return None;
            }
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            match self.read().await {
                Ok(()) if !self.queue.is_empty() => continue,
                Ok(()) => {}
                Err(e) => {
                    // A database hiccup: say so, and try again after a pause. Not named
                    // `error`: EventSource uses that name for its own connection errors.
                    tokio::time::sleep(POLL).await;
                    let data = serde_json::json!({ "error": e }).to_string();
                    return Some(Event::default().event("stream_error").data(data));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stopping.changed() => {}
            }
        }
    }

    /// Queues what changed since the last read: the new events, then the stack if it
    /// changed. The stack is read first, so every event written before the state it shows
    /// is sent before it: a client that sees `COMPLETE` has seen the whole action.
    async fn read(&mut self) -> Result<(), ApiError> {
        let store = self.state.service.store();
        let row = store.find_stack(&self.stack_id).await?;
        for e in store.events_page(&self.stack_id, self.after, 500).await? {
            self.after = e.id;
            let id = e.id.to_string();
            let e = wire::Event::from(e);
            self.queue.push_back(json_event("event", &e).id(id));
        }
        let key = key_of(&row);
        if self.shown.as_ref() != Some(&key) {
            self.shown = Some(key);
            let stack = wire::Stack::from(row);
            self.queue.push_back(json_event("stack", &stack));
        }
        Ok(())
    }
}

fn key_of(row: &StackRow) -> (Action, Status, i64, String) {
    (
        row.action,
        row.status,
        row.traversal,
        row.status_reason.clone(),
    )
}

fn json_event(kind: &str, value: &impl serde::Serialize) -> Event {
    Event::default()
        .event(kind)
        .data(serde_json::to_string(value).expect("rows serialise"))
}
