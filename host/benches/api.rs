//! The REST API's own cost, on SQLite and (when KILN_TEST_DATABASE_URL is set) PostgreSQL:
//! an API and an engine in this process (as `kiln serve`), driven over HTTP on 127.0.0.1.
//!
//! - create: a stack of N no-op resources through `POST /v1/stacks`, until it is complete
//!   (the process's first create apart, as it also opens the database connections);
//! - show: `GET /v1/stacks/{stack}?outputs=false` one after another (latency) and from 8
//!   clients at once (throughput), with a bearer token;
//! - events: `GET /v1/stacks/{stack}/events?limit=1000` pages.
//!
//! ```sh
//! KILN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p kiln --bench api [-- RESOURCES]
//! ```
//!
//! Prints a table; figures are recorded in BENCHMARKS.md.

use std::time::{Duration, Instant};

use kiln::app::{App, Plugins};
use kiln::config::{ApiConfig, Config, TokenConfig};
use kiln::store::Store;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::watch;

const TOKEN: &str = "bench-token-0123456789";

fn template(n: usize) -> String {
    let mut t = String::from("heat_template_version: 2021-04-16\nresources:\n");
    for i in 0..n {
        t += &format!("  r{i}:\n    type: OS::Heat::None\n");
    }
    t
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let res = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert!(res.status().is_success(), "{url}: {}", res.status());
    serde_json::from_str(&res.text().await.unwrap()).unwrap()
}

/// Creates a stack through the API and waits until a poll sees it complete: how long the 201
/// took, and the whole create.
async fn create(http: &reqwest::Client, base: &str, name: &str, n: usize) -> (Duration, Duration) {
    let body = json!({"name": name, "template": {"name": "bench.yaml", "text": template(n)}});
    let t = Instant::now();
    let res = http
        .post(format!("{base}/v1/stacks"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let accepted = t.elapsed();
    loop {
        let shown = get(http, &format!("{base}/v1/stacks/{name}?outputs=false")).await;
        if shown["stack"]["status"] != "IN_PROGRESS" {
            assert_eq!(shown["stack"]["status"], "COMPLETE");
            return (accepted, t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(backend: &str, url: &str, config: &Config, n: usize) -> Vec<Vec<String>> {
    let store = Store::open(url).await.unwrap();
    let engine = App::on_store(config, store, Plugins::Load)
        .await
        .unwrap()
        .engine;
    let api = ApiConfig {
        tokens: vec![TokenConfig {
            token: Some(TOKEN.into()),
            project: "bench".into(),
            ..TokenConfig::default()
        }],
        ..ApiConfig::default()
    };
    let (stop, stopping) = watch::channel(false);
    let service =
        kiln::service::Service::new(engine.clone(), api.events_page_size, Default::default());
    let auth = kiln::api::Auth::from_config(&api).unwrap();
    let state = kiln::api::state(service, auth, stopping.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut until = stopping.clone();
    let server = tokio::spawn(kiln::api::serve(listener, state, 64 << 20, async move {
        let _ = until.wait_for(|s| *s).await;
    }));
    let worker = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(stopping).await }
    });
    let http = reqwest::Client::new();
    let mut rows = Vec::new();

    // The first create also opens the pool's connections (the engine's workers take theirs at
    // the same time): measured apart from a create on a warm process.
    for (name, size, what) in [("cold", n, "first create"), ("bench", n, "create")] {
        let (accepted, created) = create(&http, &base, name, size).await;
        rows.push(vec![
            backend.into(),
            format!("{what}, {size} resources"),
            format!("{:.0} resources/s", size as f64 / created.as_secs_f64()),
            format!("201 after {:.1} ms", accepted.as_secs_f64() * 1000.0),
        ]);
    }

    let show = format!("{base}/v1/stacks/bench?outputs=false");
    let mut took = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        get(&http, &show).await;
        took.push(t.elapsed());
    }
    took.sort();
    let total: Duration = took.iter().sum();
    rows.push(vec![
        backend.into(),
        "show, 1 client".into(),
        format!("{:.0} req/s", took.len() as f64 / total.as_secs_f64()),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            percentile(&took, 0.5),
            percentile(&took, 0.99)
        ),
    ]);

    let t = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, show) = (http.clone(), show.clone());
        clients.spawn(async move {
            for _ in 0..250 {
                get(&http, &show).await;
            }
        });
    }
    while clients.join_next().await.is_some() {}
    rows.push(vec![
        backend.into(),
        "show, 8 clients".into(),
        format!("{:.0} req/s", 2000.0 / t.elapsed().as_secs_f64()),
        "2000 requests".into(),
    ]);

    let events = format!("{base}/v1/stacks/bench/events?limit=1000");
    let t = Instant::now();
    for _ in 0..20 {
        let page = get(&http, &events).await;
        assert_eq!(
            page["events"].as_array().unwrap().len(),
            1000.min(2 * n + 2)
        );
    }
    rows.push(vec![
        backend.into(),
        "events page of 1000".into(),
        format!("{:.1} ms/page", t.elapsed().as_secs_f64() * 1000.0 / 20.0),
        String::new(),
    ]);

    let _ = stop.send(true);
    let _ = server.await;
    let _ = worker.await;
    rows
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let config = Config::default();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut rows = run("sqlite", &sqlite, &config, n).await;
    if let Ok(base) = std::env::var("KILN_TEST_DATABASE_URL") {
        sqlx::any::install_default_drivers();
        let name = format!("kiln_bench_{:08x}", rand::random::<u32>());
        let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        rows.extend(run("postgres", &url, &config, n).await);
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::query(AssertSqlSafe(drop)).execute(&mut conn).await;
    }
    println!("| backend | what | rate | detail |\n|---|---|---|---|");
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}
