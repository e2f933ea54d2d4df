//! How engines coordinate through the store, on both backends, in one process: the leader
//! lease, rescuing jobs of an engine whose lease expired (and refusing its late writes), taking
//! over stack locks of dead holders, the engine registry's states, and cancel. The same
//! mechanisms with real processes and signals are in scale_out.rs.

mod support;

use std::time::{Duration, Instant};

use fault_cloud::{FaultConfig, FaultServer, Mix};
use kiln::config::EngineConfig;
use kiln::engine::Engine;
use kiln::model::{Action, Liveness, Status};
use kiln::store::{Claim, ResourceUpdate, Store, StoreError};
use support::db::backends;
use support::stacks::{create, run, settle};

const ONE: &str = "heat_template_version: 2021-04-16\nresources:\n  a: {type: OS::Heat::None}\n";

/// Polls `check` until it holds; fails the test after a generous deadline.
async fn wait_for<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn engine(url: &str) -> Engine {
    let store = Store::open(url).await.unwrap();
    support::stacks::tuned(store, EngineConfig::default(), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_terms_never_overlap() {
    for db in backends().await {
        let store = Store::open(&db.url).await.unwrap();
        // Ten engines race for a free lease: exactly one wins.
        let mut racers = tokio::task::JoinSet::new();
        for i in 0..10 {
            let store = store.clone();
            racers.spawn(async move { store.lead(&format!("e{i}"), 300).await.unwrap() });
        }
        let mut winners = Vec::new();
        while let Some(r) = racers.join_next().await {
            winners.extend(r.unwrap());
        }
        assert_eq!(winners.len(), 1, "{}: {winners:?}", db.name);
        let first = winners.remove(0);
        assert_eq!(first.term, 1, "{}", db.name);
        // The holder renews within its term; nobody else gets it meanwhile.
        let renewed = store.lead(&first.holder, 300).await.unwrap().unwrap();
        assert_eq!(renewed.term, 1);
        let other = if first.holder == "e0" { "e1" } else { "e0" };
        assert!(store.lead(other, 300).await.unwrap().is_none());

        // Once the lease expires (database clock), another engine leads in a new term.
        wait_for("the lease to expire", || async {
            store.leader().await.unwrap().is_none()
        })
        .await;
        let second = store.lead(other, 60_000).await.unwrap().unwrap();
        assert_eq!(second.term, 2, "{}", db.name);
        assert!(store.lead(&first.holder, 300).await.unwrap().is_none());
        assert_eq!(store.leader().await.unwrap().unwrap().holder, other);

        // Resigning frees it at once.
        store.resign(other).await.unwrap();
        assert!(store.leader().await.unwrap().is_none());
        let third = store.lead(&first.holder, 60_000).await.unwrap().unwrap();
        assert_eq!(third.term, 3);

        let terms = store.leader_terms().await.unwrap();
        assert_eq!(terms.iter().map(|t| t.term).collect::<Vec<_>>(), [1, 2, 3]);
        for pair in terms.windows(2) {
            assert!(
                pair[1].acquired_at >= pair[0].expires_at,
                "{}: terms overlap: {pair:?}",
                db.name
            );
        }
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescued_job_refuses_its_old_holders_writes() {
    for db in backends().await {
        let e = engine(&db.url).await;
        let store = e.store().clone();
        let row = create(&e, "rescue", ONE).await;
        let Claim::Job(job) = store.claim("ghost", 200, &[], |_| true).await.unwrap() else {
            panic!("no job to claim");
        };
        let leader = store.lead("leader", 60_000).await.unwrap().unwrap();
        // Not before the lease runs out...
        assert!(
            store
                .rescue_jobs("leader", leader.term)
                .await
                .unwrap()
                .is_empty()
        );
        wait_for("the job's lease to expire", || async {
            !store
                .rescue_jobs("leader", leader.term)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
        let events = store.events(&row.id, 0).await.unwrap();
        let rescued = events.iter().find(|ev| ev.status == "RESCUED").unwrap();
        assert!(
            rescued.reason.contains("engine ghost expired"),
            "{}",
            rescued.reason
        );
        // ... and the old holder, waking up late, cannot write.
        let late = ResourceUpdate {
            action: Action::Create,
            status: Status::Complete,
            reason: "late".into(),
            physical_id: Some("stale".into()),
            ..Default::default()
        };
        assert!(
            matches!(
                store.finish(&job, "ghost", &late).await,
                Err(StoreError::Fenced(_))
            ),
            "{}",
            db.name
        );
        // A stale leader (a term that is not current) rescues nothing.
        assert!(
            store
                .rescue_jobs("leader", leader.term + 1)
                .await
                .unwrap()
                .is_empty()
        );
        // A live engine finishes the stack.
        let running = run(&e);
        let end = settle(&store, &row.id).await;
        running.shutdown().await;
        assert_eq!(end.status, "COMPLETE", "{}", db.name);
        let a = store.resources_named(&row.id, &["a"]).await.unwrap();
        assert_ne!(a[0].physical_id.as_deref(), Some("stale"));
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_of_dead_holders_are_taken_over_and_engines_show_their_state() {
    for db in backends().await {
        let e = engine(&db.url).await;
        let store = e.store().clone();
        // The engine that starts the action holds its lock; a second action is refused,
        // naming the action, its holder and since when.
        let row = create(&e, "locked", ONE).await;
        match e.delete_stack("locked").await {
            Err(StoreError::ActionInProgress { action, holder, .. }) => {
                assert_eq!((action.as_str(), holder.as_str()), ("CREATE", e.id()));
            }
            other => panic!("{}: expected ActionInProgress, got {other:?}", db.name),
        }

        // Engines: one that stops heartbeating (lease 200 ms) is dead; one draining; one
        // stopped; the lock holder never registered (it only submitted the stack).
        store.register_engine("quiet", "h", 1, 200).await.unwrap();
        store
            .register_engine("leaving", "h", 2, 60_000)
            .await
            .unwrap();
        store.engine_draining("leaving").await.unwrap();
        store.register_engine("gone", "h", 3, 60_000).await.unwrap();
        store.engine_stopped("gone").await.unwrap();
        store
            .register_engine("leader", "h", 4, 60_000)
            .await
            .unwrap();
        wait_for("the quiet engine to be dead", || async {
            store
                .engine_list()
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == "quiet" && x.status == "dead")
        })
        .await;
        let term = store.lead("leader", 60_000).await.unwrap().unwrap().term;
        let list = store.engine_list().await.unwrap();
        let status = |id: &str| {
            let x = list.iter().find(|x| x.id == id).unwrap();
            (x.status, x.leader)
        };
        assert_eq!(status("leaving"), (Liveness::Draining, false));
        assert_eq!(status("gone"), (Liveness::Stopped, false));
        assert_eq!(status("leader"), (Liveness::Up, true));

        // A holder that never ran as an engine only submitted the action: nothing to take.
        assert!(
            store
                .take_over_locks("leader", term)
                .await
                .unwrap()
                .is_empty()
        );
        // The holder ran as an engine and stopped heartbeating: the leader takes the lock.
        store.register_engine(e.id(), "h", 5, 200).await.unwrap();
        wait_for("the lock to be taken over", || async {
            !store
                .take_over_locks("leader", term)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
        let events = store.events(&row.id, 0).await.unwrap();
        assert!(
            events.iter().any(|ev| ev.resource.is_none()
                && ev
                    .reason
                    .contains(&format!("stack lock taken over from {}", e.id()))),
            "{}: {events:?}",
            db.name
        );
        let list = store.engine_list().await.unwrap();
        assert_eq!(
            list.iter().find(|x| x.id == "leader").unwrap().locks_held,
            1
        );
        // The action goes on and ends, releasing the lock.
        let running = run(&e);
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        running.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_new_work_and_lets_running_calls_finish() {
    for db in backends().await {
        // Slow calls (300 ms each) and two workers: cancel lands while most have not started.
        let server = FaultServer::start(FaultConfig {
            mix: Mix {
                latency_ms: 300,
                ..Mix::default()
            },
            ..FaultConfig::default()
        })
        .await
        .unwrap();
        let url = server.url("items");
        let many: String = (0..12)
            .map(|i| {
                format!(
                    "  o{i}:\n    type: Kiln::HTTP::Resource\n    properties: {{url: \"{url}\"}}\n"
                )
            })
            .collect();
        let text = format!("heat_template_version: 2021-04-16\nresources:\n{many}");
        let config = EngineConfig {
            workers: 2,
            ..EngineConfig::default()
        };
        let store = Store::open(&db.url).await.unwrap();
        let e = support::stacks::tuned(store, config, &[server.base_url()]).await;
        let store = e.store().clone();
        let row = create(&e, "cancelled", &text).await;
        let running = run(&e);
        wait_for("a resource to complete", || async {
            store
                .events(&row.id, 0)
                .await
                .unwrap()
                .iter()
                .any(|ev| ev.resource.is_some() && ev.status == "COMPLETE")
        })
        .await;
        store.cancel(&row.id, "tester", true).await.unwrap();
        let end = settle(&store, &row.id).await;
        running.shutdown().await;
        assert_eq!(end.status, "FAILED", "{}", db.name);
        assert_eq!(end.status_reason, "Stack CREATE cancelled", "{}", db.name);

        // Nothing is left running, and what ran is recorded: one object per COMPLETE resource.
        let resources = store.resources(&row.id).await.unwrap();
        assert!(
            resources.iter().all(|r| r.status != "IN_PROGRESS"),
            "{}: {resources:?}",
            db.name
        );
        let complete = resources
            .iter()
            .filter(|r| r.action == "CREATE" && r.status == "COMPLETE")
            .count();
        let never_started = resources.iter().filter(|r| r.action == "INIT").count();
        assert_eq!(server.object_count(), complete, "{}", db.name);
        assert!(never_started > 0, "{}: cancel came too late", db.name);
        // Asking again is refused clearly; the stack can then be deleted.
        assert!(matches!(
            store.cancel(&row.id, "tester", true).await,
            Err(StoreError::NothingToCancel(_))
        ));
        let running = run(&e);
        e.delete_stack(&row.id).await.unwrap();
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        running.shutdown().await;
        assert_eq!(server.object_count(), 0, "{}", db.name);
        db.cleanup().await;
    }
}
