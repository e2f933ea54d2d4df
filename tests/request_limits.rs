//! Request limits that hold under load (issue 19): hostile templates (nested YAML aliases, lists
//! nested thousands deep, files past `templates.max_bytes`, stacks past
//! `templates.max_resources`) are refused with a named limit while a real `kiln serve` keeps
//! answering `/healthz` and its memory stays bounded; per-token rate limits answer 429 with
//! `Retry-After`, each token on its own budget, health checks never limited.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Client, Reply};
use support::procs::{ServeProc, wait_for};

/// "Billion laughs": each line ten aliases of the one before, 10^depth nodes from a few lines.
fn alias_bomb(depth: usize) -> String {
    let mut text = String::from(
        "heat_template_version: 2021-04-16\nparameters:\n  p:\n    type: json\n    default:\n      \
         a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..depth {
        let p = i - 1;
        text += &format!(
            "      a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        );
    }
    text + "resources: {}\n"
}

fn deep_nesting(depth: usize) -> String {
    format!(
        "heat_template_version: 2021-04-16\nresources: {{}}\ndescription: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

fn many_resources(n: usize) -> String {
    let mut t = String::from("heat_template_version: 2021-04-16\nresources:\n");
    for i in 0..n {
        t += &format!("  r{i}: {{type: OS::Heat::None}}\n");
    }
    t
}

async fn validate(client: &Client, text: &str) -> Reply {
    client
        .post(
            "/v1/validate",
            json!({"template": {"name": "hostile.yaml", "text": text}}),
        )
        .await
}

/// The peak resident memory of a process so far, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Far above an idle `kiln serve` (about 60 MiB here) and far below what unbounded hostile
/// templates took (50 alias bombs at once: gigabytes).
const RSS_BOUND_MIB: f64 = 400.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hostile_requests_leave_the_server_answering_and_its_memory_bounded() {
    let mut serve = ServeProc::start("[templates]\nmax_resources = 5000\n").await;
    let client = Client::new(&format!("http://{}", serve.addr), None);
    client.get("/healthz").await.expect(200);
    let idle = peak_rss_mib(serve.pid());

    // Each kind alone first: refused, naming its limit.
    for (text, limit) in [
        (alias_bomb(9), "templates.max_alias_nodes"),
        (deep_nesting(10_000), "templates.max_depth"),
        (many_resources(5001), "templates.max_resources"),
        ("#".repeat(5 << 20), "templates.max_bytes"),
    ] {
        let reply = validate(&client, &text).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_template"),
            "{}",
            reply.text
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(limit)),
            "the error names {limit}: {}",
            reply.text
        );
    }

    // Fifty at once, while a health check polls: every one refused, every health check
    // answered.
    let bomb = alias_bomb(9);
    let deep = deep_nesting(100_000);
    let hostile: Vec<_> = (0..50)
        .map(|i| {
            let client = Client::new(client.base(), None);
            let text = if i % 2 == 0 {
                bomb.clone()
            } else {
                deep.clone()
            };
            tokio::spawn(async move { validate(&client, &text).await })
        })
        .collect();
    let health = {
        let client = Client::new(client.base(), None);
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..20 {
                let reply = tokio::time::timeout(Duration::from_secs(60), client.get("/healthz"))
                    .await
                    .expect("/healthz answers while hostile templates are validated");
                assert_eq!(reply.status, 200, "{}", reply.text);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        })
    };
    for h in hostile {
        let reply = h.await.unwrap();
        assert_eq!(reply.status, 400, "{}", reply.text);
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("templates.max_"), "{message}");
    }
    assert_eq!(health.await.unwrap(), 20);
    let peak = peak_rss_mib(serve.pid());
    eprintln!("kiln serve: peak RSS {peak:.0} MiB after 50 hostile templates (idle {idle:.0} MiB)");
    assert!(
        peak < RSS_BOUND_MIB,
        "peak RSS {peak:.0} MiB after 50 hostile templates (idle: {idle:.0} MiB), over {RSS_BOUND_MIB} MiB"
    );
    // A real template still validates.
    let ok = validate(&client, &many_resources(10)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_has_its_own_rate_and_health_checks_have_none() {
    // Lines before the first table go into `[api]`, which ServeProc opens.
    let tokens = "rate_limit_per_second = 0.2\nrate_limit_burst = 3\n\n\
        [[api.tokens]]\ntoken = \"first-token-0123456789\"\nproject = \"one\"\n\n\
        [[api.tokens]]\ntoken = \"second-token-0123456789\"\nproject = \"two\"\n";
    let mut serve = ServeProc::start(tokens).await;
    let base = format!("http://{}", serve.addr);
    let first = Client::new(&base, Some("first-token-0123456789"));
    let second = Client::new(&base, Some("second-token-0123456789"));
    for _ in 0..3 {
        first.get("/v1/stacks").await.expect(200);
    }
    let refused = first.get("/v1/stacks").await;
    assert_eq!(
        (refused.status, refused.code()),
        (429, "rate_limited"),
        "{}",
        refused.text
    );
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        refused.body["error"]["retry_after_secs"],
        Value::from(retry_after)
    );
    // The other token is untouched, and health checks are never limited.
    second.get("/v1/stacks").await.expect(200);
    for _ in 0..10 {
        first.get("/healthz").await.expect(200);
    }
    // The bucket refills at the rate.
    wait_for(
        Duration::from_secs(60),
        "the first token's bucket to refill",
        async || (first.get("/v1/stacks").await.status == 200).then_some(()),
    )
    .await;
    serve.stop().await;
}
