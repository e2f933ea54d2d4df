//! The web view end to end: `kiln serve` with a bearer token, a stack caught mid-run (one slow
//! resource in progress, the ones before it complete, the ones after it not started), and the
//! page in headless Chromium: the stack list, then the stack's graph and event timeline, live
//! from the event stream. A screenshot of the mid-run page is kept in
//! `target/test-artifacts/web_view_mid_run.png`.
//!
//! Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (file
//! descriptors 3 and 4, NUL-separated JSON): no websocket and no crate, and the test can wait
//! for the page to reach a state (polling `Runtime.evaluate`) instead of guessing a time.
//! `--dump-dom` cannot be used here: its virtual time never runs out while the page holds its
//! EventSource open, and without virtual time it dumps at the load event, before the page has
//! fetched anything.
//!
//! "Live" is checked on the wire, with the protocol's Network domain: the events that reached the
//! open page are among the messages its EventSource received, and it sent no other API request
//! (no poll). The page's errors (exceptions, `console.error`, failed loads) count from the
//! expected 401 of the token-less load to Chromium's exit, not only while a command waits for
//! its reply.
//!
//! Without Chromium the test is skipped (`support::skip`: listed at the end of `scripts/test`),
//! except in CI (env `CI`), where that is a failure.
//! `scripts/setup-tests` installs it (Debian's `chromium`); `KILN_CHROMIUM` names another binary.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::procs::tail;

const TOKEN: &str = "web-view-test-token-3f9c2a71";
const STACK: &str = "webview";

/// A small DAG, with an implicit dependency (`get_attr`) beside explicit ones. `server` takes
/// ten minutes to create, far longer than the test runs: the stack stays mid-run whatever the
/// machine's speed, and the test never waits for it (it cancels, then stops the server).
const TEMPLATE: &str = r#"heat_template_version: 2018-08-31
description: The web view test's stack; its server takes ten minutes.
resources:
  network:
    type: OS::Heat::TestResource
    properties:
      value: net-1
  subnet:
    type: OS::Heat::TestResource
    properties:
      value: { get_attr: [network, output] }
  secgroup:
    type: OS::Heat::TestResource
  port:
    type: OS::Heat::TestResource
    depends_on: [subnet, secgroup]
  volume:
    type: OS::Heat::TestResource
  server:
    type: OS::Heat::TestResource
    depends_on: [port, volume]
    properties:
      action_wait_secs: { create: 600 }
  dns:
    type: OS::Heat::TestResource
    properties:
      value: { get_attr: [server, output] }
  monitor:
    type: OS::Heat::TestResource
    depends_on: server
"#;

const DONE: &[&str] = &["network", "subnet", "secgroup", "port", "volume"];
const NOT_STARTED: &[&str] = &["dns", "monitor"];
const EDGES: &[(&str, &str)] = &[
    ("network", "subnet"),
    ("port", "server"),
    ("secgroup", "port"),
    ("server", "dns"),
    ("server", "monitor"),
    ("subnet", "port"),
    ("volume", "server"),
];

