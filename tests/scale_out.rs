//! Scale-out (issue 5) with real processes: several `kiln engine` processes on one PostgreSQL
//! database share one stack's work, finish the work of an engine killed with SIGKILL, refuse the
//! late writes of one paused with SIGSTOP, never run two actions on one stack nor have two
//! leaders at once, and restart one by one (SIGTERM) without repeating a call.
//!
//! The cloud is the fault-cloud crate's server, in this process: its record of every request
//! and of the objects made per idempotency key is the proof that no object was created twice.
//! Engines' events (each names the engine that wrote it, at a time on the database's clock)
//! show who did what. Every wait polls for a state with a generous deadline; no test asserts
//! how fast.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use fault_cloud::{FaultConfig, FaultServer, FaultServerHandle, Mix};
use kiln::store::{EventRow, LeaderTerm, StackRow, Store, StoreError};
use sqlx::Connection;
use support::cloud::http_stack;
use support::db::{TestDb, backends};
use support::procs::{Cluster, EngineInfo, Settings, wait_for, wait_until};

/// For a whole stack's action, or a takeover (lease expiry, then the rescuer).
const LONG: Duration = Duration::from_secs(240);
/// For a process to start, stop or show a state.
const SHORT: Duration = Duration::from_secs(60);

/// The PostgreSQL test database; `None`, recording the skip (support::skip), when there is none
/// (under CI, where KILN_TEST_DATABASE_URL must be set, that panics instead).
async fn postgres() -> Option<TestDb> {
    if std::env::var_os("KILN_TEST_DATABASE_URL").is_none() {
        support::skip::skipped("needs PostgreSQL: KILN_TEST_DATABASE_URL is not set");
        return None;
    }
    let db = backends()
        .await
        .into_iter()
        .find(|db| db.name == "postgres")
        .expect("KILN_TEST_DATABASE_URL is set: a PostgreSQL backend");
    Some(db)
}

