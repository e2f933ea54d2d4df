//! Process-wide metrics in the Prometheus text format: what the engine, the retry machinery and
//! the runtime count. One registry per process, like Prometheus's own client libraries, so any
//! part can count without threading a handle through; `render` is what `/metrics` serves.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub plugin: String,
    pub kind: String,
    pub policy: String,
}

/// A retry budget: one per plugin and target host (`plugin@scheme://host:port`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub bucket: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    pub plugin: String,
    /// `changed`, `unchanged` or `error`.
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    /// Retries scheduled by a policy.
    pub retries: Family<RetryLabels, Counter>,
    /// Calls that failed for good because a policy gave up.
    pub retries_exhausted: Family<RetryLabels, Counter>,
    /// Retries the budget deferred to its refill (suppressed from running at once).
    pub budget_deferred: Family<BudgetLabels, Counter>,
    /// Tokens left in a budget after its last use (negative while retries wait for theirs).
    pub budget_tokens: Family<BudgetLabels, Gauge<f64, AtomicU64>>,
    /// Credentials read again after an `unauthorized`.
    pub credential_refreshes: Family<RefreshLabels, Counter>,
    /// Times this engine became the leader.
    pub leader_changes: Counter,
    /// Jobs this engine (as leader) freed after their engine's lease expired.
    pub jobs_rescued: Counter,
    /// Stack locks this engine (as leader) took over from dead holders.
    pub lock_takeovers: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        let m = Self {
            retries: Family::default(),
            retries_exhausted: Family::default(),
            budget_deferred: Family::default(),
            budget_tokens: Family::default(),
            credential_refreshes: Family::default(),
            leader_changes: Counter::default(),
            jobs_rescued: Counter::default(),
            lock_takeovers: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "retries",
            "Retries scheduled by a retry policy",
            m.retries.clone(),
        );
        registry.register(
            "retries_exhausted",
            "Calls failed for good because their retry policy gave up",
            m.retries_exhausted.clone(),
        );
        registry.register(
            "retry_budget_deferred",
            "Retries deferred because their retry budget was empty",
            m.budget_deferred.clone(),
        );
        registry.register(
            "retry_budget_tokens",
            "Tokens left in a retry budget after its last use",
            m.budget_tokens.clone(),
        );
        registry.register(
            "credential_refreshes",
            "Plugin credentials read again after an unauthorized error",
            m.credential_refreshes.clone(),
        );
        registry.register(
            "leader_changes",
            "Times this engine became the leader",
            m.leader_changes.clone(),
        );
        registry.register(
            "jobs_rescued",
            "Jobs freed by this engine as leader after their engine's lease expired",
            m.jobs_rescued.clone(),
        );
        registry.register(
            "lock_takeovers",
            "Stack locks taken over by this engine as leader from dead holders",
            m.lock_takeovers.clone(),
        );
        Self { registry, ..m }
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &metrics().registry)
        .expect("writing to a String cannot fail");
    out
}

/// The value of one sample in rendered metrics (`name{labels}` as written), for tests and tools.
pub fn sample(rendered: &str, series: &str) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// `GET /metrics`, for an engine's own listener (`engine.metrics_listen`) and for the API.
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    )
}
