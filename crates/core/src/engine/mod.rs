//! The state machine of one tracker: Deploying -> Synced -> Testing ->
//! (AwaitingApproval) -> Promoting -> Promoted -> ... -> Completed, or Failed, or Closed.
//!
//! Level-triggered: each call reads where the tracker is and moves it as far as it
//! can without waiting, saving status before every side effect that must happen
//! once (a trigger). Idempotent ones (the Application patch, the label) are redone
//! after a crash instead of being saved step by step, so a hop costs two writes: the
//! armed intents and the promotion's record. Any call may be the first after a crash.
//!
//! One module per phase, so each rule has one home: [`deploy`] (Deploying and
//! its timeout), [`gate`] (Synced, Testing: the policy snapshot, timeouts),
//! [`approval`] (AwaitingApproval: approvals bound to a target and a SHA),
//! [`occupancy`] (Queued: one PR per environment, verdicts re-checked),
//! [`promote`] (Promoting, the bounded audit trail), [`lifecycle`] (close,
//! reopen, new push, failure, retry, deletion, interrupted promotions).

mod approval;
mod deploy;
mod gate;
mod lifecycle;
mod occupancy;
mod promote;
mod step;
mod unsaved;

pub use unsaved::Unsaved;

use crate::policy_cache::PolicyCache;
use crate::ports::{
    ArgoCdClient, EventRecorder, EventType, GitHubClient, StoreError, TestRunner, TrackerDirectory,
    TrackerStore,
};
use promotion_api::{Phase, PullRequestTracker, TestRun};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use step::Step;

/// Annotation that approves a promotion when the policy has `autoPromote: false`:
/// `<target environment>@<head sha>` (the full SHA or a prefix of at least 7 characters).
pub const APPROVE_ANNOTATION: &str = "promotion.io/approve";
/// Annotation naming who approved, recorded as promotedBy; the admission policy
/// makes it equal to the user who set the approval.
pub const APPROVED_BY_ANNOTATION: &str = "promotion.io/approved-by";

/// Annotation whose new value restarts a failed gate.
pub const RETRY_ANNOTATION: &str = "promotion.io/retry";

/// The outside world, as the engine sees it.
#[derive(Clone)]
pub struct Ports {
    /// CI systems.
    pub runner: Arc<dyn TestRunner>,
    /// Argo CD.
    pub argo: Arc<dyn ArgoCdClient>,
    /// GitHub.
    pub github: Arc<dyn GitHubClient>,
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How often to look at running tests and syncing applications.
    pub poll_interval: Duration,
    /// How long a maybe-triggered run may stay unknown to its CI system, after the trigger's answer, before it is triggered again.
    pub adoption_grace: Duration,
    /// How many times a run the CI system never showed may be triggered again before it fails.
    pub max_rearms: usize,
    /// Who promotes when no person approved.
    pub controller_name: String,
    /// How long a PR may take to deploy in an environment when the policy that promoted it sets no deployTimeout.
    pub deploy_timeout: Duration,
    /// The configured CI connections, so a policy naming another is invalid; None: not checked.
    pub connections: Option<BTreeSet<String>>,
    /// Which namespaces may use which connection, job and repository; None: not checked.
    pub access: Option<Arc<crate::access::AccessRules>>,
    /// How often a PR queued behind others looks again; with watched Applications the
    /// first in line is woken when the environment changes, so this is a safety net.
    pub queue_poll_interval: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            adoption_grace: Duration::from_secs(30),
            max_rearms: 1,
            controller_name: "promotion-controller".into(),
            deploy_timeout: Duration::from_secs(30 * 60),
            connections: None,
            access: None,
            queue_poll_interval: None,
        }
    }
}

/// Why a reconcile could not finish; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The status could not be saved.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where to go after one transition.
enum Next {
    /// Look again at once: the state moved.
    Continue,
    /// Nothing more to do now; look again after this long (None: when something changes).
    Wait(Option<Duration>),
}

