//! Databases for tests: a fresh SQLite file always, and a fresh PostgreSQL database when
//! `KILN_TEST_DATABASE_URL` is set (CI sets it; there, its absence is an error, not a skip).

use sqlx::{AssertSqlSafe, Connection};

pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    drop_pg: Option<(String, String)>,
}

/// The backends to run a test on.
pub async fn backends() -> Vec<TestDb> {
    let mut out = vec![sqlite()];
    match std::env::var("KILN_TEST_DATABASE_URL") {
        Ok(base) => out.push(postgres(&base).await),
        // Under CI this panics: CI must run the PostgreSQL tests.
        Err(_) => super::skip::skipped(
            "on PostgreSQL: KILN_TEST_DATABASE_URL is not set (it ran on SQLite only)",
        ),
    }
    out
}

/// A SQLite file in a new temporary directory.
pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    TestDb {
        name: "sqlite",
        url: format!("sqlite://{}", dir.path().join("kiln.db").display()),
        _dir: Some(dir),
        drop_pg: None,
    }
}

/// A new, empty PostgreSQL database on the server of `base`.
pub async fn postgres(base: &str) -> TestDb {
    sqlx::any::install_default_drivers();
    let name = format!("kiln_test_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::AnyConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to KILN_TEST_DATABASE_URL {base}: {e}"));
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("a database URL ends in /DBNAME");
    TestDb {
        name: "postgres",
        url: format!("{prefix}/{name}"),
        _dir: None,
        drop_pg: Some((base.to_string(), name)),
    }
}

impl TestDb {
    /// Drops a PostgreSQL test database (call at the end of a passing test).
    pub async fn cleanup(self) {
        if let Some((base, name)) = &self.drop_pg
            && let Ok(mut conn) = sqlx::AnyConnection::connect(base).await
        {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::query(AssertSqlSafe(drop)).execute(&mut conn).await;
        }
    }
}
