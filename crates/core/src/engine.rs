//! The state machine of one tracker: Deploying -> Synced -> Testing ->
//! (AwaitingApproval) -> Promoting -> Promoted -> ... -> Completed, or Failed, or Closed.
//!
//! Level-triggered: each call reads where the tracker is and moves it as far as it
//! can without waiting, saving status before every side effect that must happen
//! once. Any call may be the first after a crash.

use crate::conditions::{self, types};
use crate::monitor::{TestMonitor, Verdict, aggregate, apply_timeouts, next_check};
use crate::policy_cache::{CachedPolicy, LookupError, PolicyCache};
use crate::ports::{
    ArgoCdClient, CommitState, CommitStatus, DomainEvent, EventRecorder, EventType, GitHubClient,
    StoreError, TestRunner, TrackerStore,
};
use crate::promotion::{self, PromotionExecutor};
use crate::records::{build_promotion_record, summarize};
use crate::trigger::{TriggerManager, correlation_id, plan};
use crate::variables::Variables;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{
    Phase, PolicyRef, PullRequestTracker, PullRequestTrackerStatus, TestRun, TestState,
};
use std::sync::Arc;
use std::time::Duration;

/// Annotation that approves a promotion when the policy has `autoPromote: false`; its value names the target environment.
pub const APPROVE_ANNOTATION: &str = "promotion.io/approve";
/// Optional annotation naming who approved, recorded as promotedBy.
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            adoption_grace: Duration::from_secs(30),
            max_rearms: 1,
            controller_name: "promotion-controller".into(),
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
}

/// What one reconcile works with.
struct Step<'a> {
    tracker: &'a PullRequestTracker,
    status: PullRequestTrackerStatus,
    policies: &'a PolicyCache,
    store: &'a dyn TrackerStore,
    events: &'a dyn EventRecorder,
}

impl Step<'_> {
    fn generation(&self) -> Option<i64> {
        self.tracker.metadata.generation
    }

    fn annotation(&self, key: &str) -> Option<&String> {
        self.tracker
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
    }

    fn environment(&self) -> String {
        self.status
            .current_environment
            .clone()
            .unwrap_or_else(|| self.tracker.spec.environment.clone())
    }

    fn lookup(&self) -> Result<Arc<CachedPolicy>, LookupError> {
        let labels = self.tracker.metadata.labels.clone().unwrap_or_default();
        let ns = self.tracker.metadata.namespace.clone().unwrap_or_default();
        self.policies.lookup(&ns, &self.environment(), &labels)
    }

    fn vars(&self, policy: &CachedPolicy) -> Variables {
        Variables::for_hop(
            self.tracker,
            &policy.spec.source_environment,
            &policy.spec.target_environment,
        )
    }

    async fn save(&mut self) -> Result<(), StoreError> {
        self.status.observed_generation = self.generation();
        self.store.save(&self.status).await
    }

    async fn event(&self, type_: EventType, reason: &str, note: impl Into<String>) {
        self.events
            .publish(DomainEvent {
                type_,
                reason: reason.into(),
                note: note.into(),
            })
            .await;
    }

    fn condition(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        let g = self.generation();
        conditions::set(&mut self.status.conditions, type_, ok, reason, message, g);
    }

    fn pr_label(&self) -> String {
        let s = &self.tracker.spec;
        format!("{}/{}#{}", s.repository.owner, s.repository.name, s.number)
    }

    fn short_sha(&self) -> String {
        self.tracker.spec.head_sha.chars().take(7).collect()
    }
}

impl Engine {
    /// An engine over the given ports.
    pub fn new(ports: Ports, config: EngineConfig) -> Self {
        Self { ports, config }
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
        let mut step = Step {
            tracker,
            status: tracker.status.clone().unwrap_or_default(),
            policies,
            store,
            events,
        };
        // Bounded so that a bug can never spin; a real tracker needs at most a handful.
        for _ in 0..16 {
            match self.transition(&mut step).await? {
                Next::Continue => continue,
                Next::Wait(after) => return Ok(after),
            }
        }
        Ok(Some(self.config.poll_interval))
    }

