//! Process-wide metrics in the Prometheus text format: what the engine, the retry machinery and
//! the runtime count. One registry per process, like Prometheus's own client libraries, so any
//! part can count without threading a handle through; `render` is what `/metrics` serves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::model::{JobOp, Liveness};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{Atomic, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

/// A job's operation: `create`, `update`, `delete`, `check`, or `cleanup` (an update deleting
/// what it removed or replaced).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    /// The resource type served.
    pub r#type: String,
    /// `create`, `update`, `delete`, `check` or `poll`.
    pub function: String,
    /// `ok`, `pending` (a long operation goes on) or `error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/v1/stacks/{stack}`), never the path itself: one series per route.
    pub route: String,
    pub status: String,
}

/// A job's state in the queue: `due`, `waiting` or `running`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub state: String,
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
    /// Jobs this engine claimed; a job claimed again (a poll, a retry) counts again.
    pub jobs_claimed: Family<JobLabels, Counter>,
    /// Jobs whose resource this engine finished (COMPLETE).
    pub jobs_completed: Family<JobLabels, Counter>,
    /// Jobs whose resource failed for good here (not a retry scheduled).
    pub jobs_failed: Family<JobLabels, Counter>,
    /// How long the engine's plugin calls took.
    pub plugin_call_duration: Family<PluginCallLabels, Histogram>,
    /// API requests answered, and how long each took.
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: Family<HttpLabels, Histogram>,
    /// Set from the database at scrape time (`refresh_from_store`): every engine's view.
    pub engines_up: DbGauge<Gauge>,
    pub jobs_queued: Family<QueueLabels, Gauge>,
    pub jobs_oldest_due_age: DbGauge<Gauge<f64, AtomicU64>>,
}

/// A gauge read from the database: left out of `render` until first set, so that a process
/// that never reads the database (an engine's own listener) reports nothing rather than
/// "0 engines up". (A `Family`, such as `jobs_queued`, is left out while it is empty anyway.)
#[derive(Debug, Default)]
pub struct DbGauge<G> {
    gauge: G,
    set: Arc<AtomicBool>,
}

impl<N, A: Atomic<N>> DbGauge<Gauge<N, A>> {
    pub fn set(&self, v: N) {
        self.gauge.set(v);
        self.set.store(true, Ordering::Release);
    }

    pub fn get(&self) -> N {
        self.gauge.get()
    }
}

impl<G: Clone> Clone for DbGauge<G> {
    fn clone(&self) -> Self {
        Self {
            gauge: self.gauge.clone(),
            set: self.set.clone(),
        }
    }
}

impl<G: EncodeMetric> EncodeMetric for DbGauge<G> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.gauge.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        !self.set.load(Ordering::Acquire)
    }
}

/// 1 ms to 65 s, doubling: plugin calls and API requests span that range.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
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
            jobs_claimed: Family::default(),
            jobs_completed: Family::default(),
            jobs_failed: Family::default(),
            plugin_call_duration: Family::new_with_constructor(seconds_histogram),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(seconds_histogram),
            engines_up: DbGauge::default(),
            jobs_queued: Family::default(),
            jobs_oldest_due_age: DbGauge::default(),
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
        registry.register(
            "jobs_claimed",
            "Jobs claimed by this engine, by operation (a poll or a retry is claimed again)",
            m.jobs_claimed.clone(),
        );
        registry.register(
            "jobs_completed",
            "Jobs whose resource this engine completed, by operation",
            m.jobs_completed.clone(),
        );
        registry.register(
            "jobs_failed",
            "Jobs whose resource failed for good on this engine, by operation (retries are kiln_retries_total)",
            m.jobs_failed.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Duration of the resource plugin calls made by this process, by resource type, function and outcome",
            m.plugin_call_duration.clone(),
        );
        registry.register(
            "http_requests",
            "API requests answered, by method, route template and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Duration of API requests, by method, route template and status code",
            m.http_request_duration.clone(),
        );
        registry.register(
            "engines_up",
            "Engines whose status is up in the database (heartbeat within their lease, not draining)",
            m.engines_up.clone(),
        );
        registry.register(
            "jobs_queued",
            "Jobs in the database: due (claimable now), waiting (a retry, poll or pause due later), running (under a live lease)",
            m.jobs_queued.clone(),
        );
        registry.register(
            "jobs_oldest_due_age_seconds",
            "How long the oldest due job has waited past its due time (0 when none is due)",
            m.jobs_oldest_due_age.clone(),
        );
        Self { registry, ..m }
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts one claimed job.
pub fn job_claimed(operation: JobOp) {
    metrics()
        .jobs_claimed
        .get_or_create(&job(operation.as_str()))
        .inc();
}

