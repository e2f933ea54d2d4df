//! The engine on both backends: real templates, real plugins, real databases (a SQLite file;
//! PostgreSQL from KILN_TEST_DATABASE_URL). Orders are checked from the events, never timing.

mod support;

use std::collections::HashMap;

use kiln::config::EngineConfig;
use kiln::engine::Sources;
use kiln::model::{Action, Status};
use kiln::store::{Claim, Claimed, EventRow, Store, StoreError};
use support::cloud::FakeCloud;
use support::db::backends;
use support::stacks::{Running, create, run, settle, tuned, validate};

async fn start(url: &str, allow: &[String], workers: u32) -> Running {
    let store = Store::open(url).await.unwrap();
    let config = EngineConfig {
        workers,
        ..EngineConfig::default()
    };
    run(&tuned(store, config, allow).await)
}

/// A layered DAG: a root, `width` fan-out branches of chains `depth` long, a fan-in, and
/// cross links between neighbouring branches.
fn dag(width: usize, depth: usize) -> (String, HashMap<String, Vec<String>>) {
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    let mut text = String::from(
        "heat_template_version: 2021-04-16\nresources:\n  root:\n    type: OS::Heat::RandomString\n    properties: {length: 8}\n",
    );
    deps.insert("root".into(), vec![]);
    for b in 0..width {
        for d in 0..depth {
            let name = format!("n{b}_{d}");
            let prev = if d == 0 {
                "root".to_string()
            } else {
                format!("n{b}_{}", d - 1)
            };
            let mut my = vec![prev.clone()];
            let mut extra = String::new();
            if d > 0 && b > 0 && d % 3 == 0 {
                let cross = format!("n{}_{}", b - 1, d - 1);
                extra = format!("    depends_on: [{cross}]\n");
                my.push(cross);
            }
            text += &format!(
                "  {name}:\n    type: OS::Heat::TestResource\n{extra}    properties:\n      value: {{get_attr: [{prev}, {attr}]}}\n",
                attr = if prev == "root" { "value" } else { "output" }
            );
            deps.insert(name, my);
        }
    }
    let tails: Vec<String> = (0..width).map(|b| format!("n{b}_{}", depth - 1)).collect();
    text += &format!(
        "  sink:\n    type: OS::Heat::None\n    depends_on: [{}]\n",
        tails.join(", ")
    );
    deps.insert("sink".into(), tails);
    text += "outputs:\n  seed:\n    value: {get_attr: [root, value]}\n";
    (text, deps)
}

/// Claims a job directly, as an engine would.
async fn claim(store: &Store, engine: &str, lease_ms: i64) -> Claimed {
    match store.claim(engine, lease_ms, &[], |_| true).await.unwrap() {
        Claim::Job(job) => job,
        other => panic!("expected a job, got {other:?}"),
    }
}