    async fn transition(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let spec = &s.tracker.spec;
        if spec.closed {
            return self.close(s).await;
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
                s.save().await?;
                Ok(Next::Continue)
            }
            Some(Phase::Deploying) | Some(Phase::Promoted) => self.deploying(s).await,
            Some(Phase::Synced) => self.start_gate(s).await,
            Some(Phase::Testing) => self.testing(s).await,
            Some(Phase::AwaitingApproval) => self.awaiting_approval(s).await,
            Some(Phase::Promoting) => self.promoting(s).await,
            Some(Phase::Failed) => self.failed(s).await,
            Some(Phase::Completed) | Some(Phase::Closed) => Ok(Next::Wait(None)),
        }
    }

    async fn close(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        if s.status.phase == Some(Phase::Closed) {
            return Ok(Next::Wait(None));
        }
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(
                &mut s.status.test_runs,
                "cancelled: the pull request was closed",
            )
            .await;
        s.status.phase = Some(Phase::Closed);
        s.status.pending_promotion = None;
        s.status.message = Some(cancel_message("pull request closed", &errors));
        s.condition(types::READY, true, "Closed", "the pull request was closed");
        s.save().await?;
        s.event(
            EventType::Normal,
            "Closed",
            format!("{} closed; running tests cancelled", s.pr_label()),
        )
        .await;
        Ok(Next::Wait(None))
    }

    /// First sight, or a new push: everything starts again at the entry environment.
    async fn restart_for_head(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let previous = s.status.head_sha.clone();
        let mut errors = Vec::new();
        if previous.is_some() {
            errors = TestMonitor::new(self.ports.runner.as_ref())
                .cancel_active(
                    &mut s.status.test_runs,
                    "cancelled: a new commit was pushed",
                )
                .await;
        }
        let spec = &s.tracker.spec;
        s.status.head_sha = Some(spec.head_sha.clone());
        s.status.current_environment = Some(spec.environment.clone());
        s.status.application = Some(spec.application.clone());
        s.status.test_runs.clear();
        s.status.pending_promotion = None;
        s.status.policy = None;
        s.status.attempt = None;
        s.status.gate_started_at = None;
        // An annotation present before this head was seen is not a request to retry it.
        s.status.observed_retry = s.annotation(RETRY_ANNOTATION).cloned();
        s.status.phase = Some(Phase::Deploying);
        let waiting = format!(
            "waiting for Argo CD to deploy {} in {}",
            s.short_sha(),
            spec.environment
        );
        s.status.message = Some(cancel_message(&waiting, &errors));
        let g = s.generation();
        conditions::set_unknown(
            &mut s.status.conditions,
            types::SYNCED,
            "Deploying",
            waiting,
            g,
        );
        s.condition(types::READY, true, "Progressing", "the PR is on its way");
        s.save().await?;
        if let Some(old) = previous {
            let old: String = old.chars().take(7).collect();
            s.event(
                EventType::Normal,
                "NewHeadSha",
                format!(
                    "New commit {} replaces {old}: tests cancelled, restarting in {}",
                    s.short_sha(),
                    spec.environment
                ),
            )
            .await;
        }
        Ok(Next::Continue)
    }

    fn restart_gate(&self, s: &mut Step<'_>, why: &str) {
        s.status.attempt = Some(s.status.attempt.unwrap_or(1) + 1);
        s.status.test_runs.clear();
        s.status.gate_started_at = None;
        s.status.policy = None;
        s.status.phase = Some(Phase::Deploying);
        s.status.message = Some(why.to_string());
        let g = s.generation();
        conditions::set_unknown(
            &mut s.status.conditions,
            types::TESTS_PASSED,
            "Restarted",
            why,
            g,
        );
        s.condition(types::READY, true, "Progressing", why);
    }

    async fn deploying(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let env = s.environment();
        let app = s
            .status
            .application
            .clone()
            .unwrap_or_else(|| s.tracker.spec.application.clone());
        let sha = s.tracker.spec.head_sha.clone();
        match self.ports.argo.application_status(&app).await {
            Ok(st) if st.deployed_at(&sha) => {
                s.status.phase = Some(Phase::Synced);
                let msg = format!(
                    "{} is Synced and Healthy at {} in {env}",
                    app.name,
                    s.short_sha()
                );
                s.status.message = Some(msg.clone());
                s.condition(types::SYNCED, true, "Synced", msg.clone());
                s.condition(types::READY, true, "Progressing", "deployed; gate next");
                s.save().await?;
                s.event(EventType::Normal, "Synced", msg).await;
                Ok(Next::Continue)
            }
            Ok(st) => {
                let at = if st.revisions.is_empty() {
                    "no revision".to_string()
                } else {
                    st.revisions.join(",")
                };
                let msg = format!(
                    "waiting for Argo CD: {} is {:?}/{:?} at {at}, want {} in {env}",
                    app.name,
                    st.sync,
                    st.health,
                    s.short_sha()
                );
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg.clone());
                    let g = s.generation();
                    conditions::set_unknown(
                        &mut s.status.conditions,
                        types::SYNCED,
                        "Deploying",
                        msg,
                        g,
                    );
                    s.save().await?;
                }
                Ok(Next::Wait(Some(self.config.poll_interval)))
            }
            Err(e) => {
                let msg = format!(
                    "cannot read Argo CD application {}/{}: {e}",
                    app.namespace, app.name
                );
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg.clone());
                    s.condition(types::READY, false, "ArgoCdUnavailable", msg);
                    s.save().await?;
                }
                Ok(Next::Wait(Some(backoff(
                    self.config.poll_interval,
                    e.retry_after,
                ))))
            }
        }
    }

    /// Synced: find the policy of this environment and trigger its gate.
    async fn start_gate(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let env = s.environment();
        let policy = match s.lookup() {
            Ok(p) => p,
            Err(LookupError::PolicyNotFound { .. }) => {
                s.status.phase = Some(Phase::Completed);
                let msg = format!("no policy promotes from {env}: {env} is the last environment");
                s.status.message = Some(msg.clone());
                s.condition(types::READY, true, "Completed", msg);
                s.save().await?;
                s.event(
                    EventType::Normal,
                    "Completed",
                    format!(
                        "{} at {} completed its journey in {env}",
                        s.pr_label(),
                        s.short_sha()
                    ),
                )
                .await;
                return Ok(Next::Wait(None));
            }
            Err(e) => return self.policy_problem(s, e).await,
        };
        let uid = s.tracker.metadata.uid.clone().unwrap_or_default();
        let attempt = s.status.attempt.unwrap_or(1);
        let sha = s.tracker.spec.head_sha.clone();
        s.status.attempt = Some(attempt);
        s.status.test_runs = plan(&policy.spec, |test| {
            correlation_id(&uid, &env, &sha, attempt, test)
        });
        s.status.policy = Some(PolicyRef {
            name: policy.name.clone(),
            generation: policy.generation,
        });
        s.status.gate_started_at = Some(Time(Timestamp::now()));
        s.status.phase = Some(Phase::Testing);
        let msg = format!(
            "running {} gate tests of policy {}",
            s.status.test_runs.len(),
            policy.name
        );
        s.status.message = Some(msg.clone());
        let g = s.generation();
        conditions::set_unknown(
            &mut s.status.conditions,
            types::TESTS_PASSED,
            "Testing",
            msg,
            g,
        );
        s.condition(types::READY, true, "Progressing", "gate tests running");
        // The intents are saved before any trigger goes out: this is the exactly-once point.
        s.save().await?;
        let names: Vec<String> = s.status.test_runs.iter().map(|r| r.name.clone()).collect();
        let vars = s.vars(&policy);
        let before = s.status.test_runs.clone();
        TriggerManager::new(self.ports.runner.as_ref(), self.config.adoption_grace)
            .with_max_rearms(self.config.max_rearms)
            .trigger(&mut s.status.test_runs, &names, &policy.spec, &vars)
            .await;
        s.save().await?;
        self.report_commit_statuses(s, &before).await;
        if !names.is_empty() {
            s.event(
                EventType::Normal,
                "TestsTriggered",
                format!(
                    "Gate {} in {env}: {}",
                    policy.name,
                    describe_runs(&s.status.test_runs)
                ),
            )
            .await;
        }
        Ok(Next::Continue)
    }

    async fn policy_problem(&self, s: &mut Step<'_>, e: LookupError) -> Result<Next, EngineError> {
        let reason = match e {
            LookupError::Conflict { .. } => "PolicyConflict",
            LookupError::Invalid { .. } => "PolicyInvalid",
            LookupError::PolicyNotFound { .. } => "PolicyNotFound",
        };
        let msg = e.to_string();
        if s.status.message.as_deref() != Some(msg.as_str()) {
            s.status.message = Some(msg.clone());
            s.condition(types::READY, false, reason, msg.clone());
            s.save().await?;
            s.event(EventType::Warning, reason, msg).await;
        }
        // A policy change wakes the tracker; the poll is only a safety net.
        Ok(Next::Wait(Some(self.config.poll_interval * 6)))
    }

    async fn testing(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let policy = match s.lookup() {
            Ok(p) => p,
            Err(LookupError::PolicyNotFound { .. }) => {
                let why = "the policy of this gate was deleted while its tests ran".to_string();
                return self.fail(s, "PolicyDeleted", vec![why]).await;
            }
            Err(e) => return self.policy_problem(s, e).await,
        };
        let vars = s.vars(&policy);
        let triggers = TriggerManager::new(self.ports.runner.as_ref(), self.config.adoption_grace)
            .with_max_rearms(self.config.max_rearms);
        let before = s.status.test_runs.clone();
        let adoption = triggers
            .adopt_or_rearm(&mut s.status.test_runs, &policy.spec, &vars)
            .await;
        if adoption.changed {
            s.save().await?;
        }
        if !adoption.armed.is_empty() {
            triggers
                .trigger(
                    &mut s.status.test_runs,
                    &adoption.armed,
                    &policy.spec,
                    &vars,
                )
                .await;
            s.save().await?;
        }
        let monitor = TestMonitor::new(self.ports.runner.as_ref());
        let mut changed = monitor.poll(&mut s.status.test_runs).await;
        changed |= apply_timeouts(
            &mut s.status.test_runs,
            &policy.spec,
            s.status.gate_started_at.as_ref(),
        );
        self.report_commit_statuses(s, &before).await;
        match aggregate(&s.status.test_runs) {
            Verdict::AnyRunning => {
                // A run that cannot be started, found or followed (a missing Secret, a rejected
                // token, an unreachable server) must show where people look, not only in testRuns.
                let stuck: Vec<String> = s
                    .status
                    .test_runs
                    .iter()
                    .filter(|r| !crate::records::is_final(r.state))
                    .filter_map(|r| {
                        let m = r.message.as_deref()?;
                        (r.run_id.is_none() || m.starts_with(crate::monitor::STATUS_UNAVAILABLE))
                            .then(|| format!("test {}: {m}", r.name))
                    })
                    .collect();
                let conditions_before = s.status.conditions.clone();
                if stuck.is_empty() {
                    s.condition(types::READY, true, "Progressing", "gate tests running");
                } else {
                    s.condition(types::READY, false, "CIUnavailable", stuck.join("; "));
                }
                changed |= s.status.conditions != conditions_before;
                if changed {
                    s.save().await?;
                }
                let polls = next_check(&s.status.test_runs, self.config.poll_interval);
                let wait = adoption.wait.map_or(polls, |w| w.min(polls));
                Ok(Next::Wait(Some(wait)))
            }
            Verdict::AnyFailed(reasons) => self.fail(s, "TestsFailed", reasons).await,
            Verdict::AnyTimeout(reasons) => self.fail(s, "TestsTimedOut", reasons).await,
            verdict => {
                let optional = match verdict {
                    Verdict::OptionalTestsFailed(v) => v,
                    _ => Vec::new(),
                };
                let mut msg = format!(
                    "every required test passed: {}",
                    summarize(&s.status.test_runs)
                );
                if !optional.is_empty() {
                    msg.push_str(&format!("; optional failures: {}", optional.join("; ")));
                }
                s.condition(types::TESTS_PASSED, true, "TestsPassed", msg.clone());
                if !optional.is_empty() {
                    s.event(
                        EventType::Warning,
                        "OptionalTestsFailed",
                        optional.join("; "),
                    )
                    .await;
                }
                if policy.spec.auto_promote {
                    self.begin_promotion(s, &policy, &vars, &self.config.controller_name)
                        .await
                } else {
                    s.status.phase = Some(Phase::AwaitingApproval);
                    let target = &policy.spec.target_environment;
                    let wait = format!(
                        "{msg}; waiting for approval: annotate with {APPROVE_ANNOTATION}={target}"
                    );
                    s.status.message = Some(wait.clone());
                    s.save().await?;
                    s.event(EventType::Normal, "AwaitingApproval", wait).await;
                    Ok(Next::Continue)
                }
            }
        }
    }

    async fn fail(
        &self,
        s: &mut Step<'_>,
        reason: &str,
        reasons: Vec<String>,
    ) -> Result<Next, EngineError> {
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(&mut s.status.test_runs, "cancelled: the gate failed")
            .await;
        let env = s.environment();
        let msg = cancel_message(
            &format!("gate in {env} failed: {}", reasons.join("; ")),
            &errors,
        );
        s.status.phase = Some(Phase::Failed);
        s.status.message = Some(msg.clone());
        s.condition(types::TESTS_PASSED, false, reason, msg.clone());
        s.condition(
            types::READY,
            false,
            reason,
            format!("{msg}; set {RETRY_ANNOTATION} to a new value, push a new commit or change the policy to start again"),
        );
        s.save().await?;
        s.event(EventType::Warning, reason, msg).await;
        Ok(Next::Wait(None))
    }

    async fn begin_promotion(
        &self,
        s: &mut Step<'_>,
        policy: &CachedPolicy,
        vars: &Variables,
        promoted_by: &str,
    ) -> Result<Next, EngineError> {
        match promotion::begin(s.tracker, policy, vars, promoted_by) {
            Ok(pending) => {
                s.status.message =
                    Some(format!("promoting {} to {}", s.short_sha(), pending.target));
                s.status.pending_promotion = Some(pending);
                s.status.phase = Some(Phase::Promoting);
                s.save().await?;
                Ok(Next::Continue)
            }
            Err(e) => self.fail(s, "PolicyInvalid", vec![e.to_string()]).await,
        }
    }

    async fn awaiting_approval(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let policy = match s.lookup() {
            Ok(p) => p,
            Err(e) => return self.policy_problem(s, e).await,
        };
        let target = &policy.spec.target_environment;
        if s.annotation(APPROVE_ANNOTATION).map(|v| v.trim()) != Some(target.as_str()) {
            return Ok(Next::Wait(None));
        }
        let by = s
            .annotation(APPROVED_BY_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| format!("approved with the {APPROVE_ANNOTATION} annotation"));
        s.event(
            EventType::Normal,
            "Approved",
            format!("Promotion to {target} approved by {by}"),
        )
        .await;
        let vars = s.vars(&policy);
        self.begin_promotion(s, &policy, &vars, &by).await
    }

    async fn promoting(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let Some(mut pending) = s.status.pending_promotion.clone() else {
            // Promoting without a recorded promotion cannot be resumed: judge the gate again.
            s.status.phase = Some(Phase::Testing);
            s.save().await?;
            return Ok(Next::Continue);
        };
        let exec = PromotionExecutor::new(self.ports.argo.as_ref(), self.ports.github.as_ref());
        let ns = s.tracker.metadata.namespace.clone().unwrap_or_default();
        if !pending.application_updated {
            if let Err(e) = exec.update_application(&pending, &ns).await {
                let msg = format!(
                    "cannot point {}/{} at {}: {e}",
                    pending.application.namespace, pending.application.name, pending.revision
                );
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg.clone());
                    s.condition(types::READY, false, "PromotionBlocked", msg.clone());
                    s.save().await?;
                    s.event(EventType::Warning, "PromotionBlocked", msg).await;
                }
                return Ok(Next::Wait(Some(backoff(
                    self.config.poll_interval,
                    e.retry_after,
                ))));
            }
            pending.application_updated = true;
            s.status.pending_promotion = Some(pending.clone());
            s.save().await?;
        }
        let pr = promotion::pull_request(s.tracker);
        if let Err(e) = exec.label(&pending, &pr).await {
            if e.kind == crate::ports::ErrorKind::Transient {
                let msg = format!("labelling {}: {e}; retrying", s.pr_label());
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg);
                    s.save().await?;
                }
                return Ok(Next::Wait(Some(backoff(
                    self.config.poll_interval,
                    e.retry_after,
                ))));
            }
            // The application already moved; a label GitHub refuses must not undo that.
            s.event(
                EventType::Warning,
                "LabelFailed",
                format!("{}: {e}", s.pr_label()),
            )
            .await;
        }
        let record = build_promotion_record(&pending, &s.status.test_runs);
        let gate = summarize(&s.status.test_runs);
        s.status.promotions.push(record);
        s.status.current_environment = Some(pending.target.clone());
        s.status.application = Some(pending.application.clone());
        s.status.test_runs.clear();
        s.status.policy = None;
        s.status.attempt = None;
        s.status.gate_started_at = None;
        s.status.pending_promotion = None;
        s.status.phase = Some(Phase::Promoted);
        let msg = format!(
            "promoted {} from {} to {} by {}; waiting for Argo CD to sync {}",
            s.short_sha(),
            pending.source,
            pending.target,
            pending.promoted_by,
            pending.application.name
        );
        s.status.message = Some(msg);
        let note = format!(
            "Promoted {} ({}) from {} to {} (policy {}, by {}); gate: {gate}",
            s.pr_label(),
            s.short_sha(),
            pending.source,
            pending.target,
            pending.policy,
            pending.promoted_by
        );
        s.condition(types::PROMOTED, true, "Promoted", note.clone());
        let g = s.generation();
        conditions::set_unknown(
            &mut s.status.conditions,
            types::SYNCED,
            "Deploying",
            format!("waiting for {}", pending.application.name),
            g,
        );
        conditions::set_unknown(
            &mut s.status.conditions,
            types::TESTS_PASSED,
            "NotStarted",
            format!("the gate of {} has not started", pending.target),
            g,
        );
        s.condition(
            types::READY,
            true,
            "Progressing",
            "promoted; deploying in the next environment",
        );
        s.save().await?;
        s.event(EventType::Normal, "Promoted", note).await;
        Ok(Next::Continue)
    }

    /// A failed gate starts over when its policy changed.
    async fn failed(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let Some(used) = s.status.policy.clone() else {
            return Ok(Next::Wait(None));
        };
        match s.lookup() {
            Ok(p) if p.name != used.name || p.generation != used.generation => {
                self.restart_gate(
                    s,
                    &format!("policy {} changed; starting the gate again", p.name),
                );
                s.save().await?;
                s.event(
                    EventType::Normal,
                    "Retry",
                    format!("Policy {} changed: gate restarted", p.name),
                )
                .await;
                Ok(Next::Continue)
            }
            _ => Ok(Next::Wait(None)),
        }
    }

    /// Shows each gate test on the PR page; best effort, never blocks the gate.
    async fn report_commit_statuses(&self, s: &Step<'_>, before: &[TestRun]) {
        let pr = promotion::pull_request(s.tracker);
        let env = s.environment();
        for run in &s.status.test_runs {
            let old = before.iter().find(|r| r.name == run.name);
            let moved = old.is_none_or(|o| o.state != run.state || o.url != run.url);
            if !moved {
                continue;
            }
            let state = match run.state {
                TestState::Pending | TestState::Running => CommitState::Pending,
                TestState::Passed => CommitState::Success,
                TestState::Failed | TestState::TimedOut | TestState::Cancelled => {
                    CommitState::Failure
                }
            };
            let status = CommitStatus {
                context: format!("promotion/{env}/{}", run.name),
                state,
                target_url: run.url.clone(),
                description: run
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{} {:?}", run.name, run.state)),
            };
            if let Err(e) = self
                .ports
                .github
                .set_commit_status(&pr, &s.tracker.spec.head_sha, &status)
                .await
            {
                tracing::warn!(test = %run.name, error = %e, "could not set the commit status");
            }
        }
    }
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
