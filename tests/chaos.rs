//! The chaos suite (issue 19): stacks of `Kiln::HTTP::Resource` objects on the fault server
//! (20 % of requests fail, before or after they are handled, and every answer takes a while, so
//! that kills land mid-request), worked by three `kiln engine` processes on one database and
//! driven through a `kiln api` process, while the suite at random moments SIGKILLs and restarts
//! engines, SIGSTOPs one past its lease and continues it, restarts PostgreSQL itself, and kills
//! the API process mid-request. Each run takes one stack through create, an update in place, an
//! update that replaces, a check, an update that fails and rolls back, and a delete. After each
//! action it checks what a user relies on:
//!
//! - the stack reached the expected terminal state by itself;
//! - the objects in the cloud are exactly the stack's resources: none lost, none left behind,
//!   each in the collection and with the body its template says, and no idempotency key made
//!   two objects (the fault server's own per-key record, a witness the engine does not control);
//! - no job or stack lock is left behind;
//! - the events tell a consistent story: every resource's last IN_PROGRESS is closed;
//! - no engine exited unless the suite killed it, and every one stops cleanly at the end.
//!
//! It prints one line per run and a summary. Parameters (environment; `scripts/chaos` sets them
//! for long runs): `KILN_CHAOS_SEED` (first run's seed; run k uses seed + k), `KILN_CHAOS_RUNS`,
//! `KILN_CHAOS_SIZE` (resources per stack), `KILN_CHAOS_FAULTS` (the fault server's mix, e.g.
//! `503=0.07,after:503=0.05,429:0=0.03,reset=0.03,after:reset=0.02`), `KILN_CHAOS_LATENCY_MS`,
//! `KILN_CHAOS_BACKENDS` (`postgres,sqlite`). Without them it runs the bounded form CI runs: a
//! few runs with fixed seeds.
//!
//! On SQLite the engines share one file and are only killed (a paused process would hold the
//! file's write lock: the README says why SIGSTOP belongs to PostgreSQL), and the database is
//! not restarted. On PostgreSQL the suite restarts the server of `KILN_TEST_DATABASE_URL` with
//! `pg_ctlcluster`, which every connection to it sees: `cargo test` runs one test binary at a
//! time, and the two tests here take turns, so nothing else is connected then.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Output;
use std::time::{Duration, Instant};

use fault_cloud::{FaultConfig, FaultServer, FaultServerHandle, Mix, parse_rate};
use kiln::store::{EventRow, StackRow, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection};
use support::procs::{Cluster, ServeProc, Settings};

/// For one action of the stack to end, kills and restarts included.
const SETTLE: Duration = Duration::from_secs(300);
/// For a process to start or stop.
const SHORT: Duration = Duration::from_secs(60);
const ENGINES: usize = 3;
const HTTP_TYPE: &str = "Kiln::HTTP::Resource";

/// The two tests take turns: one restarts the PostgreSQL server, and both load the machine.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Postgres,
    Sqlite,
}

/// What a session runs: from the environment, or the bounded form CI runs.
#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    runs: usize,
    size: usize,
    faults: String,
    latency_ms: u64,
}

impl Params {
    fn from_env(default_seed: u64, default_runs: usize) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let num = |name: &str, default: u64| {
            var(name).map_or(default, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
            })
        };
        Self {
            seed: num("KILN_CHAOS_SEED", default_seed),
            runs: num("KILN_CHAOS_RUNS", default_runs as u64) as usize,
            size: num("KILN_CHAOS_SIZE", 9) as usize,
            faults: var("KILN_CHAOS_FAULTS").unwrap_or_else(|| {
                "503=0.07,after:503=0.05,429:0=0.03,reset=0.03,after:reset=0.02".into()
            }),
            latency_ms: num("KILN_CHAOS_LATENCY_MS", 200),
        }
    }

    /// The fault server's mix: the rates given, a fixed latency, and the run's seed (so a run's
    /// faults can be replayed).
    fn mix(&self, seed: u64) -> Mix {
        let mut mix = Mix {
            latency_ms: self.latency_ms,
            seed: Some(seed),
            ..Mix::default()
        };
        for part in self.faults.split(',').filter(|p| !p.trim().is_empty()) {
            let (spec, rate) =
                parse_rate(part).unwrap_or_else(|e| panic!("KILN_CHAOS_FAULTS: {part:?}: {e}"));
            mix.rates.insert(spec, rate);
        }
        mix.validated()
            .unwrap_or_else(|e| panic!("KILN_CHAOS_FAULTS: {e}"))
    }
}

