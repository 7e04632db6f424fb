//! The gate: find the environment's policy, fix it in a snapshot, trigger its
//! tests, follow them, and judge. Everything after the start reads the snapshot;
//! an edit of the policy restarts the gate instead of changing it.

use super::{APPROVE_ANNOTATION, describe_runs};
use super::{Engine, EngineError, Next, Step};
use crate::conditions::{self, types};
use crate::monitor::{TestMonitor, Verdict, aggregate, apply_timeouts, next_check, run_ref};
use crate::policy_cache::{CachedPolicy, LookupError};
use crate::ports::{CommitState, CommitStatus, EventType};
use crate::promotion;
use crate::records::{is_final, summarize};
use crate::snapshot;
use crate::trigger::{TriggerManager, arm, correlation_id, is_planned, plan};
use crate::variables::VariableError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{GateSnapshot, Phase, PolicyRef, TestRun, TestState};

impl Engine {
    /// Fixes the gate of this environment in status, its tests planned but not armed.
    /// Called with the write that records Synced, so the plan costs no write of its own
    /// and a restart can tell a run that never left from one that maybe did.
    pub(super) fn plan_gate(
        &self,
        s: &mut Step<'_>,
        policy: &CachedPolicy,
    ) -> Result<GateSnapshot, VariableError> {
        let gate = snapshot::take(s.tracker, policy)?;
        let spec = snapshot::as_spec(&gate);
        let env = s.environment();
        let uid = s.tracker.metadata.uid.clone().unwrap_or_default();
        let attempt = s.status.attempt.unwrap_or(1);
        let sha = s.tracker.spec.head_sha.clone();
        s.status.attempt = Some(attempt);
        s.status.test_runs = plan(&spec, |test| {
            correlation_id(&uid, &env, &sha, attempt, test)
        });
        s.status.policy = Some(PolicyRef {
            name: policy.name.clone(),
            generation: policy.generation,
        });
        s.status.gate = Some(gate.clone());
        Ok(gate)
    }

    /// Plans this environment's gate if its policy is known and it is not planned yet,
    /// so the plan rides on a write that happens anyway (a policy that cannot be planned
    /// is judged when the gate starts).
    pub(super) fn plan_if_unplanned(&self, s: &mut Step<'_>) {
        if let Ok(policy) = s.lookup()
            && Self::planned_gate(s, &policy).is_none()
        {
            let _ = self.plan_gate(s, &policy);
        }
    }

    /// The gate planned by an earlier write, if it is this environment's, on the
    /// policy as it is now, and none of its runs was armed yet.
    fn planned_gate(s: &Step<'_>, policy: &CachedPolicy) -> Option<GateSnapshot> {
        let gate = s.status.gate.as_ref()?;
        let runs = &s.status.test_runs;
        let planned = gate.source == s.environment()
            && snapshot::is_current(gate, policy)
            && runs.len() == gate.tests.len()
            && runs.iter().all(is_planned);
        planned.then(|| gate.clone())
    }

