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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::api::{Client, Reply};
use support::browser::{Browser, find_chromium};
use support::procs::ServeProc;

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

    let tokens =
        format!("[[api.tokens]]\ntoken = \"{TOKEN}\"\nproject = \"demo\"\nrole = \"member\"\n");
    let mut serve = ServeProc::start(&tokens).await;
    let base = format!("http://{}", serve.addr);
    let api = Client::new(&base, Some(TOKEN));

    // A stack caught mid-run: everything before `server` complete, `server` in progress.
    let Reply { status, body, .. } = api
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
        let Reply { body, .. } = api
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
    let Reply { status, body, .. } = api
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
    let Reply {
        body: shown_stack, ..
    } = api.call("GET", &format!("/v1/stacks/{STACK}"), None).await;
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
    let traffic = browser.stream_traffic(STACK);
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
async fn api_event_ids(api: &Client) -> Vec<i64> {
    let Reply { status, body, .. } = api
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
    serve: &ServeProc,
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