fn selected(backend: &str) -> bool {
    std::env::var("KILN_CHAOS_BACKENDS").map_or(true, |v| v.split(',').any(|b| b.trim() == backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_postgres() {
    if !selected("postgres") {
        println!("chaos on PostgreSQL: not in KILN_CHAOS_BACKENDS");
        return;
    }
    let Ok(base) = std::env::var("KILN_TEST_DATABASE_URL") else {
        support::skip::skipped("needs PostgreSQL: KILN_TEST_DATABASE_URL is not set");
        return;
    };
    let _turn = TURNS.lock().await;
    session(Backend::Postgres, &Params::from_env(1, 2), Some(&base)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_sqlite() {
    if !selected("sqlite") {
        println!("chaos on SQLite: not in KILN_CHAOS_BACKENDS");
        return;
    }
    let _turn = TURNS.lock().await;
    session(Backend::Sqlite, &Params::from_env(101, 1), None).await;
}

/// Every run of a session, a line each, then the summary; fails if any run broke a promise.
async fn session(backend: Backend, params: &Params, pg_base: Option<&str>) {
    sqlx::any::install_default_drivers();
    let started = Instant::now();
    let mut total = Tally::default();
    let mut broken = Vec::new();
    for k in 0..params.runs {
        let seed = params.seed + k as u64;
        let report = one_run(backend, params, seed, pg_base).await;
        println!("{}", report.line(k + 1, params.runs));
        total.add(&report.tally);
        for v in &report.violations {
            // As they are found: a long session is read while it runs.
            println!("    {v}");
            broken.push(format!("run {} (seed {seed}): {v}", k + 1));
        }
    }
    println!(
        "chaos summary ({backend:?}, {} resources a stack, faults {}, latency {} ms): {} runs in \
         {:.0} s; {}; lost {}, duplicated {}, stuck {}; {} broken promises",
        params.size,
        params.faults,
        params.latency_ms,
        params.runs,
        started.elapsed().as_secs_f64(),
        total.faults(),
        total.lost,
        total.duplicated,
        total.stuck,
        broken.len()
    );
    assert!(
        broken.is_empty(),
        "the chaos suite found broken promises:\n{}",
        broken.join("\n")
    );
}

/// What one run (or a session) did and found.
#[derive(Debug, Default)]
struct Tally {
    actions: usize,
    kills: usize,
    pauses: usize,
    pg_restarts: usize,
    api_kills: usize,
    requests: u64,
    injected: u64,
    /// Resources COMPLETE whose object is not in the cloud.
    lost: usize,
    /// Objects no resource owns, and keys that made more than one object.
    duplicated: usize,
    /// Actions that did not end by themselves.
    stuck: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.actions += o.actions;
        self.kills += o.kills;
        self.pauses += o.pauses;
        self.pg_restarts += o.pg_restarts;
        self.api_kills += o.api_kills;
        self.requests += o.requests;
        self.injected += o.injected;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.stuck += o.stuck;
    }

    fn faults(&self) -> String {
        format!(
            "{} actions; {} engine kills, {} pauses, {} PostgreSQL restarts, {} API kills; {} \
             cloud requests, {} faults injected",
            self.actions,
            self.kills,
            self.pauses,
            self.pg_restarts,
            self.api_kills,
            self.requests,
            self.injected
        )
    }
}

struct Report {
    backend: Backend,
    seed: u64,
    secs: f64,
    tally: Tally,
    violations: Vec<String>,
}

impl Report {
    fn line(&self, k: usize, of: usize) -> String {
        format!(
            "chaos run {k}/{of} {:?} seed {}: {} in {:.1} s; {}; lost {}, duplicated {}, stuck {}",
            self.backend,
            self.seed,
            if self.violations.is_empty() {
                "ok".to_string()
            } else {
                format!("{} broken promises", self.violations.len())
            },
            self.secs,
            self.tally.faults(),
            self.tally.lost,
            self.tally.duplicated,
            self.tally.stuck,
        )
    }
}

/// One action of a run and what it must end in.
struct Phase {
    name: &'static str,
    args: Vec<String>,
    /// The stack's action and status at the end.
    expect: (&'static str, &'static str),
    /// The template the resources must then match (`None`: the stack is gone, no objects).
    shape: Option<Shape>,
    /// A rollback completes some resources twice (forward, then back).
    rolls_back: bool,
}

/// Per resource: its collection and its body's generation.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    collection: Vec<&'static str>,
    generation: u64,
}

impl Shape {
    /// `n` resources in three chains (r(i) depends on r(i-3)), so that an action has steps for
    /// the suite to interrupt; `failing` adds a resource that fails once the chains' first
    /// resources are done.
    fn template(&self, url: &str, failing: bool) -> String {
        let mut t = String::from("heat_template_version: 2021-04-16\nresources:\n");
        for (i, coll) in self.collection.iter().enumerate() {
            let _ = write!(
                t,
                "  r{i}:\n    type: {HTTP_TYPE}\n    properties: {{url: \"{url}/{coll}\", \
                 body: {{n: {i}, gen: {}}}}}\n",
                self.generation
            );
            if i >= 3 {
                let _ = writeln!(t, "    depends_on: r{}", i - 3);
            }
        }
        if failing {
            let firsts: Vec<String> = (0..self.collection.len().min(3))
                .map(|i| format!("r{i}"))
                .collect();
            let _ = write!(
                t,
                "  bad:\n    type: OS::Heat::TestResource\n    properties: {{fail: true}}\n    \
                 depends_on: [{}]\n",
                firsts.join(", ")
            );
        }
        t
    }
}

/// The processes and the cloud of one run.
struct World {
    backend: Backend,
    rng: StdRng,
    cluster: Cluster,
    api: ServeProc,
    apis_started: usize,
    store: Store,
    cloud: FaultServerHandle,
    name: String,
    stack_id: Option<String>,
    /// The engines' lease: a pause longer than this loses their jobs.
    lease_ms: u64,
    /// Indices (in `cluster.engines`) of the engines the suite killed.
    killed: BTreeSet<usize>,
    /// Physical ids of COMPLETE resources whose object was missing, over the run.
    lost: BTreeSet<String>,
    /// Objects no resource owned, and keys that made two objects, over the run.
    duplicated: BTreeSet<String>,
    tally: Tally,
    violations: Vec<String>,
}

async fn one_run(backend: Backend, params: &Params, seed: u64, pg_base: Option<&str>) -> Report {
    let started = Instant::now();
    let db = match pg_base {
        Some(base) => support::db::postgres(base).await,
        None => support::db::sqlite(),
    };
    let cloud = FaultServer::start(FaultConfig {
        mix: params.mix(seed),
        ..FaultConfig::default()
    })
    .await
    .expect("fault server starts");
    // Two workers each, so that the work is spread over the three engines; retries patient
    // enough that 20 % of faults never exhaust them, with a budget that does not defer them.
    let settings = Settings {
        workers: 2,
        extra_toml: "[retry.policies.chaos]\ncomponent = \"exponential-backoff\"\n\
            params = { initial_interval_ms = 50, multiplier = 2.0, max_interval_ms = 1000, \
            max_attempts = 40, jitter = \"full\", max_retry_after_ms = 2000 }\n\n\
            [[retry.rules]]\ntypes = [\"Kiln::HTTP::Resource\"]\n\
            errors = [\"transient\", \"throttled\"]\npolicy = \"chaos\"\n\n\
            [retry.budget]\ncapacity = 10000.0\nrefill_per_second = 1000.0\n"
            .into(),
        ..Settings::default()
    };
    let mut cluster = Cluster::new(&db.url, &settings);
    cluster.start_engines(ENGINES).await;
    let api = ServeProc::api(&cluster, "api-1").await;
    let store = Store::open(&db.url).await.unwrap();
    let mut world = World {
        backend,
        rng: StdRng::seed_from_u64(seed),
        cluster,
        api,
        apis_started: 1,
        store,
        cloud,
        name: format!("chaos-{seed}"),
        stack_id: None,
        lease_ms: settings.lease_ms,
        killed: BTreeSet::new(),
        lost: BTreeSet::new(),
        duplicated: BTreeSet::new(),
        tally: Tally::default(),
        violations: Vec::new(),
    };

    let n = params.size.max(3);
    let created = Shape {
        collection: vec!["a"; n],
        generation: 1,
    };
    let in_place = Shape {
        generation: 2,
        ..created.clone()
    };
    let replaced = Shape {
        collection: (0..n).map(|i| if i % 2 == 0 { "b" } else { "a" }).collect(),
        generation: 2,
    };
    let failed = Shape {
        collection: (0..n).map(|i| if i % 2 == 0 { "a" } else { "b" }).collect(),
        generation: 3,
    };
    let url = world.cloud.base_url();
    let mut phases = Vec::new();
    let name = world.name.clone();
    let file = |shape: &Shape, failing: bool, file: &str| {
        world
            .cluster
            .write(&format!("{file}.yaml"), &shape.template(&url, failing))
    };
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    phases.push(Phase {
        name: "create",
        args: args(&["stack", "create", &name, "-t", &file(&created, false, "t1")]),
        expect: ("CREATE", "COMPLETE"),
        shape: Some(created.clone()),
        rolls_back: false,
    });
    phases.push(Phase {
        name: "update in place",
        args: args(&[
            "stack",
            "update",
            &name,
            "-t",
            &file(&in_place, false, "t2"),
        ]),
        expect: ("UPDATE", "COMPLETE"),
        shape: Some(in_place.clone()),
        rolls_back: false,
    });
    phases.push(Phase {
        name: "update replacing",
        args: args(&[
            "stack",
            "update",
            &name,
            "-t",
            &file(&replaced, false, "t3"),
        ]),
        expect: ("UPDATE", "COMPLETE"),
        shape: Some(replaced.clone()),
        rolls_back: false,
    });
    phases.push(Phase {
        name: "check",
        args: args(&["stack", "check", &name]),
        expect: ("CHECK", "COMPLETE"),
        shape: Some(replaced.clone()),
        rolls_back: false,
    });
    phases.push(Phase {
        name: "update rolled back",
        args: args(&[
            "stack",
            "update",
            &name,
            "-t",
            &file(&failed, true, "t4"),
            "--enable-rollback",
        ]),
        expect: ("ROLLBACK", "COMPLETE"),
        shape: Some(replaced.clone()),
        rolls_back: true,
    });
    phases.push(Phase {
        name: "delete",
        args: args(&["stack", "delete", &name]),
        expect: ("DELETE", "COMPLETE"),
        shape: None,
        rolls_back: false,
    });

    for phase in &phases {
        if !world.act(phase, params).await {
            break;
        }
    }

    let stats = world.cloud.stats();
    world.tally.lost = world.lost.len();
    world.tally.duplicated = world.duplicated.len();
    world.tally.requests = stats.requests;
    world.tally.injected = stats.faults.values().sum();
    let World {
        mut cluster,
        mut api,
        store,
        tally,
        violations,
        ..
    } = world;
    api.stop().await;
    cluster.shutdown().await;
    drop(store);
    if violations.is_empty() {
        db.cleanup().await;
    }
    Report {
        backend,
        seed,
        secs: started.elapsed().as_secs_f64(),
        tally,
        violations,
    }
}

impl World {
    /// One action: submitted through the API (which may be killed mid-request), worked under
    /// faults until it ends by itself, then checked. False when the run cannot go on.
    async fn act(&mut self, phase: &Phase, params: &Params) -> bool {
        self.tally.actions += 1;
        let before = self.stack().await;
        let after_event = match &before {
            Some(row) => self.events(&row.id).await.last().map_or(0, |e| e.id),
            None => 0,
        };
        self.submit(phase, before.as_ref().map(|r| r.traversal))
            .await;
        let Some(row) = self.work_until_settled(phase, params).await else {
            self.tally.stuck += 1;
            let left = self.not_complete().await;
            self.violations.push(format!(
                "{}: the stack did not end by itself within {SETTLE:?}; not complete: {left:?}",
                phase.name
            ));
            return false;
        };
        self.check_engines_alive().await;
        self.verify(phase, &row, after_event).await;
        true
    }

    /// The stack's row, `None` before it exists; retries through a database restart.
    async fn stack(&self) -> Option<StackRow> {
        let deadline = Instant::now() + SHORT;
        loop {
            let found = match &self.stack_id {
                Some(id) => self.store.find_stack(id).await,
                None => self.store.find_stack(&self.name).await,
            };
            match found {
                Ok(row) => return Some(row),
                Err(kiln::store::StoreError::StackNotFound(_)) => return None,
                Err(e) if Instant::now() > deadline => panic!("reading the stack: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn events(&self, stack_id: &str) -> Vec<EventRow> {
        let deadline = Instant::now() + SHORT;
        loop {
            match self.store.events(stack_id, 0).await {
                Ok(v) => return v,
                Err(e) if Instant::now() > deadline => panic!("reading events: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// `kiln --url API ARGS --no-wait`. Half the time the API process is SIGKILLed a moment
    /// after the request is sent, then restarted; a request that got no answer is sent again
    /// unless the stack shows it was carried out (a new action, or for a create, the stack).
    async fn submit(&mut self, phase: &Phase, traversal_before: Option<i64>) {
        for attempt in 1..=10 {
            let (out, killed) = self.request(&phase.args).await;
            if out.status.success() {
                break;
            }
            let now = self.stack().await;
            let carried_out = match (traversal_before, &now) {
                (None, Some(_)) => true,
                (Some(before), Some(row)) => row.traversal > before,
                _ => false,
            };
            if carried_out {
                break;
            }
            assert!(
                killed,
                "{}: `kiln {}` failed without the API being killed:\n{}\n{}",
                phase.name,
                phase.args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                self.api.log_tail()
            );
            assert!(attempt < 10, "{}: ten requests got no answer", phase.name);
        }
        if self.stack_id.is_none() {
            self.stack_id = self.stack().await.map(|r| r.id);
        }
    }

    async fn request(&mut self, args: &[String]) -> (Output, bool) {
        let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
        argv.push("--no-wait");
        let mut command = tokio::process::Command::from(self.cluster.command(&argv));
        command
            .env("KILN_URL", format!("http://{}", self.api.addr))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = command.spawn().expect("running kiln");
        let kill = self.rng.random_bool(0.5);
        let waited = tokio::spawn(child.wait_with_output());
        if kill {
            // The CLI takes some milliseconds to start: anywhere from before the request
            // arrives to after the answer is sent.
            let delay = self.rng.random_range(0..80);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.api.kill();
            self.tally.api_kills += 1;
        }
        let out = waited.await.unwrap().expect("running kiln");
        if kill {
            self.apis_started += 1;
            let name = format!("api-{}", self.apis_started);
            self.api = ServeProc::api(&self.cluster, &name).await;
        }
        (out, kill)
    }

    /// Injects faults at random moments until the stack's action ends; the stack's final row,
    /// or `None` if it did not end within [`SETTLE`].
    async fn work_until_settled(&mut self, phase: &Phase, params: &Params) -> Option<StackRow> {
        let deadline = Instant::now() + SETTLE;
        let mut first = true;
        loop {
            let wait = if first {
                self.rng.random_range(0..params.latency_ms * 3 + 1)
            } else {
                self.rng.random_range(100..1500)
            };
            first = false;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let row = self.stack().await?;
            if row.status != "IN_PROGRESS" || Instant::now() > deadline {
                return (row.status != "IN_PROGRESS").then_some(row);
            }
            self.check_engines_alive().await;
            self.strike(phase).await;
        }
    }

    /// One fault of the mix, chosen at random.
    async fn strike(&mut self, phase: &Phase) {
        let roll = self.rng.random_range(0..100);
        let pg = self.backend == Backend::Postgres;
        match roll {
            0..40 => self.kill_and_restart().await,
            40..65 if pg => self.pause_past_lease().await,
            65..75 if pg => self.restart_postgres(phase).await,
            _ => {} // a quiet moment
        }
    }

    fn running(&mut self) -> Vec<usize> {
        (0..self.cluster.engines.len())
            .filter(|&i| !self.killed.contains(&i) && self.cluster.engines[i].is_running())
            .collect()
    }

    async fn kill_and_restart(&mut self) {
        let running = self.running();
        let i = running[self.rng.random_range(0..running.len())];
        self.cluster.engines[i].kill();
        self.cluster.engines[i].wait_exit(SHORT).await;
        self.killed.insert(i);
        self.tally.kills += 1;
        let down = self.rng.random_range(0..2000);
        tokio::time::sleep(Duration::from_millis(down)).await;
        self.cluster.start_engine().await;
    }

    /// SIGSTOP past the lease: the others take its work over; after SIGCONT it must find it
    /// lost its leases and write nothing for them.
    async fn pause_past_lease(&mut self) {
        let running = self.running();
        let i = running[self.rng.random_range(0..running.len())];
        let frozen = self.lease_ms + self.rng.random_range(200..2000);
        self.cluster.engines[i].pause();
        tokio::time::sleep(Duration::from_millis(frozen)).await;
        self.cluster.engines[i].resume();
        self.tally.pauses += 1;
    }

    /// `pg_ctlcluster VERSION main restart`: every connection of every process drops.
    async fn restart_postgres(&mut self, phase: &Phase) {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned());
        let Some(version) = version else {
            support::skip::skipped("restarting PostgreSQL: no /etc/postgresql (pg_ctlcluster)");
            return;
        };
        let out = tokio::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "restart"])
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => self.tally.pg_restarts += 1,
            Ok(o) => panic!(
                "{}: pg_ctlcluster restart failed: {}",
                phase.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => support::skip::skipped(&format!("restarting PostgreSQL: pg_ctlcluster: {e}")),
        }
    }

    /// An engine the suite did not kill must still be running; one that exited is a broken
    /// promise (and is replaced, so the run goes on).
    async fn check_engines_alive(&mut self) {
        for i in 0..self.cluster.engines.len() {
            if self.killed.contains(&i) || self.cluster.engines[i].is_running() {
                continue;
            }
            let e = &self.cluster.engines[i];
            self.violations.push(format!(
                "{} ({}) exited by itself:\n{}",
                e.label,
                e.id,
                support::procs::tail(&e.log, 30)
            ));
            self.killed.insert(i);
            self.cluster.start_engine().await;
        }
    }

    async fn not_complete(&self) -> Vec<String> {
        let Some(id) = &self.stack_id else {
            return vec![];
        };
        self.store
            .resources(id)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.status != "COMPLETE")
            .map(|r| format!("{} {}_{}", r.name, r.action, r.status))
            .collect()
    }

    /// The checks after an action ended.
    async fn verify(&mut self, phase: &Phase, row: &StackRow, after_event: i64) {
        let what = phase.name;
        let mut broken = Vec::new();
        let got = (row.action.to_string(), row.status.to_string());
        if (got.0.as_str(), got.1.as_str()) != phase.expect {
            broken.push(format!(
                "ended {}_{} ({}), expected {}_{}",
                got.0, got.1, row.status_reason, phase.expect.0, phase.expect.1
            ));
        }

        // The cloud against the resources.
        // By item URL, the resources' physical id.
        let base = self.cloud.base_url();
        let objects: BTreeMap<String, (String, Value)> = self
            .cloud
            .objects()
            .into_iter()
            .flat_map(|(coll, objs)| {
                let base = base.clone();
                objs.into_iter()
                    .map(move |(id, v)| (format!("{base}/{coll}/{id}"), (coll.clone(), v)))
            })
            .collect();
        let twice = self.cloud.stats().keys_created_more_than_once;
        if !twice.is_empty() {
            self.duplicated
                .extend(twice.iter().map(|k| format!("key {k}")));
            broken.push(format!("idempotency keys that made two objects: {twice:?}"));
        }
        let resources = self.store.resources(&row.id).await.unwrap_or_default();
        let mut owned = BTreeSet::new();
        if let Some(shape) = &phase.shape {
            let http: Vec<_> = resources
                .iter()
                .filter(|r| r.type_name == HTTP_TYPE)
                .collect();
            for (i, coll) in shape.collection.iter().enumerate() {
                let name = format!("r{i}");
                let Some(r) = http.iter().find(|r| r.name == name) else {
                    broken.push(format!("{name} is not among the stack's resources"));
                    continue;
                };
                if r.status != "COMPLETE" {
                    broken.push(format!(
                        "{name} is {}_{}: {}",
                        r.action, r.status, r.status_reason
                    ));
                }
                let Some(pid) = &r.physical_id else {
                    broken.push(format!("{name} has no physical id"));
                    continue;
                };
                owned.insert(pid.clone());
                match objects.get(pid) {
                    None => {
                        self.lost.insert(pid.clone());
                        broken.push(format!("{name}'s object {pid} is not in the cloud (lost)"));
                    }
                    Some((c, body)) => {
                        let want = (*coll, Some(i as u64), Some(shape.generation));
                        let have = (
                            c.as_str(),
                            body.get("n").and_then(Value::as_u64),
                            body.get("gen").and_then(Value::as_u64),
                        );
                        if have != want {
                            broken.push(format!(
                                "{name}'s object {pid}: (collection, n, gen) {have:?}, the \
                                 template says {want:?}"
                            ));
                        }
                    }
                }
            }
            let extra: Vec<_> = http
                .iter()
                .filter(|r| !(r.name.starts_with('r') && r.name[1..].parse::<usize>().is_ok()))
                .map(|r| format!("{} {}_{}", r.name, r.action, r.status))
                .collect();
            if !extra.is_empty() {
                broken.push(format!("resources left besides the template's: {extra:?}"));
            }
        }
        let orphans: Vec<_> = objects
            .iter()
            .filter(|(id, _)| !owned.contains(*id))
            .map(|(url, _)| url.clone())
            .collect();
        if !orphans.is_empty() {
            self.duplicated.extend(orphans.iter().cloned());
            broken.push(format!(
                "objects in the cloud that no resource owns (made twice or not deleted): {orphans:?}"
            ));
        }

        // Nothing left behind in the database.
        for (table, left) in self.leftovers(&row.id).await {
            if left > 0 {
                broken.push(format!("{left} rows left in {table}"));
            }
        }

        // Every IN_PROGRESS of this action closed, for each resource and the stack.
        let events: Vec<EventRow> = self
            .events(&row.id)
            .await
            .into_iter()
            .filter(|e| e.id > after_event)
            .collect();
        let mut last: BTreeMap<Option<String>, &EventRow> = BTreeMap::new();
        for e in &events {
            if matches!(e.status.as_str(), "IN_PROGRESS" | "COMPLETE" | "FAILED") {
                last.insert(e.resource.clone(), e);
            }
        }
        for (resource, e) in &last {
            if e.status == "IN_PROGRESS" {
                broken.push(format!(
                    "{}'s last event is {} IN_PROGRESS (never closed)",
                    resource.as_deref().unwrap_or("the stack"),
                    e.action
                ));
            }
        }
        // Two COMPLETE events of one action for one resource: two engines ran one job (an
        // engine that lost its lease wrote its result anyway).
        if !phase.rolls_back {
            let mut completions: BTreeMap<(String, String), usize> = BTreeMap::new();
            for e in events.iter().filter(|e| e.status == "COMPLETE") {
                if let Some(r) = &e.resource {
                    *completions
                        .entry((r.clone(), e.action.to_string()))
                        .or_default() += 1;
                }
            }
            let twice: Vec<_> = completions.iter().filter(|(_, n)| **n > 1).collect();
            if !twice.is_empty() {
                broken.push(format!(
                    "resources completed more than once by one action: {twice:?}"
                ));
            }
        }
        match last.get(&None) {
            Some(e) if e.action == row.action && e.status.as_str() == row.status.as_str() => {}
            other => broken.push(format!(
                "the stack's last event {:?} does not match its state {}_{}",
                other.map(|e| (e.action.to_string(), e.status.to_string())),
                row.action,
                row.status
            )),
        }

        for b in broken {
            self.violations.push(format!("{what}: {b}"));
        }
    }

    /// Jobs and the stack lock of the stack still in the database.
    async fn leftovers(&self, stack_id: &str) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        let mut conn = sqlx::AnyConnection::connect(&self.cluster.db_url)
            .await
            .expect("connecting to the test database");
        for table in ["jobs", "stack_locks"] {
            let q = format!("SELECT COUNT(*) FROM {table} WHERE stack_id = '{stack_id}'");
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(q))
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("counting {table}: {e}"));
            out.push((table, n));
        }
        out
    }
}