fn positions(events: &[EventRow], action: &str, status: &str) -> HashMap<String, i64> {
    events
        .iter()
        .filter(|e| e.action == action && e.status == status)
        .filter_map(|e| Some((e.resource.clone()?, e.id)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_resource_dag_is_created_and_deleted_in_dependency_order() {
    for db in backends().await {
        let run = start(&db.url, &[], 16).await;
        let store = run.engine.store().clone();
        let (text, deps) = dag(20, 10);
        assert_eq!(deps.len(), 202);
        let row = create(&run.engine, "big", &text).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(
            (done.action.as_str(), done.status.as_str()),
            ("CREATE", "COMPLETE"),
            "{}: {}",
            db.name,
            done.status_reason
        );

        let events = store.events(&row.id, 0).await.unwrap();
        let started = positions(&events, "CREATE", "IN_PROGRESS");
        let completed = positions(&events, "CREATE", "COMPLETE");
        assert_eq!(completed.len(), deps.len(), "{}", db.name);
        for (name, needs) in &deps {
            for dep in needs {
                assert!(
                    completed[dep] < started[name],
                    "{}: {name} started before {dep} completed",
                    db.name
                );
            }
        }
        // Values flowed along the chains: each resource got its predecessor's output.
        let resources = store.resources(&row.id).await.unwrap();
        let seed = resources
            .iter()
            .find(|r| r.name == "root")
            .unwrap()
            .attributes
            .clone()
            .unwrap()["value"]
            .clone();
        let tail = resources
            .iter()
            .find(|r| r.name == "n7_9")
            .unwrap()
            .attributes
            .clone()
            .unwrap();
        assert_eq!(tail["output"], seed, "{}", db.name);

        run.engine.delete_stack("big").await.unwrap();
        let gone = settle(&store, &row.id).await;
        assert_eq!(
            (gone.action.as_str(), gone.status.as_str()),
            ("DELETE", "COMPLETE"),
            "{}: {}",
            db.name,
            gone.status_reason
        );
        let events = store.events(&row.id, 0).await.unwrap();
        let started = positions(&events, "DELETE", "IN_PROGRESS");
        let deleted = positions(&events, "DELETE", "COMPLETE");
        assert_eq!(deleted.len(), deps.len());
        for (name, needs) in &deps {
            for dep in needs {
                assert!(
                    deleted[name] < started[dep],
                    "{}: {dep} deleted before its dependent {name}",
                    db.name
                );
            }
        }
        assert!(matches!(
            store.find_stack("big").await,
            Err(StoreError::StackNotFound(_))
        ));
        run.shutdown().await;
        db.cleanup().await;
    }
}

const FAILING: &str = r#"
heat_template_version: 2021-04-16
resources:
  slow_sibling:
    type: OS::Heat::TestResource
    properties: {value: slow, action_wait_secs: {create: 1}}
  broken:
    type: OS::Heat::TestResource
    properties: {fail: true}
  after_broken:
    type: OS::Heat::TestResource
    properties: {value: {get_attr: [broken, output]}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_fails_the_stack_and_lets_running_siblings_finish() {
    for db in backends().await {
        let run = start(&db.url, &[], 4).await;
        let store = run.engine.store().clone();
        let row = create(&run.engine, "failing", FAILING).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(
            (done.action.as_str(), done.status.as_str()),
            ("CREATE", "FAILED"),
            "{}",
            db.name
        );
        assert!(
            done.status_reason.contains("broken")
                && done.status_reason.contains("Test Resource failed"),
            "{}",
            done.status_reason
        );
        let by_name: HashMap<String, String> = store
            .resources(&row.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.name, format!("{}_{}", r.action, r.status)))
            .collect();
        assert_eq!(by_name["broken"], "CREATE_FAILED");
        assert_eq!(
            by_name["slow_sibling"], "CREATE_COMPLETE",
            "{}: the running sibling finished",
            db.name
        );
        assert_eq!(
            by_name["after_broken"], "INIT_COMPLETE",
            "{}: nothing after the failure started",
            db.name
        );

        // A failed stack can be deleted; what never existed needs no plugin call.
        run.engine.delete_stack("failing").await.unwrap();
        let gone = settle(&store, &row.id).await;
        assert_eq!(
            gone.status, "COMPLETE",
            "{}: {}",
            db.name, gone.status_reason
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_operations_poll_without_holding_a_worker() {
    let text = r#"
heat_template_version: 2021-04-16
resources:
  a: {type: OS::Heat::TestResource, properties: {action_wait_secs: {create: 2}}}
  b: {type: OS::Heat::TestResource, properties: {action_wait_secs: {create: 2}}}
  c: {type: OS::Heat::TestResource, properties: {action_wait_secs: {create: 2}}}
"#;
    for db in backends().await {
        // One worker: if a wait held it, the creates would run one after another.
        let run = start(&db.url, &[], 1).await;
        let store = run.engine.store().clone();
        let row = create(&run.engine, "waits", text).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        let events = store.events(&row.id, 0).await.unwrap();
        let started = positions(&events, "CREATE", "IN_PROGRESS");
        let completed = positions(&events, "CREATE", "COMPLETE");
        let last_start = started.values().max().unwrap();
        let first_done = completed.values().min().unwrap();
        assert!(
            last_start < first_done,
            "{}: all three started before any finished",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_the_real_object_and_delete_removes_the_rest() {
    let cloud = FakeCloud::start().await;
    let text = format!(
        r#"
heat_template_version: 2021-04-16
resources:
  kept:
    type: Kiln::HTTP::Resource
    deletion_policy: Retain
    properties: {{url: "{url}", body: {{name: kept}}}}
  gone:
    type: Kiln::HTTP::Resource
    properties: {{url: "{url}", body: {{name: gone, peer: {{get_attr: [kept, id]}}}}}}
"#,
        url = cloud.url()
    );
    for db in backends().await {
        let run = start(&db.url, &[cloud.rule()], 4).await;
        let store = run.engine.store().clone();
        let before = cloud.objects();
        let row = create(&run.engine, "http", &text).await;
        assert_eq!(
            settle(&store, &row.id).await.status,
            "COMPLETE",
            "{}",
            db.name
        );
        assert_eq!(cloud.objects(), before + 2);
        run.engine.delete_stack("http").await.unwrap();
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        assert_eq!(
            cloud.objects(),
            before + 1,
            "{}: the retained object stays",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
    // Every create carried an idempotency key naming stack, resource, action and generation.
    let posts: Vec<_> = cloud
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(posts.iter().all(|p| {
        p.idempotency_key
            .as_deref()
            .is_some_and(|k| k.ends_with("/create/1"))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_action_per_stack() {
    let text = "heat_template_version: 2021-04-16\nresources:\n  w: {type: OS::Heat::TestResource, properties: {action_wait_secs: {create: 30}}}\n";
    for db in backends().await {
        // No engine runs: the create stays in progress and holds the lock.
        let store = Store::open(&db.url).await.unwrap();
        let engine = tuned(store.clone(), EngineConfig::default(), &[]).await;
        create(&engine, "busy", text).await;
        match engine.delete_stack("busy").await {
            Err(StoreError::ActionInProgress { stack, action, .. }) => {
                assert_eq!((stack.as_str(), action.as_str()), ("busy", "CREATE"))
            }
            other => panic!("{}: expected ActionInProgress, got {other:?}", db.name),
        }
        let stack = validate(text, &engine);
        let sources = Sources {
            template: String::new(),
            template_text: String::new(),
            environments: vec![],
            parameters: vec![],
            options: Default::default(),
        };
        let again = engine.create_stack("busy", &stack, &sources);
        assert!(
            matches!(again.await, Err(StoreError::StackExists(_))),
            "{}",
            db.name
        );
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_cannot_write() {
    let text = "heat_template_version: 2021-04-16\nresources:\n  r: {type: OS::Heat::None}\n";
    for db in backends().await {
        let store = Store::open(&db.url).await.unwrap();
        let engine = tuned(store.clone(), EngineConfig::default(), &[]).await;
        create(&engine, "fenced", text).await;
        // Engine A claims with a lease that has already run out; engine B takes the job over.
        let a = claim(&store, "engine-a", -1000).await;
        let b = claim(&store, "engine-b", 60_000).await;
        assert_eq!(a.id, b.id);
        assert!(b.token > a.token);
        let update = kiln::store::ResourceUpdate {
            action: Action::Create,
            status: Status::Complete,
            reason: "zombie".into(),
            physical_id: Some("zombie".into()),
            ..Default::default()
        };
        let stale = store.finish(&a, "engine-a", &update).await;
        assert!(
            matches!(stale, Err(StoreError::Fenced(_))),
            "{}: {stale:?}",
            db.name
        );
        let late = store.reschedule(&a, "engine-a", 10, None).await;
        assert!(matches!(late, Err(StoreError::Fenced(_))));
        let fresh = kiln::store::ResourceUpdate {
            physical_id: Some("fresh".into()),
            ..update
        };
        store.finish(&b, "engine-b", &fresh).await.unwrap();
        let ended =
            store.try_finish_traversal(&b.stack_id, b.traversal, Action::Create, "engine-b");
        assert!(ended.await.unwrap(), "{}", db.name);
        let row = store.find_stack("fenced").await.unwrap();
        assert_eq!(row.status, "COMPLETE");
        let resources = store.resources(&row.id).await.unwrap();
        assert_eq!(
            resources[0].physical_id.as_deref(),
            Some("fresh"),
            "only engine B's write"
        );
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traversal_left_stalled_by_a_dead_engine_is_repaired() {
    let text = "heat_template_version: 2021-04-16\nresources:\n  first: {type: OS::Heat::None}\n  second: {type: OS::Heat::None, depends_on: [first]}\n";
    for db in backends().await {
        let store = Store::open(&db.url).await.unwrap();
        let engine = tuned(store.clone(), EngineConfig::default(), &[]).await;
        let row = create(&engine, "stalled", text).await;
        // An engine finishes `first` and dies before scheduling `second`.
        let job = claim(&store, "dead-engine", 60_000).await;
        let done = kiln::store::ResourceUpdate {
            action: Action::Create,
            status: Status::Complete,
            reason: "state changed".into(),
            physical_id: Some("p".into()),
            state: Some("{}".into()),
            attributes: Some("{}".into()),
            properties: Some("{}".into()),
            ..Default::default()
        };
        store.finish(&job, "dead-engine", &done).await.unwrap();
        assert_eq!(store.stalled().await.unwrap().len(), 1, "{}", db.name);
        // A live engine notices on its heartbeat and carries on.
        let config = EngineConfig {
            lease_ms: 900,
            heartbeat_ms: 300,
            maintenance_interval_ms: 300,
            ..EngineConfig::default()
        };
        let live = run(&tuned(store.clone(), config, &[]).await);
        let end = settle(&store, &row.id).await;
        assert_eq!(end.status, "COMPLETE", "{}: {}", db.name, end.status_reason);
        live.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_stack_limit_bounds_running_jobs_and_spares_other_stacks() {
    // Calls that take 200 ms hold their worker, so jobs that may overlap do.
    let cloud = FakeCloud::with_latency(200).await;
    let many: String = (0..10)
        .map(|i| {
            format!(
                "  r{i}:\n    type: Kiln::HTTP::Resource\n    properties: {{url: \"{}\"}}\n",
                cloud.url()
            )
        })
        .collect();
    let text = format!("heat_template_version: 2021-04-16\nresources:\n{many}");
    for db in backends().await {
        let store = Store::open(&db.url).await.unwrap();
        let config = EngineConfig {
            workers: 8,
            max_concurrent_per_stack: 2,
            ..EngineConfig::default()
        };
        let engine = tuned(store.clone(), config, &[cloud.rule()]).await;
        let first = create(&engine, "limited-1", &text).await;
        let second = create(&engine, "limited-2", &text).await;
        let running = run(&engine);
        let mut events = Vec::new();
        for row in [&first, &second] {
            let end = settle(&store, &row.id).await;
            assert_eq!(end.status, "COMPLETE", "{}: {}", db.name, end.status_reason);
            let of_stack = store.events(&row.id, 0).await.unwrap();
            events.extend(of_stack.into_iter().map(|e| (row.name.clone(), e)));
        }
        running.shutdown().await;
        // Replayed in the order they were written (event ids are global): a job runs from its
        // claim (IN_PROGRESS) to its result.
        events.sort_by_key(|(_, e)| e.id);
        let mut per_stack: HashMap<&str, (i32, i32)> = HashMap::new();
        let (mut total, mut most_total) = (0i32, 0i32);
        for (stack, e) in events.iter().filter(|(_, e)| e.resource.is_some()) {
            let (now, most) = per_stack.entry(stack.as_str()).or_default();
            let step = if e.status == "IN_PROGRESS" { 1 } else { -1 };
            *now += step;
            total += step;
            *most = (*most).max(*now);
            most_total = most_total.max(total);
        }
        for stack in ["limited-1", "limited-2"] {
            assert_eq!(
                per_stack[stack].1, 2,
                "{}: the most jobs of {stack} at once is the limit: {per_stack:?}",
                db.name
            );
        }
        assert!(
            most_total > 2,
            "{}: the two stacks never ran at once (at most {most_total} jobs in flight): the \
             limit is per stack, not global",
            db.name
        );
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_engine_cannot_work_fails_its_resource_instead_of_coming_back_forever() {
    // The stored template is damaged behind the engine's back: every attempt to work the job
    // fails inside the engine. After a few tries the resource fails with the error, and the
    // stack ends FAILED instead of staying IN_PROGRESS.
    let text = "heat_template_version: 2021-04-16\nresources:\n  a:\n    type: OS::Heat::None\n";
    for db in backends().await {
        let store = Store::open(&db.url).await.unwrap();
        let engine = tuned(store.clone(), EngineConfig::default(), &[]).await;
        let row = create(&engine, "damaged", text).await;
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query("UPDATE stacks SET template = 'not json' WHERE id = $1")
            .bind(&row.id)
            .execute(&mut conn)
            .await
            .unwrap();
        let run = run(&engine);
        let end = settle(&store, &row.id).await;
        run.shutdown().await;
        assert_eq!(end.status, "FAILED", "{}", db.name);
        assert!(
            end.status_reason
                .contains("internal error (5 times on this job)")
                && end.status_reason.contains("stored data is corrupt"),
            "{}: {}",
            db.name,
            end.status_reason
        );
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_the_model_does_not_know_is_corrupt_data_naming_it() {
    // Written behind the store's back (a newer build's state, a hand edit): reading the stack
    // says what is wrong instead of panicking or passing the text on.
    let text = "heat_template_version: 2021-04-16\nresources:\n  a:\n    type: OS::Heat::None\n";
    for db in backends().await {
        let store = Store::open(&db.url).await.unwrap();
        let engine = tuned(store.clone(), EngineConfig::default(), &[]).await;
        let row = create(&engine, "odd", text).await;
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query("UPDATE stacks SET status = 'PAUSED' WHERE id = $1")
            .bind(&row.id)
            .execute(&mut conn)
            .await
            .unwrap();
        match store.find_stack(&row.id).await {
            Err(e @ StoreError::Corrupt(_)) => assert_eq!(
                e.to_string(),
                "stored data is corrupt: \"PAUSED\" is not a status (expected one of: \
                 IN_PROGRESS COMPLETE FAILED)",
                "{}",
                db.name
            ),
            other => panic!("{}: expected corrupt data, got {other:?}", db.name),
        }
        db.cleanup().await;
    }
}
