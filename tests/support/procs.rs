//! Real `kiln` processes for the multi-process tests: a config file, engines started as child
//! processes on one database (each one's stderr in a file), signals to kill, pause, resume and
//! stop them, and the CLI for everything else.
//!
//! A [`Cluster`] never leaves processes behind: dropping it kills every engine it started that
//! is still running, and when the test is failing it prints the tail of each engine's log, since
//! what the engines said is usually the only account of what went wrong.
//!
//! Only std, libc, tokio and serde_json are used here (not kiln's own types): every test binary
//! compiles this module, so it must not break when the engine's API moves.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `[engine]` tuning and the `http-resource` allow-list the tests' engines run with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: u32,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    pub poll_interval_ms: u64,
    pub maintenance_interval_ms: u64,
    pub grace_ms: u64,
    /// Leave the lease, heartbeat, poll, maintenance and grace times out of the config, so the
    /// engines run with kiln's own defaults (the benchmarks measure what operators get).
    pub kiln_timings: bool,
    /// More `[engine]` lines, as written.
    pub engine_extra: String,
    /// More tables (`[retry...]`, say), appended to the file as written.
    pub extra_toml: String,
    /// `KILN_LOG` for every process: `info` for the tests, which read what the engines say.
    pub log: String,
    pub allow_http: Vec<String>,
}

impl Default for Settings {
    /// Short leases so that takeovers happen within seconds, not the production default.
    fn default() -> Self {
        Self {
            workers: 4,
            lease_ms: 3000,
            heartbeat_ms: 500,
            poll_interval_ms: 200,
            maintenance_interval_ms: 500,
            grace_ms: 10_000,
            kiln_timings: false,
            engine_extra: String::new(),
            extra_toml: String::new(),
            log: "info".into(),
            allow_http: vec!["http://127.0.0.1:*".into()],
        }
    }
}

impl Settings {
    /// `workers` per engine and everything else as kiln's defaults have it (the log level too:
    /// logging every job costs CPU that the benchmarks would count).
    pub fn kiln_defaults(workers: u32) -> Self {
        Self {
            workers,
            kiln_timings: true,
            log: "warn".into(),
            ..Self::default()
        }
    }

    /// The kiln.toml text.
    pub fn toml(&self) -> String {
        let allow: Vec<String> = self.allow_http.iter().map(|a| format!("{a:?}")).collect();
        let timings = if self.kiln_timings {
            String::new()
        } else {
            format!(
                "lease_ms = {}\nheartbeat_ms = {}\npoll_interval_ms = {}\n\
                 maintenance_interval_ms = {}\ngrace_ms = {}\n",
                self.lease_ms,
                self.heartbeat_ms,
                self.poll_interval_ms,
                self.maintenance_interval_ms,
                self.grace_ms,
            )
        };
        format!(
            "[engine]\nworkers = {}\n{timings}{}\n\n\
             [plugins.http-resource]\nallow_http = [{}]\n\n{}\n",
            self.workers,
            self.engine_extra,
            allow.join(", "),
            self.extra_toml
        )
    }
}

/// One `kiln engine` process started by a [`Cluster`].
pub struct EngineProc {
    /// "engine-1", "engine-2", ... in start order (for messages).
    pub label: String,
    /// The engine id it printed at start.
    pub id: String,
    pub pid: i32,
    pub log: PathBuf,
    child: Child,
    /// Set once the process has been reaped.
    exit: Option<ExitStatus>,
}

impl EngineProc {
    /// SIGKILL: the process dies at once, holding whatever it held.
    pub fn kill(&self) {
        signal(self.pid, libc::SIGKILL);
    }

    /// SIGSTOP: the process freezes (its leases run out while its sockets stay open).
    pub fn pause(&self) {
        signal(self.pid, libc::SIGSTOP);
    }

    /// SIGCONT: a paused process carries on where it stopped.
    pub fn resume(&self) {
        signal(self.pid, libc::SIGCONT);
    }

    /// SIGTERM: asks for a graceful shutdown.
    pub fn terminate(&self) {
        signal(self.pid, libc::SIGTERM);
    }

    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Reaps the process if it has exited.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on an engine");
        }
        self.exit
    }

    /// Waits (without blocking the runtime) until the process exits.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} ({}) did not exit within {timeout:?}\n{}",
                self.label,
                self.id,
                tail(&self.log, 60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything it wrote on stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Sends `sig` to a process this test started.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; the pid is a child of this test, not yet reaped
    // (a reaped pid is never signalled: callers go through a live EngineProc).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// What `kiln engine list --format json` says about one engine.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EngineInfo {
    pub id: String,
    pub pid: i64,
    pub status: String,
    pub heartbeat_age_ms: i64,
    pub jobs_in_flight: i64,
    pub locks_held: i64,
    pub leader: bool,
}