/// Moves trackers through their environments.
pub struct Engine {
    ports: Ports,
    config: EngineConfig,
    directory: Option<Arc<dyn TrackerDirectory>>,
    unsaved: Arc<unsaved::Unsaved>,
}

impl Engine {
    /// An engine over the given ports.
    pub fn new(ports: Ports, config: EngineConfig) -> Self {
        Self {
            ports,
            config,
            directory: None,
            unsaved: Arc::default(),
        }
    }

    /// The same engine, seeing the other trackers through `directory` (queue order,
    /// stale holds). Without one, nobody is ahead in a queue and no hold is broken.
    pub fn with_directory(mut self, directory: Arc<dyn TrackerDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Moves `tracker` as far as it can go now. Returns when to look again (None: on the next change).
    pub async fn reconcile(
        &self,
        tracker: &PullRequestTracker,
        policies: &PolicyCache,
        store: &dyn TrackerStore,
        events: &dyn EventRecorder,
    ) -> Result<Option<Duration>, EngineError> {
        let mut status = own_correlation_ids(tracker);
        let saved_base = unsaved::fingerprint(&status);
        let saved_runs = status.test_runs.clone();
        let uid = tracker.metadata.uid.clone().unwrap_or_default();
        self.unsaved.overlay(&uid, &mut status);
        let mut step = Step {
            tracker,
            status,
            policies,
            store,
            events,
            saved_base,
            saved_runs,
            deployed_checked: false,
        };
        // Bounded so that a bug can never spin; a real tracker needs at most a handful.
        let mut after = Some(self.config.poll_interval);
        for _ in 0..16 {
            match self.transition(&mut step).await? {
                Next::Continue => continue,
                Next::Wait(a) => {
                    after = a;
                    break;
                }
            }
        }
        if step.runs_unsaved() {
            self.unsaved.keep(
                &uid,
                step.saved_base,
                std::mem::take(&mut step.status.test_runs),
            );
        }
        Ok(after)
    }

    /// The gate progress this engine keeps in memory, not yet written.
    pub fn unsaved(&self) -> Arc<Unsaved> {
        self.unsaved.clone()
    }

    /// A tracker is being deleted: cancels its running tests, records a promotion it
    /// interrupted and releases the environments it holds, before it goes.
    pub async fn finish(
        &self,
        tracker: &PullRequestTracker,
        store: &dyn TrackerStore,
        events: &dyn EventRecorder,
    ) -> Result<(), EngineError> {
        let policies = PolicyCache::new();
        let mut status = own_correlation_ids(tracker);
        let saved_base = unsaved::fingerprint(&status);
        let saved_runs = status.test_runs.clone();
        // The run ids kept in memory are what lets the runs be cancelled; then they go.
        let uid = tracker.metadata.uid.clone().unwrap_or_default();
        self.unsaved.overlay(&uid, &mut status);
        self.unsaved.forget(&uid);
        let mut step = Step {
            tracker,
            saved_base,
            saved_runs,
            status,
            policies: &policies,
            store,
            events,
            deployed_checked: false,
        };
        self.delete(&mut step).await
    }

    async fn transition(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let spec = &s.tracker.spec;
        let ns = s.tracker.metadata.namespace.as_deref().unwrap_or_default();
        if let Err(denied) =
            s.policies
                .check_repository(ns, &spec.repository.owner, &spec.repository.name)
        {
            return self.refuse(s, denied).await;
        }
        if spec.closed {
            return self.close(s).await;
        }
        if s.status.phase == Some(Phase::Closed) {
            return self.reopen(s).await;
        }
        if s.status.head_sha.as_deref() != Some(spec.head_sha.as_str()) {
            return self.restart_for_head(s).await;
        }
        let retry = s.annotation(RETRY_ANNOTATION).cloned();
        if retry.is_some() && retry != s.status.observed_retry {
            s.status.observed_retry = retry;
            if s.status.phase == Some(Phase::Failed) {
                self.restart_gate(s, "retry requested with the promotion.io/retry annotation");
                s.save().await?;
                s.event(
                    EventType::Normal,
                    "Retry",
                    format!("Gate in {} restarted on request", s.environment()),
                )
                .await;
            } else {
                s.save().await?;
            }
            return Ok(Next::Continue);
        }
        match s.status.phase {
            None | Some(Phase::Pending) => {
                s.status.phase = Some(Phase::Deploying);
                s.status.deploy_deadline = Some(s.deadline(None, self.config.deploy_timeout));
                s.save().await?;
                Ok(Next::Continue)
            }
            Some(Phase::Deploying) | Some(Phase::Promoted) => self.deploying(s).await,
            Some(Phase::Synced) => self.start_gate(s).await,
            Some(Phase::Testing) => self.testing(s).await,
            Some(Phase::AwaitingApproval) => self.awaiting_approval(s).await,
            Some(Phase::Queued) => self.queued(s).await,
            Some(Phase::Promoting) => self.promoting(s).await,
            Some(Phase::Failed) => self.failed(s).await,
            Some(Phase::Completed) | Some(Phase::Closed) => Ok(Next::Wait(None)),
        }
    }
}

impl Engine {
    /// The tracker may not act for its repository: it shows why, once, and does nothing
    /// else (no trigger, no commit status, no label, no Application touched).
    async fn refuse(
        &self,
        s: &mut Step<'_>,
        denied: crate::access::Denied,
    ) -> Result<Next, EngineError> {
        let shown = s.status.conditions.iter().any(|c| {
            c.type_ == crate::conditions::types::READY
                && c.reason == denied.reason
                && c.message == denied.message
                && c.observed_generation == s.generation()
        });
        if !shown {
            s.status.message = Some(denied.message.clone());
            s.condition(
                crate::conditions::types::READY,
                false,
                denied.reason,
                denied.message.clone(),
            );
            s.save().await?;
            s.event(EventType::Warning, denied.reason, denied.message)
                .await;
        }
        // The grants change only with the configuration (a restart).
        Ok(Next::Wait(None))
    }
}

/// The tracker's status with every run's correlation id recomputed from what only the
/// tracker itself determines (its uid, the gate's environment, SHA and attempt, the test):
/// a status edited to name another tracker's run is then polled, adopted and cancelled
/// only if that run carries this tracker's id, which the CI adapters check.
fn own_correlation_ids(tracker: &PullRequestTracker) -> promotion_api::PullRequestTrackerStatus {
    let mut status = tracker.status.clone().unwrap_or_default();
    let uid = tracker.metadata.uid.clone().unwrap_or_default();
    let env = status
        .current_environment
        .clone()
        .unwrap_or_else(|| tracker.spec.environment.clone());
    let sha = status
        .head_sha
        .clone()
        .unwrap_or_else(|| tracker.spec.head_sha.clone());
    let attempt = status.attempt.unwrap_or(1);
    for run in &mut status.test_runs {
        run.correlation_id = Some(crate::trigger::correlation_id(
            &uid, &env, &sha, attempt, &run.name,
        ));
    }
    status
}

fn describe_runs(runs: &[TestRun]) -> String {
    runs.iter()
        .map(|r| match (&r.run_id, &r.message) {
            (Some(id), _) => format!("{} started ({:?} run {id})", r.name, r.provider),
            (None, Some(m)) => format!("{}: {m}", r.name),
            (None, None) => format!("{} pending", r.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn cancel_message(base: &str, errors: &[String]) -> String {
    if errors.is_empty() {
        base.to_string()
    } else {
        format!("{base} (could not cancel: {})", errors.join("; "))
    }
}

fn backoff(poll: Duration, retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(poll, |r| r.max(poll))
}
