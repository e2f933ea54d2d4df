//! The store: the only coordinator between engines (DESIGN.md invariant 1). One code path for
//! SQLite (the embedded default, WAL) and PostgreSQL (scale-out), through sqlx's Any driver;
//! the few statements that differ (the clock, claiming) are picked by `Dialect`.
//!
//! `lease_queue` claims and fences jobs; `traversal/` starts, advances, stops and ends stack
//! actions; `reads` and `rows` are what callers read back; `event` is the one way an event is
//! written; `leader`, `maintenance`, `engines`, `stats` and `wakeups` serve the cluster.

mod engines;
mod event;
mod leader;
mod lease_queue;
mod maintenance;
mod reads;
mod rows;
mod stats;
mod traversal;
mod wakeups;

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Connection, Executor};

pub use engines::{EngineRow, EngineStatus};
use event::Event;
pub use leader::LeaderTerm;
pub use lease_queue::{Claim, Claimed, ResourceUpdate};
pub use rows::{EventRow, NewResource, NewStack, ResourceRow, StackRow, StackUpdate, format_ms};
pub use stats::QueueStats;
pub use traversal::Candidate;
pub use wakeups::Wakeups;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stack '{0}' not found")]
    StackNotFound(String),
    #[error("a stack named '{0}' already exists")]
    StackExists(String),
    /// A name looked up across projects that more than one project uses.
    #[error("stack name '{name}' is used in several projects ({}): use the stack's id", projects.join(", "))]
    Ambiguous { name: String, projects: Vec<String> },
    #[error("stack '{stack}' has an action in progress: {action} since {since}, held by {holder}")]
    ActionInProgress {
        stack: String,
        action: crate::model::Action,
        since: String,
        holder: String,
    },
    /// `cancel` of a stack with no action in progress.
    #[error("stack '{0}' has no action in progress to cancel")]
    NothingToCancel(String),
    /// This engine no longer holds the job: another engine took it over, or it was cancelled.
    #[error("lost the lease on job {0}: another engine took it over")]
    Fenced(i64),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("incompatible database: {0}")]
    Incompatible(String),
    /// The URL names no database Kiln can use.
    #[error("{0}")]
    BadUrl(String),
    /// The database could not be reached or created.
    #[error("{0}")]
    Unreachable(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// Kept to open the PostgreSQL listener for wake-ups.
    url: String,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects (creating a SQLite file and its directory if needed) and runs migrations.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::BadUrl(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://..."
            )));
        };
        let mut url = url.to_string();
        if dialect == Dialect::Sqlite {
            if let Some(path) = sqlite_path(&url)
                && let Some(dir) = Path::new(&path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unreachable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            if !url.contains("mode=") {
                url += if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                };
            }
        }
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::BadUrl(format!("bad database URL: {e}")))?
            .disable_statement_logging();
        // One plain connection first: the pool would only say that it timed out, this says
        // why (refused, unknown database, authentication).
        sqlx::AnyConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Unreachable(e.to_string()))?
            .close()
            .await?;
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Postgres {
                        // Kiln's transactions last milliseconds. A process paused or stuck
                        // inside one (SIGSTOP, a partition) must not keep its row locks, or it
                        // would block the very takeover that replaces it: the server ends such
                        // a session, and nobody waits long on a lock.
                        conn.execute("SET idle_in_transaction_session_timeout = '5s'")
                            .await?;
                        conn.execute("SET lock_timeout = '5s'").await?;
                    }
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the writer; the busy timeout makes
                        // concurrent writers (several processes on one file) wait, not fail.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let migrated = match dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&pool).await,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&pool).await,
        };
        if let Err(e) = migrated {
            use sqlx::migrate::MigrateError::{VersionMismatch, VersionMissing};
            let known = match dialect {
                Dialect::Sqlite => &SQLITE_MIGRATIONS,
                Dialect::Postgres => &POSTGRES_MIGRATIONS,
            }
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
            return Err(match e {
                // A rolling upgrade in the wrong order: this engine is older than the schema.
                // Already running older engines keep working (migrations only add, see
                // docs/ARCHITECTURE.md), but a new process of the old build must not start.
                VersionMissing(v) if v > known => StoreError::Incompatible(format!(
                    "this database's schema is version {v}, newer than this build of kiln                      knows (up to {known}): it was migrated by a newer kiln. Run the newer                      kiln here (in a rolling upgrade, start new engines with the new build                      only)"
                )),
                // A schema this release does not know: never guess; say what to do.
                VersionMismatch(_) | VersionMissing(_) => StoreError::Incompatible(format!(
                    "{e}: this database was made by another (development) build of kiln; \
                     use that build, or point KILN_DATABASE_URL at a new database"
                )),
                other => StoreError::Migrate(other),
            });
        }
        Ok(Self { pool, dialect, url })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// `q` with `NOW_MS` replaced by the database's clock in milliseconds: leases and due times
    /// are judged by one clock, not by each engine's.
    fn sql(&self, q: &'static str) -> AssertSqlSafe<String> {
        let now = match self.dialect {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        };
        AssertSqlSafe(q.replace("NOW_MS", now))
    }

    /// `sql` for a statement built at run time (placeholder lists); only constants are spliced.
    fn sql_owned(&self, q: String) -> AssertSqlSafe<String> {
        let AssertSqlSafe(now) = self.sql("NOW_MS");
        AssertSqlSafe(q.replace("NOW_MS", &now))
    }

    /// Starts a transaction that takes the write lock at once on SQLite, so that a transaction
    /// which reads and then writes never fails to upgrade its lock under concurrency.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// The newest migration applied to the database, and the newest this build has: equal
    /// when the schema is current. Also proves the database answers.
    pub async fn schema_version(&self) -> Result<(i64, i64)> {
        let (applied,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        let expected = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        Ok((applied.unwrap_or(0), expected))
    }

    /// The database's clock, in milliseconds since the epoch.
    pub async fn now_ms(&self) -> Result<i64> {
        let (now,): (i64,) = sqlx::query_as(self.sql("SELECT NOW_MS"))
            .fetch_one(&self.pool)
            .await?;
        Ok(now)
    }
}

/// Column `i` of `row`, a name of one of the model's types (`crate::model`): an unknown name
/// is corrupt data, not a panic.
fn parsed<T>(row: &sqlx::any::AnyRow, i: usize) -> Result<T>
where
    T: FromStr<Err = crate::model::UnknownValue>,
{
    use sqlx::Row;
    parse_stored(&row.try_get::<String, _>(i)?)
}

/// A stored name of one of the model's types.
fn parse_stored<T>(text: &str) -> Result<T>
where
    T: FromStr<Err = crate::model::UnknownValue>,
{
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{e}")))
}

/// The file of a `sqlite://` URL, if it names one.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}
