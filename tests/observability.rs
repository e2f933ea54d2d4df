//! Observability: the engine's metrics (jobs, plugin calls, the queue read from the database)
//! and its structured logs (every job's lines carry the stack and the traversal), on both
//! backends, with real plugins and a real `kiln engine` process.
//!
//! Metrics are process-wide and the tests of this binary run in parallel: the tests that count
//! take [`COUNTING`] first, so that no other test's work lands in their counters, and then
//! check by exactly how much each counter grew. Only `the_queue_gauges_are_read_from_the_database`
//! refreshes the database gauges, so it may check their values.

mod support;

use std::time::Duration;

use kiln::config::EngineConfig;
use kiln::engine::Engine;
use kiln::metrics;
use kiln::store::{Claim, Claimed, QueueStats, Store};
use serde_json::Value;
use support::db::backends;
use support::procs::{Cluster, Settings, wait_for};
use support::stacks::{create, run, settle};

const SHORT: Duration = Duration::from_secs(60);

/// Held by every test that counts jobs, calls or requests in this process's metrics (a test
/// that only moves jobs through the store, or works in another process, need not take it).
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const LONG: Duration = Duration::from_secs(180);

/// An engine on `url` (not running: `support::stacks::run` starts its workers).
async fn engine(url: &str) -> Engine {
    let store = Store::open(url).await.unwrap();
    support::stacks::tuned(store, EngineConfig::default(), &[]).await
}

/// One series of this process's metrics, 0 before its first sample.
fn value(series: &str) -> f64 {
    metrics::sample(&metrics::render(), series).unwrap_or(0.0)
}

/// `kiln_jobs_{which}_total` (claimed, completed, failed) of one operation.
fn jobs(which: &str, operation: &str) -> f64 {
    value(&format!(
        "kiln_jobs_{which}_total{{operation=\"{operation}\"}}"
    ))
}

/// How many plugin calls `kiln_plugin_call_duration_seconds` recorded for these labels.
fn calls(resource_type: &str, function: &str, outcome: &str) -> f64 {
    value(&format!(
        "kiln_plugin_call_duration_seconds_count{{type=\"{resource_type}\",function=\"{function}\",outcome=\"{outcome}\"}}"
    ))
}

const TEST: &str = "OS::Heat::TestResource";
const NONE: &str = "OS::Heat::None";

/// Three resources, two TestResources and a None, in a chain and a fork.
const SMALL: &str = r#"
heat_template_version: 2021-04-16
resources:
  a:
    type: OS::Heat::TestResource
    properties: {value: one}
  b:
    type: OS::Heat::TestResource
    properties: {value: {get_attr: [a, output]}}
  c:
    type: OS::Heat::None
    depends_on: [a]
"#;