/// Engines on one database, plus the CLI configured the same way.
pub struct Cluster {
    dir: tempfile::TempDir,
    log: String,
    pub db_url: String,
    pub config: PathBuf,
    /// Every engine started, in start order (exited ones included).
    pub engines: Vec<EngineProc>,
}

impl Cluster {
    /// A temporary directory holding the config file and the engines' logs.
    pub fn new(db_url: &str, settings: &Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kiln.toml");
        std::fs::write(&config, settings.toml()).unwrap();
        Self {
            dir,
            log: settings.log.clone(),
            db_url: db_url.to_string(),
            config,
            engines: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (a template, say) into the cluster's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// `kiln -c CONFIG ARGS` on this database, with the shared plugin cache, run from the
    /// cluster's directory (so no stray ./kiln.toml is read).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("KILN_CONFIG")
            .env("KILN_DATABASE_URL", &self.db_url)
            .env("KILN_RUNTIME__CACHE_DIR", super::shared_cache())
            .env("KILN_LOG", &self.log);
        c
    }

    /// Runs the CLI to the end without blocking the runtime.
    pub async fn kiln(&self, args: &[&str]) -> Output {
        let mut c = tokio::process::Command::from(self.command(args));
        c.stdin(Stdio::null());
        c.output().await.expect("running kiln")
    }

    /// `kiln stack create NAME -t FILE --no-wait`: stores the stack and leaves all work to the
    /// engines.
    pub async fn submit(&self, name: &str, template: &str) {
        let path = self.write(&format!("{name}.yaml"), template);
        let out = self
            .kiln(&["stack", "create", name, "-t", &path, "--no-wait"])
            .await;
        assert!(
            out.status.success(),
            "stack create --no-wait: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the CLI with `--format json` already in `args`; it must succeed.
    pub async fn kiln_json(&self, args: &[&str]) -> Value {
        let out = self.kiln(args).await;
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kiln {args:?} printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `kiln engine list`: every engine the database knows.
    pub async fn engine_list(&self) -> Vec<EngineInfo> {
        let v = self
            .kiln_json(&["engine", "list", "--format", "json"])
            .await;
        serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("unexpected `engine list` JSON ({e}): {v}"))
    }

    /// Starts `kiln engine` and waits until it printed its id. Returns its index in `engines`.
    pub async fn start_engine(&mut self) -> usize {
        self.start_engine_with(&[]).await
    }

    /// [`Cluster::start_engine`] with extra environment variables (`KILN_LOG__FORMAT`, say).
    pub async fn start_engine_with(&mut self, env: &[(&str, &str)]) -> usize {
        let n = self.engines.len() + 1;
        let label = format!("engine-{n}");
        let log = self.dir.path().join(format!("{label}.log"));
        let child = self
            .command(&["engine"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawning kiln engine");
        let pid = child.id() as i32;
        self.engines.push(EngineProc {
            label,
            id: String::new(),
            pid,
            log,
            child,
            exit: None,
        });
        let i = self.engines.len() - 1;
        // The first engine of a fresh build may compile the plugins: be patient.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let e = &mut self.engines[i];
            if let Some(id) = engine_id(&e.log_text()) {
                e.id = id;
                return i;
            }
            if let Some(status) = e.poll_exit() {
                panic!("{} exited at start ({status}):\n{}", e.label, e.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no `engine ID working on` line:\n{}",
                e.label,
                e.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `n` engines and waits until all of them show "up" in `kiln engine list`.
    pub async fn start_engines(&mut self, n: usize) -> Vec<usize> {
        let mut started = Vec::new();
        for _ in 0..n {
            started.push(self.start_engine().await);
        }
        for &i in &started {
            self.wait_status(i, "up", Duration::from_secs(60)).await;
        }
        started
    }

    /// Waits until `kiln engine list` shows engine `i` with `status`.
    pub async fn wait_status(&self, i: usize, status: &str, timeout: Duration) -> EngineInfo {
        let id = self.engines[i].id.clone();
        let what = format!(
            "{} ({id}) to be {status} in `kiln engine list`",
            self.engines[i].label
        );
        wait_for(timeout, &what, async || {
            self.engine_list()
                .await
                .into_iter()
                .find(|e| e.id == id && e.status == status)
        })
        .await
    }

    /// The engine index of an engine id, when this cluster started it.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.engines.iter().position(|e| e.id == id)
    }

    /// SIGTERMs every engine still running, then waits for each; each must exit 0 (a graceful
    /// shutdown is part of every test's contract).
    pub async fn shutdown(&mut self) {
        for e in &mut self.engines {
            if e.is_running() {
                e.terminate();
            }
        }
        for e in &mut self.engines {
            let killed_by_test = e.exit.is_some();
            let status = e.wait_exit(Duration::from_secs(60)).await;
            if !killed_by_test {
                assert!(
                    status.success(),
                    "{} ({}) did not stop cleanly on SIGTERM: {status}\n{}",
                    e.label,
                    e.id,
                    tail(&e.log, 60)
                );
            }
        }
    }

    /// The tail of every engine's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for e in &self.engines {
            out += &format!(
                "----- {} (id {}, pid {}) stderr, last lines -----\n{}\n",
                e.label,
                e.id,
                e.pid,
                tail(&e.log, 80)
            );
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for e in &mut self.engines {
            if e.is_running() {
                // SIGKILL ends a stopped process too.
                // SAFETY: kill(2) on our own child, not yet reaped.
                let _ = unsafe { libc::kill(e.pid, libc::SIGKILL) };
                let _ = e.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The id in an engine's `engine <ID> working on <URL>` line.
pub fn engine_id(log: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let rest = &line[line.find("engine ")? + "engine ".len()..];
        let (id, _) = rest.split_once(" working on ")?;
        (!id.is_empty() && !id.contains(' ')).then(|| id.to_string())
    })
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `check` every 100 ms until it returns `Some`; panics naming `what` after `timeout`.
/// Tests wait for states, never for a fixed time.
pub async fn wait_for<T, F>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_for`] a condition.
pub async fn wait_until<F>(timeout: Duration, what: &str, mut check: F)
where
    F: AsyncFnMut() -> bool,
{
    wait_for(timeout, what, async || check().await.then_some(())).await
}

/// A `kiln serve` process (an engine and the API) on its own SQLite file, or a `kiln api`
/// process (the API only) on a cluster's database; dropping it kills it and, when the test is
/// failing, prints the tail of its log.
pub struct ServeProc {
    pub addr: String,
    _dir: Option<tempfile::TempDir>,
    child: Child,
    log: PathBuf,
    exited: bool,
}

impl ServeProc {
    /// Starts `kiln serve` on a fresh SQLite file, the API on any free port, with `extra` added
    /// to its config (tokens, say), and waits for its `api on http://ADDR` line.
    pub async fn start(extra: &str) -> Self {
        Self::start_with(extra, &[]).await
    }

    /// [`ServeProc::start`] with more environment variables (`KILN_LOG=trace`, say).
    pub async fn start_with(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kiln.toml");
        let settings = Settings::default().toml();
        std::fs::write(
            &config,
            format!("{settings}\n[api]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n"),
        )
        .unwrap();
        let log = dir.path().join("serve.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .arg("-c")
            .arg(&config)
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("KILN_CONFIG")
            .env(
                "KILN_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("kiln.db").display()),
            )
            .env("KILN_RUNTIME__CACHE_DIR", super::shared_cache())
            .env("KILN_LOG", "info")
            .envs(env.iter().copied());
        Self::launch(command, log, Some(dir)).await
    }

    /// Starts `kiln api` on any free port, configured as `cluster`'s engines are (its database
    /// among them); its log is `NAME.log` in the cluster's directory.
    pub async fn api(cluster: &Cluster, name: &str) -> Self {
        let log = cluster.dir().join(format!("{name}.log"));
        let command = cluster.command(&["api", "--listen", "127.0.0.1:0"]);
        Self::launch(command, log, None).await
    }

    async fn launch(mut command: Command, log: PathBuf, dir: Option<tempfile::TempDir>) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawning kiln");
        let mut serve = Self {
            _dir: dir,
            child,
            log,
            addr: String::new(),
            exited: false,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let text = std::fs::read_to_string(&serve.log).unwrap_or_default();
            if let Some(addr) = api_addr(&text) {
                serve.addr = addr;
                return serve;
            }
            if let Some(status) = serve.child.try_wait().unwrap() {
                serve.exited = true;
                panic!("kiln exited at start ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "kiln printed no `api on http://` line:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reaps it: requests in flight get no answer.
    pub fn kill(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        format!(
            "----- {} stderr, last lines -----\n{}",
            self.log.display(),
            tail(&self.log, 60)
        )
    }

    /// SIGTERM, and a clean exit.
    pub async fn stop(&mut self) {
        signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "kiln did not exit on SIGTERM\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.exited = true;
        assert!(
            status.success(),
            "kiln did not stop cleanly: {status}\n{}",
            self.log_tail()
        );
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// The ADDR of the `api on http://ADDR ...` line.
fn api_addr(log: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let rest = &line[line.find("api on http://")? + "api on http://".len()..];
        let addr = rest.split_whitespace().next()?;
        (!addr.is_empty()).then(|| addr.to_string())
    })
}
