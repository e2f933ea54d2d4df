//! Scale-out with real `kiln engine` processes on one PostgreSQL database (issue 5): throughput
//! with 1, 2 and 4 engines for a latency-bound plugin, dispatch latency along a chain (how soon
//! an engine picks up a job another one just made ready), and takeover time after SIGKILL with
//! the default lease settings.
//!
//!     KILN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!         cargo bench -p kiln --bench many_engines [-- throughput dispatch takeover]
//!
//! The cloud is the fault-cloud crate's server in this process, with a fixed latency per
//! request and no faults; resources are `Kiln::HTTP::Resource`s posting to it. Stacks are
//! submitted with `kiln stack create --no-wait`; the engines do all the work. Times are read
//! from the events (each names its engine, at a time on the database's clock). Every
//! measurement gets a fresh database, dropped afterwards. The engines, the cloud and the
//! databases are the tests' own (`tests/support/`), with kiln's default leases. Prints markdown
//! tables; figures are recorded in BENCHMARKS.md.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kiln::store::{EventRow, StackRow, Store};
use support::cloud::{FakeCloud, http_stack};
use support::db::{TestDb, postgres};
use support::procs::{Cluster, Settings};

/// `n` HTTP resources, each depending on the one before.
fn chain_stack(n: usize, url: &str) -> String {
    let mut t = String::from("heat_template_version: 2021-04-16\nresources:\n");
    for i in 0..n {
        t += &format!(
            "  r{i}:\n    type: Kiln::HTTP::Resource\n    properties: {{url: \"{url}\", body: {{n: {i}}}}}\n"
        );
        if i > 0 {
            t += &format!("    depends_on: r{}\n", i - 1);
        }
    }
    t
}

/// Engines with kiln's default leases on a fresh database: the cluster, a store on the same
/// database, and the database (dropped by [`finish`]).
async fn cluster(base: &str, engines: usize, engine_extra: &str) -> (Cluster, Store, TestDb) {
    let db = postgres(base).await;
    let settings = Settings {
        engine_extra: engine_extra.to_string(),
        ..Settings::kiln_defaults(WORKERS)
    };
    let mut cluster = Cluster::new(&db.url, &settings);
    cluster.start_engines(engines).await;
    let store = Store::open(&db.url).await.unwrap();
    (cluster, store, db)
}

/// Stops the engines (each must exit cleanly) and drops the database.
async fn finish(mut cluster: Cluster, store: Store, db: TestDb) {
    cluster.shutdown().await;
    drop(cluster);
    drop(store);
    db.cleanup().await;
}

/// `kiln stack create NAME -t FILE --no-wait`; returns how long the command took.
async fn submit(cluster: &Cluster, name: &str, template: &str) -> Duration {
    let t = Instant::now();
    cluster.submit(name, template).await;
    t.elapsed()
}

/// "e1", "e2", ... by start order; another id (the submitting CLI's) as it is.
fn engine_label(cluster: &Cluster, engine: &str) -> String {
    cluster
        .index_of(engine)
        .map_or_else(|| engine.to_string(), |i| format!("e{}", i + 1))
}