/// Counts one job that ended its resource: COMPLETE, or FAILED for good.
pub fn job_ended(operation: JobOp, failed: bool) {
    let m = metrics();
    let family = if failed {
        &m.jobs_failed
    } else {
        &m.jobs_completed
    };
    family.get_or_create(&job(operation.as_str())).inc();
}

fn job(operation: &str) -> JobLabels {
    JobLabels {
        operation: operation.to_string(),
    }
}

/// Records one resource plugin call.
pub fn observe_plugin_call(resource_type: &str, function: &str, outcome: &str, seconds: f64) {
    metrics()
        .plugin_call_duration
        .get_or_create(&PluginCallLabels {
            r#type: resource_type.to_string(),
            function: function.to_string(),
            outcome: outcome.to_string(),
        })
        .observe(seconds);
}

/// Records one answered API request; `route` is the matched route's template.
pub fn observe_http(method: &str, route: &str, status: u16, seconds: f64) {
    let labels = HttpLabels {
        method: method.to_string(),
        route: route.to_string(),
        status: status.to_string(),
    };
    let m = metrics();
    m.http_requests.get_or_create(&labels).inc();
    m.http_request_duration
        .get_or_create(&labels)
        .observe(seconds);
}

/// Sets the gauges that describe the whole deployment (engines, the job queue) from the
/// database, as seen now: call before `render` when serving `/metrics`. Every process sharing
/// the database reports the same values. A failed query is logged and leaves its gauges as they
/// were, so that a scrape still gets the process's own metrics.
pub async fn refresh_from_store(store: &crate::store::Store) {
    let m = metrics();
    match store.engine_list().await {
        Ok(engines) => {
            let up = engines.iter().filter(|e| e.status == Liveness::Up).count();
            m.engines_up.set(up as i64);
        }
        Err(e) => tracing::warn!("metrics: listing engines failed: {e}"),
    }
    match store.queue_stats().await {
        Ok(q) => {
            for (state, n) in [
                ("due", q.due),
                ("waiting", q.waiting),
                ("running", q.running),
            ] {
                let labels = QueueLabels {
                    state: state.to_string(),
                };
                m.jobs_queued.get_or_create(&labels).set(n);
            }
            m.jobs_oldest_due_age
                .set(q.oldest_due_age_ms as f64 / 1000.0);
        }
        Err(e) => tracing::warn!("metrics: reading the job queue failed: {e}"),
    }
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

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to a scrape: the database gauges refreshed, then every metric as text.
pub async fn scrape(
    store: &crate::store::Store,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    refresh_from_store(store).await;
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render())
}

/// `GET /metrics`, for an engine's own listener (`engine.metrics_listen`); the API serves
/// `scrape` at the same path.
pub fn router(store: crate::store::Store) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { scrape(&store).await }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_gauge_is_left_out_until_it_is_set() {
        let mut registry = Registry::with_prefix("kiln");
        let up: DbGauge<Gauge> = DbGauge::default();
        registry.register("engines_up", "Engines up", up.clone());
        let text = |r: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, r).unwrap();
            out
        };
        assert!(!text(&registry).contains("kiln_engines_up"));
        up.set(2);
        assert_eq!(sample(&text(&registry), "kiln_engines_up"), Some(2.0));
    }
}
