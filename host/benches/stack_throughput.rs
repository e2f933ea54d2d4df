//! Create, update and delete throughput of stacks of no-op resources (`OS::Heat::None`), on
//! SQLite and (when KILN_TEST_DATABASE_URL is set) PostgreSQL, and the process's peak memory.
//! Two updates: to the same template (every resource decided unchanged: no call, no event), and
//! to one where every resource's properties changed (every resource updated in place).
//!
//!     KILN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo bench -p kiln --bench stack_throughput [-- SIZES...]
//!
//! Prints a table; figures are recorded in BENCHMARKS.md. The engine, the stacks and the
//! databases are the tests' own (`tests/support/`).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kiln::config::{Config, EngineConfig};
use kiln::engine::{Engine, Sources, StackOptions};
use kiln::store::Store;
use support::stacks::{run as running, settle_polling, sources, validate};

fn template(n: usize, version: u32) -> String {
    let mut t = String::from("heat_template_version: 2021-04-16\nresources:\n");
    for i in 0..n {
        t += &format!("  r{i}:\n    type: OS::Heat::None\n    properties: {{v: {version}}}\n");
    }
    t
}

/// Updates the stack to `text` and returns how long it took.
async fn update(
    engine: &Engine,
    store: &Store,
    id: &str,
    text: &str,
    sources: &Sources,
) -> Duration {
    let stack = validate(text, engine);
    let t = Instant::now();
    engine.update_stack(id, &stack, sources).await.unwrap();
    let status = settle(store, id).await;
    assert_eq!(status, "UPDATE_COMPLETE");
    t.elapsed()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The stack's ACTION_STATUS once its action ended, looked at every 5 ms.
async fn settle(store: &Store, id: &str) -> String {
    let row = settle_polling(store, id, Duration::from_millis(5)).await;
    format!("{}_{}", row.action, row.status)
}

async fn run(backend: &str, url: &str, config: &Config, n: usize) {
    let store = Store::open(url).await.unwrap();
    let engine = support::stacks::engine(store.clone(), config.clone(), &[]).await;
    let workers = running(&engine);
    let text = template(n, 1);
    let t = Instant::now();
    let stack = validate(&text, &engine);
    let validate = t.elapsed();
    let sources = sources(&text, StackOptions::default());
    let t = Instant::now();
    let row = engine
        .create_stack(&format!("bench-{n}"), &stack, &sources)
        .await
        .unwrap();
    let status = settle(&store, &row.id).await;
    let create = t.elapsed();
    assert_eq!(status, "CREATE_COMPLETE");
    let unchanged = update(&engine, &store, &row.id, &template(n, 1), &sources).await;
    let in_place = update(&engine, &store, &row.id, &template(n, 2), &sources).await;
    let t = Instant::now();
    engine.delete_stack(&row.id).await.unwrap();
    let status = settle(&store, &row.id).await;
    let delete = t.elapsed();
    assert_eq!(status, "DELETE_COMPLETE");
    workers.shutdown().await;
    println!(
        "| {backend:<8} | {n:>6} | {:>11.0} | {:>8.2} | {:>10.0} | {:>14.0} | {:>13.0} | {:>8.2} | {:>10.0} | {:>12.0} |",
        validate.as_secs_f64() * 1000.0,
        create.as_secs_f64(),
        n as f64 / create.as_secs_f64(),
        n as f64 / unchanged.as_secs_f64(),
        n as f64 / in_place.as_secs_f64(),
        delete.as_secs_f64(),
        n as f64 / delete.as_secs_f64(),
        peak_rss_mib()
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Config::default();
        println!("stack throughput, OS::Heat::None resources, {} engine workers\n", EngineConfig::default().workers);
        println!("| backend  |      n | validate ms | create s | create r/s | unchanged r/s | in-place r/s | delete s | delete r/s | peak RSS MiB |");
        println!("|----------|--------|-------------|----------|------------|---------------|--------------|----------|------------|--------------|");
        for &n in &sizes {
            let db = support::db::sqlite();
            run("sqlite", &db.url, &config, n).await;
        }
        if let Ok(base) = std::env::var("KILN_TEST_DATABASE_URL") {
            sqlx::any::install_default_drivers();
            for &n in &sizes {
                let db = support::db::postgres(&base).await;
                run("postgres", &db.url, &config, n).await;
                db.cleanup().await;
            }
        } else {
            println!("(PostgreSQL skipped: set KILN_TEST_DATABASE_URL)");
        }
    });
}
