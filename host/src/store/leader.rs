//! The leader lease: one row that an engine holds for `lease_ms` on the database clock and
//! renews while it lives. Periodic maintenance runs only on the holder. Taking the lease over
//! is one conditional UPDATE (only an expired lease changes hands), so two engines can never
//! both hold it; each term is logged so that this can be checked afterwards.

use serde::Serialize;

use super::{Result, Store};

/// One leadership term.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LeaderTerm {
    pub term: i64,
    pub holder: String,
    pub acquired_at: i64,
    /// When its lease ran out, or (after a renewal) runs out; the moment of resigning if it
    /// resigned.
    pub expires_at: i64,
}

impl Store {
    /// Takes the lease if it is free (resigned: no holder) or expired, or renews it if `engine` holds it. Returns the
    /// term held, or None when another engine leads.
    pub async fn lead(&self, engine: &str, lease_ms: i64) -> Result<Option<LeaderTerm>> {
        let mut tx = self.begin().await?;
        // SET expressions see the row as it was: a new holder starts a new term.
        let row: Option<LeaderTerm> = sqlx::query_as(self.sql(
            "UPDATE leader SET
                 term = CASE WHEN holder = $1 THEN term ELSE term + 1 END,
                 acquired_at = CASE WHEN holder = $1 THEN acquired_at ELSE NOW_MS END,
                 holder = $1,
                 expires_at = NOW_MS + $2
             WHERE name = 'maintenance' AND (holder = $1 OR holder = '' OR expires_at < NOW_MS)
             RETURNING term, holder, acquired_at, expires_at",
        ))
        .bind(engine)
        .bind(lease_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(t) = &row {
            sqlx::query(
                "INSERT INTO leader_terms (term, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (term) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .bind(t.term)
            .bind(&t.holder)
            .bind(t.acquired_at)
            .bind(t.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Gives the lease up at once (graceful shutdown), so another engine leads without waiting
    /// for it to expire.
    pub async fn resign(&self, engine: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let row: Option<(i64,)> = sqlx::query_as(self.sql(
            "UPDATE leader SET holder = '', expires_at = NOW_MS
             WHERE name = 'maintenance' AND holder = $1 RETURNING term",
        ))
        .bind(engine)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((term,)) = row {
            sqlx::query(self.sql("UPDATE leader_terms SET expires_at = NOW_MS WHERE term = $1"))
                .bind(term)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The current leader, if its lease has not expired.
    pub async fn leader(&self) -> Result<Option<LeaderTerm>> {
        Ok(sqlx::query_as(self.sql(
            "SELECT term, holder, acquired_at, expires_at FROM leader
             WHERE name = 'maintenance' AND holder <> '' AND expires_at >= NOW_MS",
        ))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every term so far, oldest first.
    pub async fn leader_terms(&self) -> Result<Vec<LeaderTerm>> {
        Ok(sqlx::query_as(
            "SELECT term, holder, acquired_at, expires_at FROM leader_terms ORDER BY term",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
