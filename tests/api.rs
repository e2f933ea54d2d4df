//! The REST API over real HTTP on 127.0.0.1, with a real engine on a SQLite file and on
//! PostgreSQL: every route's success and error answers, bearer tokens and project isolation,
//! body limits, paging and the event stream, and the CLI giving the same output through a
//! server as in embedded mode.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{ApiServer, Client, token};

/// Three resources: `b` waits for `a`, `c` for `b`; `b` takes `wait` seconds to create.
fn chain(wait: u32) -> String {
    format!(
        "heat_template_version: 2018-08-31
parameters:
  greeting:
    type: string
    default: hello
resources:
  a:
    type: OS::Heat::TestResource
    properties:
      value: {{get_param: greeting}}
  b:
    type: OS::Heat::TestResource
    properties:
      value: {{get_attr: [a, output]}}
      action_wait_secs: {{create: {wait}}}
  c:
    type: OS::Heat::None
    depends_on: b
outputs:
  said:
    description: what b says
    value: {{get_attr: [b, output]}}
"
    )
}

const FAILING: &str = "heat_template_version: 2018-08-31
resources:
  broken:
    type: OS::Heat::TestResource
    properties:
      fail: true
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stack_route_answers_with_its_documented_success_and_errors() {
    for db in support::db::backends().await {
        let server = ApiServer::start(&db.url, vec![], 1 << 20).await;
        stack_routes(&server.client(None)).await;
        server.shutdown().await;
        eprintln!("{}: passed", db.name);
        db.cleanup().await;
    }
}

