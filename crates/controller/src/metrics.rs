//! Prometheus metrics, derived from what the controller writes: every status
//! transition it saves is compared with the one before, so the numbers are
//! exactly what trackers show.

use crate::webhook::Endpoint;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use promotion_api::{PullRequestTracker, PullRequestTrackerStatus, TestRun, TestState};
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    provider: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

/// Which webhook endpoints have a usable secret, asked at each scrape.
type WebhookSource = Box<dyn Fn() -> Vec<(Endpoint, bool)> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HopLabels {
    source: String,
    target: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    trackers: Family<PhaseLabels, Gauge>,
    test_runs: Family<RunLabels, Counter>,
    test_duration: Family<ProviderLabels, Histogram>,
    promotions: Family<HopLabels, Counter>,
    pass_to_promotion: Histogram,
    status_writes: Counter,
    webhook_endpoints: Family<EndpointLabels, Gauge>,
    trackers_source: OnceLock<Store<PullRequestTracker>>,
    webhook_source: OnceLock<WebhookSource>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("promotion");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Tracker reconciles by result (ok, conflict, error)",
            reconciles.clone(),
        );
        let trackers = Family::<PhaseLabels, Gauge>::default();
        registry.register("trackers", "Trackers by phase", trackers.clone());
        let test_runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "test_runs",
            "Finished gate test runs by provider and outcome",
            test_runs.clone(),
        );
        let test_duration = Family::<ProviderLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 14))
        });
        registry.register(
            "test_duration_seconds",
            "Gate test duration, trigger to final state",
            test_duration.clone(),
        );
        let promotions = Family::<HopLabels, Counter>::default();
        registry.register(
            "promotions",
            "Promotions by source and target environment",
            promotions.clone(),
        );
        let pass_to_promotion = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "pass_to_promotion_seconds",
            "Time from the last required test passing to the PromotionRecord",
            pass_to_promotion.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Tracker status writes",
            status_writes.clone(),
        );
        let webhook_endpoints = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "webhook_endpoint_enabled",
            "1 when the webhook endpoint has a usable secret, 0 when it refuses every request (503)",
            webhook_endpoints.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            trackers,
            test_runs,
            test_duration,
            promotions,
            pass_to_promotion,
            status_writes,
            webhook_endpoints,
            trackers_source: OnceLock::new(),
            webhook_source: OnceLock::new(),
        }
    }

    /// Asks `source` at each scrape which webhook endpoints are enabled.
    pub fn set_webhook_source(
        &self,
        source: impl Fn() -> Vec<(Endpoint, bool)> + Send + Sync + 'static,
    ) {
        let _ = self.webhook_source.set(Box::new(source));
    }

    /// Each webhook endpoint and whether it is enabled (empty until a source is set).
    pub fn webhook_endpoints(&self) -> Vec<(Endpoint, bool)> {
        self.webhook_source.get().map(|s| s()).unwrap_or_default()
    }

    /// Counts trackers by phase from this store at each scrape.
    pub fn set_trackers_source(&self, store: Store<PullRequestTracker>) {
        let _ = self.trackers_source.set(store);
    }

    /// Counts one reconcile.
    pub fn reconciled(&self, result: &str) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Observes a saved status against the one before it.
    pub fn status_saved(&self, old: &PullRequestTrackerStatus, new: &PullRequestTrackerStatus) {
        self.status_writes.inc();
        let finished = |runs: &[TestRun], name: &str| {
            runs.iter()
                .any(|r| r.name == name && r.finished_at.is_some())
        };
        for run in &new.test_runs {
            if run.finished_at.is_some() && !finished(&old.test_runs, &run.name) {
                self.run_finished(run);
            }
        }
        for record in new.promotions.iter().skip(old.promotions.len()) {
            self.promotions
                .get_or_create(&HopLabels {
                    source: record.source.clone(),
                    target: record.target.clone(),
                })
                .inc();
            let last_pass = record
                .test_runs
                .iter()
                .filter(|r| r.required)
                .filter_map(|r| r.finished_at.as_ref().map(|t| t.0))
                .max();
            if let Some(passed) = last_pass {
                let secs = record.promoted_at.0.duration_since(passed).as_secs_f64();
                self.pass_to_promotion.observe(secs.max(0.0));
            }
        }
    }

    fn run_finished(&self, run: &TestRun) {
        let provider = serde_json::to_value(run.provider)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let outcome = match run.state {
            TestState::Passed => "passed",
            TestState::Failed => "failed",
            TestState::Cancelled => "cancelled",
            TestState::TimedOut => "timed_out",
            TestState::Pending | TestState::Running => return,
        };
        self.test_runs
            .get_or_create(&RunLabels {
                provider: provider.clone(),
                outcome: outcome.into(),
            })
            .inc();
        if let (Some(start), Some(end)) = (&run.started_at, &run.finished_at) {
            let secs = end.0.duration_since(start.0).as_secs_f64();
            self.test_duration
                .get_or_create(&ProviderLabels { provider })
                .observe(secs.max(0.0));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(store) = self.trackers_source.get() {
            self.trackers.clear();
            for t in store.state() {
                let phase = t
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "Pending".into());
                self.trackers.get_or_create(&PhaseLabels { phase }).inc();
            }
        }
        for (endpoint, enabled) in self.webhook_endpoints() {
            self.webhook_endpoints
                .get_or_create(&EndpointLabels {
                    endpoint: endpoint.name().into(),
                })
                .set(i64::from(enabled));
        }
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = encode(&mut out, &registry);
        }
        out
    }
}
