//! Retries in the engine, on both backends: a policy chosen by the config's rules retries
//! transient failures at durable due times, gives up with the attempts' history, and a
//! scheduled retry survives its engine.

mod support;

use std::time::{Duration, Instant};

use kiln::config::Config;
use kiln::engine::{Engine, StackOptions};
use kiln::model::OnFailure;
use kiln::store::Store;
use support::cloud::{FakeCloud, Inject};
use support::db::backends;
use support::stacks::{create, create_with, run, settle};

const RETRY: &str = r#"
[retry.policies.quick]
component = "exponential-backoff"
params = { initial_interval_ms = 50, multiplier = 1.0, max_attempts = 3, jitter = "none" }

[retry.policies.slow]
component = "exponential-backoff"
params = { initial_interval_ms = 30000, max_attempts = 3, jitter = "none" }

[[retry.rules]]
types = ["Kiln::HTTP::Resource"]
policy = "quick"

[[retry.rules]]
errors = ["transient"]
operations = ["create"]
policy = "slow"
"#;

async fn engine(url: &str, allow: &[String]) -> Engine {
    engine_with(RETRY, url, allow).await
}

async fn engine_with(retry: &str, url: &str, allow: &[String]) -> Engine {
    let config = Config::parse(retry, "retry.toml").unwrap();
    let store = Store::open(url).await.unwrap();
    support::stacks::engine(store, config, allow).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_failing_every_attempt_gives_up_with_its_history() {
    let text = "heat_template_version: 2021-04-16\nresources:\n  flaky:\n    type: Kiln::HTTP::Resource\n    properties: {url: URL, body: {a: 1}}\n";
    for db in backends().await {
        let cloud = FakeCloud::start().await;
        let e = engine(&db.url, &[cloud.rule()]).await;
        for status in [503, 500, 429] {
            cloud.inject(if status == 429 {
                Inject::Throttle {
                    retry_after_secs: 0,
                }
            } else {
                Inject::Status(status)
            });
        }
        // Three failures exhaust max_attempts = 3.
        let requests_before = cloud.requests().len();
        let row = create(&e, "flaky", &text.replace("URL", &cloud.url())).await;
        let running = run(&e);
        let end = settle(e.store(), &row.id).await;
        running.shutdown().await;
        let events = e.store().events(&row.id, 0).await.unwrap();
        let retries: Vec<_> = events.iter().filter(|ev| ev.status == "RETRY").collect();
        assert_eq!(end.status, "FAILED", "{}", db.name);
        assert_eq!(retries.len(), 2, "{}: {events:?}", db.name);
        assert!(
            retries[0]
                .reason
                .contains("attempt 1 failed: transient (503)")
                && retries[0].reason.contains("policy quick"),
            "{}",
            retries[0].reason
        );
        assert!(
            end.status_reason.contains("gave up after 3 attempts"),
            "{}",
            end.status_reason
        );
        assert!(
            end.status_reason
                .contains("transient (503), transient (500), throttled (429)"),
            "{}",
            end.status_reason
        );
        // Every attempt carried the same idempotency key.
        let keys: Vec<_> = cloud.requests()[requests_before..]
            .iter()
            .map(|r| r.idempotency_key.clone())
            .collect();
        assert_eq!(keys.len(), 3);
        assert!(
            keys.windows(2).all(|w| w[0] == w[1] && w[0].is_some()),
            "{keys:?}"
        );
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_succeeds_and_creates_the_object_once() {
    let text = "heat_template_version: 2021-04-16\nresources:\n  obj:\n    type: Kiln::HTTP::Resource\n    properties: {url: URL, body: {a: 1}}\n";
    for db in backends().await {
        let cloud = FakeCloud::start().await;
        let e = engine(&db.url, &[cloud.rule()]).await;
        // The first attempt fails before the cloud acts; the second makes the object but the
        // answer is lost (503 after handling). Only the idempotency key, the same on the third
        // attempt, keeps the cloud from making a second object.
        cloud.inject(Inject::Status(503));
        cloud.inject(Inject::StatusAfterHandling(503));
        let row = create(&e, "once", &text.replace("URL", &cloud.url())).await;
        let running = run(&e);
        let end = settle(e.store(), &row.id).await;
        running.shutdown().await;
        assert_eq!(end.status, "COMPLETE", "{}: {}", db.name, end.status_reason);
        let posts: Vec<_> = cloud
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect();
        assert!(
            posts[0].idempotency_key.is_some()
                && posts
                    .iter()
                    .all(|r| r.idempotency_key == posts[0].idempotency_key),
            "{}: every attempt carries the same key: {posts:?}",
            db.name
        );
        // The replay answers 200 (201 would be a new object).
        let statuses: Vec<u16> = posts.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [503, 503, 200], "{}: {posts:?}", db.name);
        let made = posts[1]
            .created
            .clone()
            .unwrap_or_else(|| panic!("{}: the second attempt made the object", db.name));
        assert_eq!(cloud.objects(), 1, "{}: {posts:?}", db.name);
        // The resource is that object (its URL), as the replay returned it.
        let resources = e.store().resources(&row.id).await.unwrap();
        let physical = resources[0].physical_id.clone().unwrap_or_default();
        assert!(
            physical.ends_with(&format!("/{made}")),
            "{}: the resource is {physical}, the object {made}",
            db.name
        );
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_are_not_retried() {
    let text = "heat_template_version: 2021-04-16\nresources:\n  broken: {type: OS::Heat::TestResource, properties: {fail: true}}\n";
    for db in backends().await {
        let e = engine(&db.url, &[]).await;
        let row = create(&e, "fatal", text).await;
        let running = run(&e);
        let end = settle(e.store(), &row.id).await;
        running.shutdown().await;
        assert_eq!(end.status, "FAILED");
        assert!(
            end.status_reason
                .contains("not retried: fatal errors are not retried"),
            "{}",
            end.status_reason
        );
        let events = e.store().events(&row.id, 0).await.unwrap();
        assert!(events.iter().all(|ev| ev.status != "RETRY"), "{}", db.name);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_retry_survives_its_engine_and_fires_from_another() {
    // The backends run side by side: each waits 30 s for its retry.
    let mut runs = tokio::task::JoinSet::new();
    for db in backends().await {
        runs.spawn(retry_survives_its_engine(db));
    }
    while let Some(done) = runs.join_next().await {
        done.expect("a backend's run panicked");
    }
}

async fn retry_survives_its_engine(db: support::db::TestDb) {
    // fail_attempts: 1 fails the first attempt (transient); the "slow" rule retries in 30 s.
    let text = "heat_template_version: 2021-04-16\nresources:\n  later: {type: OS::Heat::TestResource, properties: {fail_attempts: 1}}\n";
    let first = engine(&db.url, &[]).await;
    let row = create(&first, "durable", text).await;
    let running = run(&first);
    // Wait for the retry to be scheduled, then stop this engine before it is due.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = first.store().events(&row.id, 0).await.unwrap();
        if events.iter().any(|ev| ev.status == "RETRY") {
            break;
        }
        assert!(Instant::now() < deadline, "no retry was scheduled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
    assert_eq!(
        first.store().find_stack(&row.id).await.unwrap().status,
        "IN_PROGRESS"
    );

    // A new engine, with nothing in memory from the first: the row alone brings the retry back.
    let second = engine(&db.url, &[]).await;
    let running = run(&second);
    let end = settle(second.store(), &row.id).await;
    running.shutdown().await;
    assert_eq!(end.status, "COMPLETE", "{}: {}", db.name, end.status_reason);
    let events = second.store().events(&row.id, 0).await.unwrap();
    let done = events
        .iter()
        .find(|ev| ev.resource.as_deref() == Some("later") && ev.status == "COMPLETE")
        .unwrap();
    assert_eq!(
        done.engine.as_deref(),
        Some(second.id()),
        "{}: the new engine ran the retry",
        db.name
    );
    let retry = events.iter().find(|ev| ev.status == "RETRY").unwrap();
    assert!(
        retry.reason.contains("retrying in 30000 ms (policy slow)"),
        "{}",
        retry.reason
    );
    // It fired when due, not before (event times are on the database clock).
    assert!(
        done.at - retry.at >= 30_000,
        "{}: fired {} ms after it was scheduled",
        db.name,
        done.at - retry.at
    );
    db.cleanup().await;
}

fn kiln(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("KILN_CONFIG")
        .env("KILN_RUNTIME__CACHE_DIR", support::shared_cache())
        .output()
        .unwrap()
}

#[test]
fn simulate_prints_the_schedule_of_the_example_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kiln.toml");
    let out = kiln(&[
        "-c",
        config,
        "retry",
        "simulate",
        "--errors",
        "503,429:2000,invalid",
        "--type",
        "Kiln::HTTP::Resource",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["policy"], "api");
    assert!(
        rows[1]["delay_ms"].as_u64().unwrap() >= 2000,
        "retry-after is honoured: {}",
        rows[1]
    );
    assert!(
        rows[2]["decision"].as_str().unwrap().starts_with("give up"),
        "{}",
        rows[2]
    );
    // The same seed gives the same schedule.
    let again = kiln(&[
        "-c",
        config,
        "retry",
        "simulate",
        "--errors",
        "503,429:2000,invalid",
        "--type",
        "Kiln::HTTP::Resource",
        "--format",
        "json",
    ]);
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn a_policy_rejecting_its_parameters_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(&config, "[retry.policies.p]\ncomponent = \"exponential-backoff\"\nparams = { jitter = \"sometimes\" }\n").unwrap();
    let out = kiln(&[
        "-c",
        config.to_str().unwrap(),
        "retry",
        "simulate",
        "--errors",
        "503",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("retry.policies.p.params") && stderr.contains("jitter"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_resource_stack_completes_against_30_percent_transient_faults_creating_each_object_once()
 {
    use fault_cloud::{FaultConfig, FaultServer, FaultSpec, Mix};
    let rates: std::collections::BTreeMap<FaultSpec, f64> = [
        ("503", 0.12),
        ("500", 0.05),
        ("reset", 0.05),
        ("429:0", 0.03),
        ("after:503", 0.05),
    ]
    .into_iter()
    .map(|(f, p)| (f.parse().unwrap(), p))
    .collect();
    let mix = Mix {
        rates,
        only_methods: vec!["POST".into()],
        seed: Some(7),
        ..Mix::default()
    };
    for db in backends().await {
        let server = FaultServer::start(FaultConfig {
            mix: mix.clone(),
            ..FaultConfig::default()
        })
        .await
        .unwrap();
        let url = server.url("items");
        let mut text = String::from("heat_template_version: 2021-04-16\nresources:\n");
        for i in 0..200 {
            text += &format!(
                "  o{i}:\n    type: Kiln::HTTP::Resource\n    properties: {{url: \"{url}\", body: {{n: {i}}}}}\n"
            );
        }
        // At 30% a resource may fail several times in a row: a patient policy.
        let patient = "[retry.policies.patient]\ncomponent = \"exponential-backoff\"\n\
             params = { initial_interval_ms = 20, max_interval_ms = 200, max_attempts = 25, jitter = \"full\" }\n\
             [[retry.rules]]\npolicy = \"patient\"\n";
        let e = engine_with(patient, &db.url, &[format!("http://{}", server.addr())]).await;

        let row = create(&e, "faulty", &text).await;
        let running = run(&e);
        let end = settle(e.store(), &row.id).await;
        running.shutdown().await;
        assert_eq!(end.status, "COMPLETE", "{}: {}", db.name, end.status_reason);

        let stats = server.stats();
        assert_eq!(stats.objects_live, 200, "{}: {stats:?}", db.name);
        assert!(
            stats.keys_created_more_than_once.is_empty(),
            "{}: each object exactly once: {stats:?}",
            db.name
        );
        let faulted: u64 = stats.faults.values().sum();
        assert!(
            faulted >= 40,
            "{}: the mix really failed calls: {stats:?}",
            db.name
        );
        // Every failed call was retried, and every retry is an event.
        let events = e.store().events(&row.id, 0).await.unwrap();
        let retries = events.iter().filter(|ev| ev.status == "RETRY").count() as u64;
        assert_eq!(retries, faulted, "{}", db.name);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_retries() {
    // 20 resources fail three times each; with full jitter over a second, no two resources
    // share a schedule (a collision of three uniform draws in 0..=1000 ms is ~1e-9 likely).
    let spread = "[retry.policies.spread]\ncomponent = \"exponential-backoff\"\n\
                  params = { initial_interval_ms = 1000, multiplier = 1.0, max_attempts = 10, jitter = \"full\" }\n\
                  [[retry.rules]]\npolicy = \"spread\"\n";
    let many: String = (0..20)
        .map(|i| {
            format!("  r{i}: {{type: OS::Heat::TestResource, properties: {{fail_attempts: 3}}}}\n")
        })
        .collect();
    let text = format!("heat_template_version: 2021-04-16\nresources:\n{many}");
    let db = backends().await.remove(0);
    let e = engine_with(spread, &db.url, &[]).await;
    let row = create(&e, "jitter", &text).await;
    let running = run(&e);
    let end = settle(e.store(), &row.id).await;
    running.shutdown().await;
    assert_eq!(end.status, "COMPLETE", "{}", end.status_reason);
    let mut schedules: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for ev in e.store().events(&row.id, 0).await.unwrap() {
        if ev.status != "RETRY" {
            continue;
        }
        let delay = ev
            .reason
            .split("retrying in ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap();
        schedules
            .entry(ev.resource.unwrap())
            .or_default()
            .push(delay.parse().unwrap());
    }
    assert_eq!(schedules.len(), 20);
    assert!(
        schedules
            .values()
            .all(|s| s.len() == 3 && s.iter().all(|d| *d <= 1000)),
        "{schedules:?}"
    );
    let distinct: std::collections::BTreeSet<&Vec<u64>> = schedules.values().collect();
    assert_eq!(
        distinct.len(),
        20,
        "two resources retried in lockstep: {schedules:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_retries_under_a_total_outage() {
    use fault_cloud::{FaultConfig, FaultServer, Mix};
    // Every POST fails. Without a budget, 30 resources × 5 retries would hit the server as fast
    // as the policy allows (1 ms apart); the budget (5 at once, then 20/s) spaces them.
    let mix = Mix {
        rates: [("503".parse().unwrap(), 1.0)].into_iter().collect(),
        only_methods: vec!["POST".into()],
        seed: Some(1),
        ..Mix::default()
    };
    let server = FaultServer::start(FaultConfig {
        mix,
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let url = server.url("items");
    let many: String = (0..30)
        .map(|i| {
            format!("  o{i}:\n    type: Kiln::HTTP::Resource\n    properties: {{url: \"{url}\"}}\n")
        })
        .collect();
    let text = format!("heat_template_version: 2021-04-16\nresources:\n{many}");
    let config = "[retry.policies.eager]\ncomponent = \"exponential-backoff\"\n\
                  params = { initial_interval_ms = 1, multiplier = 1.0, max_attempts = 6, jitter = \"none\" }\n\
                  [[retry.rules]]\npolicy = \"eager\"\n\
                  [retry.budget]\ncapacity = 5.0\nrefill_per_second = 20.0\n";
    let db = backends().await.remove(0);
    let e = engine_with(config, &db.url, &[format!("http://{}", server.addr())]).await;
    // Every resource runs to its last attempt: a failure must not stop the others.
    let options = StackOptions {
        on_failure: OnFailure::Continue,
        ..Default::default()
    };
    let row = create_with(&e, "outage", &text, options).await;
    let running = run(&e);
    let end = settle(e.store(), &row.id).await;
    running.shutdown().await;
    assert_eq!(end.status, "FAILED");
    assert!(
        end.status_reason.contains("gave up after 6 attempts"),
        "{}",
        end.status_reason
    );

    // On the server's clock alone (its arrival times): by any time t after the first request,
    // the retries that arrived are at most the burst (5) plus what refilled since at the
    // configured 20/s, plus one for millisecond rounding. The tolerance is that one retry: the
    // bucket starts at the first retry, after the first request, so the bound is already
    // generous, and a doubled refill rate (40/s) would break it within a second of the
    // 150 retries' ~7 s.
    let posts = server.requests();
    let t0 = posts.first().unwrap().unix_ms;
    let mut seen_keys = std::collections::HashSet::new();
    let mut retries = 0u64;
    for r in &posts {
        if seen_keys.insert(r.idempotency_key.clone()) {
            continue; // a resource's first attempt
        }
        retries += 1;
        let since_ms = r.unix_ms - t0;
        let allowed = 5.0 + 20.0 * since_ms as f64 / 1000.0 + 1.0;
        assert!(
            retries as f64 <= allowed,
            "retry {retries} arrived {since_ms} ms after the first request: over the budget's \
             5 + 20/s (at most {allowed:.1} by then)"
        );
    }
    assert_eq!(retries, 30 * 5);
    let events = e.store().events(&row.id, 0).await.unwrap();
    assert!(
        events.iter().any(|ev| ev.status == "RETRY"
            && ev
                .reason
                .contains("retry budget http-resource@http://127.0.0.1")),
        "deferrals are in the events"
    );
    // ... and in the metrics, per budget (plugin and target host).
    let bucket = format!("http-resource@http://{}", server.addr());
    let metrics = kiln::metrics::render();
    let deferred = kiln::metrics::sample(
        &metrics,
        &format!("kiln_retry_budget_deferred_total{{bucket=\"{bucket}\"}}"),
    )
    .unwrap_or_else(|| panic!("no deferral count for {bucket} in:\n{metrics}"));
    assert!(deferred > 0.0, "{metrics}");
    assert!(
        kiln::metrics::sample(
            &metrics,
            &format!("kiln_retry_budget_tokens{{bucket=\"{bucket}\"}}")
        )
        .is_some(),
        "{metrics}"
    );
    let retried: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("kiln_retries_total{") && l.contains("policy=\"eager\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(retried >= 150.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_refreshes_the_credentials_and_calls_once_more() {
    use fault_cloud::{FaultConfig, FaultServer};
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "expired\n").unwrap();
    let server = FaultServer::start(FaultConfig {
        token: Some("fresh".into()),
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let url = server.url("items");
    let many: String = (0..5)
        .map(|i| {
            format!("  o{i}:\n    type: Kiln::HTTP::Resource\n    properties: {{url: \"{url}\"}}\n")
        })
        .collect();
    let text = format!("heat_template_version: 2021-04-16\nresources:\n{many}");
    // `unauthorized` is never retried by policy here: only the host's refresh can save a call.
    let config = format!(
        "[retry.policies.no]\ncomponent = \"never\"\n\
         [[retry.rules]]\nerrors = [\"unauthorized\"]\npolicy = \"no\"\n\
         [plugins.http-resource.credentials]\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let db = backends().await.remove(0);
    let allow = [server.base_url()];

    // The token is rotated after the engine read it: each call's first 401 makes the host read
    // the file again and call once more, with the same idempotency key.
    let e = engine_with(&config, &db.url, &allow).await;
    std::fs::write(&token_file, "fresh\n").unwrap();
    let row = create(&e, "rotated", &text).await;
    let running = run(&e);
    let end = settle(e.store(), &row.id).await;
    running.shutdown().await;
    assert_eq!(end.status, "COMPLETE", "{}", end.status_reason);
    assert_eq!(server.object_count(), 5);
    let stats = server.stats();
    assert!(stats.unauthorized >= 1, "{stats:?}");
    let events = e.store().events(&row.id, 0).await.unwrap();
    let reauthorized: Vec<_> = events
        .iter()
        .filter(|ev| ev.status == "REAUTHORIZED")
        .collect();
    assert!(!reauthorized.is_empty(), "{events:?}");
    assert!(
        reauthorized[0].reason.contains(&format!(
            "read new credentials from token file {}",
            token_file.display()
        )),
        "{}",
        reauthorized[0].reason
    );
    assert!(events.iter().all(|ev| ev.status != "RETRY"), "{events:?}");

    // A token that stays wrong: the refresh finds nothing new, and the policy decides.
    server.set_token(Some("rotated-again".into()));
    let e = engine_with(&config, &db.url, &allow).await;
    let row = create(&e, "stale", &text.replace("o0", "p0")).await;
    let running = run(&e);
    let end = settle(e.store(), &row.id).await;
    running.shutdown().await;
    assert_eq!(end.status, "FAILED");
    assert!(
        end.status_reason.contains("unauthorized (401)")
            && end.status_reason.contains("not retried"),
        "{}",
        end.status_reason
    );
    let metrics = kiln::metrics::render();
    assert!(
        kiln::metrics::sample(
            &metrics,
            "kiln_credential_refreshes_total{plugin=\"http-resource\",outcome=\"unchanged\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    db.cleanup().await;
}
