//! Secrets stay secret. A stack uses each kind Kiln holds: a hidden parameter (given at create,
//! changed by an update, refused by a constraint, put where a type check fails), a host-held
//! plugin credential (sent to the cloud, then refused by it), and an API token (used, and a
//! wrong one tried). Everything Kiln answers or writes is collected: every API route's answer
//! (the web view shows nothing else), validation and preview, errors, events, outputs,
//! `/metrics`, the CLI's `stack show --format json` and its other commands, and the process
//! logs at `trace`, as text and as JSON. No secret may appear in any of it.
//!
//! Witnesses that the secrets were in play: the cloud saw the credential (its auth record) and
//! the hidden value (an `X-Db-Password` header it recorded), so an absence is not an accident.
//! Signal credentials arrive with signals (issue 15) and get their test there.

mod support;

use std::process::Command;

use fault_cloud::{Auth, FaultConfig, FaultServer};
use serde_json::{Value, json};
use support::api::Client;
use support::procs::ServeProc;

const HIDDEN: &str = "hidden-Param-Secret-5e1f0c";
const HIDDEN_2: &str = "hidden-Param-Rotated-91ab37";
const CRED: &str = "plugin-Cred-Secret-77aa31";
const TOKEN: &str = "api-Token-Secret-0b9d42e1";
const WRONG_TOKEN: &str = "api-Token-Guessed-c0ffee99";
const SECRETS: [&str; 5] = [HIDDEN, HIDDEN_2, CRED, TOKEN, WRONG_TOKEN];
/// Every target at trace (Kiln's, the HTTP server's and client's, the database driver's) but
/// the WebAssembly compiler's and runtime's, whose trace is megabytes of type registrations
/// and holds no request data.
const LOG: &str = "trace,wasmtime=info,wasmtime_internal_cranelift=info,\
                   wasmtime_internal_environ=info,cranelift_codegen=info,regalloc2=info";

fn template(url: &str) -> String {
    format!(
        "heat_template_version: 2021-04-16
parameters:
  db_password: {{type: string, hidden: true}}
resources:
  obj:
    type: Kiln::HTTP::Resource
    properties:
      url: {url}
      body: {{name: thing}}
      headers: {{X-Db-Password: {{get_param: db_password}}}}
  salt:
    type: OS::Heat::RandomString
    properties: {{salt: {{get_param: db_password}}}}
  marker:
    type: OS::Heat::None
    properties: {{note: {{get_param: db_password}}}}
outputs:
  obj_id: {{value: {{get_attr: [obj, id]}}}}
"
    )
}

/// Templates whose errors are about a hidden value: a constraint it fails, a property type it
/// does not fit, a function it is the wrong input for.
fn bad_templates() -> Vec<(&'static str, String)> {
    let head = "heat_template_version: 2021-04-16\nparameters:\n";
    vec![
        (
            "constraint",
            format!(
                "{head}  pin: {{type: string, hidden: true, constraints: \
                 [{{allowed_pattern: '[0-9]+'}}]}}\nresources: {{}}\n"
            ),
        ),
        (
            "property type",
            format!(
                "{head}  pin: {{type: string, hidden: true}}\nresources:\n  r:\n    \
                 type: OS::Heat::RandomString\n    properties: {{length: {{get_param: pin}}}}\n"
            ),
        ),
        (
            "property constraint",
            format!(
                "{head}  pin: {{type: string, hidden: true}}\nresources:\n  r:\n    \
                 type: OS::Heat::RandomString\n    properties: {{sequence: {{get_param: pin}}}}\n"
            ),
        ),
        (
            "function",
            format!(
                "{head}  pin: {{type: string, hidden: true}}\nresources:\n  r:\n    \
                 type: OS::Heat::None\n    properties: {{v: {{list_join: [',', \
                 {{get_param: pin}}]}}}}\n"
            ),
        ),
    ]
}

