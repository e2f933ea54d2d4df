//! Create, update and delete throughput of stacks of no-op resources (`OS::Heat::None`), on
//! SQLite and (when KILN_TEST_DATABASE_URL is set) PostgreSQL, and the process's peak memory.
//! Two updates: to the same template (every resource decided unchanged: no call, no event), and
//! to one where every resource's properties changed (every resource updated in place).
//!
//!     KILN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo bench -p kiln --bench stack_throughput [-- SIZES...]
//!
//! Prints a table; figures are recorded in BENCHMARKS.md.

use std::time::{Duration, Instant};

use kiln::app::{App, Plugins};
use kiln::config::{Config, EngineConfig};
use kiln::engine::{Engine, Sources};
use kiln::store::Store;
use kiln::template::{self, SourceFile};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::watch;

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
    let file = SourceFile {
        name: "bench.yaml".into(),
        text: text.to_string(),
    };
    let stack = template::validate(&file, &[], &[], engine.plugins())
        .unwrap_or_else(|_| panic!("template"));
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

async fn settle(store: &Store, id: &str) -> String {
    loop {
        let row = store.find_stack(id).await.unwrap();
        if row.status != "IN_PROGRESS" {
            return format!("{}_{}", row.action, row.status);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run(backend: &str, url: &str, config: &Config, n: usize) {
    let store = Store::open(url).await.unwrap();
    let engine = App::on_store(config, store.clone(), Plugins::Load)
        .await
        .unwrap()
        .engine;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(rx).await }
    });
    let text = template(n, 1);
    let t = Instant::now();
    let file = SourceFile {
        name: "bench.yaml".into(),
        text: text.clone(),
    };
    let stack = template::validate(&file, &[], &[], engine.plugins())
        .unwrap_or_else(|_| panic!("template"));
    let validate = t.elapsed();
    let sources = Sources {
        template: file.name.clone(),
        template_text: text,
        environments: vec![],
        parameters: vec![],
        options: Default::default(),
    };
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
    let _ = stop.send(true);
    task.await.unwrap();
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
        let mut config = Config::default();
        config.runtime.cache_dir = Some(std::env::temp_dir().join("kiln-bench-cache"));
        println!("stack throughput, OS::Heat::None resources, {} engine workers\n", EngineConfig::default().workers);
        println!("| backend  |      n | validate ms | create s | create r/s | unchanged r/s | in-place r/s | delete s | delete r/s | peak RSS MiB |");
        println!("|----------|--------|-------------|----------|------------|---------------|--------------|----------|------------|--------------|");
        for &n in &sizes {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            run("sqlite", &url, &config, n).await;
        }
        if let Ok(base) = std::env::var("KILN_TEST_DATABASE_URL") {
            sqlx::any::install_default_drivers();
            for &n in &sizes {
                let name = format!("kiln_bench_{:08x}", rand::random::<u32>());
                let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
                let (prefix, _) = base.rsplit_once('/').unwrap();
                run("postgres", &format!("{prefix}/{name}"), &config, n).await;
                sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut conn).await.unwrap();
            }
        } else {
            println!("(PostgreSQL skipped: set KILN_TEST_DATABASE_URL)");
        }
    });
}
