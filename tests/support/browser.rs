//! Headless Chromium for the tests, over the DevTools protocol on a pipe: launch, navigate,
//! evaluate, wait for what the page shows, screenshots, and what the page did meanwhile
//! (errors and exceptions for the whole session, network traffic such as an event stream).
//!
//! Only std, tokio, serde_json and tempfile are used here: every test binary compiles it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::procs::tail;

/// For a page to show a state.
const DEADLINE: Duration = Duration::from_secs(180);

/// Chromium: `KILN_CHROMIUM`, else the first of its usual names on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
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

pub struct Browser {
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
    pub async fn launch(exe: &Path) -> Self {
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
    pub async fn send(&mut self, method: &str, params: Value, in_page: bool) -> Value {
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
    pub fn keep(&mut self, msg: Value) {
        if msg["method"].is_string() {
            self.events.push(msg);
        }
    }

    /// Keeps every event Chromium has sent so far without waiting for more.
    pub fn pump(&mut self) {
        while let Ok(msg) = self.messages.try_recv() {
            self.keep(msg);
        }
    }

    /// Sends nothing for `time`, keeping the events that come meanwhile.
    pub async fn idle(&mut self, time: Duration) {
        let until = tokio::time::Instant::now() + time;
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, self.messages.recv()).await {
            self.keep(msg);
        }
    }

    /// From here on, `page_errors` reports only the errors that come after this call.
    pub fn forget_errors_so_far(&mut self) {
        self.pump();
        self.errors_from = self.events.len();
    }

    pub async fn navigate(&mut self, url: &str) {
        let r = self.send("Page.navigate", json!({"url": url}), true).await;
        assert!(r["errorText"].is_null(), "navigating to {url}: {r}");
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
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
    pub async fn wait_for(
        &mut self,
        what: &str,
        facts: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
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

    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .send("Page.captureScreenshot", json!({"format": "png"}), true)
            .await;
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// Closes the browser, keeping every event it sends up to its exit (the reader thread ends
    /// when Chromium's end of the pipe closes): the session's errors are all in `events` then.
    pub async fn close(&mut self) {
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
    pub fn page_errors(&self) -> Vec<String> {
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
    pub fn stream_traffic(&mut self, stack: &str) -> StreamTraffic {
        self.pump();
        let stack = format!("/v1/stacks/{stack}");
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

    pub fn log(&self) -> String {
        tail(&self.profile.path().join("chromium.log"), 40)
    }
}

/// See [`Browser::stream_traffic`].
#[derive(Debug, Default)]
pub struct StreamTraffic {
    pub opened: bool,
    pub streamed: Vec<i64>,
    pub polls: Vec<String>,
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
