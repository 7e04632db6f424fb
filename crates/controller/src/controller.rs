//! The PullRequestTracker controller: kube-runtime's Controller driving the engine.

use crate::app_watch;
use crate::events::EventPublisher;
use crate::lanes::Lanes;
use crate::metrics::Metrics;
use crate::policy_watch;
use crate::store::KubeTrackerStore;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use promotion_api::{Phase, PromotionPolicy, Provider, PullRequestTracker};
use promotion_core::access::{NamespaceLabels, NoLabels};
use promotion_core::callbacks::CallbackRun;
use promotion_core::conditions::{self, types};
use promotion_core::engine::{
    APPROVE_ANNOTATION, Engine, EngineConfig, EngineError, Ports, RETRY_ANNOTATION,
};
use promotion_core::policy_cache::PolicyCache;
use promotion_core::ports::{StoreError, TrackerDirectory};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The engine's tunables.
    pub engine: EngineConfig,
    /// Watch one namespace, or all when None.
    pub namespace: Option<String>,
    /// How often an idle tracker is looked at anyway (a safety net; changes wake it at once).
    pub resync: Duration,
    /// The name on Events (`reportingController`).
    pub reporter: String,
    /// At most this many routine reconciles (polls, watch events) at once (0: no limit);
    /// bounds the load on CI APIs.
    pub concurrency: u16,
    /// Reconciles woken by a CI callback or a user's approval or retry run in slots of their
    /// own, this many at once, ahead of polls waiting for theirs.
    pub wake_concurrency: u16,
    /// Watch the Applications labelled `promotion.io/watch: "true"` in the controller's
    /// cluster, so their sync wakes the trackers waiting on them.
    pub watch_applications: bool,
    /// Where those Applications are (all namespaces when empty).
    pub applications_namespaces: Vec<String>,
    /// Routine polls stretch up to this when many trackers wait for a poll slot.
    pub max_poll_interval: Duration,
    /// Only trackers and policies with these labels (a label selector); all when None.
    /// Lets controllers share a cluster (and tests share a control plane) without meeting.
    pub label_selector: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            namespace: None,
            resync: Duration::from_secs(300),
            reporter: "promotion-controller".into(),
            concurrency: 32,
            wake_concurrency: 16,
            watch_applications: false,
            applications_namespaces: Vec::new(),
            max_poll_interval: Duration::from_secs(60),
            label_selector: None,
        }
    }
}

/// A CI system said a run changed (a webhook): wake the trackers that follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The CI system.
    pub provider: Provider,
    /// The job, when the id alone is not unique (a Jenkins build number).
    pub job: Option<String>,
    /// The run's id as the CI system names it (workflow run id, pipeline id, build number).
    pub id: String,
}

impl Wake {
    /// Whether a tracker follows this run (the rule lives in the domain: [`CallbackRun`]).
    pub fn matches(&self, tracker: &PullRequestTracker) -> bool {
        tracker
            .status
            .as_ref()
            .is_some_and(|s| self.matches_runs(&s.test_runs))
    }

    /// Whether one of `runs` is this run.
    pub fn matches_runs(&self, runs: &[promotion_api::TestRun]) -> bool {
        CallbackRun {
            provider: self.provider,
            job: self.job.as_deref(),
            id: &self.id,
        }
        .wakes(runs)
    }
}

/// Optional connections to the rest of the process.
#[derive(Default)]
pub struct Hooks {
    /// Metrics to feed.
    pub metrics: Option<Arc<Metrics>>,
    /// Set once both caches (policies, trackers) have their first full list.
    pub ready: Option<Arc<AtomicBool>>,
    /// CI callbacks that wake trackers at once instead of at the next poll.
    pub wake: Option<UnboundedReceiver<Wake>>,
}

/// What every reconcile shares.
pub struct Context {
    engine: Engine,
    policies: PolicyCache,
    client: Client,
    recorder: EventPublisher,
    resync: Duration,
    metrics: Option<Arc<Metrics>>,
    failures: Mutex<HashMap<String, u32>>,
    lanes: Arc<Lanes>,
    trackers: Store<PullRequestTracker>,
    poll: Duration,
    max_poll: Duration,
}

/// When an unmatched CI callback is matched again (after the previous attempt).
const WAKE_RETRIES: &[Duration] = &[Duration::from_millis(500), Duration::from_secs(2)];

/// The finalizer that lets the controller cancel a deleted tracker's CI runs,
/// record an interrupted promotion and release its environment first.
pub const FINALIZER: &str = "promotion.io/cleanup";

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not finish.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// The engine's view of the other trackers: the controller's own cache, of the
/// watched namespace (or all).
struct ReflectorDirectory(Store<PullRequestTracker>, Option<String>);

impl TrackerDirectory for ReflectorDirectory {
    fn trackers(&self) -> Vec<Arc<PullRequestTracker>> {
        self.0.state()
    }

