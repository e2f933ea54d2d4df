//! The sandboxed plugin runtime: limits, faults, the sandbox, the allow-list, the contract
//! version check and the on-disk cache, each shown with real components built by host/build.rs.

mod support;

use std::sync::Arc;

use kiln::artifacts;
use kiln::config::{Limits, Pooling, RuntimeConfig};
use kiln::runtime::{
    CacheOutcome, CallError, FaultCause, LoadError, Operation, Outcome, PluginRuntime, Source,
};
use serde_json::{Value, json};
use support::cloud::FakeCloud;
use support::*;

fn fault(r: Result<Outcome, CallError>) -> (FaultCause, String, String) {
    match r {
        Err(CallError::Fault(f)) => {
            let text = f.to_string();
            (f.cause, f.stderr, text)
        }
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// After a fault, the same plugin on the same runtime answers the next calls.
async fn still_healthy(plugin: &kiln::runtime::Plugin, type_name: &str) {
    plugin.describe().await.expect("describe after a fault");
    let current = kiln::runtime::Current {
        physical_id: "x".into(),
        state: "null".into(),
    };
    plugin
        .delete(
            &ctx(type_name, "r", Operation::Delete),
            &current,
            &json!({}),
        )
        .await
        .expect("delete after a fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_cpu_limit_and_the_runtime_carries_on() {
    let rt = runtime();
    let limits = Limits {
        cpu_time_ms: 300,
        ..Limits::default()
    };
    let p = load_with(&rt, "loop", artifacts::FIXTURE_LOOP, limits, &[]).await;
    let (cause, _, text) = fault(
        p.create(&ctx("Fixture::Loop", "spin", Operation::Create), &json!({}))
            .await,
    );
    assert_eq!(cause, FaultCause::CpuTime { limit_ms: 300 });
    assert!(
        text.contains("plugin 'loop' failed in create: CPU time limit of 300 ms exceeded"),
        "{text}"
    );
    still_healthy(&p, "Fixture::Loop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_timeout_ends_a_spinning_call() {
    let rt = runtime();
    let limits = Limits {
        call_timeout_ms: 300,
        ..Limits::default()
    };
    let p = load_with(&rt, "loop", artifacts::FIXTURE_LOOP, limits, &[]).await;
    let (cause, _, _) = fault(
        p.create(&ctx("Fixture::Loop", "spin", Operation::Create), &json!({}))
            .await,
    );
    assert_eq!(cause, FaultCause::Timeout { limit_ms: 300 });
    still_healthy(&p, "Fixture::Loop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_at_its_limit() {
    let rt = runtime();
    let limits = Limits {
        memory_mib: 16,
        ..Limits::default()
    };
    let p = load_with(&rt, "bomb", artifacts::FIXTURE_MEMORY_BOMB, limits, &[]).await;
    let (cause, _, text) = fault(
        p.create(
            &ctx("Fixture::MemoryBomb", "b", Operation::Create),
            &json!({}),
        )
        .await,
    );
    match cause {
        FaultCause::OutOfMemory { limit, requested } => {
            assert_eq!(limit, 16 << 20);
            assert!(requested > limit);
        }
        other => panic!("expected out of memory, got {other:?}"),
    }
    assert!(text.contains("over the limit of 16 MiB"), "{text}");
    still_healthy(&p, "Fixture::MemoryBomb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap_with_the_stderr_tail() {
    let rt = runtime();
    let p = load(&rt, "panic", artifacts::FIXTURE_PANIC).await;
    let (cause, stderr, text) = fault(
        p.create(&ctx("Fixture::Panic", "p", Operation::Create), &json!({}))
            .await,
    );
    assert!(matches!(cause, FaultCause::Trap(_)), "{cause:?}");
    assert!(stderr.contains("fixture-panic: about to panic"), "{stderr}");
    assert!(stderr.contains("fixture panic: boom"), "{stderr}");
    assert!(
        text.contains("plugin 'panic' failed in create: trapped"),
        "{text}"
    );
    assert!(
        text.contains("fixture panic: boom"),
        "the error carries stderr: {text}"
    );
    still_healthy(&p, "Fixture::Panic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_grants_no_files_env_or_sockets() {
    let cloud = FakeCloud::start().await;
    let rt = runtime();
    let p = load(&rt, "escape", artifacts::FIXTURE_ESCAPE).await;
    let props = json!({"url": cloud.url(), "tcp_addr": cloud.addr.to_string()});
    let Outcome::Done(done) = p
        .create(&ctx("Fixture::Escape", "e", Operation::Create), &props)
        .await
        .unwrap()
    else {
        panic!("escape fixture reports in one call")
    };
    let a = &done.attributes;
    // No directory is pre-opened, so no path resolves: not /etc/passwd, not even /.
    let no_path = json!("No such file or directory (os error 44)");
    assert_eq!(a["file"], no_path, "{a:?}");
    assert_eq!(a["dir"], no_path, "{a:?}");
    assert_eq!(a["env_count"], json!(0), "{a:?}");
    // The address listens (it is the cloud's): only the sandbox can refuse the connection.
    assert!(
        a["tcp"]
            .as_str()
            .is_some_and(|t| t.starts_with("Permission denied")),
        "{a:?}"
    );
    assert_eq!(a["http"]["error"]["kind"], json!("denied"), "{a:?}");
    let msg = a["http"]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&cloud.url()) && msg.contains("no allow_http rules"),
        "{msg}"
    );
    // Nothing reached the server: the denial happens before any connection.
    assert!(cloud.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_admits_and_denies_as_configured() {
    let cloud = FakeCloud::start().await;
    let rt = runtime();
    let rule = cloud.rule();
    let other_port = format!(
        "http://127.0.0.1:{}",
        cloud.addr.port().wrapping_add(1).max(1)
    );
    let props = json!({"url": cloud.url(), "tcp_addr": "127.0.0.1:1"});

    let admitted = load_with(
        &rt,
        "escape",
        artifacts::FIXTURE_ESCAPE,
        Limits::default(),
        &[&rule],
    )
    .await;
    let Outcome::Done(done) = admitted
        .create(&ctx("Fixture::Escape", "e", Operation::Create), &props)
        .await
        .unwrap()
    else {
        panic!()
    };
    // The request reached the server (which answers 405 to GET on the collection).
    assert!(
        done.attributes["http"]["ok"].is_number(),
        "{:?}",
        done.attributes
    );
    assert_eq!(cloud.requests().len(), 1);

    let denied = load_with(
        &rt,
        "escape2",
        artifacts::FIXTURE_ESCAPE,
        Limits::default(),
        &[&other_port],
    )
    .await;
    let Outcome::Done(done) = denied
        .create(&ctx("Fixture::Escape", "e", Operation::Create), &props)
        .await
        .unwrap()
    else {
        panic!()
    };
    let err = &done.attributes["http"]["error"];
    assert_eq!(err["kind"], json!("denied"));
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(&cloud.url()) && msg.contains(&other_port),
        "names URL and rule: {msg}"
    );
    assert_eq!(
        cloud.requests().len(),
        1,
        "the denied request never left the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_contract_version_is_refused_at_load() {
    let rt = runtime();
    let err = rt
        .load(spec(
            "old",
            artifacts::FIXTURE_WRONG_VERSION,
            Limits::default(),
            &[],
        ))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, LoadError::IncompatibleContract { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("kiln:plugin@9.0.0") && text.contains("kiln:plugin@0.1.0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_modules_and_garbage_are_refused_clearly() {
    let rt = runtime();
    let load_bytes = |bytes: &'static [u8]| {
        rt.load(kiln::runtime::PluginSpec {
            name: "bad".into(),
            source: Source::Bytes {
                origin: "test".into(),
                bytes: Arc::from(bytes),
            },
            limits: Limits::default(),
            allow_http: Default::default(),
            credentials: None,
        })
    };
    let err = load_bytes(b"\0asm\x01\0\0\0")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("core wasm module") && err.contains("wasm32-wasip2"),
        "{err}"
    );
    let err = load_bytes(b"hello").await.err().unwrap().to_string();
    assert!(err.contains("not a WebAssembly component"), "{err}");
    let err = rt
        .load(spec(
            "missing",
            "/nonexistent/x.wasm",
            Limits::default(),
            &[],
        ))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/x.wasm"), "{err}");
}

fn cache_runtime(dir: &std::path::Path) -> PluginRuntime {
    PluginRuntime::new(&runtime_config(dir), 64).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cache_is_reused_and_bad_entries_are_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(artifacts::NONE).unwrap();

    let first = load(&cache_runtime(dir.path()), "none", artifacts::NONE).await;
    assert_eq!(first.cache_outcome(), &CacheOutcome::Compiled);
    let entry = cache_runtime(dir.path()).cache_entry(&wasm);
    assert!(entry.exists());

    // A new runtime (a restarted process) finds the entry.
    let again = load(&cache_runtime(dir.path()), "none", artifacts::NONE).await;
    assert_eq!(again.cache_outcome(), &CacheOutcome::Hit);

    // One flipped byte: the seal fails, it is recompiled (not trusted) and replaced.
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let p = load(&cache_runtime(dir.path()), "none", artifacts::NONE).await;
    assert!(
        matches!(p.cache_outcome(), CacheOutcome::Recompiled { reason } if reason.contains("seal")),
        "{:?}",
        p.cache_outcome()
    );
    p.create(&ctx("OS::Heat::None", "n", Operation::Create), &json!({}))
        .await
        .unwrap();
    assert_eq!(
        load(&cache_runtime(dir.path()), "none", artifacts::NONE)
            .await
            .cache_outcome(),
        &CacheOutcome::Hit
    );

    // A foreign file under the right name (e.g. another host's .cwasm) is not loaded.
    let foreign = wasmtime_free_precompiled_lookalike();
    std::fs::write(&entry, foreign).unwrap();
    let p = load(&cache_runtime(dir.path()), "none", artifacts::NONE).await;
    assert!(matches!(p.cache_outcome(), CacheOutcome::Recompiled { .. }));

    // A truncated entry, as after a crash mid-write by something else.
    std::fs::write(&entry, &std::fs::read(&entry).unwrap()[..20]).unwrap();
    let p = load(&cache_runtime(dir.path()), "none", artifacts::NONE).await;
    assert!(matches!(p.cache_outcome(), CacheOutcome::Recompiled { .. }));

    // A new cache key (another host's cache dir copied in) invalidates every entry.
    std::fs::remove_file(dir.path().join("cache.key")).unwrap();
    let p = load(&cache_runtime(dir.path()), "none", artifacts::NONE).await;
    assert!(matches!(p.cache_outcome(), CacheOutcome::Recompiled { .. }));
}

/// Bytes shaped like a wasmtime artifact (an ELF file) but not sealed by this host.
fn wasmtime_free_precompiled_lookalike() -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.resize(4096, 0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_on_one_runtime() {
    let rt = runtime();
    let p = load(&rt, "none", artifacts::NONE).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let p = p.clone();
        tasks.spawn(async move {
            let c = ctx("OS::Heat::None", &format!("r{i}"), Operation::Create);
            p.create(&c, &json!({"i": i})).await
        });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        assert!(matches!(r.unwrap().unwrap(), Outcome::Done(_)));
        n += 1;
    }
    assert_eq!(n, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_allocation_works_as_the_fallback() {
    let config = RuntimeConfig {
        pooling: Pooling::Off,
        ..runtime_config(&shared_cache())
    };
    let rt = PluginRuntime::new(&config, 64).unwrap();
    assert_eq!(rt.allocator(), kiln::runtime::Allocator::OnDemand);
    let limits = Limits {
        memory_mib: 16,
        ..Limits::default()
    };
    let p = load_with(&rt, "bomb", artifacts::FIXTURE_MEMORY_BOMB, limits, &[]).await;
    let (cause, _, _) = fault(
        p.create(
            &ctx("Fixture::MemoryBomb", "b", Operation::Create),
            &json!({}),
        )
        .await,
    );
    assert!(matches!(cause, FaultCause::OutOfMemory { .. }), "{cause:?}");
    let none = load(&rt, "none", artifacts::NONE).await;
    none.create(&ctx("OS::Heat::None", "n", Operation::Create), &json!({}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_is_used_when_available() {
    assert_eq!(runtime().allocator(), kiln::runtime::Allocator::Pooling);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_resource_calls_are_not_mixed_up() {
    let rt = runtime();
    let policy = load(&rt, "backoff", artifacts::EXPONENTIAL_BACKOFF).await;
    assert!(policy.info().is_none());
    let err = policy
        .create(&ctx("X", "r", Operation::Create), &json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs a resource plugin"), "{err}");
    let none = load(&rt, "none", artifacts::NONE).await;
    let err = none.validate_params(&Value::Null).await.unwrap_err();
    assert!(err.to_string().contains("needs a retry policy"), "{err}");
}