/// Generous: the machine may be busy compiling, and the first start may compile plugins.
const DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test]
async fn web_view_shows_a_stack_mid_run_live() {
    let Some(chromium) = find_chromium() else {
        // Under CI this panics: CI must run the web view test.
        support::skip::skipped("chromium not installed (scripts/setup-tests installs it)");
        return;
    };

    let mut serve = Serve::start().await;
    let base = format!("http://{}", serve.addr);
    let api = Api::new(&base);

    // A stack caught mid-run: everything before `server` complete, `server` in progress.
    let (status, body) = api
        .call(
            "POST",
            "/v1/stacks",
            Some(json!({
                "name": STACK,
                "template": {"name": "stack.yaml", "text": TEMPLATE},
            })),
        )
        .await;
    assert_eq!(status, 201, "create: {body}\n{}", serve.log_tail());
    let resources = wait_state(&serve, "the stack mid-run", async || {
        let (_, body) = api
            .call("GET", &format!("/v1/stacks/{STACK}/resources"), None)
            .await;
        let states = resource_states(&body);
        let mid_run = DONE
            .iter()
            .all(|r| states.get(*r).map(String::as_str) == Some("CREATE_COMPLETE"))
            && states.get("server").map(String::as_str) == Some("CREATE_IN_PROGRESS");
        (mid_run.then_some(states), body)
    })
    .await;
    assert_eq!(resources.len(), 8, "{resources:?}");

    let mut browser = Browser::launch(&chromium).await;

    // Without a token the API says 401, and the page asks for one.
    browser.navigate(&format!("{base}/ui/#/")).await;
    let locked = browser
        .wait_for("the token form", LIST_FACTS, |f| f["tokenForm"] == true)
        .await;
    assert!(locked["rows"].as_object().unwrap().is_empty(), "{locked:#}");

    // The stack list, with the token in the URL (kept in sessionStorage, then removed).
    browser
        .navigate(&format!("{base}/ui/?token={TOKEN}#/"))
        .await;
    let list = browser
        .wait_for("the stack list with the stack", LIST_FACTS, |f| {
            f["rows"][STACK].is_string()
        })
        .await;
    assert_eq!(list["title"], "Kiln", "{list:#}");
    assert_eq!(list["tokenForm"], false, "{list:#}");
    // The 401 above was logged as a failed load: from here on, to the browser's exit, the page
    // must log no error.
    browser.forget_errors_so_far();
    assert_eq!(list["rows"][STACK], "CREATE_IN_PROGRESS", "{list:#}");
    assert!(
        !list["href"].as_str().unwrap().contains(TOKEN),
        "the token stays out of the address bar: {list:#}"
    );

    // Opening the stack from the list (a hash route; the token now comes from sessionStorage).
    browser
        .eval(&format!(
            "document.querySelector('tr[data-stack=\"{STACK}\"] a').click()"
        ))
        .await;
    let page = browser
        .wait_for("the stack view mid-run, live", STACK_FACTS, |f| {
            f["ready"] == "1"
                && f["connection"] == "stream"
                && f["nodes"]["server"]["status"] == "CREATE_IN_PROGRESS"
                && DONE
                    .iter()
                    .all(|r| f["nodes"][*r]["status"] == "CREATE_COMPLETE")
                && f["nodes"].as_object().is_some_and(|n| n.len() == 8)
        })
        .await;
    assert_eq!(page["view"], "stack", "{page:#}");
    assert_eq!(page["header"], "CREATE_IN_PROGRESS", "{page:#}");
    assert!(page["banner"].is_null(), "no error shown: {page:#}");
    assert_eq!(page["tokenForm"], false, "{page:#}");
    assert!(
        page["hash"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/stacks/{STACK}")),
        "{page:#}"
    );

    // One SVG node per resource, coloured by its state.
    let nodes = page["nodes"].as_object().unwrap();
    for (name, node) in nodes {
        let class = node["class"].as_str().unwrap();
        let want = match name.as_str() {
            "server" => "status-in-progress",
            n if DONE.contains(&n) => "status-complete",
            n if NOT_STARTED.contains(&n) => "status-init",
            other => panic!("a node for no resource: {other} in {page:#}"),
        };
        assert!(class.contains(want), "{name}: class {class:?}, not {want}");
        assert_eq!(node["status"], resources[name.as_str()], "{name}");
    }
    for n in NOT_STARTED {
        assert_eq!(nodes[*n]["status"], "INIT_COMPLETE", "{n}: {page:#}");
    }

    // An edge per dependency, from the dependency to its dependent.
    let mut edges: Vec<(String, String)> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap().into(), e[1].as_str().unwrap().into()))
        .collect();
    edges.sort();
    let want: Vec<(String, String)> = EDGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(edges, want, "{page:#}");

    // The timeline: every event the API has, newest first, each with its state.
    let shown = timeline_ids(&page);
    assert_eq!(
        shown,
        api_event_ids(&api).await,
        "the timeline lists every event, newest first"
    );
    let timeline = page["events"].as_array().unwrap();
    let has = |resource: &str, status: &str| {
        timeline
            .iter()
            .any(|e| e["resource"] == resource && e["status"] == status)
    };
    for r in DONE {
        assert!(
            has(r, "CREATE_IN_PROGRESS") && has(r, "CREATE_COMPLETE"),
            "{r}"
        );
    }
    assert!(has("server", "CREATE_IN_PROGRESS"), "{timeline:#?}");
    assert!(has("", "CREATE_IN_PROGRESS"), "the stack's own event");
    assert!(
        timeline
            .iter()
            .any(|e| e["resource"] == "" && e["text"].as_str().unwrap().contains("stack")),
        "a stack event is labelled \"stack\": {timeline:#?}"
    );

    let shot = artifact("web_view_mid_run.png");
    browser.screenshot(&shot).await;
    eprintln!("web view screenshot: {}", shot.display());

    // Live: a cancel, asked for now, reaches the open page through its event stream.
    let (status, body) = api
        .call(
            "POST",
            &format!("/v1/stacks/{STACK}/cancel"),
            Some(json!({"rollback": false})),
        )
        .await;
    assert_eq!(status, 202, "cancel: {body}");
    let newest = shown[0];
    let after = browser
        .wait_for("the cancel's event on the open page", STACK_FACTS, |f| {
            f["events"].as_array().is_some_and(|events| {
                events
                    .iter()
                    .any(|e| e["resource"] == "" && e["id"].as_i64() > Some(newest))
            })
        })
        .await;
    assert_eq!(after["connection"], "stream", "still live: {after:#}");
    let cancel = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"] == "" && e["id"].as_i64() > Some(newest))
        .unwrap()
        .clone();
    // The header's reason: the stack's newest event's, unless a `stack` message came after.
    let (_, shown_stack) = api.call("GET", &format!("/v1/stacks/{STACK}"), None).await;
    assert!(
        after["reason"] == cancel["why"]
            || after["reason"] == shown_stack["stack"]["status_reason"],
        "the header follows the stack's events: {after:#}"
    );

    // The page catches up with the API: its timeline lists every event, newest first (the
    // stack stays mid-run: the cancel waits for `server`'s call, which takes ten minutes).
    let deadline = Instant::now() + DEADLINE;
    let end = loop {
        let want = api_event_ids(&api).await;
        let seen = browser.eval(STACK_FACTS).await;
        if seen["exception"].is_null() && timeline_ids(&seen) == want {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for the page to list the API's events \
             {want:?}; the page shows: {seen:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(end["connection"], "stream", "still live: {end:#}");

    // Every event the page shows that is newer than the mid-run view came over its event
    // stream (the messages Chromium's network layer saw the EventSource receive), and once the
    // stream was open the page made no other API request but for the graph (which carries no
    // events): the timeline grows only from a stream message or an events fetch, so these came
    // live, not by polling (the page's fallback), whatever its connection indicator says.
    let traffic = browser.stream_traffic();
    assert!(
        traffic.opened,
        "the page never opened its event stream: {traffic:#?}"
    );
    assert!(
        traffic.polls.is_empty(),
        "the page fetched from the API after opening the stream (polling, not live): {:#?}",
        traffic.polls
    );
    let live: Vec<i64> = timeline_ids(&end)
        .into_iter()
        .filter(|id| *id > newest)
        .collect();
    assert!(live.contains(&cancel["id"].as_i64().unwrap()), "{live:?}");
    let missed: Vec<i64> = live
        .iter()
        .copied()
        .filter(|id| !traffic.streamed.contains(id))
        .collect();
    assert!(
        missed.is_empty(),
        "events {missed:?} reached the page, but not over its event stream (which brought \
         {:?})",
        traffic.streamed
    );

    eprintln!(
        "live over the event stream: events {live:?} (the stream brought {:?})",
        traffic.streamed
    );

    // Quiet for a moment (late timers, a reload of the graph), then the browser closes; every
    // protocol event up to its exit is read, so an error the page throws after the last
    // command still counts.
    browser.idle(Duration::from_secs(2)).await;
    browser.close().await;
    let errors = browser.page_errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    serve.stop().await;
}

/// What the stack list shows.
const LIST_FACTS: &str = r#"(() => ({
  view: document.body.dataset.view,
  title: document.title,
  href: location.href,
  tokenForm: !document.getElementById('token-form').hidden,
  banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
  rows: Object.fromEntries([...document.querySelectorAll('#stack-rows tr[data-stack]')]
    .map((tr) => [tr.dataset.stack, tr.dataset.status])),
}))()"#;

