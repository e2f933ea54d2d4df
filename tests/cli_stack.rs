//! `kiln stack`, `kiln resource` and `kiln engine` as a user runs them: the real binary on a
//! SQLite file, the quickstart from examples/, output and exit codes.

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Kiln {
    dir: tempfile::TempDir,
}

fn example(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

impl Kiln {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("kiln.db")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("KILN_CONFIG")
            .env(
                "KILN_DATABASE_URL",
                format!("sqlite://{}", self.db().display()),
            )
            .env("KILN_RUNTIME__CACHE_DIR", support::shared_cache());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn quickstart_create_inspect_delete() {
    let k = Kiln::new();
    let template = example("examples/quickstart/stack.yaml");
    let out = k.run(&[
        "stack",
        "create",
        "qs",
        "-t",
        &template,
        "-P",
        "environment=prod",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Progress as events on stderr (not a terminal here), outputs and the result on stdout.
    assert!(stderr.contains("seed  CREATE_COMPLETE"), "{stderr}");
    assert!(stderr.contains("(stack)  CREATE_COMPLETE"), "{stderr}");
    assert!(
        stdout.contains("OUTPUT") && stdout.contains("prod-a-"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("qs CREATE_COMPLETE"),
        "{stdout}"
    );

    let list = k.json(&["stack", "list", "--format", "json"]);
    assert_eq!(list[0]["name"], "qs");
    assert_eq!(list[0]["status"], "COMPLETE");

    let outputs = k.json(&["stack", "outputs", "qs", "--format", "json"]);
    let names = outputs["names"].as_array().unwrap();
    assert_eq!(names.len(), 3);
    assert!(
        names
            .iter()
            .all(|n| n.as_str().unwrap().starts_with("prod-"))
    );

    let resources = k.json(&["resource", "list", "qs", "--format", "json"]);
    assert_eq!(resources.as_array().unwrap().len(), 7);
    let seed = k.json(&["resource", "show", "qs", "seed", "--format", "json"]);
    assert_eq!(seed["type"], "OS::Heat::RandomString");
    assert!(seed["attributes"]["value"].is_string());

    let (events, _) = text(&k.run(&["stack", "events", "qs"]));
    assert!(events.lines().count() > 14, "{events}");

    // A second stack of the same name is refused with the conflict code.
    let again = k.run(&["stack", "create", "qs", "-t", &template]);
    assert_eq!(again.status.code(), Some(4), "{}", text(&again).1);

    let out = k.run(&["stack", "delete", "qs"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("seed  DELETE_COMPLETE"), "{stderr}");
    assert!(
        !stderr.contains("CREATE_"),
        "only this action's progress: {stderr}"
    );
    let gone = k.run(&["stack", "show", "qs"]);
    assert_eq!(gone.status.code(), Some(5));
    assert!(text(&gone).1.contains("stack 'qs' not found"));
}

#[test]
fn a_bad_template_creates_nothing_and_exits_2() {
    let k = Kiln::new();
    let bad = k.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "heat_template_version: 2021-04-16\nresources:\n  a:\n    type: OS::Heat::RandomString\n    properties: {length: 0}\n  b:\n    type: OS::Nope\n",
    )
    .unwrap();
    let out = k.run(&["stack", "create", "bad", "-t", bad.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml:5:") && stderr.contains("resources.a.properties.length"),
        "{stderr}"
    );
    assert!(
        stderr.contains("OS::Nope"),
        "all errors, not just the first: {stderr}"
    );
    assert!(
        k.json(&["stack", "list", "--format", "json"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_failed_stack_exits_1_with_the_cause() {
    let k = Kiln::new();
    let t = k.dir.path().join("fail.yaml");
    std::fs::write(
        &t,
        "heat_template_version: 2021-04-16\nresources:\n  ok: {type: OS::Heat::None}\n  broken:\n    type: OS::Heat::TestResource\n    properties: {fail: true}\n",
    )
    .unwrap();
    let out = k.run(&["stack", "create", "f", "-t", t.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("f CREATE_FAILED: Resource CREATE failed: broken"),
        "{stderr}"
    );
}

#[test]
fn no_wait_then_a_separate_engine_process_does_the_work() {
    let k = Kiln::new();
    let template = example("examples/quickstart/stack.yaml");
    let out = k.run(&["stack", "create", "bg", "-t", &template, "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("bg CREATE_IN_PROGRESS"));

    let mut engine = k
        .command(&["engine"])
        .env("KILN_ENGINE__METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The engine says where its metrics are; read its stderr on a thread from then on.
    let mut lines = std::io::BufReader::new(engine.stderr.take().unwrap()).lines();
    let metrics_url = loop {
        let line = lines
            .next()
            .expect("the engine printed its metrics address")
            .unwrap();
        if let Some(rest) = line.strip_prefix("metrics on ") {
            break rest.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let show = k.json(&["stack", "show", "bg", "--format", "json"]);
        if show["stack"]["status"] != "IN_PROGRESS" {
            assert_eq!(show["stack"]["status"], "COMPLETE", "{show}");
            assert_eq!(show["outputs"]["chain"], "after first");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine never finished the stack"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // It is the only engine, so it leads; `engine list` and its metrics say so.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = k.json(&["engine", "list", "--format", "json"]);
        let me = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["pid"] == engine.id())
            .cloned()
            .expect("the engine is listed");
        assert_eq!(me["status"], "up", "{me}");
        if me["leader"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the only engine never led: {me}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http_get(&metrics_url);
    assert!(metrics.contains("kiln_leader_changes_total 1"), "{metrics}");
    // SIGTERM stops the engine cleanly.
    let pid = engine.id() as i32;
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = engine.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The engine registered itself and, stopping cleanly, said so.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engines = rt.block_on(async {
        let store = kiln::store::Store::open(&format!("sqlite://{}", k.db().display()))
            .await
            .unwrap();
        store.engines().await.unwrap()
    });
    let me = engines
        .iter()
        .find(|e| e.pid == i64::from(pid))
        .expect("the engine process registered");
    assert!(me.stopped_at.is_some(), "{me:?}");
    let list = k.json(&["engine", "list", "--format", "json"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["pid"] == pid && e["status"] == "stopped" && e["leader"] == false),
        "{list}"
    );
}

/// A GET on a fresh runtime (these tests are synchronous).
fn http_get(url: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

#[test]
fn a_database_from_another_build_is_refused_with_advice() {
    let k = Kiln::new();
    assert!(
        k.run(&["stack", "list"]).status.success(),
        "creates and migrates the database"
    );
    // Pretend the applied migration was another build's.
    let url = format!("sqlite://{}", k.db().display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET checksum = X'00'")
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let out = k.run(&["stack", "list"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another (development) build of kiln")
            && stderr.contains("KILN_DATABASE_URL"),
        "{stderr}"
    );
}

#[test]
fn a_bad_or_unreachable_database_is_named_with_the_reason() {
    let k = Kiln::new();
    let run = |url: &str| {
        k.command(&["stack", "list"])
            .env("KILN_DATABASE_URL", url)
            .output()
            .unwrap()
    };
    let out = run("mysql://localhost/kiln");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a URL Kiln cannot use is bad input"
    );
    assert!(
        text(&out).1.contains("use sqlite://PATH or postgres://"),
        "{}",
        text(&out).1
    );
    // Nothing listens on port 1: the real cause, not a pool timeout.
    let out = run("postgres://postgres@127.0.0.1:1/kiln");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("Connection refused"),
        "{}",
        text(&out).1
    );
}

#[test]
fn preview_update_follow_check_resume_and_rollback_from_the_command_line() {
    let k = Kiln::new();
    let template = example("examples/quickstart/stack.yaml");
    let create = k.run(&[
        "stack",
        "create",
        "qs",
        "-t",
        &template,
        "--enable-rollback",
    ]);
    assert!(create.status.success(), "{}", text(&create).1);

    // The preview changes nothing and says why, as a table and as JSON.
    let args = [
        "--existing",
        "-P",
        "environment=prod",
        "-P",
        "name_length=16",
    ];
    let preview = k.run(&[&["stack", "preview", "qs"][..], &args].concat());
    let (table, stderr) = text(&preview);
    assert!(preview.status.success(), "{stderr}");
    assert!(
        table.contains("replace") && table.contains("property 'length' cannot change in place"),
        "{table}"
    );
    assert!(
        table.contains("Preview of qs: 0 to create, 3 to update in place, 1 to replace, 0 to delete, 3 unchanged."),
        "{table}"
    );
    let plan = k.json(
        &[
            &["stack", "update", "qs", "--dry-run", "--format", "json"][..],
            &args,
        ]
        .concat(),
    );
    let actions: Vec<(&str, &str)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["resource"].as_str().unwrap(),
                c["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(actions.contains(&("seed", "replace")) && actions.contains(&("worker_a", "update")));
    let show = k.json(&["stack", "show", "qs", "--format", "json"]);
    assert_eq!(
        show["stack"]["action"], "CREATE",
        "the dry run changed nothing"
    );

    // The update, followed from another process until it ends.
    let update = k
        .command(&[&["stack", "update", "qs"][..], &args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while k.json(&["stack", "show", "qs", "--format", "json"])["stack"]["action"] != "UPDATE" {
        assert!(Instant::now() < deadline, "the update never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let followed = k.run(&["stack", "events", "qs", "--follow", "--format", "json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&followed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["status"].as_str()),
        (Some("UPDATE"), Some("COMPLETE")),
        "--follow ends with the action"
    );
    let update = update.wait_with_output().unwrap();
    let (stdout, stderr) = text(&update);
    assert!(update.status.success(), "{stderr}");
    assert!(
        stdout.trim_end().ends_with("qs UPDATE_COMPLETE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("prod-a-"),
        "the outputs re-resolved: {stdout}"
    );

    let check = k.run(&["stack", "check", "qs"]);
    assert!(check.status.success(), "{}", text(&check).1);
    assert!(text(&check).0.contains("qs CHECK_COMPLETE"));
    let resume = k.run(&["stack", "resume", "qs"]);
    assert!(resume.status.success(), "{}", text(&resume).1);

    // A failing update rolls back (rollback was enabled at create) and exits 1 saying so.
    let broken = k.dir.path().join("broken.yaml");
    let original = std::fs::read_to_string(&template).unwrap();
    let with_broken = original.replace(
        "\noutputs:",
        "  broken:\n    type: OS::Heat::TestResource\n    properties: {fail: true}\n\noutputs:",
    );
    std::fs::write(&broken, with_broken).unwrap();
    let failed = k.run(&[
        "stack",
        "update",
        "qs",
        "-t",
        broken.to_str().unwrap(),
        "--existing",
    ]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed).1);
    assert!(
        text(&failed)
            .1
            .contains("qs ROLLBACK_COMPLETE: the action failed and was rolled back"),
        "{}",
        text(&failed).1
    );
    let resources = k.json(&["resource", "list", "qs", "--format", "json"]);
    assert_eq!(
        resources.as_array().unwrap().len(),
        7,
        "broken is gone again"
    );
}
