//! Wake-ups without busy polling: on PostgreSQL, engines `LISTEN` on a channel that every
//! statement making new jobs `NOTIFY`s (delivered at commit), so an idle engine claims new work
//! within milliseconds. SQLite has no such channel; engines there poll.

use sqlx::postgres::PgListener;

use super::{Dialect, Result, Store};

const CHANNEL: &str = "kiln_jobs";

/// A stream of "there may be new jobs" signals.
pub struct Wakeups {
    listener: PgListener,
}

impl Wakeups {
    /// Waits for the next notification. A lost connection is re-established by the listener;
    /// an error means it could not be, and the caller falls back to polling for a while.
    pub async fn next(&mut self) -> Result<()> {
        self.listener.recv().await?;
        Ok(())
    }
}

impl Store {
    /// Listens for new jobs; None on SQLite.
    pub async fn wakeups(&self) -> Result<Option<Wakeups>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Wakeups { listener }))
    }
}
