//! The gate: find the environment's policy, trigger its tests, follow them, and judge.

use super::{Engine, EngineError, Next, Step};
use super::{APPROVE_ANNOTATION, describe_runs};
use crate::conditions::{self, types};
use crate::monitor::{TestMonitor, Verdict, aggregate, apply_timeouts};
use crate::policy_cache::LookupError;
use crate::ports::{CommitState, CommitStatus, EventType};
use crate::promotion;
use crate::records::summarize;
use crate::trigger::{TriggerManager, correlation_id, plan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{Phase, PolicyRef, TestRun, TestState};

impl Engine {
    /// Synced: find the policy of this environment and trigger its gate.
    pub(super) async fn start_gate(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
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

    pub(super) async fn policy_problem(&self, s: &mut Step<'_>, e: LookupError) -> Result<Next, EngineError> {
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

    pub(super) async fn testing(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let policy = match s.lookup() {
            Ok(p) => p,
            Err(LookupError::PolicyNotFound { .. }) => {
                let why = "the policy of this gate was deleted while its tests ran".to_string();
                return self.fail(s, "PolicyDeleted", vec![why]).await;
            }
            Err(e) => return self.policy_problem(s, e).await,
        };
        let vars = s.vars(&policy);
        let triggers = TriggerManager::new(self.ports.runner.as_ref(), self.config.adoption_grace);
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
                let wait = adoption.wait.map_or(self.config.poll_interval, |w| {
                    w.min(self.config.poll_interval)
                });
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
