//! Upgrades keep running stacks. A real engine works a stack against a cloud that fails often,
//! and is SIGKILLed while some jobs hold leases and others wait out a retry; the database is
//! then turned back into the previous release's schema (the newest migration undone, as the
//! previous build would have left it), and the new build's engine opens it, migrates it and
//! finishes the stack: every resource made exactly once, nothing left behind. On both
//! backends.
//!
//! The mixed-version rule (docs/ARCHITECTURE.md): migrations only add, so engines of the
//! previous release that are already running keep working beside new ones; a process of an
//! older build that starts on a newer schema is refused with a message saying so, shown here by
//! a schema one version ahead of this build.

mod support;

use std::time::Duration;

use fault_cloud::{Fault, FaultConfig, FaultServer, FaultSpec, Mix};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};
use support::cloud::http_stack;
use support::db::TestDb;
use support::procs::{Cluster, Settings, wait_for, wait_until};

/// How to undo each migration after the previous release, per backend. A new migration must
/// add its undo here (the test fails until it does): writing it is how its author checks that
/// an engine of the previous release, still running, can live with the new schema.
const UNDO: &[(i64, &str, &str)] = &[(
    6,
    "ALTER TABLE jobs DROP COLUMN decision",
    "ALTER TABLE jobs DROP COLUMN decision",
)];

const RESOURCES: usize = 10;

async fn connect(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url).await.expect("connecting")
}

async fn scalar(conn: &mut AnyConnection, q: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(q.to_string()))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn migrations_dir(backend: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
}

/// The newest migration this build has.
fn newest(backend: &str) -> i64 {
    std::fs::read_dir(migrations_dir(backend))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.split('_').next()?.parse::<i64>().ok()
        })
        .max()
        .unwrap()
}