/// A fault server that injects no faults, only a latency per request: calls that wait on the
/// network, as a cloud's do, so that many run at once and a signal finds some in flight.
async fn cloud(latency_ms: u64) -> FaultServerHandle {
    FaultServer::start(FaultConfig {
        mix: Mix {
            latency_ms,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("fault server starts")
}

async fn events(store: &Store, name: &str) -> Vec<EventRow> {
    let row = store.find_stack(name).await.unwrap();
    store.events(&row.id, 0).await.unwrap()
}

/// Resource -> the engines that wrote a CREATE COMPLETE event for it, one entry per event (so a
/// duplicate COMPLETE shows as a second entry, not hidden by a map).
fn completed(events: &[EventRow]) -> BTreeMap<String, Vec<String>> {
    let mut done: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.action == "CREATE" && e.status == "COMPLETE")
    {
        if let Some(r) = &e.resource {
            done.entry(r.clone())
                .or_default()
                .push(e.engine.clone().unwrap_or_default());
        }
    }
    done
}

/// Resource -> the engine that completed it, asserting that each was completed exactly once.
fn completed_once(events: &[EventRow]) -> BTreeMap<String, String> {
    let done = completed(events);
    let twice: Vec<_> = done.iter().filter(|(_, by)| by.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "resources with more than one CREATE COMPLETE event: {twice:?}"
    );
    done.into_iter()
        .map(|(r, mut by)| (r, by.remove(0)))
        .collect()
}

/// Waits until at least `n` resources of the stack are created (the stack is well under way).
async fn wait_completed(store: &Store, name: &str, n: usize) {
    let what = format!("{n} resources of {name} to complete");
    wait_until(LONG, &what, async || {
        completed(&events(store, name).await).len() >= n
    })
    .await;
}

/// Waits until the stack's action ends; if it never does, the panic says what is left and, on
/// PostgreSQL, which sessions hold or wait for locks.
async fn settle(store: &Store, db_url: &str, name: &str) -> StackRow {
    let deadline = Instant::now() + LONG;
    loop {
        let row = store.find_stack(name).await.unwrap();
        if row.status != "IN_PROGRESS" {
            return row;
        }
        if Instant::now() >= deadline {
            let left: Vec<String> = store
                .resources(&row.id)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.status != "COMPLETE")
                .map(|r| format!("{} {}_{}", r.name, r.action, r.status))
                .collect();
            panic!(
                "stack {name} still IN_PROGRESS after {LONG:?}; not complete: {left:?}\n\
                 sessions in a transaction or waiting for a lock:\n{}",
                pg_sessions(db_url).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PostgreSQL sessions of this database that are idle inside a transaction (holding its locks)
/// or waiting for a lock: what a stuck stack is usually waiting on.
async fn pg_sessions(db_url: &str) -> String {
    if !db_url.starts_with("postgres") {
        return String::new();
    }
    sqlx::any::install_default_drivers();
    let Ok(mut conn) = sqlx::AnyConnection::connect(db_url).await else {
        return "(cannot connect)".into();
    };
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT CAST(pid AS TEXT), state || ' ' || COALESCE(wait_event_type, ''),
                COALESCE(CAST(now() - xact_start AS TEXT), ''), LEFT(query, 160)
         FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND (state LIKE 'idle in transaction%' OR wait_event_type = 'Lock')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    rows.iter()
        .map(|(pid, state, age, query)| {
            let query = query.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("  pid {pid} {state} for {age}: {query}\n")
        })
        .collect()
}

/// The resource an idempotency key belongs to: keys are `{stack_id}/{resource}/{phase}/{traversal}`
/// (the engine's `context`).
fn resource_of(key: &str) -> &str {
    let mut parts = key.rsplitn(4, '/');
    let (_traversal, _phase, resource) = (parts.next(), parts.next(), parts.next());
    resource.unwrap_or_else(|| panic!("not an idempotency key of a job: {key:?}"))
}

/// Every create ran exactly once, judged by what the engines did, not only by what the cloud
/// kept (the fault server replays a repeated key, so its object count cannot see two engines
/// running one job with the same key: a fencing failure it would hide).
///
/// - The cloud: `n` objects and `n` keys, one per resource, each of which created one object;
///   every key POSTed once, except the keys of the jobs `victim` held when it was killed or
///   paused (claimed, not completed), which the engine that took the job over sends again with
///   the same key.
/// - The events, per resource: one CREATE COMPLETE, and one IN_PROGRESS (the claim); for a
///   job the victim held, its claim and one claim by the engine that took the job over (which
///   completed it), and at most one RESCUED (the leader freed the job; a worker may also claim
///   it straight after its lease ran out, with no RESCUED). No other resource was rescued.
///   These stacks inject no faults, so no job is retried.
fn assert_exactly_once(
    cloud: &FaultServerHandle,
    events: &[EventRow],
    n: usize,
    victim: Option<&str>,
) {
    let stats = cloud.stats();
    let held = victim.map_or_else(BTreeSet::new, |v| claimed_not_finished(events, v));

    // The cloud: POSTs per key, keys per resource, objects per key.
    let mut posts: BTreeMap<String, usize> = BTreeMap::new();
    for r in cloud.requests().into_iter().filter(|r| r.method == "POST") {
        let key = r
            .idempotency_key
            .clone()
            .unwrap_or_else(|| panic!("a POST without an idempotency key: {r:?}"));
        *posts.entry(key).or_default() += 1;
    }
    let mut keys_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for key in posts.keys() {
        keys_of.entry(resource_of(key)).or_default().push(key);
    }
    let several: Vec<_> = keys_of.iter().filter(|(_, k)| k.len() != 1).collect();
    assert!(
        several.is_empty(),
        "resources created under more than one key: {several:?}\n{stats}"
    );
    assert_eq!(keys_of.len(), n, "resources POSTed\n{stats}");
    let repeated: Vec<_> = posts
        .iter()
        .filter(|(k, p)| **p > 1 && !held.contains(resource_of(k)))
        .collect();
    assert!(
        repeated.is_empty(),
        "keys POSTed more than once (two runs of one job), none of them a job that an engine \
         killed or paused held (victim {victim:?} held {held:?}): {repeated:?}\n{stats}"
    );
    // Each of the n keys made one object (the server replays a repeated key).
    assert_eq!(
        cloud.keys().values().filter(|s| s.created == 1).count(),
        n,
        "{stats}"
    );
    assert_eq!(cloud.object_count(), n, "{stats}");

    // The events: claims, rescues and completions per resource.
    #[derive(Debug, Default)]
    struct Seen<'a> {
        claims: Vec<&'a str>,
        rescued: usize,
        completed: Vec<&'a str>,
    }
    let mut seen: BTreeMap<&str, Seen<'_>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.action == "CREATE") {
        let Some(r) = e.resource.as_deref() else {
            continue;
        };
        let s = seen.entry(r).or_default();
        let by = e.engine.as_deref().unwrap_or_default();
        match e.status.as_str() {
            "IN_PROGRESS" => s.claims.push(by),
            "RESCUED" => s.rescued += 1,
            "COMPLETE" => s.completed.push(by),
            _ => {}
        }
    }
    assert_eq!(seen.len(), n, "resources with CREATE events");
    let once = |r: &str, s: &Seen<'_>| -> bool {
        if !held.contains(r) {
            return s.claims.len() == 1 && s.rescued == 0 && s.completed.len() == 1;
        }
        let theirs = s.claims.iter().filter(|by| Some(**by) == victim).count();
        theirs == 1
            && s.claims.len() == 2
            && s.rescued <= 1
            && s.completed.len() == 1
            && Some(s.completed[0]) != victim
    };
    let wrong: Vec<_> = seen.iter().filter(|(r, s)| !once(r, s)).collect();
    assert!(
        wrong.is_empty(),
        "resources not claimed and completed exactly once (IN_PROGRESS by, RESCUED, COMPLETE \
         by; {victim:?} held {held:?}): {wrong:?}"
    );
}

/// The engine of `cluster` (still running) with the most jobs in flight, once one has some.
async fn busiest(cluster: &Cluster) -> (usize, EngineInfo) {
    wait_for(SHORT, "an engine with jobs in flight", async || {
        cluster
            .engine_list()
            .await
            .into_iter()
            .filter(|e| e.status == "up" && e.jobs_in_flight > 0)
            .filter_map(|e| Some((cluster.index_of(&e.id)?, e)))
            .max_by_key(|(_, e)| e.jobs_in_flight)
    })
    .await
}

/// The resources `engine` claimed (an IN_PROGRESS event) but did not complete: the work it
/// held when it was killed or paused.
fn claimed_not_finished(events: &[EventRow], engine: &str) -> BTreeSet<String> {
    let by = |status: &str| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e.action == "CREATE" && e.status == status)
            .filter(|e| e.engine.as_deref() == Some(engine))
            .filter_map(|e| e.resource.clone())
            .collect()
    };
    &by("IN_PROGRESS") - &by("COMPLETE")
}

