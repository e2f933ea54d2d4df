//! The engine registry: each engine process registers, heartbeats on the database's clock,
//! drains and marks itself stopped on a clean shutdown. An engine whose heartbeat is older than
//! its lease is dead, judged by the database's clock, never by a ping.

use super::{Result, Store};
use crate::model::Liveness;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EngineRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
}

/// An engine as the registry sees it (the API's form is `service::wire::Engine`).
#[derive(Debug, Clone)]
pub struct EngineStatus {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub status: Liveness,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub heartbeat_age_ms: i64,
    /// Jobs it holds an unexpired lease on.
    pub jobs_in_flight: i64,
    /// Stack locks (actions) it holds.
    pub locks_held: i64,
    /// Whether it holds the leader lease (and so runs maintenance).
    pub leader: bool,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: String,
    host: String,
    pid: i64,
    version: String,
    started_at: i64,
    heartbeat_at: i64,
    stopped_at: Option<i64>,
    draining_at: Option<i64>,
    lease_ms: i64,
    now: i64,
    jobs: i64,
    locks: i64,
    leads: i64,
}

impl Store {
    pub async fn register_engine(
        &self,
        id: &str,
        host: &str,
        pid: u32,
        lease_ms: i64,
    ) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO engines (id, host, pid, version, started_at, heartbeat_at, lease_ms)
             VALUES ($1, $2, $3, $4, NOW_MS, NOW_MS, $5)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = NOW_MS, stopped_at = NULL, draining_at = NULL,
                 lease_ms = excluded.lease_ms",
        ))
        .bind(id)
        .bind(host)
        .bind(i64::from(pid))
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn engine_heartbeat(&self, id: &str) -> Result<()> {
        sqlx::query(self.sql("UPDATE engines SET heartbeat_at = NOW_MS WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Shutting down: it claims nothing new and finishes (or hands back) what it holds.
    pub async fn engine_draining(&self, id: &str) -> Result<()> {
        sqlx::query(self.sql("UPDATE engines SET draining_at = NOW_MS WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn engine_stopped(&self, id: &str) -> Result<()> {
        sqlx::query(
            self.sql("UPDATE engines SET stopped_at = NOW_MS, heartbeat_at = NOW_MS WHERE id = $1"),
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn engines(&self) -> Result<Vec<EngineRow>> {
        Ok(sqlx::query_as(
            "SELECT id, host, pid, version, started_at, heartbeat_at, stopped_at FROM engines ORDER BY started_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every registered engine with its state, work and locks, judged on the database clock.
    pub async fn engine_list(&self) -> Result<Vec<EngineStatus>> {
        let rows: Vec<StatusRow> = sqlx::query_as(self.sql(
            "SELECT e.id, e.host, e.pid, e.version, e.started_at, e.heartbeat_at, e.stopped_at,
                    e.draining_at, e.lease_ms, NOW_MS AS now,
                    (SELECT COUNT(*) FROM jobs j WHERE j.lease_owner = e.id AND j.lease_expires_at >= NOW_MS) AS jobs,
                    (SELECT COUNT(*) FROM stack_locks l WHERE l.holder = e.id) AS locks,
                    (SELECT COUNT(*) FROM leader l WHERE l.holder = e.id AND l.expires_at >= NOW_MS) AS leads
             FROM engines e ORDER BY e.started_at, e.id",
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let age = r.now - r.heartbeat_at;
                let status = if r.stopped_at.is_some() {
                    Liveness::Stopped
                } else if age > r.lease_ms {
                    Liveness::Dead
                } else if r.draining_at.is_some() {
                    Liveness::Draining
                } else {
                    Liveness::Up
                };
                EngineStatus {
                    id: r.id,
                    host: r.host,
                    pid: r.pid,
                    version: r.version,
                    status,
                    started_at: r.started_at,
                    heartbeat_at: r.heartbeat_at,
                    heartbeat_age_ms: age,
                    jobs_in_flight: r.jobs,
                    locks_held: r.locks,
                    leader: r.leads > 0,
                }
            })
            .collect())
    }
}