async fn upgrade_on(db: &TestDb) {
    let backend = db.name;
    let newest = newest(backend);
    let undo = UNDO.iter().find(|(v, ..)| *v == newest).unwrap_or_else(|| {
        panic!(
            "migration {newest} has no undo in tests/upgrade.rs: add one (and check that \
                 the previous release's engines can run on the new schema)"
        )
    });
    let undo_sql = if backend == "sqlite" { undo.1 } else { undo.2 };

    // A third of the requests fail with 503, retried after seconds: waiting retries abound.
    let mut mix = Mix {
        latency_ms: 150,
        seed: Some(6),
        ..Mix::default()
    };
    mix.rates
        .insert(FaultSpec::before(Fault::Status(503)), 0.35);
    let cloud = FaultServer::start(FaultConfig {
        mix,
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let settings = Settings {
        workers: 2,
        extra_toml: "[retry.policies.slow]\ncomponent = \"fixed-interval\"\n\
            params = { interval_ms = 2000, max_attempts = 50 }\n\n\
            [[retry.rules]]\ntypes = [\"Kiln::HTTP::Resource\"]\n\
            errors = [\"transient\"]\npolicy = \"slow\"\n\n\
            [retry.budget]\ncapacity = 10000.0\nrefill_per_second = 1000.0\n"
            .into(),
        ..Settings::default()
    };
    let mut cluster = Cluster::new(&db.url, &settings);
    cluster.start_engine().await;
    cluster
        .submit("up", &http_stack(RESOURCES, &cloud.url("items")))
        .await;

    // Mid-stack: a job holding a lease, a job waiting out a retry, a resource done.
    let mut conn = connect(&db.url).await;
    wait_until(
        Duration::from_secs(120),
        "a leased job, a waiting retry and a finished resource at once",
        async || {
            let leased = scalar(
                &mut conn,
                "SELECT COUNT(*) FROM jobs WHERE lease_owner IS NOT NULL",
            )
            .await;
            let waiting = scalar(
                &mut conn,
                "SELECT COUNT(*) FROM jobs WHERE attempt > 1 AND lease_owner IS NULL",
            )
            .await;
            let done = scalar(
                &mut conn,
                "SELECT COUNT(*) FROM resources WHERE status = 'COMPLETE'",
            )
            .await;
            leased > 0 && waiting > 0 && done > 0 && done < RESOURCES as i64
        },
    )
    .await;
    cluster.engines[0].kill();

    // Back to the previous release's schema, with the work as the engine left it.
    sqlx::query(AssertSqlSafe(undo_sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{undo_sql}: {e}"));
    let forget = format!("DELETE FROM _sqlx_migrations WHERE version >= {newest}");
    sqlx::query(AssertSqlSafe(forget))
        .execute(&mut conn)
        .await
        .unwrap();
    let left = scalar(&mut conn, "SELECT COUNT(*) FROM jobs").await;
    assert!(left > 0, "{backend}: no work left to carry on");

    // The new build opens it: migrates, takes over the dead engine's leases, carries on.
    cluster.start_engine().await;
    let status = wait_for(
        Duration::from_secs(240),
        "the stack to finish after the upgrade",
        async || {
            let row: (String, String) =
                sqlx::query_as("SELECT action, status FROM stacks WHERE name = 'up'")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            (row.1 != "IN_PROGRESS").then_some(row)
        },
    )
    .await;
    assert_eq!(
        status,
        ("CREATE".to_string(), "COMPLETE".to_string()),
        "{backend}:\n{}",
        cluster.logs()
    );
    assert_eq!(
        scalar(&mut conn, "SELECT MAX(version) FROM _sqlx_migrations").await,
        newest,
        "{backend}: the new build did not migrate"
    );
    assert_eq!(scalar(&mut conn, "SELECT COUNT(*) FROM jobs").await, 0);
    assert_eq!(
        scalar(&mut conn, "SELECT COUNT(*) FROM stack_locks").await,
        0
    );
    // Exactly once, by the cloud's own record: one object per resource, no key used twice to
    // create.
    let keys = cloud.keys();
    let twice: Vec<_> = keys.iter().filter(|(_, k)| k.created > 1).collect();
    assert!(twice.is_empty(), "{backend}: made twice: {twice:?}");
    assert_eq!(cloud.object_count(), RESOURCES, "{backend}: objects");

    // An older build on this schema: refused, saying why.
    let ahead = newest + 1;
    let checksum = if backend == "sqlite" {
        "X'00'"
    } else {
        "decode('00', 'hex')"
    };
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ({ahead}, 'from a newer kiln', TRUE, {checksum}, 0)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let out = cluster.kiln(&["engine", "list"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!("schema is version {ahead}, newer than this build"))
            && stderr.contains(&format!("knows (up to {newest})")),
        "{backend}: an older build must refuse a newer schema clearly ({}):\n{stderr}",
        out.status
    );
    drop(conn);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_in_flight_survives_the_upgrade_of_its_database() {
    for db in support::db::backends().await {
        upgrade_on(&db).await;
        db.cleanup().await;
    }
}

/// The rule that makes the mixed-version moment safe: no migration after the first removes or
/// renames anything an engine of the previous release reads or writes, or adds a column it
/// would have to fill.
#[test]
fn migrations_after_the_first_only_add() {
    for backend in ["sqlite", "postgres"] {
        for entry in std::fs::read_dir(migrations_dir(backend)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("0001_") {
                continue;
            }
            let sql: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let words: Vec<&str> = statement.split_whitespace().collect();
                let additive = match words.as_slice() {
                    ["CREATE", ..] => true,
                    ["ALTER", "TABLE", _, "ADD", ..] => {
                        // A new column must be nullable or have a default: old engines'
                        // INSERTs do not name it.
                        !statement.contains("NOT NULL") || statement.contains("DEFAULT")
                    }
                    ["UPDATE", ..] | ["INSERT", ..] => true,
                    // An index rebuilt in the same migration (a uniqueness widened to a
                    // project, say).
                    ["DROP", "INDEX", index] => sql.contains(&format!("INDEX {index} ON")),
                    _ => false,
                };
                assert!(
                    additive,
                    "{backend}/{name}: `{statement}` is not additive: an engine of the \
                     previous release may still be running on this database"
                );
            }
        }
    }
}