/// The work an engine lost was finished by the others: each resource it claimed and did not
/// complete has a COMPLETE event by another engine.
fn assert_taken_over(events: &[EventRow], engine: &str) {
    let lost = claimed_not_finished(events, engine);
    assert!(
        !lost.is_empty(),
        "engine {engine} had jobs in flight, so some resource it claimed was finished by another"
    );
    let done = completed_once(events);
    for r in &lost {
        let by = done.get(r).map(String::as_str);
        assert!(
            by.is_some_and(|by| by != engine),
            "{r}, claimed by {engine}, completed by {by:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_engines_share_one_stack() {
    let Some(db) = postgres().await else { return };
    let cloud = cloud(50).await;
    let mut cluster = Cluster::new(&db.url, &Settings::default());
    // All three are up before the stack exists, so none gets a head start.
    let started = cluster.start_engines(3).await;
    let store = Store::open(&db.url).await.unwrap();

    cluster
        .submit("shared", &http_stack(300, &cloud.url("items")))
        .await;
    let end = settle(&store, &db.url, "shared").await;
    assert_eq!(end.status, "COMPLETE", "{}", end.status_reason);

    let events = events(&store, "shared").await;
    let done = completed_once(&events);
    assert_eq!(done.len(), 300);
    let mut per_engine: BTreeMap<&str, usize> = BTreeMap::new();
    for engine in done.values() {
        *per_engine.entry(engine).or_default() += 1;
    }
    eprintln!("resources per engine: {per_engine:?}");
    for i in started {
        let id = cluster.engines[i].id.as_str();
        let n = per_engine.get(id).copied().unwrap_or(0);
        assert!(
            n >= 30,
            "{id} created only {n} of 300 resources: {per_engine:?}"
        );
    }
    // No engine died: every job ran once.
    assert_exactly_once(&cloud, &events, 300, None);
    cluster.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stack_is_taken_over() {
    // PostgreSQL, and the single-host variant: processes sharing one SQLite file.
    for db in backends().await {
        sigkill_mid_stack(&db).await;
        db.cleanup().await;
    }
}

async fn sigkill_mid_stack(db: &TestDb) {
    eprintln!("backend: {}", db.name);
    let cloud = cloud(200).await;
    let mut cluster = Cluster::new(&db.url, &Settings::default());
    cluster.start_engines(3).await;
    let store = Store::open(&db.url).await.unwrap();

    cluster
        .submit("killed", &http_stack(300, &cloud.url("items")))
        .await;
    wait_completed(&store, "killed", 50).await;
    let (victim, info) = busiest(&cluster).await;
    eprintln!(
        "SIGKILL {} with {} jobs in flight",
        info.id, info.jobs_in_flight
    );
    cluster.engines[victim].kill();
    let status = cluster.engines[victim].wait_exit(SHORT).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let end = settle(&store, &db.url, "killed").await;
    assert_eq!(end.status, "COMPLETE", "{}", end.status_reason);
    let events = events(&store, "killed").await;
    assert_exactly_once(&cloud, &events, 300, Some(&info.id));
    assert_taken_over(&events, &info.id);
    // The registry tells the truth: dead, holding nothing any more.
    let dead = cluster.wait_status(victim, "dead", SHORT).await;
    assert_eq!((dead.jobs_in_flight, dead.locks_held), (0, 0), "{dead:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_engine_cannot_write_after_takeover() {
    let Some(db) = postgres().await else { return };
    let cloud = cloud(200).await;
    let settings = Settings::default();
    let mut cluster = Cluster::new(&db.url, &settings);
    cluster.start_engines(3).await;
    let store = Store::open(&db.url).await.unwrap();

    cluster
        .submit("paused", &http_stack(300, &cloud.url("items")))
        .await;
    wait_completed(&store, "paused", 30).await;
    // Freeze the busiest engine. It may freeze between jobs, or inside a claim that the server
    // then rolls back; what counts is what it holds once frozen (committed leases) and which
    // of those calls it had already made (the cloud answered their POST), so retry until it
    // holds a job whose call was made: that job's result is a write it must come back to.
    let (victim, info, held, called, t_stop) = loop {
        let (victim, info) = busiest(&cluster).await;
        cluster.engines[victim].pause();
        // Statements it had already sent when it froze may still land just after this;
        // anything later than half a second must come from the process after SIGCONT, long
        // after its lease (3 s) ran out and others took its jobs over.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t_stop = store.now_ms().await.unwrap();
        let held = held_jobs(&db.url, &info.id).await;
        // No other engine has had these jobs (the leases are the victim's, unexpired), so a
        // POST under their key is the victim's own call.
        let posted: BTreeSet<String> = cloud
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .filter_map(|r| Some(resource_of(r.idempotency_key.as_deref()?).to_string()))
            .collect();
        let called: BTreeSet<String> = held.intersection(&posted).cloned().collect();
        if !called.is_empty() {
            eprintln!(
                "SIGSTOP {} holding {held:?}, with the calls of {called:?} made",
                info.id
            );
            break (victim, info, held, called, t_stop);
        }
        cluster.engines[victim].resume();
    };

    let end = settle(&store, &db.url, "paused").await;
    assert_eq!(end.status, "COMPLETE", "{}", end.status_reason);

    let log_from = cluster.engines[victim].log_text().len();
    cluster.engines[victim].resume();
    let late_events = async || -> Vec<EventRow> {
        events(&store, "paused")
            .await
            .into_iter()
            .filter(|e| e.engine.as_deref() == Some(info.id.as_str()) && e.at > t_stop)
            .collect()
    };
    wait_for_late_writes(&cluster, victim, log_from, called.len(), async || {
        !late_events().await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(settings.heartbeat_ms * 4)).await;

    let late = late_events().await;
    assert!(
        late.is_empty(),
        "writes of the paused engine landed: {late:?}"
    );
    // The frozen calls' results came back and the store refused every write of them: the
    // refusal is the store's (new tokens), not the engine's own judgement of its lease.
    let refused = refused_writes(&cluster.engines[victim].log_text(), log_from);
    assert!(
        refused >= called.len(),
        "the resumed {} made {} calls before SIGSTOP ({called:?}) but had only {refused} writes \
         refused (`dropping its result`)",
        info.id,
        called.len()
    );
    let events = events(&store, "paused").await;
    // Each job it held when it froze was finished by another engine.
    let done = completed_once(&events);
    for r in &held {
        let by = done.get(r).map(String::as_str);
        assert!(
            by.is_some_and(|by| by != info.id),
            "{r}, held by the paused {}, completed by {by:?}",
            info.id
        );
    }
    assert_exactly_once(&cloud, &events, 300, Some(&info.id));
    cluster.shutdown().await;
    db.cleanup().await;
}

/// The resources whose jobs `engine` holds a lease on, as committed in the database.
async fn held_jobs(db_url: &str, engine: &str) -> BTreeSet<String> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(db_url).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT resource FROM jobs WHERE lease_owner = $1")
        .bind(engine)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.into_iter().map(|(r,)| r).collect()
}

/// How many of the writes an engine attempted were refused because another engine had taken
/// the job over, by its log (from byte `from`): `dropping its result` when the refused write
/// was the job's result; `lost the lease on job` when it was the record of an error (its
/// session, frozen inside a transaction, was ended by the server meanwhile). One per job.
fn refused_writes(log: &str, from: usize) -> usize {
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("dropping its result") || l.contains("lost the lease on job"))
        .count()
}

/// After SIGCONT, the resumed engine comes back to the `called` jobs whose calls it had made
/// before it froze and tries to write their results: waits until each write was refused (the
/// engine says so in its log, from byte `log_from`), or until `landed` says a late write got
/// through (the caller reports which). An engine that never gets to its writes proves nothing
/// about them, so there is no other way out than the deadline.
async fn wait_for_late_writes(
    cluster: &Cluster,
    i: usize,
    log_from: usize,
    called: usize,
    mut landed: impl AsyncFnMut() -> bool,
) {
    let e = &cluster.engines[i];
    let what = format!(
        "{} to have its writes for the {called} calls it made before SIGSTOP refused \
         (`dropping its result` in its log), or to land",
        e.label
    );
    wait_until(LONG, &what, async || {
        refused_writes(&e.log_text(), log_from) >= called || landed().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_exactly_one_proceeds() {
    // PostgreSQL, and the single-host variant: processes sharing one SQLite file.
    for db in backends().await {
        concurrent_actions(&db).await;
        db.cleanup().await;
    }
}

/// Two `stack update --no-wait` processes, then two `stack delete --no-wait`, started together
/// on a COMPLETE stack: one takes the stack lock, the other is refused with ActionInProgress
/// (exit 4). No engine runs meanwhile, so the winner's action stays in progress and the loser
/// cannot slip in after it.
async fn concurrent_actions(db: &TestDb) {
    let cloud = cloud(50).await;
    let mut cluster = Cluster::new(&db.url, &Settings::default());
    let path = cluster.write("small.yaml", &http_stack(5, &cloud.url("items")));
    let out = cluster
        .kiln(&["stack", "create", "contended", "-t", &path])
        .await;
    assert!(
        out.status.success(),
        "{}: create: {}",
        db.name,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cloud.object_count(), 5);

    // Two updates at once: one proceeds, the other is refused naming the update in progress.
    let changed = cluster.write("changed.yaml", &http_stack(6, &cloud.url("items")));
    let update = ["stack", "update", "contended", "-t", &changed, "--no-wait"];
    let (a, b) = tokio::join!(cluster.kiln(&update), cluster.kiln(&update));
    exactly_one_proceeds(db, "update", [a, b]);
    let i = cluster.start_engine().await;
    let store = Store::open(&db.url).await.unwrap();
    let updated = settle(&store, &db.url, "contended").await;
    assert_eq!(
        updated.status, "COMPLETE",
        "{}: {}",
        db.name, updated.status_reason
    );
    assert_eq!(cloud.object_count(), 6, "{}: one added", db.name);
    cluster.engines[i].terminate();
    cluster.engines[i].wait_exit(SHORT).await;

    let delete = ["stack", "delete", "contended", "--no-wait"];
    let (a, b) = tokio::join!(cluster.kiln(&delete), cluster.kiln(&delete));
    exactly_one_proceeds(db, "delete", [a, b]);

    // The winner's delete goes on: an engine finishes it, and every object is gone.
    cluster.start_engine().await;
    let what = format!("{}: the delete to finish", db.name);
    wait_until(LONG, &what, async || {
        matches!(
            store.find_stack("contended").await,
            Err(StoreError::StackNotFound(_))
        )
    })
    .await;
    assert_eq!(cloud.object_count(), 0, "{}: {}", db.name, cloud.stats());
    cluster.shutdown().await;
}

/// Of two commands started together, one succeeded and the other exited 4 naming `action`
/// in progress.
fn exactly_one_proceeds(db: &TestDb, action: &str, outputs: [std::process::Output; 2]) {
    let mut outcomes: Vec<(Option<i32>, String)> = outputs
        .iter()
        .map(|o| {
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        (outcomes[0].0, outcomes[1].0),
        (Some(0), Some(4)),
        "{}: exactly one proceeds: {outcomes:?}",
        db.name
    );
    let refusal = outcomes[1].1.to_lowercase();
    assert!(
        refusal
            .lines()
            .any(|l| l.contains("in progress") && l.contains(action)),
        "{}: the refusal names the action in progress: {}",
        db.name,
        outcomes[1].1
    );
}

/// Terms in order never overlap on the database's clock: a term begins when the one before
/// ended (lease expiry or resignation), never earlier.
fn assert_one_leader_at_a_time(mut terms: Vec<LeaderTerm>) {
    terms.sort_by_key(|t| t.term);
    for w in terms.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        assert!(next.term > prev.term, "terms repeat: {terms:?}");
        assert!(
            next.acquired_at >= prev.expires_at,
            "two leaders at once: term {} ({}) began at {} before term {} ({}) ended at {}\n{terms:?}",
            next.term,
            next.holder,
            next.acquired_at,
            prev.term,
            prev.holder,
            prev.expires_at
        );
    }
}

/// The current leader, once there is one other than the engines in `not`.
async fn new_leader(store: &Store, not: &[&str]) -> LeaderTerm {
    let what = format!("a leader other than {not:?}");
    wait_for(LONG, &what, async || {
        store
            .leader()
            .await
            .unwrap()
            .filter(|t| !not.contains(&t.holder.as_str()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_never_two_leaders() {
    let Some(db) = postgres().await else { return };
    let mut cluster = Cluster::new(&db.url, &Settings::default());
    cluster.start_engines(3).await;
    let store = Store::open(&db.url).await.unwrap();

    // SIGKILL the leader: another takes over once its lease has run out, not before.
    let first = new_leader(&store, &[]).await;
    let i = cluster
        .index_of(&first.holder)
        .expect("a leader we started");
    cluster.engines[i].kill();
    cluster.engines[i].wait_exit(SHORT).await;
    let t_kill = store.now_ms().await.unwrap();
    let second = new_leader(&store, &[&first.holder]).await;
    eprintln!(
        "leader {} killed; {} leads from {} ms after the kill",
        first.holder,
        second.holder,
        second.acquired_at - t_kill
    );
    assert_one_leader_at_a_time(store.leader_terms().await.unwrap());

    // SIGTERM the new leader: it resigns (its term ends when it stops, not when its lease would
    // have run out), and the last engine takes over.
    let j = cluster
        .index_of(&second.holder)
        .expect("a leader we started");
    cluster.engines[j].terminate();
    let status = cluster.engines[j].wait_exit(SHORT).await;
    assert!(status.success(), "{status}");
    let t_exit = store.now_ms().await.unwrap();
    let terms = store.leader_terms().await.unwrap();
    let resigned = terms
        .iter()
        .filter(|t| t.holder == second.holder)
        .max_by_key(|t| t.term)
        .unwrap();
    assert!(
        resigned.expires_at <= t_exit,
        "the stopped leader's term runs on to {} (now {t_exit}): it did not resign",
        resigned.expires_at
    );
    let third = new_leader(&store, &[&first.holder, &second.holder]).await;
    assert!(cluster.index_of(&third.holder).is_some(), "{third:?}");
    assert_one_leader_at_a_time(store.leader_terms().await.unwrap());
    cluster.shutdown().await;

    // The lease table cannot show an old leader acting on: its own UPDATE is what enforces the
    // rule. A leader paused past its lease, and woken up, is what must do nothing.
    a_woken_leader_does_no_leader_work(&db, &store).await;
    db.cleanup().await;
}

/// Libpq's PGAPPNAME, which sqlx reads: the sessions of the engine started with it carry this
/// `application_name`, so that `pg_stat_activity` tells them apart.
const OLD_LEADER_APP: &str = "kiln-old-leader";

/// The statement with which maintenance times out an overdue action (`time_out_actions`, not
/// fenced: any engine may end an overdue action). A round reaches it after `take_over_locks`.
const TIME_OUT_STATEMENT: &str = "UPDATE stacks SET cancel_requested_at";

/// A leader frozen (SIGSTOP) past its lease, while another engine took a new term, wakes up
/// (SIGCONT) and runs a maintenance round with the term it still believes it holds; there is
/// leader-only work for it to find (the stack lock of a killed CLI), and nobody else will do it
/// first. The store must refuse it: no lock takeover, no rescue by the old leader outside a
/// term it held.
///
/// So that the stale round happens, and is known to be over, whatever the timing:
/// - the new leader is started with a maintenance round once an hour, so it never does the
///   work itself;
/// - an overdue action's stack row is locked by the test: each round waits there (in
///   `time_out_actions`, after `take_over_locks`), so the old leader is frozen while waiting
///   there (a known point, not halfway through a takeover), and, once woken, its next round
///   waiting there again proves that round's `take_over_locks` is over and committed;
/// - the leader row is locked by the test while the old leader wakes, so that it cannot learn
///   at once that its term is over (its renewal waits): its next round runs with the stale
///   term. (Engines' sessions give up on a lock after 5 s; all of this takes milliseconds.)
async fn a_woken_leader_does_no_leader_work(db: &TestDb, store: &Store) {
    let mut cluster = Cluster::new(&db.url, &Settings::default());
    let old = cluster
        .start_engine_with(&[("PGAPPNAME", OLD_LEADER_APP)])
        .await;
    let old_id = cluster.engines[old].id.clone();
    let what = format!("{old_id}, the only engine, to lead");
    wait_until(LONG, &what, async || {
        store
            .leader()
            .await
            .unwrap()
            .is_some_and(|t| t.holder == old_id)
    })
    .await;
    let next = cluster
        .start_engine_with(&[("KILN_ENGINE__MAINTENANCE_INTERVAL_MS", "3600000")])
        .await;
    let next_id = cluster.engines[next].id.clone();
    cluster.wait_status(next, "up", SHORT).await;

    // A waiting CLI holds the lock of a stack that stays in progress (polled, nothing leased).
    let path = cluster.write("orphaned.yaml", &slow_stack(2));
    let mut cli = cluster
        .command(&["stack", "create", "orphaned", "-t", &path])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let orphaned = wait_for(LONG, "the CLI to store its stack", async || {
        store.find_stack("orphaned").await.ok()
    })
    .await;
    let cli_id = wait_for(
        LONG,
        "the CLI's engine to hold the lock and be up",
        async || {
            let holder = lock_holder(&db.url, &orphaned.id).await?;
            let list = cluster.engine_list().await;
            list.iter()
                .any(|e| e.id == holder && e.status == "up")
                .then_some(holder)
        },
    )
    .await;

    // The overdue action: its one job is polled (due in ten minutes) before the deadline, so
    // only maintenance can time it out; the test holds its row from before the deadline.
    let path = cluster.write("overdue.yaml", &slow_stack(1));
    let out = cluster
        .kiln(&[
            "stack",
            "create",
            "overdue",
            "-t",
            &path,
            "--no-wait",
            "--timeout",
            "5s",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overdue = store.find_stack("overdue").await.unwrap();
    let mut overdue_conn = connect(&db.url).await;
    let mut overdue_row = overdue_conn.begin().await.unwrap();
    let (cancel,): (Option<i64>,) =
        sqlx::query_as("SELECT cancel_requested_at FROM stacks WHERE id = $1 FOR UPDATE")
            .bind(&overdue.id)
            .fetch_one(&mut *overdue_row)
            .await
            .unwrap();
    assert_eq!(
        cancel, None,
        "the overdue stack was locked before its deadline"
    );
    wait_until(SHORT, "the overdue stack's job to be polling", async || {
        polling(&db.url, &overdue.id).await
    })
    .await;

    // Freeze the leader while its round waits for that row.
    let waiting = loop {
        let what = "the leader's maintenance round to wait for the overdue stack's row";
        let waiting = wait_for(LONG, what, async || {
            blocked_in(&db.url, OLD_LEADER_APP, TIME_OUT_STATEMENT).await
        })
        .await;
        cluster.engines[old].pause();
        if blocked_in(&db.url, OLD_LEADER_APP, TIME_OUT_STATEMENT).await == Some(waiting) {
            // Still in the statement it was waiting in: that is where it is frozen.
            break waiting;
        }
        // Its wait ran out just before the signal: the next round.
        cluster.engines[old].resume();
    };
    // Then, at once (before the frozen leader's lease runs out, so that the CLI's engine does
    // not become the leader), the CLI dies: its lock has a dead holder from now on, which the
    // frozen leader has not seen, and which the new leader leaves alone.
    // SAFETY: signals the child this test started.
    assert_eq!(unsafe { libc::kill(cli.id() as i32, libc::SIGKILL) }, 0);
    cli.wait().unwrap();
    let what = "the frozen leader's wait to run out (its lock_timeout), failing that round";
    wait_until(SHORT, what, async || {
        blocked_in(&db.url, OLD_LEADER_APP, TIME_OUT_STATEMENT).await != Some(waiting)
    })
    .await;
    let second = new_leader(store, &[&old_id]).await;
    assert_eq!(second.holder, next_id, "the engine still running leads");
    let what = format!("the CLI's engine {cli_id} to be dead");
    wait_until(LONG, &what, async || {
        let list = cluster.engine_list().await;
        list.iter().any(|e| e.id == cli_id && e.status == "dead")
    })
    .await;
    assert_eq!(
        lock_holder(&db.url, &orphaned.id).await.as_deref(),
        Some(cli_id.as_str()),
        "nobody took the lock over yet: the new leader runs no round, the old one is frozen"
    );

    // Wake it, with the leader row held so that its renewal waits.
    let mut leader_conn = connect(&db.url).await;
    let mut leader_row = leader_conn.begin().await.unwrap();
    sqlx::query("SELECT holder FROM leader WHERE name = 'maintenance' FOR UPDATE")
        .fetch_all(&mut *leader_row)
        .await
        .unwrap();
    let t_wake = store.now_ms().await.unwrap();
    cluster.engines[old].resume();
    let what = "the woken leader's next round to reach the overdue stack (past take_over_locks)";
    let (_, reached) = wait_for(SHORT, what, async || {
        blocked_in(&db.url, OLD_LEADER_APP, TIME_OUT_STATEMENT)
            .await
            .filter(|(_, started)| *started > t_wake)
    })
    .await;
    eprintln!(
        "{old_id} frozen in a round, woken {} ms after {next_id} began term {}; its next round \
         passed take_over_locks within {} ms",
        t_wake - second.acquired_at,
        second.term,
        reached - t_wake
    );
    leader_row.rollback().await.unwrap();
    overdue_row.rollback().await.unwrap();

    let leader_work = async || {
        let mut all = events(store, "orphaned").await;
        all.extend(events(store, "overdue").await);
        all
    };
    assert_leader_work_in_terms(&leader_work().await, &store.leader_terms().await.unwrap());
    assert_eq!(
        lock_holder(&db.url, &orphaned.id).await.as_deref(),
        Some(cli_id.as_str()),
        "the woken leader took the lock over after its term"
    );

    // The new leader stops (SIGTERM: it resigns); the old one leads again, in a new term, and
    // takes the lock over: the same work, done in a term.
    cluster.engines[next].terminate();
    let status = cluster.engines[next].wait_exit(SHORT).await;
    assert!(status.success(), "{status}");
    let third = new_leader(store, &[&next_id]).await;
    assert_eq!(third.holder, old_id);
    let what = format!("the lock of the CLI's engine {cli_id} to be taken over");
    let taken = wait_for(LONG, &what, async || {
        events(store, "orphaned").await.into_iter().find(|e| {
            e.resource.is_none()
                && e.reason
                    .contains(&format!("stack lock taken over from {cli_id}"))
        })
    })
    .await;
    assert_eq!(taken.engine.as_deref(), Some(old_id.as_str()), "{taken:?}");
    let terms = store.leader_terms().await.unwrap();
    assert_leader_work_in_terms(&leader_work().await, &terms);
    assert_one_leader_at_a_time(terms);
    cluster.shutdown().await;
}

/// Leader-only work — a job freed after its lease ran out (RESCUED), a stack lock taken over —
/// was done by each engine only within a term it held, on the database's clock: never by an
/// old leader once a new term had begun.
fn assert_leader_work_in_terms(events: &[EventRow], terms: &[LeaderTerm]) {
    let outside: Vec<&EventRow> = events
        .iter()
        .filter(|e| {
            e.status == "RESCUED"
                || (e.resource.is_none() && e.reason.starts_with("stack lock taken over from "))
        })
        .filter(|e| {
            !terms.iter().any(|t| {
                e.engine.as_deref() == Some(t.holder.as_str())
                    && t.acquired_at <= e.at
                    && e.at <= t.expires_at
            })
        })
        .collect();
    assert!(
        outside.is_empty(),
        "leader-only work done outside a term of the engine that did it: {outside:?}\nterms: {terms:?}"
    );
}

/// `n` `OS::Heat::TestResource`s whose create takes ten minutes: polled, holding no lease
/// meanwhile, so the stack stays IN_PROGRESS.
fn slow_stack(n: usize) -> String {
    let mut text = String::from("heat_template_version: 2021-04-16\nresources:\n");
    for i in 0..n {
        text += &format!(
            "  slow{i}:\n    type: OS::Heat::TestResource\n    properties: {{wait_secs: 600}}\n"
        );
    }
    text
}

/// A connection of the test's own to the database, for what the store does not show (row
/// locks, sessions).
async fn connect(db_url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(db_url).await.unwrap()
}

/// The holder of the stack's lock, if it has one.
async fn lock_holder(db_url: &str, stack_id: &str) -> Option<String> {
    let mut conn = connect(db_url).await;
    let row: Option<(String,)> =
        sqlx::query_as("SELECT holder FROM stack_locks WHERE stack_id = $1")
            .bind(stack_id)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    row.map(|(h,)| h)
}

/// Whether the stack's jobs are all polling: rescheduled (pending state), leased by nobody.
async fn polling(db_url: &str, stack_id: &str) -> bool {
    let mut conn = connect(db_url).await;
    let (all, waiting): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE pending_state IS NOT NULL AND lease_owner IS NULL)
         FROM jobs WHERE stack_id = $1",
    )
    .bind(stack_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    all > 0 && waiting == all
}

/// The session of application `app` waiting for a lock in a statement that begins with
/// `statement`: its pid, and when the statement started (ms, on the database's clock).
async fn blocked_in(db_url: &str, app: &str, statement: &str) -> Option<(i64, i64)> {
    let mut conn = connect(db_url).await;
    sqlx::query_as(
        "SELECT CAST(pid AS BIGINT), CAST(EXTRACT(EPOCH FROM query_start) * 1000 AS BIGINT)
         FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1 AND state = 'active'
           AND wait_event_type = 'Lock' AND query LIKE $2",
    )
    .bind(app)
    .bind(format!("{statement}%"))
    .fetch_optional(&mut conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_sigterm_restart_loses_no_work() {
    let Some(db) = postgres().await else { return };
    let cloud = cloud(100).await;
    // Two workers each, so that the stack (300 calls of 100 ms) outlasts three restarts.
    let settings = Settings {
        workers: 2,
        ..Settings::default()
    };
    let mut cluster = Cluster::new(&db.url, &settings);
    let originals = cluster.start_engines(3).await;
    let store = Store::open(&db.url).await.unwrap();

    cluster
        .submit("rolling", &http_stack(300, &cloud.url("items")))
        .await;
    wait_completed(&store, "rolling", 10).await;
    let mut drained_mid_stack = 0;
    for i in originals {
        drained_mid_stack += restart(&mut cluster, &store, i).await as usize;
    }
    assert_eq!(
        drained_mid_stack, 3,
        "every engine was restarted while the stack ran"
    );

    let end = settle(&store, &db.url, "rolling").await;
    assert_eq!(end.status, "COMPLETE", "{}", end.status_reason);
    // A graceful drain finishes its calls: no job ran twice, no create was ever sent twice.
    assert_exactly_once(&cloud, &events(&store, "rolling").await, 300, None);
    let mut posts: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for r in cloud.requests().into_iter().filter(|r| r.method == "POST") {
        posts
            .entry(r.idempotency_key.unwrap_or_default())
            .or_default()
            .push(r.created);
    }
    assert_eq!(posts.len(), 300);
    let repeated: Vec<_> = posts
        .iter()
        .filter(|(_, p)| p.len() != 1 || p[0].is_none())
        .collect();
    assert!(
        repeated.is_empty(),
        "keys POSTed more than once: {repeated:?}"
    );
    cluster.shutdown().await;
    db.cleanup().await;
}

/// SIGTERMs engine `i` (once it has work in flight, if the stack still runs), waits for a clean
/// exit and a "stopped" entry, then starts a replacement and waits until it is up. Returns
/// whether the stack was still in progress when the signal went out.
async fn restart(cluster: &mut Cluster, store: &Store, i: usize) -> bool {
    let id = cluster.engines[i].id.clone();
    let busy_or_done = format!("{id} to have jobs in flight (or the stack to end)");
    wait_until(SHORT, &busy_or_done, async || {
        store.find_stack("rolling").await.unwrap().status != "IN_PROGRESS"
            || cluster
                .engine_list()
                .await
                .iter()
                .any(|e| e.id == id && e.jobs_in_flight > 0)
    })
    .await;
    let mid_stack = store.find_stack("rolling").await.unwrap().status == "IN_PROGRESS";
    let done = completed(&events(store, "rolling").await).len();
    eprintln!("SIGTERM {id} with {done} of 300 resources created");
    cluster.engines[i].terminate();
    let status = cluster.engines[i].wait_exit(SHORT).await;
    assert!(
        status.success(),
        "{id} on SIGTERM: {status}\n{}",
        cluster.engines[i].log_text()
    );
    cluster.wait_status(i, "stopped", SHORT).await;
    let replacement = cluster.start_engine().await;
    cluster.wait_status(replacement, "up", SHORT).await;
    mid_stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_every_engine() {
    let Some(db) = postgres().await else { return };
    let cloud = cloud(200).await;
    let mut cluster = Cluster::new(&db.url, &Settings::default());
    cluster.start_engines(3).await;
    let store = Store::open(&db.url).await.unwrap();

    cluster
        .submit("stopped", &http_stack(300, &cloud.url("items")))
        .await;
    wait_completed(&store, "stopped", 20).await;
    let out = cluster.kiln(&["stack", "cancel", "stopped"]).await;
    assert!(
        out.status.success(),
        "stack cancel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end = settle(&store, &db.url, "stopped").await;
    assert_eq!(
        (end.status.as_str(), end.status_reason.as_str()),
        ("FAILED", "Stack CREATE cancelled")
    );
    // Every engine stopped starting work, and what was running finished and was recorded:
    // nothing is left in progress, and each object in the cloud belongs to a COMPLETE resource.
    let resources = store.resources(&end.id).await.unwrap();
    assert!(
        resources.iter().all(|r| r.status != "IN_PROGRESS"),
        "{resources:?}"
    );
    let created = resources
        .iter()
        .filter(|r| r.action == "CREATE" && r.status == "COMPLETE")
        .count();
    assert!(created < 300, "the cancel came after the end");
    assert_eq!(cloud.object_count(), created);
    let events = events(&store, "stopped").await;
    let cancel_at = events
        .iter()
        .find(|e| e.resource.is_none() && e.reason.contains("cancel requested"))
        .expect("the cancel is an event")
        .at;
    // No engine claimed a new job after the cancel (claims are IN_PROGRESS events).
    let late: Vec<_> = events
        .iter()
        .filter(|e| e.resource.is_some() && e.status == "IN_PROGRESS" && e.at > cancel_at)
        .collect();
    assert!(late.is_empty(), "work started after the cancel: {late:?}");
    // A second cancel is refused clearly (exit 1), and the stack can be deleted.
    let again = cluster.kiln(&["stack", "cancel", "stopped"]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no action in progress"));
    let out = cluster
        .kiln(&["stack", "delete", "stopped", "--no-wait"])
        .await;
    assert!(out.status.success());
    let gone = settle(&store, &db.url, &end.id).await;
    assert_eq!(gone.status, "COMPLETE", "{}", gone.status_reason);
    assert_eq!(cloud.object_count(), 0);
    cluster.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_waiting_cli_loses_its_lock_not_its_stack() {
    // `kiln stack create` without --no-wait runs an engine in the user's terminal and holds
    // the stack lock; the terminal dies (SIGKILL). The leader takes the lock over with a new
    // token and the other engines finish the stack.
    let Some(db) = postgres().await else { return };
    let cloud = cloud(200).await;
    let mut cluster = Cluster::new(&db.url, &Settings::default());
    cluster.start_engines(2).await;
    let store = Store::open(&db.url).await.unwrap();
    // Big enough to outlast the lease (3 s) plus a maintenance round after the kill.
    let path = cluster.write("waited.yaml", &http_stack(400, &cloud.url("items")));
    let mut cli = cluster
        .command(&["stack", "create", "waited", "-t", &path])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(LONG, "the CLI to store the stack", async || {
        store.find_stack("waited").await.is_ok()
    })
    .await;
    wait_completed(&store, "waited", 20).await;
    // The CLI's engine started the action: it is the lock's holder.
    let holder = events(&store, "waited")
        .await
        .into_iter()
        .find(|e| e.resource.is_none())
        .and_then(|e| e.engine)
        .expect("the stack's first event names its engine");
    assert!(
        cluster
            .engine_list()
            .await
            .iter()
            .any(|e| e.id == holder && e.locks_held == 1),
        "{holder} holds the lock"
    );
    // SAFETY: signals the child this test started.
    assert_eq!(unsafe { libc::kill(cli.id() as i32, libc::SIGKILL) }, 0);
    cli.wait().unwrap();

    let end = settle(&store, &db.url, "waited").await;
    assert_eq!(end.status, "COMPLETE", "{}", end.status_reason);
    let events = events(&store, "waited").await;
    assert_exactly_once(&cloud, &events, 400, Some(&holder));
    let taken = events
        .iter()
        .find(|e| {
            e.resource.is_none()
                && e.reason
                    .contains(&format!("stack lock taken over from {holder}"))
        })
        .unwrap_or_else(|| panic!("no lock takeover event: {events:?}"));
    assert_ne!(taken.engine.as_deref(), Some(holder.as_str()));
    cluster.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_timeout_fires_after_the_engine_that_started_the_action_died() {
    // The only engine working on the stack is SIGKILLed while its long operations are being
    // polled; the deadline is in the database, so the engine started afterwards ends the
    // action as timed out (PostgreSQL, and processes sharing one SQLite file).
    for db in backends().await {
        let mut cluster = Cluster::new(&db.url, &Settings::default());
        let first = cluster.start_engine().await;
        let store = Store::open(&db.url).await.unwrap();
        let mut text = String::from("heat_template_version: 2021-04-16\nresources:\n");
        for i in 0..5 {
            text += &format!(
                "  slow{i}:\n    type: OS::Heat::TestResource\n    properties: {{wait_secs: 600}}\n"
            );
        }
        let path = cluster.write("slow.yaml", &text);
        let out = cluster
            .kiln(&[
                "stack",
                "create",
                "late",
                "-t",
                &path,
                "--no-wait",
                "--timeout",
                "8s",
            ])
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let what = format!("{}: the engine to start every resource", db.name);
        wait_until(LONG, &what, async || {
            let events = events(&store, "late").await;
            events
                .iter()
                .filter(|e| e.status == "IN_PROGRESS" && e.resource.is_some())
                .count()
                == 5
        })
        .await;
        let victim = cluster.engines[first].id.clone();
        cluster.engines[first].kill();
        cluster.engines[first].wait_exit(SHORT).await;
        cluster.start_engine().await;

        let end = settle(&store, &db.url, "late").await;
        assert_eq!(
            (end.status.as_str(), end.status_reason.as_str()),
            ("FAILED", "Stack CREATE timed out after 8 s"),
            "{}",
            db.name
        );
        let events = events(&store, "late").await;
        let ended = events.last().unwrap();
        assert_ne!(
            ended.engine.as_deref(),
            Some(victim.as_str()),
            "{}",
            db.name
        );
        assert!(
            ended.at >= end.created_at + 8000,
            "{}: never before the deadline",
            db.name
        );
        let resources = store.resources(&end.id).await.unwrap();
        assert!(
            resources.iter().all(|r| r.status == "FAILED"
                && r.status_reason == "timed out while its operation was still running"),
            "{}: {resources:?}",
            db.name
        );
        cluster.shutdown().await;
        db.cleanup().await;
    }
}