async fn stack_routes(api: &Client) {
    // Create, and the errors of a create.
    let created = api.create("web", &chain(0)).await.expect(201);
    let id = created.body["stack"]["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["stack"]["project"], "default");
    assert_eq!(
        api.create("web", &chain(0)).await.expect(409).code(),
        "stack_exists"
    );
    let bad = api
        .create(
            "broken",
            "heat_template_version: 2018-08-31\nresources:\n  x:\n    type: Nope\n",
        )
        .await
        .expect(400);
    assert_eq!(bad.code(), "invalid_template");
    assert_eq!(bad.body["error"]["location"]["line"], 4, "{}", bad.text);
    assert_eq!(bad.body["error"]["location"]["path"], "resources.x.type");
    assert!(
        bad.body["error"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Nope")
    );
    let wrong = api
        .post(
            "/v1/stacks",
            json!({"name": "x", "template": {"name": "t", "text": 3}}),
        )
        .await
        .expect(400);
    assert_eq!(wrong.code(), "invalid_body");
    assert_eq!(wrong.body["error"]["location"]["path"], "template.text");
    let unknown = api
        .post("/v1/stacks", json!({"name": "x", "tempate": {}}))
        .await
        .expect(400);
    assert!(unknown.text.contains("tempate"), "{}", unknown.text);
    let badname = api.create("9lives", &chain(0)).await.expect(400);
    assert_eq!(badname.body["error"]["location"]["path"], "name");
    let form = api
        .raw(
            "POST",
            "/v1/stacks",
            Some("text/plain"),
            Some("name=x".into()),
        )
        .await
        .expect(415);
    assert_eq!(form.code(), "unsupported_media_type");
    let empty = api.raw("POST", "/v1/stacks", None, None).await.expect(400);
    assert_eq!(empty.code(), "invalid_body");

    // Show, list, outputs, resources, graph.
    let done = api.settle("web").await;
    assert_eq!(done["status"], "COMPLETE", "{done}");
    let shown = api.get("/v1/stacks/web").await.expect(200);
    assert_eq!(shown.body["stack"]["id"], id.as_str());
    assert_eq!(shown.body["resources"][0]["status"], "CREATE_COMPLETE");
    assert_eq!(shown.body["resources"][0]["count"], 3);
    assert_eq!(shown.body["outputs"][0]["name"], "said");
    assert_eq!(shown.body["outputs"][0]["value"], "hello");
    let bare = api.get("/v1/stacks/web?outputs=false").await.expect(200);
    assert!(bare.body.get("outputs").is_none(), "{}", bare.text);
    let q = api.get("/v1/stacks/web?outputs=maybe").await.expect(400);
    assert_eq!(q.code(), "invalid_query");
    assert_eq!(
        api.get(&format!("/v1/stacks/{id}")).await.expect(200).body["stack"]["name"],
        "web"
    );
    let missing = api.get("/v1/stacks/nope").await.expect(404);
    assert_eq!(missing.code(), "not_found");
    let list = api.get("/v1/stacks").await.expect(200);
    assert_eq!(list.body["stacks"].as_array().unwrap().len(), 1);
    let outputs = api.get("/v1/stacks/web/outputs").await.expect(200);
    assert_eq!(outputs.body["outputs"][0]["description"], "what b says");
    let resources = api.get("/v1/stacks/web/resources").await.expect(200);
    let names: Vec<&str> = resources.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    let b = api.get("/v1/stacks/web/resources/b").await.expect(200);
    assert_eq!(b.body["resource"]["attributes"]["output"], "hello");
    assert_eq!(
        api.code(404, "GET", "/v1/stacks/web/resources/z", None)
            .await,
        "not_found"
    );
    assert_eq!(
        api.code(404, "GET", "/v1/stacks/nope/resources", None)
            .await,
        "not_found"
    );
    let graph = api.get("/v1/stacks/web/graph").await.expect(200);
    let nodes = graph.body["nodes"].as_array().unwrap();
    let c = nodes.iter().find(|n| n["name"] == "c").unwrap();
    assert_eq!(
        (c["depends_on"].clone(), c["status"].clone()),
        (json!(["b"]), json!("COMPLETE"))
    );

    // Events: pages that join up, and the stream.
    let all = api
        .get("/v1/stacks/web/events?limit=1000")
        .await
        .expect(200);
    let all = all.body["events"].as_array().unwrap().clone();
    assert_eq!(all.len(), 8, "{all:?}");
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .get(&format!("/v1/stacks/web/events?after={after}&limit=3"))
            .await
            .expect(200);
        paged.extend(page.body["events"].as_array().unwrap().clone());
        match page.body["next"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert_eq!(
        api.code(400, "GET", "/v1/stacks/web/events?limit=lots", None)
            .await,
        "invalid_query"
    );
    let streamed = stream(api, "/v1/stacks/web/events/stream", 9).await;
    assert_eq!(
        streamed[8].0, "stack",
        "the stack comes after the events that led to it"
    );
    assert_eq!(streamed[8].1["status"], "COMPLETE");
    let streamed_events: Vec<Value> = streamed[..8].iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(streamed_events, all);
    let resumed = stream(
        api,
        &format!("/v1/stacks/web/events/stream?after={}", all[5]["id"]),
        3,
    )
    .await;
    assert_eq!(
        (resumed[0].1["id"].clone(), resumed[2].0.as_str()),
        (all[6]["id"].clone(), "stack")
    );

    // Preview and update (PUT and PATCH), and their errors.
    let preview = api
        .post(
            "/v1/stacks/web/preview",
            json!({"existing": true, "parameters": {"greeting": "hi"}}),
        )
        .await
        .expect(200);
    assert!(
        preview.body["summary"]
            .as_str()
            .unwrap()
            .starts_with("0 to create, 2 to update")
    );
    let bad_preview = api
        .post(
            "/v1/stacks/web/preview",
            json!({"template": {"name": "v2.yaml", "text": "resources: {}"}}),
        )
        .await
        .expect(400);
    assert_eq!(bad_preview.code(), "invalid_template");
    assert_eq!(
        api.code(
            404,
            "POST",
            "/v1/stacks/nope/preview",
            Some(json!({"existing": true}))
        )
        .await,
        "not_found"
    );
    let no_template = api
        .call("PUT", "/v1/stacks/web", Some(json!({"parameters": {}})))
        .await
        .expect(400);
    assert_eq!(no_template.body["error"]["location"]["path"], "template");
    let put = api
        .call(
            "PUT",
            "/v1/stacks/web",
            Some(json!({"template": {"name": "v2.yaml", "text": chain(0)}, "parameters": {"greeting": "hey"}})),
        )
        .await
        .expect(202);
    assert_eq!(put.body["stack"]["action"], "UPDATE");
    assert_eq!(api.settle("web").await["status"], "COMPLETE");
    let patched = api
        .call(
            "PATCH",
            "/v1/stacks/web",
            Some(json!({"parameters": {"greeting": 42}})),
        )
        .await
        .expect(202);
    assert_eq!(patched.body["stack"]["action"], "UPDATE");
    assert_eq!(api.settle("web").await["status"], "COMPLETE");
    let said = api.get("/v1/stacks/web/outputs").await.expect(200);
    assert_eq!(said.body["outputs"][0]["value"], "42");

    // Check, then delete; a deleted stack is found by id only.
    let check = api
        .post("/v1/stacks/web/check", json!({}))
        .await
        .expect(202);
    assert_eq!(check.body["stack"]["action"], "CHECK");
    assert_eq!(api.settle("web").await["status"], "COMPLETE");
    let deleted = api.call("DELETE", "/v1/stacks/web", None).await.expect(202);
    assert_eq!(deleted.body["stack"]["action"], "DELETE");
    assert_eq!(api.settle(&id).await["status"], "COMPLETE");
    assert_eq!(
        api.code(404, "GET", "/v1/stacks/web", None).await,
        "not_found"
    );

    // An action in progress refuses another (409 naming it), and is cancelled.
    api.create("slow", &chain(15)).await.expect(201);
    api.wait_stack("slow", "b to be creating", |s| {
        s["in_progress"]
            .as_array()
            .is_some_and(|b| b.iter().any(|n| n == "b"))
    })
    .await;
    let busy = api
        .call("PATCH", "/v1/stacks/slow", Some(json!({})))
        .await
        .expect(409);
    assert_eq!(busy.code(), "action_in_progress");
    assert_eq!(busy.body["error"]["action"], "CREATE");
    assert!(busy.body["error"]["since"].is_string(), "{}", busy.text);
    assert_eq!(
        api.code(409, "DELETE", "/v1/stacks/slow", None).await,
        "action_in_progress"
    );
    let put = json!({"template": {"name": "t.yaml", "text": chain(0)}});
    assert_eq!(
        api.code(409, "PUT", "/v1/stacks/slow", Some(put.clone()))
            .await,
        "action_in_progress"
    );
    assert_eq!(
        api.code(404, "PUT", "/v1/stacks/nope", Some(put)).await,
        "not_found"
    );
    assert_eq!(
        api.code(409, "POST", "/v1/stacks/slow/check", Some(json!({})))
            .await,
        "action_in_progress"
    );
    api.post("/v1/stacks/slow/cancel", json!({"rollback": false}))
        .await
        .expect(202);
    let cancelled = api.settle("slow").await;
    assert_eq!(cancelled["status"], "FAILED", "{cancelled}");
    let again = api
        .raw("POST", "/v1/stacks/slow/cancel", None, None)
        .await
        .expect(409);
    assert_eq!(again.code(), "nothing_to_cancel");

    // Resume re-runs a failed action; it fails again the same way.
    api.create("flaky", FAILING).await.expect(201);
    assert_eq!(api.settle("flaky").await["status"], "FAILED");
    let resumed = api
        .post("/v1/stacks/flaky/resume", json!({}))
        .await
        .expect(202);
    assert_eq!(resumed.body["stack"]["action"], "UPDATE");
    assert_eq!(api.settle("flaky").await["status"], "FAILED");
    assert_eq!(
        api.code(404, "POST", "/v1/stacks/nope/resume", Some(json!({})))
            .await,
        "not_found"
    );
    assert_eq!(
        api.code(404, "POST", "/v1/stacks/nope/check", Some(json!({})))
            .await,
        "not_found"
    );

    // Validate, resource types, engines; unknown routes and methods.
    let valid = api
        .post(
            "/v1/validate",
            json!({"template": {"name": "t.yaml", "text": chain(1)}}),
        )
        .await
        .expect(200);
    assert_eq!(valid.body["valid"], true);
    assert_eq!(valid.body["resources"][1]["depends_on"], json!(["a"]));
    let invalid = api
        .post(
            "/v1/validate",
            json!({"template": {"name": "t.yaml", "text": "resources: {}"}}),
        )
        .await
        .expect(400);
    assert_eq!(invalid.body["error"]["location"]["file"], "t.yaml");
    let types = api.get("/v1/resource_types").await.expect(200);
    let test_resource = types.body["resource_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type_name"] == "OS::Heat::TestResource")
        .cloned()
        .unwrap_or_else(|| panic!("no TestResource in {}", types.text));
    assert_eq!(test_resource["plugin"], "test-resource");
    let props = test_resource["properties"].as_array().unwrap();
    let fail = props.iter().find(|p| p["name"] == "fail").unwrap();
    assert_eq!(
        (fail["type"].clone(), fail.get("type_")),
        (json!("boolean"), None),
        "{fail}"
    );
    let engines = api.get("/v1/engines").await.expect(200);
    assert_eq!(engines.body["engines"][0]["status"], "up");
    assert_eq!(api.code(404, "GET", "/v1/nothing", None).await, "no_route");
    assert_eq!(
        api.code(405, "DELETE", "/v1/stacks", None).await,
        "method_not_allowed"
    );
}

/// The first `n` messages of an event stream, as (event name, JSON data).
async fn stream(api: &Client, path: &str, n: usize) -> Vec<(String, Value)> {
    let mut stream = api.stream(path, Duration::from_secs(60)).await;
    let mut out = Vec::new();
    while out.len() < n {
        out.push(stream.next().await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_metrics_and_the_openapi_document_need_no_token() {
    let db = support::db::backends().await.remove(0);
    let server = ApiServer::start(
        &db.url,
        vec![token("demo-token-0123456789", "demo", false)],
        1 << 20,
    )
    .await;
    let anon = server.client(None);
    assert_eq!(anon.get("/healthz").await.expect(200).body["status"], "ok");
    let ready = anon.get("/readyz").await.expect(200);
    assert_eq!(
        (
            ready.body["database"].clone(),
            ready.body["migrations"].clone()
        ),
        (json!("sqlite"), json!(6))
    );
    let doc = anon.get("/openapi.json").await.expect(200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    for path in [
        "/v1/stacks",
        "/v1/resource_types",
        "/v1/engines",
        "/v1/stacks/x/graph",
    ] {
        assert_eq!(anon.code(401, "GET", path, None).await, "unauthorized");
    }
    let body = json!({"template": {"name": "t", "text": FAILING}});
    assert_eq!(
        anon.code(401, "POST", "/v1/validate", Some(body)).await,
        "unauthorized"
    );
    let metrics = anon.get("/metrics").await.expect(200);
    assert!(
        metrics.text.contains(
            "kiln_http_requests_total{method=\"GET\",route=\"/v1/stacks\",status=\"401\"}"
        ),
        "{}",
        metrics.text
    );
    // A schema newer than this build (another release migrated the database): not ready.
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let not_ready = anon.get("/readyz").await.expect(503);
    assert_eq!(not_ready.code(), "not_ready");
    assert!(
        not_ready.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("migration 99"),
        "{}",
        not_ready.text
    );
    assert_eq!(anon.get("/healthz").await.expect(200).body["status"], "ok");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_see_and_act_on_their_own_project_only() {
    for db in support::db::backends().await {
        let tokens = vec![
            token("demo-token-0123456789", "demo", false),
            token("other-token-0123456789", "other", false),
            token("admin-token-0123456789", "ops", true),
        ];
        let server = ApiServer::start(&db.url, tokens, 1 << 20).await;
        let demo = server.client(Some("demo-token-0123456789"));
        let other = server.client(Some("other-token-0123456789"));
        let admin = server.client(Some("admin-token-0123456789"));

        // No token, or a wrong one: 401 with a challenge, whatever the route.
        for c in [
            server.client(None),
            server.client(Some("wrong-token-0123456789")),
        ] {
            let r = c.get("/v1/stacks").await.expect(401);
            assert_eq!(r.code(), "unauthorized");
            assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"kiln\"");
            assert_eq!(
                c.code(401, "GET", "/v1/stacks/web", None).await,
                "unauthorized"
            );
            assert_eq!(
                c.create("web", FAILING).await.expect(401).code(),
                "unauthorized"
            );
        }

        let made = demo.create("web", &chain(0)).await.expect(201);
        let id = made.body["stack"]["id"].as_str().unwrap().to_string();
        assert_eq!(made.body["stack"]["project"], "demo");
        assert_eq!(demo.settle("web").await["status"], "COMPLETE");

        // Another project's stack is not found, exactly as a missing one, by name or id, on
        // every route; it is not listed, and nothing is done to it.
        let missing = other.get("/v1/stacks/nothing-here").await.expect(404);
        for path in ["/v1/stacks/web", &format!("/v1/stacks/{id}")] {
            let r = other.get(path).await.expect(404);
            assert_eq!(r.code(), missing.code());
            for sub in [
                "/resources",
                "/events",
                "/outputs",
                "/graph",
                "/resources/a",
                "/events/stream",
            ] {
                other.get(&format!("{path}{sub}")).await.expect(404);
            }
        }
        other
            .call("DELETE", "/v1/stacks/web", None)
            .await
            .expect(404);
        other
            .post("/v1/stacks/web/check", json!({}))
            .await
            .expect(404);
        other
            .post("/v1/stacks/web/cancel", json!({}))
            .await
            .expect(404);
        other
            .call("PATCH", "/v1/stacks/web", Some(json!({})))
            .await
            .expect(404);
        assert_eq!(
            other.get("/v1/stacks").await.expect(200).body["stacks"],
            json!([])
        );
        assert_eq!(
            demo.get("/v1/stacks/web?outputs=false").await.body["stack"]["status"],
            "COMPLETE"
        );
        assert_eq!(
            demo.get("/v1/stacks/web?outputs=false").await.body["stack"]["action"],
            "CREATE"
        );

        // Names are per project; a member cannot reach into another project.
        other.create("web", &chain(0)).await.expect(201);
        let forbidden = other
            .post("/v1/stacks", json!({"name": "x", "project": "demo", "template": {"name": "t", "text": chain(0)}}))
            .await
            .expect(403);
        assert_eq!(forbidden.code(), "forbidden");
        other.get("/v1/stacks?project=demo").await.expect(403);
        other.get("/v1/engines").await.expect(403);
        // The query-string token (for EventSource) works as the header does.
        let via_query = server
            .client(None)
            .get("/v1/stacks?access_token=demo-token-0123456789")
            .await
            .expect(200);
        assert_eq!(via_query.body["stacks"][0]["name"], "web");

        // The admin sees every project; a name two projects use needs the id.
        let all = admin.get("/v1/stacks").await.expect(200);
        assert_eq!(all.body["stacks"].as_array().unwrap().len(), 2);
        let demo_only = admin.get("/v1/stacks?project=demo").await.expect(200);
        assert_eq!(demo_only.body["stacks"][0]["id"], id.as_str());
        assert_eq!(
            admin.code(400, "GET", "/v1/stacks/web", None).await,
            "ambiguous"
        );
        admin.get(&format!("/v1/stacks/{id}")).await.expect(200);
        let placed = admin
            .post("/v1/stacks", json!({"name": "placed", "project": "demo", "template": {"name": "t", "text": FAILING}}))
            .await
            .expect(201);
        assert_eq!(placed.body["stack"]["project"], "demo");
        demo.get("/v1/stacks/placed").await.expect(200);
        admin.get("/v1/engines").await.expect(200);
        server.shutdown().await;
        eprintln!("{}: passed", db.name);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_over_the_limit_get_413_and_change_nothing() {
    let db = support::db::backends().await.remove(0);
    let server = ApiServer::start(&db.url, vec![], 4096).await;
    let api = server.client(None);
    let padding = format!("# {}\n", "x".repeat(8000));
    let big = json!({"name": "big", "template": {"name": "t.yaml", "text": format!("{padding}{FAILING}")}});
    let r = api.post("/v1/stacks", big).await.expect(413);
    assert_eq!(r.code(), "payload_too_large");
    assert_eq!(
        api.get("/v1/stacks").await.expect(200).body["stacks"],
        json!([])
    );
    // Under the limit the same request goes through.
    api.create("small", FAILING).await.expect(201);
    server.shutdown().await;
}

/// `kiln` as a user runs it, on the server's database (embedded) or through the server.
fn kiln(db_url: &str, url: Option<&str>, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args)
        .current_dir(dir.path())
        .env_remove("KILN_CONFIG")
        .env_remove("KILN_URL")
        .env_remove("KILN_TOKEN")
        .env("KILN_DATABASE_URL", db_url)
        .env("KILN_RUNTIME__CACHE_DIR", support::shared_cache());
    if let Some(url) = url {
        c.env("KILN_URL", url);
    }
    c.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_prints_the_same_through_a_server_as_embedded() {
    let db = support::db::backends().await.remove(0);
    let server = ApiServer::start(&db.url, vec![], 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.yaml");
    std::fs::write(&file, chain(0)).unwrap();
    let file = file.display().to_string();
    let remote = Some(server.base.as_str());

    let created = kiln(
        &db.url,
        remote,
        &["stack", "create", "web", "-t", &file, "-P", "greeting=hi"],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(
        stdout.contains("web CREATE_COMPLETE") && stdout.contains("hi"),
        "{stdout}"
    );

    for args in [
        &["stack", "show", "web"][..],
        &["stack", "show", "web", "--format", "json"],
        &["stack", "list", "--format", "json"],
        &["stack", "events", "web"],
        &["stack", "events", "web", "--format", "json"],
        &["stack", "outputs", "web"],
        &["stack", "outputs", "web", "--format", "json"],
        &["resource", "list", "web"],
        &["resource", "show", "web", "b", "--format", "json"],
        &["stack", "preview", "web", "--existing", "-P", "greeting=yo"],
        &["validate", "-t", &file, "--format", "json"],
        &["stack", "show", "nope"],
        &["resource", "show", "web", "zz"],
        &["stack", "cancel", "web"],
    ] {
        let here = kiln(&db.url, None, args);
        let there = kiln(&db.url, remote, args);
        assert_eq!(
            (
                here.status.code(),
                String::from_utf8_lossy(&here.stdout),
                String::from_utf8_lossy(&here.stderr)
            ),
            (
                there.status.code(),
                String::from_utf8_lossy(&there.stdout),
                String::from_utf8_lossy(&there.stderr)
            ),
            "kiln {args:?} differs between embedded and --url"
        );
    }
    // The exit codes a script relies on, through the server.
    assert_eq!(
        kiln(&db.url, remote, &["stack", "show", "nope"])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        kiln(&db.url, remote, &["stack", "create", "web", "-t", &file])
            .status
            .code(),
        Some(4)
    );
    let unreachable = kiln(&db.url, Some("http://127.0.0.1:9"), &["stack", "list"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the Kiln API"));
    let deleted = kiln(&db.url, remote, &["stack", "delete", "web"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    server.shutdown().await;
}

/// A `kiln api` process of a cluster, and the address it printed.
struct ApiProc {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
}

impl ApiProc {
    async fn start(cluster: &support::procs::Cluster, label: &str) -> Self {
        let log = cluster.dir().join(format!("{label}.log"));
        let child = cluster
            .command(&["api", "--listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let what = format!("{label} to print its address");
        let base = support::procs::wait_for(Duration::from_secs(180), &what, async || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().find_map(|l| {
                let rest = l.strip_prefix("api on ")?;
                Some(rest.split_whitespace().next()?.to_string())
            })
        })
        .await;
        Self { child, base, log }
    }

    /// SIGTERM, and a clean exit.
    async fn stop(mut self) {
        support::procs::signal(self.child.id() as i32, libc::SIGTERM);
        let status =
            support::procs::wait_for(Duration::from_secs(60), "kiln api to exit", async || {
                self.child.try_wait().unwrap()
            })
            .await;
        assert!(
            status.success(),
            "kiln api exited {status}:\n{}",
            support::procs::tail(&self.log, 40)
        );
    }
}

impl Drop for ApiProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fan-out of `n` resources behind a root, each taking a second, and a join after them.
fn fan_out(n: usize, value: &str) -> String {
    let mut t = format!(
        "heat_template_version: 2018-08-31\nresources:\n  root:\n    type: OS::Heat::TestResource\n    properties:\n      value: {value}\n"
    );
    for i in 0..n {
        t += &format!(
            "  leaf{i}:\n    type: OS::Heat::TestResource\n    properties:\n      value: {{get_attr: [root, output]}}\n      action_wait_secs: {{create: 1}}\n"
        );
    }
    let all: Vec<String> = (0..n).map(|i| format!("leaf{i}")).collect();
    t += &format!(
        "  join:\n    type: OS::Heat::None\n    depends_on: [{}]\n",
        all.join(", ")
    );
    t += "outputs:\n  root_value:\n    value: {get_attr: [root, output]}\n";
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_and_two_engine_processes_serve_one_session_on_postgres() {
    if std::env::var_os("KILN_TEST_DATABASE_URL").is_none() {
        // Under CI this panics: CI must run the PostgreSQL tests.
        support::skip::skipped("needs PostgreSQL: KILN_TEST_DATABASE_URL is not set");
        return;
    }
    let db = support::db::backends()
        .await
        .into_iter()
        .find(|d| d.name == "postgres")
        .expect("KILN_TEST_DATABASE_URL is set: a PostgreSQL backend");
    let mut cluster = support::procs::Cluster::new(&db.url, &support::procs::Settings::default());
    let mut config = std::fs::read_to_string(&cluster.config).unwrap();
    config += "\n[[api.tokens]]\ntoken = \"session-token-0123456789\"\nproject = \"demo\"\n";
    std::fs::write(&cluster.config, config).unwrap();
    cluster.start_engines(2).await;
    let first = ApiProc::start(&cluster, "api-1").await;
    let second = ApiProc::start(&cluster, "api-2").await;
    let one = Client::new(&first.base, Some("session-token-0123456789"));
    let two = Client::new(&second.base, Some("session-token-0123456789"));

    // Created through one API, followed live through the other to its end.
    let made = one.create("session", &fan_out(12, "v1")).await.expect(201);
    assert_eq!(made.body["stack"]["project"], "demo");
    let id = made.body["stack"]["id"].as_str().unwrap().to_string();
    let streamed = follow_to_end(&two, &id).await;
    assert!(
        streamed
            .iter()
            .any(|e| e["resource"] == "join" && e["status"] == "COMPLETE")
    );
    let shown = two.get("/v1/stacks/session").await.expect(200);
    assert_eq!(shown.body["stack"]["status"], "COMPLETE", "{}", shown.text);
    assert_eq!(shown.body["outputs"][0]["value"], "v1");

    // The first API process dies; the session goes on through the second.
    drop(first);
    let patched = two
        .call(
            "PUT",
            "/v1/stacks/session",
            Some(json!({"template": {"name": "v2.yaml", "text": fan_out(12, "v2")}})),
        )
        .await
        .expect(202);
    assert_eq!(patched.body["stack"]["action"], "UPDATE");
    assert_eq!(two.settle(&id).await["status"], "COMPLETE");
    let outputs = two.get("/v1/stacks/session/outputs").await.expect(200);
    assert_eq!(outputs.body["outputs"][0]["value"], "v2");
    let third = ApiProc::start(&cluster, "api-3").await;
    let three = Client::new(&third.base, Some("session-token-0123456789"));

    // The CLI through a server sees the same stack; the engines did the work.
    let out = cluster
        .command(&[
            "--url",
            &third.base,
            "--token",
            "session-token-0123456789",
            "stack",
            "show",
            "session",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            cli["stack"]["action"].clone(),
            cli["outputs"]["root_value"].clone()
        ),
        (json!("UPDATE"), json!("v2"))
    );
    let events = three
        .get("/v1/stacks/session/events?limit=1000")
        .await
        .expect(200);
    let engines: std::collections::BTreeSet<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["resource"].is_null())
        .filter_map(|e| e["engine"].as_str())
        .collect();
    let ids: Vec<&str> = cluster.engines.iter().map(|e| e.id.as_str()).collect();
    assert!(
        !engines.is_empty() && engines.iter().all(|e| ids.contains(e)),
        "{engines:?} vs {ids:?}"
    );

    three
        .call("DELETE", "/v1/stacks/session", None)
        .await
        .expect(202);
    assert_eq!(two.settle(&id).await["status"], "COMPLETE");
    assert_eq!(
        three.get("/v1/stacks").await.expect(200).body["stacks"],
        json!([])
    );
    second.stop().await;
    third.stop().await;
    cluster.shutdown().await;
    db.cleanup().await;
}

/// The events of a stack's action from its stream, until a `stack` message says it ended.
async fn follow_to_end(api: &Client, stack: &str) -> Vec<Value> {
    let path = format!("/v1/stacks/{stack}/events/stream");
    let mut stream = api.stream(&path, Duration::from_secs(180)).await;
    let mut events = Vec::new();
    loop {
        match stream.next().await {
            (kind, value) if kind == "event" => events.push(value),
            (kind, value) if kind == "stack" && value["status"] != "IN_PROGRESS" => return events,
            _ => {}
        }
    }
}

#[test]
fn the_service_example_config_loads_with_its_token_file() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service/kiln.toml");
    let config = kiln::config::Config::load(&path).unwrap();
    let auth = kiln::api::Auth::from_config(&config.api).unwrap();
    let demo = auth.caller(Some("demo-project-token-change-me")).unwrap();
    assert_eq!((demo.project.as_str(), demo.is_admin()), ("demo", false));
    assert_eq!(config.log.format, kiln::config::LogFormat::Json);
}
