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

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kiln::config::{Config, EngineConfig};
use kiln::engine::{Engine, StackOptions};
use kiln::store::Store;
use support::stacks::{run as running, settle_polling, sources, validate};

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

/// The stack's ACTION_STATUS once its action ended, looked at every 5 ms.
async fn settle(store: &Store, id: &str) -> String {
    let row = settle_polling(store, id, Duration::from_millis(5)).await;
    format!("{}_{}", row.action, row.status)
}

/// Seconds to create a stack of `n` resources whose first `fail_attempts` attempts fail.
async fn create(engine: &Engine, n: usize, fail_attempts: u32) -> f64 {
    let text = template(n, fail_attempts);
    let stack = validate(&text, engine);
    let sources = sources(&text, StackOptions::default());
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
    let engine = support::stacks::engine(store, config.clone(), &[]).await;
    let workers = running(&engine);
    let clean = create(&engine, n, 0).await;
    let once = create(&engine, n, 1).await;
    let twice = create(&engine, n, 2).await;
    workers.shutdown().await;
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
        let config = Config::parse(CONFIG, "bench").unwrap();
        println!(
            "retry overhead, OS::Heat::TestResource, {} engine workers, policy fixed-interval 0 ms\n",
            EngineConfig::default().workers
        );
        println!("| backend  |     n | no retry s | 1 retry each s | 2 retries each s | ms per retry (work) |");
        println!("|----------|-------|------------|----------------|------------------|---------------------|");
        let db = support::db::sqlite();
        run("sqlite", &db.url, &config, n).await;
        if let Ok(base) = std::env::var("KILN_TEST_DATABASE_URL") {
            sqlx::any::install_default_drivers();
            let db = support::db::postgres(&base).await;
            run("postgres", &db.url, &config, n).await;
            db.cleanup().await;
        } else {
            println!("(PostgreSQL skipped: set KILN_TEST_DATABASE_URL)");
        }
    });
}
