//! What a retry costs the engine beyond the plugin call itself: a stack of resources whose
//! first attempt fails (transient) against the same stack succeeding at once. The difference,
//! per resource, is one retry's overhead: the policy decision (a component call), the budget,
//! the job row rescheduled with its history and an event, and the claim that picks it up again.
//! The policy waits 0 ms, so no delay is counted.
//!
//!     KILN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo bench -p kiln --bench retry_overhead [-- SIZE]
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

const CONFIG: &str = r#"
[retry.policies.now]
component = "fixed-interval"
params = { interval_ms = 0, max_attempts = 3 }
[[retry.rules]]
policy = "now"
# The budget would (rightly) space 1,000 simultaneous retries at its refill rate; here it must
# not, so that only the work of a retry is measured.
[retry.budget]
capacity = 1e9
refill_per_second = 1e9
"#;

fn template(n: usize, fail_attempts: u32) -> String {
    let mut t = String::from("heat_template_version: 2021-04-16\nresources:\n");
    for i in 0..n {
        t += &format!(
            "  r{i}:\n    type: OS::Heat::TestResource\n    properties: {{fail_attempts: {fail_attempts}}}\n"
        );
    }
    t
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

/// Seconds to create a stack of `n` resources whose first `fail_attempts` attempts fail.
async fn create(engine: &Engine, n: usize, fail_attempts: u32) -> f64 {
    let text = template(n, fail_attempts);
    let file = SourceFile {
        name: "bench.yaml".into(),
        text: text.clone(),
    };
    let stack = template::validate(&file, &[], &[], engine.plugins())
        .unwrap_or_else(|_| panic!("template"));
    let sources = Sources {
        template: file.name.clone(),
        template_text: text,
        environments: vec![],
        parameters: vec![],
        options: Default::default(),
    };
    let t = Instant::now();
    let row = engine
        .create_stack(&format!("bench-{n}-{fail_attempts}"), &stack, &sources)
        .await
        .unwrap();
    let status = settle(engine.store(), &row.id).await;
    assert_eq!(status, "CREATE_COMPLETE", "{}", row.id);
    t.elapsed().as_secs_f64()
}

async fn run(backend: &str, url: &str, config: &Config, n: usize) {
    let store = Store::open(url).await.unwrap();
    let engine = App::on_store(config, store, Plugins::Load)
        .await
        .unwrap()
        .engine;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(rx).await }
    });
    let clean = create(&engine, n, 0).await;
    let once = create(&engine, n, 1).await;
    let twice = create(&engine, n, 2).await;
    let _ = stop.send(true);
    task.await.unwrap();
    let per = |t: f64, retries: f64| (t - clean) / (n as f64 * retries) * 1000.0;
    println!(
        "| {backend:<8} | {n:>5} | {:>10.2} | {:>13.2} | {:>14.2} | {:>15.2} |",
        clean,
        once,
        twice,
        (per(once, 1.0) + per(twice, 2.0)) / 2.0
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = Config::parse(CONFIG, "bench").unwrap();
        config.runtime.cache_dir = Some(std::env::temp_dir().join("kiln-bench-cache"));
        println!(
            "retry overhead, OS::Heat::TestResource, {} engine workers, policy fixed-interval 0 ms\n",
            EngineConfig::default().workers
        );
        println!("| backend  |     n | no retry s | 1 retry each s | 2 retries each s | ms per retry (work) |");
        println!("|----------|-------|------------|----------------|------------------|---------------------|");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        run("sqlite", &url, &config, n).await;
        if let Ok(base) = std::env::var("KILN_TEST_DATABASE_URL") {
            sqlx::any::install_default_drivers();
            let name = format!("kiln_bench_{:08x}", rand::random::<u32>());
            let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            run("postgres", &format!("{prefix}/{name}"), &config, n).await;
            sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut conn).await.unwrap();
        } else {
            println!("(PostgreSQL skipped: set KILN_TEST_DATABASE_URL)");
        }
    });
}