/// Everything collected, each piece labelled with where it came from.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    async fn get(&mut self, api: &Client, path: &str) -> Value {
        let r = api.get(path).await;
        self.add(format!("GET {path}"), r.text.clone());
        r.body
    }

    /// Every place a secret shows, as "secret in what: ...context...".
    fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, text) in &self.0 {
            for secret in SECRETS {
                if let Some(at) = text.find(secret) {
                    let from = text.floor_char_boundary(at.saturating_sub(120));
                    let to = text.ceil_char_boundary((at + secret.len() + 60).min(text.len()));
                    out.push(format!("{secret} in {what}: ...{}...", &text[from..to]));
                }
            }
        }
        out
    }
}

/// Creates stack `name` from `text` with the hidden `pin`, which must make it fail; collects
/// what is said about it, and returns its resource `r`.
async fn failing_stack(api: &Client, seen: &mut Seen, name: &str, text: &str) -> Value {
    let r = api
        .post(
            "/v1/stacks",
            json!({"name": name, "template": {"name": format!("{name}.yaml"), "text": text},
                   "parameters": {"pin": HIDDEN}}),
        )
        .await
        .expect(201);
    seen.add(format!("create {name}"), r.text);
    let stack = api.settle(name).await;
    assert_eq!(stack["status"], "FAILED", "{stack}");
    seen.get(api, &format!("/v1/stacks/{name}")).await;
    seen.get(api, &format!("/v1/stacks/{name}/events")).await;
    seen.get(api, &format!("/v1/stacks/{name}/resources/r"))
        .await
}

