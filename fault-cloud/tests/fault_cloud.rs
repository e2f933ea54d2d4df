//! The fault-injecting fake cloud (the `fault_cloud` library and the `fault-cloud` binary),
//! over real HTTP on 127.0.0.1: collection semantics, idempotency keys, each fault as a client
//! sees it, seeded mixes, bearer-token auth and its rotation, latency, the control endpoints,
//! the bind check and the command.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fault_cloud::{
    Auth, Fault, FaultConfig, FaultServer, FaultServerHandle, FaultSpec, Mix, RequestRecord,
    StartError, Stats,
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// JSON bodies without reqwest's `json` feature (kiln does not need it).
trait BodyJson {
    fn body_json(self, v: &Value) -> Self;
}

impl BodyJson for reqwest::RequestBuilder {
    fn body_json(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

trait ReadJson {
    async fn read_json<T: serde::de::DeserializeOwned>(self) -> reqwest::Result<T>;
}

impl ReadJson for reqwest::Response {
    async fn read_json<T: serde::de::DeserializeOwned>(self) -> reqwest::Result<T> {
        let bytes = self.bytes().await?;
        Ok(serde_json::from_slice(&bytes).expect("a JSON body"))
    }
}

async fn server() -> FaultServerHandle {
    FaultServer::start(FaultConfig::default()).await.unwrap()
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(c: &Client, url: &str, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = c.post(url).body_json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn collections_create_read_replace_merge_and_delete() {
    let s = server().await;
    let c = client();
    let items = s.url("items");

    let r = post(
        &c,
        &items,
        None,
        json!({"name": "web", "size": 2, "tags": {"a": 1}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.read_json().await.unwrap();
    assert_eq!(created["id"], json!("obj-1"));
    let one = format!("{items}/obj-1");

    let got: Value = c.get(&one).send().await.unwrap().read_json().await.unwrap();
    assert_eq!(got, created);

    // PATCH merges (null removes), PUT replaces; the id stays the server's.
    let r = c
        .patch(&one)
        .body_json(&json!({"size": 3, "tags": {"b": 2}, "name": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.read_json::<Value>().await.unwrap(),
        json!({"id": "obj-1", "size": 3, "tags": {"a": 1, "b": 2}})
    );
    let r = c
        .put(&one)
        .body_json(&json!({"id": "other", "color": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.read_json::<Value>().await.unwrap(),
        json!({"id": "obj-1", "color": "red"})
    );
    assert_eq!(s.object("obj-1").unwrap()["color"], json!("red"));

    // Another collection: ids are unique across collections, objects are not shared.
    let r = post(&c, &s.url("volumes"), None, json!({"gb": 1})).await;
    assert_eq!(r.read_json::<Value>().await.unwrap()["id"], json!("obj-2"));
    let wrong = format!("{items}/obj-2");
    assert_eq!(
        c.get(&wrong).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.objects()["volumes"]["obj-2"]["gb"], json!(1));

    assert!(s.set_field("obj-1", "color", json!("blue")));
    let got: Value = c.get(&one).send().await.unwrap().read_json().await.unwrap();
    assert_eq!(got["color"], json!("blue"));

    let r = c.delete(&one).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for r in [
        c.get(&one).send().await.unwrap(),
        c.put(&one).body_json(&json!({})).send().await.unwrap(),
        c.patch(&one).body_json(&json!({})).send().await.unwrap(),
        c.delete(&one).send().await.unwrap(),
    ] {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // Bad bodies and methods.
    let r = c.post(&items).body("not json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c.get(&items).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(s.object_count(), 1);
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_object_and_creates_nothing() {
    let s = server().await;
    let c = client();
    let items = s.url("items");
    let first = post(&c, &items, Some("k1"), json!({"n": 1})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.read_json().await.unwrap();
    // The same key with another body still returns what the first create made.
    let again = post(&c, &items, Some("k1"), json!({"n": 2})).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.read_json::<Value>().await.unwrap(), first);
    post(&c, &items, Some("k2"), json!({"n": 3})).await;
    post(&c, &items, None, json!({"n": 4})).await;

    assert_eq!(s.object_count(), 3);
    let keys = s.keys();
    assert_eq!((keys["k1"].requests, keys["k1"].created), (2, 1));
    assert_eq!((keys["k2"].requests, keys["k2"].created), (1, 1));
    let stats = s.stats();
    assert_eq!(stats.objects_created, 3);
    assert_eq!(stats.keys_seen, 2);
    assert!(stats.keys_created_more_than_once.is_empty());
    assert_eq!(stats.statuses, BTreeMap::from([(200, 1), (201, 3)]));

    // A careless API (keys ignored) shows what a repeated key costs.
    let careless = FaultServer::start(FaultConfig {
        honour_idempotency_keys: false,
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    for _ in 0..2 {
        let r = post(&c, &careless.url("items"), Some("k1"), json!({})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(careless.stats().keys_created_more_than_once, vec!["k1"]);
}

#[tokio::test]
async fn scripted_statuses_and_throttles_reach_the_client_in_order() {
    let s = server().await;
    let c = client();
    for f in [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Status(401),
        Fault::Throttle {
            retry_after_secs: 7,
        },
    ] {
        s.inject(f);
    }
    let items = s.url("items");
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = post(&c, &items, Some("k"), json!({})).await;
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        seen.push((r.status().as_u16(), retry_after));
    }
    assert_eq!(
        seen,
        vec![
            (500, None),
            (503, None),
            (401, None),
            (429, Some("7".to_string())),
            (201, None)
        ]
    );
    // Faulted requests created nothing; the record says what struck each one.
    assert_eq!(s.object_count(), 1);
    let faults: Vec<Option<String>> = s
        .requests()
        .iter()
        .map(|r| r.fault.map(|f| f.to_string()))
        .collect();
    assert_eq!(
        faults,
        [Some("500"), Some("503"), Some("401"), Some("429:7"), None]
            .map(|f| f.map(str::to_string))
            .to_vec()
    );
    assert_eq!(s.stats().faults["429:7"], 1);
}

#[tokio::test]
async fn a_scripted_pass_lets_one_request_through_so_the_next_fault_strikes_the_one_after() {
    let s = server().await;
    let c = client();
    s.inject(Fault::Pass);
    s.inject(Fault::Status(503));
    let items = s.url("items");
    let mut seen = Vec::new();
    for key in ["a", "b", "c"] {
        seen.push(
            post(&c, &items, Some(key), json!({}))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(seen, [201, 503, 201]);
    assert_eq!(s.object_count(), 2);
}

/// True when the error was a TCP reset (not a clean close or a timeout).
fn is_reset(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionReset
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[tokio::test]
async fn a_reset_is_a_connection_error_without_a_response() {
    let s = server().await;
    let c = client();
    let items = s.url("items");
    // A first request, so the reset also hits a reused keep-alive connection.
    post(&c, &items, None, json!({})).await;
    s.inject(Fault::Reset);
    let e = c
        .post(&items)
        .body_json(&json!({}))
        .send()
        .await
        .expect_err("a reset gives no response");
    assert!(!e.is_timeout() && e.status().is_none(), "{e:?}");
    assert!(is_reset(&e), "the connection was reset: {e:?}");
    // The next request gets a new connection and works.
    assert_eq!(
        post(&c, &items, None, json!({})).await.status(),
        StatusCode::CREATED
    );
    let reqs = s.requests();
    assert_eq!(reqs[1].fault, Some(FaultSpec::before(Fault::Reset)));
    assert_eq!(reqs[1].status, None);
    assert_eq!(s.object_count(), 2);
}

#[tokio::test]
async fn a_hang_is_ended_by_the_clients_timeout() {
    let s = server().await;
    s.inject(Fault::Hang);
    let c = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let e = c
        .post(s.url("items"))
        .body_json(&json!({}))
        .send()
        .await
        .expect_err("a hang never answers");
    assert!(e.is_timeout(), "{e:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = s.requests();
    assert_eq!((r[0].fault, r[0].status), (Some(Fault::Hang.into()), None));
    // The server is not stuck.
    let r = client()
        .post(s.url("items"))
        .body_json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_fault_after_handling_hides_the_create_and_the_key_recovers_it() {
    let s = server().await;
    let c = client();
    let items = s.url("items");
    s.inject(FaultSpec::after(Fault::Status(503)));
    s.inject(FaultSpec::after(Fault::Reset));
    let r = post(&c, &items, Some("k"), json!({"a": 1})).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.object_count(), 1, "created, though the client saw a 503");
    let e = c
        .post(&items)
        .header("Idempotency-Key", "k")
        .body_json(&json!({"a": 1}))
        .send()
        .await
        .unwrap_err();
    assert!(is_reset(&e), "{e:?}");
    // A client that retries with the same key gets the first object back.
    let r = post(&c, &items, Some("k"), json!({"a": 1})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.read_json::<Value>().await.unwrap()["id"], json!("obj-1"));
    let keys = s.keys();
    assert_eq!((keys["k"].requests, keys["k"].created), (3, 1));
    assert_eq!(s.requests()[0].created.as_deref(), Some("obj-1"));
}

/// What the client saw for each of `n` sequential POSTs: the status, or "reset".
async fn run_posts(s: &FaultServerHandle, n: usize, run: &str) -> Vec<String> {
    let c = client();
    let mut out = Vec::new();
    for i in 0..n {
        let r = c
            .post(s.url("items"))
            .header("Idempotency-Key", format!("{run}-{i}"))
            .body_json(&json!({"i": i}))
            .send()
            .await;
        out.push(match r {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) if is_reset(&e) => "reset".to_string(),
            Err(e) => panic!("unexpected client error: {e:?}"),
        });
    }
    out
}

fn mix(seed: u64) -> Mix {
    Mix {
        rates: [
            (Fault::Status(503).into(), 0.2),
            (
                Fault::Throttle {
                    retry_after_secs: 1,
                }
                .into(),
                0.1,
            ),
            (Fault::Reset.into(), 0.05),
        ]
        .into(),
        only_methods: vec!["POST".into()],
        seed: Some(seed),
        ..Mix::default()
    }
}

#[tokio::test]
async fn a_seeded_mix_gives_the_configured_rates_and_the_same_sequence() {
    let config = FaultConfig {
        mix: mix(42),
        ..FaultConfig::default()
    };
    let s = FaultServer::start(config.clone()).await.unwrap();
    let seen = run_posts(&s, 400, "a").await;
    let count = |k: &str| seen.iter().filter(|s| *s == k).count();
    // Expected 80, 40, 20 and 260: generous bounds (well over 4 standard deviations).
    assert!((45..=115).contains(&count("503")), "503: {}", count("503"));
    assert!((15..=65).contains(&count("429")), "429: {}", count("429"));
    assert!(
        (3..=40).contains(&count("reset")),
        "reset: {}",
        count("reset")
    );
    assert_eq!(
        count("201"),
        400 - count("503") - count("429") - count("reset")
    );
    let stats = s.stats();
    assert_eq!(stats.faults["503"], count("503") as u64);
    assert_eq!(stats.faults["reset"], count("reset") as u64);
    assert_eq!(stats.seed, 42);

    // Methods outside only_methods are never faulted.
    let c = client();
    for _ in 0..50 {
        let r = c.get(format!("{}/obj-1", s.url("items"))).send().await;
        assert!(r.unwrap().status() != StatusCode::SERVICE_UNAVAILABLE);
    }

    // The same seed, the same faults; another seed, others.
    let again = FaultServer::start(config).await.unwrap();
    assert_eq!(run_posts(&again, 400, "a").await, seen);
    // Re-seeding a running server restarts the sequence too.
    // (New keys, so that no create is a replay answered 200.)
    again.set_mix(mix(42)).unwrap();
    assert_eq!(run_posts(&again, 100, "b").await, seen[..100]);
    again.set_mix(mix(43)).unwrap();
    assert_ne!(run_posts(&again, 100, "c").await, seen[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retrying_client_creates_each_object_exactly_once_under_faults() {
    let s = FaultServer::start(FaultConfig {
        mix: Mix {
            rates: [
                (Fault::Status(503).into(), 0.15),
                (FaultSpec::after(Fault::Status(500)), 0.15),
                (FaultSpec::after(Fault::Reset), 0.1),
            ]
            .into(),
            only_methods: vec![],
            seed: Some(7),
            ..Mix::default()
        },
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = s.url("items");
        tasks.spawn(async move {
            let c = client();
            // A correct client: the same key on every attempt, until it gets an answer.
            for _ in 0..100 {
                let r = c
                    .post(&url)
                    .header("Idempotency-Key", format!("create-{i}"))
                    .body_json(&json!({"i": i}))
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status().is_success()
                {
                    return;
                }
            }
            panic!("create-{i} never succeeded");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let stats = s.stats();
    assert_eq!(stats.objects_live, 50);
    assert_eq!(stats.keys_seen, 50);
    assert!(stats.keys_created_more_than_once.is_empty());
    assert!(stats.faults.values().sum::<u64>() > 0, "{stats:?}");
    assert!(s.keys().values().all(|k| k.created == 1));
}

#[tokio::test]
async fn control_endpoints_report_and_steer_and_are_never_faulted() {
    let s = server().await;
    let c = client();
    let base = s.base_url();
    let items = s.url("items");

    let r = c
        .post(format!("{base}/_kiln/faults"))
        .body_json(&json!(["503", "429:2", "after:reset"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.read_json::<Value>().await.unwrap()["pending"], json!(3));
    assert_eq!(post(&c, &items, None, json!({})).await.status(), 503);
    let r = post(&c, &items, None, json!({})).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "2")
    );
    assert!(is_reset(
        &c.post(&items)
            .body_json(&json!({}))
            .send()
            .await
            .unwrap_err()
    ));

    // Every request faulted, except the control endpoints.
    let r = c
        .put(format!("{base}/_kiln/rates"))
        .body_json(&json!({"rates": {"500": 1.0}, "only_methods": ["delete"], "seed": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mix: Mix = r.read_json().await.unwrap();
    assert_eq!(mix.only_methods, vec!["DELETE"]);
    assert_eq!(post(&c, &items, None, json!({})).await.status(), 201);
    let r = c.delete(format!("{items}/obj-1")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let r = c
        .put(format!("{base}/_kiln/rates"))
        .body_json(&json!({"rates": {"500": 1.0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let requests: Vec<RequestRecord> = c
        .get(format!("{base}/_kiln/requests"))
        .send()
        .await
        .unwrap()
        .read_json()
        .await
        .unwrap();
    assert_eq!(requests.len(), 5, "control requests are not recorded");
    assert_eq!(requests[2].fault.unwrap().to_string(), "after:reset");
    assert_eq!(requests[2].created.as_deref(), Some("obj-1"));
    assert_eq!(requests[3].status, Some(201));
    assert!(
        requests
            .iter()
            .all(|r| r.path == "/items" || r.path == "/items/obj-1")
    );

    let objects: Value = c
        .get(format!("{base}/_kiln/objects"))
        .send()
        .await
        .unwrap()
        .read_json()
        .await
        .unwrap();
    assert_eq!(objects["items"]["obj-2"]["id"], json!("obj-2"));

    let stats: Stats = c
        .get(format!("{base}/_kiln/stats"))
        .send()
        .await
        .unwrap()
        .read_json()
        .await
        .unwrap();
    assert_eq!(stats, s.stats());
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.objects_created, 2);
    assert_eq!(stats.faults.get("after:reset"), Some(&1));
    assert_eq!(stats.statuses.get(&500), Some(&1));

    // Bad input is a 400 naming the problem, and changes nothing.
    let r = c
        .post(format!("{base}/_kiln/faults"))
        .body_json(&json!(["boom"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("boom"));
    let r = c
        .put(format!("{base}/_kiln/rates"))
        .body_json(&json!({"rates": {"503": 0.7, "500": 0.7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("add up to"));
    let r = c.get(format!("{base}/_kiln/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.stats().requests, 5);
}

async fn with_token(token: &str) -> FaultServerHandle {
    FaultServer::start(FaultConfig {
        token: Some(token.to_string()),
        ..FaultConfig::default()
    })
    .await
    .unwrap()
}

/// A POST of `{}` to `url` with `Authorization: Bearer <token>` when a token is given.
async fn post_as(c: &Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = c.post(url).body_json(&json!({}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_token_admits_only_requests_that_carry_it() {
    let s = with_token("t1").await;
    let c = client();
    let items = s.url("items");

    for (sent, auth) in [
        (None, "no header"),
        (Some("t2"), "another token"),
        (Some("T1"), "tokens are case-sensitive"),
    ] {
        let r = post_as(&c, &items, sent).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{auth}");
        assert_eq!(
            r.read_json::<Value>().await.unwrap(),
            json!({"error": "unauthorized: missing or expired token"})
        );
    }
    let r = c
        .post(&items)
        .basic_auth("t1", None::<&str>)
        .body_json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "only the Bearer scheme"
    );
    assert_eq!(s.object_count(), 0);

    let r = post_as(&c, &items, Some("t1")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Every request type needs it, not only creates.
    let one = format!("{items}/obj-1");
    assert_eq!(c.get(&one).send().await.unwrap().status(), 401);
    let r = c.get(&one).bearer_auth("t1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Recorded like any request, with how the token fared.
    let auths: Vec<Option<Auth>> = s.requests().iter().map(|r| r.auth).collect();
    let (missing, wrong, ok) = (Auth::Missing, Auth::Wrong, Auth::Ok);
    assert_eq!(
        auths,
        [missing, wrong, wrong, wrong, ok, missing, ok].map(Some)
    );
    let stats = s.stats();
    assert_eq!((stats.requests, stats.unauthorized), (7, 5));
    assert_eq!(
        stats.statuses,
        BTreeMap::from([(200, 1), (201, 1), (401, 5)])
    );
    assert!(stats.to_string().contains("unauthorized: 5"), "{stats}");

    // The control endpoints ask for no token.
    let r = c
        .get(format!("{}/_kiln/requests", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let records: Vec<RequestRecord> = r.read_json().await.unwrap();
    assert_eq!(records[0].auth, Some(Auth::Missing));
    assert_eq!(records[0].status, Some(401));

    // Without a token, nothing is checked and nothing recorded about auth.
    let open = server().await;
    assert_eq!(
        post_as(&c, &open.url("items"), Some("x")).await.status(),
        201
    );
    assert_eq!(open.requests()[0].auth, None);
    assert_eq!(open.stats().unauthorized, 0);
}

#[tokio::test]
async fn a_refused_request_consumes_no_fault_and_creates_nothing() {
    let s = with_token("t1").await;
    let c = client();
    let items = s.url("items");
    // A fault after handling would create the object: a 401 must come before it.
    s.inject(FaultSpec::after(Fault::Status(503)));
    let r = c
        .post(&items)
        .header("Idempotency-Key", "k")
        .bearer_auth("stale")
        .body_json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.object_count(), 0);
    assert_eq!(s.stats().scripted_pending, 1, "the fault still waits");
    let refused = &s.requests()[0];
    assert_eq!((refused.fault, refused.created.as_deref()), (None, None));

    // The first request that gets in meets the fault.
    let r = c
        .post(&items)
        .header("Idempotency-Key", "k")
        .bearer_auth("t1")
        .body_json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.object_count(), 1);
    let stats = s.stats();
    assert_eq!(stats.scripted_pending, 0);
    assert_eq!(stats.faults.get("after:503"), Some(&1));
    assert_eq!((s.keys()["k"].requests, s.keys()["k"].created), (2, 1));
}

#[tokio::test]
async fn set_token_rotates_and_the_old_token_is_refused_at_once() {
    let s = with_token("t1").await;
    let c = client();
    let items = s.url("items");
    assert_eq!(s.token().as_deref(), Some("t1"));
    assert_eq!(post_as(&c, &items, Some("t1")).await.status(), 201);

    s.set_token(Some("t2".into()));
    assert_eq!(s.token().as_deref(), Some("t2"));
    // The same client and connection: nothing but the token changed.
    assert_eq!(post_as(&c, &items, Some("t1")).await.status(), 401);
    assert_eq!(post_as(&c, &items, Some("t2")).await.status(), 201);

    // No token: everything gets in again, with or without a header.
    s.set_token(None);
    assert_eq!(s.token(), None);
    assert_eq!(post_as(&c, &items, None).await.status(), 201);
    assert_eq!(post_as(&c, &items, Some("t1")).await.status(), 201);
    // And a server that started open can start requiring one.
    s.set_token(Some("t3".into()));
    assert_eq!(post_as(&c, &items, None).await.status(), 401);
    assert_eq!(s.object_count(), 4);
    assert_eq!(s.stats().unauthorized, 2);
}

#[tokio::test]
async fn a_request_waiting_out_the_latency_meets_the_rotated_token() {
    let s = FaultServer::start(FaultConfig {
        token: Some("t1".into()),
        mix: Mix {
            latency_ms: 1000,
            ..Mix::default()
        },
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let url = s.url("items");
    let pending = tokio::spawn(async move { post_as(&client(), &url, Some("t1")).await.status() });
    // Well within the second the request waits (or before it even arrives: the same answer).
    s.set_token(Some("t2".into()));
    assert_eq!(pending.await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.object_count(), 0);
}

#[tokio::test]
async fn put_token_rotates_and_never_reveals_the_token() {
    let s = with_token("t1").await;
    let c = client();
    let items = s.url("items");
    let token_url = format!("{}/_kiln/token", s.base_url());

    // The control endpoint itself needs no token (a test rotates as the cloud's operator).
    let r = c
        .put(&token_url)
        .body_json(&json!({"token": "t2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"required": true})
    );
    assert_eq!(s.token().as_deref(), Some("t2"));
    assert_eq!(post_as(&c, &items, Some("t1")).await.status(), 401);
    assert_eq!(post_as(&c, &items, Some("t2")).await.status(), 201);

    // There is no GET: the token is write-only.
    let r = c.get(&token_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(!r.text().await.unwrap().contains("t2"));

    // Bad bodies are a 400 and change nothing; in particular a missing field is not a null.
    for bad in [
        json!({}),
        json!({"token": ""}),
        json!({"token": 5}),
        json!({"token": "t9", "other": 1}),
        json!(["t9"]),
    ] {
        let r = c.put(&token_url).body_json(&bad).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.text().await.unwrap().contains("error"), "{bad}");
    }
    let r = c.put(&token_url).body("not json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.token().as_deref(), Some("t2"));

    let r = c
        .put(&token_url)
        .body_json(&json!({"token": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.read_json::<Value>().await.unwrap(),
        json!({"required": false})
    );
    assert_eq!(s.token(), None);
    assert_eq!(post_as(&c, &items, None).await.status(), 201);
    // Control requests are not recorded.
    assert_eq!(s.stats().requests, 3);
}

#[tokio::test]
async fn latency_delays_each_cloud_request() {
    let s = FaultServer::start(FaultConfig {
        mix: Mix {
            latency_ms: 200,
            ..Mix::default()
        },
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let c = client();
    let items = s.url("items");
    // Only a lower bound: a loaded machine may add any amount on top.
    let started = Instant::now();
    assert_eq!(post_as(&c, &items, None).await.status(), 201);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // Faulted requests wait too: the fault is the cloud's answer, the latency the way there.
    s.inject(Fault::Status(503));
    let started = Instant::now();
    assert_eq!(post_as(&c, &items, None).await.status(), 503);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.mix().latency_ms, 200);

    // The mix carries it, so PUT /_kiln/rates sets it (and a mix without it means none)...
    let rates = format!("{}/_kiln/rates", s.base_url());
    let r = c
        .put(&rates)
        .body_json(&json!({"rates": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.read_json::<Mix>().await.unwrap().latency_ms, 0);
    let r = c
        .put(&rates)
        .body_json(&json!({"latency_ms": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.read_json::<Mix>().await.unwrap().latency_ms, 300);
    let started = Instant::now();
    assert_eq!(post_as(&c, &items, None).await.status(), 201);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let got: Mix = c
        .get(&rates)
        .send()
        .await
        .unwrap()
        .read_json()
        .await
        .unwrap();
    assert_eq!(got.latency_ms, 300);

    // ... and so does set_mix.
    s.set_mix(Mix {
        latency_ms: 250,
        ..Mix::default()
    })
    .unwrap();
    assert_eq!(s.mix().latency_ms, 250);
    let started = Instant::now();
    assert_eq!(post_as(&c, &items, None).await.status(), 201);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.object_count(), 3);
}

#[tokio::test]
async fn it_listens_on_127_0_0_1_only() {
    for addr in ["0.0.0.0:0", "[::1]:0", "192.0.2.1:8080"] {
        let config = FaultConfig {
            listen: addr.parse().unwrap(),
            ..FaultConfig::default()
        };
        match FaultServer::start(config).await {
            Err(e @ StartError::NotLocal(_)) => {
                assert!(e.to_string().contains("127.0.0.1"), "{e}")
            }
            Err(e) => panic!("{addr}: {e}"),
            Ok(_) => panic!("{addr} was accepted"),
        }
    }
    let bad_mix = FaultConfig {
        mix: Mix {
            rates: [(Fault::Status(503).into(), 1.5)].into(),
            ..Mix::default()
        },
        ..FaultConfig::default()
    };
    assert!(matches!(
        FaultServer::start(bad_mix).await,
        Err(StartError::BadMix(_))
    ));
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let s = server().await;
    let url = s.url("items");
    assert_eq!(post(&client(), &url, None, json!({})).await.status(), 201);
    s.shutdown().await;
    // A fresh client (no pooled connection): nothing listens any more.
    let e = client()
        .post(&url)
        .body_json(&json!({}))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
}

/// Lines of a child's stdout, read on a thread so that the test can wait with a deadline.
fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line matching `pred`, within a generous deadline.
/// Starts `fault-cloud ARGS` in `dir` and waits for its "listening on URL" line:
/// (the child, its stdout lines, the lines seen so far, the base URL).
fn start_cli_server(
    dir: &std::path::Path,
    args: &[&str],
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    Vec<String>,
    String,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fault-cloud"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let line = wait_for_line(&rx, &mut seen, "listening on ");
    let base = line.rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, rx, seen, base)
}

fn wait_for_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, pred: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(pred) {
                    return line;
                }
            }
            Err(e) => panic!("no line with {pred:?} ({e}); output so far: {seen:#?}"),
        }
    }
}

#[tokio::test]
async fn the_command_serves_until_sigterm_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx, mut seen, base) = start_cli_server(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--rate",
            "503=0.5",
            "--seed",
            "7",
            "--only-methods",
            "POST",
            "--script",
            "429:3",
        ],
    );
    let mix_line = wait_for_line(&rx, &mut seen, "seed");
    assert!(
        mix_line.contains("503=0.5") && mix_line.contains("seed 7"),
        "{mix_line}"
    );

    let c = client();
    let first = post(&c, &format!("{base}/items"), Some("a"), json!({})).await;
    assert_eq!(first.status(), 429, "the scripted fault comes first");
    let mut statuses = Vec::new();
    for i in 0..20 {
        let key = format!("k{i}");
        statuses.push(
            post(&c, &format!("{base}/items"), Some(&key), json!({}))
                .await
                .status(),
        );
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::CREATED), "{statuses:?}");
    let stats: Stats = c
        .get(format!("{base}/_kiln/stats"))
        .send()
        .await
        .unwrap()
        .read_json()
        .await
        .unwrap();
    assert_eq!(stats.requests, 21);

    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    wait_for_line(&rx, &mut seen, "fault server stopped");
    wait_for_line(&rx, &mut seen, "requests: 21");
    let keys = wait_for_line(&rx, &mut seen, "idempotency keys:");
    assert!(
        keys.contains("21 seen, 0 created more than one object"),
        "{keys}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_command_takes_a_token_and_a_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx, mut seen, base) = start_cli_server(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--token",
            "s3cret",
            "--latency-ms",
            "150",
        ],
    );
    let mix_line = wait_for_line(&rx, &mut seen, "seed");
    assert!(
        mix_line.contains("latency 150 ms") && mix_line.contains("bearer token required"),
        "{mix_line}"
    );
    assert!(!seen.iter().any(|l| l.contains("s3cret")), "{seen:#?}");

    let c = client();
    let items = format!("{base}/items");
    assert_eq!(post_as(&c, &items, None).await.status(), 401);
    let started = Instant::now();
    assert_eq!(post_as(&c, &items, Some("s3cret")).await.status(), 201);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let r = c
        .put(format!("{base}/_kiln/token"))
        .body_json(&json!({"token": "next"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(post_as(&c, &items, Some("s3cret")).await.status(), 401);

    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    wait_for_line(&rx, &mut seen, "fault server stopped");
    wait_for_line(&rx, &mut seen, "requests: 3");
    wait_for_line(&rx, &mut seen, "unauthorized: 2");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_command_refuses_other_addresses_and_bad_rates() {
    for (args, needle) in [
        (vec!["--listen", "0.0.0.0:0"], "127.0.0.1 only"),
        (vec!["--rate", "503=2"], "between 0 and 1"),
        (vec!["--rate", "teapot=0.1"], "unknown fault"),
        (vec!["--token", ""], "the token is empty"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fault-cloud"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