const BROKEN: &str = r#"
heat_template_version: 2021-04-16
resources:
  broken:
    type: OS::Heat::TestResource
    properties: {fail: true}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_plugin_calls_are_counted_by_operation_and_type() {
    let _counting = COUNTING.lock().await;
    for db in backends().await {
        let running = run(&engine(&db.url).await);
        let store = running.engine.store().clone();
        let claimed = jobs("claimed", "create");
        let completed = jobs("completed", "create");
        let test_creates = calls(TEST, "create", "ok");
        let none_creates = calls(NONE, "create", "ok");

        let row = create(&running.engine, "small", SMALL).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(
            done.status, "COMPLETE",
            "{}: {}",
            db.name, done.status_reason
        );
        // One claim, one completion and one call per resource, no more.
        assert_eq!(jobs("claimed", "create"), claimed + 3.0, "{}", db.name);
        assert_eq!(jobs("completed", "create"), completed + 3.0, "{}", db.name);
        assert_eq!(
            calls(TEST, "create", "ok"),
            test_creates + 2.0,
            "{}",
            db.name
        );
        assert_eq!(
            calls(NONE, "create", "ok"),
            none_creates + 1.0,
            "{}",
            db.name
        );

        let deleted = jobs("completed", "delete");
        let test_deletes = calls(TEST, "delete", "ok");
        running.engine.delete_stack("small").await.unwrap();
        let gone = settle(&store, &row.id).await;
        assert_eq!(
            gone.status, "COMPLETE",
            "{}: {}",
            db.name, gone.status_reason
        );
        assert_eq!(jobs("completed", "delete"), deleted + 3.0, "{}", db.name);
        assert_eq!(
            calls(TEST, "delete", "ok"),
            test_deletes + 2.0,
            "{}",
            db.name
        );
        running.shutdown().await;
        db.cleanup().await;
    }

    // Documented, and a histogram with buckets from 1 ms to about a minute.
    let text = metrics::render();
    for name in [
        "kiln_jobs_claimed",
        "kiln_jobs_completed",
        "kiln_plugin_call_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    let bucket = |le: &str| {
        format!(
            "kiln_plugin_call_duration_seconds_bucket{{le=\"{le}\",type=\"{TEST}\",function=\"create\",outcome=\"ok\"}}"
        )
    };
    let all = calls(TEST, "create", "ok");
    assert!(metrics::sample(&text, &bucket("0.001")).is_some(), "{text}");
    assert!(
        metrics::sample(&text, &bucket("65.536")).is_some(),
        "{text}"
    );
    assert_eq!(metrics::sample(&text, &bucket("+Inf")), Some(all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_that_fails_for_good_counts_a_failed_job() {
    let _counting = COUNTING.lock().await;
    for db in backends().await {
        let running = run(&engine(&db.url).await);
        let store = running.engine.store().clone();
        let failed = jobs("failed", "create");
        let errors = calls(TEST, "create", "error");

        let row = create(&running.engine, "broken", BROKEN).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(done.status, "FAILED", "{}: {}", db.name, done.status_reason);
        // A fatal error is not retried: one call, one failed job.
        assert_eq!(jobs("failed", "create"), failed + 1.0, "{}", db.name);
        assert_eq!(calls(TEST, "create", "error"), errors + 1.0, "{}", db.name);
        running.shutdown().await;
        db.cleanup().await;
    }
}

/// The database gauges after a refresh.
async fn gauges(store: &Store) -> (QueueStats, i64) {
    metrics::refresh_from_store(store).await;
    let text = metrics::render();
    let get = |series: &str| {
        metrics::sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let queued = |state: &str| get(&format!("kiln_jobs_queued{{state=\"{state}\"}}")) as i64;
    let stats = QueueStats {
        due: queued("due"),
        waiting: queued("waiting"),
        running: queued("running"),
        oldest_due_age_ms: (get("kiln_jobs_oldest_due_age_seconds") * 1000.0).round() as i64,
    };
    (stats, get("kiln_engines_up") as i64)
}

async fn claim(store: &Store, engine: &str) -> Claimed {
    match store.claim(engine, 60_000, &[], |_| true).await.unwrap() {
        Claim::Job(job) => job,
        other => panic!("expected a job, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_gauges_are_read_from_the_database() {
    for db in backends().await {
        // No engine runs: this test moves the jobs itself, as an engine would.
        let engine = engine(&db.url).await;
        let store = engine.store().clone();
        let (queue, up) = gauges(&store).await;
        assert_eq!((queue, up), (QueueStats::default(), 0), "{}", db.name);

        // Three independent resources: three jobs due at once, waiting for an engine.
        let text = "heat_template_version: 2021-04-16\nresources:\n  x: {type: OS::Heat::None}\n  y: {type: OS::Heat::None}\n  z: {type: OS::Heat::None}\n";
        create(&engine, "queued", text).await;
        let (queue, _) = gauges(&store).await;
        assert_eq!(
            (queue.due, queue.waiting, queue.running),
            (3, 0, 0),
            "{}",
            db.name
        );
        // The oldest due job was made just now, and ages on the database's clock.
        assert!(
            queue.oldest_due_age_ms < SHORT.as_millis() as i64,
            "{}: {queue:?}",
            db.name
        );
        wait_for(SHORT, "the oldest due job to age", async || {
            let (queue, _) = gauges(&store).await;
            (queue.oldest_due_age_ms > 0).then_some(())
        })
        .await;

        // Claimed under a live lease: running. Put back for later (a poll): waiting.
        let job = claim(&store, "observer").await;
        let (queue, _) = gauges(&store).await;
        assert_eq!(
            (queue.due, queue.waiting, queue.running),
            (2, 0, 1),
            "{}",
            db.name
        );
        store
            .reschedule(&job, "observer", 600_000, Some("{}"))
            .await
            .unwrap();
        let (queue, _) = gauges(&store).await;
        assert_eq!(
            (queue.due, queue.waiting, queue.running),
            (2, 1, 0),
            "{}",
            db.name
        );
        // The gauges say what the store says.
        assert_eq!(queue.due, store.queue_stats().await.unwrap().due);

        // An engine that registers is up; one that stopped is not.
        store
            .register_engine("observer", "localhost", std::process::id(), 60_000)
            .await
            .unwrap();
        assert_eq!(gauges(&store).await.1, 1, "{}", db.name);
        store.engine_stopped("observer").await.unwrap();
        assert_eq!(gauges(&store).await.1, 0, "{}", db.name);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_are_counted_by_method_route_and_status() {
    let _counting = COUNTING.lock().await;
    let db = backends().await.remove(0);
    let api = support::api::ApiServer::start(&db.url, vec![], 1 << 20).await;
    let client = api.client(None);
    let series = |status: u16| {
        format!(
            "kiln_http_requests_total{{method=\"GET\",route=\"/v1/stacks/{{stack}}\",status=\"{status}\"}}"
        )
    };
    let count = "kiln_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/stacks/{stack}\",status=\"404\"}";
    let (missing, timed) = (value(&series(404)), value(count));
    // Two requests for stacks that do not exist, by different names: one route, one series.
    client.get("/v1/stacks/nowhere").await.expect(404);
    client.get("/v1/stacks/elsewhere").await.expect(404);
    assert_eq!(value(&series(404)), missing + 2.0);
    assert_eq!(value(count), timed + 2.0);
    // Counted by the route template: the stack's name never becomes a label.
    let text = metrics::render();
    assert!(!text.contains("nowhere"), "{text}");
    assert!(text.contains("# HELP kiln_http_requests "), "{text}");
    assert!(
        text.contains("# HELP kiln_http_request_duration_seconds "),
        "{text}"
    );
    api.shutdown().await;
    db.cleanup().await;
}

/// The JSON log lines of a `kiln engine`'s stderr (it also prints plain lines at start).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_logs_json_lines_naming_the_stack_and_traversal_of_each_job() {
    for db in backends().await {
        let mut cluster = Cluster::new(&db.url, &Settings::default());
        let i = cluster
            .start_engine_with(&[("KILN_LOG__FORMAT", "json"), ("KILN_LOG", "info")])
            .await;
        // The stack is stored from here; the engine process does all the work.
        let submitter = engine(&db.url).await;
        let store = submitter.store().clone();
        let row = create(&submitter, "logged", SMALL).await;
        let done = wait_for(LONG, "the stack to be created", async || {
            let row = store.find_stack(&row.id).await.unwrap();
            (row.status != "IN_PROGRESS").then_some(row)
        })
        .await;
        assert_eq!(
            done.status, "COMPLETE",
            "{}: {}",
            db.name, done.status_reason
        );

        // The stack may end just before the last job's line is written: wait for the lines.
        let engine_log = &cluster.engines[i];
        let finished = wait_for(
            SHORT,
            "a `job finished` line for each resource",
            async || {
                let lines: Vec<Value> = json_lines(&engine_log.log_text())
                    .into_iter()
                    .filter(|l| {
                        l["fields"]["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("job finished"))
                    })
                    .collect();
                (lines.len() >= 3).then_some(lines)
            },
        )
        .await;
        let log = engine_log.log_text();
        let mut resources: Vec<&str> = Vec::new();
        for line in &finished {
            let span = &line["span"];
            assert_eq!(span["name"], "job", "{line}");
            assert_eq!(span["stack"], "logged", "{line}");
            assert_eq!(span["stack_id"], done.id.as_str(), "{line}");
            assert_eq!(span["traversal"], done.traversal, "{line}");
            assert_eq!(span["operation"], "create", "{line}");
            assert_eq!(line["fields"]["outcome"], "CREATE_COMPLETE", "{line}");
            assert!(line["fields"]["duration_ms"].is_u64(), "{line}");
            resources.push(span["resource"].as_str().unwrap_or_default());
        }
        resources.sort();
        assert_eq!(resources, ["a", "b", "c"], "{}: {log}", db.name);
        // Every line logged while working a job names the stack and the traversal.
        for line in json_lines(&log) {
            let spans = line["spans"].as_array().cloned().unwrap_or_default();
            if let Some(job) = spans.iter().find(|s| s["name"] == "job") {
                assert_eq!(job["stack"], "logged", "{line}");
                assert_eq!(job["traversal"], done.traversal, "{line}");
            }
        }

        cluster.shutdown().await;
        db.cleanup().await;
    }
}
