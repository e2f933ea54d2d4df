//! Driving stacks in-process for engine tests: an engine built as `kiln` builds one, running,
//! creating a stack from template text, and waiting (generously) for its action to end.

use std::time::{Duration, Instant};

use kiln::app::{App, Plugins};
use kiln::config::{Config, EngineConfig};
use kiln::engine::{Engine, Sources, StackOptions};
use kiln::store::{StackRow, Store};
use kiln::template::{self, SourceFile};
use tokio::sync::watch;

/// `config` with the tests' shared component cache and `http-resource` allowed `allow`.
fn for_tests(mut config: Config, allow: &[String]) -> Config {
    config.runtime.cache_dir = Some(super::shared_cache());
    // Keeps the rest of a configured `[plugins.http-resource]` (its credentials, say).
    config
        .plugins
        .entry("http-resource".into())
        .or_default()
        .allow_http = allow.to_vec();
    config
}

/// An engine on `store`, built as `kiln` builds one (`kiln::app::App`): the plugins and retry
/// policies of `config` (with the tests' shared cache, `http-resource` allowed `allow`).
pub async fn engine(store: Store, config: Config, allow: &[String]) -> Engine {
    let config = for_tests(config, allow);
    match App::on_store(&config, store, Plugins::Load).await {
        Ok(app) => app.engine,
        Err(e) => panic!("the engine cannot be built: {e}"),
    }
}

/// `engine` with the default configuration but for the engine's own tuning.
pub async fn tuned(store: Store, tuning: EngineConfig, allow: &[String]) -> Engine {
    let config = Config {
        engine: tuning,
        ..Config::default()
    };
    engine(store, config, allow).await
}

/// An engine's workers running until `shutdown`.
pub struct Running {
    pub engine: Engine,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

pub fn run(engine: &Engine) -> Running {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(rx).await }
    });
    Running {
        engine: engine.clone(),
        stop,
        task,
    }
}

impl Running {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

pub fn validate(text: &str, engine: &Engine) -> template::Stack {
    let file = SourceFile {
        name: "test.yaml".into(),
        text: text.into(),
    };
    template::validate(&file, &[], &[], engine.plugins()).unwrap_or_else(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!("{}", lines.join("\n"))
    })
}

pub async fn create(engine: &Engine, name: &str, text: &str) -> StackRow {
    create_with(engine, name, text, StackOptions::default()).await
}

pub async fn create_with(
    engine: &Engine,
    name: &str,
    text: &str,
    options: StackOptions,
) -> StackRow {
    let stack = validate(text, engine);
    engine
        .create_stack(name, &stack, &sources(text, options))
        .await
        .unwrap()
}

/// What the stack was made from: `text` as `test.yaml`, no environments or parameters.
pub fn sources(text: &str, options: StackOptions) -> Sources {
    Sources {
        template: "test.yaml".into(),
        template_text: text.into(),
        environments: vec![],
        parameters: vec![],
        options,
    }
}

/// Waits until the stack's current action ends.
pub async fn settle(store: &Store, id: &str) -> StackRow {
    settle_polling(store, id, Duration::from_millis(50)).await
}

/// [`settle`], looking `every` so often (the benchmarks time actions to a few milliseconds).
pub async fn settle_polling(store: &Store, id: &str, every: Duration) -> StackRow {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let row = store.find_stack(id).await.unwrap();
        if row.status != "IN_PROGRESS" {
            return row;
        }
        let (name, action) = (&row.name, &row.action);
        assert!(
            Instant::now() < deadline,
            "stack {name} still {action}_IN_PROGRESS"
        );
        tokio::time::sleep(every).await;
    }
}

/// Starts updating the stack `name` to the template `text`.
pub async fn update(engine: &Engine, name: &str, text: &str) -> StackRow {
    let stack = validate(text, engine);
    engine
        .update_stack(name, &stack, &sources(text, StackOptions::default()))
        .await
        .unwrap()
}