/// Waits until the stack's action ends (at most `limit`).
async fn settle(store: &Store, name: &str, limit: Duration) -> StackRow {
    let deadline = Instant::now() + limit;
    loop {
        let row = store.find_stack(name).await.unwrap();
        if row.status != "IN_PROGRESS" {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "stack {name} still IN_PROGRESS after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_resource(e: &EventRow, status: &str) -> bool {
    e.resource.is_some() && e.action == "CREATE" && e.status == status
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// CPU seconds (user + system) a process has used so far.
fn proc_cpu_s(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU seconds used so far by every live PostgreSQL server process on this machine (the server
/// is shared: other databases' work counts too).
fn postgres_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(proc_cpu_s)
        .sum()
}

/// (busy, total) jiffies of the whole machine so far.
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = f.iter().sum();
    // idle and iowait
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput

const FLAT_N: usize = 400;
const FLAT_LATENCY_MS: u64 = 100;
const WORKERS: u32 = 8;
const REPEAT: usize = 2;

struct Throughput {
    engines: usize,
    wall_s: f64,
    span_s: f64,
    shares: String,
    submit_s: f64,
    /// CPU seconds the engines used from submit to COMPLETE.
    engine_cpu_s: f64,
    /// CPU seconds PostgreSQL used meanwhile.
    postgres_cpu_s: f64,
    /// Share of the machine's CPU time busy meanwhile (everything: engines, PostgreSQL, this
    /// process with the fault server, other load).
    machine_busy: f64,
}

async fn throughput(base: &str, engines: usize) -> Throughput {
    let server = FakeCloud::with_latency(FLAT_LATENCY_MS).await;
    let (cluster, store, db) = cluster(base, engines, "").await;
    let name = format!("flat-{engines}");
    let cpu = |c: &Cluster| c.engines.iter().map(|e| proc_cpu_s(e.pid)).sum::<f64>();
    let (cpu0, pg0, m0) = (cpu(&cluster), postgres_cpu_s(), machine_cpu());
    let submit = submit(&cluster, &name, &http_stack(FLAT_N, &server.url())).await;
    let row = settle(&store, &name, Duration::from_secs(180)).await;
    let (cpu1, pg1, m1) = (cpu(&cluster), postgres_cpu_s(), machine_cpu());
    assert_eq!(
        (row.action.as_str(), row.status.as_str()),
        ("CREATE", "COMPLETE"),
        "{}",
        row.status_reason
    );
    let events = store.events(&row.id, 0).await.unwrap();
    let end = events.iter().map(|e| e.at).max().unwrap();
    let first = events
        .iter()
        .filter(|e| is_resource(e, "IN_PROGRESS"))
        .map(|e| e.at)
        .min()
        .unwrap();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| is_resource(e, "COMPLETE")) {
        *per.entry(engine_label(&cluster, e.engine.as_deref().unwrap_or("")))
            .or_default() += 1;
    }
    let done: usize = per.values().sum();
    assert_eq!(done, FLAT_N, "COMPLETE events");
    let shares = per
        .iter()
        .map(|(k, v)| format!("{k} {:.0}%", 100.0 * *v as f64 / done as f64))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(server.objects(), FLAT_N, "objects at the cloud");
    finish(cluster, store, db).await;
    Throughput {
        engines,
        wall_s: (end - row.created_at) as f64 / 1000.0,
        span_s: (end - first) as f64 / 1000.0,
        shares,
        submit_s: submit.as_secs_f64(),
        engine_cpu_s: cpu1 - cpu0,
        postgres_cpu_s: pg1 - pg0,
        machine_busy: (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Dispatch latency along a chain

const CHAIN_N: usize = 200;

struct Dispatch {
    label: String,
    /// (what, latencies sorted)
    groups: Vec<(&'static str, Vec<i64>)>,
    total_s: f64,
    shares: String,
}

async fn dispatch(base: &str, label: &str, extra: &str) -> Dispatch {
    let server = FakeCloud::start().await;
    let (cluster, store, db) = cluster(base, 2, extra).await;
    let name = "chain";
    submit(&cluster, name, &chain_stack(CHAIN_N, &server.url())).await;
    let row = settle(&store, name, Duration::from_secs(180)).await;
    assert_eq!(row.status, "COMPLETE", "{}", row.status_reason);
    let events = store.events(&row.id, 0).await.unwrap();
    let mut started: HashMap<&str, (i64, &str)> = HashMap::new();
    let mut completed: HashMap<&str, (i64, &str)> = HashMap::new();
    for e in &events {
        let (Some(r), Some(engine)) = (e.resource.as_deref(), e.engine.as_deref()) else {
            continue;
        };
        if is_resource(e, "IN_PROGRESS") {
            started.entry(r).or_insert((e.at, engine));
        } else if is_resource(e, "COMPLETE") {
            completed.insert(r, (e.at, engine));
        }
    }
    let (mut all, mut same, mut other) = (vec![], vec![], vec![]);
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..CHAIN_N {
        let (_, by) = completed[format!("r{i}").as_str()];
        *per.entry(engine_label(&cluster, by)).or_default() += 1;
        if i + 1 == CHAIN_N {
            break;
        }
        let (done_at, done_by) = completed[format!("r{i}").as_str()];
        let (start_at, start_by) = started[format!("r{}", i + 1).as_str()];
        let d = start_at - done_at;
        all.push(d);
        if start_by == done_by {
            same.push(d);
        } else {
            other.push(d);
        }
    }
    for v in [&mut all, &mut same, &mut other] {
        v.sort_unstable();
    }
    let first = events
        .iter()
        .filter(|e| is_resource(e, "IN_PROGRESS"))
        .map(|e| e.at)
        .min()
        .unwrap();
    let last = events.iter().map(|e| e.at).max().unwrap();
    let shares = per
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    finish(cluster, store, db).await;
    Dispatch {
        label: label.to_string(),
        groups: vec![
            ("all steps", all),
            ("same engine", same),
            ("other engine", other),
        ],
        total_s: (last - first) as f64 / 1000.0,
        shares,
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Takeover after SIGKILL

const TAKEOVER_N: usize = 100;
const TAKEOVER_LATENCY_MS: u64 = 2000;

async fn takeover(base: &str) {
    let server = FakeCloud::with_latency(TAKEOVER_LATENCY_MS).await;
    let (cluster, store, db) = cluster(base, 2, "").await;
    // The victim is the leader, the harder case: maintenance (the rescuer) must move too.
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let list = store.engine_list().await.unwrap();
        if let Some(l) = list.iter().find(|e| e.leader) {
            break l.id.clone();
        }
        assert!(Instant::now() < deadline, "no leader: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim_ix = cluster.index_of(&leader).unwrap();
    let victim = leader;
    let name = "takeover";
    submit(&cluster, name, &http_stack(TAKEOVER_N, &server.url())).await;
    // Wait until the victim has calls in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (in_flight, was_leader) = loop {
        let list = store.engine_list().await.unwrap();
        let a = list.iter().find(|e| e.id == victim).unwrap();
        if a.jobs_in_flight > 0 {
            break (a.jobs_in_flight, a.leader);
        }
        assert!(
            Instant::now() < deadline,
            "no job in flight on the victim: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_at = store.now_ms().await.unwrap();
    cluster.engines[victim_ix].kill();
    let t_kill = Instant::now();
    let mut dead_after: Option<i64> = None;
    let mut leader_after: Option<(i64, String)> = None;
    let row = loop {
        if dead_after.is_none() || leader_after.is_none() {
            let list = store.engine_list().await.unwrap();
            let now = store.now_ms().await.unwrap();
            if dead_after.is_none() && list.iter().any(|e| e.id == victim && e.status == "dead") {
                dead_after = Some(now - killed_at);
            }
            if leader_after.is_none()
                && let Some(l) = list.iter().find(|e| e.leader && e.id != victim)
            {
                leader_after = Some((now - killed_at, l.id.clone()));
            }
        }
        let row = store.find_stack(name).await.unwrap();
        if row.status != "IN_PROGRESS" && dead_after.is_some() {
            break row;
        }
        assert!(
            t_kill.elapsed() < Duration::from_secs(180),
            "stack still {} 180 s after the kill (dead seen: {dead_after:?})",
            row.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = store.events(&row.id, 0).await.unwrap();
    // What the victim started and never finished.
    let mut open: BTreeMap<&str, i64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.engine.as_deref() == Some(&victim))
    {
        let Some(r) = e.resource.as_deref() else {
            continue;
        };
        if is_resource(e, "IN_PROGRESS") {
            open.insert(r, e.at);
        } else if is_resource(e, "COMPLETE") {
            open.remove(r);
        }
    }
    let mut takeovers: Vec<i64> = open
        .keys()
        .filter_map(|r| {
            events
                .iter()
                .find(|e| {
                    e.resource.as_deref() == Some(r)
                        && is_resource(e, "IN_PROGRESS")
                        && e.engine.as_deref() != Some(&victim)
                        && e.at >= killed_at
                })
                .map(|e| e.at - killed_at)
        })
        .collect();
    takeovers.sort_unstable();
    let rescued = events.iter().filter(|e| e.status == "RESCUED").count();
    // Stack-level events (the lock, the end), relative to the kill.
    let stack_events: Vec<String> = events
        .iter()
        .filter(|e| e.resource.is_none())
        .map(|e| {
            format!(
                "{:+.2} s  {} {}  by {}: {}",
                (e.at - killed_at) as f64 / 1000.0,
                e.action,
                e.status,
                e.engine
                    .as_deref()
                    .map_or("-".into(), |x| engine_label(&cluster, x)),
                e.reason
            )
        })
        .collect();
    // Exactly once, as the engines did it (the fault server replays a repeated idempotency key,
    // so its objects cannot show two engines running one job): keys POSTed more than once other
    // than those of the jobs the victim held (which the survivor re-sends with the same key), and
    // resources with more than one CREATE COMPLETE event. Keys are
    // `{stack_id}/{resource}/{phase}/{traversal}`.
    let mut posts: HashMap<String, usize> = HashMap::new();
    for r in server.requests().into_iter().filter(|r| r.method == "POST") {
        *posts
            .entry(r.idempotency_key.unwrap_or_default())
            .or_default() += 1;
    }
    let resent = posts
        .iter()
        .filter(|(key, n)| **n > 1 && !open.contains_key(key.rsplitn(4, '/').nth(2).unwrap_or("")))
        .count();
    let mut completions: HashMap<&str, usize> = HashMap::new();
    for e in events.iter().filter(|e| is_resource(e, "COMPLETE")) {
        *completions
            .entry(e.resource.as_deref().unwrap())
            .or_default() += 1;
    }
    let completed_twice = completions.values().filter(|n| **n > 1).count();
    let objects = server.objects();
    let (va, sv) = (
        engine_label(&cluster, &victim),
        engine_label(&cluster, &cluster.engines[1 - victim_ix].id),
    );
    let by_victim = events
        .iter()
        .filter(|e| is_resource(e, "COMPLETE") && e.engine.as_deref() == Some(&victim))
        .count();
    finish(cluster, store, db).await;

    println!(
        "\n### 3. Takeover after SIGKILL (2 engines × {WORKERS} workers, {TAKEOVER_N} resources, latency \
         {TAKEOVER_LATENCY_MS} ms; defaults: lease_ms 10000, heartbeat_ms 2000, maintenance_interval_ms 2000)\n"
    );
    println!(
        "{va} (the leader: {}) killed just after `engine list` showed {in_flight} jobs in flight on it, having \
         completed {by_victim} resources; times from the kill, on the database clock.\n",
        if was_leader { "yes" } else { "no" }
    );
    println!(
        "| what                                                   |    n |  min s | median s |  max s |"
    );
    println!(
        "|--------------------------------------------------------|------|--------|----------|--------|"
    );
    let s = |ms: i64| ms as f64 / 1000.0;
    let row3 = |what: String, v: &[i64]| {
        if v.is_empty() {
            println!("| {what:<54} |    0 |      – |        – |      – |");
        } else {
            println!(
                "| {what:<54} | {:>4} | {:>6.2} | {:>8.2} | {:>6.2} |",
                v.len(),
                s(v[0]),
                s(pct(v, 0.5)),
                s(*v.last().unwrap())
            );
        }
    };
    row3(
        format!("{va}'s unfinished jobs claimed again by {sv} (IN_PROGRESS)"),
        &takeovers,
    );
    row3(
        format!("`engine list` shows {va} dead"),
        &[dead_after.unwrap()],
    );
    if was_leader {
        row3(
            format!("{sv} holds the leader lease"),
            &leader_after.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
        );
    }
    if open.len() != takeovers.len() {
        println!(
            "\n{va} left {} resources unfinished; only {} were claimed again after the kill.",
            open.len(),
            takeovers.len()
        );
    }
    println!(
        "\nstack {name}: {}_{} {:.1} s after the kill; {rescued} RESCUED events (jobs freed by the leader's \
         rescuer rather than claimed on expiry); {objects} objects at the cloud for {TAKEOVER_N} resources; \
         {resent} keys POSTed more than once besides those of the {} jobs {va} held, and {completed_twice} \
         resources completed twice (two engines running one job).",
        row.action,
        row.status,
        t_kill.elapsed().as_secs_f64(),
        open.len()
    );
    println!("\nstack-level events (time from the kill):\n");
    for e in &stack_events {
        println!("    {e}");
    }
    assert_eq!(
        (row.action.as_str(), row.status.as_str()),
        ("CREATE", "COMPLETE"),
        "{}",
        row.status_reason
    );
}

fn main() {
    let Ok(base) = std::env::var("KILN_TEST_DATABASE_URL") else {
        println!(
            "many_engines needs PostgreSQL: set KILN_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        return;
    };
    // Parts to run (all by default); cargo passes `--bench`, which is not one.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let t = Instant::now();
        println!(
            "scale-out: real `kiln engine` processes on one PostgreSQL database, {cpus} CPUs shared by \
             the engines, PostgreSQL and the fault server\n"
        );

        if want("throughput") {
        println!(
            "### 1. Throughput ({FLAT_N} independent resources, plugin latency {FLAT_LATENCY_MS} ms, \
             {WORKERS} workers per engine; best of {REPEAT} runs)\n"
        );
        println!(
            "| engines | submit→COMPLETE s | first claim→end s | resources/s | speed-up | ideal r/s | engines' CPU s | PostgreSQL CPU s | machine CPU busy | work per engine (COMPLETE events) |"
        );
        println!(
            "|---------|-------------------|-------------------|-------------|----------|-----------|----------------|------------------|------------------|-----------------------------------|"
        );
        let mut base_rate = None;
        for n in [1, 2, 4] {
            // Best of REPEAT runs: wall-clock figures on a shared machine only get worse by noise.
            let mut best: Option<Throughput> = None;
            for _ in 0..REPEAT {
                let r = throughput(&base, n).await;
                eprintln!(
                    "({n} engines: {:.2} s; submit command took {:.2} s)",
                    r.wall_s, r.submit_s
                );
                if best.as_ref().is_none_or(|b| r.wall_s < b.wall_s) {
                    best = Some(r);
                }
            }
            let r = best.unwrap();
            let rate = FLAT_N as f64 / r.wall_s;
            let base_rate = *base_rate.get_or_insert(rate);
            let ideal = (n as u32 * WORKERS) as f64 * 1000.0 / FLAT_LATENCY_MS as f64;
            println!(
                "| {:>7} | {:>17.2} | {:>17.2} | {:>11.1} | {:>7.2}× | {:>9.0} | {:>14.2} | {:>16.2} | {:>15.0}% | {:<33} |",
                r.engines,
                r.wall_s,
                r.span_s,
                rate,
                rate / base_rate,
                ideal,
                r.engine_cpu_s,
                r.postgres_cpu_s,
                100.0 * r.machine_busy,
                r.shares
            );
        }

        }
        if want("dispatch") {
        println!(
            "\n### 2. Dispatch latency (2 engines × {WORKERS} workers, a chain of {CHAIN_N} resources, \
             latency 0 ms): IN_PROGRESS of r(i+1) − COMPLETE of r(i)\n"
        );
        println!("| run                          | steps picked up by | steps | p50 ms | p99 ms | max ms |");
        println!("|------------------------------|--------------------|-------|--------|--------|--------|");
        let runs = [
            ("defaults (poll 200 ms)", ""),
            ("defaults again", ""),
            ("poll_interval_ms = 5000", "poll_interval_ms = 5000"),
        ];
        let mut notes = Vec::new();
        for (label, extra) in runs {
            let d = dispatch(&base, label, extra).await;
            for (what, v) in &d.groups {
                if v.is_empty() {
                    println!("| {:<28} | {:<18} | {:>5} |      – |      – |      – |", d.label, what, 0);
                    continue;
                }
                println!(
                    "| {:<28} | {:<18} | {:>5} | {:>6} | {:>6} | {:>6} |",
                    d.label,
                    what,
                    v.len(),
                    pct(v, 0.5),
                    pct(v, 0.99),
                    v.last().unwrap()
                );
            }
            notes.push(format!(
                "{}: chain of {CHAIN_N} in {:.2} s; completed by {}",
                d.label, d.total_s, d.shares
            ));
        }
        println!();
        for n in notes {
            println!("- {n}");
        }

        }
        if want("takeover") {
            takeover(&base).await;
        }
        println!("\n(whole benchmark: {:.0} s)", t.elapsed().as_secs_f64());
    });
}
