//! Each bundled plugin's behaviour, through the real runtime: none, random-string,
//! test-resource, http-resource (against a fake cloud on 127.0.0.1) and exponential-backoff.

mod support;

use kiln::artifacts;
use kiln::config::Limits;
use kiln::runtime::{
    CallError, CheckReport, Current, Decision, ErrorInfo, Failure, Operation, Outcome, Plugin,
    PluginError, ThrottledInfo, UpdateOutcome,
};
use serde_json::{Value, json};
use support::cloud::{FakeCloud, Inject};
use support::*;

fn done(r: Result<Outcome, CallError>) -> kiln::runtime::Done {
    match r {
        Ok(Outcome::Done(d)) => d,
        other => panic!("expected done, got {other:?}"),
    }
}

fn plugin_error(r: Result<impl std::fmt::Debug, CallError>) -> PluginError {
    match r {
        Err(CallError::Plugin(e, _)) => e,
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

/// Properties with the schema's defaults filled in, as the engine passes them.
fn props(plugin: &Plugin, type_name: &str, given: Value) -> Value {
    let schema = plugin
        .info()
        .unwrap()
        .types
        .iter()
        .find(|t| t.type_name == type_name)
        .unwrap();
    let mut map = given.as_object().cloned().unwrap_or_default();
    for p in &schema.properties {
        if let Some(d) = &p.default {
            map.entry(p.name.clone())
                .or_insert_with(|| serde_json::from_str(d).unwrap());
        }
    }
    Value::Object(map)
}

fn current(d: &kiln::runtime::Done) -> Current {
    Current {
        physical_id: d.physical_id.clone(),
        state: d.state.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_accepts_anything_and_does_nothing() {
    let p = load(&runtime(), "none", artifacts::NONE).await;
    let t = &p.info().unwrap().types[0];
    assert_eq!(t.type_name, "OS::Heat::None");
    assert!(t.open_properties);
    let c = ctx("OS::Heat::None", "nothing", Operation::Create);
    let d = done(
        p.create(&c, &json!({"anything": [1, 2], "goes": true}))
            .await,
    );
    assert!(!d.physical_id.is_empty());
    let cur = current(&d);
    let u = p
        .update(
            &ctx("OS::Heat::None", "nothing", Operation::Update),
            &cur,
            &json!({}),
            &json!({"x": 1}),
        )
        .await;
    assert!(matches!(u.unwrap(), UpdateOutcome::Done(_)));
    let report = p
        .check(
            &ctx("OS::Heat::None", "nothing", Operation::Check),
            &cur,
            &json!({}),
        )
        .await
        .unwrap();
    assert!(report.exists && report.drifted.is_empty());
    done(
        p.delete(
            &ctx("OS::Heat::None", "nothing", Operation::Delete),
            &cur,
            &json!({}),
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_string_honours_length_sequence_and_classes() {
    let p = load(&runtime(), "random-string", artifacts::RANDOM_STRING).await;
    let ty = "OS::Heat::RandomString";
    let schema = &p.info().unwrap().types[0];
    assert_eq!(schema.type_name, ty);
    assert!(
        schema.properties.iter().all(|p| !p.update_allowed),
        "Heat replaces on any change"
    );
    assert!(schema.attributes.iter().any(|a| a.name == "value"));

    let d = done(
        p.create(&ctx(ty, "pw", Operation::Create), &props(&p, ty, json!({})))
            .await,
    );
    let value = d.attributes["value"].as_str().unwrap().to_string();
    assert_eq!(value.len(), 32);
    assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));

    let d = done(
        p.create(
            &ctx(ty, "pin", Operation::Create),
            &props(&p, ty, json!({"length": 12, "sequence": "digits"})),
        )
        .await,
    );
    let v = d.attributes["value"].as_str().unwrap();
    assert_eq!(v.len(), 12);
    assert!(v.chars().all(|c| c.is_ascii_digit()), "{v}");

    let classes = json!({"length": 20, "character_classes": [{"class": "uppercase", "min": 5}, {"class": "digits", "min": 5}]});
    let d = done(
        p.create(
            &ctx(ty, "mixed", Operation::Create),
            &props(&p, ty, classes),
        )
        .await,
    );
    let v = d.attributes["value"].as_str().unwrap();
    assert_eq!(v.len(), 20);
    assert!(
        v.chars().filter(|c| c.is_ascii_uppercase()).count() >= 5,
        "{v}"
    );
    assert!(v.chars().filter(|c| c.is_ascii_digit()).count() >= 5, "{v}");

    // Two strings differ: the randomness is real.
    let a = done(
        p.create(&ctx(ty, "a", Operation::Create), &props(&p, ty, json!({})))
            .await,
    );
    assert_ne!(a.attributes["value"], json!(value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_resource_fails_waits_by_polling_and_asks_for_replacement() {
    let p = load(&runtime(), "test-resource", artifacts::TEST_RESOURCE).await;
    let ty = "OS::Heat::TestResource";

    let d = done(
        p.create(
            &ctx(ty, "t", Operation::Create),
            &props(&p, ty, json!({"value": "hello"})),
        )
        .await,
    );
    assert_eq!(d.attributes["output"], json!("hello"));

    let e = plugin_error(
        p.create(
            &ctx(ty, "t", Operation::Create),
            &props(&p, ty, json!({"fail": true})),
        )
        .await,
    );
    assert_eq!(e.kind(), "fatal");

    // A create that takes a second returns pending at once and finishes by polling.
    let waiting = props(
        &p,
        ty,
        json!({"value": "slow", "action_wait_secs": {"create": 1}}),
    );
    let c = ctx(ty, "slow", Operation::Create);
    let Outcome::Pending(mut pending) = p.create(&c, &waiting).await.unwrap() else {
        panic!("a create with a wait is pending")
    };
    assert!(pending.poll_after_ms > 0 && pending.poll_after_ms <= 1000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let finished = loop {
        assert!(std::time::Instant::now() < deadline, "poll never finished");
        tokio::time::sleep(std::time::Duration::from_millis(pending.poll_after_ms)).await;
        match p.poll(&c, &waiting, &pending.state).await.unwrap() {
            Outcome::Done(d) => break d,
            Outcome::Pending(next) => pending = next,
        }
    };
    assert_eq!(finished.attributes["output"], json!("slow"));

    let cur = current(&d);
    let old = props(&p, ty, json!({"value": "hello"}));
    let u = p
        .update(
            &ctx(ty, "t", Operation::Update),
            &cur,
            &old,
            &props(&p, ty, json!({"value": "bye"})),
        )
        .await
        .unwrap();
    let UpdateOutcome::Done(u) = u else {
        panic!("{u:?}")
    };
    assert_eq!(u.attributes["output"], json!("bye"));
    let r = p
        .update(
            &ctx(ty, "t", Operation::Update),
            &cur,
            &old,
            &props(&p, ty, json!({"update_replace": true})),
        )
        .await
        .unwrap();
    assert!(matches!(r, UpdateOutcome::Replace { .. }), "{r:?}");

    // fail_attempts: transient failures until the attempt number passes it.
    let flaky = props(&p, ty, json!({"fail_attempts": 2}));
    let mut c = ctx(ty, "flaky", Operation::Create);
    assert_eq!(plugin_error(p.create(&c, &flaky).await).kind(), "transient");
    c.attempt = 3;
    done(p.create(&c, &flaky).await);
}

async fn http_plugin(cloud: &FakeCloud) -> Plugin {
    let limits = Limits::default();
    load_with(
        &runtime(),
        "http-resource",
        artifacts::HTTP_RESOURCE,
        limits,
        &[&cloud.rule()],
    )
    .await
}

const HTTP: &str = "Kiln::HTTP::Resource";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_resource_lifecycle_with_idempotency_keys() {
    let cloud = FakeCloud::start().await;
    let p = http_plugin(&cloud).await;
    let given = props(
        &p,
        HTTP,
        json!({"url": cloud.url(), "body": {"name": "web", "size": 2}}),
    );

    let c = ctx(HTTP, "web", Operation::Create);
    let d = done(p.create(&c, &given).await);
    assert_eq!(d.physical_id, format!("{}/obj-1", cloud.url()));
    assert_eq!(d.attributes["id"], json!("obj-1"));
    assert_eq!(cloud.object("obj-1").unwrap()["name"], json!("web"));
    let post = &cloud.requests()[0];
    assert_eq!(post.method, "POST");
    assert_eq!(
        post.idempotency_key.as_deref(),
        Some(c.idempotency_key.as_str())
    );

    // The same call again (a retry after a crash) makes no second object.
    let again = done(p.create(&c, &given).await);
    assert_eq!(again.physical_id, d.physical_id);
    assert_eq!(cloud.objects(), 1);

    let cur = current(&d);
    let check = |p: &Plugin, props: Value| {
        let p = p.clone();
        let cur = cur.clone();
        async move {
            p.check(&ctx(HTTP, "web", Operation::Check), &cur, &props)
                .await
                .unwrap()
        }
    };
    let report: CheckReport = check(&p, given.clone()).await;
    assert!(report.exists && report.drifted.is_empty(), "{report:?}");
    cloud.set_field("obj-1", "size", json!(3));
    let report = check(&p, given.clone()).await;
    assert_eq!(report.drifted.len(), 1, "{report:?}");
    assert_eq!(
        report.drifted[0].property, "body.size",
        "a path into the property"
    );
    assert_eq!(
        (
            report.drifted[0].expected.clone(),
            report.drifted[0].actual.clone()
        ),
        (json!(2), json!(3))
    );

    let new = props(
        &p,
        HTTP,
        json!({"url": cloud.url(), "body": {"name": "web", "size": 4}}),
    );
    let u = p
        .update(&ctx(HTTP, "web", Operation::Update), &cur, &given, &new)
        .await
        .unwrap();
    assert!(matches!(u, UpdateOutcome::Done(_)), "{u:?}");
    assert_eq!(cloud.object("obj-1").unwrap()["size"], json!(4));
    assert_eq!(cloud.requests().last().unwrap().method, "PUT");

    done(
        p.delete(&ctx(HTTP, "web", Operation::Delete), &cur, &new)
            .await,
    );
    assert_eq!(cloud.objects(), 0);
    // Deleting what is gone succeeds; checking it says it is missing.
    done(
        p.delete(&ctx(HTTP, "web", Operation::Delete), &cur, &new)
            .await,
    );
    assert!(!check(&p, new).await.exists);
    assert!(
        cloud
            .requests()
            .iter()
            .all(|r| r.method == "GET" || r.idempotency_key.is_some())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_resource_maps_statuses_to_error_kinds() {
    let cloud = FakeCloud::start().await;
    let p = http_plugin(&cloud).await;
    let given = props(&p, HTTP, json!({"url": cloud.url(), "body": {"a": 1}}));
    let c = ctx(HTTP, "x", Operation::Create);
    for (inject, kind, status) in [
        (Inject::Status(503), "transient", Some(503)),
        (Inject::Status(500), "transient", Some(500)),
        (Inject::Status(401), "unauthorized", Some(401)),
        (Inject::Status(409), "conflict", Some(409)),
        (Inject::Status(404), "not-found", Some(404)),
        (Inject::Status(400), "invalid", Some(400)),
        (Inject::Status(422), "invalid", Some(422)),
    ] {
        cloud.inject(inject);
        let e = plugin_error(p.create(&c, &given).await);
        assert_eq!((e.kind(), e.status()), (kind, status), "{e:?}");
    }
    cloud.inject(Inject::Throttle {
        retry_after_secs: 7,
    });
    match plugin_error(p.create(&c, &given).await) {
        PluginError::Throttled(t) => {
            assert_eq!((t.status, t.retry_after_ms), (Some(429), Some(7000)))
        }
        other => panic!("{other:?}"),
    }
    // A hanging server: the request's timeout makes it transient, not a hung call.
    cloud.inject(Inject::Hang);
    let hanging = props(
        &p,
        HTTP,
        json!({"url": cloud.url(), "body": {}, "timeout_ms": 300}),
    );
    assert_eq!(
        plugin_error(p.create(&c, &hanging).await).kind(),
        "transient"
    );
    // Nothing listening: connection refused is transient.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p2 = load_with(
        &runtime(),
        "http2",
        artifacts::HTTP_RESOURCE,
        Limits::default(),
        &["http://127.0.0.1:*"],
    )
    .await;
    let refused = props(&p2, HTTP, json!({"url": format!("http://{closed}/items")}));
    assert_eq!(
        plugin_error(p2.create(&c, &refused).await).kind(),
        "transient"
    );
    // After all that, the plugin works.
    done(p.create(&c, &given).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_resource_outside_its_allow_list_fails_with_the_rule() {
    let cloud = FakeCloud::start().await;
    let p = load(&runtime(), "http-resource", artifacts::HTTP_RESOURCE).await;
    let given = props(&p, HTTP, json!({"url": cloud.url()}));
    let e = plugin_error(p.create(&ctx(HTTP, "x", Operation::Create), &given).await);
    assert_eq!(e.kind(), "fatal");
    assert!(
        e.message().contains(&cloud.url()) && e.message().contains("allow_http"),
        "{e:?}"
    );
    assert!(cloud.requests().is_empty());
}

fn failure(error: PluginError, attempt: u32, random: u64) -> Failure {
    Failure {
        error,
        attempt,
        elapsed_ms: 0,
        previous_delay_ms: None,
        operation: Operation::Create,
        resource_type: HTTP.into(),
        random,
    }
}

fn info(m: &str) -> ErrorInfo {
    ErrorInfo {
        message: m.into(),
        status: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_decides_by_kind_attempt_and_retry_after() {
    let p = load(
        &runtime(),
        "exponential-backoff",
        artifacts::EXPONENTIAL_BACKOFF,
    )
    .await;
    let params = json!({"initial_interval_ms": 100, "multiplier": 2.0, "max_interval_ms": 1000, "max_attempts": 4, "jitter": "none"});
    assert_eq!(p.validate_params(&params).await.unwrap(), Ok(()));
    let bad = p
        .validate_params(&json!({"initial_interval": 5}))
        .await
        .unwrap()
        .unwrap_err();
    assert!(bad.contains("initial_interval"), "{bad}");
    let bad = p
        .validate_params(&json!({"jitter": "sometimes"}))
        .await
        .unwrap()
        .unwrap_err();
    assert!(bad.contains("jitter"), "{bad}");

    let decide = |f: Failure, params: Value| {
        let p = p.clone();
        async move { p.decide(&params, &f).await.unwrap() }
    };
    let t = || PluginError::Transient(info("503"));
    assert_eq!(
        decide(failure(t(), 1, 0), params.clone()).await,
        Decision::RetryAfter(100)
    );
    assert_eq!(
        decide(failure(t(), 2, 0), params.clone()).await,
        Decision::RetryAfter(200)
    );
    assert_eq!(
        decide(failure(t(), 3, 0), params.clone()).await,
        Decision::RetryAfter(400)
    );
    assert!(
        matches!(decide(failure(t(), 4, 0), params.clone()).await, Decision::GiveUp(r) if r.contains("max_attempts"))
    );
    let capped = json!({"initial_interval_ms": 100, "multiplier": 10.0, "max_interval_ms": 1000, "max_attempts": 10, "jitter": "none"});
    assert_eq!(
        decide(failure(t(), 5, 0), capped).await,
        Decision::RetryAfter(1000)
    );

    for never in [
        PluginError::Invalid(info("bad")),
        PluginError::Fatal(info("boom")),
    ] {
        assert!(matches!(
            decide(failure(never, 1, 0), params.clone()).await,
            Decision::GiveUp(_)
        ));
    }
    let throttled = PluginError::Throttled(ThrottledInfo {
        message: "slow down".into(),
        status: Some(429),
        retry_after_ms: Some(700),
    });
    assert_eq!(
        decide(failure(throttled, 1, 0), params.clone()).await,
        Decision::RetryAfter(700)
    );

    // Full jitter stays within [0, base] and follows the host's random number.
    let full = json!({"initial_interval_ms": 1000, "jitter": "full", "max_attempts": 5});
    for random in [0u64, 1, 999, 1000, 123_456_789] {
        let Decision::RetryAfter(ms) = decide(failure(t(), 1, random), full.clone()).await else {
            panic!()
        };
        assert!(ms <= 1000, "{ms}");
        assert_eq!(
            decide(failure(t(), 1, random), full.clone()).await,
            Decision::RetryAfter(ms),
            "reproducible"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_interval_and_never_policies() {
    let rt = runtime();
    let fixed = load(&rt, "fixed-interval", artifacts::FIXED_INTERVAL).await;
    let params = json!({"interval_ms": 300, "max_attempts": 3});
    assert_eq!(fixed.validate_params(&params).await.unwrap(), Ok(()));
    let bad = fixed
        .validate_params(&json!({"interval": 3}))
        .await
        .unwrap()
        .unwrap_err();
    assert!(bad.contains("interval"), "{bad}");
    let t = || PluginError::Transient(info("503"));
    assert_eq!(
        fixed.decide(&params, &failure(t(), 1, 7)).await.unwrap(),
        Decision::RetryAfter(300)
    );
    assert_eq!(
        fixed.decide(&params, &failure(t(), 2, 9)).await.unwrap(),
        Decision::RetryAfter(300)
    );
    assert!(matches!(
        fixed.decide(&params, &failure(t(), 3, 0)).await.unwrap(),
        Decision::GiveUp(_)
    ));
    let throttled = PluginError::Throttled(ThrottledInfo {
        message: "slow down".into(),
        status: Some(429),
        retry_after_ms: Some(900),
    });
    assert_eq!(
        fixed
            .decide(&params, &failure(throttled, 1, 0))
            .await
            .unwrap(),
        Decision::RetryAfter(900)
    );
    let invalid = PluginError::Invalid(info("bad"));
    assert!(matches!(
        fixed
            .decide(&params, &failure(invalid, 1, 0))
            .await
            .unwrap(),
        Decision::GiveUp(_)
    ));

    let never = load(&rt, "never", artifacts::NEVER).await;
    assert_eq!(never.validate_params(&json!({})).await.unwrap(), Ok(()));
    assert!(
        never
            .validate_params(&json!({"x": 1}))
            .await
            .unwrap()
            .is_err()
    );
    assert!(matches!(
        never.decide(&json!({}), &failure(t(), 1, 0)).await.unwrap(),
        Decision::GiveUp(_)
    ));
}