    /// Synced: find the policy of this environment, arm its planned gate (or plan it
    /// now) and trigger it.
    pub(super) async fn start_gate(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let env = s.environment();
        let policy = match s.lookup() {
            Ok(p) => p,
            Err(e @ LookupError::PolicyNotFound { .. }) => {
                if let Err(why) = s.chain_end() {
                    return self.policy_missing(s, &e, &why).await;
                }
                return self.complete(s).await;
            }
            Err(e) => return self.policy_problem(s, e).await,
        };
        // A plan saved with Synced was never sent: it is armed and sent now, without a
        // search, even after a restart. Otherwise (an older status, an edited policy)
        // the gate is planned here, in the same write that arms it.
        let gate = match Self::planned_gate(s, &policy) {
            Some(g) => g,
            None => match self.plan_gate(s, &policy) {
                Ok(g) => g,
                Err(e) => return self.fail(s, "PolicyInvalid", vec![e.to_string()]).await,
            },
        };
        let spec = snapshot::as_spec(&gate);
        if let Some(denied) = refused(s, &spec) {
            return self.fail(s, denied.reason, vec![denied.message]).await;
        }
        let vars = s.vars_for(&gate);
        arm(&mut s.status.test_runs);
        s.status.gate_started_at = Some(Time(Timestamp::now()));
        s.status.phase = Some(Phase::Testing);
        let msg = format!(
            "running {} gate tests of policy {} (generation {})",
            s.status.test_runs.len(),
            policy.name,
            policy.generation.unwrap_or_default()
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
        // The armed intents are saved before any trigger goes out: this is the exactly-once point.
        s.save().await?;
        let names: Vec<String> = s.status.test_runs.iter().map(|r| r.name.clone()).collect();
        let before = s.status.test_runs.clone();
        TriggerManager::new(self.ports.runner.as_ref(), self.config.adoption_grace)
            .with_max_rearms(self.config.max_rearms)
            .trigger(&mut s.status.test_runs, &names, &spec, &vars)
            .await;
        // The answers (run ids) are kept in memory, not written: see `unsaved`.
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

    /// The last environment: the journey ends, and the environment is left to the next PR.
    async fn complete(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let env = s.environment();
        if s.status.test_runs.iter().all(is_planned) {
            // A gate planned on a policy that is gone since: it never ran, so it is not kept.
            s.status.test_runs.clear();
            s.status.gate = None;
            s.status.policy = None;
        }
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
        let held = s.status.application.clone();
        self.release(s, held.as_slice()).await;
        Ok(Next::Wait(None))
    }

    /// No policy promotes out of an environment that is not the end of the chain:
    /// a visible wait that a new or widened policy ends, never Completed.
    pub(super) async fn policy_missing(
        &self,
        s: &mut Step<'_>,
        e: &LookupError,
        why: &str,
    ) -> Result<Next, EngineError> {
        let msg = format!("{e}; waiting: {why}");
        if s.status.message.as_deref() != Some(msg.as_str()) {
            s.status.message = Some(msg.clone());
            s.condition(types::READY, false, "PolicyNotFound", msg.clone());
            s.save().await?;
            s.event(EventType::Warning, "PolicyNotFound", msg).await;
        }
        // A policy change wakes the tracker; the poll is only a safety net.
        Ok(Next::Wait(Some(self.config.poll_interval * 6)))
    }

    pub(super) async fn policy_problem(
        &self,
        s: &mut Step<'_>,
        e: LookupError,
    ) -> Result<Next, EngineError> {
        self.show_policy_problem(s, &e).await?;
        // A policy change wakes the tracker; the poll is only a safety net.
        Ok(Next::Wait(Some(self.config.poll_interval * 6)))
    }

    /// Shows why the policy cannot be used now (Ready=False), once.
    async fn show_policy_problem(
        &self,
        s: &mut Step<'_>,
        e: &LookupError,
    ) -> Result<(), EngineError> {
        let reason = match e {
            LookupError::Conflict { .. } => "PolicyConflict",
            // A refused grant says which, so the team knows to ask, not to fix a typo.
            LookupError::Invalid { error, .. } if error.code != "Invalid" => error.code,
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
        Ok(())
    }

    /// Where a running gate stands with its policy: unchanged (go on), edited
    /// (restart on the new spec) or unusable now (keep following the runs, never promote).
    pub(super) async fn check_policy(
        &self,
        s: &mut Step<'_>,
        gate: &GateSnapshot,
    ) -> Result<PolicyCheck, EngineError> {
        match s.lookup() {
            Ok(p) if snapshot::is_current(gate, &p) => {
                let was_unusable = s.status.conditions.iter().any(|c| {
                    c.type_ == types::READY
                        && matches!(
                            c.reason.as_str(),
                            "PolicyNotFound"
                                | "PolicyInvalid"
                                | "PolicyConflict"
                                | crate::access::CONNECTION_NOT_ALLOWED
                                | crate::access::JOB_NOT_ALLOWED
                        )
                });
                if was_unusable {
                    let msg = format!("policy {} is usable again; the gate goes on", p.name);
                    s.status.message = Some(msg.clone());
                    s.condition(types::READY, true, "Progressing", msg);
                }
                Ok(PolicyCheck::Same)
            }
            Ok(p) => Ok(PolicyCheck::Changed(
                self.policy_changed(s, gate, &p).await?,
            )),
            Err(e) => {
                self.show_policy_problem(s, &e).await?;
                Ok(PolicyCheck::Unusable)
            }
        }
    }

    /// The policy was edited during the gate: its runs are cancelled and the gate starts
    /// again on the new spec, so the two are never mixed.
    async fn policy_changed(
        &self,
        s: &mut Step<'_>,
        gate: &GateSnapshot,
        policy: &CachedPolicy,
    ) -> Result<Next, EngineError> {
        if let Some(pending) = self.sent_promotion(s, gate).await {
            // The gate passed and its promotion went out before the edit was seen.
            return Ok(self.resume_promotion(s, pending));
        }
        let why = format!(
            "policy {} changed (generation {} -> {}) during the gate",
            policy.name,
            gate.generation.unwrap_or_default(),
            policy.generation.unwrap_or_default()
        );
        self.locate_runs(s).await;
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(&mut s.status.test_runs, &format!("cancelled: {why}"))
            .await;
        let target = gate.application.clone();
        self.release(s, std::slice::from_ref(&target)).await;
        self.restart_gate(
            s,
            &super::cancel_message(
                &format!("{why}; starting the gate again on the new spec"),
                &errors,
            ),
        );
        s.save().await?;
        s.event(
            EventType::Normal,
            "PolicyChanged",
            format!("{why}: running tests cancelled, gate restarted on the new spec"),
        )
        .await;
        Ok(Next::Continue)
    }

    /// The gate snapshot of a tracker in a gate phase; a status written before
    /// snapshots existed has none, and its gate starts again on the policy as it is.
    pub(super) async fn gate_or_restart(
        &self,
        s: &mut Step<'_>,
    ) -> Result<Result<GateSnapshot, Next>, EngineError> {
        if let Some(g) = s.status.gate.clone() {
            return Ok(Ok(g));
        }
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(
                &mut s.status.test_runs,
                "cancelled: the gate has no policy snapshot",
            )
            .await;
        self.restart_gate(
            s,
            &super::cancel_message(
                "the gate has no policy snapshot; starting it again",
                &errors,
            ),
        );
        s.save().await?;
        Ok(Err(Next::Continue))
    }

    pub(super) async fn testing(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let gate = match self.gate_or_restart(s).await? {
            Ok(g) => g,
            Err(next) => return Ok(next),
        };
        let usable = match self.check_policy(s, &gate).await? {
            PolicyCheck::Same => true,
            PolicyCheck::Changed(next) => return Ok(next),
            PolicyCheck::Unusable => false,
        };
        let spec = snapshot::as_spec(&gate);
        let vars = s.vars_for(&gate);
        let triggers = TriggerManager::new(self.ports.runner.as_ref(), self.config.adoption_grace)
            .with_max_rearms(self.config.max_rearms);
        let before = s.status.test_runs.clone();
        let adoption = triggers
            .adopt_or_rearm(&mut s.status.test_runs, &spec, &vars)
            .await;
        if !adoption.armed.is_empty() {
            if let Some(denied) = refused(s, &spec) {
                return self.fail(s, denied.reason, vec![denied.message]).await;
            }
            // Re-armed intents are saved before they are sent, as the first ones were;
            // an adoption only is kept in memory.
            s.save().await?;
            triggers
                .trigger(&mut s.status.test_runs, &adoption.armed, &spec, &vars)
                .await;
        }
        let monitor = TestMonitor::new(self.ports.runner.as_ref());
        let mut changed = monitor.poll(&mut s.status.test_runs).await;
        let was_final: Vec<bool> = s
            .status
            .test_runs
            .iter()
            .map(|r| is_final(r.state))
            .collect();
        if apply_timeouts(
            &mut s.status.test_runs,
            &spec,
            s.status.gate_started_at.as_ref(),
        ) {
            changed = true;
            self.cancel_timed_out(&mut s.status.test_runs, &was_final)
                .await;
        }
        self.report_commit_statuses(s, &before).await;
        match aggregate(&s.status.test_runs) {
            Verdict::AnyRunning => {
                // A run that cannot be started, found or followed (a missing Secret, a rejected
                // token, an unreachable server) must show where people look, not only in testRuns.
                let stuck: Vec<String> = s
                    .status
                    .test_runs
                    .iter()
                    .filter(|r| !is_final(r.state))
                    .filter_map(|r| {
                        let m = r.message.as_deref()?;
                        (r.run_id.is_none() || m.starts_with(crate::monitor::STATUS_UNAVAILABLE))
                            .then(|| format!("test {}: {m}", r.name))
                    })
                    .collect();
                let conditions_before = s.status.conditions.clone();
                if !stuck.is_empty() {
                    s.condition(types::READY, false, "CIUnavailable", stuck.join("; "));
                } else if usable {
                    s.condition(types::READY, true, "Progressing", "gate tests running");
                }
                // Progress is written only where people must see it: a condition that
                // changed, or a gate that runs long enough for its runs' links to matter.
                let shown = s.status.conditions != conditions_before;
                if shown || (s.runs_unsaved() && self.gate_is_long(s)) {
                    s.save().await?;
                }
                let polls = next_check(&s.status.test_runs, self.config.poll_interval);
                let wait = adoption.wait.map_or(polls, |w| w.min(polls));
                Ok(Next::Wait(Some(wait)))
            }
            Verdict::AnyFailed(reasons) => self.fail(s, "TestsFailed", reasons).await,
            Verdict::AnyTimeout(reasons) => self.fail(s, "TestsTimedOut", reasons).await,
            _ if !usable => {
                // Passed, but nothing may be promoted by a policy that is gone or invalid now.
                if changed || s.runs_unsaved() {
                    s.save().await?;
                }
                Ok(Next::Wait(Some(self.config.poll_interval * 6)))
            }
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
                let fork = fork_gated(s);
                if gate.auto_promote && !fork {
                    let by = self.config.controller_name.clone();
                    self.claim_target(s, &gate, &by).await
                } else {
                    s.status.phase = Some(Phase::AwaitingApproval);
                    let whose = if fork {
                        " (a pull request from a fork: its repository gates forks, so every promotion waits for a person)"
                    } else {
                        ""
                    };
                    let wait = format!(
                        "{msg}; waiting for approval{whose}: annotate with {APPROVE_ANNOTATION}={}@{}",
                        gate.target, s.tracker.spec.head_sha
                    );
                    s.status.message = Some(wait.clone());
                    s.save().await?;
                    s.event(EventType::Normal, "AwaitingApproval", wait).await;
                    Ok(Next::Continue)
                }
            }
        }
    }

    /// Whether the gate has run for three poll intervals: from then on its runs' progress
    /// (ids, links, states) is written as it moves, so a long gate shows it in status.
    fn gate_is_long(&self, s: &Step<'_>) -> bool {
        let Some(started) = &s.status.gate_started_at else {
            return true;
        };
        let long = k8s_openapi::jiff::SignedDuration::try_from(self.config.poll_interval * 3)
            .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
        Timestamp::now().duration_since(started.0) >= long
    }

    /// Runs that just timed out are cancelled in their CI system too, required or
    /// optional, and each says whether that worked.
    async fn cancel_timed_out(&self, runs: &mut [TestRun], was_final: &[bool]) {
        for (i, run) in runs.iter_mut().enumerate() {
            let newly =
                run.state == TestState::TimedOut && !was_final.get(i).copied().unwrap_or(true);
            if !newly {
                continue;
            }
            let Some(rr) = run_ref(run) else {
                continue;
            };
            let outcome = match self.ports.runner.cancel(&rr).await {
                Ok(()) => "cancelled in the CI system".to_string(),
                Err(e) => format!("could not cancel it in the CI system: {e}"),
            };
            let why = run.message.take().unwrap_or_default();
            run.message = Some(format!("{why}; {outcome}"));
        }
    }

    /// Shows each gate test on the PR page; best effort, never blocks the gate.
    pub(super) async fn report_commit_statuses(&self, s: &Step<'_>, before: &[TestRun]) {
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

/// Whether the tracker follows a fork's PR of a repository with `forks: gate`.
pub(super) fn fork_gated(s: &Step<'_>) -> bool {
    use crate::pull_requests::{FORK_GATED, FORK_LABEL};
    s.tracker
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(FORK_LABEL))
        .is_some_and(|v| v == FORK_GATED)
}

/// The first test of `spec` the tracker's namespace may not run: checked again right
/// before a trigger, whatever the policy's verdict said, so a grant is never bypassed.
fn refused(
    s: &Step<'_>,
    spec: &promotion_api::PromotionPolicySpec,
) -> Option<crate::access::Denied> {
    let ns = s.tracker.metadata.namespace.as_deref().unwrap_or_default();
    spec.external_tests.iter().find_map(|t| {
        s.policies
            .check_test(ns, t.provider, t.connection.as_deref(), &t.job)
            .err()
    })
}

/// What a running gate's policy says now.
pub(super) enum PolicyCheck {
    /// Still the snapshot's generation.
    Same,
    /// Edited: the gate was restarted; go on with this.
    Changed(Next),
    /// Gone, invalid or in conflict: follow the runs, promote nothing.
    Unusable,
}
