//! Turns to validate a template: validation is CPU work, and a burst of large templates must
//! not take every thread of the process (its health checks and other callers). At most
//! `templates.max_concurrent` validate at once; the rest wait, and one that waits too long is
//! told to come back (503 `busy`, with `Retry-After`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// How long a template may wait for a turn before the caller is told to come back.
pub const VALIDATION_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Turns {
    semaphore: Arc<Semaphore>,
    concurrency: usize,
    wait: Duration,
}

impl Turns {
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            wait,
        }
    }

    /// A turn, held until the permit drops; `busy` after waiting `wait` for one.
    pub async fn take(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let turn = tokio::time::timeout(self.wait, self.semaphore.clone().acquire_owned()).await;
        match turn {
            Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
            Err(_) => Err(ApiError::new(
                "busy",
                format!(
                    "too many templates are being validated (templates.max_concurrent = {}); \
                     try again",
                    self.concurrency
                ),
            )
            .retry_after(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_template_past_the_limit_waits_then_is_told_to_come_back() {
        let turns = Turns::new(2, Duration::from_millis(50));
        let first = turns.take().await.unwrap();
        let _second = turns.take().await.unwrap();
        let busy = turns.take().await.unwrap_err();
        assert_eq!((busy.code.as_str(), busy.status()), ("busy", 503));
        assert_eq!(busy.retry_after_secs, Some(1));
        assert!(
            busy.message.contains("templates.max_concurrent = 2"),
            "{}",
            busy.message
        );
        // A turn given back is taken by the next one waiting.
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take().await.map(|_| ()) }
        });
        drop(first);
        waiting.await.unwrap().unwrap();
    }
}