fn cli(serve: &ServeProc, args: &[&str], log_format: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("KILN_CONFIG")
        .env("KILN_URL", format!("http://{}", serve.addr))
        .env("KILN_TOKEN", TOKEN)
        .env("KILN_LOG", LOG)
        .env("KILN_LOG__FORMAT", log_format)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running kiln");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn one_life(log_format: &str) {
    let cloud = FaultServer::start(FaultConfig {
        token: Some(CRED.into()),
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let extra = format!(
        "[plugins.http-resource.credentials]\ntoken = \"{CRED}\"\n\n\
         [[api.tokens]]\ntoken = \"{TOKEN}\"\nproject = \"demo\"\nrole = \"admin\"\n"
    );
    let serve = ServeProc::start_with(
        &extra,
        &[("KILN_LOG", LOG), ("KILN_LOG__FORMAT", log_format)],
    )
    .await;
    let api = Client::new(&format!("http://{}", serve.addr), Some(TOKEN));
    let mut seen = Seen::default();
    let text = template(&cloud.url("items"));
    let source = json!({"name": "stack.yaml", "text": text});

    let r = api
        .post(
            "/v1/validate",
            json!({"template": source, "parameters": {"db_password": HIDDEN}}),
        )
        .await
        .expect(200);
    seen.add("POST /v1/validate", r.text);
    let r = api
        .post(
            "/v1/stacks",
            json!({"name": "s", "template": source, "parameters": {"db_password": HIDDEN}}),
        )
        .await
        .expect(201);
    seen.add("POST /v1/stacks", r.text);
    let stack = api.settle("s").await;
    assert_eq!(stack["status"], "COMPLETE", "{stack}");

    // An update that changes only the hidden value: previewed, then applied.
    let change = json!({"existing": true, "parameters": {"db_password": HIDDEN_2}});
    let r = api
        .post("/v1/stacks/s/preview", change.clone())
        .await
        .expect(200);
    seen.add("POST /v1/stacks/s/preview", r.text);
    let r = api
        .call("PATCH", "/v1/stacks/s", Some(change))
        .await
        .expect(202);
    seen.add("PATCH /v1/stacks/s", r.text);
    assert_eq!(api.settle("s").await["status"], "COMPLETE");
    let r = api.post("/v1/stacks/s/check", json!({})).await.expect(202);
    seen.add("POST /v1/stacks/s/check", r.text);
    api.settle("s").await;

    // The cloud refuses the credential from now on: an update fails on it.
    cloud.set_token(Some("the-cloud-rotated-it".into()));
    let failing = json!({"existing": true, "parameters": {"db_password": HIDDEN}});
    api.call("PATCH", "/v1/stacks/s", Some(failing))
        .await
        .expect(202);
    let failed = api.settle("s").await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    cloud.set_token(Some(CRED.into()));

    for path in [
        "/v1/stacks",
        "/v1/stacks/s",
        "/v1/stacks/s/resources",
        "/v1/stacks/s/resources/obj",
        "/v1/stacks/s/resources/salt",
        "/v1/stacks/s/resources/marker",
        "/v1/stacks/s/events?limit=1000",
        "/v1/stacks/s/outputs",
        "/v1/stacks/s/graph",
        "/v1/resource_types",
        "/v1/engines",
        "/metrics",
        "/readyz",
        "/ui/",
        "/ui/app.js",
    ] {
        seen.get(&api, path).await;
    }
    let mut stream = api
        .stream(
            "/v1/stacks/s/events/stream?after=0",
            std::time::Duration::from_secs(60),
        )
        .await;
    let (_, first) = stream.next().await;
    seen.add("the event stream", first.to_string());

    // Errors about hidden values, through the API and the CLI.
    for (what, bad) in bad_templates() {
        let body = json!({"template": {"name": "bad.yaml", "text": bad},
                          "parameters": {"pin": HIDDEN}});
        let r = api.post("/v1/validate", body.clone()).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        seen.add(format!("validate ({what})"), r.text);
        let mut create = body;
        create["name"] = json!("bad");
        let r = api.post("/v1/stacks", create).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        seen.add(format!("create ({what})"), r.text);
    }
    // The same found only when the engine evaluates it, next to another resource's value.
    let late = format!(
        "heat_template_version: 2021-04-16\nparameters:\n  pin: {{type: string, hidden: true}}\n\
         resources:\n  seed:\n    type: OS::Heat::RandomString\n  r:\n    \
         type: OS::Heat::RandomString\n    properties:\n      sequence: {{list_join: ['', \
         [{{get_param: pin}}, {{get_attr: [seed, value]}}]]}}\n"
    );
    failing_stack(&api, &mut seen, "late", &late).await;

    // A plugin's own error that quotes a property holding the hidden value.
    let echo = "heat_template_version: 2021-04-16\nparameters:\n  pin: {type: string, hidden: \
                true}\nresources:\n  r:\n    type: OS::Heat::TestResource\n    properties:\n      \
                action_wait_secs: {create: {get_param: pin}}\n";
    let reason =
        failing_stack(&api, &mut seen, "echo", echo).await["resource"]["status_reason"].to_string();
    assert!(
        reason.contains("must be a number, got"),
        "the plugin's error is not the one meant: {reason}"
    );

    let wrong = Client::new(api.base(), Some(WRONG_TOKEN));
    let r = wrong.get("/v1/stacks").await;
    assert_eq!(r.status, 401);
    seen.add("a wrong token's answer", r.text);

    for args in [
        &["stack", "show", "s", "--format", "json"][..],
        &["stack", "list"],
        &["resource", "list", "s"],
        &["resource", "show", "s", "obj"],
        &["stack", "events", "s"],
        &["stack", "outputs", "s"],
    ] {
        let (_, text) = cli(&serve, args, log_format);
        seen.add(format!("kiln {}", args.join(" ")), text);
    }
    let (ok, text) = cli(&serve, &["stack", "delete", "s"], log_format);
    assert!(ok, "stack delete: {text}");
    seen.add("kiln stack delete s", text);

    // Witnesses: the cloud saw the credential and the hidden value.
    let requests = cloud.requests();
    assert!(
        requests.iter().any(|r| r.auth == Some(Auth::Ok)),
        "the credential never reached the cloud"
    );
    for value in [HIDDEN, HIDDEN_2] {
        assert!(
            requests
                .iter()
                .any(|r| r.x_headers.get("x-db-password").map(String::as_str) == Some(value)),
            "the hidden value {value} never reached the cloud"
        );
    }
    let log = serve.log_text();
    // Trace lines, and Kiln's own debug line of every plugin request.
    assert!(
        log.contains("TRACE") && log.contains("http request method=POST"),
        "the {log_format} log holds little: is it at trace?\n{}",
        &log[..log.len().min(2000)]
    );
    seen.add(format!("the kiln serve log ({log_format})"), log);

    let leaks = seen.leaks();
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_any_output_with_text_logs() {
    one_life("text").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_any_output_with_json_logs() {
    one_life("json").await;
}
