//! Prometheus metrics, derived from what the controller writes: every status
//! transition it saves is compared with the one before, so the numbers are
//! exactly what trackers show.

use crate::webhook::Endpoint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use promotion_api::{PullRequestTracker, PullRequestTrackerStatus, TestRun};
use promotion_core::delivery::{self, Observation};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvironmentLabels {
    namespace: String,
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateRunLabels {
    namespace: String,
    environment: String,
    test: String,
    outcome: String,
}

/// Buckets for delivery waits: a second to about two weeks.
fn delivery_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 3.0, 14))
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
    lead_time: Family<EnvironmentLabels, Histogram>,
    environment_promotions: Family<EnvironmentLabels, Counter>,
    gate_runs: Family<GateRunLabels, Counter>,
    approval_wait: Family<EnvironmentLabels, Histogram>,
    queue_wait: Family<EnvironmentLabels, Histogram>,
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
        let lead_time =
            Family::<EnvironmentLabels, Histogram>::new_with_constructor(delivery_buckets);
        registry.register(
            "lead_time_seconds",
            "Time from a tracker's creation (the PR opened) to its promotion into an environment",
            lead_time.clone(),
        );
        let environment_promotions = Family::<EnvironmentLabels, Counter>::default();
        registry.register(
            "environment_promotions",
            "Promotions into an environment, by the trackers' namespace (per day: increase over 1d)",
            environment_promotions.clone(),
        );
        let gate_runs = Family::<GateRunLabels, Counter>::default();
        registry.register(
            "gate_runs",
            "Finished gate test runs by namespace, environment, test and outcome (failure rate: failed / all)",
            gate_runs.clone(),
        );
        let approval_wait =
            Family::<EnvironmentLabels, Histogram>::new_with_constructor(delivery_buckets);
        registry.register(
            "approval_wait_seconds",
            "Time a PR waited for approval into an environment, from its last required pass",
            approval_wait.clone(),
        );
        let queue_wait =
            Family::<EnvironmentLabels, Histogram>::new_with_constructor(delivery_buckets);
        registry.register(
            "queue_wait_seconds",
            "Time a PR waited in the queue for an environment another PR held",
            queue_wait.clone(),
        );
        let webhook_endpoints = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "webhook_endpoint_enabled",
            "1 when the webhook endpoint has a usable secret, 0 when it refuses every request (503)",
            webhook_endpoints.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            lead_time,
            environment_promotions,
            gate_runs,
            approval_wait,
            queue_wait,
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

    /// Observes a saved status against the one before it, for a tracker in
    /// `namespace` created at `created`.
    pub fn status_saved(
        &self,
        namespace: &str,
        created: Option<&Time>,
        old: &PullRequestTrackerStatus,
        new: &PullRequestTrackerStatus,
    ) {
        self.status_writes.inc();
        self.delivery(
            namespace,
            delivery::observe(created, old, new, &Time(Timestamp::now())),
        );
        let finished = |runs: &[TestRun], name: &str| {
            runs.iter()
                .any(|r| r.name == name && r.finished_at.is_some())
        };
        // Runs may be written final for the first time inside the promotion's record.
        let recorded = new
            .promotions
            .iter()
            .skip(old.promotions.len())
            .flat_map(|r| r.test_runs.iter());
        for run in new.test_runs.iter().chain(recorded) {
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

    fn delivery(&self, namespace: &str, observations: Vec<Observation>) {
        let labels = |environment: String| EnvironmentLabels {
            namespace: namespace.to_string(),
            environment,
        };
        for o in observations {
            match o {
                Observation::Promoted { environment, lead } => {
                    let l = labels(environment);
                    self.environment_promotions.get_or_create(&l).inc();
                    if let Some(lead) = lead {
                        self.lead_time.get_or_create(&l).observe(lead.as_secs_f64());
                    }
                }
                Observation::GateRun {
                    environment,
                    test,
                    outcome,
                } => {
                    self.gate_runs
                        .get_or_create(&GateRunLabels {
                            namespace: namespace.to_string(),
                            environment,
                            test,
                            outcome: outcome.into(),
                        })
                        .inc();
                }
                Observation::ApprovalWait {
                    environment,
                    waited,
                } => self
                    .approval_wait
                    .get_or_create(&labels(environment))
                    .observe(waited.as_secs_f64()),
                Observation::QueueWait {
                    environment,
                    waited,
                } => self
                    .queue_wait
                    .get_or_create(&labels(environment))
                    .observe(waited.as_secs_f64()),
            }
        }
    }

    fn run_finished(&self, run: &TestRun) {
        let provider = serde_json::to_value(run.provider)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let Some(outcome) = delivery::outcome(run.state) else {
            return;
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