/// What the stack view shows: the header, the graph's nodes and edges, the timeline.
const STACK_FACTS: &str = r#"(() => ({
  view: document.body.dataset.view,
  ready: document.body.dataset.ready || null,
  hash: location.hash,
  connection: document.getElementById('conn').dataset.connection,
  header: document.getElementById('stack-status').dataset.status || null,
  reason: document.getElementById('stack-reason').textContent,
  banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
  tokenForm: !document.getElementById('token-form').hidden,
  nodes: Object.fromEntries([...document.querySelectorAll('#graph [data-resource]')]
    .map((g) => [g.dataset.resource, { status: g.dataset.status, class: g.getAttribute('class') }])),
  edges: [...document.querySelectorAll('#graph path.edge')].map((p) => [p.dataset.from, p.dataset.to]),
  events: [...document.querySelectorAll('#timeline li.event')].map((li) => ({
    id: Number(li.dataset.eventId), resource: li.dataset.resource, status: li.dataset.status,
    why: li.querySelector('.why') ? li.querySelector('.why').textContent : '', text: li.textContent,
  })),
}))()"#;

/// The ids of the events the page lists, top to bottom.
fn timeline_ids(facts: &Value) -> Vec<i64> {
    facts["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// The ids of the stack's events, newest first, as the API has them.
async fn api_event_ids(api: &Api) -> Vec<i64> {
    let (status, body) = api
        .call(
            "GET",
            &format!("/v1/stacks/{STACK}/events?limit=1000"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    ids.reverse();
    ids
}

fn resource_states(body: &Value) -> std::collections::BTreeMap<String, String> {
    body["resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let name = r["name"].as_str().unwrap_or_default().to_string();
                    let state = format!(
                        "{}_{}",
                        r["action"].as_str().unwrap_or_default(),
                        r["status"].as_str().unwrap_or_default()
                    );
                    (name, state)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` (which returns the state when reached, and what it saw) until the state is
/// reached; panics with what it saw last and the server's log after [`DEADLINE`].
async fn wait_state<T>(
    serve: &Serve,
    what: &str,
    mut check: impl AsyncFnMut() -> (Option<T>, Value),
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (done, seen) = check().await;
        if let Some(v) = done {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}; last seen: {seen:#}\n{}",
            serve.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `target/test-artifacts/NAME` (the directory created).
fn artifact(name: &str) -> PathBuf {
    // CARGO_TARGET_TMPDIR is TARGET/tmp, wherever the target dir is.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
    })
}

// ---------------------------------------------------------------------------------------------
// `kiln serve`

struct Serve {
    _dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
    addr: String,
    exited: bool,
}

impl Serve {
    /// Starts `kiln serve` on a fresh SQLite file, the API on any free port with one member
    /// token, and waits for its `api on http://ADDR` line.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kiln.toml");
        let settings = support::procs::Settings::default().toml();
        std::fs::write(
            &config,
            format!(
                "{settings}\n[api]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[api.tokens]]\ntoken = \"{TOKEN}\"\nproject = \"demo\"\nrole = \"member\"\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("-c")
            .arg(&config)
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("KILN_CONFIG")
            .env(
                "KILN_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("kiln.db").display()),
            )
            .env("KILN_RUNTIME__CACHE_DIR", support::shared_cache())
            .env("KILN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawning kiln serve");
        let mut serve = Self {
            _dir: dir,
            child,
            log,
            addr: String::new(),
            exited: false,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = std::fs::read_to_string(&serve.log).unwrap_or_default();
            if let Some(addr) = api_addr(&text) {
                serve.addr = addr;
                return serve;
            }
            if let Some(status) = serve.child.try_wait().unwrap() {
                serve.exited = true;
                panic!("kiln serve exited at start ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "kiln serve printed no `api on http://` line:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        format!(
            "----- kiln serve stderr, last lines -----\n{}",
            tail(&self.log, 60)
        )
    }

    /// SIGTERM, and a clean exit.
    async fn stop(&mut self) {
        support::procs::signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "kiln serve did not exit on SIGTERM\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.exited = true;
        assert!(
            status.success(),
            "kiln serve did not stop cleanly: {status}\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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

/// The REST API as the test's member token.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// (status, JSON body).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium over the DevTools protocol on a pipe

struct Browser {
    child: Child,
    /// Chromium reads commands here (its fd 3).
    commands: std::io::PipeWriter,
    /// Everything Chromium says (its fd 4), one JSON message each, from a reader thread.
    messages: tokio::sync::mpsc::UnboundedReceiver<Value>,
    next_id: u64,
    session: String,
    /// The protocol's events seen so far (console messages, exceptions, network traffic...),
    /// in the order Chromium sent them.
    events: Vec<Value>,
    /// `page_errors` reports the errors of `events[errors_from..]`.
    errors_from: usize,
    profile: tempfile::TempDir,
    exited: bool,
}

impl Browser {
    async fn launch(exe: &Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let (their_in, commands) = std::io::pipe().unwrap();
        let (mut replies, their_out) = std::io::pipe().unwrap();
        let (fd_in, fd_out) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut command = Command::new(exe);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(profile.path().join("chromium.log")).unwrap());
        // SAFETY: between fork and exec only fcntl and dup2 run (async-signal-safe). The pipe
        // ends are first copied above fd 10, so neither dup2 overwrites the other's source;
        // dup2's targets (3 and 4) do not close on exec, the copies and the originals do.
        unsafe {
            command.pre_exec(move || {
                let a = libc::fcntl(fd_in, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(fd_out, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("starting chromium");
        // Chromium's ends: only the child holds them now (so its exit ends the reader).
        drop((their_in, their_out));
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            while let Ok(n) = replies.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..end])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut browser = Self {
            child,
            commands,
            messages,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            errors_from: 0,
            profile,
            exited: false,
        };
        let target = browser
            .send("Target.createTarget", json!({"url": "about:blank"}), false)
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = browser
            .send(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                false,
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        // Exceptions, console errors and policy (CSP) violations, for `page_errors`.
        browser.send("Runtime.enable", json!({}), true).await;
        browser.send("Log.enable", json!({}), true).await;
        // The page's requests and its EventSource's messages, for `stream_traffic`.
        browser.send("Network.enable", json!({}), true).await;
        browser
            .send(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
                true,
            )
            .await;
        browser
    }

    /// One command; its result. `in_page`: to the page's session, else to the browser.
    async fn send(&mut self, method: &str, params: Value, in_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if in_page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        if let Err(e) = self.commands.write_all(&bytes) {
            panic!("chromium is gone ({e}):\n{}", self.log());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => panic!("chromium closed the pipe during {method}:\n{}", self.log()),
                Err(_) => panic!("chromium did not answer {method} in 60 s:\n{}", self.log()),
            };
            if msg["id"].as_u64() != Some(id) {
                self.keep(msg);
                continue; // an event, or a late reply
            }
            if !msg["error"].is_null() {
                panic!("{method}: {}", msg["error"]);
            }
            return msg["result"].clone();
        }
    }

    /// Keeps `msg` if it is an event (not a reply).
    fn keep(&mut self, msg: Value) {
        if msg["method"].is_string() {
            self.events.push(msg);
        }
    }

    /// Keeps every event Chromium has sent so far without waiting for more.
    fn pump(&mut self) {
        while let Ok(msg) = self.messages.try_recv() {
            self.keep(msg);
        }
    }

    /// Sends nothing for `time`, keeping the events that come meanwhile.
    async fn idle(&mut self, time: Duration) {
        let until = tokio::time::Instant::now() + time;
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, self.messages.recv()).await {
            self.keep(msg);
        }
    }

    /// From here on, `page_errors` reports only the errors that come after this call.
    fn forget_errors_so_far(&mut self) {
        self.pump();
        self.errors_from = self.events.len();
    }

    async fn navigate(&mut self, url: &str) {
        let r = self.send("Page.navigate", json!({"url": url}), true).await;
        assert!(r["errorText"].is_null(), "navigating to {url}: {r}");
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .send(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
                true,
            )
            .await;
        if !r["exceptionDetails"].is_null() {
            return json!({"exception": r["exceptionDetails"]});
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `facts` until `done` holds for them (the page is loading, fetching, streaming:
    /// each state is waited for); panics with the last facts after [`DEADLINE`].
    async fn wait_for(&mut self, what: &str, facts: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let seen = self.eval(facts).await;
            if seen["exception"].is_null() && done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {DEADLINE:?} waiting for {what}; the page shows: {seen:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&mut self, path: &Path) {
        let r = self
            .send("Page.captureScreenshot", json!({"format": "png"}), true)
            .await;
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// Closes the browser, keeping every event it sends up to its exit (the reader thread ends
    /// when Chromium's end of the pipe closes): the session's errors are all in `events` then.
    async fn close(&mut self) {
        self.send("Browser.close", json!({}), false).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(msg)) => self.keep(msg),
                Ok(None) => break,
                Err(_) => panic!("chromium kept its pipe open 60 s after Browser.close"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "chromium did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.exited = true;
    }

    /// What the page reported as errors: uncaught exceptions, `console.error`, and the
    /// browser's own error entries (failed loads, Content-Security-Policy violations), among
    /// the events kept so far (all of the session's, once `close` returned).
    fn page_errors(&self) -> Vec<String> {
        self.events[self.errors_from..]
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(p["exceptionDetails"].to_string()),
                    "Runtime.consoleAPICalled" if p["type"] == "error" => {
                        Some(p["args"].to_string())
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => {
                        Some(p["entry"].to_string())
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// What went over the network for the stack view, from the events kept so far: whether the
    /// page opened the stack's event stream, the ids of the `event` messages that stream
    /// delivered, and the page's other API requests sent after the stream was opened (a poll
    /// such as `/v1/stacks/STACK?...` or `/v1/stacks/STACK/events?...`), except for the graph
    /// (`/v1/stacks/STACK/graph`, reloaded on a new traversal; it carries no events).
    fn stream_traffic(&mut self) -> StreamTraffic {
        self.pump();
        let stack = format!("/v1/stacks/{STACK}");
        let mut streams = std::collections::BTreeSet::new();
        let mut traffic = StreamTraffic::default();
        for e in &self.events {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Network.requestWillBeSent") => {
                    let url = p["request"]["url"].as_str().unwrap_or_default();
                    let path = url
                        .split_once("://")
                        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                        .unwrap_or_default();
                    let path = path.split(['?', '#']).next().unwrap_or_default();
                    if path == format!("{stack}/events/stream") {
                        traffic.opened = true;
                        streams.insert(p["requestId"].to_string());
                    } else if traffic.opened
                        && path.starts_with("/v1/")
                        && path != format!("{stack}/graph")
                    {
                        traffic.polls.push(url.to_string());
                    }
                }
                Some("Network.eventSourceMessageReceived")
                    if p["eventName"] == "event"
                        && streams.contains(&p["requestId"].to_string()) =>
                {
                    let id = p["eventId"].as_str().and_then(|id| id.parse().ok());
                    traffic
                        .streamed
                        .push(id.unwrap_or_else(|| panic!("a stream message without an id: {p}")));
                }
                _ => {}
            }
        }
        traffic
    }

    fn log(&self) -> String {
        tail(&self.profile.path().join("chromium.log"), 40)
    }
}

/// See [`Browser::stream_traffic`].
#[derive(Debug, Default)]
struct StreamTraffic {
    opened: bool,
    streamed: Vec<i64>,
    polls: Vec<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
