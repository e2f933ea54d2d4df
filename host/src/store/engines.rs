//! The engine registry: each engine process registers, heartbeats on the database's clock, and
//! marks itself stopped on a clean shutdown.

use serde::Serialize;

use super::{Result, Store};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EngineRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
}

impl Store {
    pub async fn register_engine(&self, id: &str, host: &str, pid: u32) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO engines (id, host, pid, version, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, NOW_MS, NOW_MS)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = NOW_MS, stopped_at = NULL",
        ))
        .bind(id)
        .bind(host)
        .bind(i64::from(pid))
        .bind(env!("CARGO_PKG_VERSION"))
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
}