    fn sees_namespace(&self, namespace: &str) -> bool {
        self.1.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// The labels of Namespaces, from a watch, for connections granted by namespaceSelector.
struct NamespaceStore(Store<Namespace>);

impl NamespaceLabels for NamespaceStore {
    fn labels(&self, namespace: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.0
            .get(&ObjectRef::new(namespace))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
    }
}

/// Starts the Namespace watch and waits for its first list (so no policy is judged on
/// labels not read yet), at most a while: without it selectors admit nobody, never more.
async fn namespace_labels(client: Client) -> (NamespaceStore, AbortOnDrop) {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(Api::<Namespace>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    let task = AbortOnDrop(tokio::spawn(stream));
    if tokio::time::timeout(Duration::from_secs(30), reader.wait_until_ready())
        .await
        .is_err()
    {
        tracing::warn!(
            "the Namespace list is not read yet: connections granted by namespaceSelector admit nobody until it is"
        );
    }
    (NamespaceStore(reader), task)
}

/// Changes only when the tracker starts being deleted (the finalizer's cue).
fn deletion(t: &PullRequestTracker) -> Option<u64> {
    t.metadata.deletion_timestamp.as_ref().map(|_| 1)
}

/// Runs until `shutdown` resolves: waits for the policy cache to fill, then reconciles trackers.
pub async fn run(
    client: Client,
    ports: Ports,
    config: ControllerConfig,
    hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (trackers, policies): (Api<PullRequestTracker>, Api<PromotionPolicy>) =
        match &config.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    let mut cache = match &config.engine.connections {
        Some(names) => PolicyCache::with_connections(names.iter().cloned()),
        None => PolicyCache::new(),
    };
    let mut _namespace_task = None;
    if let Some(rules) = &config.engine.access {
        let labels: Arc<dyn NamespaceLabels> = if rules.uses_namespace_labels() {
            let (store, task) = namespace_labels(client.clone()).await;
            _namespace_task = Some(task);
            Arc::new(store)
        } else {
            Arc::new(NoLabels)
        };
        cache = cache.with_access(rules.clone(), labels);
    }
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let (changed_tx, changed_rx) = futures::channel::mpsc::unbounded::<String>();
    // Aborted when this future is dropped or ends, so a stopped controller leaves no watch behind.
    let watch_config = match &config.label_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let _policy_task = AbortOnDrop(tokio::spawn(policy_watch::run(
        client.clone(),
        policies.clone(),
        watch_config.clone(),
        cache.clone(),
        ready_tx,
        changed_tx,
        ports.runner.clone(),
    )));
    // Reconciling before every policy is known could complete a PR that has a next hop.
    if ready_rx.wait_for(|ready| *ready).await.is_err() {
        tracing::error!("the policy watch ended before its first list");
        return;
    }

    let (reader, writer) = reflector::store();
    if let Some(m) = &hooks.metrics {
        m.set_trackers_source(reader.clone());
    }
    let _ready_task = hooks.ready.map(|flag| {
        let reader = reader.clone();
        AbortOnDrop(tokio::spawn(async move {
            // The store wakes only its latest waiter (the Controller waits too), so ask again
            // until it answers; once ready it answers at once.
            loop {
                let ready =
                    tokio::time::timeout(Duration::from_millis(100), reader.wait_until_ready())
                        .await;
                match ready {
                    Ok(Ok(())) => break flag.store(true, Ordering::SeqCst),
                    Ok(Err(_)) => break,
                    Err(_) => continue,
                }
            }
        }))
    });
    let trackers_stream = reflector::reflector(
        writer,
        watcher::watcher(trackers, watch_config).modify(slim),
    )
    .default_backoff()
    .applied_objects()
    // Our own status writes would wake every tracker again; spec, labels and annotations are what matter.
    .predicate_filter(
        predicates::generation
            .combine(predicates::annotations)
            .combine(predicates::labels)
            .combine(predicates::finalizers)
            .combine(deletion),
        Default::default(),
    );
    let by_namespace = {
        let reader = reader.clone();
        changed_rx.flat_map(move |ns: String| {
            refs_where(&reader, |t| t.namespace().as_deref() == Some(ns.as_str()))
        })
    };
    let lanes = Arc::new(Lanes::new(
        usize::from(config.concurrency),
        usize::from(config.wake_concurrency),
    ));
    let engine = Engine::new(ports, config.engine.clone()).with_directory(Arc::new(
        ReflectorDirectory(reader.clone(), config.namespace.clone()),
    ));
    let woken = {
        let reader = reader.clone();
        let lanes = lanes.clone();
        let unsaved = engine.unsaved();
        let wake = hooks
            .wake
            .map(|rx| rx.boxed())
            .unwrap_or_else(|| futures::stream::pending().boxed());
        // A callback can overtake the status write that records its run id (a busy apiserver,
        // a fast CI): when nothing follows the run yet, look again shortly instead of leaving
        // the tracker to the next poll.
        wake.flat_map_unordered(None, move |w: Wake| {
            let now = followers(&reader, &unsaved, &w);
            if futures::Stream::size_hint(&now).0 > 0 {
                return now.boxed();
            }
            let reader = reader.clone();
            let unsaved = unsaved.clone();
            futures::stream::iter(WAKE_RETRIES)
                .then(move |delay| {
                    let reader = reader.clone();
                    let unsaved = unsaved.clone();
                    let w = w.clone();
                    async move {
                        tokio::time::sleep(*delay).await;
                        followers(&reader, &unsaved, &w)
                    }
                })
                .flatten()
                .boxed()
        })
        .inspect(move |r: &ObjectRef<PullRequestTracker>| lanes.wake(&lane_key(r)))
    };
    let apps_changed = if config.watch_applications {
        let reader = reader.clone();
        let lanes = lanes.clone();
        app_watch::changes(client.clone(), &config.applications_namespaces)
            .flat_map(move |app| {
                futures::stream::iter(woken_by_app(&reader, &app)).inspect({
                    let lanes = lanes.clone();
                    move |r| lanes.wake(&lane_key(r))
                })
            })
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let ctx = Arc::new(Context {
        engine,
        policies: cache,
        client: client.clone(),
        recorder: EventPublisher::new(
            client,
            Reporter {
                controller: config.reporter.clone(),
                instance: None,
            },
        ),
        resync: config.resync,
        metrics: hooks.metrics,
        failures: Mutex::new(HashMap::new()),
        lanes,
        trackers: reader.clone(),
        poll: config.engine.poll_interval,
        max_poll: config.max_poll_interval,
    });
    // No limit here: the lanes bound the work inside `reconcile`, where a wake can overtake.
    Controller::for_stream(trackers_stream, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(0))
        .reconcile_on(futures::stream::select(
            by_namespace,
            futures::stream::select(woken, apps_changed),
        ))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// The trackers that follow the run a callback names, by its id in their saved status
/// or in the engine's memory (an id the trigger answered is written with the verdict).
fn followers(
    reader: &Store<PullRequestTracker>,
    unsaved: &promotion_core::engine::Unsaved,
    w: &Wake,
) -> futures::stream::Iter<std::vec::IntoIter<ObjectRef<PullRequestTracker>>> {
    let kept = unsaved.uids_where(|runs| w.matches_runs(runs));
    refs_where(reader, |t| {
        w.matches(t) || t.metadata.uid.as_ref().is_some_and(|u| kept.contains(u))
    })
}

fn refs_where(
    reader: &Store<PullRequestTracker>,
    keep: impl Fn(&PullRequestTracker) -> bool,
) -> futures::stream::Iter<std::vec::IntoIter<ObjectRef<PullRequestTracker>>> {
    let refs: Vec<ObjectRef<PullRequestTracker>> = reader
        .state()
        .iter()
        .filter(|t| keep(t))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect();
    futures::stream::iter(refs)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drops what the engine never reads before it enters the cache: managedFields and
/// kubectl's last-applied copy are most of a small object's size.
fn slim(t: &mut PullRequestTracker) {
    t.managed_fields_mut().clear();
    t.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// The tracker deploys to `app` (its current Application) or queues for it, in the
/// controller's own cluster.
/// The trackers an Application's change concerns: those deploying to it (or holding it),
/// and of those queued for it only the first in line: the others cannot take it yet, and
/// waking the whole line at every change of a busy environment costs more than it saves.
fn woken_by_app(
    reader: &Store<PullRequestTracker>,
    app: &app_watch::AppChanged,
) -> Vec<ObjectRef<PullRequestTracker>> {
    let is = |a: &promotion_api::ApplicationRef| {
        a.cluster == promotion_argocd::IN_CLUSTER
            && a.namespace == app.namespace
            && a.name == app.name
    };
    let mut woken = Vec::new();
    let mut first: Option<(
        k8s_openapi::jiff::Timestamp,
        String,
        ObjectRef<PullRequestTracker>,
    )> = None;
    for t in reader.state() {
        let Some(s) = t.status.as_ref() else {
            continue;
        };
        if s.application.as_ref().is_some_and(is) {
            woken.push(ObjectRef::from_obj(t.as_ref()));
        } else if s.phase == Some(Phase::Queued)
            && let Some(q) = s.queue.as_ref().filter(|q| is(&q.application))
        {
            let key = lane_key(&ObjectRef::from_obj(t.as_ref()));
            if first
                .as_ref()
                .is_none_or(|(since, k, _)| (q.since.0, &key) < (*since, k))
            {
                first = Some((q.since.0, key, ObjectRef::from_obj(t.as_ref())));
            }
        }
    }
    woken.extend(first.map(|(_, _, r)| r));
    woken
}

fn lane_key(r: &ObjectRef<PullRequestTracker>) -> String {
    format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name)
}

/// A user asked for something the controller has not acted on yet (a retry, an approval).
fn urgent(t: &PullRequestTracker) -> bool {
    let annotation = |k: &str| t.annotations().get(k);
    let status = t.status.as_ref();
    let retry = annotation(RETRY_ANNOTATION);
    let awaiting = status.and_then(|s| s.phase) == Some(Phase::AwaitingApproval);
    (retry.is_some() && retry != status.and_then(|s| s.observed_retry.as_ref()))
        || (awaiting && annotation(APPROVE_ANNOTATION).is_some())
}

async fn reconcile(tracker: Arc<PullRequestTracker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = tracker.name_any();
    let ns = tracker.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", tracker = %name, namespace = %ns);
    async move {
        let obj = ObjectRef::from_obj(tracker.as_ref());
        let _slot = ctx.lanes.enter(&lane_key(&obj), urgent(&tracker)).await;
        // The wait for a slot may have been long: decide on the newest version known.
        let tracker = ctx.trackers.get(&obj).unwrap_or(tracker);
        let api: Api<PullRequestTracker> = Api::namespaced(ctx.client.clone(), &ns);
        let result = finalizer::finalizer(&api, FINALIZER, tracker, |event| async {
            match event {
                Finalizer::Apply(t) => apply(&api, &t, &ctx).await,
                Finalizer::Cleanup(t) => cleanup(&api, &t, &ctx).await,
            }
        })
        .await;
        match result {
            Ok(action) => Ok(action),
            Err(finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e)) => Err(e),
            Err(e) => Err(Error::Finalizer(e.to_string())),
        }
    }
    .instrument(span)
    .await
}

/// One engine pass over a live tracker.
async fn apply(
    api: &Api<PullRequestTracker>,
    tracker: &PullRequestTracker,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = tracker.name_any();
    let ns = tracker.namespace().unwrap_or_default();
    let store = KubeTrackerStore::new(api.clone(), tracker, ctx.metrics.clone());
    let events = ctx.recorder.about(tracker.object_ref(&()));
    let result = ctx
        .engine
        .reconcile(tracker, &ctx.policies, &store, &events)
        .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(EngineError::Store(StoreError::Conflict)) => "conflict",
        Err(_) => "error",
    };
    if let Some(m) = &ctx.metrics {
        m.reconciled(outcome);
    }
    match result {
        Ok(after) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&format!("{ns}/{name}"));
            }
            let after = match after {
                // A routine poll: it may wait longer while many others wait for a slot.
                Some(d) if d >= ctx.poll => ctx.lanes.pace(d, ctx.max_poll.max(d)),
                other => other.unwrap_or(ctx.resync),
            };
            Ok(Action::requeue(after.min(ctx.resync)))
        }
        // A newer version is on its way through the watch; decide again with it.
        Err(EngineError::Store(StoreError::Conflict)) => {
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(EngineError::Store(StoreError::Gone)) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// A tracker being deleted: its runs are cancelled, an interrupted promotion is
/// recorded, its environment released; then the finalizer lets it go.
async fn cleanup(
    api: &Api<PullRequestTracker>,
    tracker: &PullRequestTracker,
    ctx: &Context,
) -> Result<Action, Error> {
    let store = KubeTrackerStore::new(api.clone(), tracker, ctx.metrics.clone());
    let events = ctx.recorder.about(tracker.object_ref(&()));
    match ctx.engine.finish(tracker, &store, &events).await {
        Ok(()) | Err(EngineError::Store(StoreError::Gone)) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(tracker: Arc<PullRequestTracker>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = tracker.name_any();
    let ns = tracker.namespace().unwrap_or_default();
    let failures = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(format!("{ns}/{name}")).or_insert(0);
            *n += 1;
            *n
        })
        .unwrap_or(1);
    let delay = Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300));
    tracing::warn!(tracker = %name, namespace = %ns, %error, failures, ?delay, "reconcile failed; backing off");
    // Show it where people look, best effort: the status may be exactly what cannot be written.
    let message = format!("reconcile failed {failures} time(s), retrying in {delay:?}: {error}");
    let client = ctx.client.clone();
    let mut status = tracker.status.clone().unwrap_or_default();
    conditions::set(
        &mut status.conditions,
        types::READY,
        false,
        "ReconcileError",
        message,
        tracker.metadata.generation,
    );
    tokio::spawn(async move {
        let api: Api<PullRequestTracker> = Api::namespaced(client, &ns);
        let patch = serde_json::json!({"status": {"conditions": status.conditions}});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    });
    Action::requeue(delay)
}
