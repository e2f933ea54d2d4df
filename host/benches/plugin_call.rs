//! The cost of one plugin call end to end (fresh store + instantiate + call + output checks),
//! cold and warm, and calls per second on this machine's cores.
//!
//!     cargo bench -p kiln --bench plugin_call
//!
//! Prints a table; figures are recorded in BENCHMARKS.md.

use std::time::{Duration, Instant};

use kiln::allow_list::AllowList;
use kiln::artifacts;
use kiln::config::{Limits, Pooling, RuntimeConfig};
use kiln::runtime::{
    CallContext, ErrorInfo, Failure, Operation, Plugin, PluginError, PluginRuntime, PluginSpec,
    Source,
};
use serde_json::json;

fn runtime(cache: &std::path::Path, pooling: Pooling) -> PluginRuntime {
    let config = RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        pooling,
        ..RuntimeConfig::default()
    };
    PluginRuntime::new(&config, 64).unwrap()
}

async fn load(rt: &PluginRuntime, path: &str) -> Plugin {
    rt.load(PluginSpec {
        name: path.rsplit('/').next().unwrap().into(),
        source: Source::File(path.into()),
        limits: Limits::default(),
        allow_http: AllowList::default(),
        credentials: None,
    })
    .await
    .unwrap()
}

fn ctx(i: usize) -> CallContext {
    CallContext {
        stack: "bench".into(),
        resource: format!("r{i}"),
        resource_type: "OS::Heat::None".into(),
        operation: Operation::Create,
        attempt: 1,
        idempotency_key: format!("bench/r{i}/create/1"),
        deadline_ms: 0,
    }
}

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { samples }
    }
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }
    fn mean(&self) -> Duration {
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn row(name: &str, s: &Stats) {
    println!(
        "| {name:<44} | {:>6} | {:>9} | {:>9} | {:>9} |",
        s.samples.len(),
        us(s.mean()),
        us(s.pct(0.5)),
        us(s.pct(0.99))
    );
}

async fn sequential(n: usize, mut f: impl AsyncFnMut(usize)) -> Stats {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed());
    }
    Stats::new(samples)
}

async fn throughput(plugin: &Plugin, total: usize, concurrency: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let p = plugin.clone();
        tasks.spawn(async move {
            for i in (w..total).step_by(concurrency) {
                p.create(&ctx(i), &json!({})).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(bench(workers));
}

async fn bench(workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    println!("plugin call benchmark ({workers} worker threads)\n");
    println!(
        "| {:<44} | {:>6} | {:>9} | {:>9} | {:>9} |",
        "what", "n", "mean µs", "p50 µs", "p99 µs"
    );
    println!(
        "|{:-<46}|{:->8}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", ""
    );

    // Compile from scratch, then load from the disk cache in a "restarted" runtime.
    let compile = sequential(3, async |_| {
        let fresh = tempfile::tempdir().unwrap();
        load(&runtime(fresh.path(), Pooling::Auto), artifacts::NONE).await;
    })
    .await;
    row("load none: compile (no cache)", &compile);
    load(&runtime(dir.path(), Pooling::Auto), artifacts::NONE).await;
    let cached = sequential(20, async |_| {
        load(&runtime(dir.path(), Pooling::Auto), artifacts::NONE).await;
    })
    .await;
    row("load none: from disk cache (new runtime)", &cached);

    // Cold: the first call on a freshly loaded plugin (first instantiation of its code).
    let mut cold = Vec::new();
    for i in 0..20 {
        let rt = runtime(dir.path(), Pooling::Auto);
        let p = load(&rt, artifacts::NONE).await;
        let t = Instant::now();
        p.create(&ctx(i), &json!({})).await.unwrap();
        cold.push(t.elapsed());
    }
    row(
        "none create: cold (first call after load)",
        &Stats::new(cold),
    );

    for (label, pooling) in [("pooling", Pooling::On), ("on-demand", Pooling::Off)] {
        let rt = runtime(dir.path(), pooling);
        let none = load(&rt, artifacts::NONE).await;
        for i in 0..200 {
            none.create(&ctx(i), &json!({})).await.unwrap();
        }
        let warm = sequential(5000, async |i| {
            none.create(&ctx(i), &json!({})).await.unwrap();
        })
        .await;
        row(&format!("none create: warm, {label}"), &warm);
    }

    let rt = runtime(dir.path(), Pooling::Auto);
    let none = load(&rt, artifacts::NONE).await;
    let describe = sequential(2000, async |_| {
        none.describe().await.unwrap();
    })
    .await;
    row("none describe: warm", &describe);

    let random = load(&rt, artifacts::RANDOM_STRING).await;
    let props = json!({"length": 32, "sequence": "lettersdigits"});
    let rs = sequential(2000, async |i| {
        random.create(&ctx(i), &props).await.unwrap();
    })
    .await;
    row("random-string create: warm", &rs);

    let policy = load(&rt, artifacts::EXPONENTIAL_BACKOFF).await;
    let params = json!({"initial_interval_ms": 100, "jitter": "full"});
    let decide = sequential(2000, async |i| {
        let f = Failure {
            error: PluginError::Transient(ErrorInfo {
                message: "503".into(),
                status: Some(503),
            }),
            attempt: 1 + (i % 4) as u32,
            elapsed_ms: 0,
            previous_delay_ms: None,
            operation: Operation::Create,
            resource_type: "X".into(),
            random: i as u64,
        };
        policy.decide(&params, &f).await.unwrap();
    })
    .await;
    row("exponential-backoff decide: warm", &decide);

    println!();
    for concurrency in [workers, 64] {
        let rate = throughput(&none, 20_000, concurrency).await;
        println!("none create throughput, {concurrency} concurrent callers: {rate:.0} calls/s");
    }
}
